"""virtio-blk: disk I/O, interrupts, runtime resize and reset, as the guest reports them.

The guest writes, reads back and flushes a file on the virtio disk it booted from; resize is answered by the
host's QMP ``blockdev-resize``/``block_resize`` reaction the moment the guest prints READY.
"""

from __future__ import annotations

import pytest

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.testing import MODERN_IDS, AeroDevice, expected_irq_mode

pytestmark = pytest.mark.virtio_blk


@pytest.mark.aero_check()
def test_blk_pci_preflight(virtio_blk: AeroDevice) -> None:
    """QEMU exposes the disk as a modern-only virtio device (1af4:1042)."""
    virtio_blk.pci_preflight(MODERN_IDS["blk"])


@pytest.mark.aero_check("virtio-blk")
def test_virtio_blk(virtio_blk: AeroDevice) -> None:
    """Write, read back and flush; the throughput figures, when the guest gives them, are positive."""
    m = virtio_blk.expect_pass()
    if m.has("write_bytes"):
        m.integer("write_bytes", minimum=1)
    for key in ("write_mbps", "read_mbps"):
        if m.has(key):
            m.number(key, minimum=1e-9)


@pytest.mark.aero_check("virtio-blk-msix")
def test_virtio_blk_msix(virtio_blk: AeroDevice) -> None:
    """The guest reports the interrupt mode the VM was configured for (MSI-X unless vectors=0)."""
    virtio_blk.expect_pass().expect("mode", expected_irq_mode(virtio_blk.vm.config.vectors.blk))


@pytest.mark.aero_vm(vectors=0)
@pytest.mark.aero_check("virtio-blk")
def test_virtio_blk_intx(virtio_blk: AeroDevice) -> None:
    """With ``vectors=0`` QEMU offers no MSI-X table: the driver must work on INTx."""
    virtio_blk.expect_pass().expect("irq_mode", "intx")


@pytest.mark.aero_check("virtio-blk-counters")
def test_virtio_blk_counters(virtio_blk: AeroDevice) -> None:
    virtio_blk.expect_info()


@pytest.mark.aero_check("virtio-blk-resize")
def test_virtio_blk_resize(virtio_blk: AeroDevice) -> None:
    """The guest sees the capacity grow by exactly what the host's QMP resize asked for."""
    m = virtio_blk.expect_pass()
    request = virtio_blk.vm.expect_host(topics.BLK_RESIZE, "REQUEST")
    new, asked = m.integer("new_bytes", minimum=1), request.integer("new_bytes", minimum=1)
    m.require(new == asked, f"new_bytes={new}, but the host resized the disk to {asked}")
    m.require(new > m.integer("old_bytes", minimum=0), f"new_bytes={new} is not larger than old_bytes")


@pytest.mark.aero_check("virtio-blk-reset")
def test_virtio_blk_reset(virtio_blk: AeroDevice) -> None:
    virtio_blk.expect_pass()
