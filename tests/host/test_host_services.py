"""HostServices against real clients: aiohttp's client, raw TCP sockets and UDP sockets, on port 0."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest

from pytest_aero_virtio.errors import PORT_IN_USE, AeroConfigError
from pytest_aero_virtio.host.services import (
    LARGE_SIZE,
    SHA256_HEADER,
    HostServices,
    fnv1a64,
    large_etag,
    large_payload,
    large_sha256,
)

PATH = "/aero-virtio-selftest"


def run_with(
    body: Callable[[HostServices], Awaitable[None]], log_path: Path | None = None, path: str = PATH
) -> HostServices:
    """Start services on ephemeral ports, run ``body`` against them, stop them."""

    async def main() -> HostServices:
        async with HostServices(0, 0, path, log_path) as svc:
            await body(svc)
        return svc

    return asyncio.run(main())


def test_payload_constants_match_protocol() -> None:
    assert len(large_payload()) == LARGE_SIZE
    assert large_payload()[:3] == b"\x00\x01\x02" and large_payload()[256] == 0
    assert large_etag() == '"8505ae4435522325"'
    assert large_sha256() == "fbbab289f7f94b25736c58be46a994c441fd02552cc6022352e3d86d2fab7c83"
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C  # published FNV-1a 64 test vector


def test_http_routes_and_headers(tmp_path: Path) -> None:
    seen: dict[str, tuple[int, bytes, Mapping[str, str]]] = {}

    async def body(svc: HostServices) -> None:
        assert svc.http_port != 0
        base = f"http://127.0.0.1:{svc.http_port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + PATH) as r:
                seen["small"] = (r.status, await r.read(), r.headers.copy())
            async with s.head(base + PATH) as r:
                seen["small_head"] = (r.status, await r.read(), r.headers.copy())
            async with s.get(base + PATH + "-large") as r:
                seen["large"] = (r.status, await r.read(), r.headers.copy())
            async with s.head(base + PATH + "-large") as r:
                seen["large_head"] = (r.status, await r.read(), r.headers.copy())
            async with s.get(base + "/other") as r:
                seen["other"] = (r.status, await r.read(), r.headers.copy())
            async with s.post(base + PATH) as r:
                seen["post_small"] = (r.status, await r.read(), r.headers.copy())
            async with s.get(base + PATH + "-largeX") as r:
                seen["near"] = (r.status, await r.read(), r.headers.copy())

    log = tmp_path / "sub" / "http.log"
    svc = run_with(body, log)

    status, data, headers = seen["small"]
    assert (status, data) == (200, b"OK\n")
    assert headers["Content-Type"].startswith("text/plain")
    status, data, headers = seen["small_head"]
    assert (status, data, headers["Content-Length"]) == (200, b"", "3")
    status, data, headers = seen["large"]
    assert status == 200 and data == large_payload()
    assert headers["ETag"] == '"8505ae4435522325"'
    assert headers["Content-Type"] == "application/octet-stream"
    status, data, headers = seen["large_head"]
    assert (status, data, headers["Content-Length"]) == (200, b"", str(LARGE_SIZE))
    assert headers["ETag"] == '"8505ae4435522325"'
    for key in ("other", "post_small", "near"):
        status, data, headers = seen[key]
        assert (status, data) == (404, b"NOT_FOUND\n"), key
    for key, (_, _, headers) in seen.items():
        assert headers["Cache-Control"] == "no-store", key
        assert headers["Connection"].lower() == "close", key

    assert [(r.method, r.path, r.status) for r in svc.requests] == [
        ("GET", PATH, 200),
        ("HEAD", PATH, 200),
        ("GET", PATH + "-large", 200),
        ("HEAD", PATH + "-large", 200),
        ("GET", "/other", 404),
        ("POST", PATH, 404),
        ("GET", PATH + "-largeX", 404),
    ]
    assert svc.requests[2].bytes_out == LARGE_SIZE and svc.requests[3].bytes_out == 0
    lines = log.read_text().splitlines()
    http_lines = [line for line in lines if " HTTP " in line]
    assert len(http_lines) == 7
    assert f"HTTP GET {PATH}-large 200 bytes_in=0 bytes_out={LARGE_SIZE} ms=" in http_lines[2]
    assert "STOP requests=7" in lines[-1]


def test_custom_path() -> None:
    statuses: list[int] = []

    async def body(svc: HostServices) -> None:
        async with aiohttp.ClientSession() as s:
            for p in ("/x/y", "/x/y-large", PATH):
                async with s.head(f"http://127.0.0.1:{svc.http_port}{p}") as r:
                    statuses.append(r.status)

    run_with(body, path="/x/y")
    assert statuses == [200, 200, 404]


@pytest.mark.parametrize(
    ("payload", "status", "reply"),
    [
        (large_payload(), 200, b"OK\n"),
        (large_payload()[:-1], 400, b"BAD_UPLOAD\n"),
        (large_payload() + b"\x00", 400, b"BAD_UPLOAD\n"),
        (bytes(LARGE_SIZE), 400, b"BAD_UPLOAD\n"),
        (b"", 400, b"BAD_UPLOAD\n"),
    ],
    ids=["exact", "short", "long", "zeros", "empty"],
)
def test_upload(payload: bytes, status: int, reply: bytes) -> None:
    got: list[object] = []

    async def body(svc: HostServices) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{svc.http_port}{PATH}-large", data=payload) as r,
        ):
            got.extend([r.status, await r.read(), r.headers[SHA256_HEADER], r.headers["Connection"]])

    svc = run_with(body)
    assert got == [status, reply, hashlib.sha256(payload).hexdigest(), "close"]
    assert svc.requests[0].bytes_in == len(payload)


async def _raw_exchange(port: int, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send headers, read the interim response, then send the body and read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.write(body)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)  # Connection: close -> the server closes
    writer.close()
    return interim, rest


def test_expect_100_continue_raw_socket() -> None:
    out: list[tuple[bytes, bytes]] = []

    async def body(svc: HostServices) -> None:
        head = (
            f"POST {PATH}-large HTTP/1.1\r\nHost: 10.0.2.2\r\nContent-Length: {LARGE_SIZE}\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        out.append(await _raw_exchange(svc.http_port, head, large_payload()))

    run_with(body)
    interim, rest = out[0]
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    status_line, _, _ = rest.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert rest.endswith(b"\r\n\r\nOK\n")
    assert b"Connection: close" in rest and b"Cache-Control: no-store" in rest
    assert f"{SHA256_HEADER}: {large_sha256()}".encode() in rest


def test_raw_http10_get_is_closed_by_server() -> None:
    data: list[bytes] = []

    async def body(svc: HostServices) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.http_port)
        writer.write(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data.append(await asyncio.wait_for(reader.read(), 5))  # EOF proves the server closed it
        writer.close()

    run_with(body)
    assert data[0].startswith(b"HTTP/1.1 200 OK\r\n") and data[0].endswith(b"\r\n\r\nOK\n")


def _udp_roundtrip(port: int, payload: bytes, timeout: float) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65536)
        except TimeoutError:
            return None


def test_udp_echo(tmp_path: Path) -> None:
    results: dict[int, bytes | None] = {}

    async def body(svc: HostServices) -> None:
        assert svc.udp_port != 0
        for size in (32, 1400, 2048, 2049, 4000):
            payload = bytes((i * 7) % 256 for i in range(size))
            results[size] = await asyncio.to_thread(_udp_roundtrip, svc.udp_port, payload, 2.0 if size <= 2048 else 0.3)

    log = tmp_path / "svc.log"
    svc = run_with(body, log)
    for size in (32, 1400, 2048):
        assert results[size] == bytes((i * 7) % 256 for i in range(size))
    assert results[2049] is None and results[4000] is None
    assert [(d.size, d.echoed) for d in svc.datagrams] == [
        (32, True),
        (1400, True),
        (2048, True),
        (2049, False),
        (4000, False),
    ]
    text = log.read_text()
    assert "bytes=1400 echoed" in text and "bytes=2049 dropped" in text


def test_bad_path_rejected() -> None:
    with pytest.raises(AeroConfigError) as info:
        HostServices(0, 0, "aero-virtio-selftest")
    assert "/aero-virtio-selftest" in str(info.value)


@pytest.mark.parametrize("which", ["http", "udp"])
def test_port_in_use(which: str) -> None:
    kind = socket.SOCK_STREAM if which == "http" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as blocker:
        blocker.bind(("127.0.0.1", 0))
        if which == "http":
            blocker.listen()
        port = blocker.getsockname()[1]
        svc = HostServices(port if which == "http" else 0, port if which == "udp" else 0)
        with pytest.raises(AeroConfigError) as info:
            asyncio.run(svc.start())
    err = info.value
    option = "--vm-http-port" if which == "http" else "--vm-udp-port"
    assert err.token == PORT_IN_USE
    assert str(port) in err.message and option in (err.fix or "")
    assert str(err).startswith(f"FAIL: {PORT_IN_USE}: ")


def test_port_in_use_releases_the_other_service() -> None:
    """A UDP clash after HTTP bound must not leave the HTTP port bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        udp_port = blocker.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        svc = HostServices(http_port, udp_port)
        with pytest.raises(AeroConfigError):
            asyncio.run(svc.start())
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", http_port))  # would raise EADDRINUSE if the server leaked
