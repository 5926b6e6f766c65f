#!/usr/bin/env python3
"""How much the harness adds to a bare QEMU run of the same guest; prints figures, asserts nothing.

Measured, on the reference guest (the default image and QEMU unless --qemu is given):

1. time to verdict: a bare ``aero-virtio-refenv bare --run --no-snd`` (plain qemu-system-x86_64, stdlib HTTP
   and UDP echo) against ``pytest vmm_flows/test_selftest.py -k result`` on the same devices, both as the
   wall time of the whole command and as QEMU start -> RESULT line;
2. marker latency: for every marker both runs saw, its arrival time after QEMU's start in the harness minus
   the same in the bare run (median and max), i.e. what streaming + parsing adds, plus the in-process
   stream -> waiting test wake-up time;
3. READY -> injection latency: from each READY line to the host's first answer (QMP injection, resize, link
   flap), read from the per-VM ``timeline.jsonl`` of a run of the opt-in tests;
4. ``pytest -n 2`` against ``-n 1`` wall time of the full ``vmm_flows``.

Usage: benchmarks/flows_vs_bare.py [--qemu PATH] [--runs N] [--skip-xdist]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFIX = "AERO_VIRTIO_SELFTEST|"


def bare_run(qemu: str | None) -> tuple[float, dict[str, float]]:
    """Wall time of a bare run and each marker's arrival (s after spawn, first occurrence)."""
    argv = [str(BIN / "aero-virtio-refenv"), "bare", "--run", "--no-snd"] + (["--qemu", qemu] if qemu else [])
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen: dict[str, float] = {}
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").strip()
        at = line.find(PREFIX)
        if at >= 0:
            key = "|".join(line[at:].split("|")[1:4])
            seen.setdefault(key, time.monotonic() - t0)
    proc.wait()
    return time.monotonic() - t0, seen


def harness_run(args: list[str], artifacts: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"--vm-artifacts={artifacts}", *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - t0


def timelines(artifacts: Path) -> list[list[dict[str, object]]]:
    return [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(artifacts.glob("*/timeline.jsonl"))
    ]


def marker_key(entry: dict[str, object]) -> str | None:
    if "kind" not in entry:
        return None
    parts = [str(entry["kind"]), str(entry.get("name") or ""), str(entry.get("status") or "")]
    if entry["kind"] != "TEST":
        parts = parts[:1] + [p for p in parts[1:] if p]
    return "|".join(p for p in parts if p)


def stream_wake_latency(samples: int = 200) -> list[float]:
    """In-process: a marker fed to the stream -> the waiting thread returns (ms)."""
    sys.path.insert(0, str(ROOT))
    from pytest_aero_virtio.stream import MarkerStream

    out = []
    for i in range(samples):
        stream = MarkerStream()
        woke: list[float] = []

        def waiter(s: MarkerStream = stream, n: int = i, w: list[float] = woke) -> None:
            s.wait_final(f"t{n}", 5)
            w.append(time.monotonic())

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.002)
        t_feed = time.monotonic()
        stream.feed_line(f"{PREFIX}TEST|t{i}|PASS")
        th.join()
        out.append((woke[0] - t_feed) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", help="qemu-system-x86_64 (default: the pinned reference QEMU)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--skip-xdist", action="store_true")
    args = ap.parse_args()
    qemu_args = [f"--qemu-system={args.qemu}"] if args.qemu else []
    tmp = Path(tempfile.mkdtemp(prefix="aero-bench-"))

    print(f"# flows vs bare ({args.qemu or 'pinned QEMU'}), {args.runs} runs each, TCG")
    bare_wall, bare_result, harness_wall, harness_result = [], [], [], []
    deltas: list[float] = []
    for n in range(args.runs):
        wall, seen = bare_run(args.qemu)
        bare_wall.append(wall)
        bare_result.append(next(v for k, v in seen.items() if k.startswith("RESULT")))
        art = tmp / f"result-{n}"
        harness_wall.append(harness_run(["vmm_flows/test_selftest.py", "-k", "result", *qemu_args], art))
        (timeline,) = timelines(art)
        first: dict[str, float] = {}
        for entry in timeline:
            key = marker_key(entry)
            if key is not None:
                first.setdefault(key, float(entry["t"]))  # type: ignore[arg-type]
        harness_result.append(next(v for k, v in first.items() if k.startswith("RESULT")))
        deltas += [first[k] - seen[k] for k in first.keys() & seen.keys()]

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs):6.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

    print(f"bare:    wall {fmt(bare_wall)};  QEMU start -> RESULT {fmt(bare_result)}")
    print(f"harness: wall {fmt(harness_wall)};  QEMU start -> RESULT {fmt(harness_result)}")
    print(
        f"ratio harness/bare: wall {statistics.median(harness_wall) / statistics.median(bare_wall):.2f}, "
        f"to RESULT {statistics.median(harness_result) / statistics.median(bare_result):.2f}"
    )
    print(
        f"marker arrival, harness - bare (same marker): median {statistics.median(deltas) * 1000:+.0f} ms, "
        f"max {max(deltas) * 1000:+.0f} ms over {len(deltas)} markers"
    )
    wake = stream_wake_latency()
    print(f"stream -> waiting test wake-up: median {statistics.median(wake):.3f} ms, max {max(wake):.3f} ms")

    art = tmp / "ready"
    harness_run(
        [
            "vmm_flows/test_input_events.py",
            "vmm_flows/test_blk.py",
            "vmm_flows/test_net.py",
            "-k",
            "events or resize or media or link_flap",
            *qemu_args,
        ],
        art,
    )
    latencies: dict[str, float] = {}
    for timeline in timelines(art):
        for i, entry in enumerate(timeline):
            if entry.get("status") == "READY" and "name" in entry:
                answer = next((e for e in timeline[i + 1 :] if "host" in e), None)
                if answer is not None:
                    latencies[str(entry["name"])] = (float(answer["t"]) - float(entry["t"])) * 1000  # type: ignore[arg-type]
    for name, ms in sorted(latencies.items()):
        print(f"READY -> host action: {name:32s} {ms:7.1f} ms")

    if not args.skip_xdist:
        one = harness_run(["vmm_flows", *qemu_args], tmp / "n1")
        two = harness_run(["vmm_flows", "-n", "2", *qemu_args], tmp / "n2")
        print(f"vmm_flows wall: -n 1 {one:.1f} s, -n 2 {two:.1f} s, ratio {two / one:.2f}")
    print(f"(artifacts in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
