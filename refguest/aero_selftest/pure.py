"""Small pure helpers shared by the checks: FNV-1a 64, the test tone, throughput figures."""

from __future__ import annotations

import math
import struct

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1

LARGE_SIZE = 1024 * 1024
LARGE_FNV1A64 = 0x8505AE4435522325  # FNV-1a 64 of bytes i % 256, i < 1 MiB (docs/protocol.md)


def fnv1a64(data: bytes, h: int = FNV64_OFFSET) -> int:
    """FNV-1a 64 of ``data``, continuing from ``h`` (so a body can be hashed chunk by chunk)."""
    for b in data:
        h = ((h ^ b) * FNV64_PRIME) & _MASK64
    return h


def pattern_bytes(n: int, start: int = 0) -> bytes:
    """``n`` bytes of the protocol's pattern ``i % 256``, starting at offset ``start``."""
    first = bytes((start + i) % 256 for i in range(min(n, 256)))
    if n <= 256:
        return first
    return (first * (n // 256 + 1))[:n]


def mib_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MiB/s (the unit of every ``*_mbps`` field), guarded against a zero duration."""
    return nbytes / (1024 * 1024) / max(seconds, 1e-6)


def tone_pcm(freq_hz: float, rate: int, channels: int, frames: int, amplitude: float = 0.5) -> bytes:
    """Signed 16-bit little-endian interleaved PCM of a sine tone (same sample on every channel).

    A 10 ms fade in and out avoids clicks; the host checks the dominant frequency of what it captures.
    """
    peak = int(32767 * amplitude)
    fade = max(1, rate // 100)
    samples = []
    step = 2 * math.pi * freq_hz / rate
    for i in range(frames):
        gain = min(1.0, i / fade, (frames - 1 - i) / fade) if frames > 2 * fade else 1.0
        v = int(peak * gain * math.sin(step * i))
        samples.extend([v] * channels)
    return struct.pack(f"<{len(samples)}h", *samples)


def wav_bytes(pcm: bytes, rate: int, channels: int, bits: int = 16) -> bytes:
    """A canonical 44-byte-header RIFF/WAVE file around ``pcm``."""
    block_align = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block_align, block_align, bits)
    return header + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm


def pcm_stats(pcm: bytes, threshold: int = 64) -> tuple[int, int, int]:
    """(samples, non-silent samples, peak) of S16_LE PCM; a sample is non-silent when |v| > threshold."""
    n = len(pcm) // 2
    if n == 0:
        return 0, 0, 0
    values = struct.unpack(f"<{n}h", pcm[: n * 2])
    loud = sum(1 for v in values if v > threshold or v < -threshold)
    peak = max(abs(v) for v in values)
    return n, loud, peak


NOISE_FIRST = 0x21  # '!': the line is printable ASCII without spaces, so no marker can appear inside it
NOISE_SPAN = 0x7E - NOISE_FIRST + 1


def noise_line(n: int) -> bytes:
    """``n`` printable bytes and one LF: a single line of ``n`` bytes (``--noise-line-bytes``)."""
    if n <= 0:
        return b""
    cycle = bytes(range(NOISE_FIRST, NOISE_FIRST + NOISE_SPAN))
    return (cycle * (n // NOISE_SPAN + 1))[:n] + b"\n"


def noise_binary(n: int) -> bytes:
    """``n`` bytes cycling through all 256 values (NUL, CR, LF, 0xFF, ...) and a closing LF, so the marker
    after the burst starts on a line of its own (``--noise-binary-bytes``)."""
    if n <= 0:
        return b""
    return pattern_bytes(n) + b"\n"
