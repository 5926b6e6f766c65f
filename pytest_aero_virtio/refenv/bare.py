"""The bare runner: the reference guest on a plain QEMU command line, with the plainest host services.

It is the yardstick the harness is timed against and a debugging aid, so it carries no harness at all:
``-serial stdio`` (QEMU writes the guest's serial port straight to our stdout), no QMP, a stdlib HTTP server
and a UDP echo socket on 127.0.0.1 (the host services of docs/protocol.md), and QEMU's exit status as
ours.  The argv comes from the plugin's own ``qemu.argv.build_argv`` so both run the same device contract.
"""

from __future__ import annotations

import hashlib
import http.server
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_aero_virtio.config import (
    DEFAULT_HTTP_PATH,
    DEFAULT_HTTP_PORT,
    DEFAULT_UDP_PORT,
    AudioBackend,
    QemuCommand,
    RunOptions,
    VmConfig,
)
from pytest_aero_virtio.qemu.argv import RuntimePaths, build_argv, format_argv, prepare_overlay
from pytest_aero_virtio.qemu.caps import Caps, probe_cached

LARGE_SIZE = 1 << 20
UPLOAD_SHA256 = "fbbab289f7f94b25736c58be46a994c441fd02552cc6022352e3d86d2fab7c83"


def large_body() -> bytes:
    """The 1 MiB download body: byte i is i % 256 (docs/protocol.md, host services)."""
    return bytes(range(256)) * (LARGE_SIZE // 256)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def guest_args(
    http_port: int,
    udp_port: int,
    http_path: str = DEFAULT_HTTP_PATH,
    no_capture: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """The fw_cfg ``opt/aero/args`` string: where the host services are, whether to skip capture, and any
    ``extra`` guest arguments (``--noise-line-bytes=N`` for the serial-cost benchmark).

    QEMU's wav audio backend records playback but has no input (capture fails with EIO in the guest), so a
    run with ``-audiodev wav`` tells the guest ``--disable-snd-capture``.
    """
    args = [f"--http-url=http://10.0.2.2:{http_port}{http_path}", f"--udp-port={udp_port}"]
    args += ["--disable-snd-capture"] if no_capture else []
    return shlex.join([*args, *extra])


def _handler(path: str, body: bytes, etag: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet: stdout is the serial port
            pass

        def _reply(self, code: int, data: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.close_connection = True

        def do_GET(self) -> None:
            if self.path == path:
                self._reply(200, b"OK\n", "text/plain")
            elif self.path == path + "-large":
                self._reply(200, body, "application/octet-stream", {"ETag": f'"{etag}"'})
            else:
                self._reply(404, b"NOT_FOUND\n", "text/plain")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if 0 < n <= 2 * LARGE_SIZE else b""
            digest = hashlib.sha256(data).hexdigest()
            if self.path == path + "-large" and digest == UPLOAD_SHA256:
                self._reply(200, b"OK\n", "text/plain", {"X-Aero-Sha256": digest})
            else:
                self._reply(400, b"BAD_UPLOAD\n", "text/plain", {"X-Aero-Sha256": digest})

    return Handler


@dataclass
class Services:
    """Plain HTTP + UDP echo on 127.0.0.1, each in a daemon thread; ``close()`` stops both."""

    http: http.server.ThreadingHTTPServer
    udp: socket.socket

    @property
    def http_port(self) -> int:
        return int(self.http.server_address[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.udp.close()


def start_services(http_port: int, udp_port: int, http_path: str = DEFAULT_HTTP_PATH) -> Services:
    """Bind both services (port 0 = any free port); an occupied port raises OSError naming it."""
    body = large_body()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", http_port), _handler(http_path, body, f"{fnv1a64(body):016x}")
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="bare-http", daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", udp_port))

    def echo() -> None:
        while True:
            try:
                data, addr = udp.recvfrom(65535)
            except OSError:
                return
            if len(data) <= 2048:
                udp.sendto(data, addr)

    threading.Thread(target=echo, name="bare-udp", daemon=True).start()
    return Services(server, udp)


def bare_argv(
    qemu: Path,
    disk: Path,
    caps: Caps,
    overlay: Path,
    http_port: int = DEFAULT_HTTP_PORT,
    udp_port: int = DEFAULT_UDP_PORT,
    snd: bool | None = None,
    wav: Path | None = None,
    memory_mib: int = 512,
    audio: AudioBackend = "wav",
    extra_guest_args: Sequence[str] = (),
) -> list[str]:
    """The plain command line: default devices, sound if the QEMU has it (``snd=None``), serial stdio."""
    with_snd = caps.has_device("virtio-sound-pci") if snd is None else snd
    opts = RunOptions(
        qemu=QemuCommand(qemu),
        image=disk,
        memory_mib=memory_mib,
        accel="tcg",
        http_port=http_port,
        udp_port=udp_port,
    )
    vm = VmConfig(snd=with_snd, audio=audio)
    rt = RuntimePaths(
        serial="stdio",
        qmp=None,
        wav_path=(wav or overlay.with_name("bare.wav")) if with_snd and audio == "wav" else None,
        guest_args=guest_args(http_port, udp_port, no_capture=with_snd and audio == "wav", extra=extra_guest_args),
        accel="tcg",
        image_format="raw",
        overlay=overlay,
    )
    return build_argv(opts, vm, caps, rt)


def run_bare(
    qemu: Path,
    disk: Path,
    run: bool,
    http_port: int = DEFAULT_HTTP_PORT,
    udp_port: int = DEFAULT_UDP_PORT,
    snd: bool | None = None,
    audio: AudioBackend = "wav",
    extra_guest_args: Sequence[str] = (),
) -> int:
    """Print the command line; with ``run``, serve, boot, stream the serial port and return QEMU's status.

    Printing alone leaves the overlay (and wav) in a fresh temp dir so the printed command works when pasted.
    """
    caps = probe_cached(QemuCommand(qemu))
    tmp = Path(tempfile.mkdtemp(prefix="aero-bare-"))
    overlay = tmp / "overlay.qcow2"
    prepare_overlay(disk, overlay)
    argv = bare_argv(
        qemu, disk, caps, overlay, http_port, udp_port, snd, audio=audio, extra_guest_args=extra_guest_args
    )
    if not run:
        print(format_argv(argv))
        return 0
    print(f"aero-virtio-refenv: {format_argv(argv)}", file=sys.stderr, flush=True)
    services = start_services(http_port, udp_port)
    try:
        sys.stdout.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # same session: Ctrl-C reaches QEMU too
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
    finally:
        services.close()
        overlay.unlink(missing_ok=True)
        wav = tmp / "bare.wav"
        if wav.is_file():
            print(f"aero-virtio-refenv: guest audio recorded in {wav}", file=sys.stderr)
        else:
            tmp.rmdir()
