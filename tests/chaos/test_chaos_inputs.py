"""Bad input is a usage error at start (exit 4, under 5 s) naming the cause, never a wait: images, the
artifacts root, a QEMU whose probe fails or hangs."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.qemu.process import run_child

from .conftest import Chaos, cmdline, live_processes
from .guests import boot_sector_disk, passing_tests

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

ONE_TEST = passing_tests("virtio-blk")


def _qcow2_missing_backing(d: Path) -> Path:
    base, over = d / "base.qcow2", d / "over.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(over)], check=True)
    base.unlink()
    return over


def _image(kind: str, d: Path) -> Path:
    path = d / f"{kind}.img"
    if kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer, 31+ bytes of text
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(1 << 20).replace(b"\x55\xaa", b"\0\0"))
    elif kind == "symlink-loop":
        path.symlink_to(d / "other.img")
        (d / "other.img").symlink_to(path)
    elif kind == "vmdk":
        path.write_bytes(b"KDMV" + b"\0" * 4092)
    elif kind == "qcow2-missing-backing":
        return _qcow2_missing_backing(d)
    return path


@pytest.mark.parametrize(
    ("kind", "token", "says"),
    [
        ("text", "IMAGE_INVALID", "is a text file"),
        ("empty", "IMAGE_INVALID", "is empty (0 bytes)"),
        ("random", "IMAGE_INVALID", "no boot signature (55 AA)"),
        ("symlink-loop", "IMAGE_UNREADABLE", "is a symlink loop"),
        ("vmdk", "IMAGE_INVALID", "is a VMDK image"),
        ("qcow2-missing-backing", "IMAGE_UNREADABLE", "whose backing file"),
    ],
)
def test_bad_image_is_a_usage_error_at_start(chaos: Chaos, tmp_path: Path, kind: str, token: str, says: str) -> None:
    image = _image(kind, tmp_path)
    res = chaos.run(ONE_TEST, f"--vm-image={image}", "--vm-silence-timeout=300")
    assert res.rc == pytest.ExitCode.USAGE_ERROR
    assert res.elapsed < 5.0, res.elapsed
    (line,) = [line for line in res.out.splitlines() if line.startswith("ERROR: FAIL: ")]
    assert line.startswith(f"ERROR: FAIL: {token}: --vm-image: ") and says in line
    assert "fix: " in res.out and "Traceback" not in res.out
    assert not list(chaos.artifacts.glob("*/serial.log"))  # nothing booted
    chaos.assert_clean()


def test_a_data_disk_is_fine_with_direct_kernel_boot(tmp_path: Path) -> None:
    """The format check is for booting from the disk: with --vm-kernel the disk is data (not run here: the
    guests of this suite boot that way)."""
    from pytest_aero_virtio.preflight import check_image

    data = tmp_path / "data.img"
    data.write_bytes(b"\1" * 4096)
    check_image("--vm-image", data, direct_kernel=True)
    check_image("--vm-image", boot_sector_disk(tmp_path / "boot.img"), direct_kernel=False)


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "proc"])
def test_unusable_artifacts_root_is_one_usage_error(chaos: Chaos, tmp_path: Path, where: str) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    target = {"a-file": plain, "under-a-file": plain / "sub", "proc": Path("/proc/aero-artifacts")}[where]
    argv = chaos.argv(ONE_TEST, f"--vm-artifacts={target}")  # the last --vm-artifacts wins
    t0 = time.monotonic()
    res = subprocess.run(argv, cwd=chaos.dir, env=chaos.env(), capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    print(out)
    assert res.returncode == pytest.ExitCode.USAGE_ERROR
    assert time.monotonic() - t0 < 5.0
    assert out.count("FAIL: CONFIG_ERROR: --vm-artifacts: ") == 1
    assert "FileNotFoundError" not in out and "VM_BOOT_FAILED" not in out
    chaos.assert_clean()


def _launcher(d: Path, body: str) -> Path:
    script = d / "qemu-launcher"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_failing_qemu_probe_shows_its_token_first(chaos: Chaos, tmp_path: Path, xdist: bool) -> None:
    launcher = _launcher(tmp_path, 'echo "launcher: no such emulator here" >&2\nexit 3')
    res = chaos.run(ONE_TEST, f"--qemu-system={launcher}", *(["-n", "2"] if xdist else []))
    assert res.rc == pytest.ExitCode.USAGE_ERROR
    first = next(line for line in res.out.splitlines() if line.strip() and not line.startswith("no tests ran"))
    assert first.startswith("ERROR: FAIL: QEMU_NOT_FOUND: ") and "no such emulator here" in first
    assert "Traceback" not in res.out and "INTERNALERROR" not in res.out
    chaos.assert_clean()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--vm-provisioning=baked", "--vm-guest-arg=--x"), "--vm-guest-arg cannot reach a guest"),
        (("--vm-direct-boot=on",), "--vm-direct-boot=on boots the reference guest's kernel"),
    ],
    ids=["baked-with-guest-arg", "direct-boot-foreign-image"],
)
def test_conflicting_options_under_xdist_fail_once_at_start(
    chaos: Chaos, tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    """The xdist controller checks the options with the same code the workers use: a conflict is one usage
    error, not "no active workers"."""
    image = boot_sector_disk(tmp_path / "disk.img")
    res = chaos.run(ONE_TEST, f"--vm-image={image}", *args, "-n", "2")
    assert res.rc == pytest.ExitCode.USAGE_ERROR
    assert res.out.count(says) == 1
    assert "no active workers" not in res.out and "Traceback" not in res.out
    chaos.assert_clean()


def test_hanging_probe_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    """A --qemu-system launcher that runs QEMU without exec and hangs: the probe's timeout kills the group, so
    the launcher's child does not outlive it (every probe goes through run_child)."""
    marker = f"aero-probe-{os.getpid()}-{time.monotonic_ns()}"
    launcher = tmp_path / "qemu-launcher"
    launcher.write_text(f"#!/bin/bash\n(exec -a {marker} sleep 300) &\nwait\n")  # no exec: a child that hangs
    launcher.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_child([str(launcher), "--version"], timeout=1.0)
    assert time.monotonic() - t0 < 5.0
    time.sleep(0.2)
    left = [pid for pid in live_processes() if marker in cmdline(pid)]
    assert not left, f"the launcher's child outlived the probe: {left}"

