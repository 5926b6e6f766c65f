"""Pure helpers of the machine layer: exit descriptions and the QEMU_EXITED messages waits raise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_aero_virtio.errors import QEMU_EXITED
from pytest_aero_virtio.qemu.lifecycle import TRANSITIONS, Runstate, StopTimeouts, exit_failure
from pytest_aero_virtio.qemu.process import describe_status, tail_lines
from pytest_aero_virtio.qemu.serial import ConsolePipes


@pytest.mark.parametrize(
    ("rc", "text"),
    [
        (0, "exit status 0"),
        (1, "exit status 1"),
        (-9, "killed by signal 9 (SIGKILL)"),
        (-15, "killed by signal 15 (SIGTERM)"),
        (-200, "killed by signal 200 (unknown signal)"),
        (None, "still running"),
    ],
)
def test_describe_status(rc: int | None, text: str) -> None:
    assert describe_status(rc) == text


def test_tail_lines_skips_blank_and_decodes_leniently() -> None:
    data = b"one\n\n  \ntwo\r\nthr\xffee\nfour"
    assert tail_lines(data, 3) == ["two", "thr\ufffdee", "four"]
    assert tail_lines(data, 0) == []
    assert tail_lines(b"", 5) == []


def test_exit_failure_distinguishes_the_cases() -> None:
    tail = ["qemu-system-x86_64: -device foo: Property 'x' not found"]
    start = exit_failure(1, during_start=True, result_seen=False, stopped_how=None, stderr_tail=tail)
    assert start.token == QEMU_EXITED
    assert start.message.startswith("QEMU exited during start-up (exit status 1)")
    assert "qemu: qemu-system-x86_64: -device foo: Property 'x' not found" in start.message
    assert start.fix is not None and "qemu-argv.txt" in start.fix

    crash = exit_failure(-11, during_start=False, result_seen=False, stopped_how=None, stderr_tail=[])
    assert crash.message == "QEMU exited unexpectedly (killed by signal 11 (SIGSEGV)) before the guest's RESULT line"

    normal = exit_failure(0, during_start=False, result_seen=True, stopped_how=None, stderr_tail=[])
    assert "after the guest's RESULT line (normal end of the selftest)" in normal.message
    assert "unexpectedly" not in normal.message

    stopped = exit_failure(
        0,
        during_start=False,
        result_seen=False,
        stopped_how="quit",
        stderr_tail=[],
        artifacts={"serial": Path("/x/serial.log")},
    )
    assert stopped.message.startswith("the harness stopped QEMU (quit, exit status 0)")
    assert stopped.artifacts == {"serial": Path("/x/serial.log")}
    assert str(stopped).startswith("FAIL: QEMU_EXITED: ")


def test_stop_timeouts_total() -> None:
    assert StopTimeouts(quit=1, term=2, kill=3).total == 6


def test_runstate_transitions_are_a_one_way_life() -> None:
    """Every state can reach STOPPED, nothing leaves STOPPED, and nothing goes back to IDLE or STARTING."""
    assert set(TRANSITIONS) == set(Runstate)
    assert TRANSITIONS[Runstate.STOPPED] == frozenset()
    for state, nexts in TRANSITIONS.items():
        assert Runstate.IDLE not in nexts
        assert state is Runstate.IDLE or Runstate.STARTING not in nexts
        seen, todo = {state}, [state]
        while todo:
            for n in TRANSITIONS[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        assert Runstate.STOPPED in seen


def test_console_pipes_close_once_leaves_a_reused_fd_number_alone(tmp_path: Path) -> None:
    """The stop ladder may close the console more than once; the second close must not hit whatever file took
    the number in between."""
    pipes = ConsolePipes()
    pipes.close_qemu_ends()
    os.close(pipes.output)
    number = pipes.input
    pipes.close()
    other = os.open(tmp_path / "other", os.O_CREAT | os.O_WRONLY)
    reused = os.dup2(other, number)  # another thread's file, given the number just freed
    os.close(other)
    try:
        pipes.close()
        os.fstat(reused)  # still open
    finally:
        os.close(reused)
