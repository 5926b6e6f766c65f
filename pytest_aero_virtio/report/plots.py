"""Plots for the HTML report, drawn with matplotlib (the ``html`` extra): a WAV's spectrum, a VM's timeline.

Why pictures: a failed tone check reads "dominant 220.3 Hz" in the text, but the spectrum shows at once
whether the tone is an octave off, buried in noise or missing; a VM's marker arrival times show where a slow
run spent its time and how long the host took to answer each READY line. Both return PNG bytes; nothing is
drawn on screen (the Agg backend), so they run on a headless CI machine.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..audio import Pcm, read_pcm

__all__ = ["STATUS_COLOURS", "read_timeline", "spectrum", "spectrum_png", "timeline_png", "wav_mono"]

#: Marker status -> colour in the timeline (host markers are drawn as "HOST").
STATUS_COLOURS = {
    "PASS": "#2e7d32",
    "FAIL": "#c62828",
    "SKIP": "#9e9e9e",
    "READY": "#ef6c00",
    "INFO": "#1565c0",
    "HOST": "#6a1b9a",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    _pyplot().close(fig)
    return buf.getvalue()


def wav_mono(data: bytes) -> tuple[Any, int]:
    """(mono samples in -1..1 as a numpy array, sample rate) of PCM WAV bytes, as parsed by
    :func:`~pytest_aero_virtio.audio.read_pcm`: a header QEMU never finished (sizes 0: it was killed) is read up
    to the end of the file."""
    import numpy as np

    pcm = read_pcm(data)
    if not isinstance(pcm, Pcm) or pcm.bits not in (8, 16, 32):
        raise ValueError("not a PCM WAV file this plot can read")
    dtype = {8: np.uint8, 16: np.int16, 32: np.int32}[pcm.bits]
    frame = pcm.bits // 8 * pcm.channels
    samples = np.frombuffer(pcm.data[: len(pcm.data) - len(pcm.data) % frame], dtype=dtype).astype(np.float64)
    samples = (samples - 128) / 128 if pcm.bits == 8 else samples / float(2 ** (pcm.bits - 1))
    return samples.reshape(-1, pcm.channels).mean(axis=1), pcm.rate


def spectrum(mono: Any, rate: int) -> tuple[Any, Any, float]:
    """(frequencies, level in dB relative to the strongest bin, the strongest frequency above 20 Hz) of one
    Hann-windowed FFT over the first 32768 samples."""
    import numpy as np

    n = min(len(mono), 1 << 15)
    magnitude = np.abs(np.fft.rfft(mono[:n] * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    db = 20 * np.log10(magnitude / (magnitude.max() or 1.0) + 1e-9)
    usable = freqs >= 20
    return freqs, db, float(freqs[usable][np.argmax(magnitude[usable])])


def spectrum_png(wav: Path, expect_hz: float = 440.0) -> bytes:
    """The recording's magnitude spectrum (dB, 0-2 kHz) with its strongest peak marked, and the expected tone."""
    mono, rate = wav_mono(wav.read_bytes())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    if len(mono) < 64:
        ax.text(0.5, 0.5, "no audio frames recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        freqs, db, peak = spectrum(mono, rate)
        shown = freqs <= 2000
        ax.plot(freqs[shown], db[shown], color="#1565c0", linewidth=0.8)
        ax.axvline(expect_hz, color="#9e9e9e", linestyle="--", linewidth=0.8, label=f"expected {expect_hz:g} Hz")
        ax.plot([peak], [0.0], marker="v", color="#c62828", markersize=9, label=f"peak {peak:.1f} Hz")
        ax.annotate(f"{peak:.1f} Hz", (peak, 0.0), xytext=(6, -14), textcoords="offset points", color="#c62828")
        ax.set_ylim(-100, 8)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("level (dB, peak = 0)")
    ax.set_title(f"{wav.name}: spectrum ({rate} Hz sample rate)", fontsize=10)
    return _png(fig)


def read_timeline(path: Path) -> list[dict[str, Any]]:
    """The entries of a VM's ``timeline.jsonl`` (unreadable lines are skipped)."""
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("t"), int | float):
            out.append(entry)
    return out


def _label(entry: dict[str, Any]) -> tuple[str, str]:
    """(row label, status key) of a timeline entry."""
    if "host" in entry:
        return f"host {entry['host']}", "HOST"
    name = entry.get("name") or entry.get("kind") or "?"
    return str(name), str(entry.get("status") or "INFO").upper()


def timeline_png(entries: Sequence[dict[str, Any]], title: str) -> bytes:
    """Marker arrival times after QEMU's start: one row per check (and per host topic), coloured by status."""
    plt = _pyplot()
    rows: dict[str, int] = {}
    for entry in entries:
        rows.setdefault(_label(entry)[0], len(rows))
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.28 * len(rows) + 1.0)))
    by_status: dict[str, tuple[list[float], list[int]]] = {}
    for entry in entries:
        label, status = _label(entry)
        xs, ys = by_status.setdefault(status, ([], []))
        xs.append(float(entry["t"]))
        ys.append(rows[label])
    for status, (xs, ys) in by_status.items():  # one scatter per status: one legend entry each, and fast
        ax.scatter(xs, ys, color=STATUS_COLOURS.get(status, "#424242"), s=26, zorder=3, label=status)
    ax.set_xlim(left=0)  # from QEMU's start: the boot is part of the story
    ax.set_yticks(range(len(rows)), list(rows), fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="x", linestyle=":", linewidth=0.6)
    ax.set_xlabel("seconds after QEMU started")
    ax.set_title(title, fontsize=10)
    if by_status:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)  # outside: never over a marker
    if not entries:
        ax.text(0.5, 0.5, "no markers arrived", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)
