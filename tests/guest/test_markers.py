"""Marker formatting and the reporter's verdict logic."""

from __future__ import annotations

import pytest
from aero_selftest.markers import Reporter, format_line, format_test, sanitize


def test_format_test_tokens_then_fields() -> None:
    line = format_test("virtio-snd-capture", "SKIP", ("flag_not_set",), {"x": 1})
    assert line == "AERO_VIRTIO_SELFTEST|TEST|virtio-snd-capture|SKIP|flag_not_set|x=1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a|b", "a/b"), ("line1\nline2\r", "line1 line2"), (True, "1"), (False, "0"), (1.234, "1.23"), (7, "7")],
)
def test_sanitize_never_yields_separators_or_line_breaks(value: object, expected: str) -> None:
    assert sanitize(value) == expected


def test_field_values_with_pipes_and_newlines_stay_one_field() -> None:
    line = format_test("virtio-net", "FAIL", (), {"reason": "x", "err": "OSError: a|b\nc"})
    assert "\n" not in line
    assert line.split("|")[-1] == "err=OSError: a/b c"


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown marker status"):
        format_test("virtio-blk", "OK")


def test_result_and_start_lines() -> None:
    assert format_line("START", {"version": 1}) == "AERO_VIRTIO_SELFTEST|START|version=1"
    assert format_line("RESULT", None, ("PASS",)) == "AERO_VIRTIO_SELFTEST|RESULT|PASS"


def _reporter() -> tuple[Reporter, list[str]]:
    out: list[str] = []
    return Reporter(out.append), out


def test_result_pass_when_only_pass_skip_info() -> None:
    rep, out = _reporter()
    rep.pass_("virtio-blk", write_bytes=1)
    rep.skip_flag_not_set("virtio-blk-resize")
    rep.info("virtio-blk-counters", read_ios=3)
    rep.ready("virtio-input-events")
    assert rep.result() == "PASS"
    assert out[-1] == "AERO_VIRTIO_SELFTEST|RESULT|PASS"


def test_result_fail_names_failed_tests() -> None:
    rep, out = _reporter()
    rep.pass_("virtio-blk")
    rep.fail("virtio-net", "no_network", err="boom")
    assert rep.result() == "FAIL"
    assert out[-1] == "AERO_VIRTIO_SELFTEST|RESULT|FAIL|failed=virtio-net"


def test_group_turns_exception_into_fail_for_unreported_names_only() -> None:
    rep, out = _reporter()
    with rep.group("virtio-snd", "virtio-snd-capture"):
        rep.pass_("virtio-snd")
        raise OSError("EIO|bad")
    assert out[-1] == "AERO_VIRTIO_SELFTEST|TEST|virtio-snd-capture|FAIL|reason=exception|err=OSError: EIO/bad"
    assert rep.final == {"virtio-snd": "PASS", "virtio-snd-capture": "FAIL"}
    # the run goes on: later checks still report
    rep.pass_("virtio-net")
    assert rep.result() == "FAIL"


def test_write_fd_writes_each_line_in_one_write(tmp_path: object) -> None:
    import os

    from aero_selftest.markers import write_fd

    r, w = os.pipe()
    try:
        write_fd(w)("AERO_VIRTIO_SELFTEST|START|version=1")
        assert os.read(r, 4096) == b"AERO_VIRTIO_SELFTEST|START|version=1\n"
    finally:
        os.close(r)
        os.close(w)
