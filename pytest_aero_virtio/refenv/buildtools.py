"""Helpers every image layer builder uses: the build error, host tools, the guest's Python on the host."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_aero_virtio.qemu.process import run_child_text

PYVER = "3.13"
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib")


class ImageBuildError(RuntimeError):
    """The reference image could not be built; the message names the cause and the fix."""


def run_captured(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a build step's child to completion, output decoded. It goes through :func:`run_child`: its own
    process group, killed with the harness (and on ``timeout``: TimeoutExpired), so a build interrupted at any
    instant (Ctrl-C, SIGTERM, a killed pytest) leaves no apt-get, dpkg-deb or mkfs running."""
    return run_child_text(argv, timeout, env=env, cwd=cwd)


def run_tool(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a host tool (mkfs.vfat, syslinux, mtools, mkfs.erofs, zstd); a missing one names its installer."""
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} not found; fix: run scripts/setup-host as root (installs it)")
    proc = run_captured(argv, env=env)
    if proc.returncode != 0:
        raise ImageBuildError(f"{shlex.join(argv)} failed: {proc.stderr.strip()[-1500:]}")


def mtools_env() -> dict[str, str]:
    """mtools refuses image files whose FAT geometry looks odd unless told not to check."""
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def guest_python(rootfs: Path) -> list[str]:
    """argv prefix that runs the *guest's* python3.13 on the host through its own loader."""
    lib = rootfs / LIBDIRS[0]
    return [
        str(lib / "ld-linux-x86-64.so.2"),
        "--library-path",
        str(lib),
        str(rootfs / "usr/bin" / f"python{PYVER}"),
    ]


def compile_tree(rootfs: Path, target: Path, strip_prefix: Path, legacy: bool = False) -> None:
    """Precompile .pyc in one process (``-j0`` re-execs the wrong binary through the loader).

    ``legacy`` writes ``x.pyc`` next to ``x.py`` (importable without the source, which the caller then
    deletes); otherwise ``__pycache__`` with unchecked hashes, so the guest never stats or re-hashes sources.
    """
    proc = run_captured(
        [
            *guest_python(rootfs),
            "-I",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(strip_prefix),
            "-p",
            "/",
            *(["-b"] if legacy else []),
            str(target),
        ],
        env={"PYTHONHOME": str(rootfs / "usr"), "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if proc.returncode != 0:
        raise ImageBuildError(f"compileall failed in {target}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
