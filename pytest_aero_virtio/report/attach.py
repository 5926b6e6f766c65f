"""A VM a person can attach to: ``--vm-keep-on-failure`` and ``--pdb``.

Why: a failure's logs say what the guest printed, not what state it is in. With these options every VM gets an
attach point at boot, and a VM whose test failed is not stopped until the person says so:

* a second QMP monitor on a unix socket (``qmp.sock``): ``query-status``, ``screendump``, ``human-monitor-command``;
* the guest's console on a unix socket (``console.sock``): a relay of the first serial port (the plugin keeps
  reading it for the markers and serial.log; what a person types goes to the guest);
* a VNC display on 127.0.0.1 (QEMU picks the first free display from :5900 on; the banner prints the port).

The sockets live in a private directory (mode 0700, ``/tmp/aero-attach-*``: short, so the socket paths fit a
``sun_path``), removed when the VM stops. After a failed test (with ``--vm-keep-on-failure``) the VM's stop waits
for Enter on the terminal (``/dev/tty``; under pytest-xdist the worker reads it too) or Ctrl-C (which stops the
VM and then ends the run, as Ctrl-C does). Without a terminal (CI) there is nobody to attach: the banner says so
and the VM is stopped at once, so a run never waits forever. A VM that exits on its own while waiting (the
guest powered off) ends the wait too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..qemu.argv import UnixSocket

if TYPE_CHECKING:
    from ..qemu.serial import SerialReader
    from ..vm import VmHandle

__all__ = ["VNC", "AttachPoint", "KeepRequest", "announce", "attach_lines", "hold", "read_enter"]

#: The first free VNC display from 0 up to 99, on loopback only.
VNC = "127.0.0.1:0,to=99"
#: A client that stops reading loses console output beyond this, never the guest or the markers.
_MAX_BUFFER = 1 << 20


@dataclass(frozen=True)
class KeepRequest:
    """A test of the VM failed: keep the VM for a person (set by the plugin's report hook)."""

    test: str
    headline: str
    say: Callable[[str], None]


class AttachPoint:
    """The sockets of one VM for a person: made before QEMU starts, relayed on the VM loop, removed at stop."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aero-attach-"))  # mkdtemp: mode 0700
        self.qmp_path = self.dir / "qmp.sock"
        self.console_path = self.dir / "console.sock"
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._input: int | None = None

    def runtime(self) -> dict[str, Any]:
        """The :class:`~pytest_aero_virtio.qemu.argv.RuntimePaths` fields that give QEMU the monitor and VNC."""
        return {"attach_qmp": UnixSocket(self.qmp_path), "vnc": VNC}

    async def start(self, console: tuple[int, SerialReader] | None) -> None:
        """Listen on ``console.sock`` and relay the guest's console both ways (on the VM loop): QEMU's output
        from the reader's taps, what a person types into QEMU's stdin (``console[0]``, non-blocking)."""
        if console is None:
            return
        self._input, reader = console
        reader.taps.append(self._relay)
        self._server = await asyncio.start_unix_server(self._client, path=str(self.console_path))

    def _relay(self, data: bytes) -> None:
        for writer in list(self._clients):
            if writer.is_closing() or writer.transport.get_write_buffer_size() > _MAX_BUFFER:
                continue
            writer.write(data)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while data := await reader.read(4096):
                if self._input is not None:
                    await _write_all(self._input, data)
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Stop listening and hang up on every client (before the loop ends)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


async def _write_all(fd: int, data: bytes) -> None:
    """Write to a non-blocking pipe on the loop; while it is full (the guest is not reading), wait a little."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.01)


def attach_lines(name: str, point: AttachPoint, vnc_port: int | None, screenshot: Path | None) -> list[str]:
    """How to reach the VM, one tool per line, ready to paste."""
    vnc = f"vncviewer 127.0.0.1::{vnc_port}   (VNC port {vnc_port} on 127.0.0.1)" if vnc_port else "not available"
    lines = [
        f'  QMP:     socat - UNIX-CONNECT:{point.qmp_path}   (first send {{"execute": "qmp_capabilities"}})',
        f"  console: socat -,rawer UNIX-CONNECT:{point.console_path}   (the guest's first serial port)",
        f"  display: {vnc}",
    ]
    if screenshot is not None:
        lines.append(f"  screen:  {screenshot}")
    return [f"aero-virtio: {name} is kept running for you; reach it with:", *lines]


def read_enter(still_alive: Callable[[], bool], tty: str = "/dev/tty") -> str:
    """Block until Enter is pressed on the terminal: ``"enter"``; ``"no-terminal"`` when there is none (CI);
    ``"exited"`` when ``still_alive()`` turns false first. Ctrl-C raises KeyboardInterrupt as usual."""
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return "no-terminal"
    try:
        while still_alive():
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    return "no-terminal"
                if b"\n" in data or b"\r" in data:
                    return "enter"
        return "exited"
    finally:
        os.close(fd)


def announce(handle: VmHandle, say: Callable[[str], None]) -> bool:
    """Print how to reach the VM (its QMP and console sockets, the VNC port it got); False if it is gone."""
    point = handle.attach
    if point is None or not handle.session.alive:
        say(f"aero-virtio: {handle.planned.id}: nothing to attach to: QEMU has already exited")
        return False
    vnc_port = None
    with contextlib.suppress(Exception):
        vnc_port = int(handle.qmp("query-vnc").get("service") or 0) or None
    lines = attach_lines(handle.planned.id, point, vnc_port, handle.latest_screenshot())
    lines[0] = "\n" + lines[0]  # pytest's line of test outcomes may be unfinished: start on a line of our own
    for line in lines:
        say(line)
    return True


def hold(handle: VmHandle, keep: KeepRequest) -> BaseException | None:
    """Print how to reach the kept VM and wait for Enter; returns a Ctrl-C to re-raise after the stop."""
    if not announce(handle, keep.say):
        return None
    keep.say(f"aero-virtio: because {keep.test} failed: {keep.headline}")
    keep.say("aero-virtio: press Enter to stop the VM and go on (Ctrl-C: stop it and end the run)")
    try:
        how = read_enter(lambda: handle.session.alive)
    except KeyboardInterrupt as exc:
        keep.say("aero-virtio: Ctrl-C: stopping the VM")
        return exc
    if how == "no-terminal":
        keep.say("aero-virtio: no terminal to wait on (no /dev/tty, as in CI): stopping the VM now")
    elif how == "exited":
        keep.say(f"aero-virtio: {handle.planned.id}: QEMU exited by itself; nothing left to attach to")
    return None
