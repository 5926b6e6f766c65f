"""Shared helpers for the machine-layer tests: a fake QEMU launcher, a stand-in stream, process checks."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FAKE_QEMU = Path(__file__).with_name("fake_qemu.py")


class StandInStream:
    """The part of MarkerStream the machine layer uses: feed_line, add_host, close, subscribe, result.

    Lines are recorded verbatim; ``wait_for`` blocks like a stream wait: it returns a matching line that has
    arrived (even after close) and raises the close error for anything else.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.hosts: list[Any] = []
        self.result: str | None = None
        self.closed: BaseException | None = None
        self.closed_at: float | None = None
        self.feed_threads: set[str] = set()
        #: What explaining serial lines said (MarkerStream.end_kinds); the stand-in sees none.
        self.end_kinds: list[str] = []
        self._subs: list[Callable[[Any], None]] = []
        self._cond = threading.Condition()

    def subscribe(self, cb: Callable[[Any], None]) -> None:
        self._subs.append(cb)

    def feed_line(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self.feed_threads.add(threading.current_thread().name)
            if line.startswith("AERO_VIRTIO_SELFTEST|RESULT|"):
                self.result = line
            self._cond.notify_all()
        if line.startswith("AERO_VIRTIO_SELFTEST|"):
            for cb in self._subs:
                cb(line)

    def add_host(self, hm: Any) -> None:
        with self._cond:
            self.hosts.append(hm)
            self._cond.notify_all()

    def close(self, exc: BaseException) -> None:
        with self._cond:
            if self.closed is None:
                self.closed = exc
                self.closed_at = time.monotonic()
            self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if self.closed is not None:
                    raise self.closed
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{needle!r} not seen in {timeout} s; lines={self.lines!r}")
                self._cond.wait(left)

    def wait_closed(self, timeout: float) -> BaseException:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("stream not closed")
                self._cond.wait(left)
            return self.closed


def fake_argv(qmp_fd: int) -> list[str]:
    """Wired exactly the way qemu/argv.py does it: the console on QEMU's stdio, QMP on an inherited socket."""
    return [
        sys.executable,
        str(FAKE_QEMU),
        "-chardev",
        "stdio,id=ser0,signal=off",
        "-serial",
        "chardev:ser0",
        "-chardev",
        f"socket,id=qmp0,fd={qmp_fd}",
        "-mon",
        "chardev=qmp0,mode=control",
    ]


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


@pytest.fixture
def stream() -> StandInStream:
    return StandInStream()
