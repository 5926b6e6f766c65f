"""``record`` behaves like ``dataclasses.dataclass`` for everything the selftest uses it for."""

from __future__ import annotations

import dataclasses

import pytest
from aero_selftest.record import asdict, record


@record(frozen=True)
class Frozen:
    name: str
    count: int = 0
    tags: frozenset[str] = frozenset()


@record
class Mutable:
    a: int
    b: list[int]


@dataclasses.dataclass(frozen=True)
class Reference:
    name: str
    count: int = 0
    tags: frozenset[str] = frozenset()


def test_init_positional_keyword_and_defaults_as_dataclass() -> None:
    for args, kwargs in ((("x",), {}), (("x", 3), {}), (("x",), {"tags": frozenset({"t"})}), ((), {"name": "y"})):
        ours, ref = Frozen(*args, **kwargs), Reference(*args, **kwargs)  # type: ignore[arg-type]
        assert (ours.name, ours.count, ours.tags) == (ref.name, ref.count, ref.tags)
        assert repr(ours) == repr(ref).replace("Reference", "Frozen")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("x", 1, frozenset(), 4), {}), (("x",), {"name": "y"}), (("x",), {"colour": 1})],
)
def test_init_rejects_what_dataclass_rejects(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Reference(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Frozen(*args, **kwargs)  # type: ignore[arg-type]


def test_equality_hash_and_frozen_fields() -> None:
    assert Frozen("x", 1) == Frozen("x", 1) and Frozen("x", 1) != Frozen("x", 2)
    assert Frozen("x", 1) != Reference("x", 1)  # other classes never compare equal
    assert hash(Frozen("x", 1)) == hash(Frozen("x", 1))
    with pytest.raises(AttributeError):
        Frozen("x").count = 5  # type: ignore[misc]
    m = Mutable(1, [2])
    m.a = 7
    assert m == Mutable(7, [2]) and Mutable.__hash__ is None  # eq without frozen: unhashable, as dataclass


def test_asdict_in_field_order() -> None:
    assert list(asdict(Frozen("x", 2))) == ["name", "count", "tags"]
    assert asdict(Mutable(1, [2])) == {"a": 1, "b": [2]}
