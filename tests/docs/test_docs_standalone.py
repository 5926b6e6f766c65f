"""The repository stands alone: no tracked file refers to team notes that are not part of it.

The names are assembled at run time so this file does not match itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("PROTOCOL" + ".md", "REFENV" + "-NOTES", "LAYOUT" + ".md", ".." + "/shared")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in out.split("\0") if name]


def test_no_file_mentions_the_team_notes() -> None:
    hits = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(ROOT)}: {name}" for name in FORBIDDEN if name in text]
    assert not hits, "say the facts (or point at docs/protocol.md) instead of: " + "; ".join(hits)
