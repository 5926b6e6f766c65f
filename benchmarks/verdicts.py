#!/usr/bin/env python3
"""Every figure of "faster verdicts" in one run, side by side with the bare-QEMU yardstick; asserts nothing.

Prints, on the reference guest (pinned QEMU 10 unless --qemu; TCG):

1. boot: QEMU start -> first marker and -> RESULT of the base set, for the yardstick
   (``aero-virtio-refenv bare --run --no-snd``: the plugin's default devices, serial on stdio) and for the
   plugin (``pytest vmm_flows/test_selftest.py -k result``, from its ``timeline.jsonl``); medians;
2. serial cost: the same guest told to print a 1 MiB line and 64 KiB of binary bytes before its markers
   (``--noise-line-bytes``/``--noise-binary-bytes``), bare vs plugin: whole-run CPU (user+sys of the command
   and everything it started) and wall time, as ratios plugin/bare (paired runs, alternating);
3. marker latency: the last byte of a marker line leaving "QEMU" (one byte per ``write``, as QEMU's UART does)
   -> the test thread waiting for it woken, through the plugin's real serial reader, splitter and stream
   (p50, p99, max over many markers);
4. ``vmm_flows``: wall time with ``-n 1`` and ``-n 2``.

Usage: .venv/bin/python benchmarks/verdicts.py [--qemu PATH] [--runs N] [--skip-flows]

The bare and plugin runs, their timelines and the xdist walls are measured by benchmarks/flows_vs_bare.py's
code (imported from this script's directory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# This script's directory is sys.path[0]: the measuring code shared with flows_vs_bare.py.
from flows_vs_bare import (
    BASE_SET,
    ROOT,
    Marker,
    bare_run,
    children_cpu,
    is_result,
    pytest_argv,
    timeline_markers,
    timelines,
    xdist_walls,
)

sys.path.insert(0, str(ROOT))

from pytest_aero_virtio.qemu.loop import LoopThread
from pytest_aero_virtio.qemu.serial import ConsolePipes, SerialReader
from pytest_aero_virtio.stream import MarkerStream

NOISE = ("--noise-line-bytes=1048576", "--noise-binary-bytes=65536")


def timed(argv: list[str], **kw: object) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """(wall s, CPU s of the command and all it started, result)."""
    cpu0 = children_cpu()
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    wall = time.monotonic() - t0
    return wall, children_cpu() - cpu0, proc


def first_and_result(markers: list[Marker]) -> tuple[float | None, float | None]:
    """s to the first marker and to the (last) RESULT marker; None for one not seen."""
    first = markers[0][0] if markers else None
    result = next((at_s for at_s, key in reversed(markers) if is_result(key)), None)
    return first, result


def bare(qemu: str | None, guest_args: tuple[str, ...] = ()) -> tuple[float, float, float | None, float | None]:
    """(wall, cpu, first marker s, RESULT s) of the yardstick; marker times from QEMU's spawn (stdout read live)."""
    wall, cpu, markers = bare_run(qemu, guest_args)
    first, result = first_and_result(markers)
    return wall, cpu, first, result


def plugin(
    qemu: str | None, art: Path, guest_args: tuple[str, ...] = ()
) -> tuple[float, float, float | None, float | None]:
    args = [*BASE_SET, *(f"--vm-guest-arg={a}" for a in guest_args)]
    args += [f"--qemu-system={qemu}"] if qemu else []
    wall, cpu, proc = timed(pytest_argv(art, args), cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stdout.decode(errors="replace")[-2000:], file=sys.stderr)
    first, result = first_and_result([m for timeline in timelines(art) for m in timeline_markers(timeline)])
    return wall, cpu, first, result


def marker_latency(markers: int = 300) -> list[float]:
    """ms from the last byte of a marker line sent (one byte per send) to the waiting thread's wake-up."""
    pipes = ConsolePipes()  # as the session sets up a real console: QEMU writes into this pipe
    stream = MarkerStream()
    loop = LoopThread("latency")
    loop.start()
    log = open(os.devnull, "wb")  # noqa: SIM115
    reader = SerialReader(log, stream.feed_line)

    async def start() -> None:
        reader.start(pipes.output, "latency")

    loop.call(start(), 5)
    out: list[float] = []
    for i in range(markers):
        woke: list[float] = []

        def wait(n: int = i, into: list[float] = woke) -> None:
            stream.wait_final(f"t{n}", 5)
            into.append(time.monotonic())

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.003)  # the waiter is waiting; the reader is asleep between reads, as in a run
        line = f"AERO_VIRTIO_SELFTEST|TEST|t{i}|PASS|n={i}\n".encode()
        for b in line[:-1]:
            os.write(pipes.qemu_stdout, bytes([b]))
        sent = time.monotonic()
        os.write(pipes.qemu_stdout, line[-1:])
        waiter.join(5)
        out.append((woke[0] - sent) * 1000)
    pipes.close_qemu_ends()
    pipes.close()
    loop.stop()
    log.close()
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--qemu", help="qemu-system-x86_64 (default: the pinned reference QEMU)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-flows", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aero-verdicts-"))
    print(
        f"# faster verdicts: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, TCG, "
        f"{args.qemu or 'pinned QEMU 10'}, medians of {args.runs} alternating runs"
    )

    rows: dict[str, list[tuple[float, float, float | None, float | None]]] = {k: [] for k in ("bare", "plugin")}
    noisy: dict[str, list[tuple[float, float, float | None, float | None]]] = {k: [] for k in ("bare", "plugin")}
    for n in range(args.runs):
        rows["bare"].append(bare(args.qemu))
        rows["plugin"].append(plugin(args.qemu, tmp / f"base-{n}"))
        noisy["bare"].append(bare(args.qemu, NOISE))
        noisy["plugin"].append(plugin(args.qemu, tmp / f"noise-{n}", NOISE))

    for who in ("bare", "plugin"):
        firsts = [r[2] for r in rows[who] if r[2] is not None]
        results = [r[3] for r in rows[who] if r[3] is not None]
        print(f"boot, {who:6s}: first marker {med(firsts):5.2f} s, base RESULT {med(results):5.2f} s after QEMU starts")
    for label, data in (("base set", rows), ("1 MiB line + 64 KiB binary", noisy)):
        wall = med([p[0] / b[0] for p, b in zip(data["plugin"], data["bare"], strict=True)])
        cpu = med([p[1] / b[1] for p, b in zip(data["plugin"], data["bare"], strict=True)])
        print(
            f"whole run, {label:27s}: plugin/bare wall {wall:4.2f}, CPU {cpu:4.2f} "
            f"(bare {med([b[0] for b in data['bare']]):.1f} s / {med([b[1] for b in data['bare']]):.1f} s CPU, "
            f"plugin {med([p[0] for p in data['plugin']]):.1f} s / {med([p[1] for p in data['plugin']]):.1f} s CPU)"
        )
    lat = sorted(marker_latency())
    p99 = lat[int(len(lat) * 0.99) - 1]
    print(
        f"marker latency (last byte sent -> waiting test woken): p50 {med(lat):.2f} ms, p99 {p99:.2f} ms, "
        f"max {lat[-1]:.2f} ms over {len(lat)} markers"
    )
    if not args.skip_flows:
        q = [f"--qemu-system={args.qemu}"] if args.qemu else []
        one, two = xdist_walls(q, tmp, check=False)
        print(f"vmm_flows (43 tests): -n 1 {one:.1f} s, -n 2 {two:.1f} s")
    print(f"(artifacts in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
