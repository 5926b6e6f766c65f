"""virtio-snd checks through ALSA (alsa-utils' aplay/arecord on the card's hw: devices).

Playback is a real 440 Hz tone (48 kHz, S16_LE, stereo): the host may record QEMU's audio output into a
WAV file and check that 440 Hz dominates.  Capture reads from the capture PCM; QEMU's ``none`` audio
backend captures silence (fine: the check is that frames arrive), its ``wav`` backend has no input and
the stream fails with EIO, which is reported as ``FAIL|reason=capture_io_error`` (the host chooses the
backend).  The negotiated formats come from /proc/asound/.../hw_params, sampled while the stream runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from . import irq, sysfs
from .config import Config
from .markers import Reporter
from .pure import pcm_stats, tone_pcm, wav_bytes
from .record import record as record_class

RATE = 48000
CHANNELS = 2
TONE_HZ = 440.0
TONE_S = 1.0
CAPTURE_FRAMES = RATE // 2
WORK = Path("/tmp/aero-snd")
BUFFER_CASES = (("tiny", 256, 1024), ("medium", 1024, 4096), ("large", 4096, 32768))

NAMES = (
    "virtio-snd",
    "virtio-snd-capture",
    "virtio-snd-duplex",
    "virtio-snd-buffer-limits",
    "virtio-snd-format",
    "virtio-snd-eventq",
    "virtio-snd-msix",
)


@record_class
class Card:
    dev: str  # virtioN
    index: int
    playback: int | None  # PCM device numbers
    capture: int | None

    def hw(self, pcm: int | None) -> str:
        return f"hw:{self.index},{pcm}"

    def params_path(self, pcm: int | None, kind: str) -> Path:
        return Path(f"/proc/asound/card{self.index}/pcm{pcm}{kind}/sub0/hw_params")


def find_card() -> Card | None:
    for dev in sysfs.virtio_devices("virtio_snd"):
        base = sysfs.VIRTIO_BUS / "devices" / dev / "sound"
        deadline = time.monotonic() + 3
        cards: list[str] = []
        while time.monotonic() < deadline:
            try:
                cards = [n for n in os.listdir(base) if n.startswith("card")]
            except OSError:
                cards = []
            if cards:
                break
            time.sleep(0.05)
        if not cards:
            continue
        index = int(cards[0][4:])
        pcms = os.listdir(f"/proc/asound/card{index}")
        play = sorted(int(m.group(1)) for p in pcms if (m := re.fullmatch(r"pcm(\d+)p", p)))
        cap = sorted(int(m.group(1)) for p in pcms if (m := re.fullmatch(r"pcm(\d+)c", p)))
        return Card(dev, index, play[0] if play else None, cap[0] if cap else None)
    return None


def parse_hw_params(text: str) -> dict[str, str]:
    """/proc/asound/.../hw_params ("format: S16_LE", "rate: 48000 (48000/1)") -> dict; {} when closed."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip().split(" ")[0]
    return out


def format_desc(params: dict[str, str]) -> str:
    if not params:
        return "unknown"
    return f"{params.get('format', '?')}/{params.get('rate', '?')}Hz/{params.get('channels', '?')}ch"


def parse_aplay_verbose(text: str) -> dict[str, int]:
    """period_size / buffer_size from ``aplay -v``'s hw params dump."""
    out = {}
    for key in ("period_size", "buffer_size"):
        m = re.search(rf"^\s*{key}\s*:\s*(\d+)", text, re.M)
        if m:
            out[key] = int(m.group(1))
    return out


def classify_error(text: str) -> str:
    low = text.lower()
    if "input/output error" in low:
        return "io_error"
    if "no such file" in low or "no such device" in low:
        return "device_missing"
    if "busy" in low:
        return "busy"
    return "error"


def tone_file(seconds: float, name: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / name
    if not path.exists():
        frames = int(RATE * seconds)
        path.write_bytes(wav_bytes(tone_pcm(TONE_HZ, RATE, CHANNELS, frames), RATE, CHANNELS))
    return path


def _wait_sampling(proc: subprocess.Popen[bytes], params: Path, timeout: float) -> tuple[dict[str, str], bytes]:
    """Wait for ``proc`` (killing it after ``timeout``), sampling hw_params while it runs."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if not seen:
            seen = parse_hw_params(sysfs.read(params))
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"{proc.args!r} still running after {timeout:.0f} s")
        time.sleep(0.02)
    err = proc.stderr.read() if proc.stderr else b""
    return seen, err


def play(card: Card, wav: Path, extra: list[str] | None = None, timeout: float = 15) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["aplay", "-D", card.hw(card.playback), *(extra or ["-q"]), str(wav)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if extra else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def record(card: Card, frames: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "arecord",
            "-D",
            card.hw(card.capture),
            "-q",
            "-t",
            "raw",
            "-f",
            "S16_LE",
            "-r",
            str(RATE),
            "-c",
            str(CHANNELS),
            "-s",
            str(frames),
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


class SndState:
    def __init__(self) -> None:
        self.render_params: dict[str, str] = {}
        self.capture_params: dict[str, str] = {}


def check_render(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    name = "virtio-snd"
    if card.playback is None:
        rep.fail(name, "no_playback_pcm", card=card.index)
        return
    wav = tone_file(TONE_S, "tone-1s.wav")
    t0 = time.monotonic()
    proc = play(card, wav)
    st.render_params, err = _wait_sampling(proc, card.params_path(card.playback, "p"), TONE_S + 10)
    elapsed_ms = int((time.monotonic() - t0) * 1000)
    fields: dict[str, str | int] = {
        "card": card.index,
        "pcm": card.hw(card.playback),
        "tone_hz": int(TONE_HZ),
        "frames": int(RATE * TONE_S),
        "format": format_desc(st.render_params),
        "elapsed_ms": elapsed_ms,
    }
    if proc.returncode == 0:
        rep.pass_(name, **fields)
    else:
        text = err.decode("utf-8", "replace").strip()
        rep.fail(name, f"playback_{classify_error(text)}", err=text.splitlines()[-1] if text else "", **fields)


def _capture_result(
    card: Card, proc: subprocess.Popen[bytes], out: Path, st: SndState
) -> tuple[str, dict[str, str | int]]:
    """Wait for an arecord; returns (failure reason or "", fields)."""
    params, err = _wait_sampling(proc, card.params_path(card.capture, "c"), 10)
    if params:
        st.capture_params = params
    data = out.read_bytes() if out.exists() else b""
    samples, loud, peak = pcm_stats(data)
    fields: dict[str, str | int] = {
        "method": "arecord",
        "pcm": card.hw(card.capture),
        "frames": samples // CHANNELS,
        "non_silence": loud,
        "peak": peak,
    }
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()
        fields["err"] = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
        return f"capture_{classify_error(text)}", fields
    if samples // CHANNELS < CAPTURE_FRAMES // 2:
        return "short_capture", fields
    return "", fields


def check_capture(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    name = "virtio-snd-capture"
    if cfg.has("disable-snd-capture"):
        rep.skip(name, "disabled")
        return
    if card.capture is None:
        if cfg.has("require-snd-capture"):
            rep.fail(name, "no_capture_pcm")
        else:
            rep.skip(name, "no_capture_pcm")
        return
    out = WORK / "capture.raw"
    out.unlink(missing_ok=True)
    reason, fields = _capture_result(card, record(card, CAPTURE_FRAMES, out), out, st)
    fields["format"] = format_desc(st.capture_params)
    if reason:
        rep.fail(name, reason, **fields)
    else:
        rep.pass_(name, **fields)


def check_duplex(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    name = "virtio-snd-duplex"
    if cfg.has("disable-snd-capture"):
        rep.skip(name, "disabled")
        return
    if card.capture is None or card.playback is None:
        rep.skip(name, "no_capture_pcm" if card.capture is None else "no_playback_pcm")
        return
    out = WORK / "duplex.raw"
    out.unlink(missing_ok=True)
    wav = tone_file(0.5, "tone-0.5s.wav")
    t0 = time.monotonic()
    p_play = play(card, wav)
    p_rec = record(card, CAPTURE_FRAMES, out)
    reason, fields = _capture_result(card, p_rec, out, st)
    _params, err = _wait_sampling(p_play, card.params_path(card.playback, "p"), 10)
    fields["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
    fields["playback_rc"] = p_play.returncode
    if p_play.returncode != 0:
        text = err.decode("utf-8", "replace").strip()
        rep.fail(name, f"playback_{classify_error(text)}", **fields, play_err=text.splitlines()[-1] if text else "")
    elif reason:
        rep.fail(name, reason, **fields)
    else:
        rep.pass_(name, **fields)


def check_buffer_limits(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    name = "virtio-snd-buffer-limits"
    if not cfg.has("test-snd-buffer-limits"):
        rep.skip_flag_not_set(name)
        return
    wav = tone_file(0.25, "tone-0.25s.wav")
    results = []
    failures = []
    for label, period, buffer in BUFFER_CASES:
        proc = play(card, wav, ["-v", f"--period-size={period}", f"--buffer-size={buffer}"])
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"{label}:timeout")
            continue
        got = parse_aplay_verbose((out + err).decode("utf-8", "replace"))
        results.append(f"{label}:{period}/{buffer}->{got.get('period_size', '?')}/{got.get('buffer_size', '?')}")
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip()
            failures.append(f"{label}:{text.splitlines()[-1] if text else proc.returncode}")
    fields: dict[str, str | int] = {
        "cases": len(BUFFER_CASES),
        "ok": len(BUFFER_CASES) - len(failures),
        "sizes": ",".join(results),
    }
    if failures:
        rep.fail(name, "playback_failed", **fields, err=";".join(failures))
    else:
        rep.pass_(name, **fields)


def check_format(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    rep.info("virtio-snd-format", render=format_desc(st.render_params), capture=format_desc(st.capture_params))


def check_eventq(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    """The Linux driver does not export eventq counters; the event queue's own MSI-X vector count is the
    observable part (``na`` under INTx, where all queues share one line)."""
    info = irq.read_device_irqs(card.dev)
    event_key = next((k for k in info.vectors if "event" in k), "")
    rep.info(
        "virtio-snd-eventq",
        mode=info.mode,
        event_vector=info.vector(event_key) if event_key else "none",
        event_irqs=info.counts.get(event_key, 0) if event_key else "na",
        interrupts=info.total,
    )


def check_msix(rep: Reporter, cfg: Config, card: Card, st: SndState) -> None:
    name = "virtio-snd-msix"
    info = irq.read_device_irqs(card.dev)
    fields = irq.msix_fields(info)
    if info.mode == "msix":
        rep.pass_(name, **fields)
    elif cfg.has("require-snd-msix"):
        rep.fail(name, "not_msix", **fields, required_by="--require-snd-msix")
    else:
        rep.skip(name, "not_msix", **fields)


def report_missing(rep: Reporter, cfg: Config, why: str) -> None:
    """The protocol's lines when there is no sound device (or it is disabled)."""
    if cfg.has("require-snd") and why != "disabled":
        rep.fail("virtio-snd", why, err="--require-snd is set but no virtio-snd device is bound to virtio_snd")
        rep.fail("virtio-snd-capture", why)
    else:
        rep.skip("virtio-snd", why)
        rep.skip("virtio-snd-capture", "flag_not_set" if why != "disabled" else "disabled")
    rep.skip("virtio-snd-duplex", why)
    if cfg.has("test-snd-buffer-limits"):
        rep.skip("virtio-snd-buffer-limits", why)
    else:
        rep.skip_flag_not_set("virtio-snd-buffer-limits")
    rep.skip("virtio-snd-format", why)
    rep.skip("virtio-snd-eventq", why)
    if cfg.has("require-snd-msix") and why != "disabled":
        rep.fail("virtio-snd-msix", why, required_by="--require-snd-msix")
    else:
        rep.skip("virtio-snd-msix", why)


def run(rep: Reporter, cfg: Config) -> None:
    if cfg.has("disable-snd"):
        report_missing(rep, cfg, "disabled")
        return
    card: Card | None = None
    with rep.group(*NAMES):
        card = find_card()
        if card is None:
            report_missing(rep, cfg, "device_missing")
            return
    if card is None:  # find_card raised: every name already has its FAIL
        return
    st = SndState()
    for check, name in (
        (check_render, "virtio-snd"),
        (check_capture, "virtio-snd-capture"),
        (check_duplex, "virtio-snd-duplex"),
        (check_buffer_limits, "virtio-snd-buffer-limits"),
        (check_format, "virtio-snd-format"),
        (check_eventq, "virtio-snd-eventq"),
        (check_msix, "virtio-snd-msix"),
    ):
        with rep.group(name):
            check(rep, cfg, card, st)
