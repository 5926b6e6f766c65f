"""What a test of ``vmm_flows`` talks to: :class:`AeroVm` (one VM, seen from one test) and :class:`AeroDevice`.

Every assertion helper here fails the test with the protocol's token first (``FAIL: VIRTIO_BLK_RESIZE_SKIPPED:
...``), the tail of the serial log and the artifact paths, and records what it saw as JUnit properties
(the marker's fields, the serial log path, the host markers), so a CI reader needs nothing but the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from . import requirements
from .audio import WavFigures, analyse_wav, check_tone
from .checks import lookup
from .errors import QEMU_PCI_PREFLIGHT_FAILED, WAV_CHECK_FAILED, AeroError, AeroFailure, name_token
from .markers import HostMarker, Marker

if TYPE_CHECKING:
    from .config import RunOptions, VmConfig
    from .pool import VmHandle

#: Modern-only virtio-pci device IDs by device group, keyed by our QEMU device ids (PROTOCOL.md section 5).
MODERN_IDS: dict[str, dict[str, int]] = {
    "blk": {"vblk0": 0x1042},
    "net": {"vnet0": 0x1041},
    "input": {"vkbd0": 0x1052, "vmouse0": 0x1052},
    "snd": {"vsnd0": 0x1059},
}
#: Transitional (legacy + modern) device IDs, for stock-driver comparisons.
TRANSITIONAL_IDS: dict[str, dict[str, int]] = {
    "blk": {"vblk0": 0x1001},
    "net": {"vnet0": 0x1000},
    "input": {"vkbd0": 0x1052, "vmouse0": 0x1052},  # virtio-input has no legacy ID
}
VIRTIO_VENDOR = 0x1AF4


def expected_irq_mode(vectors: int | None) -> str:
    """The interrupt mode a guest must report for a device given ``vectors`` (0 forces INTx)."""
    return "intx" if vectors == 0 else "msix"


@contextmanager
def _verdict(vm: AeroVm) -> Iterator[None]:
    """Turn an AeroError into a pytest failure whose first line is ``FAIL: TOKEN: message``."""
    try:
        yield
    except AeroFailure as exc:
        pytest.fail(str(exc.with_context(vm.handle.serial_tail(), vm.handle.artifact_paths())), pytrace=False)
    except AeroError as exc:
        pytest.fail(str(exc), pytrace=False)


class AeroVm:
    """One VM as one test sees it: waits, assertions and QMP, with JUnit properties recorded on the test."""

    def __init__(self, handle: VmHandle, node: pytest.Item) -> None:
        self.handle = handle
        self._node = node
        self._record("aero_vm", str(handle.config))
        self._record("serial_log", str(handle.artifacts.serial))

    # -- what the VM is ---------------------------------------------------------------------------------
    @property
    def config(self) -> VmConfig:
        return self.handle.config

    @property
    def options(self) -> RunOptions:
        return self.handle.options

    @property
    def http_port(self) -> int:
        return self.handle.http_port

    @property
    def udp_port(self) -> int:
        return self.handle.udp_port

    # -- assertions -------------------------------------------------------------------------------------
    def expect_pass(self, name: str) -> Marker:
        """Wait for the final status of ``name`` and require PASS (SKIP, FAIL and absence fail with tokens)."""
        with _verdict(self):
            marker = self.handle.wait_final(name)
            requirements.require(lookup(name), marker, expect="pass")
            self._record_marker(marker)
            return marker
        raise AssertionError("unreachable")  # pragma: no cover

    def expect_info(self, name: str) -> Marker:
        """Wait for an informational check; SKIP and FAIL fail, INFO and PASS are accepted."""
        with _verdict(self):
            marker = self.handle.wait_final(name)
            requirements.require(lookup(name), marker, expect="info")
            self._record_marker(marker)
            return marker
        raise AssertionError("unreachable")  # pragma: no cover

    def expect_result(self) -> Marker:
        """``RESULT|PASS`` plus the per-test markers that must accompany it (base checks + this VM's opt-ins)."""
        with _verdict(self):
            result = self.handle.wait_result()
            requirements.require_result(result, self.handle.stream.final, self.handle.required_checks())
            self._record("result", result.raw)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def expect_config(self) -> Marker:
        """The guest's CONFIG line (it comes first, right after START)."""
        with _verdict(self):
            return self.handle.wait_config()
        raise AssertionError("unreachable")  # pragma: no cover

    def expect_host(self, topic: str, status: str) -> HostMarker:
        """The latest host marker of ``topic`` must have ``status`` (host markers record what the host did)."""
        # The host records an action's outcome after QEMU's reply, which can come just after the guest's verdict:
        # give it a moment before deciding.
        deadline = time.monotonic() + 5.0
        while True:
            found = [h for h in self.handle.host_markers() if h.topic == topic]
            if any(h.status == status for h in found) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not found:
            pytest.fail(
                f"FAIL: MISSING_HOST_{topic}: the host never recorded {topic}; "
                f"see {self.handle.artifacts.host_markers}",
                pytrace=False,
            )
        matching = [h for h in found if h.status == status]
        chosen = matching[-1] if matching else found[-1]
        self._record(f"host.{topic}.{chosen.status}", chosen.line())
        if not matching:
            seen = ", ".join(h.line() for h in found)
            pytest.fail(
                f"FAIL: {topic}_{chosen.status}: the host never recorded {status}; it recorded: {seen}",
                pytrace=False,
            )
        return chosen

    def host_markers(self, topic: str | None = None) -> list[HostMarker]:
        return [h for h in self.handle.host_markers() if topic is None or h.topic == topic]

    # -- host-side observations ----------------------------------------------------------------------------
    def udp_datagrams(self) -> int:
        """How many datagrams the host's UDP echo answered for this VM."""
        return self.handle.udp_datagrams()

    def http_statuses(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every HTTP request the host served for this VM."""
        return self.handle.http_statuses()

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command on this VM (on its event loop) and return QEMU's answer."""
        with _verdict(self):
            return self.handle.qmp(command, arguments or None)
        raise AssertionError("unreachable")  # pragma: no cover

    def pci_preflight(self, expected: Mapping[str, int], mode: str = "modern") -> None:
        """QEMU's ``query-pci`` must show our devices with the virtio vendor and the expected device IDs.

        ``query-pci`` has no revision field and no MSI-X state (PROTOCOL.md section 6), so IDs are all a
        host-side preflight can check honestly.
        """
        with _verdict(self):
            seen = self.handle.pci_devices()
            problems: list[str] = []
            for qdev_id, device_id in expected.items():
                dev = seen.get(qdev_id)
                if dev is None:
                    problems.append(f"{qdev_id}: not on the PCI bus")
                elif dev != (VIRTIO_VENDOR, device_id):
                    problems.append(
                        f"{qdev_id}: {dev[0]:04x}:{dev[1]:04x}, expected {VIRTIO_VENDOR:04x}:{device_id:04x}"
                    )
            status = "FAIL" if problems else "PASS"
            devices = ",".join(f"{d:04x}" for d in expected.values())
            self.handle.record_host(
                HostMarker("QEMU_PCI_PREFLIGHT", status, {"mode": mode, "vendor": "1af4", "devices": devices})
            )
            if problems:
                raise AeroFailure(QEMU_PCI_PREFLIGHT_FAILED, "; ".join(problems))

    def check_wav(self, expect_hz: float = 440.0) -> WavFigures:
        """Let the VM finish (the WAV header is written on a clean QEMU exit), then check the recording."""
        with _verdict(self):
            path = self.handle.finish_for_wav()
            figures = analyse_wav(path)
            for key, value in figures.as_properties().items():
                self._record(f"wav.{key}", value)
            problems = check_tone(figures, expect_hz=expect_hz)
            if problems:
                raise AeroFailure(WAV_CHECK_FAILED, f"{path}: " + "; ".join(problems))
            return figures
        raise AssertionError("unreachable")  # pragma: no cover

    # -- JUnit ------------------------------------------------------------------------------------------------
    def _record(self, key: str, value: object) -> None:
        prop = (key, str(value))
        if prop not in self._node.user_properties:
            self._node.user_properties.append(prop)

    def _record_marker(self, marker: Marker) -> None:
        """The marker's status and fields, and the host markers of the same device so far (``VIRTIO_BLK_*``
        for ``virtio-blk-*``: the injections, resizes and mirrored diagnostics a CI reader wants beside it)."""
        self._record(f"{marker.name}.status", marker.status)
        for key, value in marker.fields.items():
            self._record(f"{marker.name}.{key}", value)
        device_topic = name_token("-".join((marker.name or "").split("-")[:2]))
        for hm in self.handle.host_markers():
            if hm.topic.startswith(device_topic):
                self._record(f"host.{hm.topic}", hm.line())


class AeroDevice:
    """A VM seen through one device group (``virtio_blk``, ``virtio_net``, ...): the device fixtures."""

    def __init__(self, vm: AeroVm, device: str) -> None:
        self.vm = vm
        self.device = device

    def expect_pass(self, name: str) -> Marker:
        return self.vm.expect_pass(name)

    def expect_info(self, name: str) -> Marker:
        return self.vm.expect_info(name)

    def pci_preflight(self, expected: Mapping[str, int], mode: str = "modern") -> None:
        self.vm.pci_preflight(expected, mode)

    def __repr__(self) -> str:
        return f"AeroDevice({self.device}, {self.vm.config})"


__all__ = [
    "MODERN_IDS",
    "TRANSITIONAL_IDS",
    "AeroDevice",
    "AeroVm",
    "expected_irq_mode",
]
