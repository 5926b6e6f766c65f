"""End-to-end tests of the plugin: real pytest runs (pytester, in a subprocess) against real QEMU.

Each test writes a small test file, runs pytest on it in a child process with the plugin loaded through its
entry point, and checks what a user would see: outcomes, failure tokens, artifacts, and that no QEMU
process outlives the run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from aero_e2e_procs import qemu_pids_with


@pytest.fixture(autouse=True)
def _shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester points HOME at a fresh directory; keep the inner runs on the real reference cache."""
    from pytest_aero_virtio.refenv.cache import cache_root

    monkeypatch.setenv("AERO_VIRTIO_CACHE", str(cache_root()))


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[Path]:
    """A unique artifacts dir: its path appears in QEMU's argv, so leaked processes can be found by it."""
    path = tmp_path / "artifacts"
    yield path
    left = qemu_pids_with(str(path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"QEMU processes outlived the inner run: {left}"
