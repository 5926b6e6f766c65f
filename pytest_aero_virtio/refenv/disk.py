"""The reference guest's disk: an MBR disk SeaBIOS boots like any PC disk (and a Windows disk).

Layout (512-byte sectors, partitions 1 MiB aligned)::

    sector 0        SYSLINUX's MBR boot code, disk id, partition table
    partition 1     FAT16, active: SYSLINUX, syslinux.cfg, vmlinuz, initrd.img, and free space the
                    selftest's blk check writes its test files to (type 0x0e)
    partition 2     the root file system, an uncompressed erofs image read through a loop device (0x83)

The kernel reads the root on demand instead of unpacking a whole initramfs into RAM at every boot.  Built
in place in one image file, as an ordinary user: ``mkfs.vfat --offset``, ``syslinux --offset`` and
``mcopy -i disk@@offset`` write into partition 1, plain file writes do the rest.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_aero_virtio.refenv.buildtools import ImageBuildError, mtools_env, run_tool

SECTOR = 512
ALIGN_SECTORS = 2048  # 1 MiB
DISK_ID = 0x41455230  # "0REA": fixed, so the same inputs give the same disk
FAT_TYPE = 0x0E  # FAT16, LBA
LINUX_TYPE = 0x83
MBR_BIN_PATHS = (
    "/usr/lib/syslinux/mbr/mbr.bin",  # Debian, Ubuntu (syslinux-common)
    "/usr/share/syslinux/mbr.bin",  # Fedora, Arch
    "/usr/lib/SYSLINUX/mbr.bin",
)


@dataclass(frozen=True)
class Layout:
    """Where the two partitions are, in sectors."""

    fat_start: int
    fat_sectors: int
    root_start: int
    root_sectors: int

    @property
    def total_sectors(self) -> int:
        return self.root_start + self.root_sectors


def _align(sectors: int) -> int:
    return -(-sectors // ALIGN_SECTORS) * ALIGN_SECTORS


def fat_size_kib(payload_bytes: int, min_free_mib: int) -> int:
    """FAT partition size: the files, ``min_free_mib`` free for the guest's test files, 8 MiB of slack
    (FAT tables, cluster rounding), rounded up to whole MiB."""
    return -(-((payload_bytes >> 10) + (min_free_mib + 8) * 1024) // 1024) * 1024


def plan_layout(fat_kib: int, root_bytes: int) -> Layout:
    """Partition 1 at 1 MiB, partition 2 after it, both 1 MiB aligned (the root rounded up to a sector)."""
    fat_sectors = fat_kib * 1024 // SECTOR
    root_start = _align(ALIGN_SECTORS + fat_sectors)
    return Layout(ALIGN_SECTORS, fat_sectors, root_start, -(-root_bytes // SECTOR))


def _entry(active: bool, kind: int, start: int, sectors: int) -> bytes:
    # CHS fields say "use LBA" (0xfe 0xff 0xff), as every modern partitioner writes for big disks.
    return struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", start, sectors)


def mbr(boot_code: bytes, layout: Layout, disk_id: int = DISK_ID) -> bytes:
    """Sector 0: boot code (at most 440 bytes), disk id, two partitions (the FAT active), 0x55AA."""
    if len(boot_code) > 440:
        raise ValueError(f"MBR boot code is {len(boot_code)} bytes, at most 440 fit")
    table = _entry(True, FAT_TYPE, layout.fat_start, layout.fat_sectors)
    table += _entry(False, LINUX_TYPE, layout.root_start, layout.root_sectors)
    out = boot_code.ljust(440, b"\0") + struct.pack("<I", disk_id) + b"\0\0" + table.ljust(64, b"\0") + b"\x55\xaa"
    assert len(out) == SECTOR
    return out


def parse_partitions(sector0: bytes) -> list[tuple[bool, int, int, int]]:
    """(active, type, start, sectors) of the used entries of an MBR (for tests and inspection)."""
    if sector0[510:512] != b"\x55\xaa":
        raise ValueError("no MBR signature")
    out = []
    for i in range(4):
        status, _c1, kind, _c2, start, n = struct.unpack_from("<B3sB3sII", sector0, 446 + 16 * i)
        if kind:
            out.append((status == 0x80, kind, start, n))
    return out


def find_mbr_bin(candidates: Sequence[str] = MBR_BIN_PATHS) -> Path:
    for c in candidates:
        if Path(c).is_file():
            return Path(c)
    raise ImageBuildError(
        f"SYSLINUX's MBR boot code is in none of {list(candidates)}; fix: run scripts/setup-host as root "
        "(installs syslinux-common)"
    )


def build_disk(out: Path, fat_files: Sequence[Path], root_image: Path, min_free_mib: int, label: str) -> Layout:
    """Write the whole disk image ``out``: the FAT partition with ``fat_files``, the root, the MBR last."""
    payload = sum(p.stat().st_size for p in fat_files) + 256 * 1024  # + SYSLINUX's own files
    layout = plan_layout(fat_size_kib(payload, min_free_mib), root_image.stat().st_size)
    with open(out, "wb") as fh:
        fh.truncate(layout.total_sectors * SECTOR)
    offset = layout.fat_start * SECTOR
    fat_kib = layout.fat_sectors * SECTOR // 1024
    # -h: the boot sector's hidden-sectors field must be the partition's start for SYSLINUX to find itself.
    run_tool(["mkfs.vfat", "-F", "16", "-n", label, "-h", str(layout.fat_start),
              f"--offset={layout.fat_start}", str(out), str(fat_kib)])  # fmt: skip
    env = mtools_env()
    run_tool(["syslinux", "--offset", str(offset), "--install", str(out)], env)
    run_tool(["mcopy", "-i", f"{out}@@{offset}", *map(str, fat_files), "::"], env)
    with open(out, "r+b") as fh, open(root_image, "rb") as src:
        fh.seek(layout.root_start * SECTOR)
        shutil.copyfileobj(src, fh, 1 << 20)
        fh.seek(0)
        fh.write(mbr(find_mbr_bin().read_bytes(), layout))
    return layout
