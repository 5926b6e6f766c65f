"""The observability pieces that need no VM: screenshots' files and PPM fallback, progress lines, the story
log, the JUnit system-out and image fingerprint, the HTML block and the plots."""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import wave
import zlib
from pathlib import Path

import pytest

from pytest_aero_virtio.artifacts import ArtifactDir
from pytest_aero_virtio.markers import HostMarker
from pytest_aero_virtio.report.junit import attachment_path, image_fingerprint, system_out
from pytest_aero_virtio.report.progress import (
    InPlace,
    ProgressTicker,
    VmProgress,
    format_duration,
    progress_lines,
    snapshot,
)
from pytest_aero_virtio.report.screens import latest_screenshot, ppm_to_png, screen_path, screenshots
from pytest_aero_virtio.report.story import StoryLog
from pytest_aero_virtio.stream import MarkerStream


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw RGB rows without filter bytes) of a PNG written by ppm_to_png."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    assert all(raw[y * stride] == 0 for y in range(height))
    return width, height, b"".join(raw[y * stride + 1 : (y + 1) * stride] for y in range(height))


def test_ppm_to_png_keeps_every_pixel() -> None:
    pixels = bytes(range(256)) * 3 + bytes(48)  # 3 x 4 x ... just some bytes
    pixels = pixels[: 5 * 4 * 3]
    ppm = b"P6\n# made by a test\n5 4\n255\n" + pixels
    assert _png_pixels(ppm_to_png(ppm)) == (5, 4, pixels)


@pytest.mark.parametrize(
    "bad", [b"P3\n1 1\n255\n0 0 0", b"P6\n2 2\n65535\n" + bytes(24), b"P6\n4 4\n255\n" + bytes(5), b"P6\nx"]
)
def test_ppm_to_png_refuses_what_it_cannot_read(bad: bytes) -> None:
    with pytest.raises(ValueError):
        ppm_to_png(bad)


def test_screenshot_names_and_order(tmp_path: Path) -> None:
    artifacts = ArtifactDir(tmp_path, "vm0")
    first = screen_path(artifacts, "fail-test_a[x/y]")
    assert first.parent == artifacts.dir and first.name == "screen-fail-test_a_x_y.png"
    assert latest_screenshot(artifacts.dir) is None
    first.write_bytes(b"a")
    later = screen_path(artifacts, "end")
    later.write_bytes(b"b")
    os.utime(first, ns=(1, 1_000_000_000))
    assert screenshots(artifacts.dir) == [first, later]
    assert latest_screenshot(artifacts.dir) == later


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 59.9, 60, 125, 3600 + 120)] == ["0s", "59s", "1m00s", "2m05s", "1h02m"]


PROGRESS = VmProgress("vm0", 95, "virtio-blk|PASS", 3, "final virtio-net marker (FAIL/PASS/SKIP)", 505, "boot: ok")


def test_progress_lines_by_verbosity() -> None:
    other = VmProgress("vm1", 12)
    assert progress_lines([PROGRESS, other], -2) == []
    assert progress_lines([], 0) == []
    (brief,) = progress_lines([PROGRESS, other], -1)
    assert brief == "aero-virtio: vm0 1m35s virtio-blk|PASS waits 8m25s; vm1 12s no marker yet"
    default = progress_lines([PROGRESS, other], 0)
    assert default == [
        "aero-virtio: vm0 up 1m35s, last virtio-blk|PASS 3s ago; the test waits for the final virtio-net marker "
        "(FAIL/PASS/SKIP), at most 8m25s more",
        "aero-virtio: vm1 up 12s, no marker yet",
    ]
    assert progress_lines([PROGRESS], 1)[1] == "  vm0 serial: boot: ok"


class _Session:
    def __init__(self) -> None:
        self.alive = True


class _Handle:
    """What snapshot() and the ticker read of a VmHandle: a real stream, a start time, an id."""

    def __init__(self, started_at: float) -> None:
        self.stream = MarkerStream()
        self.started_at = started_at
        self.session = _Session()
        self.planned = type("P", (), {"id": "vm3"})()


def test_snapshot_reads_the_stream_and_the_current_wait() -> None:
    handle = _Handle(time.monotonic() - 100)
    handle.stream.feed_line("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|x=1")
    with pytest.raises(Exception, match="TIMEOUT"):
        handle.stream.wait_result(0.01)  # a finished wait leaves nothing behind
    now = time.monotonic()
    state = snapshot(handle, now)  # type: ignore[arg-type]
    assert state.vm == "vm3" and 99 < state.elapsed < 120
    assert state.last == "virtio-blk|PASS" and state.waiting_for is None
    assert state.serial == "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|x=1"
    handle.stream.add_host(HostMarker("VIRTIO_BLK_RESIZE", "PASS"))
    assert snapshot(handle, now).last == "host VIRTIO_BLK_RESIZE|PASS"  # type: ignore[arg-type]


def test_ticker_prints_a_line_per_vm_every_30s_of_its_run_without_a_terminal() -> None:
    said: list[str] = []
    first, second = _Handle(1000.0), _Handle(1020.0)
    second.planned = type("P", (), {"id": "vm4"})()
    running = [first]
    column = [7]
    ticker = ProgressTicker(lambda: running, 0, said.append, column=lambda: column[0])  # type: ignore[arg-type]
    for now in (1001.0, 1020.0, 1029.9):
        ticker.tick(now)
    assert said == []  # a VM's first line comes after it ran 30 s
    ticker.tick(1030.5)
    assert said == ["\naero-virtio: vm3 up 30s, no marker yet"]  # pytest's line was unfinished: a line of its own
    column[0] = 0
    running.append(second)  # a second VM on its own schedule
    for now in (1045.0, 1050.2, 1059.0):
        ticker.tick(now)
    assert said[1:] == ["aero-virtio: vm4 up 30s, no marker yet"]
    ticker.tick(1061.0)
    assert said[2:] == ["aero-virtio: vm3 up 1m01s, no marker yet"]
    first.session.alive = second.session.alive = False
    ticker.tick(1200.0)
    assert len(said) == 3  # nothing runs: nothing to say


def test_ticker_stays_silent_under_qq() -> None:
    said: list[str] = []
    ticker = ProgressTicker(lambda: [_Handle(0.0)], -2, said.append)  # type: ignore[list-item]
    ticker.tick(100.0)
    ticker.start()  # does not even start a thread
    ticker.stop()
    assert said == []


def test_in_place_status_is_drawn_after_the_cursor_and_never_wraps() -> None:
    read, write = os.pipe()
    try:
        width, column = [60], [20]
        status = InPlace(write, lambda: width[0], lambda: column[0])
        status.draw("x" * 100)
        status.erase()
        status.erase()  # nothing shown any more: writes nothing
        column[0] = 50  # too little room: nothing is drawn
        status.draw("short")
        out = os.read(read, 4096).decode()
    finally:
        os.close(read)
        os.close(write)
    shown = "x" * 37 + "…"  # 60 - 20 - 2 columns, the last one an ellipsis
    assert out == f"\x1b7 \x1b[2m{shown}\x1b[0m\x1b[K\x1b8\x1b[K"


def test_story_log_tells_the_phases(caplog: pytest.LogCaptureFixture) -> None:
    story = StoryLog("vm0", t0=100.0)
    stream = MarkerStream(clock=lambda: 101.5)
    stream.subscribe(story)
    with caplog.at_level(logging.INFO, logger="pytest_aero_virtio.vm"):
        stream.feed_line("AERO_VIRTIO_SELFTEST|START|version=1")
        stream.feed_line("AERO_VIRTIO_SELFTEST|TEST|virtio-blk-resize|READY|old_bytes=1")
        stream.add_host(HostMarker("VIRTIO_BLK_RESIZE", "REQUEST", t=101.52))
        stream.feed_line("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS")
        stream.feed_line("AERO_VIRTIO_SELFTEST|RESULT|PASS")
    text = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert text == [
        "vm0    1.50s: guest START version=1",
        "vm0    1.50s: guest virtio-blk-resize READY, waiting for the host",
        "vm0    1.52s: host AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_RESIZE|REQUEST (20 ms after virtio-blk-resize READY)",
        "vm0    1.50s: guest RESULT PASS",
    ]


def test_system_out_has_tail_and_attachment_lines(tmp_path: Path) -> None:
    inside = tmp_path / "aero-artifacts" / "vm0" / "screen-end.png"
    outside = Path("/elsewhere/serial.log")
    text = system_out("vm0", ["boot", "AERO|x"], [inside, outside], tmp_path)
    assert text.splitlines() == [
        "aero-virtio VM vm0: last 2 serial lines",
        "  | boot",
        "  | AERO|x",
        "[[ATTACHMENT|aero-artifacts/vm0/screen-end.png]]",
        "[[ATTACHMENT|/elsewhere/serial.log]]",
    ]
    assert attachment_path(tmp_path / "a" / ".." / "b", tmp_path) == "b"


def test_image_fingerprint_is_cached_by_size_and_mtime(tmp_path: Path) -> None:
    image, cache = tmp_path / "disk.img", tmp_path / "cache" / "hashes.json"
    image.write_bytes(b"disk" * 1000)
    size, digest = image_fingerprint(image, cache)
    assert size == 4000 and len(digest) == 16 and cache.exists()
    stat = image.stat()
    image.write_bytes(b"DISK" * 1000)  # same size; mtime put back: the cached hash is used, not re-read
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image_fingerprint(image, cache) == (size, digest)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert image_fingerprint(image, cache)[1] != digest


def _tone(path: Path, hz: float, rate: int = 48000, seconds: float = 0.5) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        samples = (int(12000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(rate * seconds)))
        frames = b"".join(struct.pack("<h", v) * 2 for v in samples)
        w.writeframes(frames)
    return path


def test_spectrum_finds_the_tone_and_plots_it(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_aero_virtio.report.plots import spectrum, spectrum_png, wav_mono

    wav = _tone(tmp_path / "audio.wav", 440.0)
    mono, rate = wav_mono(wav.read_bytes())
    assert rate == 48000 and len(mono) == 24000
    assert abs(spectrum(mono, rate)[2] - 440.0) < 2.0
    unfinished = bytearray(wav.read_bytes())
    unfinished[4:8] = unfinished[40:44] = bytes(4)  # QEMU killed: RIFF and data sizes never written
    assert len(wav_mono(bytes(unfinished))[0]) == 24000
    assert spectrum_png(wav).startswith(b"\x89PNG")


def test_timeline_and_row_html(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_aero_virtio.report.html import RowEvidence, row_html
    from pytest_aero_virtio.report.plots import read_timeline, timeline_png

    timeline = tmp_path / "timeline.jsonl"
    timeline.write_text(
        '{"t": 1.0, "kind": "START", "name": null, "status": null}\n'
        "not json\n"
        '{"t": 2.5, "kind": "TEST", "name": "virtio-blk", "status": "PASS"}\n'
        '{"t": 2.6, "host": "VIRTIO_BLK_IO", "status": "PASS"}\n'
    )
    entries = read_timeline(timeline)
    assert [e["t"] for e in entries] == [1.0, 2.5, 2.6]
    assert timeline_png(entries, "vm0").startswith(b"\x89PNG")
    shot = tmp_path / "screen-end.png"
    shot.write_bytes(ppm_to_png(b"P6 2 1 255\n" + bytes(6)))
    block = row_html(RowEvidence("vm0", ["<tag> & line"], [("vm0: last screen", shot)], None, timeline))
    assert block.count("<img ") == 2 and 'alt="vm0: last screen"' in block
    assert "&lt;tag&gt; &amp; line" in block and "data:image/png;base64," in block
