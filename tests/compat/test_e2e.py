"""The installed ``aero-virtio-win7-tests`` command end to end on real QEMU: what an old CI script sees.

Each run gets ``-name <marker>`` as a QEMU argument (after ``--``) so no QEMU process may outlive it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

COMMAND = Path(sys.executable).parent / "aero-virtio-win7-tests"


def qemu_pids_with(marker: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and "qemu-system" in cmd and marker in cmd:
            out.append(int(entry.name))
    return out


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[str]:
    name = f"aero-compat-{os.getpid()}-{tmp_path.name}"
    yield name
    left = qemu_pids_with(name)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"QEMU processes outlived the command: {left}"


def free_ports() -> list[str]:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        return ["--http-port", str(tcp.getsockname()[1]), "--udp-port", str(udp.getsockname()[1])]


def run(cwd: Path, marker: str, *argv: str, qemu: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    cmd = [str(COMMAND), *argv, "--", *qemu, "-name", marker]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n--- stderr ---\n")
    return proc


def last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def test_reference_image_passes_like_the_old_harness(tmp_path: Path, marker: str) -> None:
    from pytest_aero_virtio.refenv.image import ensure_image
    from pytest_aero_virtio.refenv.qemu import ensure_qemu

    disk = ensure_image().disk
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    serial = tmp_path / "out" / "win7-serial.log"
    proc = run(tmp_path, marker, "--qemu-system", str(ensure_qemu()), "--disk-image", str(disk), "--snapshot",
               "--serial-log", str(serial), "--timeout-seconds", "600", *free_ports())
    assert proc.returncode == 0
    assert last_line(proc.stdout) == "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS"
    assert b"AERO_VIRTIO_SELFTEST|RESULT|PASS" in serial.read_bytes()
    # the host markers the VMs recorded, printed as the old harness printed them
    vm_dirs = sorted((tmp_path / "out" / "aero-artifacts").iterdir())
    assert len(vm_dirs) >= 2  # the old default set needs more than one VM (INTx, transitional)
    recorded = [line for d in vm_dirs for line in (d / "host-markers.log").read_text().splitlines()]
    printed = [line for line in proc.stdout.splitlines() if line.startswith("AERO_VIRTIO_WIN7_HOST|")]
    assert sorted(printed) == sorted(recorded) and "AERO_VIRTIO_WIN7_HOST|QEMU_PCI_PREFLIGHT|PASS" in proc.stdout
    # each further VM's serial log beside the main one
    assert len(list(serial.parent.glob("win7-serial.*.log"))) == len(vm_dirs) - 1
    argv = (vm_dirs[0] / "qemu-argv.txt").read_text()
    assert " -m 2048 " in argv and " -smp 2 " in argv, "the old defaults are kept"
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before, "the image was written"


def test_a_requirement_the_guest_cannot_meet_fails_with_the_old_token(tmp_path: Path, marker: str) -> None:
    """User networking offers no TX checksum offload: the old harness failed --require-net-csum-offload with
    VIRTIO_NET_CSUM_OFFLOAD_ZERO (exit code 1); the plugin skips the test, which the command fails."""
    proc = run(tmp_path, marker, "--require-net-csum-offload", "--snapshot", "--smp", "1")
    assert proc.returncode == 1
    assert last_line(proc.stderr).startswith(
        "FAIL: VIRTIO_NET_CSUM_OFFLOAD_ZERO: test_net.py::test_virtio_net_tx_csum_offloaded was required but skipped:"
    )
    assert (tmp_path / "win7-virtio-serial.log").is_file(), "the old default --serial-log"


def test_a_silent_guest_fails_as_a_timeout(tmp_path: Path, marker: str) -> None:
    blank = tmp_path / "blank.img"  # a boot sector that only loops (jmp $): it boots, the serial port stays silent
    data = b"\xeb\xfe" + b"\0" * 508 + b"\x55\xaa" + b"\0" * ((1 << 20) - 512)
    blank.write_bytes(data)
    proc = run(tmp_path, marker, "--disk-image", str(blank), "--timeout-seconds", "4", *free_ports())
    assert proc.returncode == 2
    assert last_line(proc.stderr).startswith("FAIL: NO_SERIAL_OUTPUT: ")
    assert blank.read_bytes() == data


def test_a_file_that_is_no_disk_is_a_configuration_error(tmp_path: Path, marker: str) -> None:
    blank = tmp_path / "blank.img"  # no boot signature: found at start, not after the timeout
    blank.write_bytes(b"\0" * (1 << 20))
    proc = run(tmp_path, marker, "--disk-image", str(blank), "--timeout-seconds", "60", *free_ports())
    assert proc.returncode == 2
    assert last_line(proc.stderr).startswith("FAIL: IMAGE_INVALID: ")


def test_qemu_that_exits_early_is_exit_code_3(tmp_path: Path, marker: str) -> None:
    proc = run(tmp_path, marker, "--snapshot", qemu=("-device", "no-such-device-xyz"))
    assert proc.returncode == 3
    assert last_line(proc.stderr).startswith("FAIL: QEMU_EXITED: ")
    assert "no-such-device-xyz" in proc.stdout
