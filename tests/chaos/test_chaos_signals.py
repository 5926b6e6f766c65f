"""Every way a run can be ended from outside: SIGTERM (reported, exit 143), SIGINT, SIGKILL at any instant."""

from __future__ import annotations

import signal
import time

import pytest

from pytest_aero_virtio.interrupts import EXIT_STATUS_SIGTERM

from .conftest import Chaos, GuestShelf
from .guests import BLK_THEN_HANG, passing_tests

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

TWO_TESTS = (
    passing_tests("virtio-blk", "virtio-net")
    + """
def test_never_started():
    pass
"""
)


def test_sigterm_mid_run_reports_and_exits_143(chaos: Chaos, guests: GuestShelf) -> None:
    """What a CI job's cancel or time limit does: the finished test and the interrupted one are in the JUnit
    file, the summary is printed, the VM is stopped through the ladder, the status is 143, all within 10 s."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    proc = chaos.start(TWO_TESTS, *guest.options())
    chaos.wait_for_serial(b"virtio-blk|PASS")
    time.sleep(1.0)  # test_net is waiting now
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    res = chaos.finish(proc)
    assert time.monotonic() - t0 < 10.0
    assert res.rc == EXIT_STATUS_SIGTERM == 143
    cases = res.cases()
    assert cases["test_blk"][0] == "passed"
    verdict, text = cases["test_net"]
    assert verdict == "failure" and "FAIL: INTERRUPTED: SIGTERM received" in text
    assert "final virtio-net marker" in text and "virtio-blk|PASS" in text  # what it waited for, the tail
    assert "test_never_started" not in cases  # no test starts after the signal
    assert "Interrupted: SIGTERM received" in res.out and "1 failed, 1 passed" in res.out
    assert res.count("FAIL: INTERRUPTED") == 1 + 1  # the report and the short summary line
    shutdown = next(chaos.artifacts.glob("*/shutdown.txt")).read_text()
    assert "how=quit" in shutdown  # the ladder's first rung, not a kill
    chaos.assert_clean()


def test_sigterm_under_xdist_reaches_every_worker(chaos: Chaos, guests: GuestShelf) -> None:
    """CI signals pytest-xdist's controller (perhaps only it): it forwards to its workers, each reports its
    interrupted test, and the controller writes one JUnit file with all of them and exits 143."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    intx = TWO_TESTS.replace("def test_", "def test_intx_").replace(
        "@pytest.mark.aero_check", "@pytest.mark.aero_vm(vectors=0)\n@pytest.mark.aero_check"
    )
    proc = chaos.start(TWO_TESTS + intx, *guest.options(), "-n", "2")
    deadline = time.monotonic() + 120
    while sum(b"virtio-blk|PASS" in p.read_bytes() for p in chaos.artifacts.glob("*/serial.log")) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the two VMs did not both come up"
        time.sleep(0.2)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    res = chaos.finish(proc)
    assert time.monotonic() - t0 < 10.0
    assert res.rc == 143
    cases = res.cases()
    assert cases["test_blk"][0] == cases["test_intx_blk"][0] == "passed"
    for name in ("test_net", "test_intx_net"):
        assert "FAIL: INTERRUPTED: SIGTERM received" in cases[name][1]
    chaos.assert_clean()


def test_sigterm_while_booting_reports_the_setup(chaos: Chaos, guests: GuestShelf) -> None:
    """SIGTERM before the QMP handshake: the test's setup is reported as interrupted, QEMU is gone."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    proc = chaos.start(TWO_TESTS, *guest.options())
    chaos.wait_for_qemu(proc)
    proc.send_signal(signal.SIGTERM)
    res = chaos.finish(proc, timeout=30)
    assert res.rc == 143
    verdict, text = res.cases()["test_blk"]
    assert verdict in ("error", "failure") and "FAIL: INTERRUPTED" in text
    assert "Traceback" not in res.out
    chaos.assert_clean()


def test_second_sigterm_kills_at_once(chaos: Chaos, guests: GuestShelf) -> None:
    guest = guests(BLK_THEN_HANG)
    source = """
    import time, pytest

    @pytest.mark.aero_check("virtio-blk")
    def test_blk(aero_vm):
        aero_vm.expect_pass()

    def test_slow_teardown(request):
        request.addfinalizer(lambda: time.sleep(60))  # a teardown that ignores the first request
    """
    proc = chaos.start(source, *guest.options())
    chaos.wait_for_serial(b"virtio-blk|PASS")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # a repeat within 2 s counts as the same request
    proc.send_signal(signal.SIGTERM)
    res = chaos.finish(proc, timeout=30)
    assert res.rc in (2, 143), res.rc
    chaos.assert_clean()


def test_ctrl_c_stops_the_vm(chaos: Chaos, guests: GuestShelf) -> None:
    guest = guests(BLK_THEN_HANG)
    proc = chaos.start(TWO_TESTS, *guest.options())
    chaos.wait_for_serial(b"virtio-blk|PASS")
    proc.send_signal(signal.SIGINT)
    res = chaos.finish(proc, timeout=30)
    assert res.rc == pytest.ExitCode.INTERRUPTED
    assert res.junit.exists()
    chaos.assert_clean()


@pytest.mark.parametrize("when", ["qemu-forked", "booting", "running"])
def test_sigkill_at_any_instant_leaves_nothing(chaos: Chaos, guests: GuestShelf, when: str) -> None:
    """pytest SIGKILLed (an OOM kill, a crashed xdist worker): QEMU dies with it (parent-death signal) and the
    snapshot overlay, a file without a name, is gone with QEMU - also in the first instants, before QMP."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    proc = chaos.start(TWO_TESTS, *guest.options())
    if when == "qemu-forked":
        chaos.wait_for_qemu(proc)
    elif when == "booting":
        chaos.wait_for_qemu(proc)
        time.sleep(0.3)
    else:
        chaos.wait_for_serial(b"virtio-blk|PASS")
    proc.kill()
    chaos.finish(proc, timeout=30)
    chaos.assert_clean()
