"""Parser and stream: the protocol's line grammar, noisy serial ports, and waits across threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.errors import QEMU_EXITED, AeroFailure
from pytest_aero_virtio.markers import HostMarker, LineSplitter, Marker, parse_line
from pytest_aero_virtio.stream import MarkerStream


def qemu_exited(message: str, stderr_tail: list[str] | None = None) -> AeroFailure:
    return AeroFailure(QEMU_EXITED, "\n".join([message, *(stderr_tail or [])]))


P = "AERO_VIRTIO_SELFTEST"


# --- LineSplitter ---------------------------------------------------------------------------------------


def test_splitter_lf_and_crlf() -> None:
    s = LineSplitter()
    assert s.feed(b"a\r\nb\nc\r\n") == ["a", "b", "c"]
    assert s.flush() == []


def test_splitter_split_mid_line_and_mid_prefix() -> None:
    s = LineSplitter()
    data = f"{P}|TEST|virtio-blk|PASS|write_bytes=1\r\n".encode()
    out: list[str] = []
    for i in range(0, len(data), 3):  # every 3 bytes, including inside the prefix and inside CRLF
        out += s.feed(data[i : i + 3])
    assert out == [f"{P}|TEST|virtio-blk|PASS|write_bytes=1"]
    assert s.pending == 0


def test_splitter_cr_split_from_lf() -> None:
    s = LineSplitter()
    assert s.feed(b"abc\r") == []
    assert s.feed(b"\ndef") == ["abc"]
    assert s.flush() == ["def"]
    assert s.flush() == []


def test_splitter_binary_junk_does_not_raise() -> None:
    s = LineSplitter()
    lines = s.feed(b"\xff\xfe\x00garbage\x80\n" + f"{P}|RESULT|PASS\n".encode())
    assert len(lines) == 2
    assert "\ufffd" in lines[0]
    assert isinstance(parse_line(lines[1]), Marker)


def test_splitter_huge_line_is_cut_and_memory_bounded() -> None:
    s = LineSplitter(max_line=1024)
    out = s.feed(b"x" * 5000)
    assert out == ["x" * 1024] * 4
    assert s.pending == 5000 - 4096
    out = s.feed(b"y" * 10 + b"\n" + f"{P}|RESULT|PASS\n".encode())
    assert out[0] == "x" * 904 + "y" * 10
    assert parse_line(out[-1]) is not None


def test_splitter_huge_line_inside_one_chunk_with_newline() -> None:
    s = LineSplitter(max_line=100)
    out = s.feed(b"z" * 250 + b"\nok\n")
    assert out == ["z" * 100, "z" * 100, "z" * 50, "ok"]


# --- parse_line ---------------------------------------------------------------------------------------


def test_parse_test_line_with_fields_and_tokens() -> None:
    m = parse_line(f"{P}|TEST|virtio-snd-capture|SKIP|flag_not_set|frames=0|x=a=b", t=12.5)
    assert isinstance(m, Marker)
    assert (m.kind, m.name, m.status) == ("TEST", "virtio-snd-capture", "SKIP")
    assert m.tokens == ("flag_not_set",)
    assert m["frames"] == "0" and m["x"] == "a=b"  # split on the first '='
    assert m.get("missing") is None and m.get("missing", "d") == "d"
    assert "frames" in m
    assert m.t == 12.5
    assert m.raw == f"{P}|TEST|virtio-snd-capture|SKIP|flag_not_set|frames=0|x=a=b"


def test_parse_old_guest_bare_line() -> None:
    m = parse_line(f"{P}|TEST|virtio-net|PASS")
    assert isinstance(m, Marker)
    assert (m.name, m.status, dict(m.fields), m.tokens) == ("virtio-net", "PASS", {}, ())


def test_parse_unknown_test_kind_and_fields_kept() -> None:
    m = parse_line(f"{P}|TEST|virtio-future|PASS|new_field=7|weird")
    assert isinstance(m, Marker) and m.name == "virtio-future" and m["new_field"] == "7"
    assert m.tokens == ("weird",)
    k = parse_line(f"{P}|NEWKIND|a=1|b")
    assert isinstance(k, Marker) and k.kind == "NEWKIND" and k["a"] == "1" and k.tokens == ("b",)
    assert k.name is None and k.status is None


def test_parse_start_config_result() -> None:
    s = parse_line(f"{P}|START|version=1")
    assert isinstance(s, Marker) and s.kind == "START" and s["version"] == "1"
    c = parse_line(f"{P}|CONFIG|http_url=http://10.0.2.2:18080/x|udp_port=18081")
    assert isinstance(c, Marker) and c["http_url"] == "http://10.0.2.2:18080/x" and c["udp_port"] == "18081"
    r = parse_line(f"{P}|RESULT|FAIL|failed=2")
    assert isinstance(r, Marker) and r.kind == "RESULT" and r.status == "FAIL" and r["failed"] == "2"


def test_parse_rejects_noise() -> None:
    assert parse_line("[    3.141] virtio_blk virtio0: [vda] 131072 512-byte logical blocks") is None
    assert parse_line("virtio-blk-irq|INFO|mode=intx") is None
    assert parse_line(f"[ 1.0] kernel: {P}|TEST|virtio-blk|PASS") is None  # noise before the prefix
    assert parse_line("AERO_VIRTIO_SELFTESTX|TEST|a|PASS") is None
    assert parse_line(f"{P}") is None
    assert parse_line("") is None


def test_parse_tolerates_ansi_nul_and_whitespace_before_prefix() -> None:
    for line in (f"\x1b[0m\x1b[2K{P}|TEST|virtio-blk|PASS", f"\x00\x00  {P}|TEST|virtio-blk|PASS \r"):
        m = parse_line(line)
        assert isinstance(m, Marker) and m.name == "virtio-blk" and m.status == "PASS"


def test_parse_host_marker_line() -> None:
    h = parse_line("AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_RESIZE|REQUEST|old_bytes=1|qmp_cmd=block_resize")
    assert isinstance(h, HostMarker)
    assert (h.topic, h.status, h["old_bytes"], h.get("qmp_cmd")) == (
        "VIRTIO_BLK_RESIZE",
        "REQUEST",
        "1",
        "block_resize",
    )


def test_host_marker_line_sanitises_values() -> None:
    hm = HostMarker("VIRTIO_INPUT_EVENTS_INJECT", "FAIL", {"reason": "a|b\nc\r", "attempt": 1})  # type: ignore[dict-item]
    assert hm.line() == "AERO_VIRTIO_WIN7_HOST|VIRTIO_INPUT_EVENTS_INJECT|FAIL|reason=a/b c|attempt=1"
    again = parse_line(hm.line())
    assert isinstance(again, HostMarker) and dict(again.fields) == {"reason": "a/b c", "attempt": "1"}


# --- MarkerStream --------------------------------------------------------------------------------------


def feed_all(stream: MarkerStream, lines: list[str]) -> None:
    for line in lines:
        stream.feed_line(line)


def test_stream_history_latest_final_result() -> None:
    st = MarkerStream()
    feed_all(
        st,
        [
            "SeaBIOS (version 1.16)",
            f"{P}|START|version=1",
            f"{P}|TEST|virtio-blk-resize|READY|disk=0|old_bytes=100",
            f"{P}|TEST|virtio-blk-resize|PASS|new_bytes=200",
            f"{P}|TEST|virtio-blk-counters|INFO|reads=3",
            f"{P}|RESULT|PASS",
        ],
    )
    assert [m.kind for m in st.markers] == ["START", "TEST", "TEST", "TEST", "RESULT"]
    latest = st.latest("virtio-blk-resize")
    assert latest is not None and latest.status == "PASS"
    fin = st.final("virtio-blk-counters")
    assert fin is not None and fin.status == "INFO"
    assert st.final("virtio-blk-resize", statuses={"READY"}) is not None
    assert st.final("nope") is None
    assert st.result is not None and st.result.status == "PASS"
    assert st.tests() == ["virtio-blk-resize", "virtio-blk-counters"]
    assert st.tail(1) == [f"{P}|RESULT|PASS"]
    assert st.tail()[0] == "SeaBIOS (version 1.16)"


def test_subscribers_get_items_in_order_in_feeding_thread() -> None:
    st = MarkerStream()
    seen: list[tuple[str, int]] = []
    st.subscribe(lambda item: seen.append((item.raw, threading.get_ident())))
    feed_all(st, ["junk", f"{P}|TEST|a|READY", f"{P}|TEST|a|PASS"])
    st.add_host(HostMarker("T", "PASS", {"k": "v"}))
    assert [s for s, _ in seen] == [
        f"{P}|TEST|a|READY",
        f"{P}|TEST|a|PASS",
        "AERO_VIRTIO_WIN7_HOST|T|PASS|k=v",
    ]
    assert {tid for _, tid in seen} == {threading.get_ident()}
    assert st.host_markers[0].topic == "T"
    assert "host: AERO_VIRTIO_WIN7_HOST|T|PASS|k=v" in st.tail()


def test_a_guest_cannot_print_host_evidence() -> None:
    """Host markers come from the host; the same text on the guest's console is a plain line."""
    st = MarkerStream()
    seen: list[object] = []
    st.subscribe(seen.append)
    spoof = "AERO_VIRTIO_WIN7_HOST|VIRTIO_NET_HTTP|PASS|path=/aero-virtio-selftest"
    assert st.feed_line(spoof) is None
    assert st.host_markers == [] and seen == [] and st.history == []
    assert spoof in st.tail()  # still visible in the failure excerpt, as the guest printed it


def test_bad_subscriber_does_not_break_the_stream() -> None:
    st = MarkerStream()
    got: list[str] = []

    def bad(item: object) -> None:
        raise RuntimeError("boom")

    st.subscribe(bad)
    st.subscribe(lambda item: got.append(item.raw))
    st.feed_line(f"{P}|TEST|a|PASS")
    assert got == [f"{P}|TEST|a|PASS"]
    assert len(st.subscriber_errors) == 1


def test_subscribe_replay() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|START|version=1")
    got: list[str] = []
    st.subscribe(lambda item: got.append(item.raw), replay=True)
    st.feed_line(f"{P}|RESULT|PASS")
    assert got == [f"{P}|START|version=1", f"{P}|RESULT|PASS"]


def test_wait_final_already_there_returns_immediately() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|TEST|virtio-net|PASS|large_ok=1")
    assert st.wait_final("virtio-net", timeout=0)["large_ok"] == "1"


def test_wait_final_from_another_thread() -> None:
    st = MarkerStream()

    def feeder() -> None:
        time.sleep(0.05)
        st.feed_line(f"{P}|TEST|virtio-blk|READY")
        time.sleep(0.05)
        st.feed_line(f"{P}|TEST|virtio-blk|PASS|write_mbps=5")

    th = threading.Thread(target=feeder)
    th.start()
    m = st.wait_final("virtio-blk", timeout=5)
    th.join()
    assert m.status == "PASS" and m["write_mbps"] == "5"


def test_wait_status_ready_from_another_thread() -> None:
    st = MarkerStream()
    th = threading.Timer(0.05, st.feed_line, args=(f"{P}|TEST|virtio-input-events|READY",))
    th.start()
    m = st.wait_status("virtio-input-events", {"READY"}, timeout=5)
    th.join()
    assert m.status == "READY"


def test_wait_timeout_names_what_and_how_long_and_carries_tail() -> None:
    st = MarkerStream(log_paths={"serial": Path("/art/serial.log")})
    st.feed_line("booting...")
    t0 = time.monotonic()
    with pytest.raises(AeroFailure) as info:
        st.wait_final("virtio-snd", timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    err = info.value
    assert err.token == "TIMEOUT"
    assert "virtio-snd" in err.message and "0.1 s" in err.message
    assert err.serial_tail == ["booting..."]
    assert err.artifacts == {"serial": Path("/art/serial.log")}
    assert "/art/serial.log" in str(err)


def test_missing_as_soon_as_result_arrives() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|TEST|virtio-blk|PASS")
    threading.Timer(0.05, st.feed_line, args=(f"{P}|RESULT|PASS",)).start()
    t0 = time.monotonic()
    with pytest.raises(AeroFailure) as info:
        st.wait_final("virtio-input-events", timeout=10)
    assert time.monotonic() - t0 < 2
    assert info.value.token == "MISSING_VIRTIO_INPUT_EVENTS"
    assert "RESULT|PASS" in info.value.message
    assert info.value.serial_tail[-1] == f"{P}|RESULT|PASS"


def test_missing_when_only_non_final_before_result() -> None:
    st = MarkerStream()
    feed_all(st, [f"{P}|TEST|virtio-blk-resize|READY", f"{P}|RESULT|FAIL"])
    with pytest.raises(AeroFailure) as info:
        st.wait_final("virtio-blk-resize", timeout=5)
    assert info.value.token == "MISSING_VIRTIO_BLK_RESIZE"
    assert "READY" in info.value.message


def test_wait_status_fails_early_on_skip_and_fail() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|TEST|virtio-input-events|SKIP|flag_not_set")
    with pytest.raises(AeroFailure) as info:
        st.wait_status("virtio-input-events", {"READY"}, timeout=5)
    assert info.value.token == "VIRTIO_INPUT_EVENTS_SKIPPED"
    assert "flag_not_set" in info.value.message
    st.feed_line(f"{P}|TEST|virtio-net-link-flap|FAIL|reason=x")
    with pytest.raises(AeroFailure) as info:
        st.wait_status("virtio-net-link-flap", {"READY"}, timeout=5)
    assert info.value.token == "VIRTIO_NET_LINK_FLAP_FAILED"


def test_wait_status_missing_after_result() -> None:
    st = MarkerStream()
    st.feed_line(f"{P}|RESULT|PASS")
    with pytest.raises(AeroFailure) as info:
        st.wait_status("virtio-blk-resize", {"READY"}, timeout=5)
    assert info.value.token == "MISSING_VIRTIO_BLK_RESIZE"


def test_close_wakes_all_waiters_within_100ms() -> None:
    st = MarkerStream()
    st.feed_line("kernel panic - not syncing")
    results: list[BaseException] = []
    barrier = threading.Barrier(4)

    def waiter(fn: str) -> None:
        barrier.wait()
        try:
            if fn == "final":
                st.wait_final("virtio-blk", timeout=30)
            elif fn == "status":
                st.wait_status("virtio-input-events", {"READY"}, timeout=30)
            else:
                st.wait_result(timeout=30)
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=waiter, args=(fn,)) for fn in ("final", "status", "result")]
    for th in threads:
        th.start()
    barrier.wait()
    time.sleep(0.05)
    t0 = time.monotonic()
    st.close(qemu_exited("QEMU exited with status 1", ["qemu: something broke"]))
    for th in threads:
        th.join(1)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.1
    assert len(results) == 3
    for exc in results:
        assert isinstance(exc, AeroFailure) and exc.token == "QEMU_EXITED"
        assert "something broke" in exc.message
        assert exc.serial_tail == ["kernel panic - not syncing"]
    # Future waits fail at once too.
    with pytest.raises(AeroFailure, match="QEMU_EXITED"):
        st.wait_final("virtio-net", timeout=30)
    assert st.closed is not None


def test_close_does_not_hide_markers_already_seen() -> None:
    st = MarkerStream()
    feed_all(st, [f"{P}|TEST|virtio-blk|PASS", f"{P}|RESULT|PASS"])
    st.close(qemu_exited("QEMU exited with status 0"))
    assert st.wait_final("virtio-blk", timeout=1).status == "PASS"
    assert st.wait_result(timeout=1).status == "PASS"
    with pytest.raises(AeroFailure) as info:  # after RESULT, MISSING is the more precise verdict
        st.wait_final("virtio-snd", timeout=1)
    assert info.value.token == "MISSING_VIRTIO_SND"


def test_first_close_wins() -> None:
    st = MarkerStream()
    st.close(qemu_exited("first"))
    st.close(qemu_exited("second"))
    with pytest.raises(AeroFailure, match="first"):
        st.wait_result(timeout=1)


def test_wait_for_generic_predicate() -> None:
    st = MarkerStream()
    threading.Timer(0.02, st.feed_line, args=(f"{P}|CONFIG|udp_port=18081",)).start()
    m = st.wait_for(lambda m: m.kind == "CONFIG", timeout=5, what="CONFIG line")
    assert m["udp_port"] == "18081"
    assert st.config is m


def test_wait_result_timeout() -> None:
    st = MarkerStream()
    with pytest.raises(AeroFailure) as info:
        st.wait_result(timeout=0.01)
    assert info.value.token == "TIMEOUT" and "RESULT" in info.value.message


def test_tail_is_bounded() -> None:
    st = MarkerStream(tail_lines=5)
    feed_all(st, [str(i) for i in range(100)])
    assert st.tail() == ["95", "96", "97", "98", "99"]
    assert st.lines_seen == 100
