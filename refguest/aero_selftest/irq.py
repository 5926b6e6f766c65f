"""Interrupt mode of a virtio device, from ``/proc/interrupts`` (pure parsing + a thin reader).

Linux's virtio_pci requests either MSI-X vectors named ``virtioN-config`` and ``virtioN-<queue>`` (one per
queue, e.g. ``virtio0-req.0``, or a shared ``virtioN-virtqueues``), or one legacy INTx line named
``virtioN`` (on the IO-APIC, possibly shared: ``virtio0, virtio2``).  The MSI-X table entry number is the
hwirq column before ``-edge`` (``PCI-MSIX-0000:00:02.0 1-edge virtio0-req.0``).
"""

from __future__ import annotations

import re
from pathlib import Path

from .record import record

PROC_INTERRUPTS = Path("/proc/interrupts")


@record(frozen=True)
class IrqLine:
    irq: str
    count: int
    chip: str
    hwirq: str
    actions: tuple[str, ...]


@record(frozen=True)
class DeviceIrqs:
    """What /proc/interrupts says about one virtio device (``dev`` like ``virtio0``)."""

    dev: str
    mode: str  # "msix", "intx" or "none"
    vectors: dict[str, int]  # MSI-X: action suffix ("config", "req.0") -> table entry (-1 when unknown)
    counts: dict[str, int]  # suffix (or "intx") -> interrupt count summed over CPUs

    @property
    def messages(self) -> int:
        return len(self.vectors)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def vector(self, suffix: str) -> str:
        v = self.vectors.get(suffix)
        return "none" if v is None else str(v)

    def first_queue_vector(self) -> str:
        for name, v in self.vectors.items():
            if name != "config":
                return str(v)
        return "none"


def parse_interrupts(text: str) -> list[IrqLine]:
    """Parse /proc/interrupts into lines (the CPU header and non-numeric rows such as NMI are kept too)."""
    lines = text.splitlines()
    if not lines:
        return []
    ncpu = len(lines[0].split())
    out = []
    for raw in lines[1:]:
        irq, sep, rest = raw.partition(":")
        if not sep:
            continue
        parts = rest.split()
        counts = []
        for p in parts[:ncpu]:
            if not p.isdigit():
                break
            counts.append(int(p))
        tail = parts[len(counts) :]
        chip = tail[0] if tail else ""
        hwirq = tail[1] if len(tail) > 1 else ""
        action_text = " ".join(tail[2:])
        actions = tuple(a.strip() for a in action_text.split(",") if a.strip())
        out.append(IrqLine(irq.strip(), sum(counts), chip, hwirq, actions))
    return out


_HWIRQ = re.compile(r"^(\d+)-")


def device_irqs(lines: list[IrqLine], dev: str) -> DeviceIrqs:
    """Classify the interrupts of virtio device ``dev`` (e.g. ``virtio3``)."""
    vectors: dict[str, int] = {}
    counts: dict[str, int] = {}
    intx = False
    for line in lines:
        for action in line.actions:
            if action == dev:
                intx = True
                counts["intx"] = counts.get("intx", 0) + line.count
            elif action.startswith(dev + "-"):
                suffix = action[len(dev) + 1 :]
                m = _HWIRQ.match(line.hwirq)
                vectors[suffix] = int(m.group(1)) if m and "MSI" in line.chip.upper() else -1
                counts[suffix] = counts.get(suffix, 0) + line.count
    mode = "msix" if vectors else ("intx" if intx else "none")
    return DeviceIrqs(dev, mode, vectors, counts)


def read_device_irqs(dev: str, path: Path = PROC_INTERRUPTS) -> DeviceIrqs:
    return device_irqs(parse_interrupts(path.read_text()), dev)


def msix_fields(info: DeviceIrqs) -> dict[str, str | int]:
    """Fields for a ``virtio-<dev>-msix`` marker: mode, messages, config/queue vectors, per-queue map."""
    fields: dict[str, str | int] = {
        "mode": info.mode,
        "messages": info.messages,
        "config_vector": info.vector("config"),
        "queue_vector": info.first_queue_vector(),
        "interrupts": info.total,
        "dev": info.dev,
    }
    if info.vectors:
        fields["mapping"] = ",".join(f"{k}:{v}" for k, v in info.vectors.items())
    return fields
