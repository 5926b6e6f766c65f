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

benchmarks/verdicts.py measures with the same pieces (bare run, harness run, timelines, the xdist walls).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFIX = "AERO_VIRTIO_SELFTEST|"
#: The base set's verdict alone: the harness's counterpart of a bare run.
BASE_SET = ("vmm_flows/test_selftest.py", "-k", "result")

#: A guest marker seen by the host: (s after QEMU's spawn/start, its key: kind|name|status).
Marker = tuple[float, str]


def children_cpu() -> float:
    """User + system CPU s of every child waited for so far (with everything they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_run(qemu: str | None, guest_args: Sequence[str] = ()) -> tuple[float, float, list[Marker]]:
    """A bare run: (wall s, CPU s of the command and all it started, every marker line in order).

    Marker times are from the spawn, taken as each line is read from the live stdout.
    """
    argv = [str(BIN / "aero-virtio-refenv"), "bare", "--run", "--no-snd", *(f"--guest-arg={a}" for a in guest_args)]
    argv += ["--qemu", qemu] if qemu else []
    cpu0 = children_cpu()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    markers: list[Marker] = []
    prefix = PREFIX.encode()
    assert proc.stdout is not None
    for raw in proc.stdout:
        if prefix in raw:  # only marker lines are decoded (not the serial-cost noise)
            at_s = time.monotonic() - t0
            line = raw.decode(errors="replace").strip()
            markers.append((at_s, "|".join(line[line.find(PREFIX) :].split("|")[1:4])))
    proc.wait()
    return time.monotonic() - t0, children_cpu() - cpu0, markers


def first_arrivals(markers: Iterable[Marker]) -> dict[str, float]:
    """Each marker's first arrival, in arrival order."""
    seen: dict[str, float] = {}
    for at_s, key in markers:
        seen.setdefault(key, at_s)
    return seen


def is_result(key: str) -> bool:
    return key.split("|", 1)[0] == "RESULT"


def pytest_argv(artifacts: Path, args: Sequence[str]) -> list[str]:
    """A harness run of ``args`` (test paths and options), its per-VM artifacts in ``artifacts``."""
    return [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"--vm-artifacts={artifacts}", *args]


def harness_run(args: Sequence[str], artifacts: Path, check: bool = True) -> float:
    """Wall s of a harness run (its stdout dropped); ``check``: a failed run raises."""
    t0 = time.monotonic()
    subprocess.run(pytest_argv(artifacts, args), cwd=ROOT, check=check, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def xdist_walls(qemu_args: Sequence[str], tmp: Path, check: bool = True) -> tuple[float, float]:
    """Wall s of the full ``vmm_flows`` with ``-n 1`` and with ``-n 2`` (artifacts in tmp/n1, tmp/n2)."""
    one = harness_run(["vmm_flows", *qemu_args], tmp / "n1", check)
    two = harness_run(["vmm_flows", "-n", "2", *qemu_args], tmp / "n2", check)
    return one, two


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


def timeline_markers(timeline: list[dict[str, object]]) -> list[Marker]:
    """A timeline's guest markers in order (s after QEMU's start, :func:`marker_key`)."""
    return [(float(e["t"]), key) for e in timeline if (key := marker_key(e)) is not None]  # type: ignore[arg-type]


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
        wall, _, markers = bare_run(args.qemu)
        seen = first_arrivals(markers)
        bare_wall.append(wall)
        bare_result.append(next(v for k, v in seen.items() if is_result(k)))
        art = tmp / f"result-{n}"
        harness_wall.append(harness_run([*BASE_SET, *qemu_args], art))
        (timeline,) = timelines(art)
        first = first_arrivals(timeline_markers(timeline))
        harness_result.append(next(v for k, v in first.items() if is_result(k)))
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
        one, two = xdist_walls(qemu_args, tmp)
        print(f"vmm_flows wall: -n 1 {one:.1f} s, -n 2 {two:.1f} s, ratio {two / one:.2f}")
    print(f"(artifacts in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
