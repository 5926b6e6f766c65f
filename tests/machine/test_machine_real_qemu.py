"""VmSession against the real system QEMU (no guest): QMP works, and a SIGKILLed QEMU ends waits at once."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.artifacts import ArtifactDir
from pytest_aero_virtio.errors import QEMU_EXITED, AeroError
from pytest_aero_virtio.qemu.session import VmSession
from pytest_aero_virtio.stream import MarkerStream

from .conftest import process_gone

QEMU = os.environ.get("AERO_TEST_QEMU", "/usr/bin/qemu-system-x86_64")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"no QEMU at {QEMU} (apt install qemu-system-x86)"),
]


def bare_argv(qmp_fd: int) -> list[str]:
    return [
        QEMU,
        "-machine", "q35",
        "-accel", "tcg",
        "-nodefaults",
        "-display", "none",
        "-chardev", "stdio,id=ser0,signal=off",
        "-serial", "chardev:ser0",
        "-chardev", f"socket,id=qmp0,fd={qmp_fd}",
        "-mon", "chardev=qmp0,mode=control",
    ]  # fmt: skip


def test_real_qemu_qmp_and_kill9(tmp_path: Path) -> None:
    stream = MarkerStream()
    session = VmSession(bare_argv, artifacts=ArtifactDir(tmp_path, "real"), stream=stream)
    with session:
        pid = session.pid
        assert pid is not None
        status = session.qmp("query-status", timeout=10)
        assert status["status"] in ("running", "prelaunch", "paused")
        version = session.qmp("query-version", timeout=10)
        assert version["qemu"]["major"] >= 7
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(AeroError) as ei:
            stream.wait_final("virtio-blk", 30.0)
        assert time.monotonic() - t0 < 1.0
        assert ei.value.token == QEMU_EXITED
        assert "killed by signal 9 (SIGKILL)" in str(ei.value)
        assert session.returncode == -9
    assert session.ending == "exited"
    assert process_gone(pid)
    assert '"execute": "query-status"' in session.artifacts.qmp.read_text()


def test_real_qemu_quits_on_stop(tmp_path: Path) -> None:
    session = VmSession(bare_argv, artifacts=ArtifactDir(tmp_path, "real"), stream=MarkerStream())
    session.start()
    pid = session.pid
    assert pid is not None
    t0 = time.monotonic()
    assert session.stop() == "quit"
    assert time.monotonic() - t0 < 5.0
    assert session.returncode == 0
    assert process_gone(pid)
    assert any(e.get("event") == "SHUTDOWN" for e in session.qmp_channel.events)


def test_real_qemu_bad_property_fails_start_with_stderr(tmp_path: Path) -> None:
    def argv(q: int) -> list[str]:
        return [*bare_argv(q), "-device", "virtio-blk-pci,x-pci-revision=1"]

    session = VmSession(argv, artifacts=ArtifactDir(tmp_path, "real"), stream=MarkerStream())
    with pytest.raises(AeroError) as ei:
        session.start()
    assert ei.value.token == QEMU_EXITED
    assert "during start-up" in ei.value.message
    assert "x-pci-revision" in ei.value.message  # QEMU's own complaint is in the error
    session.stop()
    assert session.pid is not None and process_gone(session.pid)
