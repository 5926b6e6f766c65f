"""The disk layout: MBR, partition placement, FAT size (pure), and a real build with the host tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_aero_virtio.refenv import disk


def test_layout_is_aligned_and_ordered() -> None:
    lay = disk.plan_layout(fat_kib=80 * 1024, root_bytes=25_000_000)
    assert lay.fat_start == 2048 and lay.fat_sectors == 80 * 2048
    assert lay.root_start % 2048 == 0 and lay.root_start >= lay.fat_start + lay.fat_sectors
    assert lay.root_sectors * 512 >= 25_000_000 and lay.total_sectors == lay.root_start + lay.root_sectors


def test_fat_size_leaves_the_free_space_asked_for() -> None:
    kib = disk.fat_size_kib(payload_bytes=13 * 1024 * 1024, min_free_mib=64)
    assert kib % 1024 == 0 and kib >= (13 + 64) * 1024


def test_mbr_round_trip() -> None:
    lay = disk.plan_layout(10 * 1024, 4096)
    sector = disk.mbr(b"\xeb\xfe", lay)
    assert len(sector) == 512 and sector[:2] == b"\xeb\xfe"
    assert disk.parse_partitions(sector) == [
        (True, disk.FAT_TYPE, lay.fat_start, lay.fat_sectors),
        (False, disk.LINUX_TYPE, lay.root_start, lay.root_sectors),
    ]
    with pytest.raises(ValueError, match="440"):
        disk.mbr(b"\0" * 441, lay)


def test_missing_mbr_code_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(disk.ImageBuildError, match="setup-host"):
        disk.find_mbr_bin([str(tmp_path / "nope.bin")])


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkfs.vfat", "syslinux", "mcopy", "mdir")),
    reason="host tools missing (scripts/setup-host)",
)
def test_built_disk_has_a_bootable_fat_and_the_root(tmp_path: Path) -> None:
    files = [tmp_path / "syslinux.cfg", tmp_path / "vmlinuz"]
    files[0].write_text("DEFAULT x\n")
    files[1].write_bytes(b"k" * 100_000)
    root = tmp_path / "usr.img"
    root.write_bytes(b"R" * 8192)
    out = tmp_path / "disk.img"
    lay = disk.build_disk(out, files, root, min_free_mib=16, label="TESTDISK")
    data = out.read_bytes()
    assert len(data) == lay.total_sectors * 512
    assert disk.parse_partitions(data[:512])[0][2] == lay.fat_start
    assert data[lay.root_start * 512 : lay.root_start * 512 + 8192] == b"R" * 8192
    boot = data[lay.fat_start * 512 : lay.fat_start * 512 + 512]
    assert boot[510:512] == b"\x55\xaa" and int.from_bytes(boot[0x1C:0x20], "little") == lay.fat_start  # hidden
    env = disk.mtools_env()
    listing = subprocess.run(
        ["mdir", "-a", "-b", "-i", f"{out}@@{lay.fat_start * 512}", "::"], capture_output=True, text=True, env=env
    ).stdout
    assert {"::/LDLINUX.SYS", "::/SYSLINUX.CFG", "::/VMLINUZ"} <= {n.upper() for n in listing.split()}
