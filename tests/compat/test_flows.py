"""Where the compatibility command finds vmm_flows: the packaged copy of an installed wheel, else the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_aero_virtio.compat.flows import MARKER_FILE, flows_dir
from pytest_aero_virtio.errors import AeroConfigError

REPO = Path(__file__).resolve().parents[2]


def suites(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / MARKER_FILE).write_text("")
    return where


def test_packaged_copy_wins_over_a_checkout(tmp_path: Path) -> None:
    pkg = tmp_path / "site" / "pytest_aero_virtio"
    packaged = suites(pkg / "vmm_flows")
    suites(tmp_path / "site" / "vmm_flows")
    assert flows_dir(pkg) == packaged


def test_checkout_beside_the_package(tmp_path: Path) -> None:
    pkg = tmp_path / "repo" / "pytest_aero_virtio"
    pkg.mkdir(parents=True)
    checkout = suites(tmp_path / "repo" / "vmm_flows")
    assert flows_dir(pkg) == checkout


def test_no_suites_is_a_clear_error(tmp_path: Path) -> None:
    pkg = tmp_path / "pytest_aero_virtio"
    (pkg / "vmm_flows").mkdir(parents=True)  # a directory without the suites is not taken
    with pytest.raises(AeroConfigError) as exc:
        flows_dir(pkg)
    assert str(pkg / "vmm_flows") in str(exc.value) and "pip install -e" in str(exc.value)


@pytest.mark.slow
def test_the_wheel_carries_the_suites_and_the_command_runs_them(tmp_path: Path) -> None:
    """Build the wheel (from a copy of the tree: the build writes build/), install it into a directory and run
    the command from there in dry-run mode: it must plan the VMs from the wheel's own vmm_flows."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", "*_cache", "ci-out", "aero-artifacts", "docs"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("pytest_aero_virtio-*.whl")
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=600)
    packaged = target / "pytest_aero_virtio" / "vmm_flows"
    assert sorted(p.name for p in packaged.glob("test_*.py")) == sorted(p.name for p in (REPO / "vmm_flows").glob(
        "test_*.py"))
    # PYTHONPATH: ahead of the editable install of this checkout. A disk image of our own and TCG: an installed
    # wheel cannot build the reference guest (its sources are the checkout's refguest/), which the accel=auto
    # KVM probe would boot; PYTEST_ADDOPTS reaches the inner pytest run.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTEST_ADDOPTS": "--vm-accel=tcg"}
    (tmp_path / "guest.img").write_bytes(b"\0" * 510 + b"\x55\xaa")  # a boot sector: the image check passes
    run = subprocess.run([sys.executable, "-m", "pytest_aero_virtio.compat", "--dry-run", "--disk-image",
                          str(tmp_path / "guest.img"), "--serial-log", str(tmp_path / "serial.log")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"pytest {packaged} -m" in run.stdout
    assert "planned QEMU command lines" in run.stdout
