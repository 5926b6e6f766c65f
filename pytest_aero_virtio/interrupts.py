"""How a run ends when it is ended from outside: SIGTERM is handled the way Ctrl-C is, but reported.

CI systems end a job they cancel or time out with SIGTERM (then, after a grace period, SIGKILL). Python's
default is to die at once: no JUnit file, no summary, and until now the plugin only killed the QEMUs first.
Here SIGTERM ends the run cleanly instead:

* the test in progress (its setup or body) is interrupted by :class:`~pytest_aero_virtio.errors.RunInterrupted`
  and reported as ``FAIL: INTERRUPTED: ...`` (inside a wait on the guest: with what it waited for and the serial
  tail); a test in its teardown finishes it;
* no further test starts (``session.shouldstop``); the VMs are stopped through the usual ladder (QMP
  ``quit``, SIGTERM, SIGKILL); the JUnit file and the terminal summary are written;
* the exit status is 143 (128 + SIGTERM), what a shell reports for a process SIGTERM ended, so CI scripts
  that test for it keep working.

A second SIGTERM more than two seconds after the first kills every QEMU at once and raises
KeyboardInterrupt (the job is in a hurry). Earlier repeats are ignored: a signal sent to the whole process
group reaches pytest-xdist's controller and workers together, and the controller forwards it as well.
Under xdist the controller runs no test: it forwards the signal to its workers, which report their tests,
and ends when they have.

SIGKILL cannot be caught: there the parent-death signal of every child and the nameless snapshot overlay
leave nothing behind (see :mod:`.qemu.process` and :func:`.qemu.argv.anonymous_overlay`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from .errors import RunInterrupted
from .qemu.process import kill_all

__all__ = ["EXIT_STATUS_SIGTERM", "RunEnd", "child_pids", "install"]

#: What a shell reports for a process ended by SIGTERM; the run's exit status after a SIGTERM.
EXIT_STATUS_SIGTERM = 128 + signal.SIGTERM
#: A repeat of the signal within this many seconds is the same request (group-wide delivery, forwarding).
_SAME_REQUEST_S = 2.0


def child_pids(parent: int) -> list[int]:
    """The live direct children of ``parent`` (from /proc; [] where there is none)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                out.append(int(entry.name))
    return out


class RunEnd:
    """The plugin object that knows where the run is (collecting, in a test's setup/call/teardown, finishing)
    and ends it the right way for that place when SIGTERM comes."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.signum: int | None = None
        self._first_at = 0.0
        self._phase = "collect"
        self._session: pytest.Session | None = None
        self._previous: Any = signal.SIG_DFL
        self._controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")

    # -- where the run is ------------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        self._session = session
        self._phase = "between"
        if self.signum is not None:  # came during collection: no test starts
            session.shouldstop = self._stop_reason()
        try:
            return (yield)
        finally:
            self._phase = "finish"

    def _during(self, phase: str) -> Generator[None, object, object]:
        self._phase = phase
        try:
            return (yield)
        finally:
            self._phase = "between"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._during("setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._during("call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._during("teardown"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """An interruption outside a wait on the guest (a sleep, a boot, a fixture) is reported with the token,
        not as a traceback into whatever the thread was doing."""
        report = yield
        value = call.excinfo.value if call.excinfo is not None else None
        if isinstance(value, RunInterrupted):
            report.longrepr = str(value.failure(f"the test's {call.when}"))
            report.outcome = "failed"
        return report

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.signum is not None:
            session.exitstatus = 128 + self.signum

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == self.on_signal:
            signal.signal(signal.SIGTERM, self._previous)

    # -- the signal ----------------------------------------------------------------------------------------
    def _stop_reason(self) -> str:
        name = signal.Signals(self.signum or signal.SIGTERM).name
        return f"{name} received: the run was ended from outside; the VMs were stopped"

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if now - self._first_at < _SAME_REQUEST_S:
                return
            kill_all()  # asked again: no more ladders
            raise KeyboardInterrupt
        self.signum, self._first_at = signum, now
        name = signal.Signals(signum).name
        if self._controller:
            for pid in child_pids(os.getpid()):  # the workers report their tests and stop
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)
            return
        if self._session is not None:
            self._session.shouldstop = self._stop_reason()
        if self._phase in ("setup", "call"):
            raise RunInterrupted(name)
        if self._phase == "collect":
            raise KeyboardInterrupt
        # teardown, between tests, session finish: the run ends after this step anyway


def install(config: pytest.Config) -> RunEnd | None:
    """Register the plugin object and the SIGTERM handler (main thread only; Python allows no other)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    end = RunEnd(config)
    config.pluginmanager.register(end, "aero-virtio-run-end")
    end._previous = signal.signal(signal.SIGTERM, end.on_signal)
    return end
