"""A small fake QMP server (unix socket) that the real ``qemu.qmp.QMPClient`` talks to.

It speaks the wire protocol (greeting, ``qmp_capabilities``, ``execute`` with ``id``, streamed JSON
objects without separators) and models only what the reactions rely on, with QEMU 7.2's error texts:
``input-send-event`` checks the console name, axis, button and qcode; ``block_resize``/``blockdev-resize``
the node name; ``set_link`` the name. Every command is recorded with its arguments and a timestamp.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AXES = {"x", "y"}
BUTTONS = {"left", "middle", "right", "wheel-up", "wheel-down", "side", "extra", "wheel-left", "wheel-right"}
QCODES = {"a", "b", "shift", "ctrl", "alt", "f1", "volumeup", "volumedown", "mute"}


class QmpFault(Exception):
    """Raise from a handler to answer with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.cls = cls
        self.desc = desc


@dataclass
class Call:
    cmd: str
    args: dict[str, Any]
    t: float


@dataclass
class FakeQmpPeer:
    path: Path
    displays: set[str] = field(default_factory=lambda: {"vga0", "vga1"})
    commands: set[str] = field(
        default_factory=lambda: {"qmp_capabilities", "input-send-event", "block_resize", "set_link", "quit"}
    )
    nodes: set[str] = field(default_factory=lambda: {"disk0"})
    links: set[str] = field(default_factory=lambda: {"vnet0", "net0"})
    qcodes: set[str] = field(default_factory=lambda: set(QCODES))
    #: per command: a hook called before the default behaviour (raise QmpFault to refuse)
    hooks: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    link_up: dict[str, bool] = field(default_factory=dict)
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def executed(self, cmd: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.cmd == cmd]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = {
            "QMP": {
                "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                "capabilities": [],
            }
        }
        writer.write(json.dumps(greeting).encode() + b"\r\n")
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk.decode()
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = decoder.raw_decode(buf)
                    except json.JSONDecodeError:
                        break  # incomplete object: wait for more bytes
                    buf = buf[end:]
                    reply = self._answer(msg)
                    writer.write(json.dumps(reply).encode() + b"\r\n")
                    await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            return
        finally:
            writer.close()

    def _answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg.get("execute", "")
        args = msg.get("arguments", {}) or {}
        self.calls.append(Call(cmd, args, time.monotonic()))
        try:
            result = self._run(cmd, args)
            reply: dict[str, Any] = {"return": result}
        except QmpFault as fault:
            reply = {"error": {"class": fault.cls, "desc": fault.desc}}
        if "id" in msg:
            reply["id"] = msg["id"]
        return reply

    def _run(self, cmd: str, args: dict[str, Any]) -> Any:
        if cmd not in self.commands:
            raise QmpFault(f"The command {cmd} has not been found", "CommandNotFound")
        if cmd in self.hooks:
            self.hooks[cmd](args)
        if cmd == "input-send-event":
            self._input(args)
        elif cmd in ("block_resize", "blockdev-resize"):
            node = args.get("node-name", "")
            if node not in self.nodes:
                raise QmpFault(f"Cannot find device='{args.get('device', '')}' nor node-name='{node}'")
            self.sizes[node] = int(args["size"])
        elif cmd == "set_link":
            if args["name"] not in self.links:
                raise QmpFault(f"Device '{args['name']}' not found", "DeviceNotFound")
            self.link_up[args["name"]] = bool(args["up"])
        return {}

    def _input(self, args: dict[str, Any]) -> None:
        device = args.get("device")
        if device is not None and device not in self.displays:
            raise QmpFault(f"Device {device} (head 0) is not bound to a QemuConsole")
        for ev in args["events"]:
            data = ev["data"]
            if ev["type"] in ("rel", "abs") and data["axis"] not in AXES:
                raise QmpFault(f"Parameter 'axis' does not accept value '{data['axis']}'")
            if ev["type"] == "btn" and data["button"] not in BUTTONS:
                raise QmpFault(f"Parameter 'button' does not accept value '{data['button']}'")
            if ev["type"] == "key" and data["key"]["data"] not in self.qcodes:
                raise QmpFault(f"Parameter 'data' does not accept value '{data['key']['data']}'")
