"""How a guest ended, read from its serial lines and QEMU's events (pure).

Why a module of its own: the line that explains a failure is rarely among the last ones. A Linux panic prints
its ``Kernel panic - not syncing`` line and then a stack trace and register dump, so a 30-line tail shows only
hex; an oops scrolls away under later output. So every serial line is matched here as it arrives, the
matching ones are kept (bounded) with their line numbers, and a failure shows them beside the tail.

The same facts tell a panic from a clean power-off when QEMU exits before the guest's RESULT line: the serial
lines, and QEMU's ``SHUTDOWN`` event (``reason``: ``guest-shutdown`` for a power-off, ``guest-reset`` for a
reboot, which under ``-no-reboot`` ends QEMU too: Linux with ``panic=-1`` and Windows after a bug check).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["EXPLAINING", "EndNotes", "describe_guest_end", "explains"]

#: Serial lines that explain an end: (pattern, what it means). Searched anywhere in the line.
EXPLAINING: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Kernel panic - not syncing"), "panic"),
    (re.compile(r"\bOops\b|Unable to handle (kernel|page)|general protection fault"), "oops"),
    (re.compile(r"\bBUG: |soft lockup|hard LOCKUP|blocked for more than \d+ seconds"), "bug"),
    (re.compile(r"Out of memory: Kill|oom-kill:"), "oom"),
    (re.compile(r"\*\*\* STOP: 0x|\bbug ?check\b", re.IGNORECASE), "bugcheck"),
    (re.compile(r"reboot: Power down|System halted|ACPI: PM: Preparing to enter"), "poweroff"),
    (re.compile(r"reboot: Restarting system|Rebooting in \d+ seconds"), "reboot"),
    (re.compile(r"Traceback \(most recent call last\)|Segmentation fault|segfault at"), "crash"),
)


def explains(line: str) -> str | None:
    """The kind of end a serial line explains (``panic``, ``oops``, ``poweroff``...), or None."""
    for pattern, kind in EXPLAINING:
        if pattern.search(line):
            return kind
    return None


@dataclass
class EndNotes:
    """The explaining lines of one VM's serial port, kept as they arrive (bounded: a guest that prints a
    million oopses keeps the first few and the last ones)."""

    first: int = 4
    last: int = 8

    def __post_init__(self) -> None:
        self._first: list[str] = []
        self._last: deque[str] = deque(maxlen=self.last)
        self.kinds: list[str] = []
        self.dropped = 0

    def note(self, line_no: int, line: str, kind: str) -> None:
        """Keep serial line ``line_no``, which :func:`explains` as ``kind``."""
        if kind not in self.kinds:
            self.kinds.append(kind)
        text = f"serial line {line_no}: {line.strip()[:300]}"
        if len(self._first) < self.first:
            self._first.append(text)
            return
        if len(self._last) == self._last.maxlen:
            self.dropped += 1
        self._last.append(text)

    def lines(self) -> list[str]:
        gap = [f"... {self.dropped} more such line(s) in serial.log ..."] if self.dropped else []
        return [*self._first, *gap, *self._last]


def describe_guest_end(kinds: Iterable[str], events: Iterable[Mapping[str, object]]) -> str | None:
    """What the guest did, if the facts say: ``the guest panicked``, ``... powered off``, ``... rebooted``.

    Serial evidence of a fatal end wins (a panic with ``panic=-1`` reboots, so the event alone says reset);
    then QEMU's last ``SHUTDOWN`` event. None when nothing is known (QEMU itself crashed or was killed).
    """
    seen = list(kinds)
    for kind, words in (
        ("panic", "the guest's kernel panicked"),
        ("bugcheck", "the guest crashed (bug check)"),
        ("oops", "the guest's kernel oopsed"),
        ("oom", "the guest ran out of memory"),
        ("bug", "the guest's kernel hit a BUG"),
    ):
        if kind in seen:
            return words
    reason = None
    for event in events:
        if event.get("event") == "SHUTDOWN":
            data = event.get("data")
            reason = data.get("reason") if isinstance(data, Mapping) else None
    if reason == "guest-shutdown" or "poweroff" in seen:
        return "the guest powered off"
    if reason == "guest-reset" or "reboot" in seen:
        return "the guest rebooted (QEMU runs with -no-reboot, so a reboot ends it; a crash that reboots ends here)"
    if reason == "guest-panic":
        return "the guest panicked"
    return None
