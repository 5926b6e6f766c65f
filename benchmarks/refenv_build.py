"""Reference environment figures: cold and warm image build; the bare yardstick's boot on QEMU 7.2 and 10.

Usage: .venv/bin/python benchmarks/refenv_build.py [--skip-cold] [--runs N] [--image DISK]

- cold build: a fresh cache directory (new private apt lists, downloads, unpack, root tree, disk); the .debs
  are copied in from the normal cache when present, so "cold" measures the build and, separately, what a
  first download costs (apt-get update + download of whatever is missing).
- warm build: ``ensure_image()`` again on the same cache (hash checks only).
- yardstick: the command line ``aero-virtio-refenv bare --run --no-snd`` runs (the plugin's default devices:
  modern-only virtio-blk disk boot through SeaBIOS and the bootloader, virtio-net, keyboard, mouse, VGA;
  q35, TCG; the guest's base set of checks, no opt-in flags) with the same stdlib HTTP/UDP services, timed
  from QEMU's spawn to the first ``AERO_VIRTIO_SELFTEST|`` line, to the ``RESULT`` line and to QEMU's exit,
  with QEMU's own CPU time (less sensitive to other load on the machine).  Runs alternate between the QEMUs
  so that a change in machine load hits both alike; the median of ``--runs`` boots is printed.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_aero_virtio.config import QemuCommand  # noqa: E402
from pytest_aero_virtio.qemu.argv import prepare_overlay  # noqa: E402
from pytest_aero_virtio.qemu.caps import probe_cached  # noqa: E402
from pytest_aero_virtio.refenv import bare, debs, image, qemu  # noqa: E402
from pytest_aero_virtio.refenv.cache import cache_root  # noqa: E402

SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")
PREFIX = b"AERO_VIRTIO_SELFTEST|"


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


@dataclass(frozen=True)
class Boot:
    """One yardstick run: seconds after QEMU's spawn, and QEMU's CPU seconds for the whole run."""

    first: float
    result: float
    exit: float
    cpu: float
    status: int


def yardstick(qemu_path: Path, disk: Path) -> Boot:
    """Boot ``disk`` as ``aero-virtio-refenv bare --run --no-snd`` does and time the markers."""
    caps = probe_cached(QemuCommand(qemu_path))
    tmp = Path(tempfile.mkdtemp(prefix="aero-bench-bare-"))
    services = bare.start_services(0, 0)
    try:
        overlay = tmp / "overlay.qcow2"
        prepare_overlay(disk, overlay)
        argv = bare.bare_argv(
            qemu_path, disk, caps, overlay, services.http_port, services.udp_port, snd=False
        )
        first = result = float("nan")
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.monotonic() - t0
            if PREFIX in raw and first != first:
                first = now
            if PREFIX + b"RESULT|" in raw:
                result = now
        _, status, usage = os.wait4(proc.pid, 0)
        end = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        return Boot(first, result, end, usage.ru_utime + usage.ru_stime, proc.returncode)
    finally:
        services.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold build (about a minute)")
    ap.add_argument("--runs", type=int, default=5, help="boots per QEMU (median reported)")
    ap.add_argument("--image", type=Path, help="disk image to boot (default: the reference image)")
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
    disk = args.image or img.disk
    runs: dict[str, list[Boot]] = {name: [] for name, _ in qemus}
    for _ in range(args.runs):
        for name, path in qemus:
            runs[name].append(yardstick(path, disk))
    for name, boots in runs.items():
        bad = [b.status for b in boots if b.status != 0 or b.result != b.result]
        print(
            f"{name}, {len(boots)} boots: first marker {_median([b.first for b in boots])}, "
            f"RESULT {_median([b.result for b in boots])}, QEMU exit {_median([b.exit for b in boots])}, "
            f"QEMU CPU {statistics.median(b.cpu for b in boots):.2f} s"
            + (f"; {len(bad)} runs without RESULT or with a non-zero exit: {bad}" if bad else "")
        )
    load = os.getloadavg()[0]
    print(f"(1-min load average {load:.2f} on {os.cpu_count()} cores; TCG boot times grow with other load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
