"""The guest's first serial port, drained on the VM loop: raw bytes to serial.log, complete lines onward.

The console is always drained, whatever the tests are doing, so QEMU never stalls on a full socket and a
guest that floods the port cannot grow the harness's memory (lines are cut at ``MAX_LINE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import IO

from ..markers import LineSplitter

__all__ = ["SerialReader"]

LOG = logging.getLogger(__name__)

_READ_CHUNK = 65536
#: After a read that did not fill the buffer, wait this long before the next one. QEMU sends the console one
#: byte per ``send()`` (its UART emulation); reading as each byte arrives costs a wakeup, an epoll round trip and
#: the Python loop per byte - 1.6x the CPU of a bare QEMU on a guest that prints 1 MiB. Letting the bytes
#: gather for 2 ms reads kilobytes per wakeup and adds at most 2 ms to a marker's latency.
COALESCE_S = 0.002


class SerialReader:
    """Reads one console socket until EOF.

    ``on_line`` gets every complete line (the marker stream, the live follower); it runs on the loop and must
    not block. :attr:`last_output` is the ``time.monotonic()`` of the last byte, for the silence watch.
    """

    def __init__(self, log: IO[bytes], on_line: Callable[[str], None]) -> None:
        self._log = log
        self._on_line = on_line
        self._splitter = LineSplitter()
        self.bytes_seen = 0
        self.last_output: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._run(sock), name=f"{name}-serial")

    async def _run(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(sock, _READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                break
            self.bytes_seen += len(data)
            self.last_output = time.monotonic()
            if not self._log.closed:
                self._log.write(data)
                self._log.flush()
            self._emit(self._splitter.feed(data))
            if len(data) < _READ_CHUNK:
                await asyncio.sleep(COALESCE_S)
        self._emit(self._splitter.flush())

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            try:
                self._on_line(line)
            except Exception:  # a consumer bug must not stop the console from draining
                LOG.exception("serial line consumer failed on %r", line)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for EOF (QEMU's end closes when it exits), so the last lines are not lost."""
        task = self._task
        if task is None or task.done():
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout)

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
