"""Tiny misbehaving guests for the chaos suite (and anyone else's tests): boot in ~3 s under TCG.

A guest here is the reference environment's Debian kernel with a one-file initramfs: a static busybox and an
``/init`` shell script that does whatever the test needs (prints markers, goes quiet, panics, floods the
serial port, powers off before RESULT). It boots by direct kernel boot (``--vm-kernel/--vm-initrd``) with a
small raw ``--vm-image`` (a boot sector that only loops: the disk is data here), so the plugin runs exactly
as it does for a user's guest.

    guest = tiny_guest(tmp_path, PRINT_START + 'echo "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS"' + HANG)
    pytester.runpytest_subprocess(*guest.options(), ...)
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytest_aero_virtio.refenv.cache import cache_root
from pytest_aero_virtio.refenv.cpio import CpioWriter
from pytest_aero_virtio.refenv.image import ensure_image, image_layers

__all__ = [
    "BLK_THEN_HANG",
    "HANG",
    "PREFIX",
    "PRINT_START",
    "TinyGuest",
    "boot_sector_disk",
    "busybox",
    "marker",
    "passing_tests",
    "tiny_guest",
]

PREFIX = "AERO_VIRTIO_SELFTEST"
#: The first line every guest prints (the protocol's START).
PRINT_START = f'echo "{PREFIX}|START|version=1"\n'
#: Stay up, silent, until the harness stops the VM.
HANG = "while :; do sleep 1000; done\n"
#: Mount what scripts use, and put the console in raw mode (markers end in a bare LF, as the protocol says).
_PRELUDE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -opost 2>/dev/null
dmesg -n 1
"""
APPEND = "console=ttyS0 panic=-1 quiet"


def marker(kind: str, *fields: str) -> str:
    """A shell line that prints one marker: ``marker("TEST", "virtio-blk", "PASS")``."""
    return f'echo "{PREFIX}|{"|".join((kind, *fields))}"\n'


#: blk passes at once, then the guest says nothing more: a test waiting on anything else waits until something
#: (a signal, a timeout, a kill) ends it.
BLK_THEN_HANG = PRINT_START + marker("TEST", "virtio-blk", "PASS") + HANG


def passing_tests(*checks: str) -> str:
    """The source of an inner test file: per check, ``test_<device>`` that expects it to PASS
    (``passing_tests("virtio-blk")`` -> ``test_blk``)."""
    tests = "".join(
        f'\n@pytest.mark.aero_check("{check}")\ndef test_{check.removeprefix("virtio-")}(aero_vm):\n'
        "    aero_vm.expect_pass()\n"
        for check in checks
    )
    return "\nimport pytest\n" + tests


def busybox() -> Path:
    """The static busybox of the reference environment: unpacked in the image's base layer, or else taken from
    the busybox-static package in the cache's download directory (the layout of the layers may change)."""
    for layer in image_layers(ensure_image()):
        found = [p for p in sorted(layer.rglob("busybox")) if p.is_file() and not p.is_symlink()]
        if found:
            return found[0]
    root = cache_root()
    for deb in sorted((root / "debs").glob("busybox-static_*.deb")):
        dest = Path(tempfile.gettempdir()) / f"aero-chaos-{deb.stem}"
        if not (dest / "bin/busybox").is_file():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
        for candidate in (dest / "bin/busybox", dest / "usr/bin/busybox"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError("no static busybox in the reference environment; run aero-virtio-refenv build")


def boot_sector_disk(path: Path, size: int = 1 << 20) -> Path:
    """A raw disk whose boot sector loops forever (``jmp $``) and carries the boot signature: bootable by the
    plugin's image check, silent when booted from."""
    sector = bytearray(512)
    sector[0:2] = b"\xeb\xfe"
    sector[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(sector) + b"\0" * (size - 512))
    return path


@dataclass(frozen=True)
class TinyGuest:
    """The files of one tiny guest and the plugin options that boot it."""

    kernel: Path
    initrd: Path
    disk: Path
    append: str = APPEND

    def options(self) -> list[str]:
        return [
            f"--vm-image={self.disk}",
            f"--vm-kernel={self.kernel}",
            f"--vm-initrd={self.initrd}",
            f"--vm-append={self.append}",
            "--vm-http-port=auto",  # never wait for another run's fixed ports on a shared machine
            "--vm-udp-port=auto",
        ]


def tiny_guest(directory: Path, script: str, name: str | None = None) -> TinyGuest:
    """Build a guest whose /init runs ``script`` (busybox sh) after mounting /proc and /sys.

    When the script ends, init exits and the kernel panics ("Attempted to kill init"): end a script with
    :data:`HANG` or ``poweroff -f`` unless that is the point.
    """
    name = name or hashlib.sha256(script.encode()).hexdigest()[:12]
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        w.add_dir(d)
    w.add_chardev("dev/console", 5, 1)
    w.add_file("bin/busybox", busybox().read_bytes(), 0o755)
    w.add_file("init", (_PRELUDE + script).encode(), 0o755)
    w.close()
    initrd = directory / f"{name}.cpio"
    initrd.write_bytes(buf.getvalue())
    disk = directory / "disk.img"
    if not disk.exists():
        boot_sector_disk(disk)
    kernel = ensure_image().kernel
    assert stat.S_ISREG(os.stat(kernel).st_mode)
    return TinyGuest(kernel=kernel, initrd=initrd, disk=disk)
