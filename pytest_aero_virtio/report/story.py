"""INFO-level log records for every phase of a VM, so ``--log-cli-level=INFO`` tells a run's story.

The phases: boot (QEMU spawned), QMP up, the guest's START and CONFIG, each READY line and the host's answer
to it (with the latency), RESULT, and the stop with how QEMU ended. Boot, QMP up and stop are logged by
:class:`~pytest_aero_virtio.vm.VmHandle`; the rest comes from the marker stream through :class:`StoryLog`, a
stream subscriber (it runs on the VM loop, so it only formats and logs).

Logger names are ``pytest_aero_virtio.*``: ``--log-cli-level=INFO`` shows them live, a ``log_level`` ini
setting puts them in pytest's captured log of a failing test.
"""

from __future__ import annotations

import logging

from ..markers import HostMarker, Marker, StreamItem

__all__ = ["LOG", "StoryLog"]

LOG = logging.getLogger("pytest_aero_virtio.vm")


class StoryLog:
    """Logs a VM's milestones from its marker stream (subscribe :meth:`__call__`)."""

    def __init__(self, vm: str, t0: float = 0.0) -> None:
        self.vm = vm
        #: When QEMU started (``time.monotonic()``); set at boot, so records carry the VM's own clock.
        self.t0 = t0
        self._ready_at: float | None = None
        self._ready_name = ""

    def _at(self, t: float) -> str:
        return f"{t - self.t0:7.2f}s" if self.t0 else "       "

    def __call__(self, item: StreamItem) -> None:
        if isinstance(item, HostMarker):
            self._host(item)
        elif item.kind in ("START", "CONFIG"):
            LOG.info("%s %s: guest %s %s", self.vm, self._at(item.t), item.kind, _fields(item))
        elif item.kind == "RESULT":
            LOG.info("%s %s: guest RESULT %s", self.vm, self._at(item.t), item.status)
        elif item.kind == "TEST" and (item.status or "").upper() == "READY":
            self._ready_at, self._ready_name = item.t, item.name or "?"
            LOG.info("%s %s: guest %s READY, waiting for the host", self.vm, self._at(item.t), item.name)
        elif item.kind == "TEST":
            LOG.debug("%s %s: guest %s %s", self.vm, self._at(item.t), item.name, item.status)

    def _host(self, hm: HostMarker) -> None:
        after = ""
        if self._ready_at is not None:
            after = f" ({(hm.t - self._ready_at) * 1000:.0f} ms after {self._ready_name} READY)"
        LOG.info("%s %s: host %s%s", self.vm, self._at(hm.t), hm.line(), after)


def _fields(marker: Marker) -> str:
    return " ".join(f"{k}={v}" for k, v in list(marker.fields.items())[:8])
