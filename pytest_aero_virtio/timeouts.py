"""pytest-timeout for tests that wait on a guest: a tokened ``TIMEOUT`` that names what was awaited.

pytest-timeout's own ways of ending a test fit a VM test badly: the ``signal`` method raises in the middle of
``threading.Condition.wait`` (the report is a traceback into the standard library, with no token and no serial
tail), and the ``thread`` method dumps the stacks and ``os._exit``\\s the process (no JUnit file at all).

pytest-timeout lets a plugin take over the timer of an item (its ``pytest_timeout_set_timer`` /
``pytest_timeout_cancel_timer`` hooks, ``firstresult``). For a test that uses a VM, the timer here is a thread
that, when the time is up, ends the test's wait on the guest through :meth:`MarkerStream.abort_wait`: the test
fails with ``FAIL: TIMEOUT: pytest-timeout (N s) expired while the test waited for <marker>``, the serial tail
and the artifact paths; the VM and the run go on. When the test is not waiting on the guest at that moment
(booting, in a QMP call, in its own code), pytest-timeout's own behaviour follows, for the method chosen:
``signal`` raises in the test as it always did; ``thread`` first writes the JUnit file with the tests that
finished, kills the QEMUs, and then lets pytest-timeout end the process.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import pytest
import pytest_timeout

from ._pytest_internals import write_junit_now
from .errors import TIMEOUT, AeroError, AeroFailure
from .qemu.process import kill_all
from .stream import Wait

__all__ = ["VmTimeouts"]


class _Waitable(Protocol):
    def abort_wait(self, thread_id: int, reason: Callable[[Wait], AeroError]) -> bool: ...


StreamOf = Callable[[pytest.Item], "_Waitable | None"]
_TIMER = pytest.StashKey[threading.Timer]()
_ALARM = pytest.StashKey[Any]()


class VmTimeouts:
    """The pytest-timeout takeover for VM tests (registered by the plugin when pytest-timeout is loaded).

    ``is_vm_test(item)`` says whether an item uses a VM; ``stream_of(item)`` gives its VM's marker stream once
    the VM is booted (None before).
    """

    def __init__(self, is_vm_test: Callable[[pytest.Item], bool], stream_of: StreamOf) -> None:
        self._is_vm_test = is_vm_test
        self._stream_of = stream_of

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if not self._is_vm_test(item):
            return None  # pytest-timeout's own timer
        method = settings.method
        if method == "signal" and threading.current_thread() is not threading.main_thread():
            method = "thread"  # as pytest-timeout does: signals reach the main thread only
        if method == "signal":
            # Installed now, on the main thread; raised only if the guest wait cannot be ended instead.
            item.stash[_ALARM] = signal.signal(signal.SIGALRM, _sigalrm_handler(item, settings))
        test_thread = threading.get_ident()
        timer = threading.Timer(settings.timeout, self._expired, (item, settings, method, test_thread))
        timer.name = f"aero-timeout {item.nodeid}"
        timer.daemon = True
        item.stash[_TIMER] = timer
        timer.start()
        return True

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        timer = item.stash.get(_TIMER, None)
        if timer is None:
            return None
        del item.stash[_TIMER]
        timer.cancel()
        if timer is not threading.current_thread():
            timer.join(5.0)
        previous = item.stash.get(_ALARM, None)
        if previous is not None and threading.current_thread() is threading.main_thread():
            del item.stash[_ALARM]
            signal.signal(signal.SIGALRM, previous)
        return True

    def _expired(self, item: pytest.Item, settings: Any, method: str, test_thread: int) -> None:
        if _debugging(settings):
            return
        stream = self._stream_of(item)
        if stream is not None and stream.abort_wait(test_thread, lambda wait: _timeout(settings.timeout, wait)):
            return
        if method == "signal":
            signal.pthread_kill(test_thread, signal.SIGALRM)
            return
        write_junit_now(item.config)  # pytest-timeout's thread method ends the process with os._exit
        kill_all()
        pytest_timeout.timeout_timer(item, settings)


def _timeout(seconds: float, wait: Wait) -> AeroFailure:
    return AeroFailure(
        TIMEOUT,
        f"pytest-timeout ({seconds:g} s) expired while the test waited for the {wait.what}",
        fix="the guest never printed it: see the serial lines below; if it is merely slow, raise the test's "
        "timeout (@pytest.mark.timeout, --timeout) or --vm-timeout",
    )


def _debugging(settings: Any) -> bool:
    return not settings.disable_debugger_detection and bool(pytest_timeout.is_debugging())


def _sigalrm_handler(item: pytest.Item, settings: Any) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        pytest_timeout.timeout_sigalrm(item, settings)

    return handler
