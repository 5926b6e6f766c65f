"""The argv builder against the real QEMU on PATH: QEMU accepts every option we generate.

Starts QEMU paused (-S): devices are realised (so a bad property fails) but no guest code runs; then checks
over QMP what QEMU made of the command line and quits. About half a second.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_aero_virtio.config import QemuCommand, RunOptions, Vectors, VmConfig
from pytest_aero_virtio.qemu.argv import ImageFormat, RuntimePaths, build_argv, prepare_overlay
from pytest_aero_virtio.qemu.caps import probe

QEMU = shutil.which("qemu-system-x86_64")


def _pinned_qemu() -> str | None:
    """The pinned QEMU 10 launcher if a refenv cache already holds one (never builds it here)."""
    import os

    from pytest_aero_virtio.refenv.cache import cache_root

    extra = os.environ.get("AERO_VIRTIO_TEST_CACHE")
    roots = [cache_root()] + ([Path(extra)] if extra else [])
    for root in roots:
        for launcher in sorted(root.glob("qemu-*/bin/qemu-system-x86_64")):
            if os.access(launcher, os.X_OK):
                return str(launcher)
    return None


QEMU10 = _pinned_qemu()


class Qmp:
    def __init__(self, sock: socket.socket) -> None:
        self.f = sock.makefile("rwb")
        greeting = json.loads(self.f.readline())
        assert "QMP" in greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args: Any) -> Any:
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(reply["error"])
            return reply["return"]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(opts: RunOptions, vm: VmConfig, overlay: bool) -> tuple[Qmp, subprocess.Popen[bytes]]:
        caps = probe(opts.qemu)
        ser_host, ser_qemu = socket.socketpair()
        qmp_host, qmp_qemu = socket.socketpair()
        fmt: ImageFormat = "raw"
        ov = None
        if overlay and opts.image is not None:
            ov = tmp_path / "over, lay.qcow2"
            fmt = prepare_overlay(opts.image, ov)
        rt = RuntimePaths(
            serial=ser_qemu.fileno(),
            qmp=qmp_qemu.fileno(),
            guest_args="--test-blk-resize --http-url=http://10.0.2.2:18080/a,b",
            accel="tcg",
            image_format=fmt,
            overlay=ov,
            wav_path=tmp_path / "out, 1.wav",
        )
        argv = [*build_argv(opts, vm, caps, rt), "-S"]
        proc = subprocess.Popen(argv, pass_fds=(ser_qemu.fileno(), qmp_qemu.fileno()), stderr=subprocess.PIPE)
        procs.append(proc)
        ser_qemu.close()
        qmp_qemu.close()
        ser_host.close()
        try:
            return Qmp(qmp_host), proc
        except Exception:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"QEMU refused the argv: {err.decode()}\n{argv}") from None

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def pci_devices(qmp: Qmp) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for bus in qmp.cmd("query-pci"):
        for dev in bus["devices"]:
            out[dev.get("qdev_id", "")] = (dev["id"]["vendor"], dev["id"]["device"])
    return out


@pytest.mark.skipif(QEMU is None, reason="no qemu-system-x86_64 on PATH")
def test_full_argv_is_accepted_modern_ids_and_resize(tmp_path: Path, launch: Any) -> None:
    base = tmp_path / "base, image.raw"
    base.write_bytes(b"\0" * (4 << 20))
    opts = RunOptions(qemu=QemuCommand(Path(str(QEMU))), image=base, memory_mib=256)
    vm = VmConfig(tablet=True, vectors=Vectors(blk=3, net=4, input=2))
    qmp, proc = launch(opts, vm, True)
    ids = pci_devices(qmp)
    assert ids["vblk0"] == (0x1AF4, 0x1042)
    assert ids["vnet0"] == (0x1AF4, 0x1041)
    for dev in ("vkbd0", "vmouse0", "vtablet0"):
        assert ids[dev] == (0x1AF4, 0x1052)
    assert "vga0" in ids
    nodes = {n["node-name"]: n for n in qmp.cmd("query-named-block-nodes", flat=True)}
    assert nodes["base"]["ro"] is True and nodes["disk0"]["ro"] is False
    qmp.cmd("block_resize", **{"node-name": "disk0", "size": (4 << 20) + (64 << 20)})
    nodes = {n["node-name"]: n for n in qmp.cmd("query-named-block-nodes", flat=True)}
    assert nodes["disk0"]["image"]["virtual-size"] == (68 << 20)
    qmp.cmd("quit")
    proc.wait(10)
    assert base.stat().st_size == 4 << 20  # the base image is untouched


@pytest.mark.skipif(QEMU is None, reason="no qemu-system-x86_64 on PATH")
def test_transitional_and_no_snapshot(tmp_path: Path, launch: Any) -> None:
    base = tmp_path / "disk,1.raw"
    base.write_bytes(b"\0" * (1 << 20))
    opts = RunOptions(qemu=QemuCommand(Path(str(QEMU))), image=base, snapshot=False, memory_mib=256)
    qmp, proc = launch(opts, VmConfig(transitional=True, vectors=Vectors(net=0)), False)
    ids = pci_devices(qmp)
    assert ids["vblk0"] == (0x1AF4, 0x1001)
    assert ids["vnet0"] == (0x1AF4, 0x1000)
    qmp.cmd("quit")
    proc.wait(10)


@pytest.mark.skipif(QEMU10 is None, reason="no pinned QEMU 10 in the refenv cache (aero-virtio-refenv qemu)")
def test_sound_on_pinned_qemu10(tmp_path: Path, launch: Any) -> None:
    base = tmp_path / "d.raw"
    base.write_bytes(b"\0" * (1 << 20))
    opts = RunOptions(qemu=QemuCommand(Path(str(QEMU10))), image=base, snapshot=False, memory_mib=256)
    for audio in ("wav", "none"):  # each a Literal
        vm = VmConfig(snd=True, audio=audio, vectors=Vectors(snd=2))
        qmp, proc = launch(opts, vm, False)
        assert pci_devices(qmp)["vsnd0"] == (0x1AF4, 0x1059)
        qmp.cmd("quit")
        proc.wait(10)
