"""Verdicts and tokens: SKIP, FAIL and absence each fail with their own token; RESULT alone is not a pass."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.checks import BASE_CHECKS, lookup
from pytest_aero_virtio.errors import QEMU_EXITED, AeroConfigError, AeroFailure
from pytest_aero_virtio.markers import Marker, parse_line
from pytest_aero_virtio.requirements import (
    describe,
    exit_code,
    raise_first,
    require,
    result_problems,
    verdict,
)
from pytest_aero_virtio.stream import MarkerStream

P = "AERO_VIRTIO_SELFTEST"


def m(line: str) -> Marker:
    parsed = parse_line(f"{P}|{line}")
    assert isinstance(parsed, Marker)
    return parsed


def test_pass_passes() -> None:
    marker = m("TEST|virtio-blk|PASS|write_mbps=5")
    assert verdict("virtio-blk", marker) is None
    assert require(lookup("virtio-blk"), marker) is marker


def test_missing() -> None:
    failure = verdict("virtio-blk", None)
    assert failure is not None and failure.token == "MISSING_VIRTIO_BLK"


def test_skip_flag_not_set_names_the_flag() -> None:
    failure = verdict("virtio-input-events", m("TEST|virtio-input-events|SKIP|flag_not_set"))
    assert failure is not None
    assert failure.token == "VIRTIO_INPUT_EVENTS_SKIPPED"
    assert "guest not provisioned with --test-input-events" in failure.message
    assert str(failure).startswith("FAIL: VIRTIO_INPUT_EVENTS_SKIPPED: guest not provisioned with")
    assert failure.fix and "--test-input-events" in failure.fix


def test_skip_other_reason() -> None:
    failure = verdict("virtio-input-tablet", m("TEST|virtio-input-tablet|SKIP|not_present"))
    assert failure is not None and failure.token == "VIRTIO_INPUT_TABLET_SKIPPED"
    assert "not_present" in failure.message


def test_fail_carries_fields() -> None:
    failure = verdict("virtio-net", m("TEST|virtio-net|FAIL|reason=fnv_mismatch|large_ok=0"))
    assert failure is not None and failure.token == "VIRTIO_NET_FAILED"
    assert "reason=fnv_mismatch large_ok=0" in failure.message


def test_info_checks_accept_info_and_pass_but_not_skip() -> None:
    assert verdict("virtio-blk-counters", m("TEST|virtio-blk-counters|INFO|reads=1")) is None
    assert verdict("virtio-blk-counters", m("TEST|virtio-blk-counters|PASS")) is None
    failure = verdict("virtio-blk-counters", m("TEST|virtio-blk-counters|SKIP"))
    assert failure is not None and failure.token == "VIRTIO_BLK_COUNTERS_SKIPPED"


def test_pass_check_rejects_info_and_unknown_status() -> None:
    for status in ("INFO", "READY", "WEIRD"):
        failure = verdict("virtio-net", m(f"TEST|virtio-net|{status}"))
        assert failure is not None and failure.token == "VIRTIO_NET_FAILED"
        assert status in failure.message


def test_expect_override_and_unknown_check_names() -> None:
    marker = m("TEST|virtio-future-thing|INFO|x=1")
    assert verdict("virtio-future-thing", marker, expect="info") is None
    failure = verdict("virtio-future-thing", marker)  # unknown checks expect PASS
    assert failure is not None and failure.token == "VIRTIO_FUTURE_THING_FAILED"


def test_require_raises() -> None:
    with pytest.raises(AeroFailure, match="VIRTIO_NET_UDP_FAILED"):
        require("virtio-net-udp", m("TEST|virtio-net-udp|FAIL"))


def test_describe() -> None:
    assert describe(m("TEST|x|SKIP|flag_not_set|a=1")) == "flag_not_set a=1"


def full_pass_stream(skip: tuple[str, ...] = ()) -> MarkerStream:
    st = MarkerStream()
    for name in BASE_CHECKS:
        if name not in skip:
            st.feed_line(f"{P}|TEST|{name}|PASS")
    return st


def test_result_pass_with_every_base_marker_passes() -> None:
    st = full_pass_stream()
    st.feed_line(f"{P}|RESULT|PASS")
    raise_first(result_problems(st.result, st.final, [lookup(n) for n in BASE_CHECKS]))


def test_old_guest_printing_only_result_cannot_pass() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|RESULT|PASS")
    problems = result_problems(st.result, st.final, BASE_CHECKS)
    assert [p.token for p in problems] == [f"MISSING_{n.upper().replace('-', '_')}" for n in BASE_CHECKS]
    with pytest.raises(AeroFailure) as info:
        raise_first(result_problems(st.result, st.final, BASE_CHECKS))
    assert info.value.token == "MISSING_VIRTIO_BLK"
    assert "RESULT|PASS arrived without a final virtio-blk marker" in info.value.message
    assert "MISSING_VIRTIO_NET" in info.value.message  # the others are listed too


def test_result_pass_with_a_skipped_opt_in() -> None:
    st = full_pass_stream()
    st.feed_line(f"{P}|TEST|virtio-blk-resize|SKIP|flag_not_set")
    st.feed_line(f"{P}|RESULT|PASS")
    with pytest.raises(AeroFailure) as info:
        raise_first(result_problems(st.result, st.final, [*BASE_CHECKS, "virtio-blk-resize"]))
    assert info.value.token == "VIRTIO_BLK_RESIZE_SKIPPED"


def test_result_fail_is_selftest_failed_naming_failures() -> None:
    st = full_pass_stream(skip=("virtio-net",))
    st.feed_line(f"{P}|TEST|virtio-net|FAIL|reason=timeout")
    st.feed_line(f"{P}|RESULT|FAIL")
    with pytest.raises(AeroFailure) as info:
        raise_first(result_problems(st.result, st.final, BASE_CHECKS, seen=st.markers))
    assert info.value.token == "SELFTEST_FAILED"
    assert "failed: virtio-net" in info.value.message
    assert "VIRTIO_NET_FAILED" in info.value.message


def test_no_result() -> None:
    problems = result_problems(None, lambda name: None, ["virtio-blk"])
    assert [p.token for p in problems] == ["TIMEOUT", "MISSING_VIRTIO_BLK"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (None, 0),
        (AeroFailure("VIRTIO_NET_FAILED", "x"), 1),
        (AeroFailure("MISSING_VIRTIO_BLK", "x"), 1),
        (AeroFailure("SELFTEST_FAILED", "x"), 1),
        (AeroFailure("TIMEOUT", "x"), 2),
        (AeroConfigError("bad option"), 2),
        (AeroFailure("QEMU_PCI_PREFLIGHT_FAILED", "x"), 2),
        (AeroFailure("UDP_PORT_MISMATCH", "x"), 2),
        (AeroFailure(QEMU_EXITED, "gone"), 3),
        (AeroFailure("WAV_CHECK_FAILED", "x"), 4),
    ],
)
def test_exit_codes(error: AeroFailure | AeroConfigError | None, code: int) -> None:
    assert exit_code(error) == code


def test_snd_force_null_backend_has_its_own_token() -> None:
    from pytest_aero_virtio.markers import Marker as _M
    from pytest_aero_virtio.markers import parse_line as _p
    from pytest_aero_virtio.requirements import verdict as _v

    m = _p("AERO_VIRTIO_SELFTEST|TEST|virtio-snd|FAIL|reason=force_null_backend")
    assert isinstance(m, _M)
    failure = _v("virtio-snd", m)
    assert failure is not None and failure.token == "VIRTIO_SND_FORCE_NULL_BACKEND"
    assert failure.fix is not None and "ForceNullBackend" in failure.fix
    other = _p("AERO_VIRTIO_SELFTEST|TEST|virtio-snd|FAIL|reason=no_endpoint")
    assert isinstance(other, _M)
    assert _v("virtio-snd", other).token == "VIRTIO_SND_FAILED"  # type: ignore[union-attr]
