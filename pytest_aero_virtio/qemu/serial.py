"""The guest's first serial port, drained on the VM loop: raw bytes to serial.log, complete lines onward.

The console is always drained, whatever the tests are doing, so QEMU never stalls on a full socket and a
guest that floods the port cannot grow the harness's memory (lines are cut at ``MAX_LINE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import IO

from ..markers import LineSplitter

__all__ = ["ConsolePipes", "SerialReader"]

LOG = logging.getLogger(__name__)

_READ_CHUNK = 65536
#: QEMU's UART emulation writes the console one byte per ``write()``. Reading as each byte arrives costs a
#: wakeup and the Python loop per byte (1.6x the CPU of a bare QEMU on a guest that prints 1 MiB), so after a
#: short read the reader lets bytes gather in the pipe for a moment: kilobytes per wakeup, at most this much
#: added to a marker's latency. A pipe (unlike a unix socket, which keeps every one-byte write as a buffer of
#: its own, about 768 bytes of budget each) merges the bytes into its pages, so QEMU never waits on us.
COALESCE_S = 0.002
#: The console pipe's size: ~3 s of QEMU's serial output under TCG (about 300 KB/s), never a stall.
PIPE_BYTES = 1 << 20


class ConsolePipes:
    """QEMU's console: its stdout (a pipe as large as the system allows, up to 1 MiB) and its stdin.

    ``qemu_stdin``/``qemu_stdout`` go to QEMU and are closed here once it holds its copies; ``output`` is read
    by the :class:`SerialReader` (which closes it at EOF); ``input`` (non-blocking) takes what a person types
    into the attach point's console.
    """

    def __init__(self) -> None:
        self.output, self.qemu_stdout = os.pipe()
        for size in (PIPE_BYTES, 256 << 10):
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.output, fcntl.F_SETPIPE_SZ, size)
                break
        self.qemu_stdin, self.input = os.pipe()
        os.set_blocking(self.input, False)

    def close_qemu_ends(self) -> None:
        """QEMU holds its own copies: ours must go, or EOF would never be seen when QEMU exits."""
        for fd in (self.qemu_stdin, self.qemu_stdout):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Close what is still ours to close (at stop; the reader closed ``output`` at EOF). Once only: a second
        ``os.close`` of the number could close a file another thread has opened since."""
        if self.input >= 0:
            with contextlib.suppress(OSError):
                os.close(self.input)
            self.input = -1


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
        #: Called with every chunk of raw bytes, on the loop (the attach point relays them to a person).
        self.taps: list[Callable[[bytes], None]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, fd: int, name: str) -> None:
        """Drain the console pipe ``fd`` (the reader owns it and closes it at EOF) on the running loop."""
        os.set_blocking(fd, False)
        self._task = asyncio.get_running_loop().create_task(self._run(fd), name=f"{name}-serial")

    @staticmethod
    async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _read(self, loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
        while True:
            try:
                return os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                await self._readable(loop, fd)
            except OSError:
                return b""

    async def _run(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._pump(loop, fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _pump(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        while True:
            data = await self._read(loop, fd)
            if not data:
                break
            self.bytes_seen += len(data)
            self.last_output = time.monotonic()
            if not self._log.closed:
                self._log.write(data)
                self._log.flush()
            for tap in list(self.taps):
                tap(data)
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
