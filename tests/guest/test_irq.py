"""/proc/interrupts parsing: MSI-X per-queue vectors, shared vectors, INTx."""

from __future__ import annotations

from aero_selftest.irq import device_irqs, msix_fields, parse_interrupts

SAMPLE = """\
           CPU0       CPU1
  0:         40          0   IO-APIC   2-edge      timer
 11:          7          3   IO-APIC  11-fasteoi   virtio5, virtio6
 24:          0          0  PCI-MSIX-0000:00:02.0   0-edge      virtio0-config
 25:         50         14  PCI-MSIX-0000:00:02.0   1-edge      virtio0-req.0
 26:          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio1-config
 27:        100          0  PCI-MSIX-0000:00:03.0   1-edge      virtio1-input.0
 28:         80          0  PCI-MSIX-0000:00:03.0   2-edge      virtio1-output.0
 29:          0          0  PCI-MSIX-0000:00:04.0   0-edge      virtio2-config
 30:          6          0  PCI-MSIX-0000:00:04.0   1-edge      virtio2-virtqueues
NMI:          0          0   Non-maskable interrupts
ERR:          0
"""


def test_msix_per_queue() -> None:
    info = device_irqs(parse_interrupts(SAMPLE), "virtio1")
    assert info.mode == "msix"
    assert info.vectors == {"config": 0, "input.0": 1, "output.0": 2}
    assert info.messages == 3
    assert info.total == 180
    assert info.vector("config") == "0" and info.first_queue_vector() == "1"


def test_msix_blk_counts_sum_over_cpus() -> None:
    info = device_irqs(parse_interrupts(SAMPLE), "virtio0")
    assert info.counts["req.0"] == 64
    fields = msix_fields(info)
    assert fields["mode"] == "msix" and fields["messages"] == 2
    assert fields["config_vector"] == "0" and fields["queue_vector"] == "1"
    assert fields["mapping"] == "config:0,req.0:1"


def test_intx_shared_line() -> None:
    lines = parse_interrupts(SAMPLE)
    for dev in ("virtio5", "virtio6"):
        info = device_irqs(lines, dev)
        assert info.mode == "intx"
        assert info.messages == 0
        assert info.total == 10
        assert info.vector("config") == "none"


def test_prefix_of_another_device_does_not_match() -> None:
    text = "  CPU0\n 30: 1 PCI-MSIX-0000:00:05.0 0-edge virtio10-config\n"
    assert device_irqs(parse_interrupts(text), "virtio1").mode == "none"
    assert device_irqs(parse_interrupts(text), "virtio10").mode == "msix"


def test_empty() -> None:
    assert parse_interrupts("") == []
    assert device_irqs([], "virtio0").mode == "none"
