"""Throwaway manual runner for the guest selftest (not a test; not collected by pytest).

Boots the reference image (direct kernel boot) on a QEMU with the project's host services on loopback
(ephemeral ports passed through fw_cfg) and, with ``--act``, performs the host side of each READY line
over QMP by hand.  Prints the serial output with timestamps.

    .venv/bin/python tests/guest/vmrun.py [--qemu PATH|--pinned] [--snd] [--tablet] [--act]
        [--args "--test-input-events ..."] [--vectors N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytest_aero_virtio.host.services import HostServices
from pytest_aero_virtio.refenv.image import ensure_image


class Qmp:
    def __init__(self, path: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, cmd_name: str, **args: Any) -> Any:
        self.f.write(json.dumps({"execute": cmd_name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                return msg


def key(q: str, down: bool) -> dict[str, Any]:
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": q}}}


def btn(b: str, down: bool) -> dict[str, Any]:
    return {"type": "btn", "data": {"down": down, "button": b}}


def act(qmp: Qmp, line: str, stop: threading.Event, wheel: bool, extended: bool) -> None:
    def send(events: list[dict[str, Any]], **kw: Any) -> None:
        r = qmp.cmd("input-send-event", events=events, **kw)
        if "error" in r:
            print("QMP error", r, flush=True)

    if "virtio-blk-resize|READY" in line:
        old = int(line.split("old_bytes=")[1].split("|")[0])
        print("HOST resize", qmp.cmd("block_resize", device="d0", size=old + 64 * 1024 * 1024), flush=True)
    elif "virtio-net-link-flap|READY" in line:
        print("HOST link down", qmp.cmd("set_link", name="n0", up=False), flush=True)
        time.sleep(3)
        print("HOST link up", qmp.cmd("set_link", name="n0", up=True), flush=True)
    elif "virtio-input-events|READY" in line:
        while not stop.is_set():
            keys = ["a"] + (["ctrl", "alt", "f1"] if extended else [])
            for k in keys:
                press(send, k)
            if extended:
                for k, down in (("shift", True), ("b", True), ("b", False), ("shift", False)):
                    send([key(k, down)])
            send([rel("x", 10), rel("y", 5)])
            buttons = ["left"] + (["wheel-up", "wheel-right"] if wheel or extended else [])
            buttons += ["side", "extra"] if extended else []
            for b in buttons:
                click(send, b)
            stop.wait(0.5)
    elif "virtio-input-media-keys|READY" in line:
        while not stop.is_set():
            press(send, "volumeup")
            stop.wait(0.5)
    elif "virtio-input-tablet-events|READY" in line:
        while not stop.is_set():
            send([absev("x", 0), absev("y", 0)], device="vga0")
            send([absev("x", 10000), absev("y", 20000)], device="vga0")
            click(send, "left", device="vga0")
            stop.wait(0.5)


def rel(axis: str, v: int) -> dict[str, Any]:
    return {"type": "rel", "data": {"axis": axis, "value": v}}


def absev(axis: str, v: int) -> dict[str, Any]:
    return {"type": "abs", "data": {"axis": axis, "value": v}}


def press(send: Any, k: str) -> None:
    send([key(k, True)])
    send([key(k, False)])


def click(send: Any, b: str, **kw: Any) -> None:
    send([btn(b, True)], **kw)
    send([btn(b, False)], **kw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64")
    ap.add_argument("--pinned", action="store_true")
    ap.add_argument("--snd", action="store_true")
    ap.add_argument("--audio", default="none")
    ap.add_argument("--tablet", action="store_true")
    ap.add_argument("--act", action="store_true")
    ap.add_argument("--wheel", action="store_true")
    ap.add_argument("--args", default="")
    ap.add_argument("--vectors", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--bad-port", action="store_true", help="give the guest a UDP/HTTP port nobody serves")
    ns = ap.parse_args()
    if ns.pinned:
        from pytest_aero_virtio.refenv.qemu import ensure_qemu

        ns.qemu = str(ensure_qemu())
    img = ensure_image()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    svc = HostServices(http_port=0, udp_port=0)
    asyncio.run_coroutine_threadsafe(svc.start(), loop).result(10)
    http_port, udp_port = (svc.http_port, svc.udp_port) if not ns.bad_port else (1, 9)
    url = f"http://10.0.2.2:{http_port}/aero-virtio-selftest"
    guest_args = f"--http-url={url} --udp-port={udp_port} {ns.args}"
    tmp = tempfile.mkdtemp(prefix="aero-vmrun-")
    sock = os.path.join(tmp, "q.sock")
    vec = f",vectors={ns.vectors}" if ns.vectors is not None else ""
    argv = [
        ns.qemu,
        "-machine",
        "q35",
        "-m",
        "512",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(img.kernel),
        "-initrd",
        str(img.initrd),
        "-append",
        img.append,
        "-qmp",
        f"unix:{sock},server=on,wait=off",
        "-device",
        "VGA,id=vga0",
        "-drive",
        f"if=none,id=d0,file={img.disk},format=raw,snapshot=on",
        "-device",
        f"virtio-blk-pci,drive=d0,disable-legacy=on{vec}",
        "-netdev",
        "user,id=n0",
        "-device",
        f"virtio-net-pci,netdev=n0,disable-legacy=on{vec}",
        "-device",
        f"virtio-keyboard-pci,disable-legacy=on{vec}",
        "-device",
        f"virtio-mouse-pci,disable-legacy=on{vec}",
        "-fw_cfg",
        f"name=opt/aero/args,string={guest_args.replace(',', ',,')}",
    ]
    if ns.tablet:
        argv += ["-device", f"virtio-tablet-pci,disable-legacy=on,display=vga0{vec}"]
    if ns.snd:
        wav = os.path.join(tmp, "out.wav")
        ad = f"wav,id=a0,path={wav},out.frequency=48000" if ns.audio == "wav" else "none,id=a0"
        argv += ["-audiodev", ad, "-device", f"virtio-sound-pci,audiodev=a0,disable-legacy=on{vec}"]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    qmp = Qmp(sock) if ns.act else None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    assert p.stdout
    try:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            print(f"[{time.monotonic() - t0:6.2f}] {line}", flush=True)
            if "|READY" in line:
                stop.set()
                for t in threads:
                    t.join()
                stop = threading.Event()
                if qmp:
                    t = threading.Thread(target=act, args=(qmp, line, stop, ns.wheel, "extended" in ns.args))
                    t.start()
                    threads.append(t)
            elif "AERO_VIRTIO_SELFTEST|TEST|" in line and any(s in line for s in ("|PASS", "|FAIL", "|SKIP")):
                stop.set()
            if time.monotonic() - t0 > ns.timeout:
                break
    finally:
        stop.set()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
        p.wait()
        asyncio.run_coroutine_threadsafe(svc.stop(), loop).result(10)
    print(f"qemu exit {p.returncode} after {time.monotonic() - t0:.1f} s")
    if ns.snd and ns.audio == "wav":
        print("wav", os.path.getsize(os.path.join(tmp, "out.wav")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
