"""The life of a VM session, pure: its states and legal moves, how QEMU ended, the shutdown ladder's waits,
and the failure that tells a reader why QEMU is gone.

Kept apart from :mod:`.session` (the I/O) so the rules can be read and unit-tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import QEMU_EXITED, TIMEOUT, AeroFailure
from .process import describe_status, read_tail

if TYPE_CHECKING:
    from ..markers import StreamItem

__all__ = [
    "BENIGN_STDERR",
    "HARNESS_PREFIX",
    "TRANSITIONS",
    "Ending",
    "Reactions",
    "Runstate",
    "StateError",
    "StopTimeouts",
    "exit_failure",
    "handshake_failure",
    "qemu_stderr_tail",
    "stderr_that_matters",
]

#: Lines the harness itself adds to qemu-stderr.log start with this (they are not QEMU's words).
HARNESS_PREFIX = "[aero-harness]"


def qemu_stderr_tail(stderr_log: Path, lines: int = 20) -> list[str]:
    """The last lines QEMU wrote on stdout/stderr, read back from qemu-stderr.log (the harness's own lines
    left out): what an exit failure quotes, live or replayed."""
    return read_tail(stderr_log, lines, skip_prefix=HARNESS_PREFIX)


class Runstate(Enum):
    """Where a session is in its life."""

    #: Constructed; nothing started.
    IDLE = "idle"
    #: Logs open, services starting, QEMU spawning, QMP handshake under way.
    STARTING = "starting"
    #: QMP negotiated; the guest runs.
    RUNNING = "running"
    #: QEMU exited by itself (guest poweroff, crash, panic); the stream is being closed with the reason.
    EXITED = "exited"
    #: The harness is shutting the VM down (the ladder), from any earlier state.
    STOPPING = "stopping"
    #: Everything closed: process reaped, loop ended, files and sockets closed. Final.
    STOPPED = "stopped"


#: The legal moves. A start that fails goes STARTING -> STOPPING (its cleanup is a stop); QEMU dying during
#: start-up is reported by the start itself, so there is no STARTING -> EXITED.
TRANSITIONS: Mapping[Runstate, frozenset[Runstate]] = {
    Runstate.IDLE: frozenset({Runstate.STARTING, Runstate.STOPPED}),
    Runstate.STARTING: frozenset({Runstate.RUNNING, Runstate.STOPPING}),
    Runstate.RUNNING: frozenset({Runstate.EXITED, Runstate.STOPPING}),
    Runstate.EXITED: frozenset({Runstate.STOPPING}),
    Runstate.STOPPING: frozenset({Runstate.STOPPED}),
    Runstate.STOPPED: frozenset(),
}


class Ending(StrEnum):
    """How QEMU ended (written to shutdown.txt, shown in the run summary)."""

    EXITED = "exited"  # on its own (the guest powered off, or QEMU died)
    QUIT = "quit"  # QMP quit
    TERM = "term"  # SIGTERM
    KILL = "kill"  # SIGKILL
    UNKILLABLE = "unkillable"  # still there after SIGKILL's wait (a kernel problem)
    NOT_STARTED = "not-started"


class StateError(RuntimeError):
    """An illegal move of the session (a harness bug, never a guest problem)."""


@dataclass(frozen=True)
class StopTimeouts:
    """Seconds each rung of the shutdown ladder waits for QEMU to exit."""

    quit: float = 5.0
    term: float = 3.0
    kill: float = 5.0

    @property
    def total(self) -> float:
        return self.quit + self.term + self.kill


#: QEMU stderr lines that never explain an end: warnings, an audio backend without capture, input events the
#: guest's device cannot map. Left out of failure messages (they stay in qemu-stderr.log).
BENIGN_STDERR: tuple[re.Pattern[str], ...] = (
    re.compile(r"(^|: )warning: ", re.IGNORECASE),
    re.compile(r"^audio: "),
    re.compile(r"unmapped button"),
)


def stderr_that_matters(lines: Sequence[str]) -> list[str]:
    """QEMU's stderr lines without the benign ones (each distinct line once, in order)."""
    out: list[str] = []
    for line in lines:
        if not any(p.search(line) for p in BENIGN_STDERR) and line not in out:
            out.append(line)
    return out


def exit_failure(
    returncode: int | None,
    *,
    during_start: bool,
    result_seen: bool,
    stopped_how: str | None,
    stderr_tail: Sequence[str],
    artifacts: Mapping[str, Path] | None = None,
    guest_end: str | None = None,
) -> AeroFailure:
    """The error that closes the marker stream when QEMU is gone; every pending wait raises it.

    The token is always ``QEMU_EXITED`` (what CI greps for), but the message tells apart the cases a reader
    must not confuse: QEMU refused to start (its stderr says why), the guest panicked or powered off before
    its RESULT line (``guest_end``, from :func:`..guest_end.describe_guest_end`), QEMU died under a running
    guest, the guest powered off after its RESULT line (normal - only waits for markers that never came
    fail), and the harness stopped the VM itself. QEMU's benign warnings are left out.
    """
    status = describe_status(returncode)
    tail = [f"qemu: {line}" for line in stderr_that_matters(stderr_tail)]
    if stopped_how is not None:
        message = f"the harness stopped QEMU ({stopped_how}, {status}); the awaited marker never came"
        fix = None
    elif during_start:
        message = f"QEMU exited during start-up ({status})"
        fix = (
            "QEMU's own error is quoted above (an unknown device or property, a missing file, a busy port); "
            "the full command line is in qemu-argv.txt"
        )
    elif result_seen:
        message = (
            f"QEMU exited ({status}) after the guest's RESULT line (normal end of the selftest); "
            "the awaited marker never came"
        )
        fix = "the guest finished without printing it: check that the guest runs this check (serial.log)"
    elif guest_end is not None:
        message = f"{guest_end} before its RESULT line; QEMU exited ({status})"
        fix = (
            "the serial lines that explain the end are quoted below (serial.log has them all); a guest must "
            "print RESULT before it powers off"
        )
    else:
        message = f"QEMU exited unexpectedly ({status}) before the guest's RESULT line"
        fix = "QEMU's stderr, if it said anything, is quoted above (all of it: qemu-stderr.log)"
    if tail:
        message += "\n" + "\n".join(tail)
    return AeroFailure(QEMU_EXITED, message, fix, artifacts=artifacts)


class Reactions(Protocol):
    """What the session needs from the reaction engine (``actions.base.Reactor`` satisfies it).

    ``on_marker`` is subscribed to the stream before QEMU starts, so it is called on the VM loop, in order,
    for every item; it must not block. ``cancel`` is awaited first thing at stop, so no action talks to a QEMU
    that is going away.
    """

    def on_marker(self, item: StreamItem) -> None: ...

    async def cancel(self) -> None: ...


def handshake_failure(error: BaseException | None, start_timeout: float, artifacts: Mapping[str, Path]) -> AeroFailure:
    """QEMU runs but its QMP handshake failed (``error``) or did not finish within ``start_timeout``."""
    what = (
        f"the QMP handshake failed: {error!r}"
        if error is not None
        else f"QEMU did not complete the QMP handshake within {start_timeout:g} s"
    )
    return AeroFailure(
        TIMEOUT,
        what,
        "QEMU may be overloaded or the argv lacks `-mon chardev=...,mode=control` on the QMP fd; "
        "see qemu-argv.txt and qemu-stderr.log",
        artifacts=artifacts,
    )
