"""Integration: what the reference guest offers other parts of the project, on a real VM with the real selftest.

- serial noise (``--noise-line-bytes`` / ``--noise-binary-bytes``) comes before START and nothing else does;
- baked args (``ensure_image(baked_args=...)``, ``aero-virtio-refenv build --baked-args``) are the whole
  configuration when the host sends no fw_cfg ``opt/aero/args``;
- the markers are on the VGA text console too, so a QMP ``screendump`` of ``vga0`` shows the selftest.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_aero_virtio.config import QemuCommand, RunOptions, VmConfig
from pytest_aero_virtio.qemu.argv import RuntimePaths, build_argv, prepare_overlay
from pytest_aero_virtio.qemu.caps import probe_cached
from pytest_aero_virtio.refenv import bare, image
from pytest_aero_virtio.refenv.qemu import ensure_qemu

pytestmark = pytest.mark.slow

SYSTEM_QEMU = Path("/usr/bin/qemu-system-x86_64")
START = b"AERO_VIRTIO_SELFTEST|START|version=1\n"


@pytest.fixture
def services() -> Iterator[bare.Services]:
    svc = bare.start_services(0, 0)
    yield svc
    svc.close()


def _argv(qemu: Path, disk: Path, tmp: Path, guest_args: str, extra: list[str]) -> list[str]:
    """The plugin's own command line for the default devices (no sound), serial on stdout."""
    caps = probe_cached(QemuCommand(qemu))
    overlay = tmp / "overlay.qcow2"
    prepare_overlay(disk, overlay)
    opts = RunOptions(qemu=QemuCommand(qemu), image=disk, memory_mib=512, accel="tcg")
    rt = RuntimePaths(serial="stdio", qmp=None, guest_args=guest_args, accel="tcg", image_format="raw", overlay=overlay)
    return build_argv(opts, VmConfig(snd=False), caps, rt) + extra


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, limit: float = 120.0) -> bytes:
    """The output up to the end of the line that holds ``marker`` (a line read half is no line)."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + limit

    def whole_line() -> bool:
        at = out.find(marker)
        return at >= 0 and out.find(b"\n", at) >= 0

    while not whole_line() and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        if not chunk:
            break
        out += chunk
    return out


def _run_until(argv: list[str], marker: bytes) -> bytes:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _read_until(proc, marker)
    finally:
        proc.kill()
        proc.wait()


def test_noise_precedes_every_marker(tmp_path: Path, services: bare.Services) -> None:
    printable = bytes(range(0x21, 0x7F))
    line = (printable * ((1 << 20) // len(printable) + 1))[: 1 << 20] + b"\n"
    burst = bytes(i % 256 for i in range(65536)) + b"\n"
    args = bare.guest_args(services.http_port, services.udp_port) + " --noise-line-bytes=1048576"
    args += " --noise-binary-bytes=65536"
    out = _run_until(_argv(ensure_qemu(), image.ensure_image().disk, tmp_path, args, []), b"|CONFIG|")
    assert START in out, out[-2000:]
    before = out[: out.index(START)]
    assert before.endswith(line + burst), before[:200]
    assert b"AERO_VIRTIO_SELFTEST" not in before  # no marker before the noise either
    assert b"noise_line_bytes=1048576|noise_binary_bytes=65536" in out


def test_baked_args_apply_without_fw_cfg(tmp_path: Path) -> None:
    img = image.ensure_image(baked_args="--dns-host=baked.invalid --disable-snd --udp-port=4242")
    out = _run_until(_argv(ensure_qemu(), img.disk, tmp_path, "", []), b"|CONFIG|")
    config = next(line for line in out.splitlines() if b"|CONFIG|" in line).decode()
    fields = dict(f.split("=", 1) for f in config.split("|")[2:])
    assert fields["sources"] == "image", config
    assert (fields["dns_host"], fields["udp_port"], fields["flags"]) == ("baked.invalid", "4242", "disable-snd")


class _Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.file.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args: object) -> dict[str, object]:
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        while True:
            msg: dict[str, object] = json.loads(self.file.readline())
            if "return" in msg or "error" in msg:
                return msg


def _vga_text(qmp: _Qmp) -> str:
    """The VGA text buffer (0xb8000, 32 KiB): character bytes of the (char, attribute) cells."""
    reply = qmp.cmd("human-monitor-command", **{"command-line": "xp /16384hx 0xb8000"})
    cells = [int(w, 16) for line in str(reply["return"]).splitlines() for w in line.split(":", 1)[1].split()]
    return bytes(c & 0xFF for c in cells).decode("latin-1")


@pytest.mark.parametrize(
    "which",
    [
        pytest.param("system", marks=pytest.mark.skipif(not SYSTEM_QEMU.exists(), reason="no system QEMU")),
        "pinned",
    ],
)
def test_screendump_shows_the_markers(which: str, services: bare.Services) -> None:
    qemu = SYSTEM_QEMU if which == "system" else ensure_qemu()
    tmp = Path(tempfile.mkdtemp(prefix="aero-vga-", dir="/tmp"))  # short path for the QMP socket
    try:
        sock = tmp / "qmp.sock"
        extra = ["-qmp", f"unix:{sock},server=on,wait=off", "-no-shutdown"]
        args = bare.guest_args(services.http_port, services.udp_port)
        argv = _argv(qemu, image.ensure_image().disk, tmp, args, extra)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            out = _read_until(proc, b"Power down")
            assert b"AERO_VIRTIO_SELFTEST|RESULT|PASS" in out, out[-2000:]
            qmp = _Qmp(sock)
            png = tmp / "screen.png"
            assert qmp.cmd("screendump", filename=str(png), format="png") == {"return": {}}
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            text = _vga_text(qmp)
            rows = [text[i : i + 80].rstrip() for i in range(0, len(text), 80)]
            assert "AERO_VIRTIO_SELFTEST|RESULT|PASS" in rows, rows
            assert any(r.startswith("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|") for r in rows), rows
            assert "aero-init: selftest finished, powering off" in rows, rows
            qmp.cmd("quit")
        finally:
            proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
