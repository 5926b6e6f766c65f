"""The SIGTERM handler's decisions (interrupts.RunEnd) and the pytest-timeout takeover (timeouts.VmTimeouts), with
small stand-ins for pytest's objects; the chaos suite drives both for real."""

from __future__ import annotations

import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_aero_virtio import interrupts, timeouts
from pytest_aero_virtio.errors import TIMEOUT, AeroError, AeroFailure, RunInterrupted
from pytest_aero_virtio.interrupts import RunEnd
from pytest_aero_virtio.stream import MarkerStream, Wait


def _end(numprocesses: int = 0, worker: bool = False) -> RunEnd:
    config = SimpleNamespace(option=SimpleNamespace(numprocesses=numprocesses))
    if worker:
        config.workerinput = {}  # type: ignore[attr-defined]
    return RunEnd(config)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_kills(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    killed: list[str] = []
    monkeypatch.setattr(interrupts, "kill_all", lambda: killed.append("all") or 0)
    return killed


def test_sigterm_in_a_test_interrupts_it_and_stops_the_run() -> None:
    end = _end()
    session = SimpleNamespace(shouldstop=False)
    end._session = session  # type: ignore[assignment]
    end._phase = "call"
    with pytest.raises(RunInterrupted) as ei:
        end.on_signal(signal.SIGTERM, None)
    assert ei.value.signame == "SIGTERM"
    assert "SIGTERM received" in str(session.shouldstop)
    end.pytest_sessionfinish(session)  # type: ignore[arg-type]
    assert session.exitstatus == 143  # type: ignore[attr-defined]


@pytest.mark.parametrize(("phase", "raises"), [("collect", KeyboardInterrupt), ("setup", RunInterrupted)])
def test_where_the_run_is_decides(phase: str, raises: type[BaseException]) -> None:
    end = _end()
    end._phase = phase
    with pytest.raises(raises):
        end.on_signal(signal.SIGTERM, None)


@pytest.mark.parametrize("phase", ["teardown", "between", "finish"])
def test_outside_a_test_body_the_run_only_stops(phase: str) -> None:
    end = _end()
    end._session = SimpleNamespace(shouldstop=False)  # type: ignore[assignment]
    end._phase = phase
    end.on_signal(signal.SIGTERM, None)  # no exception: the step in progress finishes
    assert end.signum == signal.SIGTERM


def test_a_repeat_is_the_same_request_until_two_seconds_later(_no_kills: list[str]) -> None:
    end = _end()
    end._phase = "between"
    end.on_signal(signal.SIGTERM, None)
    end.on_signal(signal.SIGTERM, None)  # group-wide delivery and a forward arrive together
    assert _no_kills == []
    end._first_at -= 3.0
    with pytest.raises(KeyboardInterrupt):
        end.on_signal(signal.SIGTERM, None)
    assert _no_kills == ["all"]


def test_the_xdist_controller_forwards_to_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(interrupts, "child_pids", lambda parent: [101, 102])
    monkeypatch.setattr(interrupts.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    end = _end(numprocesses=2)
    end._phase = "between"
    end.on_signal(signal.SIGTERM, None)
    assert sent == [(101, signal.SIGTERM), (102, signal.SIGTERM)]
    assert not _end(numprocesses=2, worker=True)._controller


def test_child_pids_finds_a_child() -> None:
    import subprocess

    with subprocess.Popen(["sleep", "5"]) as child:
        try:
            assert child.pid in interrupts.child_pids(interrupts.os.getpid())
        finally:
            child.kill()


# --- pytest-timeout -----------------------------------------------------------------------------------------


class _Item:
    def __init__(self, nodeid: str = "t.py::test_x") -> None:
        self.nodeid = nodeid
        self.stash = pytest.Stash()
        self.config = SimpleNamespace()


def _settings(timeout: float, method: str) -> Any:
    return SimpleNamespace(timeout=timeout, method=method, func_only=False, disable_debugger_detection=True)


def test_a_test_without_a_vm_keeps_pytest_timeouts_own_timer() -> None:
    vt = timeouts.VmTimeouts(lambda item: False, lambda item: None)
    assert vt.pytest_timeout_set_timer(_Item(), _settings(1, "thread")) is None  # type: ignore[arg-type]
    assert vt.pytest_timeout_cancel_timer(_Item()) is None  # type: ignore[arg-type]


def test_expiry_ends_the_guest_wait_with_a_timeout_naming_the_marker() -> None:
    stream = MarkerStream()
    vt = timeouts.VmTimeouts(lambda item: True, lambda item: stream)
    item = _Item()
    assert vt.pytest_timeout_set_timer(item, _settings(0.3, "thread")) is True  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(AeroFailure) as ei:
        stream.wait_final("virtio-net", 30.0)
    assert time.monotonic() - t0 < 5.0
    assert ei.value.token == TIMEOUT
    assert str(ei.value).startswith(
        "FAIL: TIMEOUT: pytest-timeout (0.3 s) expired while the test waited for the final virtio-net marker"
    )
    assert vt.pytest_timeout_cancel_timer(item) is True  # type: ignore[arg-type]


def test_thread_method_not_in_a_wait_writes_junit_then_lets_pytest_timeout_end_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(timeouts, "write_junit_now", lambda config: calls.append("junit") or True)
    monkeypatch.setattr(timeouts, "kill_all", lambda: calls.append("kill") or 0)
    monkeypatch.setattr(timeouts.pytest_timeout, "timeout_timer", lambda item, settings: calls.append("exit"))
    vt = timeouts.VmTimeouts(lambda item: True, lambda item: MarkerStream())  # booted, but nobody waits
    item = _Item()
    vt.pytest_timeout_set_timer(item, _settings(0.05, "thread"))  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["junit", "kill", "exit"]
    vt.pytest_timeout_cancel_timer(item)  # type: ignore[arg-type]


def test_signal_method_not_in_a_wait_raises_pytest_timeouts_failure_in_the_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_sigalrm(item: Any, settings: Any) -> None:
        raise AeroError("X_Y", "pytest-timeout's own failure")

    monkeypatch.setattr(timeouts.pytest_timeout, "timeout_sigalrm", fake_sigalrm)
    vt = timeouts.VmTimeouts(lambda item: True, lambda item: None)  # not booted yet
    item = _Item()
    previous = signal.getsignal(signal.SIGALRM)
    vt.pytest_timeout_set_timer(item, _settings(0.05, "signal"))  # type: ignore[arg-type]
    try:
        with pytest.raises(AeroError, match="pytest-timeout's own failure"):
            time.sleep(5)
    finally:
        vt.pytest_timeout_cancel_timer(item)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGALRM) == previous


def test_wait_records_what_and_since_when() -> None:
    stream = MarkerStream()
    seen: list[Wait] = []

    def peek() -> None:
        while not seen:
            seen.extend(stream.waits)
            time.sleep(0.01)

    t = threading.Thread(target=peek)
    t.start()
    with pytest.raises(AeroFailure):
        stream.wait_result(0.3)
    t.join()
    assert seen[0].what.endswith("RESULT line") and seen[0].started <= time.monotonic()
