"""WAV analysis on files generated with the wave module (and QEMU's unfinished-header case)."""

from __future__ import annotations

import math
import struct
import time
import wave
from pathlib import Path

import pytest

from pytest_aero_virtio.audio import analyse_bytes, analyse_wav, check_tone, dominant_frequency
from pytest_aero_virtio.errors import AeroFailure


def tone(
    path: Path,
    hz: float = 440.0,
    seconds: float = 1.0,
    rate: int = 48000,
    channels: int = 2,
    amplitude: float = 0.5,
    width: int = 2,
    lead_silence_s: float = 0.0,
) -> Path:
    full = {1: 127, 2: 32767, 4: 2147483647}[width]
    frames = bytearray()
    for i in range(int((seconds + lead_silence_s) * rate)):
        t = i / rate
        v = 0.0 if t < lead_silence_s else amplitude * math.sin(2 * math.pi * hz * t)
        s = int(v * full)
        if width == 1:
            sample = bytes([s + 128])
        elif width == 2:
            sample = struct.pack("<h", s)
        else:
            sample = struct.pack("<i", s)
        frames += sample * channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


def test_440_tone_stereo_48k(tmp_path: Path) -> None:
    t0 = time.monotonic()
    fig = analyse_wav(tone(tmp_path / "a.wav"))
    assert time.monotonic() - t0 < 3
    assert (fig.frames, fig.rate, fig.channels, fig.sample_width) == (48000, 48000, 2, 2)
    assert fig.header_complete and fig.error is None
    assert fig.dominant_hz is not None and abs(fig.dominant_hz - 440) < 1
    assert abs(fig.rms - 0.5 / math.sqrt(2)) < 0.01 and abs(fig.peak - 0.5) < 0.01
    assert fig.duration_s == pytest.approx(1.0)
    assert fig.audible_s > 0.9
    assert check_tone(fig) == []
    props = fig.as_properties()
    assert abs(float(props["dominant_hz"]) - 440) < 1 and props["header_complete"] == "true"


@pytest.mark.parametrize(
    ("hz", "rate", "width", "channels"), [(1000, 44100, 2, 1), (250, 22050, 1, 1), (440, 48000, 4, 2)]
)
def test_other_frequencies_rates_widths(tmp_path: Path, hz: float, rate: int, width: int, channels: int) -> None:
    fig = analyse_wav(tone(tmp_path / "b.wav", hz=hz, rate=rate, width=width, channels=channels, seconds=0.5))
    assert fig.dominant_hz is not None and abs(fig.dominant_hz - hz) < 2
    assert check_tone(fig, expect_hz=hz) == []
    assert check_tone(fig, expect_hz=440) if hz != 440 else True


def test_tone_after_leading_silence_is_found(tmp_path: Path) -> None:
    fig = analyse_wav(tone(tmp_path / "c.wav", seconds=0.5, lead_silence_s=1.0))
    assert fig.dominant_hz is not None and abs(fig.dominant_hz - 440) < 1
    assert 0.4 < fig.audible_s < 0.6


def test_silence(tmp_path: Path) -> None:
    fig = analyse_wav(tone(tmp_path / "s.wav", amplitude=0.0))
    assert fig.rms == 0 and fig.dominant_hz is None
    problems = check_tone(fig)
    assert len(problems) == 1 and problems[0].startswith("silent")


def test_wrong_frequency_and_rate(tmp_path: Path) -> None:
    # A 440 Hz tone recorded at 48 kHz but labelled 44100 Hz reads as ~404 Hz: a rate bug.
    fig = analyse_wav(tone(tmp_path / "w.wav", hz=440 * 44100 / 48000, rate=44100))
    problems = check_tone(fig, expect_rate=48000)
    assert any("sample rate 44100" in p for p in problems)
    assert any("dominant frequency 404" in p for p in problems)


def test_qemu_unfinished_header_is_analysed_but_flagged(tmp_path: Path) -> None:
    data = bytearray(tone(tmp_path / "q.wav", seconds=0.3).read_bytes())
    # What QEMU leaves when killed: RIFF and data sizes still 0.
    struct.pack_into("<I", data, 4, 0)
    data_at = data.index(b"data")
    struct.pack_into("<I", data, data_at + 4, 0)
    fig = analyse_bytes(bytes(data))
    assert not fig.header_complete
    assert fig.frames == int(0.3 * 48000)
    assert fig.dominant_hz is not None and abs(fig.dominant_hz - 440) < 1
    problems = check_tone(fig)
    assert len(problems) == 1 and "QEMU did not exit cleanly" in problems[0]


def test_truncated_file(tmp_path: Path) -> None:
    data = tone(tmp_path / "t.wav", seconds=0.3).read_bytes()
    fig = analyse_bytes(data[: len(data) // 2])
    assert not fig.header_complete and fig.frames > 0


def test_header_only_no_frames(tmp_path: Path) -> None:
    fig = analyse_wav(tone(tmp_path / "e.wav", seconds=0))
    assert fig.frames == 0 and fig.header_complete
    assert check_tone(fig) == ["no audio frames recorded (the guest played nothing)"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"", "empty"), (b"RIFF\0\0\0\0JUNKxxxx", "not a RIFF/WAVE"), (b"RIFF\x04\0\0\0WAVE", "no fmt")],
)
def test_garbage(data: bytes, needle: str) -> None:
    fig = analyse_bytes(data)
    assert fig.error is not None and needle in fig.error
    assert check_tone(fig)[0].startswith("unreadable WAV")


def test_missing_file_raises_token(tmp_path: Path) -> None:
    with pytest.raises(AeroFailure) as info:
        analyse_wav(tmp_path / "nope.wav")
    assert info.value.token == "WAV_CHECK_FAILED"


def test_dominant_frequency_two_tones_picks_the_louder() -> None:
    rate = 16000
    mono = [
        0.2 * math.sin(2 * math.pi * 300 * i / rate) + 0.6 * math.sin(2 * math.pi * 1200 * i / rate)
        for i in range(8192)
    ]
    f = dominant_frequency(mono, rate)
    assert f is not None and abs(f - 1200) < 2
    assert dominant_frequency([0.0] * 10, rate) is None
