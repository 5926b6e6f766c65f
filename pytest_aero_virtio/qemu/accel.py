"""``--vm-accel=auto``: KVM only when it really runs a guest here, else TCG.

``/dev/kvm`` opening, ``KVM_CREATE_VM`` succeeding and even SeaBIOS running are not enough: on nested
hosts (this project's CI among them) the firmware runs under KVM but a 64-bit Linux kernel dies on its
first VEX-encoded instruction with a KVM internal error. The only honest probe is to boot a kernel: the
reference guest's kernel, with no initrd and ``panic=-1``, must reach its "VFS: Unable to mount root"
panic and make QEMU exit by itself. The verdict is cached per QEMU binary and kernel, so the probe costs a
few seconds once per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import QemuCommand
from .process import run_child

#: What a kernel prints when it ran far enough to prove the accelerator works.
_ALIVE = (b"Kernel panic", b"VFS: Unable to mount root", b"Run /init")
PROBE_TIMEOUT_S = 10.0


def kvm_device_usable(path: str = "/dev/kvm") -> bool:
    """/dev/kvm exists and this user may open it read-write (the cheap precondition)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def probe_argv(qemu: QemuCommand, kernel: Path) -> list[str]:
    """The probe's QEMU command line: KVM, no devices, the kernel's console on stdio, panic -> exit."""
    return [
        str(qemu.path),
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 loglevel=4",
    ]


def find_probe_kernel(
    explicit: Path | None, own_image: bool, build_reference: Callable[[], Path], found: Iterable[Path]
) -> Path | None:
    """The kernel ``auto`` boots under KVM, cheapest first: ``--vm-kernel``; the reference guest's when the run
    boots it anyway (built if needed); else the first readable of ``found`` (a reference kernel already in the
    cache, the host's own ``/boot/vmlinuz-<release>``). With the user's own image the reference image is never
    built just for the probe: that would need Debian's apt on a machine that may not have it. None: no probe.
    """
    if explicit is not None:
        return explicit
    if not own_image:
        return build_reference()
    return next((k for k in found if k.is_file() and os.access(k, os.R_OK)), None)


def kernel_ran(output: bytes) -> bool:
    """Whether the probe's serial output shows the kernel ran to its root-mount panic (pure)."""
    return any(sign in output for sign in _ALIVE)


def _cache_file(cache_dir: Path, qemu: QemuCommand, kernel: Path) -> Path:
    """Keyed by the QEMU binary and the kernel's *content*: a rebuilt image with the same kernel reuses it."""
    st_q = os.stat(qemu.path)
    kernel_digest = hashlib.sha256(kernel.read_bytes()).hexdigest()
    key = f"{os.path.realpath(qemu.path)}|{st_q.st_size}|{st_q.st_mtime_ns}|{kernel_digest}"
    return cache_dir / f"kvm-probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def kvm_works(qemu: QemuCommand, kernel: Path, cache_dir: Path) -> bool:
    """Boot ``kernel`` under KVM once (cached): True only if it ran to its root-mount panic."""
    if not kvm_device_usable():
        return False
    cache = _cache_file(cache_dir, qemu, kernel)
    try:
        return bool(json.loads(cache.read_text())["kvm_works"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        # Like every QEMU of the plugin: killed with pytest (PDEATHSIG), even inside this 10 s window.
        proc = run_child(probe_argv(qemu, kernel), PROBE_TIMEOUT_S)
        works = proc.returncode == 0 and kernel_ran(proc.stdout)
    except subprocess.TimeoutExpired:
        works = False  # run_child killed its process group; a hung KVM guest is a "no"
    except OSError:
        return False
    with contextlib.suppress(OSError):  # an unwritable cache only costs a probe next time
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"kvm_works": works}))
        tmp.replace(cache)  # atomic: concurrent xdist workers never read half a file
    return works


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator a run uses and why (shown in the report header)."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_accel(choice: str, qemu: QemuCommand, kernel: Path | None, cache_dir: Path) -> AccelChoice:
    """``kvm``/``tcg`` as given; ``auto`` probes (no probe kernel -> TCG, the safe choice)."""
    if choice in ("kvm", "tcg"):
        return AccelChoice(choice, "--vm-accel")
    if not kvm_device_usable():
        return AccelChoice("tcg", "auto: /dev/kvm is missing or not usable by this user")
    if kernel is None:
        return AccelChoice(
            "tcg", "auto: no kernel to probe KVM with (pass --vm-kernel, or --vm-accel=kvm to use KVM unprobed)"
        )
    if kvm_works(qemu, kernel, cache_dir):
        return AccelChoice("kvm", "auto: a kernel booted under KVM")
    return AccelChoice("tcg", "auto: /dev/kvm opens, but a kernel did not run under KVM (nested virtualisation?)")
