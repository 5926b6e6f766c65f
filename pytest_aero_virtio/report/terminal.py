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
        lines += _opt_in_lines(run)
    return lines


def _opt_in_lines(run: AeroRun) -> list[str]:
    """Why a fixed image is asked for what it may not be provisioned for: the opt-in checks selected."""
    assert run.plan is not None
    wanted = sorted({(what, check) for vm in run.plan.vms for what, check in vm.why if what.startswith("--")})
    how = (
        "sent through fw_cfg (opt/aero/args)"
        if run.settings.provisioning == "fw_cfg"
        else "NOT sent (--vm-provisioning=baked): the image must have them baked in"
    )
    if not wanted:
        return [f"aero-virtio: no opt-in check selected (base checks only); guest flags {how}"]
    checks = ", ".join(f"{check} ({flag})" for flag, check in wanted)
    return [
        f"aero-virtio: opt-in checks selected, their guest flags {how}: {checks}",
        "aero-virtio: a guest provisioned without a flag fails its check <CHECK>_SKIPPED; -m 'not aero_opt_in' "
        "selects the base checks only",
    ]


def _replay_header(run: AeroRun, verbose: bool) -> list[str]:
    """A replay boots nothing: say where each planned VM's recording comes from (or that there is none)."""
    lines = [f"aero-virtio: replaying {run.settings.replay} (no QEMU runs; tests without recorded evidence skip)"]
    if run.plan is not None:
        for vm in run.plan.vms:
            found = run.recordings().get(vm.id)
            lines += _vm_lines(vm, verbose)
            lines.append(f"    recording:   {found.label if found is not None else 'none: its tests skip'}")
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
        status = "boot failed" if pool.failed(handle.planned) else handle.status()
        out.append(f"{handle.planned.id}: {handle.artifacts.dir}  [{status}]")
    return out
