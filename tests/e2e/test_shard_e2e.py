"""--vm-shard end to end: three shards of a vmm_flows selection on real QEMU, as three CI jobs would run it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pytest_aero_virtio.junit_merge import case_ids
from pytest_aero_virtio.junit_merge import main as merge_main

pytestmark = pytest.mark.slow

FLOWS = Path(__file__).resolve().parents[2] / "vmm_flows"
#: Four tests on three VMs (INTx; blk reset + sound capture; transitional), the cheapest such selection.
SELECTION = "test_virtio_blk_intx or test_virtio_blk_reset or test_transitional_pci_ids or test_virtio_snd_capture"


def inner(pytester: pytest.Pytester, artifacts: Path, *args: str) -> pytest.RunResult:
    """One job: its own artifacts dir (also QEMU's -name, so a leaked QEMU is found) and its own cache."""
    artifacts.mkdir(parents=True, exist_ok=True)
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "vmm_flows", "-k", SELECTION, f"--vm-artifacts={artifacts}",
        "--qemu-extra-arg=-name", f"--qemu-extra-arg={artifacts}", "-o", f"cache_dir={artifacts}-cache",
        *args, timeout=600,
    )


def planned_vms(res: pytest.RunResult) -> int:
    found = [re.match(r"aero-virtio: (\d+) VM\(s\) planned", line) for line in res.outlines]
    (count,) = [int(m.group(1)) for m in found if m]
    return count


def test_three_shards_run_every_test_once_and_boot_every_vm_once(pytester: pytest.Pytester, artifacts: Path) -> None:
    shutil.copytree(FLOWS, pytester.path / "vmm_flows")
    listing = inner(pytester, artifacts / "list", "--collect-only", "-q")
    selection = {line for line in listing.outlines if "::" in line}
    assert len(selection) == 4, listing.outlines
    vms = planned_vms(inner(pytester, artifacts / "dry", "--vm-dry-run"))
    assert vms == 3

    junits = []
    for k in (1, 2, 3):
        junit = pytester.path / f"junit-{k}.xml"
        xdist = ["-n", "2"] if k == 1 else []  # one shard under xdist: its VM still boots once
        res = inner(pytester, artifacts / f"shard-{k}", f"--vm-shard={k}/3", f"--junitxml={junit}", *xdist)
        assert res.ret == 0, res.outlines
        if not xdist:
            res.stdout.fnmatch_lines([f"aero-virtio: shard {k}/3: 1 of 3 VM(s), *", "  shard VM: *"])
        junits.append(junit)

    merged = pytester.path / "merged.xml"
    assert merge_main([str(merged), *map(str, junits)]) == 0  # no test in two shards
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(merged))
    ran = case_ids(xml)
    as_nodeids = {f"{c.replace('.', '/')}.py::{n}" for c, n in (i.split("::") for i in ran)}
    assert sorted(ran) == sorted(set(ran)) and as_nodeids == selection  # every selected test, once
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (4, 0, 0, 0)

    booted = [d.name for k in (1, 2, 3) for d in (artifacts / f"shard-{k}").iterdir()]
    assert len(booted) == vms, booted  # each planned VM booted exactly once, in one shard
    # every shard recorded its own VM's boot-to-stop time in its own cache, and only its own
    recorded = [json.loads((artifacts / f"shard-{k}-cache/v/aero-virtio/vm-durations").read_text()) for k in (1, 2, 3)]
    assert all(len(r) == 1 for r in recorded) and len({next(iter(r)) for r in recorded}) == 3

    # the recorded durations, shared as one file, drive the split of every runner the same way
    shared = pytester.path / "vm-durations.json"
    shared.write_text(json.dumps({k: v for r in recorded for k, v in r.items()}))
    dry = inner(pytester, artifacts / "dry2", "--vm-dry-run", "--vm-shard=1/3", f"--vm-durations={shared}")
    dry.stdout.fnmatch_lines([f"*durations: {shared}*", "  shard VM: * s recorded)"])


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_shard_with_no_vm_runs_nothing_and_passes(
    pytester: pytest.Pytester, artifacts: Path, xdist: list[str]
) -> None:
    shutil.copytree(FLOWS, pytester.path / "vmm_flows")
    res = inner(pytester, artifacts / "empty", "--vm-shard=4/4", *xdist)
    assert res.ret == 0, res.outlines
    res.stdout.fnmatch_lines(["*aero-virtio: shard 4/4: 0 of 3 VM(s), 0 test(s)*"])
    assert not any((artifacts / "empty").iterdir())
