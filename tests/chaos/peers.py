"""A hostile but fair local peer of the host services: path traversals, a 100 MB upload, 1,000 concurrent
connections and garbage datagrams, on loopback only, in bounded rounds that stop by themselves.

It learns the services' ports from the VM's ``http.log`` (its ``START`` line) and records what it got back, so
a test can check both that the services answered it sanely and that the guest's own checks still passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TRAVERSALS", "Attack", "ports_from_http_log"]

LOOPBACK = "127.0.0.1"
TRAVERSALS = (
    "/../../../../etc/passwd",
    "/aero-virtio-selftest/../../../etc/shadow",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/aero-virtio-selftest-large/..%2f..%2f..%2fetc%2fpasswd",
    "//etc/passwd",
    "/..\\..\\..\\windows\\win.ini",
    "/aero-virtio-selftest%00.txt",
    "/" + "A" * 20000,
)


def ports_from_http_log(log: Path) -> tuple[int, int] | None:
    """(http, udp) from the services' START line, or None before it is written."""
    with contextlib.suppress(OSError):
        m = re.search(r"START http=127\.0\.0\.1:(\d+)\S* udp=127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def _status(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else 0


def _request(port: int, head: bytes, body_chunks: int = 0, chunk: bytes = b"", timeout: float = 30.0) -> int:
    """One raw HTTP exchange; the response status (0: the server closed without one)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        try:
            s.sendall(head)
            for _ in range(body_chunks):
                s.sendall(chunk)
        except OSError:
            pass  # the server may answer and close before a body it does not want
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < 65536:
                part = s.recv(65536)
                if not part:
                    break
                data += part
    return _status(data)


@dataclass
class Attack:
    """Rounds of abuse against one VM's services until :meth:`stop` or ``max_s``."""

    http_port: int
    udp_port: int
    max_s: float = 120.0
    statuses: Counter[str] = field(default_factory=Counter)
    echoes: int = 0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-peer", daemon=True)

    def start(self) -> Attack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.max_s + 60)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        steps = (self.traversals, self.concurrent, self.garbage_datagrams, self.big_upload)
        while not self._stop.is_set() and time.monotonic() < deadline:
            for step in steps:
                if self._stop.is_set():
                    return
                try:
                    step()
                except Exception as exc:  # recorded: the test decides whether it matters
                    self.errors.append(f"{step.__name__}: {type(exc).__name__}: {exc}")
            self.rounds += 1

    # -- the steps ------------------------------------------------------------------------------------------
    def traversals(self) -> None:
        for path in TRAVERSALS:
            head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            self.statuses[f"traversal {_request(self.http_port, head)}"] += 1
        bomb = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"j" * 8000) for i in range(64))
        head = b"GET /aero-virtio-selftest HTTP/1.1\r\nHost: x\r\n" + bomb + b"\r\n"
        self.statuses[f"header-bomb {_request(self.http_port, head)}"] += 1
        garbage = _request(self.http_port, os.urandom(4096) + b"\r\n\r\n")
        self.statuses[f"garbage {garbage}"] += 1

    def big_upload(self, mib: int = 100) -> None:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        head = (
            "POST /aero-virtio-selftest-large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {mib << 20}\r\n\r\n"
        ).encode()
        self.statuses[f"upload {_request(self.http_port, head, mib, chunk, timeout=120)}"] += 1

    def concurrent(self, n: int = 1000) -> None:
        async def one() -> int:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, self.http_port), 30)
            except (TimeoutError, OSError):
                return -1
            try:
                writer.write(b"GET /aero-virtio-selftest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return _status(await asyncio.wait_for(reader.read(4096), 30))
            except (TimeoutError, OSError):
                return -1
            finally:
                writer.close()

        async def many() -> list[int]:
            return list(await asyncio.gather(*(one() for _ in range(n))))

        for status in asyncio.run(many()):
            self.statuses[f"concurrent {status}"] += 1

    def garbage_datagrams(self, n: int = 2000) -> None:
        rng = random.Random(n)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for i in range(n):
                size = rng.choice((0, 1, 17, 1400, 2048, 2049, 4096, 65000))
                with contextlib.suppress(BlockingIOError, OSError):
                    s.sendto(os.urandom(size), (LOOPBACK, self.udp_port))
                if i % 50 == 0:
                    time.sleep(0.001)
            time.sleep(0.2)
            with contextlib.suppress(BlockingIOError, OSError):
                while True:
                    s.recvfrom(70000)
                    self.echoes += 1
