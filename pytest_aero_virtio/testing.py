"""What a test of ``vmm_flows`` talks to: :class:`AeroVm` (one VM, seen from one test) and :class:`AeroDevice`.

Every assertion helper here raises the protocol's tokened error (``FAIL: VIRTIO_BLK_RESIZE_SKIPPED: ...``);
the plugin turns an error escaping a test into one clean failure with the tail of the serial log and the
artifact paths. What a helper saw is recorded as JUnit properties (the marker's fields, the serial log path,
the host markers), so a CI reader needs nothing but the report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from . import requirements
from .actions import topics
from .audio import WavFigures, analyse_wav, check_tone
from .checks import Device, lookup
from .errors import (
    HOST_HTTP_NOT_SEEN,
    HOST_UDP_NOT_SEEN,
    QEMU_PCI_PREFLIGHT_FAILED,
    WAV_CHECK_FAILED,
    AeroConfigError,
    AeroFailure,
    host_status_token,
    missing_host_token,
    name_token,
)
from .markers import HostMarker, Marker

if TYPE_CHECKING:
    from pathlib import Path

    from .config import RunOptions, VmConfig
    from .plan import Plan, PlannedVm
    from .vmbase import VmBase

#: Modern-only virtio-pci device IDs by device group, keyed by our QEMU device ids (docs/protocol.md).
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


def checks_of(node: pytest.Item) -> tuple[str, ...]:
    """The check names a test declared with ``@pytest.mark.aero_check(...)`` (closest marker). Arguments that
    are not strings are left out: the plugin rejects them as a usage error once collection is done."""
    marker = node.get_closest_marker("aero_check")
    return tuple(n for n in marker.args if isinstance(n, str)) if marker is not None else ()


class AeroVm:
    """One VM as one test sees it: waits, assertions and QMP, with JUnit properties recorded on the test.

    ``planned`` is this VM's entry in the run's plan (its id, devices, guest flags, reactions and why), and
    ``plan`` the whole plan, so a test (or a reader in a debugger) can see which VM it got and why.
    """

    def __init__(self, handle: VmBase, node: pytest.Item, plan: Plan | None = None) -> None:
        self.handle = handle
        self.plan = plan
        self._node = node
        self.checks = checks_of(node)
        #: What the VM is: its configuration and the run's options.
        self.config: VmConfig = handle.config
        self.options: RunOptions = handle.options
        self._record("aero_vm", f"{handle.planned.id}: {handle.planned.devices()}")
        self._record("serial_log", str(handle.artifacts.serial))

    @property
    def planned(self) -> PlannedVm:
        return self.handle.planned

    def ports(self) -> tuple[int, int]:
        """(HTTP, UDP): the host ports the guest was told (replayed: the ports the recorded host served)."""
        return self.handle.ports()

    def __repr__(self) -> str:
        return f"<AeroVm {self.planned.id}: {'; '.join(self.planned.describe()[:3])}>"

    def check_name(self, name: str | None, device: str | None = None) -> str:
        """The check a call asserts: the test's own single ``aero_check`` by default, else ``name``, which must
        be one the test declared (and, through a device fixture, one of that device). Mistakes are usage
        errors at once, not a failure after the guest's RESULT."""
        where = self._node.nodeid
        if name is None:
            if len(self.checks) != 1:
                raise AeroConfigError(
                    f"{where}: name the check to assert: the test declares {len(self.checks)} checks "
                    f"({', '.join(self.checks) or 'none'})",
                    fix="call expect_pass('<check>') with one of them, or mark the test with exactly one",
                )
            name = self.checks[0]
        elif name not in self.checks:
            raise AeroConfigError(
                f"{where} asserts {name!r}, which its aero_check does not name ({', '.join(self.checks) or 'none'})",
                fix=f"add it: @pytest.mark.aero_check({name!r}, ...): the plan provisions only what a test names",
            )
        if device is not None and lookup(name).device != device:
            raise AeroConfigError(
                f"{where}: the virtio_{device} fixture cannot assert {name!r}, a {lookup(name).device} check",
                fix=f"use the virtio_{lookup(name).device} fixture (or aero_vm) for it",
            )
        return name

    # -- assertions -------------------------------------------------------------------------------------
    def expect_pass(self, name: str | None = None) -> Marker:
        """Wait for the final status of the test's check (or ``name``) and require PASS; SKIP, FAIL and
        absence fail with their tokens."""
        return self._expect(name, "pass")

    def expect_info(self, name: str | None = None) -> Marker:
        """Wait for an informational check; SKIP and FAIL fail, INFO and PASS are accepted."""
        return self._expect(name, "info")

    def _expect(self, name: str | None, expect: requirements.Expect, device: str | None = None) -> Marker:
        check = self.check_name(name, device)
        marker = self.handle.wait_final(check)
        requirements.require(lookup(check), marker, expect=expect)
        self._record_marker(marker)
        return marker

    def expect_result(self) -> Marker:
        """``RESULT|PASS`` plus the per-test markers that must accompany it (base checks + this VM's opt-ins)."""
        result = self.handle.wait_result()
        stream = self.handle.stream
        requirements.raise_first(requirements.result_problems(result, stream.final, self.handle.required_checks()))
        self._record("result", result.raw)
        return result

    def expect_config(self) -> Marker:
        """The guest's CONFIG line (it comes first, right after START)."""
        return self.handle.wait_config()

    def expect_host(self, topic: str, status: str) -> HostMarker:
        """The latest host marker of ``topic`` must have ``status`` (host markers record what the host did)."""
        self.handle.require_host_evidence()
        # The host records an action's outcome after QEMU's reply, which can come just after the guest's verdict:
        # give it a moment before deciding.
        deadline = time.monotonic() + 5.0
        while True:
            found = [h for h in self.handle.host_markers() if h.topic == topic]
            if any(h.status == status for h in found) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not found:
            raise AeroFailure(
                missing_host_token(topic),
                f"the host never recorded {topic}; see {self.handle.artifacts.host_markers}",
            )
        matching = [h for h in found if h.status == status]
        chosen = matching[-1] if matching else found[-1]
        self._record(f"host.{topic}.{chosen.status}", chosen.line())
        if not matching:
            seen = ", ".join(h.line() for h in found)
            raise AeroFailure(
                host_status_token(topic, chosen.status),
                f"the host never recorded {status}; it recorded: {seen}",
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

    def expect_udp_echoes(self, minimum: int) -> int:
        """The host's UDP echo must have answered at least ``minimum`` datagrams (a passing guest sent them)."""
        echoed = self.handle.udp_datagrams()
        if echoed < minimum:
            raise AeroFailure(
                HOST_UDP_NOT_SEEN,
                f"the guest passed its UDP check, but the host's echo answered {echoed} datagram(s), "
                f"not at least {minimum}; see {self.handle.artifacts.http}",
                fix="is the guest echoing against another host or port (its CONFIG line), or faking the result?",
            )
        return echoed

    def expect_http(self, method: str, path: str, status: int = 200) -> None:
        """The host's HTTP server must have answered ``method path`` with ``status``."""
        seen = self.handle.http_statuses()
        if (method, path, status) not in seen:
            saw = ", ".join(f"{m} {p} {s}" for m, p, s in seen[:10]) or "no request at all"
            raise AeroFailure(
                HOST_HTTP_NOT_SEEN,
                f"the guest passed, but the host's HTTP log has no {method} {path} answered {status}; it saw: {saw}",
                fix="the guest must fetch the URL of its CONFIG line from the host (10.0.2.2); see http.log",
            )

    def allow_quiet(self, seconds: float) -> None:
        """This test's check legitimately prints nothing for a while: the silence timeout (and its warning)
        ignore the next ``seconds``."""
        self.handle.allow_quiet(seconds)

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command on this VM (on its event loop) and return QEMU's answer."""
        return self.handle.qmp(command, arguments or None)

    def pci_preflight(self, expected: Mapping[str, int], mode: str = "modern") -> None:
        """QEMU's ``query-pci`` must show our devices with the virtio vendor and the expected device IDs.

        ``query-pci`` has no revision field and no MSI-X state (docs/protocol.md), so IDs are all a
        host-side preflight can check honestly.
        """
        seen = self.handle.pci_devices()
        problems: list[str] = []
        for qdev_id, device_id in expected.items():
            dev = seen.get(qdev_id)
            if dev is None:
                problems.append(f"{qdev_id}: not on the PCI bus")
            elif dev != (VIRTIO_VENDOR, device_id):
                problems.append(f"{qdev_id}: {dev[0]:04x}:{dev[1]:04x}, expected {VIRTIO_VENDOR:04x}:{device_id:04x}")
        status = "FAIL" if problems else "PASS"
        devices = ",".join(f"{d:04x}" for d in expected.values())
        self.handle.record_host(
            HostMarker(topics.PCI_PREFLIGHT, status, {"mode": mode, "vendor": "1af4", "devices": devices})
        )
        if problems:
            raise AeroFailure(QEMU_PCI_PREFLIGHT_FAILED, "; ".join(problems))

    def screenshot(self, reason: str = "test") -> Path | None:
        """A PNG of the VM's display now, ``<vm dir>/screen-<reason>.png`` (recorded as the JUnit property
        ``screenshot.<reason>``); None when QEMU is not running. Failures and the end of a VM take their own."""
        path = self.handle.screenshot(reason)
        if path is not None:
            self._record(f"screenshot.{reason}", path)
        return path

    def check_wav(self, expect_hz: float = 440.0) -> WavFigures:
        """Let the VM finish (the WAV header is written on a clean QEMU exit), then check the recording."""
        path = self.handle.finish_for_wav()
        figures = analyse_wav(path)
        for key, value in figures.as_properties().items():
            self._record(f"wav.{key}", value)
        problems = check_tone(figures, expect_hz=expect_hz)
        if problems:
            raise AeroFailure(WAV_CHECK_FAILED, f"{path}: " + "; ".join(problems))
        return figures

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
    """A VM seen through one device group: the ``virtio_blk``/``virtio_net``/``virtio_input``/``virtio_snd``
    fixtures. It asserts only checks of its device (``virtio_blk.expect_pass("virtio-net")`` is a usage
    error), and its repr names the VM it runs on and why that VM is configured so."""

    def __init__(self, vm: AeroVm, device: Device) -> None:
        if device not in ("blk", "net", "input", "snd"):
            raise AeroConfigError(f"unknown device group {device!r}", fix="use blk, net, input or snd")
        self.vm = vm
        self.device = device

    def expect_pass(self, name: str | None = None) -> Marker:
        """Like :meth:`AeroVm.expect_pass`, for a check of this device."""
        return self.vm._expect(name, "pass", self.device)

    def expect_info(self, name: str | None = None) -> Marker:
        """Like :meth:`AeroVm.expect_info`, for a check of this device."""
        return self.vm._expect(name, "info", self.device)

    def pci_preflight(self, expected: Mapping[str, int], mode: str = "modern") -> None:
        self.vm.pci_preflight(expected, mode)

    def __repr__(self) -> str:
        planned = self.vm.planned
        return f"<virtio_{self.device} on {planned.id}: {planned.devices()}; {'; '.join(planned.describe()[1:3])}>"


__all__ = [
    "MODERN_IDS",
    "TRANSITIONAL_IDS",
    "AeroDevice",
    "AeroVm",
    "checks_of",
    "expected_irq_mode",
]
