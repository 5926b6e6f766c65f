"""Which VM directories a run made, the host markers read from them, the log copies (files only, no QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aero_virtio.compat import cli
from pytest_aero_virtio.compat.outcome import ItemRecord
from pytest_aero_virtio.compat.run import copy_artifact, host_marker_lines, list_dirs, stale_siblings, vm_dirs
from pytest_aero_virtio.compat.table import RESULT_TEST


def vm(root: Path, name: str, serial: bytes = b"", markers: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "serial.log").write_bytes(serial)
    if markers is not None:
        (d / "host-markers.log").write_text(markers)
    return d


def test_vm_dirs_put_the_result_vm_first_then_run_order_then_vms_that_never_booted(tmp_path: Path) -> None:
    old = vm(tmp_path, "main-vm0-from-an-earlier-run")
    before = list_dirs(tmp_path)
    intx, main, broken = vm(tmp_path, "main-vm0-intx"), vm(tmp_path, "main-vm1-main"), vm(tmp_path, "main-vm2-x")
    records = [
        ItemRecord("test_blk.py::test_virtio_blk_intx", 0, serial_log=str(intx / "serial.log")),
        ItemRecord("test_blk.py::test_virtio_blk", 1, serial_log=str(main / "serial.log")),
        ItemRecord(RESULT_TEST, 2, serial_log=str(main / "serial.log")),
        ItemRecord("test_selftest.py::test_transitional_pci_ids", 3),  # its VM failed to boot: no property
    ]
    assert vm_dirs(records, tmp_path, before) == [main, intx, broken]
    assert old not in vm_dirs(records, tmp_path, before)


def test_host_marker_lines_vm_by_vm(tmp_path: Path) -> None:
    a = vm(tmp_path, "a", markers="AERO_VIRTIO_WIN7_HOST|QEMU_PCI_PREFLIGHT|PASS|mode=modern\n\n")
    b = vm(tmp_path, "b")  # no host markers at all
    c = vm(tmp_path, "c", markers="AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_IRQ|PASS|irq_mode=intx\n")
    assert host_marker_lines([c, b, a]) == [
        "AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_IRQ|PASS|irq_mode=intx",
        "AERO_VIRTIO_WIN7_HOST|QEMU_PCI_PREFLIGHT|PASS|mode=modern",
    ]


def test_copies_first_vm_to_the_path_and_the_others_beside_it(tmp_path: Path) -> None:
    dirs = [vm(tmp_path / "art", n, serial=n.encode()) for n in ("main", "intx", "transitional")]
    dest = tmp_path / "out" / "win7-serial.log"
    done = copy_artifact(dirs, "serial.log", dest)
    assert [target for _, target in done] == [dest, dest.with_name("win7-serial.vm1.log"),
                                               dest.with_name("win7-serial.vm2.log")]
    assert [t.read_bytes() for _, t in done] == [b"main", b"intx", b"transitional"]
    assert copy_artifact(dirs, "audio.wav", tmp_path / "out" / "a.wav") == []
    assert sorted(p.name for p in stale_siblings(dest)) == ["win7-serial.vm1.log", "win7-serial.vm2.log"]
    (tmp_path / "out" / "win7-serial.vmx.log").write_text("not ours")
    assert len(stale_siblings(dest)) == 2


def test_an_earlier_runs_copies_are_removed_before_the_run(tmp_path: Path) -> None:
    dest = tmp_path / "win7-serial.log"
    for path in (dest, tmp_path / "win7-serial.vm3.log", tmp_path / "keep.log"):
        path.write_text("old run")
    tr = cli.translate(*cli.parse(["--serial-log", str(dest)]))
    cli.prepare_copies(tr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.log"]
    (tmp_path / "dir.log").mkdir()
    with pytest.raises(cli.CompatUsageError, match="is a directory"):
        cli.prepare_copies(cli.translate(*cli.parse(["--http-log", str(tmp_path / "dir.log")])))
