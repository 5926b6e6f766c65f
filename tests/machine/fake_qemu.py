"""A fake ``qemu-system-x86_64`` for the machine layer's unit tests (never used outside tests).

It understands exactly the part of QEMU's command line the harness relies on:
``-chardev socket,id=X,fd=N`` + ``-serial chardev:X`` (the console) and ``-chardev socket,id=Y,fd=M`` +
``-mon chardev=Y,mode=control`` (QMP). Behaviour is chosen with environment variables:

* ``FAKE_QEMU_MODE``: ``normal`` (serial script, then serve QMP until ``quit``), ``poweroff`` (serial script,
  then exit 0 like a guest that powers off), ``crash`` (serial script, then a message on stderr and exit 1),
  ``hang`` (serial script, ignore ``quit`` and SIGTERM), ``silent`` (no serial output at all),
  ``early_exit`` (a QEMU-like fatal error on stderr, exit 1 before any QMP), ``flood`` (write serial bytes
  as fast as possible - only a reader that drains the socket keeps it alive).
* ``FAKE_QEMU_SERIAL``: JSON list of ``[delay_seconds, text]`` chunks written to the console in order
  (default: a short selftest run with CRLF ends and a line split over two writes).
* ``FAKE_QEMU_PIDFILE``: write our pid there at start.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

DEFAULT_SCRIPT: list[tuple[float, str]] = [
    (0.0, "SeaBIOS noise\r\n\x1b[2J"),
    (0.0, "AERO_VIRTIO_SELFTEST|START|version=1\r\n"),
    (0.05, "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PA"),
    (0.05, "SS|write_bytes=1048576\r\nkernel: junk\n"),
    (0.0, "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS\n"),
    (0.0, "AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n"),
]


def parse_fds(argv: list[str]) -> tuple[int | None, int | None]:
    """(serial fd, qmp fd) from ``-chardev socket,...,fd=N`` (or ``stdio``: fd 1) wired to ``-serial``/``-mon``."""
    chardev_fd: dict[str, int] = {}
    serial_id = qmp_id = None
    for opt, val in itertools.pairwise(argv):
        if opt == "-chardev" and val.startswith(("socket,", "stdio,")):
            kv = dict(p.split("=", 1) for p in val.split(",")[1:] if "=" in p)
            if "id" in kv and ("fd" in kv or val.startswith("stdio,")):
                chardev_fd[kv["id"]] = int(kv.get("fd", 1))
        elif opt == "-serial" and val.startswith("chardev:"):
            serial_id = val.split(":", 1)[1]
        elif opt == "-mon":
            kv = dict(p.split("=", 1) for p in val.split(",") if "=" in p)
            if kv.get("mode") == "control":
                qmp_id = kv.get("chardev")
    return chardev_fd.get(serial_id or ""), chardev_fd.get(qmp_id or "")


def _messages(sock: socket.socket) -> Iterator[Any]:
    """Clients send JSON objects back to back, not newline-terminated (QEMU's parser streams)."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data.decode()
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                obj, end = decoder.raw_decode(buf)
            except ValueError:
                break  # incomplete: wait for more bytes
            buf = buf[end:]
            yield obj


def serve_qmp(sock: socket.socket, mode: str) -> None:
    def send(obj: object) -> None:
        sock.sendall(json.dumps(obj).encode() + b"\r\n")

    send(
        {
            "QMP": {
                "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
                "capabilities": ["oob"],
            }
        }
    )
    for msg in _messages(sock):
        cmd = msg.get("execute")
        reply: dict[str, object]
        if cmd == "qmp_capabilities":
            reply = {"return": {}}
        elif cmd == "query-status":
            reply = {"return": {"status": "running", "singlestep": False, "running": True}}
        elif cmd == "quit":
            if mode == "hang":
                continue  # never answers, never exits
            reply = {"return": {}}
            if "id" in msg:
                reply["id"] = msg["id"]
            send(reply)
            send(
                {
                    "event": "SHUTDOWN",
                    "data": {"guest": False, "reason": "host-qmp-quit"},
                    "timestamp": {"seconds": int(time.time()), "microseconds": 0},
                }
            )
            os._exit(0)
        else:
            reply = {"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}}
        if "id" in msg:
            reply["id"] = msg["id"]
        send(reply)


def main() -> None:
    mode = os.environ.get("FAKE_QEMU_MODE", "normal")
    pidfile = os.environ.get("FAKE_QEMU_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    if mode == "early_exit":
        sys.stderr.write(
            "qemu-system-x86_64: -device virtio-blk-pci,x-pci-revision=1: "
            "Property 'virtio-blk-pci.x-pci-revision' not found\n"
        )
        sys.stderr.flush()
        os._exit(1)
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serial_fd, qmp_fd = parse_fds(sys.argv[1:])
    if serial_fd is None or qmp_fd is None:
        sys.stderr.write(f"fake qemu: missing serial/qmp chardev in {sys.argv[1:]}\n")
        os._exit(2)
    sys.stderr.write("fake qemu: started\n")
    sys.stderr.flush()
    qmp = socket.socket(fileno=qmp_fd)
    def serial_write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(serial_fd, view) :]

    threading.Thread(target=serve_qmp, args=(qmp, mode), daemon=True).start()

    if mode == "flood":
        chunk = b"x" * 4095 + b"\n"
        deadline = time.monotonic() + float(os.environ.get("FAKE_QEMU_FLOOD_S", "1.0"))
        while time.monotonic() < deadline:
            serial_write(chunk)
        serial_write(b"AERO_VIRTIO_SELFTEST|RESULT|PASS\n")
    elif mode != "silent":
        raw = os.environ.get("FAKE_QEMU_SERIAL")
        script = json.loads(raw) if raw is not None else DEFAULT_SCRIPT
        for delay, text in script:
            time.sleep(delay)
            serial_write(text.encode())
    if mode == "poweroff":
        os._exit(0)
    if mode == "crash":
        sys.stderr.write("qemu-system-x86_64: fake crash: virtqueue corrupted\n")
        sys.stderr.flush()
        os._exit(1)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
