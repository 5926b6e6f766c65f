"""The run as a whole: settings, the QEMU's capabilities, the accelerator, the plan and the pool of VMs.

One :class:`AeroRun` is made at collection (when a selected test needs a VM) and stashed on the pytest
config; the fixtures and the report hooks read it. Everything expensive (probing QEMU, the KVM probe,
booting) happens lazily, the first time something needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import VmConfig
from .errors import EvidenceMissing
from .plan import Plan, PlannedVm
from .pool import VmPool
from .qemu.accel import AccelChoice, find_probe_kernel, kvm_device_usable, resolve_accel
from .qemu.caps import Caps, probe_cached
from .replay import RecordedVm, Recording, assign_recordings, find_recordings
from .settings import Settings
from .vm import VmHandle
from .vmbase import VmBase

__all__ = ["AeroRun"]


@dataclass
class AeroRun:
    """The run's settings, plan and (lazily) caps, accelerator and pool: stashed on the pytest config."""

    settings: Settings
    plan: Plan | None = None
    #: Writes a line to the user's terminal past pytest's capture (None when there is no terminal to use).
    say: Callable[[str], None] | None = None
    #: Told each VM's boot-to-stop seconds when it stops (sharding records them as durations).
    on_vm_stopped: Callable[[VmConfig, float], None] | None = None
    dry_run_lines: list[str] = field(default_factory=list)
    started_pool: VmPool | None = None
    _caps: Caps | None = None
    _accel: AccelChoice | None = None
    _recordings: dict[str, Recording] | None = None

    def caps(self) -> Caps:
        if self._caps is None:
            self._caps = probe_cached(self.settings.options.qemu)
        return self._caps

    def accel(self) -> AccelChoice:
        """The accelerator actually used, and why (``--vm-accel=auto`` boots a kernel under KVM once)."""
        if self._accel is None:
            from .refenv.cache import cache_root
            from .refenv.image import ensure_image, iter_entries

            o = self.settings.options
            kernel = o.kernel
            if o.accel == "auto" and kvm_device_usable():
                bases = sorted(iter_entries(cache_root(), ("base",)), key=lambda p: p.stat().st_mtime, reverse=True)
                cached = [entry / "vmlinuz" for entry in bases]
                host = Path("/boot") / f"vmlinuz-{os.uname().release}"
                build = lambda: ensure_image().kernel  # noqa: E731
                kernel = find_probe_kernel(o.kernel, o.image is not None, build, [*cached, host])
            self._accel = resolve_accel(o.accel, o.qemu, kernel, cache_root())
        return self._accel

    def has_sound(self) -> bool:
        """Whether sound tests can run: a replay judges whatever was recorded, a live run needs QEMU >= 8.2."""
        return self.settings.replay is not None or self.caps().has_device("virtio-sound-pci")

    def no_sound_reason(self) -> str:
        return (
            f"QEMU {self.settings.options.qemu} ({self.caps().version_str}) has no virtio-sound-pci "
            "(needs QEMU >= 8.2; the pinned reference QEMU has it): virtio-snd tests skipped"
        )

    def pool(self) -> VmPool:
        if self.started_pool is None:
            make = self._replayed if self.settings.replay is not None else self._live
            self.started_pool = VmPool(make, self.on_vm_stopped)
        return self.started_pool

    def _live(self, planned: PlannedVm) -> VmBase:
        follow = self.say if self.settings.options.follow_serial else None
        return VmHandle(self.settings, planned, self.caps(), self.accel().name, follow, self.say)

    def recordings(self) -> dict[str, Recording]:
        """Planned VM id -> its recording (``--vm-replay``); VMs not recorded are absent."""
        assert self.settings.replay is not None and self.plan is not None
        if self._recordings is None:
            self._recordings = assign_recordings(self.plan.vms, find_recordings(self.settings.replay))
        return self._recordings

    def _replayed(self, planned: PlannedVm) -> VmBase:
        recording = self.recordings().get(planned.id)
        if recording is None:
            raise EvidenceMissing(
                f"{planned.id} ({planned.devices()}) was not recorded under {self.settings.replay}: no VM there ran "
                "these tests with this configuration"
            )
        return RecordedVm(self.settings, planned, recording)
