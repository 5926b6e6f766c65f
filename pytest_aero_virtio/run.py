"""The run as a whole: settings, the QEMU's capabilities, the accelerator, the plan and the pool of VMs.

One :class:`AeroRun` is made at collection (when a selected test needs a VM) and stashed on the pytest
config; the fixtures and the report hooks read it. Everything expensive (probing QEMU, the KVM probe,
booting) happens lazily, the first time something needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .plan import Plan, PlannedVm
from .pool import VmPool
from .qemu.accel import AccelChoice, kvm_device_usable, resolve_accel
from .qemu.caps import Caps, probe_cached
from .settings import Settings

__all__ = ["AeroRun"]


@dataclass
class AeroRun:
    """The run's settings, plan and (lazily) caps, accelerator and pool: stashed on the pytest config."""

    settings: Settings
    plan: Plan | None = None
    #: Writes a line to the user's terminal past pytest's capture (None when there is no terminal to use).
    say: Callable[[str], None] | None = None
    dry_run_lines: list[str] = field(default_factory=list)
    started_pool: VmPool | None = None
    _caps: Caps | None = None
    _accel: AccelChoice | None = None

    def caps(self) -> Caps:
        if self._caps is None:
            self._caps = probe_cached(self.settings.options.qemu)
        return self._caps

    def accel(self) -> AccelChoice:
        """The accelerator actually used, and why (``--vm-accel=auto`` boots a kernel under KVM once)."""
        if self._accel is None:
            o = self.settings.options
            kernel = o.kernel
            if o.accel == "auto" and kernel is None and kvm_device_usable():
                from .refenv.image import ensure_image

                kernel = ensure_image().kernel
            from .refenv.cache import cache_root

            self._accel = resolve_accel(o.accel, o.qemu, kernel, cache_root())
        return self._accel

    def has_sound(self) -> bool:
        return self.caps().has_device("virtio-sound-pci")

    def no_sound_reason(self) -> str:
        return (
            f"QEMU {self.settings.options.qemu} ({self.caps().version_str}) has no virtio-sound-pci "
            "(needs QEMU >= 8.2; the pinned reference QEMU has it): virtio-snd tests skipped"
        )

    def pool(self) -> VmPool:
        if self.started_pool is None:
            follow = self.say if self.settings.follow_serial else None
            self.started_pool = VmPool(self.settings, self.caps(), lambda: self.accel().name, follow, self.say)
        return self.started_pool

    def planned(self, nodeid: str) -> PlannedVm | None:
        if self.plan is None:
            return None
        try:
            return self.plan.vm_of(nodeid)
        except KeyError:
            return None
