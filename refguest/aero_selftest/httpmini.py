"""A minimal HTTP/1.1 client over a raw socket (pure request/response handling + thin socket I/O).

Raw sockets instead of http.client: the guest must send ``Expect: 100-continue`` and wait for the interim
response (falling back to sending the body after about a second, as curl does), which http.client cannot
do, and importing http.client pulls in the email package, a noticeable start-up cost under TCG.
"""

from __future__ import annotations

import select
import socket
import time
from urllib.parse import urlsplit

from .record import record

CONTINUE_WAIT_S = 1.0


class HttpError(Exception):
    """A transfer failed; ``reason`` is the marker's reason token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@record(frozen=True)
class Url:
    host: str
    port: int
    path: str

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> Url:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}: only http://host[:port]/path is supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Url(parts.hostname, parts.port or 80, path)


def build_request(method: str, url: Url, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"{method} {url.path} HTTP/1.1",
        f"Host: {url.hostport}",
        "User-Agent: aero-selftest",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@record(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


def strip_interim(data: bytes) -> bytes:
    """Drop leading 1xx interim responses (``100 Continue``) once they are complete."""
    while data.startswith(b"HTTP/1.") and data[9:10] == b"1":
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        data = data[end + 4 :]
    return data


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise HttpError("bad_response", "truncated chunked body")
        size = int(body[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def parse_response(data: bytes) -> Response:
    """Parse a complete response read until the server closed the connection."""
    data = strip_interim(data)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise HttpError("bad_response", f"no complete HTTP header in {len(data)} bytes")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError("bad_response", f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) < n:
            raise HttpError("short_body", f"body has {len(body)} of {n} bytes")
        body = body[:n]
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body)


def _connect(url: Url, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((url.host, url.port), timeout=timeout)
    except OSError as exc:
        raise HttpError(
            "http_unreachable",
            f"cannot connect to {url.hostport} ({exc}); is the host serving HTTP on the port in --http-url?",
        ) from exc


def _read_all(sock: socket.socket, deadline: float, initial: bytes = b"") -> bytes:
    chunks = [initial]
    while True:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(256 * 1024)
        except TimeoutError as exc:
            raise HttpError("timeout", "server did not finish the response in time") from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def get(url: Url, timeout: float = 20.0, connect_timeout: float = 5.0) -> Response:
    deadline = time.monotonic() + timeout
    with _connect(url, connect_timeout) as sock:
        sock.sendall(build_request("GET", url))
        return parse_response(_read_all(sock, deadline))


def post_expect_continue(
    url: Url,
    body: bytes,
    content_type: str = "application/octet-stream",
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
) -> tuple[Response, bool]:
    """POST with ``Expect: 100-continue``; returns (response, whether a 100 Continue was received)."""
    deadline = time.monotonic() + timeout
    headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Expect": "100-continue"}
    with _connect(url, connect_timeout) as sock:
        sock.sendall(build_request("POST", url, headers))
        got = b""
        wait_until = time.monotonic() + CONTINUE_WAIT_S
        while b"\r\n\r\n" not in got:
            left = wait_until - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([sock], [], [], left)
            if not r:
                break
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        continued = got.startswith(b"HTTP/1.") and got[9:12] == b"100"
        if got and not continued and b"\r\n\r\n" in got:
            return parse_response(_read_all(sock, deadline, got)), False  # final answer before the body
        sock.sendall(body)
        rest = _read_all(sock, deadline, strip_interim(got))
        return parse_response(rest), continued
