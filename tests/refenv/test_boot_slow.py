"""Integration: the reference image boots from a modern-only virtio-blk disk on QEMU 7.2 and the pinned 10.

Uses the placeholder selftest (prints START and RESULT|PASS) so the image itself is what is tested; the
real selftest is covered by the device suites.  Builds use the normal cache, so after `scripts/setup` only
the small guest layer is built here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.refenv import image
from pytest_aero_virtio.refenv.cache import cache_root

pytestmark = pytest.mark.slow

PLACEHOLDER = Path(__file__).parent / "placeholder" / "aero_selftest"
SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")


def _qemus() -> list[object]:
    params: list[object] = [
        pytest.param(
            "system",
            marks=pytest.mark.skipif(not SYSTEM_QEMU.exists(), reason="no system QEMU (scripts/setup-host)"),
        ),
        "pinned",
    ]
    return params


def _qemu_path(which: str) -> Path:
    if which == "system":
        return SYSTEM_QEMU
    from pytest_aero_virtio.refenv.qemu import ensure_qemu

    return ensure_qemu()


@pytest.mark.parametrize("machine", ["q35", "pc"])
@pytest.mark.parametrize("which", _qemus())
def test_disk_boots_to_markers_and_powers_off(which: str, machine: str) -> None:
    if machine == "pc" and which == "pinned":
        pytest.skip("pc is covered on the system QEMU; keep the slow suite short")
    img = image.ensure_image(selftest_dir=PLACEHOLDER)
    argv = [
        str(_qemu_path(which)),
        "-machine",
        f"{machine},accel=tcg",
        "-m",
        "512",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-drive",
        f"if=none,id=d0,file={img.disk},format=raw,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=d0,disable-legacy=on",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, timeout=180, stdin=subprocess.DEVNULL, check=False)
    elapsed = time.monotonic() - t0
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    lines = [s.rstrip("\r") for s in out.splitlines()]
    assert "AERO_VIRTIO_SELFTEST|START|version=1" in lines, out[-3000:]
    assert "AERO_VIRTIO_SELFTEST|RESULT|PASS" in lines, out[-3000:]
    assert "AERO_VIRTIO_SELFTEST|RESULT|PASS\r" not in out  # raw LF line ends (stty -opost)
    assert elapsed < 120


def test_direct_kernel_boot() -> None:
    """-kernel/-initrd/-append (--vm-direct-boot): the initrd still mounts /usr from the disk."""
    img = image.ensure_image(selftest_dir=PLACEHOLDER)
    argv = [
        str(SYSTEM_QEMU if SYSTEM_QEMU.exists() else _qemu_path("pinned")),
        "-machine",
        "q35,accel=tcg",
        "-m",
        "512",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-drive",
        f"if=none,id=d0,file={img.disk},format=raw,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=d0,disable-legacy=on",
        "-kernel",
        str(img.kernel),
        "-initrd",
        str(img.initrd),
        "-append",
        img.append,
    ]
    proc = subprocess.run(argv, capture_output=True, timeout=180, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0
    assert b"AERO_VIRTIO_SELFTEST|RESULT|PASS\n" in proc.stdout


def test_guest_layer_rebuild_is_small_and_fast(tmp_path: Path) -> None:
    image.ensure_image(selftest_dir=PLACEHOLDER)  # base built (or already there)
    bases = set(image.iter_entries(cache_root(), ["base"]))
    guest = tmp_path / "aero_selftest"
    shutil.copytree(PLACEHOLDER, guest)
    (guest / "extra.py").write_text(f"STAMP = {time.time_ns()}\n")
    t0 = time.monotonic()
    built = image.ensure_image(selftest_dir=guest)
    rebuild = time.monotonic() - t0
    t0 = time.monotonic()
    again = image.ensure_image(selftest_dir=guest)
    warm = time.monotonic() - t0
    assert again == built
    assert set(image.iter_entries(cache_root(), ["base"])) == bases  # the base layer was reused
    assert rebuild < 2.0, f"guest layer rebuild took {rebuild:.2f} s"
    assert warm < 0.5, f"warm ensure_image took {warm:.2f} s"
    shutil.rmtree(built.disk.parent, ignore_errors=True)  # the throwaway image entry (tens of MB)
