"""Hostile peers: the host's HTTP and UDP services hold against a local client while the reference guest runs
its net checks, and those checks still pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Chaos
from .peers import Attack, ports_from_http_log

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

NET_FLOWS = Path(__file__).parents[2] / "vmm_flows" / "test_net.py"
#: Appended to the net suite: keeps the VM (and so its services) up until the peer has finished its round.
HOLD = """

@pytest.mark.aero_check("virtio-net")
def test_zz_services_stay_up_for_the_peer(virtio_net):
    import pathlib, time
    deadline = time.monotonic() + 300
    while not pathlib.Path("peer-done").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def test_services_hold_against_a_hostile_local_peer(chaos: Chaos) -> None:
    from pytest_aero_virtio.refenv.image import ensure_image

    chaos.guard(ensure_image().disk)
    proc = chaos.start(NET_FLOWS.read_text() + HOLD)
    deadline = time.monotonic() + 120
    ports = None
    while ports is None and time.monotonic() < deadline and proc.poll() is None:
        ports = next(filter(None, map(ports_from_http_log, chaos.artifacts.glob("*/http.log"))), None)
        time.sleep(0.05)
    assert ports is not None, "the host services never started"
    attack = Attack(*ports).start()
    try:
        chaos.wait_for_serial(b"AERO_VIRTIO_SELFTEST|RESULT|")  # the guest ran all its checks under fire
    finally:
        attack.stop()
        (chaos.dir / "peer-done").touch()
    res = chaos.finish(proc)
    print(f"attack: {attack.rounds} round(s), {dict(attack.statuses)}, {attack.echoes} echoes, {attack.errors}")
    cases = res.cases()
    assert cases and all(v in ("passed", "skipped") for v, _ in cases.values()), cases
    assert res.rc == 0
    assert attack.rounds >= 1 and not attack.errors
    # what the peer got was sane: no traversal ever served a file, the flood of connections was answered, the
    # 100 MB upload was read and refused (it is not the 1 MiB pattern), oversized datagrams were not echoed
    assert not any(k.startswith("traversal 200") for k in attack.statuses)
    attempts = sum(n for k, n in attack.statuses.items() if k.startswith("concurrent "))
    assert attack.statuses["concurrent 200"] >= 0.99 * attempts > 0, attack.statuses
    assert attack.statuses["upload 400"] >= 1, attack.statuses
    assert attack.echoes > 0
    http_log = next(chaos.artifacts.glob("*/http.log")).read_text()
    assert "bytes_in=104857600" in http_log  # the upload was streamed, all of it
    assert " bytes=4096 dropped" in http_log and " bytes=0 echoed" in http_log
    chaos.assert_clean()
