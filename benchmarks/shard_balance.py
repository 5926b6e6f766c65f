#!/usr/bin/env python3
"""How balanced ``--vm-shard`` splits ``vmm_flows`` are; prints figures, asserts nothing.

Per run: one unsharded run (its wall time; its recorded VM durations become the shared durations file), then
the N shards one after the other as N CI jobs would run them side by side, split once by estimates and once
by the recorded durations (``--vm-durations``). For each shard: its wall time (the whole pytest command), its
VMs and their measured boot-to-stop seconds. Balance is the longest shard over the mean shard (1.0 is
perfect); the longest shard is what a CI pipeline waits for, against the unsharded run and against the
longest single VM (no split of whole VMs can beat that).

On a shared machine the figures are noisy: run it with --runs 3 and read medians.

Usage: benchmarks/shard_balance.py [--shards N] [--runs R] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(ROOT / "vmm_flows")]


def run(work: Path, name: str, *args: str) -> tuple[float, dict[str, float]]:
    """Wall time of one pytest command and the VM durations it recorded in its own cache."""
    cache = work / f"cache-{name}"
    argv = [*PYTEST, f"--vm-artifacts={work / ('art-' + name)}", "-o", f"cache_dir={cache}", *args]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=work, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 5):
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(f"{name}: pytest exited {proc.returncode}")
    recorded = cache / "v" / "aero-virtio" / "vm-durations"
    return wall, json.loads(recorded.read_text()) if recorded.exists() else {}


def one_round(work: Path, shards: int, select: list[str]) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    full_wall, durations = run(work, "full", *select)
    shared = work / "vm-durations.json"
    shared.write_text(json.dumps(durations))
    longest_vm = max(durations.values(), default=0.0)
    print(f"unsharded: {full_wall:.1f} s wall, {len(durations)} VMs, longest VM {longest_vm:.1f} s")
    figures["full"] = [full_wall]
    for how, extra in (("estimates", []), ("recorded", [f"--vm-durations={shared}"])):
        walls = []
        for k in range(1, shards + 1):
            wall, vms = run(work, f"{how}-{k}", f"--vm-shard={k}/{shards}", *select, *extra)
            walls.append(wall)
            vm_text = ", ".join(f"{s:.1f} s" for s in sorted(vms.values(), reverse=True)) or "none"
            print(f"  by {how}: shard {k}/{shards}: {wall:.1f} s wall; VMs: {vm_text}")
        balance = max(walls) / statistics.mean(walls)
        print(
            f"  by {how}: longest shard {max(walls):.1f} s, shortest {min(walls):.1f} s, balance (max/mean) "
            f"{balance:.2f}; longest shard / unsharded {max(walls) / full_wall:.2f}"
        )
        figures[f"{how}-max"] = [max(walls)]
        figures[f"{how}-balance"] = [balance]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("-k", dest="expr", default=None, help="a -k selection of vmm_flows")
    args = parser.parse_args()
    select = ["-k", args.expr] if args.expr else []
    collected: dict[str, list[float]] = {}
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}")
        with tempfile.TemporaryDirectory(prefix="aero-shard-bench-") as tmp:
            for key, values in one_round(Path(tmp), args.shards, select).items():
                collected.setdefault(key, []).extend(values)
    print("medians: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in collected.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
