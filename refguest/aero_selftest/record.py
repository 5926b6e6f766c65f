"""``@record``: what the selftest used ``@dataclasses.dataclass`` for, without its start-up cost.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``, ``enum``, ...) and compiles
generated source for every class it decorates; under TCG that was ~0.35 s between START and the first check.
``record`` builds the same ``__init__`` (positional or keyword, class attributes as defaults), ``__repr__``,
``__eq__`` and, with ``frozen=True``, read-only fields and ``__hash__``, from plain closures.  Type checkers
see the real ``dataclasses.dataclass``, so both must behave alike for the features used here (no ``field()``,
no inheritance between records, no ``__post_init__``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs an import; mypy knows this name
if TYPE_CHECKING:
    from dataclasses import asdict as asdict
    from dataclasses import dataclass as record
else:

    def _init(cls: type, names: tuple[str, ...], defaults: dict[str, object]) -> object:
        def __init__(self: object, *args: object, **kwargs: object) -> None:
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, {len(args)} given")
            values = dict(zip(names, args, strict=False))
            for key, value in kwargs.items():
                if key not in names or key in values:
                    raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {key!r}")
                values[key] = value
            for name in names:
                if name not in values:
                    if name not in defaults:
                        raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                    values[name] = defaults[name]
                object.__setattr__(self, name, values[name])

        return __init__

    def _decorate(cls: type, frozen: bool) -> type:
        names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 (inspect is what we avoid)
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

        def values(self: object) -> tuple[object, ...]:
            return tuple(getattr(self, n) for n in names)

        def __repr__(self: object) -> str:
            return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

        def __eq__(self: object, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return values(self) == values(other)

        def __setattr__(self: object, name: str, value: object) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen {cls.__name__}")

        cls.__init__ = _init(cls, names, defaults)
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        cls.__record_fields__ = names
        if frozen:
            cls.__setattr__ = __setattr__
            cls.__delattr__ = __setattr__
            cls.__hash__ = lambda self: hash(values(self))
        else:
            cls.__hash__ = None
        return cls

    def record(cls: type | None = None, /, *, frozen: bool = False) -> object:
        if cls is None:
            return lambda c: _decorate(c, frozen)
        return _decorate(cls, frozen)

    def asdict(obj: object) -> dict[str, object]:
        """The fields of a record as a dict, in declaration order (values are not copied)."""
        return {n: getattr(obj, n) for n in type(obj).__record_fields__}


__all__ = ["asdict", "record"]
