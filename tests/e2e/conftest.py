"""End-to-end tests of the plugin: real pytest runs (pytester, in a subprocess) against real QEMU.

Each test writes a small test file, runs pytest on it in a child process with the plugin loaded through its
entry point, and checks what a user would see: outcomes, failure tokens, artifacts, and that no QEMU
process outlives the run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

def qemu_pids_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and "qemu-system" in cmd and marker in cmd:
            out.append(int(entry.name))
    return out


def wait_gone(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = qemu_pids_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = qemu_pids_with(marker)
    return left


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[Path]:
    """A unique artifacts dir: its path appears in QEMU's argv, so leaked processes can be found by it."""
    path = tmp_path / "artifacts"
    yield path
    left = qemu_pids_with(str(path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"QEMU processes outlived the inner run: {left}"
