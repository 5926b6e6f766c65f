"""Time limits: pytest-timeout (both methods) on a guest wait, and a guest that goes quiet."""

from __future__ import annotations

import re

import pytest

from .conftest import Chaos, GuestShelf
from .guests import BLK_THEN_HANG

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

TIMED = """
import time, pytest

@pytest.mark.aero_check("virtio-blk")
def test_blk(aero_vm):
    aero_vm.expect_pass()

@pytest.mark.timeout(3)
@pytest.mark.aero_check("virtio-net")
def test_net_times_out(aero_vm):
    aero_vm.expect_pass()

@pytest.mark.aero_check("virtio-input")
def test_same_vm_goes_on(aero_vm):
    assert aero_vm.handle.session.alive

@pytest.mark.timeout(2)
@pytest.mark.aero_check("virtio-input")
def test_sleeps_in_its_own_code(aero_vm):
    time.sleep(60)

def test_after():
    pass
"""


def test_pytest_timeout_signal_method_names_the_awaited_marker(chaos: Chaos, guests: GuestShelf) -> None:
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    res = chaos.run(TIMED, *guest.options(), "--timeout-method=signal")
    cases = res.cases()
    verdict, text = cases["test_net_times_out"]
    assert verdict == "failure"
    assert text.startswith(
        "FAIL: TIMEOUT: pytest-timeout (3 s) expired while the test waited for the final virtio-net marker"
    )
    assert "| AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS" in text and "serial: " in text  # tail, artifacts
    assert "threading.py" not in text and "Condition" not in text
    assert cases["test_same_vm_goes_on"][0] == "passed"  # the wait ended, not the VM
    # not waiting on the guest: pytest-timeout's own behaviour, unchanged
    assert "Timeout (>2.0s) from pytest-timeout" in cases["test_sleeps_in_its_own_code"][1]
    assert cases["test_after"][0] == "passed"
    assert res.elapsed < 120
    chaos.assert_clean()


def test_pytest_timeout_thread_method_keeps_the_junit_file(chaos: Chaos, guests: GuestShelf) -> None:
    """--timeout-method=thread ends the process (os._exit) for a test that is not waiting on the guest: the
    JUnit file still has every test that finished, and QEMU is gone."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    res = chaos.run(TIMED, *guest.options(), "--timeout-method=thread")
    cases = res.cases()
    assert cases["test_blk"][0] == "passed"
    assert cases["test_net_times_out"][1].startswith("FAIL: TIMEOUT: pytest-timeout (3 s) expired")
    assert cases["test_same_vm_goes_on"][0] == "passed"
    assert "test_sleeps_in_its_own_code" not in cases  # it was running when the process ended
    assert res.rc == 1 and "Timeout" in res.out
    chaos.assert_clean()


def test_guest_quiet_after_start_warns_then_fails(chaos: Chaos, guests: GuestShelf) -> None:
    """A guest that printed START and hung: a warning line at half the silence timeout (60 s by default) naming
    the VM, then NO_SERIAL_OUTPUT - every quiet stretch counts, not only the wait for the first byte."""
    guest = guests(BLK_THEN_HANG)
    chaos.guard(guest.disk)
    res = chaos.run(TIMED.replace("@pytest.mark.timeout(3)", ""), *guest.options(), "--vm-silence-timeout=8")
    warnings = [line for line in res.out.splitlines() if "WARNING" in line and "printed nothing" in line]
    assert warnings, res.out  # (one more while the kernel boots quietly, if that took half the timeout)
    assert re.search(
        r"vm0 \(.*\): the guest has printed nothing more since: AERO_VIRTIO_SELFTEST\|TEST\|virtio-blk\|PASS "
        r"for [45] s \(it fails with NO_SERIAL_OUTPUT at 8 s\)",
        warnings[-1],
    ), warnings
    _verdict, text = res.cases()["test_net_times_out"]
    assert text.startswith("FAIL: NO_SERIAL_OUTPUT: the guest printed nothing more on the first serial port")
    assert "virtio-blk|PASS" in text
    chaos.assert_clean()
