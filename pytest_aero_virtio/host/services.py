"""Host services the guest reaches through QEMU user networking (docs/protocol.md).

The guest's net checks talk to ``10.0.2.2:<port>``, which QEMU's slirp forwards to the host's loopback, so
both services bind to 127.0.0.1 only: nothing outside this machine can reach them.

* HTTP (aiohttp): ``<path>`` answers ``OK\\n``; ``<path>-large`` serves and accepts a 1 MiB pattern whose
  FNV-1a 64 (download ETag) and SHA-256 (upload check) the guest verifies; everything else is 404.
  Every response says ``Cache-Control: no-store`` and ``Connection: close``, because the guest's clients
  (WinHTTP on Windows, wget/urllib on the reference guest) must never be served from a cache or reuse a
  connection across checks.
* UDP echo (asyncio): every datagram of at most 2048 bytes is sent back unchanged; larger ones are dropped
  (the guest sends 32 and 1400 bytes; an oversized datagram is a guest bug that must not be masked).

Both services append one line per request/datagram to ``log_path`` (an artifact of the VM), and keep a
summary in :attr:`HostServices.requests` / :attr:`HostServices.datagrams` so tests can assert on traffic.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TextIO, cast

from aiohttp import web

from pytest_aero_virtio.errors import PORT_IN_USE, AeroConfigError

__all__ = [
    "LARGE_SIZE",
    "UDP_MAX_DATAGRAM",
    "HostServices",
    "HttpRecord",
    "UdpRecord",
    "fnv1a64",
    "large_etag",
    "large_payload",
    "large_sha256",
]

LOOPBACK = "127.0.0.1"
#: Size of the ``-large`` download and upload: 1 MiB.
LARGE_SIZE = 1024 * 1024
#: Datagrams longer than this are dropped, not echoed.
UDP_MAX_DATAGRAM = 2048
#: Header carrying the SHA-256 the server computed over an upload (so a guest or a log can see the mismatch).
SHA256_HEADER = "X-Aero-Sha256"

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64-bit hash: the checksum the guest computes over the large download."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


@cache
def large_payload() -> bytes:
    """The 1 MiB pattern ``i % 256`` (built once; immutable bytes are shared by every response)."""
    return bytes(range(256)) * (LARGE_SIZE // 256)


@cache
def large_etag() -> str:
    """The quoted ETag of the large payload, computed (not hard-coded) so a wrong pattern shows up."""
    return f'"{fnv1a64(large_payload()):016x}"'


@cache
def large_sha256() -> str:
    """The hex SHA-256 an upload must have to be accepted."""
    return hashlib.sha256(large_payload()).hexdigest()


@dataclass(frozen=True)
class HttpRecord:
    """One served HTTP request (what the per-request log line says)."""

    method: str
    path: str
    status: int
    bytes_in: int
    bytes_out: int
    ms: float


@dataclass(frozen=True)
class UdpRecord:
    """One received datagram and whether it was echoed."""

    peer: str
    size: int
    echoed: bool


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _UdpEcho(asyncio.DatagramProtocol):
    """Echo each datagram unchanged; drop oversized ones (logged, never echoed)."""

    def __init__(self, on_datagram: Callable[[UdpRecord], None]) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        echoed = len(data) <= UDP_MAX_DATAGRAM
        if echoed and self._transport is not None:
            self._transport.sendto(data, addr)
        self._on_datagram(UdpRecord(peer=f"{addr[0]}:{addr[1]}", size=len(data), echoed=echoed))


class HostServices:
    """The HTTP server and the UDP echo of one VM, on loopback, started and stopped on the VM's loop.

    Port 0 asks the kernel for a free port (parallel runs, xdist workers); :attr:`http_port` and
    :attr:`udp_port` then report the real ports, which the plugin passes to the guest. A fixed port that is
    taken raises :class:`AeroConfigError` (token ``PORT_IN_USE``) naming the port, the option and the fix,
    instead of letting the guest time out later.
    """

    def __init__(
        self,
        http_port: int = 18080,
        udp_port: int = 18081,
        http_path: str = "/aero-virtio-selftest",
        log_path: Path | None = None,
    ) -> None:
        if not http_path.startswith("/"):
            raise AeroConfigError(
                f"HTTP path {http_path!r} does not start with '/'",
                fix=f"pass --vm-http-path=/{http_path.lstrip('/')}",
            )
        for option, port in (("--vm-http-port", http_port), ("--vm-udp-port", udp_port)):
            if not 0 <= port <= 65535:
                raise AeroConfigError(f"{option}={port} is not a TCP/UDP port", fix=f"pass {option}=0..65535")
        self._want_http = http_port
        self._want_udp = udp_port
        self.http_path = http_path
        self.log_path = log_path
        self.requests: list[HttpRecord] = []
        self.datagrams: list[UdpRecord] = []
        self._runner: web.AppRunner | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._http_port = 0
        self._udp_port = 0
        self._log: TextIO | None = None

    # --- public state ------------------------------------------------------------------------------------
    @property
    def http_port(self) -> int:
        """The port the HTTP server listens on (the requested one, or the ephemeral one after start)."""
        return self._http_port or self._want_http

    @property
    def udp_port(self) -> int:
        """The port the UDP echo listens on (the requested one, or the ephemeral one after start)."""
        return self._udp_port or self._want_udp

    @property
    def http_url(self) -> str:
        """The URL as the guest sees it (host side of QEMU user networking is 10.0.2.2)."""
        return f"http://10.0.2.2:{self.http_port}{self.http_path}"

    # --- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind both services; on any failure nothing stays bound."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8", buffering=1)
        try:
            await self._start_http()
            await self._start_udp()
        except BaseException:
            await self.stop()
            raise
        self._write_log(
            f"{_now()} START http=127.0.0.1:{self._http_port}{self.http_path} udp=127.0.0.1:{self._udp_port}"
        )

    async def stop(self) -> None:
        """Close both services (idempotent)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._log is not None:
            self._write_log(f"{_now()} STOP requests={len(self.requests)} datagrams={len(self.datagrams)}")
            self._log.close()
            self._log = None

    async def __aenter__(self) -> HostServices:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- HTTP --------------------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, LOOPBACK, self._want_http)
        try:
            await site.start()
        except OSError as exc:
            raise _port_error("HTTP", "--vm-http-port", self._want_http, exc) from exc
        self._http_port = int(runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        handler = self._route(request.method, request.path)
        response, bytes_in = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Connection"] = "close"
        response.force_close()
        bytes_out = 0 if request.method == "HEAD" else (response.content_length or 0)
        record = HttpRecord(
            method=request.method,
            path=request.path,
            status=response.status,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            ms=round((time.monotonic() - started) * 1000, 2),
        )
        self.requests.append(record)
        self._write_log(
            f"{_now()} HTTP {record.method} {record.path} {record.status} "
            f"bytes_in={record.bytes_in} bytes_out={record.bytes_out} ms={record.ms} "
            f"peer={request.remote}"
        )
        return response

    def _route(self, method: str, path: str) -> Callable[[web.Request], Awaitable[tuple[web.Response, int]]]:
        """Pick the handler for (method, path); pure so the routing table is obvious and testable."""
        large = f"{self.http_path}-large"
        if path == self.http_path and method in ("GET", "HEAD"):
            return _small
        if path == large and method in ("GET", "HEAD"):
            return _large_get
        if path == large and method == "POST":
            return _large_post
        return _not_found

    # --- UDP ---------------------------------------------------------------------------------------------
    async def _start_udp(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpEcho(self._on_datagram), local_addr=(LOOPBACK, self._want_udp)
            )
        except OSError as exc:
            raise _port_error("UDP echo", "--vm-udp-port", self._want_udp, exc) from exc
        self._udp = transport
        self._udp_port = int(transport.get_extra_info("sockname")[1])

    def _on_datagram(self, record: UdpRecord) -> None:
        self.datagrams.append(record)
        action = "echoed" if record.echoed else f"dropped (over {UDP_MAX_DATAGRAM} bytes)"
        self._write_log(f"{_now()} UDP {record.peer} bytes={record.size} {action}")

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")


def _text(status: int, body: str, **headers: str) -> web.Response:
    return web.Response(status=status, body=body.encode(), content_type="text/plain", headers=headers)


async def _small(request: web.Request) -> tuple[web.Response, int]:
    return _text(200, "OK\n"), 0


async def _large_get(request: web.Request) -> tuple[web.Response, int]:
    headers = {"ETag": large_etag()}
    return web.Response(body=large_payload(), content_type="application/octet-stream", headers=headers), 0


async def _large_post(request: web.Request) -> tuple[web.Response, int]:
    """Stream the upload through SHA-256 (no size limit, no buffering), then compare with the pattern's."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    got = digest.hexdigest()
    ok = size == LARGE_SIZE and got == large_sha256()
    headers = {SHA256_HEADER: got, "X-Aero-Bytes": str(size)}
    return (_text(200, "OK\n", **headers) if ok else _text(400, "BAD_UPLOAD\n", **headers)), size


async def _not_found(request: web.Request) -> tuple[web.Response, int]:
    return _text(404, "NOT_FOUND\n"), 0


def _port_error(service: str, option: str, port: int, exc: OSError) -> AeroConfigError:
    if exc.errno == errno.EADDRINUSE:
        return AeroConfigError(
            f"the {service} port 127.0.0.1:{port} is already in use (another run or program listens there)",
            fix=f"stop the other program, or pass {option}=<free port> ({option}=0 picks a free port "
            "when the guest learns its ports through fw_cfg)",
            token=PORT_IN_USE,
        )
    return AeroConfigError(
        f"cannot bind the {service} service to 127.0.0.1:{port}: {exc}",
        fix=f"pass {option}=<a port you may bind> (0 picks a free port)",
    )
