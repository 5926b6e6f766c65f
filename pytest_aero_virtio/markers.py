"""The marker protocol on the host side, pure: serial bytes -> lines -> markers.

Two layers, each testable alone (the stream that tests wait on is :mod:`pytest_aero_virtio.stream`):

* :class:`LineSplitter` turns serial bytes (arbitrary read boundaries, CRLF or LF, junk) into complete text
  lines, with bounded memory.
* :func:`parse_line` recognises a marker (the grammar is in docs/protocol.md) and keeps every field, known
  or not, so a newer guest never breaks an older host.

Times (``Marker.t``) are ``time.monotonic()`` seconds at receipt, so latencies can be computed in-process.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import AeroFailure, bad_field_token

__all__ = [
    "FINAL_STATUSES",
    "GUEST_PREFIX",
    "HOST_PREFIX",
    "MAX_LINE",
    "VERDICTS",
    "FieldReader",
    "HostMarker",
    "LineSplitter",
    "Marker",
    "StreamItem",
    "clean_host_value",
    "parse_line",
]

GUEST_PREFIX = "AERO_VIRTIO_SELFTEST"
HOST_PREFIX = "AERO_VIRTIO_WIN7_HOST"
#: A line longer than this is cut and flushed (memory stays bounded whatever the guest sends).
MAX_LINE = 64 * 1024
#: Statuses that end a test. INFO counts: info-only tests (virtio-blk-counters, virtio-snd-format, ...)
#: print nothing else. Callers waiting on a test that may print INFO before its verdict pass their own set.
FINAL_STATUSES: frozenset[str] = frozenset({"PASS", "FAIL", "SKIP", "INFO"})
#: The statuses that decide a test (INFO and READY do not).
VERDICTS: frozenset[str] = frozenset({"PASS", "FAIL", "SKIP"})


class LineSplitter:
    """Bytes in, complete lines out.

    Splits on LF, strips trailing CRs (CRLF from Windows guests, and the tty's ONLCR), decodes UTF-8 with
    replacement characters so binary junk never raises. ANSI escapes are kept (they are part of what the
    serial log should show); :func:`parse_line` skips them in front of a marker. A line that grows past
    ``max_line`` bytes without a newline is cut and emitted in pieces.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._buf = bytearray()
        self._max = max_line

    @staticmethod
    def _decode(raw: bytes | bytearray) -> str:
        return bytes(raw).rstrip(b"\r").decode("utf-8", errors="replace")

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return the lines they completed (possibly none)."""
        buf = self._buf
        scan_from = len(buf)  # the held-back part has no newline: search only the new bytes
        buf += data
        lines: list[str] = []
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, scan_from))
            if nl < 0:
                break
            chunk = buf[start:nl]
            while len(chunk) > self._max:
                lines.append(self._decode(chunk[: self._max]))
                chunk = chunk[self._max :]
            lines.append(self._decode(chunk))
            start = nl + 1
        del buf[:start]
        while len(buf) > self._max:
            lines.append(self._decode(buf[: self._max]))
            del buf[: self._max]
        return lines

    def flush(self) -> list[str]:
        """Return the incomplete last line, if any (at EOF), and reset."""
        if not self._buf:
            return []
        line = self._decode(self._buf)
        self._buf.clear()
        return [line]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for a newline."""
        return len(self._buf)


def _freeze(fields: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(fields))


class FieldReader:
    """Typed, checked reads of a marker's ``key=value`` fields: a missing, empty, non-numeric, huge or
    unexpected value is a tokened failure (``<NAME>_BAD_FIELD: large_fnv1a64 missing in <line>``), never a
    ``KeyError``/``ValueError``/bare ``AssertionError`` - a guest the plugin was not written for gets a message
    that says what is wrong with its line."""

    fields: Mapping[str, str]

    @property
    def raw(self) -> str:
        raise NotImplementedError

    def _who(self) -> str:
        raise NotImplementedError

    def bad(self, what: str) -> AeroFailure:
        """The failure for this marker: ``<NAME>_BAD_FIELD: <what> in <line>``."""
        return AeroFailure(
            bad_field_token(self._who()),
            f"{what} in {self.raw[:300]}",
            fix="the guest's line does not carry what this test checks: see the protocol's fields for the check",
        )

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def has(self, key: str) -> bool:
        """``key in marker``, spelled for tests that read better with a verb."""
        return key in self.fields

    def __str__(self) -> str:
        return self.raw

    def text(self, key: str) -> str:
        """A field that must be present and non-empty."""
        value = self.fields.get(key)
        if value is None:
            raise self.bad(f"{key} missing")
        if not value.strip():
            raise self.bad(f"{key} empty")
        return value

    def integer(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """A whole number (decimal or 0x-hex) within the bounds given."""
        raw = self.text(key)
        try:
            value = int(raw, 0) if raw.lower().startswith("0x") else int(raw, 10)
        except ValueError:  # also a number too long to convert (Python limits int() of a huge string)
            raise self.bad(f"{key}={raw[:40]!r} is not a whole number") from None
        self._bounds(key, value, minimum, maximum)
        return value

    def number(self, key: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
        """A finite decimal number within the bounds given."""
        raw = self.text(key)
        try:
            value = float(raw)
        except ValueError:
            raise self.bad(f"{key}={raw[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise self.bad(f"{key}={raw[:40]!r} is not a finite number")
        self._bounds(key, value, minimum, maximum)
        return value

    def _bounds(self, key: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.bad(f"{key}={value:g} is below {minimum:g}")
        if maximum is not None and value > maximum:
            raise self.bad(f"{key}={value:g} is above {maximum:g}")

    def expect(self, key: str, wanted: str) -> str:
        """A field that must equal ``wanted`` (compared as text, case-insensitive)."""
        value = self.text(key)
        if value.lower() != wanted.lower():
            raise self.bad(f"{key}={value[:80]!r}, expected {wanted!r}")
        return value

    def require(self, ok: bool, what: str) -> None:
        """A relation between fields (or with the host's facts) that must hold; ``what`` says which."""
        if not ok:
            raise self.bad(what)


@dataclass(frozen=True)
class Marker(FieldReader):
    """One guest line ``AERO_VIRTIO_SELFTEST|<kind>|...``.

    ``kind`` is START, CONFIG, TEST, RESULT (or anything a newer guest invents). For TEST, ``name`` and
    ``status`` are the 3rd and 4th parts; for RESULT, ``status`` is the 3rd. ``fields`` holds ``k=v`` parts
    (split on the first ``=``; a repeated key keeps its last value), ``tokens`` the bare parts in order.
    """

    kind: str
    name: str | None
    status: str | None
    fields: Mapping[str, str] = field(default_factory=lambda: _freeze({}), hash=False)
    tokens: tuple[str, ...] = ()
    raw: str = ""
    t: float = 0.0

    def _who(self) -> str:
        return self.name or self.kind


_UNSAFE = re.compile(r"[|\r\n]+")


def clean_host_value(value: object) -> str:
    """The one rule for text in a host marker: a run of ``|`` becomes ``/``, a line break a space.

    Host lines are ``|``-separated and one line each, so a value (an exception text from QEMU, a path) must
    carry neither; everything else is kept, so the line still says what happened.
    """
    text = str(value)
    return _UNSAFE.sub(lambda m: "/" if "|" in m.group() else " ", text).strip()


@dataclass(frozen=True)
class HostMarker(FieldReader):
    """What the host saw or did: ``AERO_VIRTIO_WIN7_HOST|<TOPIC>|<STATUS>|k=v...``."""

    topic: str
    status: str
    fields: Mapping[str, str] = field(default_factory=lambda: _freeze({}), hash=False)
    tokens: tuple[str, ...] = ()
    t: float = field(default_factory=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        # Cleaned once, here: every host marker, whoever builds it, serialises to one well-formed line.
        fields = {clean_host_value(k): clean_host_value(v) for k, v in self.fields.items()}
        object.__setattr__(self, "topic", clean_host_value(self.topic))
        object.__setattr__(self, "status", clean_host_value(self.status))
        object.__setattr__(self, "fields", _freeze(fields))
        object.__setattr__(self, "tokens", tuple(clean_host_value(t) for t in self.tokens))

    def line(self) -> str:
        """The serialised line (no newline); the parts were cleaned at construction."""
        parts = [HOST_PREFIX, self.topic, self.status, *self.tokens]
        parts += [f"{k}={v}" for k, v in self.fields.items()]
        return "|".join(parts)

    @property
    def raw(self) -> str:
        return self.line()

    def _who(self) -> str:
        return self.topic


StreamItem = Marker | HostMarker

# Non-printing junk tolerated in front of a marker: whitespace, NULs, ANSI CSI/OSC-less escapes.
_LEADING_JUNK = re.compile(r"^(?:[\s\x00]|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_])+")


def _split_fields(parts: Iterable[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    fields: dict[str, str] = {}
    tokens: list[str] = []
    for part in parts:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if sep and key:
            fields[key] = value
        else:
            tokens.append(part)
    return fields, tuple(tokens)


def parse_line(line: str, t: float | None = None) -> StreamItem | None:
    """A :class:`Marker` or :class:`HostMarker` if the line is one, else None.

    A line is a marker only if, after stripping whitespace/CR and leading non-printing junk (NULs, ANSI
    escapes), it *starts* with ``AERO_VIRTIO_SELFTEST|`` or ``AERO_VIRTIO_WIN7_HOST|``. Kernel noise in front
    of a prefix makes the line not a marker (it cannot be trusted to be complete).
    """
    text = _LEADING_JUNK.sub("", line).strip()
    when = time.monotonic() if t is None else t
    if text.startswith(GUEST_PREFIX + "|"):
        parts = text.split("|")
        kind = parts[1]
        if kind == "TEST":
            name = parts[2] if len(parts) > 2 and parts[2] else None
            status = parts[3] if len(parts) > 3 and parts[3] else None
            rest = parts[4:]
        elif kind == "RESULT":
            name = None
            status = parts[2] if len(parts) > 2 and parts[2] else None
            rest = parts[3:]
        else:
            name = status = None
            rest = parts[2:]
        fields, tokens = _split_fields(rest)
        return Marker(kind, name, status, _freeze(fields), tokens, text, when)
    if text.startswith(HOST_PREFIX + "|"):
        parts = text.split("|")
        topic = parts[1]
        status = parts[2] if len(parts) > 2 else ""
        fields, tokens = _split_fields(parts[3:])
        return HostMarker(topic, status, fields, tokens, when)
    return None
