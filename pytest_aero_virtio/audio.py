"""Host-side check of what the guest played: level and dominant frequency of QEMU's WAV recording.

The guest's ``virtio-snd|PASS`` only says the driver accepted the buffers; the WAV written by QEMU's ``wav``
audio backend proves sound really came out of the device. Stdlib only (no numpy): a RIFF parser, RMS/peak,
and a small radix-2 FFT over one window of the loudest part for the dominant frequency.

QEMU writes the WAV header's sizes only on a clean exit (QMP ``quit`` or guest poweroff). A file whose data
size is still 0 is analysed anyway (everything after the header is taken as samples) and flagged with
``header_complete=False``, which :func:`check_tone` reports: it means QEMU was killed.
"""

from __future__ import annotations

import array
import cmath
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import WAV_CHECK_FAILED, AeroFailure

__all__ = ["Pcm", "WavFigures", "analyse_bytes", "analyse_wav", "check_tone", "dominant_frequency", "read_pcm"]

FFT_SIZE = 8192
_BLOCK = 1024


@dataclass(frozen=True)
class WavFigures:
    """What a WAV recording holds. Levels are relative to full scale (0..1)."""

    frames: int
    rate: int
    channels: int
    sample_width: int
    rms: float
    peak: float
    dominant_hz: float | None
    #: Seconds of blocks louder than 10 % of the loudest block.
    audible_s: float
    #: False when the RIFF/data sizes were never filled in (QEMU did not exit cleanly).
    header_complete: bool
    #: Set when the file could not be understood at all (not RIFF/WAVE, unsupported encoding, empty).
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate if self.rate else 0.0

    def as_properties(self) -> dict[str, str]:
        """Flat string figures for JUnit properties."""
        return {
            "frames": str(self.frames),
            "rate": str(self.rate),
            "channels": str(self.channels),
            "duration_s": f"{self.duration_s:.3f}",
            "rms": f"{self.rms:.4f}",
            "peak": f"{self.peak:.4f}",
            "dominant_hz": "none" if self.dominant_hz is None else f"{self.dominant_hz:.1f}",
            "audible_s": f"{self.audible_s:.3f}",
            "header_complete": str(self.header_complete).lower(),
            **({"error": self.error} if self.error else {}),
        }


def _broken(error: str, header_complete: bool = False) -> WavFigures:
    return WavFigures(0, 0, 0, 0, 0.0, 0.0, None, 0.0, header_complete, error)


def _samples(raw: bytes, width: int) -> list[float]:
    """Decode little-endian PCM into floats in -1..1 (8-bit is unsigned, others signed)."""
    if width == 1:
        return [(b - 128) / 128.0 for b in raw]
    if width == 2:
        arr = array.array("h")
        full = 32768.0
    elif width == 4:
        arr = array.array("i")
        full = 2147483648.0
    elif width == 3:
        n = len(raw) // 3
        vals = [int.from_bytes(raw[3 * i : 3 * i + 3], "little", signed=True) for i in range(n)]
        return [v / 8388608.0 for v in vals]
    else:
        raise ValueError(f"unsupported sample width {width}")
    usable = len(raw) - len(raw) % arr.itemsize
    arr.frombytes(raw[:usable])
    if sys.byteorder == "big":
        arr.byteswap()
    return [v / full for v in arr]


def _fft(x: list[complex]) -> list[complex]:
    """Iterative radix-2 FFT (len(x) must be a power of two)."""
    n = len(x)
    a = list(x)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    size = 2
    while size <= n:
        half = size // 2
        step = cmath.exp(-2j * math.pi / size)
        twiddles = [step**k for k in range(half)]
        for start in range(0, n, size):
            for k in range(half):
                u = a[start + k]
                v = a[start + k + half] * twiddles[k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        size *= 2
    return a


def dominant_frequency(mono: list[float], rate: int, size: int = FFT_SIZE) -> float | None:
    """The strongest frequency (Hz) in one Hann-windowed FFT frame of ``mono``; None for silence/too short.

    Parabolic interpolation between FFT bins gives sub-bin accuracy (well under 1 Hz for a pure tone at
    48 kHz with 8192 points). DC and the lowest bins (< 20 Hz) are ignored.
    """
    if rate <= 0 or len(mono) < 64:
        return None
    n = 1 << (min(size, len(mono)).bit_length() - 1)
    frame = mono[:n]
    mean = sum(frame) / n
    windowed = [
        complex((v - mean) * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))), 0.0) for i, v in enumerate(frame)
    ]
    spectrum = [abs(c) for c in _fft(windowed)[: n // 2]]
    lo = max(1, math.ceil(20 * n / rate))
    if lo >= len(spectrum) - 1:
        return None
    k = max(range(lo, len(spectrum) - 1), key=spectrum.__getitem__)
    if spectrum[k] <= 1e-9:
        return None
    a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom else 0.0
    return (k + shift) * rate / n


@dataclass(frozen=True)
class Pcm:
    """The parts of a WAV file the figures (and the report's spectrum plot) need: its format and sample bytes."""

    tag: int
    channels: int
    rate: int
    bits: int
    data: bytes
    complete: bool


def read_pcm(data: bytes) -> Pcm | WavFigures:
    """Walk the RIFF chunks: the fmt and data chunks, or the figures of a broken file (never raises).

    Only integer PCM of 8, 16, 24 or 32 bits is accepted; a data chunk QEMU never finished (RIFF and data
    sizes 0: it was killed) or one cut short is read up to the end of the file, with ``complete=False``.
    """
    if len(data) < 12:
        if not data:
            # Measured: QEMU killed before its stdio buffer was flushed leaves a 0-byte file.
            return _broken("file is empty: QEMU wrote nothing (killed before flushing, or never played)")
        return _broken("file is shorter than a RIFF header")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return _broken("not a RIFF/WAVE file")
    riff_size = struct.unpack("<I", data[4:8])[0]
    pos, fmt, pcm, complete = 12, None, None, riff_size != 0
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                return _broken("truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            # QEMU's placeholder header (RIFF and data sizes 0: unclean exit) or a cut file: take what is there.
            cut = (size == 0 and riff_size == 0) or body + size > len(data)
            complete = complete and not cut
            pcm = data[body:] if cut else data[body : body + size]
            break
        pos = body + size + (size & 1)
    if fmt is None:
        return _broken("no fmt chunk", complete)
    tag, channels, rate, bits = fmt
    if tag not in (1, 0xFFFE) or bits not in (8, 16, 24, 32) or channels < 1 or rate <= 0:
        return _broken(f"unsupported WAV encoding (format tag {tag}, {bits} bits, {channels} channels)", complete)
    if pcm is None:
        return _broken("no data chunk", complete)
    return Pcm(tag, channels, rate, bits, pcm, complete)


def analyse_bytes(data: bytes) -> WavFigures:
    """Figures for the bytes of a WAV file (pure). Never raises for bad content: see ``error``."""
    pcm = read_pcm(data)
    if isinstance(pcm, WavFigures):
        return pcm
    rate, channels, width = pcm.rate, pcm.channels, pcm.bits // 8
    samples = _samples(pcm.data, width)
    frames = len(samples) // channels
    samples = samples[: frames * channels]
    if frames == 0:
        return WavFigures(0, rate, channels, width, 0.0, 0.0, None, 0.0, pcm.complete)
    mono = (
        samples
        if channels == 1
        else [sum(samples[i * channels : (i + 1) * channels]) / channels for i in range(frames)]
    )
    rms = math.sqrt(sum(v * v for v in samples) / len(samples))
    peak = max(abs(v) for v in samples)
    # Loudness per block; the analysis window sits in the middle of the audible span.
    blocks = [
        math.sqrt(sum(v * v for v in mono[i : i + _BLOCK]) / len(mono[i : i + _BLOCK]))
        for i in range(0, frames, _BLOCK)
    ]
    loudest = max(blocks)
    audible = [i for i, level in enumerate(blocks) if loudest > 0 and level >= 0.1 * loudest]
    audible_s = len(audible) * _BLOCK / rate
    dominant: float | None = None
    if audible and loudest > 1e-4:
        first, last = audible[0] * _BLOCK, min(frames, (audible[-1] + 1) * _BLOCK)
        span = last - first
        size = FFT_SIZE if span >= FFT_SIZE else span
        start = first + max(0, (span - size) // 2)
        dominant = dominant_frequency(mono[start : start + size], rate)
    return WavFigures(frames, rate, channels, width, rms, peak, dominant, min(audible_s, frames / rate), pcm.complete)


def analyse_wav(path: Path) -> WavFigures:
    """Figures for a WAV file. A missing or unreadable file raises AeroFailure(WAV_CHECK_FAILED)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AeroFailure(
            WAV_CHECK_FAILED,
            f"cannot read the WAV recording {path}: {exc.strerror or exc}",
            fix="the VM needs a sound device with the wav audio backend, and QEMU must have started",
        ) from exc
    return analyse_bytes(data)


def check_tone(
    fig: WavFigures,
    expect_hz: float = 440.0,
    tol_hz: float | None = None,
    min_rms: float = 0.01,
    min_audible_s: float = 0.1,
    expect_rate: int | None = None,
) -> list[str]:
    """Problems with a recording that should hold a tone of ``expect_hz`` (empty list: it does).

    ``tol_hz`` defaults to max(5 Hz, 2 % of ``expect_hz``): the guest's tone generator and QEMU's resampling
    are exact enough that a larger error means a rate mismatch (e.g. 44100 vs 48000 is 9 %).
    """
    tol = tol_hz if tol_hz is not None else max(5.0, 0.02 * expect_hz)
    problems: list[str] = []
    if fig.error:
        return [f"unreadable WAV: {fig.error}"]
    if not fig.header_complete:
        problems.append(
            "WAV header incomplete (data size never written): QEMU did not exit cleanly, so the wav backend "
            "could not finalise the file"
        )
    if expect_rate is not None and fig.rate != expect_rate:
        problems.append(f"sample rate {fig.rate} Hz, expected {expect_rate} Hz")
    if fig.frames == 0:
        problems.append("no audio frames recorded (the guest played nothing)")
        return problems
    if fig.rms < min_rms:
        problems.append(f"silent: rms {fig.rms:.4f} < {min_rms} (peak {fig.peak:.4f})")
        return problems
    if fig.audible_s < min_audible_s:
        problems.append(f"only {fig.audible_s:.3f} s audible, expected at least {min_audible_s} s")
    if fig.dominant_hz is None:
        problems.append("no dominant frequency found")
    elif abs(fig.dominant_hz - expect_hz) > tol:
        problems.append(f"dominant frequency {fig.dominant_hz:.1f} Hz, expected {expect_hz:g} Hz +/- {tol:g} Hz")
    return problems
