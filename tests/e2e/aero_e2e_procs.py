"""Finding QEMU processes by a marker in their command line (shared by the e2e tests)."""

from __future__ import annotations

import time
from pathlib import Path


def qemu_pids_with(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains ``marker``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and "qemu-system" in cmd and marker in cmd:
            out.append(int(entry.name))
    return out


def wait_gone(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = qemu_pids_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = qemu_pids_with(marker)
    return left


#: A boot sector that loops forever (``jmp $``) with the boot signature: a disk that boots and prints nothing
#: (a guest the plugin was not written for: hung at boot, a blank screen).
HANGING_BOOT_SECTOR = b"\xeb\xfe" + b"\0" * 508 + b"\x55\xaa"
