"""FNV-1a 64, the protocol's byte pattern, the WAV tone, PCM statistics."""

from __future__ import annotations

import io
import itertools
import math
import struct
import wave

from aero_selftest.pure import (
    LARGE_FNV1A64,
    LARGE_SIZE,
    fnv1a64,
    mib_per_s,
    pattern_bytes,
    pcm_stats,
    tone_pcm,
    wav_bytes,
)


def test_fnv1a64_known_vectors() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_fnv1a64_chunked_equals_whole() -> None:
    data = pattern_bytes(1000)
    assert fnv1a64(data[500:], fnv1a64(data[:500])) == fnv1a64(data)


def test_large_pattern_hash_is_the_protocol_constant() -> None:
    body = pattern_bytes(LARGE_SIZE)
    assert len(body) == LARGE_SIZE
    assert body[:3] == b"\x00\x01\x02" and body[256] == 0 and body[-1] == 255
    assert fnv1a64(body) == LARGE_FNV1A64 == 0x8505AE4435522325


def test_pattern_with_offset() -> None:
    assert pattern_bytes(3, start=255) == b"\xff\x00\x01"


def test_mib_per_s() -> None:
    assert mib_per_s(2 * 1024 * 1024, 2.0) == 1.0
    assert mib_per_s(1, 0.0) > 0


def _dominant_hz(samples: list[int], rate: int) -> float:
    """Zero-crossing estimate (enough for a pure tone)."""
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    return crossings * rate / len(samples)


def test_tone_is_a_440_hz_stereo_s16_wav() -> None:
    rate, frames = 48000, 4800
    pcm = tone_pcm(440.0, rate, 2, frames)
    assert len(pcm) == frames * 2 * 2
    data = wav_bytes(pcm, rate, 2)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 48000, frames)
        raw = w.readframes(frames)
    values = struct.unpack(f"<{frames * 2}h", raw)
    left, right = list(values[0::2]), list(values[1::2])
    assert left == right
    assert math.isclose(_dominant_hz(left, rate), 440.0, rel_tol=0.03)
    assert 0.4 * 32767 < max(left) <= 0.5 * 32767 + 1
    assert abs(left[0]) < 100 and abs(left[-1]) < 100  # faded in and out


def test_pcm_stats() -> None:
    assert pcm_stats(b"") == (0, 0, 0)
    assert pcm_stats(bytes(400)) == (200, 0, 0)
    pcm = struct.pack("<4h", 0, 1000, -2000, 10)
    assert pcm_stats(pcm) == (4, 2, 2000)
