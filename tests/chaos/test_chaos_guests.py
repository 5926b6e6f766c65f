"""Guests and QEMUs that end badly: a panic, a power-off before RESULT, a QEMU killed under the tests, a QEMU
that refuses to start, a guest that floods its serial port. Each failure is one clear message."""

from __future__ import annotations

import os
import re
import signal

import pytest

from .conftest import Chaos, GuestShelf
from .guests import HANG, PRINT_START, marker, passing_tests

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

THREE_TESTS = passing_tests("virtio-blk", "virtio-net", "virtio-input")
#: Library noise that must never reach a user (qemu.qmp on a failed handshake), and a chained repeat.
NOISE = ("This is a bug in the QMP library", "During handling of the above exception", "Traceback", "INTERNALERROR")


def assert_each_failure_once(out: str, tests: int) -> None:
    for noise in NOISE:
        assert noise not in out
    fails = [line for line in out.splitlines() if line.startswith("FAIL: ")]
    assert len(fails) == tests, fails  # one report per test, the short summary lines start with FAILED/ERROR
    summary = [line for line in out.splitlines() if re.match(r"(FAILED|ERROR) ", line)]
    assert len(summary) == tests


@pytest.mark.parametrize(
    ("end", "says", "explains"),
    [
        ("dmesg -n 8\nexit 1\n", "the guest's kernel panicked before its RESULT line", "Kernel panic - not syncing"),
        ("poweroff -f\n", "the guest powered off before its RESULT line", "reboot: Power down"),
    ],
    ids=["panic", "poweroff"],
)
def test_panic_is_told_apart_from_poweroff(
    chaos: Chaos, guests: GuestShelf, end: str, says: str, explains: str
) -> None:
    """/init exiting panics the kernel ("Attempted to kill init"; panic=-1 reboots, -no-reboot ends QEMU with
    status 0), exactly like a power-off: the message says which, and quotes the line that explains it, wherever
    it is in the serial log."""
    noise = "".join(f'echo "guest noise line {i}"\n' for i in range(40))
    guest = guests(PRINT_START + marker("TEST", "virtio-blk", "PASS") + "sleep 1\n" + noise + end)
    chaos.guard(guest.disk)
    res = chaos.run(THREE_TESTS, *guest.options())
    cases = res.cases()
    assert cases["test_blk"][0] == "passed"
    _verdict, text = cases["test_net"]
    assert text.startswith(f"FAIL: QEMU_EXITED: {says}; QEMU exited (exit status 0)")
    assert "serial lines that explain the end:" in text
    assert re.search(rf"! serial line \d+: .*{re.escape(explains)}", text)
    assert_each_failure_once(res.out, tests=2)
    chaos.assert_clean()


def test_qemu_killed_mid_run_fails_each_test_once(chaos: Chaos, guests: GuestShelf) -> None:
    guest = guests(PRINT_START + HANG)
    proc = chaos.start(THREE_TESTS, *guest.options())
    chaos.wait_for_serial(b"|START|")
    for pid in chaos.qemu_pids(under=proc.pid):
        os.kill(pid, signal.SIGKILL)
    res = chaos.finish(proc)
    assert res.rc == 1
    for name in ("test_blk", "test_net", "test_input"):
        assert res.cases()[name][1].startswith(
            "FAIL: QEMU_EXITED: QEMU exited unexpectedly (killed by signal 9 (SIGKILL)) before the guest's RESULT"
        )
    assert_each_failure_once(res.out, tests=3)
    chaos.assert_clean()


def test_qemu_that_refuses_to_start_is_one_message(chaos: Chaos, guests: GuestShelf) -> None:
    """QEMU exits at once (an unknown device): its own error is quoted once, first thing after the token; no
    QMP library record, no traceback, in the report or the captured log."""
    guest = guests(PRINT_START + HANG)
    res = chaos.run(THREE_TESTS, *guest.options(), "--qemu-extra-arg=-device", "--qemu-extra-arg=no-such-device-xyz")
    assert res.rc == 1
    for verdict, text in res.cases().values():
        assert verdict == "error"
        first, second = text.strip().splitlines()[:2]
        assert first == "FAIL: QEMU_EXITED: QEMU exited during start-up (exit status 1)"
        assert second.startswith("qemu: ") and "no-such-device-xyz" in second
    assert res.reports().count("is not a valid device model name") == 3
    assert "Captured log" not in res.out
    assert_each_failure_once(res.out, tests=3)
    chaos.assert_clean()


FLOOD_MIB = int(os.environ.get("AERO_CHAOS_FLOOD_MIB", "5"))
RSS = """
import pytest

def hwm_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

@pytest.mark.aero_check("virtio-blk")
def test_blk(aero_vm):
    aero_vm.expect_pass()
    with open("hwm-small", "w") as fh:
        fh.write(str(hwm_kib()))

@pytest.mark.aero_check("virtio-net")
def test_net(aero_vm):
    aero_vm.expect_pass()
    with open("hwm-big", "w") as fh:
        fh.write(str(hwm_kib()))
"""


def _flood(mib: float) -> str:
    return (
        f"head -c {int(mib * (1 << 20))} /dev/zero | tr '\\0' x\n"  # no newline at all
        "head -c 131072 /dev/urandom\n"  # binary: NULs, escapes, invalid UTF-8 (and some newlines)
        "echo\n"
    )


def test_flooding_guest_keeps_memory_bounded_and_the_verdict_right(chaos: Chaos, guests: GuestShelf) -> None:
    """Megabytes without a newline, binary bytes, then the marker: the console is drained and cut into bounded
    lines, so pytest's peak memory after a big flood is what it was after a small one, and the verdicts hold."""
    guest = guests(
        PRINT_START
        + _flood(0.5)
        + marker("TEST", "virtio-blk", "PASS")
        + _flood(FLOOD_MIB)
        + marker("TEST", "virtio-net", "PASS")
        + HANG
    )
    chaos.guard(guest.disk)
    res = chaos.run(RSS, *guest.options(), timeout=400)
    assert res.cases()["test_blk"][0] == "passed" and res.cases()["test_net"][0] == "passed"
    grew_kib = int((chaos.dir / "hwm-big").read_text()) - int((chaos.dir / "hwm-small").read_text())
    print(f"a further flood of {FLOOD_MIB} MiB raised pytest's peak RSS by {grew_kib} KiB")
    assert grew_kib < 2048, "memory grew with the flood"
    serial = next(chaos.artifacts.glob("*/serial.log"))
    assert serial.stat().st_size > FLOOD_MIB << 20  # all of it is in the artifact, none of it kept in memory
    chaos.assert_clean()
