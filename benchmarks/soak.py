#!/usr/bin/env python3
"""Soak: run the full ``vmm_flows`` N times and print every test whose outcome changed; asserts nothing.

A flaky check hides in a single green run. This runs the same suite again and again (each run a fresh pytest
with its own JUnit file and artifacts), then prints, per test, the sequence of outcomes when they differ
(``passed passed failed passed``) with the first line of each failure, plus each run's wall time and exit
status, and whether any QEMU or temp file outlived a run. Extra arguments go to pytest (``-n 2``,
``--qemu-system=...``, ``-k net``).

Usage: benchmarks/soak.py [--runs N] [--keep DIR] [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, first line of its message)."""
    if not junit.exists():
        return {}
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        verdict, first = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                verdict = tag
                first = ((node.text or node.get("message") or "").strip().splitlines() or [""])[0][:160]
                break
        out[name] = (verdict, first)
    return out


def leftover_qemus(marker: str) -> list[int]:
    """Live QEMUs whose command line has ``marker`` as a whole argument (the ``-name`` of one run: run 1's
    marker is a prefix of run 10's, so a substring test would count the wrong run's QEMU)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any("qemu-system" in a for a in args) and marker in args:
                found.append(int(entry.name))
    return found


def one_run(i: int, work: Path, extra: list[str]) -> tuple[dict[str, tuple[str, str]], float, int, str]:
    run_dir = work / f"run{i}"
    tmp = run_dir / "tmp"
    tmp.mkdir(parents=True)
    junit = run_dir / "junit.xml"
    marker = f"aero-soak-{os.getpid()}-{i}"
    argv = [
        sys.executable, "-m", "pytest", str(ROOT / "vmm_flows"), "-q", "-p", "no:cacheprovider",
        f"--junitxml={junit}", f"--vm-artifacts={run_dir / 'artifacts'}",
        "--qemu-extra-arg=-name", f"--qemu-extra-arg={marker}", *extra,
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True)
    wall = time.monotonic() - t0
    notes = []
    if leftover_qemus(marker):
        notes.append("QEMU left running!")
    left = [p for p in tmp.rglob("*") if not any(part.startswith("pytest-of-") for part in p.parts)]
    if left:
        notes.append(f"{len(left)} temp file(s) left!")
    return outcomes(junit), wall, proc.returncode, " ".join(notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="keep the runs' JUnit files and artifacts here")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="aero-soak-"))
    history: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i in range(args.runs):
        results, wall, rc, notes = one_run(i, work, args.pytest_args)
        failed = sum(v == "failure" or v == "error" for v, _ in results.values())
        print(
            f"run {i + 1}/{args.runs}: {wall:6.1f} s, exit {rc}, {len(results)} tests, {failed} failed {notes}",
            flush=True,
        )
        for name in set(history) | set(results):
            history[name].append(results.get(name, ("absent", "")))
    changed = {name: seq for name, seq in history.items() if len({v for v, _ in seq}) > 1}
    print(f"\n{len(history)} tests, {len(changed)} changed outcome across {args.runs} runs")
    for name, seq in sorted(changed.items()):
        print(f"  {name}: {' '.join(v for v, _ in seq)}")
        for v, first in dict.fromkeys(seq):
            if first and v != "passed":
                print(f"      {v}: {first}")
    print(f"\nJUnit files and artifacts: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
