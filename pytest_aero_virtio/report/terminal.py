"""What the terminal shows: the plan header, the dry run, the live serial follower and the VM summary.

Pure formatting over the run's objects; the plugin's hooks decide when each is printed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..plan import PlannedVm
from ..pool import VmPool
from ..run import AeroRun
from ..vm import WORKER

__all__ = ["header_lines", "snapshot_off_lines", "summary_lines", "terminal_writer"]


def terminal_writer(fd: int) -> Callable[[str], None]:
    """Write lines live to ``fd`` (the terminal pytest started on, past its capture), prefixed with the xdist
    worker: the followed serial port, progress and warnings reach the user while a test runs, also under -n."""
    prefix = f"[{WORKER}] " if WORKER != "main" else ""

    def write(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, f"{prefix}{line}\n".encode(errors="replace"))

    return write


def _vm_lines(vm: PlannedVm, verbose: bool) -> list[str]:
    return [f"  {vm.id}: {len(vm.tests)} test(s)", *(f"    {line}" for line in vm.describe(verbose))]


def header_lines(run: AeroRun, verbose: bool = False) -> list[str]:
    """The report header: QEMU (path, version), accelerator and why, image, and the planned VMs."""
    o = run.settings.options
    guest = " (reference guest)" if run.settings.reference_guest else ""
    lines = [
        f"aero-virtio: QEMU {run.caps().version_str} at {o.qemu}",
        f"aero-virtio: accel {run.accel()}",
        f"aero-virtio: image {o.image}{guest}, snapshot {'on' if o.snapshot else 'OFF: the guest writes the image'}",
    ]
    if o.kernel is not None:
        lines.append(f"aero-virtio: direct kernel boot {o.kernel}")
    if run.plan is not None:
        lines.append(f"aero-virtio: {len(run.plan.vms)} VM(s) planned for {len(run.plan.order)} test(s)")
        for vm in run.plan.vms:
            lines += _vm_lines(vm, verbose)
    return lines


def snapshot_off_lines(raw: Mapping[str, Any]) -> list[str]:
    """The one warning of ``--vm-snapshot=off`` from the raw option values (where no plan header is printed)."""
    if raw.get("vm_snapshot") != "off":
        return []
    image = raw.get("vm_image") or "the reference guest's image"
    return [f"aero-virtio: --vm-snapshot=off: the guests write {image} (no overlay takes their writes)"]


def summary_lines(pool: VmPool) -> list[str]:
    """One line per VM booted: its artifact directory and how it ended."""
    out = []
    for handle in pool.booted:
        status = "boot failed" if pool.failed(handle.planned) else handle.session.ending or "running"
        out.append(f"{handle.planned.id}: {handle.artifacts.dir}  [{getattr(status, 'value', status)}]")
    return out
