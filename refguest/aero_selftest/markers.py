"""Marker formatting and the reporter that writes markers to the serial port.

Every marker leaves the process in ONE ``os.write`` of the whole line plus ``\\n``: the serial console is
shared with the kernel, and a line split over several writes can get kernel noise spliced into it, which
the host would then not recognise as a marker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

from .early import console_line

PREFIX = "AERO_VIRTIO_SELFTEST"
FINAL_STATUSES = frozenset({"PASS", "FAIL", "SKIP", "INFO"})
STATUSES = FINAL_STATUSES | {"READY"}

FieldValue = str | int | float | bool


def sanitize(value: object) -> str:
    """Make a field value safe for the line grammar: no ``|`` (it separates fields), no line breaks.

    ``|`` becomes ``/`` (the protocol's host-side convention); CR, LF and other control characters become a
    space; the result is trimmed and capped so an exception message cannot flood the console.
    """
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float):
        text = f"{value:.2f}"
    else:
        text = str(value)
    out = []
    for ch in text:
        if ch == "|":
            out.append("/")
        elif ch < " " or ch == "\x7f":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out).strip()[:300]


def format_fields(tokens: Sequence[str] = (), fields: Mapping[str, FieldValue] | None = None) -> list[str]:
    """Bare tokens first (``SKIP|flag_not_set``), then ``key=value`` fields in insertion order."""
    parts = [sanitize(t).replace("=", "_") for t in tokens]
    for key, value in (fields or {}).items():
        parts.append(f"{sanitize(key).replace('=', '_')}={sanitize(value)}")
    return parts


def format_test(
    name: str, status: str, tokens: Sequence[str] = (), fields: Mapping[str, FieldValue] | None = None
) -> str:
    """``AERO_VIRTIO_SELFTEST|TEST|<name>|<STATUS>|<tokens...>|<k=v...>`` (no line end)."""
    if status not in STATUSES:
        raise ValueError(f"unknown marker status {status!r}; use one of {sorted(STATUSES)}")
    return "|".join([PREFIX, "TEST", sanitize(name), status, *format_fields(tokens, fields)])


def format_line(kind: str, fields: Mapping[str, FieldValue] | None = None, tokens: Sequence[str] = ()) -> str:
    """START / CONFIG / RESULT lines: ``AERO_VIRTIO_SELFTEST|<KIND>|...``."""
    return "|".join([PREFIX, kind, *format_fields(tokens, fields)])


def error_text(exc: BaseException) -> str:
    """A one-line description of an exception for an ``err=`` field."""
    msg = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {msg}"


def write_fd(fd: int) -> Callable[[str], None]:
    """A line writer for a file descriptor: one ``os.write`` of line + LF (a short write is completed)."""

    def write(line: str) -> None:
        data = (line + "\n").encode("utf-8", "replace")
        written = os.write(fd, data)
        while written < len(data):  # a blocking tty normally takes it all; complete a short write anyway
            written += os.write(fd, data[written:])

    return write


def write_console(fd: int, width: int = 80) -> Callable[[str], None]:
    """A best-effort mirror on the VGA text console: one screen row per marker, a failed write is dropped
    (the serial port is the protocol; the console only makes a screenshot show the progress)."""

    def write(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, console_line(line, width))

    return write


def write_all(*writers: Callable[[str], None]) -> Callable[[str], None]:
    """One writer that calls each of ``writers`` in turn (the serial port first)."""

    def write(line: str) -> None:
        for w in writers:
            w(line)

    return write


def write_bytes(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (completing short writes), for output that is not a marker line."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Reporter:
    """Writes markers and remembers each test's final status, so RESULT and exception handling are right.

    RESULT is PASS only when no test reported FAIL (SKIP and INFO never fail a run).
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self.final: dict[str, str] = {}
        self.lines: list[str] = []

    def emit(self, line: str) -> None:
        self.lines.append(line)
        self._write(line)

    def test(
        self,
        name: str,
        status: str,
        tokens: Sequence[str] = (),
        fields: Mapping[str, FieldValue] | None = None,
    ) -> None:
        self.emit(format_test(name, status, tokens, fields))
        if status in FINAL_STATUSES:
            self.final[name] = status

    def pass_(self, name: str, **fields: FieldValue) -> None:
        self.test(name, "PASS", (), fields)

    def fail(self, name: str, reason: str, **fields: FieldValue) -> None:
        self.test(name, "FAIL", (), {"reason": reason, **fields})

    def skip(self, name: str, *tokens: str, **fields: FieldValue) -> None:
        self.test(name, "SKIP", tokens, fields)

    def info(self, name: str, **fields: FieldValue) -> None:
        self.test(name, "INFO", (), fields)

    def ready(self, name: str, **fields: FieldValue) -> None:
        self.test(name, "READY", (), fields)

    def skip_flag_not_set(self, *names: str) -> None:
        for name in names:
            self.skip(name, "flag_not_set")

    @contextlib.contextmanager
    def group(self, *names: str) -> Iterator[None]:
        """Run one check that owns ``names``: an exception becomes ``FAIL|reason=exception|err=...`` for each
        name that has no final status yet, and the run goes on with the next check."""
        try:
            yield
        except Exception as exc:
            for name in names:
                if name not in self.final:
                    self.fail(name, "exception", err=error_text(exc))

    @property
    def failed(self) -> list[str]:
        return [name for name, status in self.final.items() if status == "FAIL"]

    def result(self) -> str:
        status = "FAIL" if self.failed else "PASS"
        fields: dict[str, FieldValue] = {}
        if self.failed:
            fields["failed"] = ",".join(self.failed)
        self.emit(format_line("RESULT", fields, (status,)))
        return status
