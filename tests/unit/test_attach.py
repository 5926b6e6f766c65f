"""The attach point of a kept VM without QEMU: the console relay both ways, the private directory, waiting for
Enter on a real pseudo-terminal, and the argv that gives QEMU the second monitor and VNC."""

from __future__ import annotations

import asyncio
import os
import pty
import stat
import threading
from pathlib import Path

import pytest

from pytest_aero_virtio.config import QemuCommand, RunOptions, VmConfig
from pytest_aero_virtio.qemu.argv import RuntimePaths, build_argv
from pytest_aero_virtio.qemu.caps import Caps
from pytest_aero_virtio.report.attach import VNC, AttachPoint, attach_lines, read_enter


class _Reader:
    def __init__(self) -> None:
        self.taps: list = []  # type: ignore[type-arg]


def test_console_relay_both_ways_in_a_private_directory() -> None:
    point = AttachPoint()
    try:
        assert stat.S_IMODE(point.dir.stat().st_mode) == 0o700
        qemu_stdin, ours = os.pipe()  # what the person types goes into QEMU's stdin
        os.set_blocking(ours, False)
        reader = _Reader()

        async def scenario() -> tuple[bytes, bytes]:
            await point.start((ours, reader))  # type: ignore[arg-type]
            client_r, client_w = await asyncio.open_unix_connection(str(point.console_path))
            await asyncio.sleep(0.05)  # the server has registered the client
            for tap in reader.taps:
                tap(b"login: ")  # what the guest printed reaches the person...
            seen = await asyncio.wait_for(client_r.readexactly(7), 5)
            client_w.write(b"root\n")  # ...and what the person types reaches the guest
            await client_w.drain()
            typed = await asyncio.wait_for(asyncio.to_thread(os.read, qemu_stdin, 64), 5)
            await point.close()
            assert await asyncio.wait_for(client_r.read(), 5) == b""  # hung up on close
            return seen, typed

        assert asyncio.run(scenario()) == (b"login: ", b"root\n")
        os.close(ours)
        os.close(qemu_stdin)
    finally:
        point.remove()
    assert not point.dir.exists()


def test_attach_lines_name_every_way_in(tmp_path: Path) -> None:
    point = AttachPoint()
    point.remove()
    lines = attach_lines("vm0", point, 5901, tmp_path / "screen-end.png")
    text = "\n".join(lines)
    assert f"UNIX-CONNECT:{point.qmp_path}" in text and f"UNIX-CONNECT:{point.console_path}" in text
    assert "127.0.0.1::5901" in text and "screen-end.png" in text
    assert "display: not available" in "\n".join(attach_lines("vm0", point, None, None))


def test_read_enter_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        threading.Timer(0.2, lambda: os.write(master, b"\n")).start()
        assert read_enter(lambda: True, tty=name) == "enter"
        assert read_enter(lambda: False, tty=name) == "exited"
    finally:
        os.close(master)
        os.close(slave)


def test_read_enter_without_a_terminal(tmp_path: Path) -> None:
    assert read_enter(lambda: True, tty=str(tmp_path / "no-such-tty")) == "no-terminal"


def test_argv_gets_a_second_monitor_and_vnc(tmp_path: Path) -> None:
    point = AttachPoint()
    point.remove()
    qemu = QemuCommand(Path("/usr/bin/qemu-system-x86_64"))
    opts = RunOptions(qemu=qemu, image=tmp_path / "disk.img", snapshot=False)
    caps = Caps(
        (10, 0, 0),
        frozenset({"virtio-blk-pci", "virtio-net-pci", "virtio-keyboard-pci", "virtio-mouse-pci", "VGA"}),
    )
    rt = RuntimePaths(serial=3, qmp=4, **point.runtime())
    argv = build_argv(opts, VmConfig(), caps, rt)
    assert argv[argv.index("-vnc") + 1] == VNC == "127.0.0.1:0,to=99"
    monitors = [argv[i + 1] for i, a in enumerate(argv) if a == "-mon"]
    assert monitors == ["chardev=qmp0,mode=control", "chardev=qmp-attach,mode=control"]
    assert f"socket,id=qmp-attach,path={point.qmp_path},server=on,wait=off" in argv
    assert "-vnc" not in build_argv(opts, VmConfig(), caps, RuntimePaths(serial=3, qmp=4))


@pytest.mark.parametrize("option", ["--vm-keep-on-failure", "--pdb"])
def test_options_arm_the_attach_point(pytester: pytest.Pytester, option: str) -> None:
    from pytest_aero_virtio.settings import settings_from_config

    image = pytester.path / "disk.img"
    image.write_bytes(b"\0" * 510 + b"\x55\xaa")  # a boot sector: what the start-up image check wants
    config = pytester.parseconfig(f"--vm-image={image}", "--qemu-system=/bin/true", option)
    settings = settings_from_config(config)
    assert settings.attachable
    assert settings.keep_on_failure == (option == "--vm-keep-on-failure")
    plain = settings_from_config(pytester.parseconfig(f"--vm-image={image}", "--qemu-system=/bin/true"))
    assert not plain.attachable and not plain.keep_on_failure
