"""The reference guest image: Debian 13 kernel, an erofs root on an MBR disk that SYSLINUX boots.

Layers, each a cache entry (cache.py) keyed by a hash of its inputs:

- ``base-<key>`` (rootfs.py): ``vmlinuz``, ``initrd.img`` (busybox, /etc, /init, the modules that mount
  /usr) and the ``usr/`` tree (modules, Python 3.13, alsa, libraries).  Keyed by the resolved package
  versions and the builders' source.
- ``guest-<key>``: ``files/usr/lib/aero-selftest/`` with the compiled selftest package and ``args`` (the
  baked args, /etc/aero-selftest/args links there), keyed by bytes; editing the selftest rebuilds only this
  layer and the image.
- ``image-<key>``: ``disk.img`` (disk.py: FAT partition with SYSLINUX, kernel and initrd; erofs partition
  with base usr/ + guest files) that SeaBIOS boots from a modern-only virtio-blk disk, like a Windows image.

How the guest boots and why it is fast under TCG: docs/design.md ("Reference environment contract").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest_aero_virtio
from pytest_aero_virtio.refenv import debs, rootfs, scripts
from pytest_aero_virtio.refenv.buildtools import PYVER, ImageBuildError, compile_tree, run_tool
from pytest_aero_virtio.refenv.cache import cache_root, ensure_entry, progress, source_digest, stable_key
from pytest_aero_virtio.refenv.disk import build_disk

BASE_ROOTS = (
    f"python{PYVER}-minimal",
    f"libpython{PYVER}-minimal",
    f"libpython{PYVER}-stdlib",
    "alsa-utils",
    "libasound2t64",
    "libasound2-data",
    "busybox-static",
    "netbase",
)
KERNEL_META = "linux-image-amd64"
GUEST_DIR = scripts.GUEST_DIR
DEFAULT_APPEND = scripts.DEFAULT_APPEND
MIN_FREE_MIB = 64  # the guest's blk test writes files on the FAT partition (>= 48 MiB asked)
FAT_LABEL = "AEROREF"


@dataclass(frozen=True)
class RefImage:
    """A built reference guest: boot ``disk`` like a Windows image, or kernel/initrd/append directly.

    Direct kernel boot still needs ``disk`` attached: the initrd only mounts the root image found there.
    """

    disk: Path
    kernel: Path
    initrd: Path
    append: str


def _builder_sources() -> list[Path]:
    here = Path(__file__).parent
    names = ("rootfs.py", "scripts.py", "buildtools.py", "cpio.py", "elf.py", "kmod.py", "debs.py")
    return [here / n for n in names]


def _build_guest(tmp: Path, selftest: Path, baked_args: str, base: Path) -> None:
    """``files/``: the selftest package (compiled by the guest's Python) and the baked args file."""
    files = tmp / "files"
    pkg = files / GUEST_DIR / "aero_selftest"
    shutil.copytree(selftest, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compile_tree(base, pkg, files)
    (files / GUEST_DIR / "args").write_text(baked_args)


def _stage_usr(base: Path, guest: Path, stage: Path) -> None:
    """base usr/ + the guest's files in one tree, hard-linked (nothing is copied)."""
    shutil.copytree(base / "usr", stage, symlinks=True, copy_function=os.link)
    shutil.copytree(guest / "files/usr", stage, symlinks=True, copy_function=os.link, dirs_exist_ok=True)


def _build_image(tmp: Path, base: Path, guest: Path, append: str) -> None:
    stage = tmp / "usr"
    _stage_usr(base, guest, stage)
    erofs = tmp / "usr.erofs"
    # Uncompressed: reading is then a plain copy, which the emulated CPU does fastest; -T0: reproducible.
    run_tool(["mkfs.erofs", "--quiet", "--all-root", "-T0", str(erofs), str(stage)])
    shutil.rmtree(stage)
    (tmp / "syslinux.cfg").write_text(scripts.render_syslinux_cfg(append))
    fat_files = [tmp / "syslinux.cfg", base / "vmlinuz", base / "initrd.img"]
    build_disk(tmp / "disk.img", fat_files, erofs, MIN_FREE_MIB, FAT_LABEL)
    erofs.unlink()
    (tmp / "append").write_text(append)
    (tmp / "layers").write_text(f"{base.name}\n{guest.name}\n")  # what `aero-virtio-refenv clean` keeps


def default_selftest_dir() -> Path:
    """The guest selftest package next to the plugin (refguest/aero_selftest), or the test placeholder.

    The placeholder (tests/refenv/placeholder/aero_selftest) exists so the image can be proven to boot before
    the real selftest has an entry point.
    """
    repo = Path(pytest_aero_virtio.__file__).resolve().parent.parent
    real = repo / "refguest" / "aero_selftest"
    if (real / "__main__.py").is_file():
        return real
    placeholder = repo / "tests" / "refenv" / "placeholder" / "aero_selftest"
    if (placeholder / "__main__.py").is_file():
        progress(f"{real}/__main__.py missing: using the placeholder selftest {placeholder}")
        return placeholder
    raise ImageBuildError(f"no guest selftest at {real}; fix: run from a checkout of pytest-aero-virtio")


def _files_digest(base: Path) -> list[tuple[str, bytes]]:
    return [
        (f"file:{p.relative_to(base).as_posix()}", p.read_bytes())
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


def ensure_image(
    root: Path | None = None,
    selftest_dir: Path | None = None,
    baked_args: str = "",
    append: str = DEFAULT_APPEND,
) -> RefImage:
    """Build (if needed) and return the reference guest image.

    A warm call reads only small files (resolution memo, the selftest sources) and stats three entries.
    ``baked_args`` land in /etc/aero-selftest/args: the guest runs with them when the host sends no fw_cfg
    ``opt/aero/args`` (which, when sent, is applied after them).
    """
    root = root or cache_root()
    apt = debs.Apt(root)
    infos = apt.resolve("image-base", BASE_ROOTS, metas=(KERNEL_META,))
    kernel_pkg = infos[-1].package
    base_key = stable_key(
        [
            ("versions", debs.versions_text(infos)),
            ("builder", source_digest(_builder_sources())),
            ("modules", " ".join((*rootfs.ROOT_MODULES, *rootfs.MODULES))),
        ]
    )
    base = ensure_entry(root, "base", base_key, lambda tmp, _f: rootfs.build_base(tmp, apt, infos, kernel_pkg))

    selftest = selftest_dir or default_selftest_dir()
    guest_key = stable_key(
        [
            *_files_digest(selftest),
            ("args", baked_args),
            ("base", base_key),
            ("builder", source_digest([Path(__file__)])),  # _build_guest
        ]
    )
    guest = ensure_entry(root, "guest", guest_key, lambda tmp, _f: _build_guest(tmp, selftest, baked_args, base))

    image_key = stable_key(
        [
            ("base", base_key),
            ("guest", guest_key),
            ("append", append),
            ("builder", source_digest([Path(__file__), Path(__file__).with_name("disk.py")])),
        ]
    )
    image = ensure_entry(root, "image", image_key, lambda tmp, _f: _build_image(tmp, base, guest, append))
    return RefImage(disk=image / "disk.img", kernel=base / "vmlinuz", initrd=base / "initrd.img", append=append)


def image_layers(img: RefImage) -> list[Path]:
    """The entries an image is made of (its own, base, guest), for pruning old entries."""
    entry = img.disk.parent
    names = (entry / "layers").read_text().split() if (entry / "layers").is_file() else []
    return [entry, *(entry.parent / n for n in names)]


def iter_entries(root: Path, kinds: Iterable[str] = ("base", "guest", "image")) -> list[Path]:
    """Existing entries of the given kinds (for cleanup tools and tests)."""
    return sorted(p for k in kinds for p in root.glob(f"{k}-*") if p.is_dir())


__all__ = ["DEFAULT_APPEND", "ImageBuildError", "RefImage", "ensure_image"]
