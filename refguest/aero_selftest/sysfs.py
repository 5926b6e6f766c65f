"""Thin sysfs/procfs helpers: which virtio devices exist, which driver has them, their PCI identity."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

VIRTIO_BUS = Path("/sys/bus/virtio")


def read(path: Path | str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def virtio_devices(driver: str, bus: Path = VIRTIO_BUS) -> list[str]:
    """Names (``virtioN``) of the virtio devices bound to ``driver``, in numeric order."""
    d = bus / "drivers" / driver
    try:
        names = [n for n in os.listdir(d) if n.startswith("virtio") and n[6:].isdigit()]
    except OSError:
        return []
    return sorted(names, key=lambda n: int(n[6:]))


def virtio_of(sysfs_device_link: Path) -> str:
    """The ``virtioN`` ancestor of a sysfs device path (e.g. /sys/block/vda/device -> virtio1)."""
    try:
        real = sysfs_device_link.resolve(strict=True)
    except OSError:
        return ""
    for part in reversed(real.parts):
        if part.startswith("virtio") and part[6:].isdigit():
            return part
    return ""


def pci_dir(dev: str, bus: Path = VIRTIO_BUS) -> Path:
    """The PCI function directory a virtio device sits on (the parent of /sys/bus/virtio/devices/virtioN)."""
    return (bus / "devices" / dev).resolve().parent


def pci_ids(dev: str, bus: Path = VIRTIO_BUS) -> dict[str, str]:
    """vendor/device/revision/subsystem ids and the PCI address of a virtio device's PCI function."""
    p = pci_dir(dev, bus)

    def hex4(name: str) -> str:
        v = read(p / name)
        return v[2:].upper().rjust(4, "0") if v.startswith("0x") else v.upper()

    rev = read(p / "revision")
    return {
        "vendor": hex4("vendor"),
        "device": hex4("device"),
        "subsys_vendor": hex4("subsystem_vendor"),
        "subsys_device": hex4("subsystem_device"),
        "revision": rev[2:].upper().rjust(2, "0") if rev.startswith("0x") else rev,
        "address": p.name,
    }


def pnp_id(ids: dict[str, str]) -> str:
    """A Windows-style hardware id (what the Windows selftest reports as pnp_id)."""
    return (
        f"PCI\\VEN_{ids['vendor']}&DEV_{ids['device']}"
        f"&SUBSYS_{ids['subsys_device']}{ids['subsys_vendor']}&REV_{ids['revision']}"
    )


def run(argv: Sequence[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run with a mandatory timeout and captured output (never an inherited console)."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False, **kwargs
    )


def out_text(cp: subprocess.CompletedProcess[bytes]) -> str:
    """Last meaningful line of a command's stderr/stdout, for an ``err=`` field."""
    text = (cp.stderr or b"").decode("utf-8", "replace").strip() or (cp.stdout or b"").decode(
        "utf-8", "replace"
    ).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {cp.returncode}"


def wait_for(predicate_path: Path, exists: bool, timeout: float, interval: float = 0.05) -> bool:
    """Poll until ``predicate_path`` exists (or stops existing); False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate_path.exists() == exists:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def mounts(path: Path = Path("/proc/mounts")) -> list[tuple[str, str, str]]:
    """(device, mountpoint, fstype) of every mount."""
    out = []
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[0], parts[1].replace("\\040", " "), parts[2]))
    return out
