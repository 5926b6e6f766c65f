"""Reference environment figures: cold and warm image build, boot-to-first-marker on QEMU 7.2 and pinned 10.

Usage: .venv/bin/python benchmarks/refenv_build.py [--skip-cold] [--runs N]

- cold build: a fresh cache directory (new private apt lists, downloads, unpack, initramfs, disk); the .debs
  are copied in from the normal cache when present, so "cold" measures the build and, separately, what a
  first download costs (apt-get update + download of whatever is missing).
- warm build: ``ensure_image()`` again on the same cache (hash checks only).
- boot: QEMU launched directly on the disk image (modern-only virtio-blk, q35, TCG); time from spawn to the
  first ``AERO_VIRTIO_SELFTEST|`` line on the serial port (QEMU is killed there), and QEMU's own CPU time
  until then (less sensitive to other load on the machine).  Uses the real guest selftest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_aero_virtio.refenv import debs, image, qemu  # noqa: E402
from pytest_aero_virtio.refenv.cache import cache_root  # noqa: E402

SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")


def cold_build(seed_debs: Path | None) -> tuple[float, float]:
    """(download seconds, build seconds) in a fresh cache; the temp cache is removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="aero-bench-cache-"))
    try:
        t0 = time.monotonic()
        apt = debs.Apt(tmp)
        apt.update()
        infos = apt.resolve("image-base", image.BASE_ROOTS, metas=(image.KERNEL_META,))
        if seed_debs is not None and seed_debs.is_dir():
            (tmp / "debs").mkdir(exist_ok=True)
            for i in infos:
                src = seed_debs / i.filename
                if src.is_file():
                    shutil.copyfile(src, tmp / "debs" / i.filename)
        apt.download(infos)
        download = time.monotonic() - t0
        t0 = time.monotonic()
        image.ensure_image(root=tmp)
        return download, time.monotonic() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def boot_first_marker(qemu_path: Path, disk: Path) -> tuple[float, float]:
    """(seconds to the first marker, QEMU CPU seconds until then) for one boot; QEMU is killed there."""
    argv = [
        str(qemu_path),
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
        f"if=none,id=d0,file={disk},format=raw,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=d0,disable-legacy=on",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,disable-legacy=on",
        "-device",
        "virtio-keyboard-pci,disable-legacy=on",
        "-device",
        "virtio-mouse-pci,disable-legacy=on",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = float("nan")
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            if b"AERO_VIRTIO_SELFTEST|" in raw:
                first = time.monotonic() - t0
                break
    finally:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
    return first, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold build (about a minute)")
    ap.add_argument("--runs", type=int, default=3, help="boots per QEMU (median reported)")
    args = ap.parse_args()

    root = cache_root()
    if not args.skip_cold:
        download, build = cold_build(root / "debs")
        print(f"cold build: {build:.1f} s (+ apt update/resolve/download {download:.1f} s, fresh cache)")
    t0 = time.monotonic()
    img = image.ensure_image()
    first_call = time.monotonic() - t0
    t0 = time.monotonic()
    image.ensure_image()
    warm = time.monotonic() - t0
    print(f"ensure_image(): first call this run {first_call:.2f} s, warm {warm * 1000:.0f} ms")

    qemus = [("QEMU 7.2 (system)", SYSTEM_QEMU)] if SYSTEM_QEMU.exists() else []
    qemus.append(("QEMU 10 (pinned)", qemu.ensure_qemu()))
    for name, path in qemus:
        runs = [boot_first_marker(path, img.disk) for _ in range(args.runs)]
        firsts = [r[0] for r in runs]
        print(
            f"{name}: first marker median {statistics.median(firsts):.2f} s "
            f"(min {min(firsts):.2f}, max {max(firsts):.2f}, {len(runs)} boots); "
            f"QEMU CPU until then median {statistics.median(r[1] for r in runs):.2f} s"
        )
    load = os.getloadavg()[0]
    print(f"(1-min load average {load:.2f} on {os.cpu_count()} cores; TCG boot times grow with other load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
