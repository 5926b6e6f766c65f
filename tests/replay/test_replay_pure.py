"""The pure parts of replay: reading the recorded logs, finding recordings, matching them to planned VMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_aero_virtio.config import Vectors, VmConfig
from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.plan import PlannedVm
from pytest_aero_virtio.replay import (
    assign_recordings,
    find_recordings,
    parse_http_log,
    parse_shutdown,
    query_pci_from_qmp_log,
)

DATA = Path(__file__).parents[1] / "data"


def test_http_log_gives_requests_echoes_and_ports() -> None:
    log = parse_http_log((DATA / "recorded-run" / "vm0" / "http.log").read_text())
    assert ("GET", "/aero-virtio-selftest", 200) in log.requests
    assert ("POST", "/aero-virtio-selftest-large", 200) in log.requests
    assert log.echoed >= 2
    assert log.http_port and log.udp_port and log.http_port != log.udp_port
    empty = parse_http_log("")
    assert empty.requests == () and empty.echoed == 0 and empty.http_port is None


def test_shutdown_and_query_pci() -> None:
    assert parse_shutdown("how=exited status=exit status 0 returncode=0\n") == ("exited", 0)
    assert parse_shutdown("how=kill status=killed by signal 9 (SIGKILL) returncode=-9") == ("kill", -9)
    assert parse_shutdown("garbage") == ("unknown", None)
    reply = query_pci_from_qmp_log((DATA / "recorded-run" / "vm0" / "qmp.log").read_text())
    assert reply is not None and any(d.get("qdev_id") == "vblk0" for bus in reply for d in bus["devices"])
    assert query_pci_from_qmp_log("    0.1 <-- greeting {}\n") is None


def test_find_recordings_accepts_a_root_a_vm_dir_or_a_log(tmp_path: Path) -> None:
    root = DATA / "recorded-run"
    assert [r.vm_id for r in find_recordings(root)] == ["vm0", "vm1", "vm2", "vm3"]
    (one,) = find_recordings(root / "vm1")
    assert one.config is not None and one.tests
    (bare,) = find_recordings(DATA / "old-harness-win7-serial.log")
    assert bare.vm_id is None and bare.serial.name == "old-harness-win7-serial.log"
    with pytest.raises(AeroConfigError, match="no such file or directory"):
        find_recordings(tmp_path / "nope")
    with pytest.raises(AeroConfigError, match=r"no serial\.log"):
        find_recordings(tmp_path)


def _vm(index: int, config: VmConfig, *tests: str) -> PlannedVm:
    return PlannedVm(index, config, tests)


def test_assign_by_config_then_by_tests_then_a_lone_log_to_the_first_vm() -> None:
    recs = find_recordings(DATA / "recorded-run")
    meta = {r.vm_id: r for r in recs}
    intx = VmConfig(vectors=Vectors(blk=0, net=0, input=0, snd=0))
    same = _vm(0, intx, "whatever")
    assert assign_recordings([same], recs) == {"vm0": meta["vm1"]}
    subset = _vm(
        0, VmConfig(guest_flags=frozenset({"test-blk-resize"})), "vmm_flows/test_blk.py::test_virtio_blk_resize"
    )
    assert assign_recordings([subset], recs) == {"vm0": meta["vm0"]}
    stranger = _vm(0, VmConfig(transitional=True, snd=True), "vmm_flows/test_x.py::test_y")
    assert assign_recordings([stranger], recs) == {}
    (bare,) = find_recordings(DATA / "old-harness-win7-serial.log")
    assert assign_recordings([stranger, same], [bare]) == {"vm0": bare}


def test_vm_json_is_what_the_plan_said(tmp_path: Path) -> None:
    data = json.loads((DATA / "recorded-run" / "vm3" / "vm.json").read_text())
    assert data["id"] == "vm3" and "snd.none" in data["config"]
