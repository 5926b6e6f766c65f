"""The whole selftest: RESULT, the per-test markers that must accompany it, configuration, device modes."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.testing import TRANSITIONAL_IDS, AeroVm


@pytest.mark.aero_check("virtio-blk", "virtio-input", "virtio-input-bind", "virtio-net", "virtio-net-udp")
def test_selftest_result(aero_vm: AeroVm) -> None:
    """``RESULT|PASS`` plus every required per-test marker: an old guest printing only RESULT cannot pass."""
    aero_vm.expect_result()


@pytest.mark.aero_check()
def test_guest_config_matches_host(aero_vm: AeroVm) -> None:
    """The guest's CONFIG line names the ports the host serves (a mismatch fails at once, UDP_PORT_MISMATCH)."""
    m = aero_vm.expect_config()
    http_port, udp_port = aero_vm.ports()
    if m.has("udp_port"):
        m.require(m.integer("udp_port") == udp_port, f"the host echoes on UDP port {udp_port}")
    if m.has("http_url"):
        tail = f":{http_port}{aero_vm.options.http_path}"
        m.require(m.text("http_url").endswith(tail), f"the host serves {tail}")


@pytest.mark.aero_vm(transitional=True)
@pytest.mark.aero_check()
def test_transitional_pci_ids(aero_vm: AeroVm) -> None:
    """Transitional mode (legacy + modern) for stock-driver comparisons: QEMU shows the 1000-range IDs."""
    for dev in ("blk", "net"):
        aero_vm.pci_preflight(TRANSITIONAL_IDS[dev], mode="transitional")
