"""The marker protocol on the host side: bytes -> lines -> markers -> a stream tests can wait on.

Three layers, each testable alone:

* :class:`LineSplitter` turns serial bytes (arbitrary read boundaries, CRLF or LF, junk) into complete text
  lines, with bounded memory.
* :func:`parse_line` recognises a marker (PROTOCOL.md section 1) and keeps every field, known or not, so a
  newer guest never breaks an older host.
* :class:`MarkerStream` holds the history and lets test threads wait for a test's final status, a READY line
  or the RESULT, while the VM thread feeds it. Waits end at once when the answer is known to be negative
  (RESULT came without the test, QEMU died), rather than at the timeout: a failing run should fail fast and
  say why.

Times (``Marker.t``) are ``time.monotonic()`` seconds at receipt, so latencies can be computed in-process.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .errors import (
    QEMU_EXITED,
    TIMEOUT,
    AeroError,
    AeroFailure,
    failed_token,
    missing_token,
    skipped_token,
)

__all__ = [
    "FINAL_STATUSES",
    "GUEST_PREFIX",
    "HOST_PREFIX",
    "MAX_LINE",
    "HostMarker",
    "LineSplitter",
    "Marker",
    "MarkerStream",
    "StreamItem",
    "parse_line",
    "qemu_exited",
]

GUEST_PREFIX = "AERO_VIRTIO_SELFTEST"
HOST_PREFIX = "AERO_VIRTIO_WIN7_HOST"
#: A line longer than this is cut and flushed (memory stays bounded whatever the guest sends).
MAX_LINE = 64 * 1024
#: Statuses that end a test. INFO counts: info-only tests (virtio-blk-counters, virtio-snd-format, ...)
#: print nothing else. Callers waiting on a test that may print INFO before its verdict pass their own set.
FINAL_STATUSES: frozenset[str] = frozenset({"PASS", "FAIL", "SKIP", "INFO"})
_VERDICTS = frozenset({"PASS", "FAIL", "SKIP"})

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Marker:
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

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def __str__(self) -> str:
        return self.raw


def _host_clean(value: str) -> str:
    """Host values never contain ``|`` or line breaks (PROTOCOL.md section 1)."""
    return value.replace("|", "/").replace("\r", "").replace("\n", "")


@dataclass(frozen=True)
class HostMarker:
    """What the host saw or did: ``AERO_VIRTIO_WIN7_HOST|<TOPIC>|<STATUS>|k=v...``."""

    topic: str
    status: str
    fields: Mapping[str, str] = field(default_factory=lambda: _freeze({}), hash=False)
    tokens: tuple[str, ...] = ()
    t: float = field(default_factory=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _freeze({str(k): str(v) for k, v in self.fields.items()}))
        object.__setattr__(self, "tokens", tuple(self.tokens))

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def line(self) -> str:
        """The serialised line (no newline); ``|`` in values becomes ``/``, line breaks are dropped."""
        parts = [HOST_PREFIX, _host_clean(self.topic), _host_clean(self.status)]
        parts += [_host_clean(tok) for tok in self.tokens]
        parts += [f"{_host_clean(k)}={_host_clean(v)}" for k, v in self.fields.items()]
        return "|".join(parts)

    @property
    def raw(self) -> str:
        return self.line()

    def __str__(self) -> str:
        return self.line()


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


Subscriber = Callable[[StreamItem], None]


class MarkerStream:
    """History of one VM's markers, with waits. Thread-safe.

    The VM thread calls :meth:`feed_line` (or :meth:`feed_bytes`) and :meth:`add_host`; subscribers are
    called in that feeding thread, in order, after the item is in the history (they must not block: a
    reaction schedules work on the VM loop). Test threads call the ``wait_*`` methods, which raise
    :class:`AeroFailure` carrying the last serial lines and ``log_paths``.
    """

    def __init__(
        self,
        tail_lines: int = 30,
        log_paths: Mapping[str, Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._dispatch = threading.RLock()
        self._history: list[StreamItem] = []
        self._tail: deque[str] = deque(maxlen=max(1, tail_lines))
        self._subscribers: list[Subscriber] = []
        self._closed: AeroError | None = None
        self._result: Marker | None = None
        self._splitter = LineSplitter()
        self._clock = clock
        #: Artifact name -> path, attached to every failure raised by a wait (mutable: add logs as made).
        self.log_paths: dict[str, Path] = dict(log_paths or {})
        #: Exceptions raised by subscribers (logged and kept; a bad subscriber never stops the stream).
        self.subscriber_errors: list[BaseException] = []
        self.lines_seen = 0

    # --- feeding -------------------------------------------------------------------------------------------

    def feed_bytes(self, data: bytes) -> list[StreamItem]:
        """Split raw serial bytes into lines and feed them; returns the markers found."""
        out: list[StreamItem] = []
        for line in self._splitter.feed(data):
            item = self.feed_line(line)
            if item is not None:
                out.append(item)
        return out

    def flush_bytes(self) -> list[StreamItem]:
        """Feed a trailing incomplete line (at EOF of the serial port)."""
        out: list[StreamItem] = []
        for line in self._splitter.flush():
            item = self.feed_line(line)
            if item is not None:
                out.append(item)
        return out

    def feed_line(self, line: str) -> StreamItem | None:
        """One complete serial line (without newline). Every line goes to the tail; markers to history."""
        item = parse_line(line, self._clock())
        with self._dispatch:
            with self._cond:
                self._tail.append(line.rstrip("\r\n"))
                self.lines_seen += 1
                if item is not None:
                    self._append(item)
            if item is not None:
                self._notify_subscribers(item)
        return item

    def add_host(self, hm: HostMarker) -> None:
        """Record what the host saw or did (it also appears in the failure tail, marked ``host:``)."""
        with self._dispatch:
            with self._cond:
                self._tail.append(f"host: {hm.line()}")
                self._append(hm)
            self._notify_subscribers(hm)

    def _append(self, item: StreamItem) -> None:
        # Caller holds self._cond.
        self._history.append(item)
        if isinstance(item, Marker) and item.kind == "RESULT":
            self._result = item
        self._cond.notify_all()

    def _notify_subscribers(self, item: StreamItem) -> None:
        for cb in list(self._subscribers):
            try:
                cb(item)
            except Exception as exc:
                log.exception("marker subscriber %r failed on %s", cb, item)
                self.subscriber_errors.append(exc)

    def subscribe(self, cb: Subscriber, replay: bool = False) -> None:
        """Call ``cb`` for every new item (in the feeding thread). ``replay`` first replays the history."""
        with self._dispatch:
            if replay:
                for item in self.history:
                    cb(item)
            self._subscribers.append(cb)

    def close(self, exc: AeroError) -> None:
        """QEMU is gone: every current and future wait that is not already satisfied raises ``exc``.

        The first close wins; later calls are ignored (the first cause is the real one).
        """
        with self._cond:
            if self._closed is None:
                self._closed = exc
            self._cond.notify_all()

    # --- queries -------------------------------------------------------------------------------------------

    @property
    def history(self) -> list[StreamItem]:
        with self._cond:
            return list(self._history)

    @property
    def markers(self) -> list[Marker]:
        """Guest markers only."""
        with self._cond:
            return [m for m in self._history if isinstance(m, Marker)]

    @property
    def host_markers(self) -> list[HostMarker]:
        with self._cond:
            return [m for m in self._history if isinstance(m, HostMarker)]

    @property
    def result(self) -> Marker | None:
        with self._cond:
            return self._result

    @property
    def closed(self) -> AeroError | None:
        """The exception given to :meth:`close`, or None while QEMU runs."""
        with self._cond:
            return self._closed

    @property
    def config(self) -> Marker | None:
        """The latest CONFIG line (the guest's effective configuration)."""
        with self._cond:
            return self._latest_kind("CONFIG")

    def tail(self, n: int | None = None) -> list[str]:
        """The last serial lines (all lines, markers or not; host markers prefixed ``host:``)."""
        with self._cond:
            lines = list(self._tail)
        return lines if n is None else lines[-n:]

    def latest(self, name: str) -> Marker | None:
        """The last TEST marker of ``name`` (any status)."""
        with self._cond:
            return self._latest_test(name, None)

    def final(self, name: str, statuses: Iterable[str] = FINAL_STATUSES) -> Marker | None:
        """The last TEST marker of ``name`` whose status is final (PASS/FAIL/SKIP/INFO by default)."""
        with self._cond:
            return self._latest_test(name, frozenset(statuses))

    def tests(self) -> list[str]:
        """Names of the tests seen so far, in first-seen order."""
        seen: dict[str, None] = {}
        for m in self.markers:
            if m.kind == "TEST" and m.name:
                seen.setdefault(m.name, None)
        return list(seen)

    def _latest_kind(self, kind: str) -> Marker | None:
        for item in reversed(self._history):
            if isinstance(item, Marker) and item.kind == kind:
                return item
        return None

    def _latest_test(self, name: str, statuses: frozenset[str] | None) -> Marker | None:
        for item in reversed(self._history):
            if (
                isinstance(item, Marker)
                and item.kind == "TEST"
                and item.name == name
                and (statuses is None or (item.status or "").upper() in statuses)
            ):
                return item
        return None

    # --- waits ---------------------------------------------------------------------------------------------

    def _failure(self, token: str, message: str, fix: str | None = None) -> AeroFailure:
        return AeroFailure(token, message, fix, serial_tail=list(self._tail), artifacts=self.log_paths)

    def _closed_failure(self) -> AeroError:
        exc = self._closed
        assert exc is not None
        if isinstance(exc, AeroFailure):
            return exc.with_context(serial_tail=list(self._tail), artifacts=self.log_paths)
        return exc

    def _wait(
        self,
        check: Callable[[], Marker | None],
        early: Callable[[], AeroFailure | None],
        timeout: float,
        what: str,
    ) -> Marker:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = check()
                if found is not None:
                    return found
                failure = early()
                if failure is not None:
                    raise failure
                if self._closed is not None:
                    raise self._closed_failure()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._failure(
                        TIMEOUT,
                        f"no {what} within {timeout:g} s",
                        fix="see the serial log; raise the timeout only if the guest is merely slow",
                    )
                self._cond.wait(remaining)

    def _missing_after_result(self, name: str, what: str) -> AeroFailure | None:
        if self._result is None or self._latest_test(name, None) is not None:
            return None
        return self._failure(
            missing_token(name),
            f"{self._result.raw} arrived without any {name} marker (waited for {what})",
            fix="the guest did not run this check: is it an old selftest, or was the device missing?",
        )

    def wait_final(self, name: str, timeout: float, statuses: Iterable[str] = FINAL_STATUSES) -> Marker:
        """Wait until test ``name`` has a final status (returns the latest such marker).

        Raises AeroFailure ``MISSING_<TEST>`` as soon as RESULT arrived without the test, ``TIMEOUT``, or the
        :meth:`close` exception (QEMU_EXITED).
        """
        wanted = frozenset(s.upper() for s in statuses)
        what = f"final {name} marker ({'/'.join(sorted(wanted))})"

        def early() -> AeroFailure | None:
            missing = self._missing_after_result(name, what)
            if missing is not None or self._result is None:
                return missing
            latest = self._latest_test(name, None)
            return self._failure(
                missing_token(name),
                f"{self._result.raw} arrived but {name} never reached a final status"
                f" (last: {latest.raw if latest else 'none'})",
            )

        return self._wait(lambda: self._latest_test(name, wanted), early, timeout, what)

    def wait_status(self, name: str, statuses: Iterable[str], timeout: float) -> Marker:
        """Wait until test ``name`` has printed one of ``statuses`` (e.g. READY); returns the latest such.

        Fails early if the test reached a verdict (PASS/FAIL/SKIP) not in ``statuses`` first (token
        ``<TEST>_SKIPPED`` / ``<TEST>_FAILED``), or RESULT arrived without it (``MISSING_<TEST>``).
        """
        wanted = frozenset(s.upper() for s in statuses)
        what = f"{name} marker with status {'/'.join(sorted(wanted))}"

        def early() -> AeroFailure | None:
            verdict = self._latest_test(name, _VERDICTS - wanted)
            if verdict is not None:
                status = (verdict.status or "").upper()
                token = skipped_token(name) if status == "SKIP" else failed_token(name)
                hint = " ".join((*verdict.tokens, *(f"{k}={v}" for k, v in verdict.fields.items())))
                return self._failure(
                    token,
                    f"{name} ended with {status}{' (' + hint + ')' if hint else ''} while waiting for {what}",
                )
            missing = self._missing_after_result(name, what)
            if missing is not None or self._result is None:
                return missing
            return self._failure(missing_token(name), f"{self._result.raw} arrived without {what}")

        return self._wait(lambda: self._latest_test(name, wanted), early, timeout, what)

    def wait_result(self, timeout: float) -> Marker:
        """Wait for the RESULT line."""
        return self._wait(lambda: self._result, lambda: None, timeout, f"{GUEST_PREFIX}|RESULT line")

    def wait_for(
        self, predicate: Callable[[Marker], bool], timeout: float, what: str, until_result: bool = True
    ) -> Marker:
        """Generic wait for the latest guest marker matching ``predicate``.

        With ``until_result``, a RESULT line without a match fails at once with token ``MISSING_MARKER``;
        otherwise only the deadline (``TIMEOUT``) or :meth:`close` end the wait.
        """

        def check() -> Marker | None:
            for item in reversed(self._history):
                if isinstance(item, Marker) and predicate(item):
                    return item
            return None

        def early() -> AeroFailure | None:
            if until_result and self._result is not None:
                return self._failure("MISSING_MARKER", f"{self._result.raw} arrived without {what}")
            return None

        return self._wait(check, early, timeout, what)


def qemu_exited(message: str, stderr_tail: Iterable[str] = ()) -> AeroFailure:
    """The failure to :meth:`MarkerStream.close` with when QEMU exits (message + QEMU's stderr tail)."""
    lines = list(stderr_tail)
    text = message + ("\nQEMU stderr:\n" + "\n".join(f"  ! {s}" for s in lines) if lines else "")
    return AeroFailure(QEMU_EXITED, text)
