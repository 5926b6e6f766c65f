"""A guest that floods its serial port cannot grow the harness's memory: the console path (SerialReader ->
LineSplitter -> MarkerStream) keeps bounded lines and a bounded tail, whatever arrives. Measured with
tracemalloc on 64 MiB without a newline plus binary junk (the chaos suite does it with a real guest)."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import tracemalloc

import pytest

from pytest_aero_virtio.qemu.serial import SerialReader
from pytest_aero_virtio.stream import MarkerStream

FLOOD = 64 << 20
pytestmark = pytest.mark.slow  # about 7 s: tracemalloc traces every allocation of the 64 MiB


def _send(fd: int) -> None:
    """What QEMU does with the console: write into the pipe the harness reads."""
    block = b"x" * (1 << 20)
    with open(fd, "wb", buffering=0) as out:
        out.write(b"AERO_VIRTIO_SELFTEST|START|version=1\n")
        for _ in range(FLOOD >> 20):
            out.write(block)
        out.write(os.urandom(1 << 20) + b"\nAERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS\n")


class _NullLog(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        return len(b)  # type: ignore[arg-type]


def test_64_mib_without_a_newline_keeps_memory_bounded() -> None:
    stream = MarkerStream()
    ours, theirs = os.pipe()
    sender = threading.Thread(target=_send, args=(theirs,))

    async def drain() -> None:
        reader = SerialReader(_NullLog(), stream.feed_line)  # type: ignore[arg-type]
        reader.start(ours, "flood")
        await reader.drain(120)

    tracemalloc.start()
    try:
        sender.start()
        asyncio.run(drain())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sender.join()
    assert stream.final("virtio-blk") is not None  # the verdict after the flood is still read
    assert peak < 8 << 20, f"peak {peak >> 20} MiB while draining a {FLOOD >> 20} MiB flood"
