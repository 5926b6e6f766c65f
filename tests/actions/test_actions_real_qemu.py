"""Reactions against the real system QEMU with no guest: QMP accepts what the actions send.

The guest-visible effect needs a guest (see vmm_flows); here we prove the host half on real QEMU: the
display-targeted ``input-send-event`` (keyboard/mouse on ``vga0``, tablet on ``vga1``) is accepted,
``block_resize`` on node ``disk0`` really grows the image file, ``set_link`` on ``vnet0`` is accepted, and
the broadcast fallback works with QEMU's real refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from qemu.qmp import ExecInterruptedError, QMPClient

from pytest_aero_virtio.actions import ActionContext, Reactor, reactions_for
from pytest_aero_virtio.config import VmConfig
from pytest_aero_virtio.qemu.caps import Caps
from pytest_aero_virtio.stream import MarkerStream

QEMU = shutil.which("qemu-system-x86_64")
P = "AERO_VIRTIO_SELFTEST|TEST|"
MiB = 1024 * 1024

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"),
]


def qemu_argv(qemu: str, sock: Path, disk: Path) -> list[str]:
    """The device layout the actions expect (docs/design.md, Interface changes): displays before inputs."""
    return [
        qemu, "-machine", "q35", "-nodefaults", "-display", "none", "-accel", "tcg", "-m", "128",
        "-device", "VGA,id=vga0",
        "-device", "secondary-vga,id=vga1",
        "-device", "virtio-keyboard-pci,id=vkbd0,display=vga0",
        "-device", "virtio-mouse-pci,id=vmouse0,display=vga0",
        "-device", "virtio-tablet-pci,id=vtablet0,display=vga1",
        "-blockdev", f"driver=file,filename={str(disk).replace(',', ',,')},node-name=disk0",
        "-device", "virtio-blk-pci,id=vblk0,drive=disk0",
        "-netdev", "user,id=net0", "-device", "virtio-net-pci,id=vnet0,netdev=net0",
        "-qmp", f"unix:{sock},server=on,wait=off",
    ]  # fmt: skip


async def _connect(sock: Path, proc: subprocess.Popen[bytes]) -> QMPClient:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode}")
        if sock.exists():
            qmp = QMPClient("real")
            try:
                await qmp.connect(str(sock))
                return qmp
            except OSError:
                pass
        await asyncio.sleep(0.05)
    raise RuntimeError("QMP socket never came up")


def test_actions_on_real_qemu() -> None:
    assert QEMU is not None
    tmp = Path(tempfile.mkdtemp(prefix="aqemu", dir="/tmp"))
    disk = tmp / "disk, 1.raw"  # a comma and a space: the escaping must hold
    with disk.open("wb") as f:
        f.truncate(64 * MiB)
    sock = tmp / "q.sock"
    proc = subprocess.Popen(
        qemu_argv(QEMU, sock, disk), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    async def main() -> None:
        qmp = await _connect(sock, proc)
        try:
            listing = await qmp.execute("query-commands")
            assert isinstance(listing, list)
            cmds = {c["name"] for c in listing}
            props = {
                d: frozenset({"display"}) for d in ("virtio-keyboard-pci", "virtio-mouse-pci", "virtio-tablet-pci")
            }
            caps = Caps(version=(7, 2, 0), device_props=props, qmp_commands=frozenset(cmds))
            names = {"blk_resize", "input_events", "input_events_extended", "input_media_keys",
                     "input_tablet_events", "net_link_flap"}  # fmt: skip
            stream = MarkerStream()
            ctx = ActionContext(
                qmp=qmp, stream=stream, vm=VmConfig(reactions=frozenset(names)), caps=caps,
                input_interval_s=0.1, input_deadline_s=5, link_down_s=0.3,
            )  # fmt: skip
            reactor = Reactor(ctx, reactions_for(names))
            stream.subscribe(reactor.on_marker)
            for test in ("virtio-input-events", "virtio-input-media-keys", "virtio-input-tablet-events"):
                stream.feed_line(P + f"{test}|READY")
            stream.feed_line(P + f"virtio-blk-resize|READY|disk=0|old_bytes={64 * MiB}")
            stream.feed_line(P + "virtio-net-link-flap|READY")
            await asyncio.sleep(0.25)
            for test in ("virtio-input-events", "virtio-input-media-keys", "virtio-input-tablet-events"):
                stream.feed_line(P + f"{test}|PASS")
            await reactor.drain(20)

            by_topic = {hm.topic: hm for hm in ctx.recorded}  # last marker per topic
            topics = [
                "VIRTIO_INPUT_EVENTS_INJECT",
                "VIRTIO_INPUT_MEDIA_KEYS_INJECT",
                "VIRTIO_INPUT_TABLET_EVENTS_INJECT",
                "VIRTIO_BLK_RESIZE",
                "VIRTIO_NET_LINK_FLAP",
            ]
            for topic in topics:
                assert by_topic[topic].status == "PASS", by_topic[topic].line()
            ev = by_topic["VIRTIO_INPUT_EVENTS_INJECT"]
            assert (ev["kbd_mode"], ev["mouse_mode"], ev["set"]) == ("device", "device", "extended")
            assert by_topic["VIRTIO_INPUT_TABLET_EVENTS_INJECT"]["tablet_mode"] == "device"
            assert by_topic["VIRTIO_BLK_RESIZE"]["qmp_cmd"] in ("block_resize", "blockdev-resize")
            assert os.path.getsize(disk) == 128 * MiB

            # QEMU's refusal of an unknown console is what triggers the broadcast fallback
            ctx2 = ActionContext(
                qmp=qmp, stream=MarkerStream(), vm=VmConfig(reactions=frozenset({"input_events"})), caps=caps,
                display="no-such-display", input_deadline_s=0.05,
            )  # fmt: skip
            reactor2 = Reactor(ctx2, reactions_for({"input_events"}))
            ctx2.stream.subscribe(reactor2.on_marker)
            ctx2.stream.feed_line(P + "virtio-input-events|READY")
            await reactor2.drain(10)
            first = ctx2.recorded[0]
            assert (first.status, first["kbd_mode"], first["mouse_mode"]) == (
                "PASS",
                "broadcast",
                "broadcast",
            )
            with contextlib.suppress(EOFError, ExecInterruptedError):  # QEMU may hang up before replying
                await qmp.execute("quit")
        finally:
            with contextlib.suppress(EOFError, OSError):  # after quit the peer may vanish mid-disconnect
                await qmp.disconnect()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        print("QEMU stderr:", err.decode(errors="replace"))
        shutil.rmtree(tmp, ignore_errors=True)
