"""Root conftest: what every test run in this repository shares.

The plugin itself is loaded through its ``pytest11`` entry point (``pip install -e .``), exactly as users get
it; nothing here changes its behaviour. This file only adds the repository's own guard: after a session,
no QEMU process started by this session may still be alive (the plugin's promise, checked on every run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: pytester runs the plugin end to end in child pytest processes (tests/e2e).
pytest_plugins = ["pytester"]


def _qemu_children_of(pid: int) -> list[int]:
    """PIDs of live qemu-system processes whose parent chain reaches ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        names[int(entry.name)] = cmd
    found = []
    for p, cmd in names.items():
        if "qemu-system" not in cmd:
            continue
        q = p
        while q > 1:
            q = parents.get(q, 0)
            if q == pid:
                found.append(p)
                break
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _qemu_children_of(os.getpid())
    if left:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"ERROR: QEMU processes outlived the session: {left}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
