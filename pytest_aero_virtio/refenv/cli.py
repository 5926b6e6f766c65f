"""``aero-virtio-refenv``: provision the pinned QEMU, build the reference image, run the bare runner.

Results (paths, the command line) go to stdout so other tools can use ``$(aero-virtio-refenv qemu)``;
progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_aero_virtio.config import DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aero-virtio-refenv",
        description="Reference environment of pytest-aero-virtio: pinned QEMU 10, Linux reference guest.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("qemu", help="provision Debian 13's QEMU 10 if needed; print its launcher path")
    q.add_argument("--refresh", action="store_true", help="re-run apt-get update on the private apt lists first")
    b = sub.add_parser("build", help="build the reference guest image if needed; print the disk image path")
    b.add_argument("--print-all", action="store_true", help="also print kernel, initrd and append (one per line)")
    b.add_argument("--refresh", action="store_true", help="re-run apt-get update on the private apt lists first")
    b.add_argument(
        "--baked-args",
        default="",
        metavar="ARGS",
        help='guest args baked into the image (/etc/aero-selftest/args), e.g. "--test-blk-resize": the '
        "guest runs with them when the host sends none (pytest --vm-provisioning=baked)",
    )
    c = sub.add_parser("clean", help="delete cache entries the current code no longer uses (old builds)")
    c.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    r = sub.add_parser("bare", help="print (or --run) a plain QEMU command line for the reference guest")
    r.add_argument("--run", action="store_true", help="run it with HTTP/UDP echo services; exit with QEMU's status")
    r.add_argument("--qemu", type=Path, help="qemu-system-x86_64 to use (default: the pinned QEMU 10)")
    r.add_argument("--image", type=Path, help="disk image to boot (default: the reference image)")
    r.add_argument("--no-snd", action="store_true", help="no virtio-sound device even if the QEMU has one")
    r.add_argument(
        "--audio",
        choices=("wav", "none"),
        default="wav",
        help="wav: record playback to a file (the guest skips capture); none: capture works (silence)",
    )
    r.add_argument(
        "--guest-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra guest argument sent through fw_cfg, e.g. --guest-arg=--noise-line-bytes=1048576 (repeatable)",
    )
    r.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    r.add_argument("--udp-port", type=int, default=DEFAULT_UDP_PORT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pytest_aero_virtio.refenv import debs
    from pytest_aero_virtio.refenv.image import ImageBuildError, ensure_image
    from pytest_aero_virtio.refenv.qemu import QemuProvisionError, ensure_qemu

    try:
        if getattr(args, "refresh", False):
            debs.Apt().update(force=True)
        if args.cmd == "qemu":
            print(ensure_qemu())
        elif args.cmd == "build":
            img = ensure_image(baked_args=args.baked_args)
            print(img.disk)
            if args.print_all:
                print(img.kernel)
                print(img.initrd)
                print(img.append)
        elif args.cmd == "clean":
            import shutil

            from pytest_aero_virtio.refenv.cache import cache_root, stale_entries
            from pytest_aero_virtio.refenv.image import image_layers

            keep = {ensure_qemu().parent.parent, *image_layers(ensure_image())}
            for p in stale_entries(cache_root(), keep):
                print(p)
                if not args.dry_run:
                    shutil.rmtree(p, ignore_errors=True)
        else:
            from pytest_aero_virtio.refenv.bare import run_bare

            qemu = args.qemu or ensure_qemu()
            disk = args.image or ensure_image().disk
            snd = False if args.no_snd else None
            return run_bare(
                qemu, disk, args.run, args.http_port, args.udp_port, snd, args.audio, extra_guest_args=args.guest_arg
            )
    except (debs.AptError, QemuProvisionError, ImageBuildError, OSError) as exc:
        print(f"aero-virtio-refenv: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
