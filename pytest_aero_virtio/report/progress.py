"""Live progress of each running VM: elapsed time, the last marker, what the current test waits for and how
long it may still wait.

Why: a VM run takes minutes under TCG and a test waiting on a guest prints nothing; a person (or a CI log)
must see that the guest is alive and what it is doing, and that a wait has a deadline.

* On a terminal (and when nothing else writes to it during tests: no ``-s``, ``--vm-follow-serial``,
  ``--log-cli-level``, no xdist worker) one status line is redrawn in place every second, after pytest's own
  progress on the current line (save cursor, write, restore: pytest's next character lands where it would
  have), and erased before pytest writes.
* Otherwise (a CI log, a pipe, an xdist worker) a line per running VM every 30 s, through
  :attr:`~pytest_aero_virtio.run.AeroRun.say`.
* ``-q`` keeps it to one short line for all VMs; ``-qq`` silences it; ``-v`` adds the guest's last serial line.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..markers import HostMarker

if TYPE_CHECKING:
    from ..vm import VmHandle

__all__ = ["LINE_EVERY_S", "InPlace", "ProgressTicker", "VmProgress", "format_duration", "progress_lines", "snapshot"]

#: Seconds between progress lines when the status cannot be redrawn in place.
LINE_EVERY_S = 30.0


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass(frozen=True)
class VmProgress:
    """One running VM at one moment (pure data, so the formatting is testable without a VM)."""

    vm: str
    elapsed: float
    last: str | None = None
    last_age: float | None = None
    waiting_for: str | None = None
    wait_left: float | None = None
    serial: str | None = None


def snapshot(handle: VmHandle, now: float | None = None) -> VmProgress:
    """What a running VM is doing now: read from its stream (thread-safe) and its start time."""
    now = time.monotonic() if now is None else now
    history = handle.stream.history
    last = history[-1] if history else None
    if isinstance(last, HostMarker):
        what = f"host {last.topic}|{last.status}"
    elif last is not None:
        what = "|".join(p for p in (last.kind if last.kind != "TEST" else None, last.name, last.status) if p)
    waits = handle.stream.waits
    wait = min(waits, key=lambda w: w.deadline) if waits else None
    tail = handle.stream.tail(1)
    return VmProgress(
        vm=handle.planned.id,
        elapsed=now - handle.started_at,
        last=what if last is not None else None,
        last_age=now - last.t if last is not None else None,
        waiting_for=wait.what if wait is not None else None,
        wait_left=wait.deadline - now if wait is not None else None,
        serial=tail[0] if tail else None,
    )


def _one(p: VmProgress, brief: bool) -> str:
    if brief:
        parts = [f"{p.vm} {format_duration(p.elapsed)}", p.last or "no marker yet"]
        if p.waiting_for is not None and p.wait_left is not None:
            parts.append(f"waits {format_duration(p.wait_left)}")
        return " ".join(parts)
    last = f"last {p.last} {format_duration(p.last_age or 0)} ago" if p.last else "no marker yet"
    text = f"aero-virtio: {p.vm} up {format_duration(p.elapsed)}, {last}"
    if p.waiting_for is not None and p.wait_left is not None:
        text += f"; the test waits for the {p.waiting_for}, at most {format_duration(p.wait_left)} more"
    return text


def progress_lines(vms: Sequence[VmProgress], verbosity: int) -> list[str]:
    """The progress for ``vms`` at pytest verbosity ``verbosity`` (``-qq``: none, ``-q``: one line)."""
    if verbosity <= -2 or not vms:
        return []
    if verbosity == -1:
        return ["aero-virtio: " + "; ".join(_one(p, brief=True) for p in vms)]
    lines = []
    for p in vms:
        lines.append(_one(p, brief=False))
        if verbosity > 0 and p.serial:
            lines.append(f"  {p.vm} serial: {p.serial[:200]}")
    return lines


class InPlace:
    """One status line drawn after the cursor and restored from (ESC 7 / ESC 8), erased on request.

    ``column`` says where pytest's current line ends and ``width`` how wide the terminal is, so the status
    never wraps (a wrapped line could not be restored to). Every draw is one ``write()``.
    """

    def __init__(self, fd: int, width: Callable[[], int], column: Callable[[], int]) -> None:
        self._fd = fd
        self._width = width
        self._column = column
        self._lock = threading.Lock()
        self._shown = False

    def draw(self, text: str) -> None:
        room = self._width() - self._column() - 2
        with self._lock:
            if room < 20:
                self._erase_locked()
                return
            shown = text if len(text) <= room else text[: room - 1] + "…"
            self._write(f"\x1b7 \x1b[2m{shown}\x1b[0m\x1b[K\x1b8")
            self._shown = True

    def erase(self) -> None:
        with self._lock:
            self._erase_locked()

    def _erase_locked(self) -> None:
        if self._shown:
            self._write("\x1b[K")
            self._shown = False

    def close(self) -> None:
        """Erase the status and give the terminal descriptor back."""
        self.erase()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, text.encode(errors="replace"))


class ProgressTicker:
    """A daemon thread: every ``tick_s`` the status in place, or every ``line_every_s`` progress lines."""

    def __init__(
        self,
        handles: Callable[[], list[VmHandle]],
        verbosity: int,
        say: Callable[[str], None] | None,
        in_place: InPlace | None = None,
        column: Callable[[], int] | None = None,
        tick_s: float = 1.0,
        line_every_s: float = LINE_EVERY_S,
    ) -> None:
        self._handles = handles
        self._verbosity = verbosity
        self._say = say
        self._in_place = in_place
        self._column = column
        self._tick_s = tick_s
        self._line_every_s = line_every_s
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aero-progress", daemon=True)
        #: Progress lines said so far per VM (by id of its handle).
        self._said: dict[int, int] = {}

    def start(self) -> None:
        if self._verbosity > -2 and (self._say is not None or self._in_place is not None):
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._in_place is not None:
            self._in_place.close()

    def pause(self, paused: bool) -> None:
        """While pdb owns the terminal, no status is drawn (and none left behind)."""
        if paused:
            self._paused.set()
            self.erase()
        else:
            self._paused.clear()

    def erase(self) -> None:
        """Before pytest writes to the terminal (its report hooks call this)."""
        if self._in_place is not None:
            self._in_place.erase()

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            if self._paused.is_set():
                continue
            try:
                self.tick(time.monotonic())
            except Exception:  # progress is a courtesy: it must never break a run
                continue

    def tick(self, now: float) -> None:
        running = [h for h in self._handles() if h.session.alive and h.started_at]
        if not running:
            self.erase()
            return
        if self._in_place is not None:
            states = [snapshot(h, now) for h in running]
            lines = progress_lines(states, -1 if self._verbosity < 0 else 0)
            self._in_place.draw(" · ".join(text.removeprefix("aero-virtio: ") for text in lines))
            return
        due = [h for h in running if now - h.started_at >= self._line_every_s * (self._said.get(id(h), 0) + 1)]
        if due and self._say is not None:
            for h in due:  # each VM every line_every_s of its own run time
                self._said[id(h)] = int((now - h.started_at) // self._line_every_s)
            shown = [snapshot(h, now) for h in (running if self._verbosity < 0 else due)]
            lines = progress_lines(shown, self._verbosity)
            if lines and self._column is not None and self._column() > 0:
                lines[0] = "\n" + lines[0]  # pytest's line is not finished: start ours on a line of its own
            for text in lines:
                self._say(text)
