"""The run's VMs: one per planned VM (live :class:`~pytest_aero_virtio.vm.VmHandle` or replayed
:class:`~pytest_aero_virtio.replay.RecordedVm`), booted lazily, stopped early.

A VM is booted by the first test that needs it and stopped as soon as the next test does not use it (or at
session end), so a run never holds more VMs than it is using. A VM that failed to boot is remembered: its
other tests fail at once with the same error instead of booting it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .config import VmConfig
from .errors import VM_BOOT_FAILED, AeroError, AeroFailure, EvidenceMissing
from .plan import PlannedVm
from .vmbase import VmBase

__all__ = ["VmPool"]


class VmPool:
    """Boots each planned VM on first use, remembers boot failures, stops VMs after their last test."""

    def __init__(
        self, make: Callable[[PlannedVm], VmBase], on_stopped: Callable[[VmConfig, float], None] | None = None
    ) -> None:
        """``make`` builds the (not yet started) VM of a plan entry: a live one, or a replay. ``on_stopped`` is
        told each booted VM's boot-to-stop seconds (sharding records them)."""
        self._make = make
        self._on_stopped = on_stopped
        self._handles: dict[PlannedVm, VmBase] = {}
        self._failed: dict[PlannedVm, AeroError] = {}
        self._released: set[PlannedVm] = set()
        #: Every VM booted so far, in boot order (a VM booted twice appears twice).
        self.booted: list[VmBase] = []

    def get(self, planned: PlannedVm) -> VmBase:
        """The running VM for ``planned``, booting it now if this is its first test (or if it was stopped
        because other tests ran in between, as after ``--ff`` reordering)."""
        if planned in self._failed:
            raise self._failed[planned]
        handle = self._handles.get(planned)
        if handle is None or planned in self._released:
            self._released.discard(planned)
            try:
                handle = self._make(planned)
                self._handles[planned] = handle
                self.booted.append(handle)
                handle.start()
            except EvidenceMissing:
                raise  # a replay without this VM: its tests skip, nothing failed
            except AeroError as exc:
                self._failed[planned] = exc
                raise
            except Exception as exc:  # an OSError preparing the overlay, a bug: keep the cause, never retry blind
                failure = AeroFailure(
                    VM_BOOT_FAILED,
                    f"the VM {planned.id} could not be started: {type(exc).__name__}: {exc}",
                    fix="see the cause above; the VM's artifacts, if any, are under --vm-artifacts",
                )
                self._failed[planned] = failure
                raise failure from exc
        return handle

    def handle(self, planned: PlannedVm) -> VmBase | None:
        """The VM booted for ``planned`` (running or already stopped), or None if it never booted."""
        return self._handles.get(planned)

    def release(self, planned: PlannedVm) -> None:
        """No test needs this VM next: stop it now rather than at session end."""
        handle = self._handles.get(planned)
        if handle is not None and planned not in self._released:
            self._released.add(planned)
            handle.stop()
            if self._on_stopped is not None and handle.started_at and planned not in self._failed:
                self._on_stopped(planned.config, time.monotonic() - handle.started_at)

    def close_all(self) -> None:
        for planned in list(self._handles):
            self.release(planned)

    def in_use(self, planned: PlannedVm) -> VmBase | None:
        """The VM booted for ``planned`` while it is in use (None before its boot and after its release)."""
        return None if planned in self._released else self._handles.get(planned)

    def failed(self, planned: PlannedVm) -> bool:
        return planned in self._failed
