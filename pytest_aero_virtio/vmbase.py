"""What a test sees of one VM, live or replayed: the waits on its marker stream and its host-side facts.

:class:`VmBase` holds everything that only needs the stream and the artifacts, so a live VM
(:class:`~pytest_aero_virtio.vm.VmHandle`) and a recorded one (:class:`~pytest_aero_virtio.replay.RecordedVm`)
give the same verdicts through the same code. The host-side observations (HTTP, UDP, QMP, the WAV) are
abstract here: a live VM asks its services and QEMU, a replay reads the logs, or says what was not recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .artifacts import ArtifactDir
from .checks import GuestCheck, lookup
from .config import RunOptions, VmConfig
from .markers import VERDICTS, HostMarker, Marker
from .plan import PlannedVm, required_checks
from .report.screens import latest_screenshot, screen_path
from .settings import Settings
from .stream import MarkerStream

__all__ = ["VmBase", "pci_ids"]


def pci_ids(query_pci_reply: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """qdev id -> (vendor, device) from a QMP ``query-pci`` reply, bridges included (pure)."""
    out: dict[str, tuple[int, int]] = {}

    def walk(devices: list[dict[str, Any]]) -> None:
        for dev in devices:
            ident = dev.get("id", {})
            qdev = dev.get("qdev_id") or ""
            if qdev:
                out[qdev] = (int(ident.get("vendor", 0)), int(ident.get("device", 0)))
            walk(dev.get("pci_bridge", {}).get("devices", []))

    for bus in query_pci_reply:
        walk(bus.get("devices", []))
    return out


class VmBase:
    """One planned VM seen through its stream. Subclasses supply the host-side facts and the lifecycle."""

    settings: Settings
    planned: PlannedVm
    config: VmConfig
    artifacts: ArtifactDir
    stream: MarkerStream
    started_at: float = 0.0
    deadline: float = 0.0

    @property
    def options(self) -> RunOptions:
        return self.settings.options

    def ports(self) -> tuple[int, int]:
        """(HTTP, UDP): the host ports the guest was told, live, or that the recorded host served."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> str:
        raise NotImplementedError

    def status(self) -> str:
        """How this VM ended, for the run summary."""
        raise NotImplementedError

    def allow_quiet(self, seconds: float) -> None:
        """A check that legitimately prints nothing for a while (live VMs: the silence timeout ignores the next
        ``seconds``; a recording has no silence to watch)."""

    # -- waits ----------------------------------------------------------------------------------------------
    def remaining(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def wait_final(self, name: str) -> Marker:
        """The check's final marker. INFO ends the wait only for informational checks: a PASS check may
        print INFO progress lines before its verdict."""
        if lookup(name).expect == "info":
            return self.stream.wait_final(name, self.remaining())
        return self.stream.wait_final(name, self.remaining(), statuses=VERDICTS)

    def wait_result(self) -> Marker:
        return self.stream.wait_result(self.remaining())

    def wait_config(self) -> Marker:
        return self.stream.wait_for(lambda m: m.kind == "CONFIG", self.remaining(), "the guest's CONFIG line")

    def required_checks(self) -> list[GuestCheck]:
        """Checks that must accompany RESULT|PASS on this VM (see :func:`plan.required_checks`)."""
        return required_checks(self.config)

    # -- what the host saw ----------------------------------------------------------------------------------
    def screenshot(self, reason: str) -> Path | None:
        """A PNG of the VM's display now; None when there is no running QEMU to ask (always, for a replay)."""
        return None

    def latest_screenshot(self) -> Path | None:
        """The newest screenshot in the VM's directory (a replay shows what the recorded run took)."""
        return latest_screenshot(self.artifacts.dir)

    def failure_screenshot(self, test: str) -> Path | None:
        """The screenshot of a failed test: taken now while QEMU runs (once per test), else the newest one."""
        path = screen_path(self.artifacts, f"fail-{test}")
        if path.exists():
            return path
        return self.screenshot(f"fail-{test}") or self.latest_screenshot()

    def serial_tail(self) -> list[str]:
        return self.stream.tail()

    def artifact_paths(self) -> dict[str, Path]:
        return self.artifacts.paths(existing_only=True)

    def host_markers(self) -> list[HostMarker]:
        return self.stream.host_markers

    def require_host_evidence(self) -> None:
        """Raise :class:`~pytest_aero_virtio.errors.EvidenceMissing` when what the host did is unknown (a
        replayed bare serial log); a live VM always knows."""

    def record_host(self, hm: HostMarker) -> None:
        """A host-side check's outcome (the PCI preflight): into the stream, which logs it like any other."""
        self.stream.add_host(hm)

    def udp_datagrams(self) -> int:
        raise NotImplementedError

    def http_statuses(self) -> list[tuple[str, str, int]]:
        raise NotImplementedError

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        raise NotImplementedError

    def pci_devices(self) -> dict[str, tuple[int, int]]:
        """qdev id -> (vendor, device) of every PCI function, as QEMU's ``query-pci`` reported it at boot."""
        raise NotImplementedError

    def finish_for_wav(self) -> Path:
        """The recorded WAV once it is complete (a live VM waits for QEMU's clean exit)."""
        raise NotImplementedError
