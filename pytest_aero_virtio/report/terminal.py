"""What the terminal shows: the plan header, the dry run, the live serial follower and the VM summary.

Pure formatting over the run's objects; the plugin's hooks decide when each is printed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ..plan import PlannedVm
from ..pool import VmPool
from ..run import AeroRun
from ..vm import WORKER

__all__ = ["header_lines", "summary_lines", "terminal_writer"]


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
    if run.settings.replay is not None:
        return _replay_header(run, verbose)
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


def _replay_header(run: AeroRun, verbose: bool) -> list[str]:
    """A replay boots nothing: say where each planned VM's recording comes from (or that there is none)."""
    lines = [f"aero-virtio: replaying {run.settings.replay} (no QEMU runs; tests without recorded evidence skip)"]
    if run.plan is not None:
        for vm in run.plan.vms:
            found = run.recordings().get(vm.id)
            lines += _vm_lines(vm, verbose)
            lines.append(f"    recording:   {found.label if found is not None else 'none: its tests skip'}")
    return lines


def summary_lines(pool: VmPool) -> list[str]:
    """One line per VM booted: its artifact directory and how it ended."""
    out = []
    for handle in pool.booted:
        status = "boot failed" if pool.failed(handle.planned) else handle.status()
        out.append(f"{handle.planned.id}: {handle.artifacts.dir}  [{status}]")
    return out
