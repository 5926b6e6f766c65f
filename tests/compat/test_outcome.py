"""The old last line and exit code from a run's reports: token -> code, which failure comes first (pure)."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.compat.outcome import (
    INTERRUPTED_CODE,
    PASS_LINE,
    ItemRecord,
    SessionFacts,
    decide,
    exit_code_for,
    failure_of,
    split_fail,
)
from pytest_aero_virtio.compat.table import RESULT_TEST

RESULT_OK = ItemRecord(RESULT_TEST, index=99, checks=("virtio-blk", "virtio-net"), outcome="passed")


def failed(key: str, index: int, text: str, checks: tuple[str, ...] = (), crash: str = "") -> ItemRecord:
    return ItemRecord(key, index=index, checks=checks, outcome="failed", text=text, crash=crash)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("VIRTIO_BLK_FAILED", 1),
        ("MISSING_VIRTIO_INPUT_EVENTS", 1),
        ("VIRTIO_INPUT_EVENTS_SKIPPED", 1),
        ("SELFTEST_FAILED", 1),
        ("QMP_BLK_RESIZE_FAILED", 1),
        ("VIRTIO_NET_CSUM_OFFLOAD_ZERO", 1),
        ("TIMEOUT", 2),
        ("NO_SERIAL_OUTPUT", 2),
        ("QEMU_PCI_PREFLIGHT_FAILED", 2),
        ("UDP_PORT_MISMATCH", 2),
        ("IMAGE_UNREADABLE", 2),
        ("QEMU_NOT_FOUND", 2),
        ("PORT_IN_USE", 2),
        ("CONFIG_ERROR", 2),
        ("VM_BOOT_FAILED", 2),
        ("QEMU_EXITED", 3),
        ("WAV_CHECK_FAILED", 4),
    ],
)
def test_exit_codes_of_the_old_harness(token: str, code: int) -> None:
    assert exit_code_for(token, "msg") == code


def test_split_fail_takes_the_first_fail_line() -> None:
    text = "FAIL: VIRTIO_NET_FAILED: net failed (x)\nfix: y\nlast 2 serial lines:\n  | FAIL: OTHER: z"
    assert split_fail(text) == ("VIRTIO_NET_FAILED", "net failed (x)")
    assert split_fail("def test():\n>  assert 1 == 2\nE  AssertionError") is None


def test_pass_needs_the_result_test() -> None:
    others = [ItemRecord("test_blk.py::test_virtio_blk", 0, ("virtio-blk",)), RESULT_OK]
    assert decide(others, SessionFacts()) == decide([RESULT_OK], SessionFacts())
    assert decide([RESULT_OK], SessionFacts()).line == PASS_LINE
    assert decide([RESULT_OK], SessionFacts()).code == 0
    verdict = decide([ItemRecord("test_blk.py::test_virtio_blk", 0, ("virtio-blk",))], SessionFacts(pytest_code=5))
    assert verdict.code == 2 and verdict.line is not None
    assert verdict.line.startswith(f"FAIL: CONFIG_ERROR: no test checked the guest's RESULT line ({RESULT_TEST}")


def test_first_failure_in_guest_order_not_run_order() -> None:
    """net ran first (lower index) but blk comes first in the guest's output; RESULT comes last."""
    recs = [
        failed("test_net.py::test_virtio_net", 0, "FAIL: VIRTIO_NET_FAILED: the net test failed", ("virtio-net",)),
        failed(RESULT_TEST, 1, "FAIL: SELFTEST_FAILED: the guest reported RESULT|FAIL", ("virtio-blk",)),
        failed("test_blk.py::test_virtio_blk_resize", 2, "FAIL: VIRTIO_BLK_RESIZE_SKIPPED: not provisioned",
               ("virtio-blk-resize",)),
    ]
    verdict = decide(recs, SessionFacts())
    assert (verdict.code, verdict.line) == (1, "FAIL: VIRTIO_BLK_RESIZE_SKIPPED: not provisioned")
    verdict = decide(recs[:2], SessionFacts())
    assert verdict.line == "FAIL: VIRTIO_NET_FAILED: the net test failed"
    assert decide(recs[1:2], SessionFacts()).line == "FAIL: SELFTEST_FAILED: the guest reported RESULT|FAIL"


def test_boot_and_preflight_failures_come_before_the_guest() -> None:
    recs = [
        failed("test_blk.py::test_virtio_blk", 0, "FAIL: VIRTIO_BLK_FAILED: x", ("virtio-blk",)),
        failed("test_net.py::test_net_pci_preflight", 1, "FAIL: QEMU_PCI_PREFLIGHT_FAILED: vnet0: 1af4:1000"),
    ]
    assert decide(recs, SessionFacts()).line == "FAIL: QEMU_PCI_PREFLIGHT_FAILED: vnet0: 1af4:1000"
    assert decide(recs, SessionFacts()).code == 2


def test_same_token_everywhere_takes_the_earliest_check() -> None:
    """QEMU died: every test fails with QEMU_EXITED; the verdict is that line, exit code 3."""
    text = "FAIL: QEMU_EXITED: QEMU exited during start-up (exit status 1)\nfix: see stderr"
    recs = [failed(k, i, text, c) for i, (k, c) in enumerate([
        ("test_net.py::test_virtio_net", ("virtio-net",)),
        ("test_blk.py::test_virtio_blk", ("virtio-blk",)),
    ])]
    verdict = decide(recs, SessionFacts())
    assert verdict == decide(recs[::-1], SessionFacts())
    assert (verdict.code, verdict.line) == (3, "FAIL: QEMU_EXITED: QEMU exited during start-up (exit status 1)")


def test_plain_assertion_gets_its_checks_token() -> None:
    rec = failed("test_blk.py::test_virtio_blk_msix", 0, "def test...\nE  AssertionError: mode", ("virtio-blk-msix",),
                 crash="AssertionError: AERO_VIRTIO_SELFTEST|TEST|virtio-blk-msix|PASS|mode=intx\nassert ...")
    failure = failure_of(rec, (), {})
    assert failure is not None
    assert failure.line == ("FAIL: VIRTIO_BLK_MSIX_FAILED: test_blk.py::test_virtio_blk_msix: "
                            "AssertionError: AERO_VIRTIO_SELFTEST|TEST|virtio-blk-msix|PASS|mode=intx")
    bare = failed("test_selftest.py::test_guest_config_matches_host", 0, "E  assert 1 == 2", crash="assert 1 == 2")
    failure = failure_of(bare, (), {})
    assert failure is not None and failure.token == "GUEST_CONFIG_MATCHES_HOST_FAILED"


def test_skips_fail_only_when_required() -> None:
    key = "test_net.py::test_virtio_net_tx_csum_offloaded"
    rec = ItemRecord(key, 3, ("virtio-net-offload-csum",), outcome="skipped", skip_reason="tx_csum: no TX offload")
    assert decide([rec, RESULT_OK], SessionFacts()).line == PASS_LINE
    verdict = decide([rec, RESULT_OK], SessionFacts(), required=[key],
                     skip_tokens={key: "VIRTIO_NET_CSUM_OFFLOAD_ZERO"})
    assert verdict == decide([rec, RESULT_OK], SessionFacts(), [key], {key: "VIRTIO_NET_CSUM_OFFLOAD_ZERO"})
    assert verdict.code == 1
    assert verdict.line == f"FAIL: VIRTIO_NET_CSUM_OFFLOAD_ZERO: {key} was required but skipped: tx_csum: no TX offload"
    snd = ItemRecord("test_snd.py::test_virtio_snd", 5, ("virtio-snd",), outcome="skipped",
                     skip_reason="QEMU has no virtio-sound-pci")
    verdict = decide([snd, RESULT_OK], SessionFacts(), required=[snd.key])
    assert verdict.line is not None and verdict.line.startswith("FAIL: VIRTIO_SND_SKIPPED: ")


def test_session_level_outcomes() -> None:
    usage = "FAIL: IMAGE_UNREADABLE: --vm-image: /x.img does not exist\nfix: pass an existing file"
    assert decide([], SessionFacts(pytest_code=4, usage_error=usage)).line == (
        "FAIL: IMAGE_UNREADABLE: --vm-image: /x.img does not exist")
    assert decide([], SessionFacts(pytest_code=4, usage_error=usage)).code == 2
    bad = decide([], SessionFacts(pytest_code=4, usage_error="bad thing\nmore"))
    assert bad.line == "FAIL: CONFIG_ERROR: bad thing"
    refused = decide([], SessionFacts(pytest_code=4))
    assert refused.code == 2 and "pytest refused its command line" in str(refused.line)
    broken = decide([RESULT_OK], SessionFacts(pytest_code=2, collect_errors=["vmm_flows/test_blk.py: ImportError"]))
    assert broken.code == 2 and "could not collect" in str(broken.line)
    assert decide([RESULT_OK], SessionFacts(interrupted=True)).code == INTERRUPTED_CODE
    assert decide([], SessionFacts(dry_run=True)).line is None
    assert decide([], SessionFacts(dry_run=True)).code == 0
