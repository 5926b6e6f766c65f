"""Pure parts of the net checks: the udhcpc script, lease parsing, HTTP handling, offload counting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from aero_selftest import httpmini, net
from aero_selftest.pure import LARGE_FNV1A64, LARGE_SIZE, pattern_bytes


def test_udhcpc_script_text() -> None:
    text = net.udhcpc_script("/usr/bin/busybox sh", "/run/lease.env")
    assert text.startswith("#!/usr/bin/busybox sh\n")
    assert 'ip addr add "$ip/${mask:-24}" dev "$interface"' in text
    assert 'ip route add default via "$r" dev "$interface"' in text
    assert 'echo "nameserver $d" >> /etc/resolv.conf' in text
    assert "> /run/lease.env" in text


@pytest.mark.skipif(not shutil.which("sh"), reason="needs a POSIX shell")
def test_udhcpc_script_runs_bound_event_with_fake_ip(tmp_path: Path) -> None:
    """Run the script under sh with a fake `ip` and a lease environment; it must record the lease."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ip.log"
    fake_ip = bindir / "ip"
    fake_ip.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake_ip.chmod(0o755)
    lease = tmp_path / "lease.env"
    script = tmp_path / "s.sh"
    # /etc/resolv.conf is written by the script: point it at a temp file by rewriting the path
    script.write_text(net.udhcpc_script("/bin/sh", str(lease)).replace("/etc/resolv.conf", str(tmp_path / "resolv")))
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "interface": "eth0",
        "ip": "10.0.2.15",
        "mask": "24",
        "router": "10.0.2.2",
        "dns": "10.0.2.3",
    }
    subprocess.run(["sh", str(script), "bound"], env=env, check=True, timeout=10)
    assert net.parse_lease(lease.read_text()) == {
        "ip": "10.0.2.15",
        "mask": "24",
        "router": "10.0.2.2",
        "dns": "10.0.2.3",
        "interface": "eth0",
    }
    calls = log.read_text().splitlines()
    assert "addr add 10.0.2.15/24 dev eth0" in calls
    assert "route add default via 10.0.2.2 dev eth0" in calls
    assert "nameserver 10.0.2.3" in (tmp_path / "resolv").read_text()


def test_body_fnv_shortcut_agrees_with_real_hash() -> None:
    assert net.body_fnv1a64(pattern_bytes(LARGE_SIZE)) == LARGE_FNV1A64
    wrong = bytearray(pattern_bytes(LARGE_SIZE))
    wrong[5] ^= 1
    assert net.body_fnv1a64(bytes(wrong)) != LARGE_FNV1A64


def _frame(proto: int) -> bytes:
    return b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 8 + bytes([proto]) + b"\x00" * 20


def test_count_frame() -> None:
    c = net.CsumCounts()
    net.count_frame(c, _frame(17), True, net.TP_STATUS_CSUMNOTREADY)
    net.count_frame(c, _frame(6), True, net.TP_STATUS_CSUMNOTREADY)
    net.count_frame(c, _frame(17), True, 0)
    net.count_frame(c, _frame(17), False, net.TP_STATUS_CSUM_VALID)
    net.count_frame(c, _frame(17), False, 0)
    net.count_frame(c, _frame(1), True, net.TP_STATUS_CSUMNOTREADY)  # ICMP: not counted
    net.count_frame(c, b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 40, True, 0)  # IPv6: not counted
    assert c == net.CsumCounts(tx_packets=3, tx_csum=2, tx_udp=1, rx_packets=2, rx_csum=1)


def test_parse_url() -> None:
    u = httpmini.parse_url("http://10.0.2.2:18080/aero-virtio-selftest")
    assert (u.host, u.port, u.path) == ("10.0.2.2", 18080, "/aero-virtio-selftest")
    assert httpmini.parse_url("http://h/").port == 80
    with pytest.raises(ValueError, match="only http"):
        httpmini.parse_url("https://h/")


def test_build_request() -> None:
    req = httpmini.build_request("POST", httpmini.parse_url("http://h:1/p"), {"Expect": "100-continue"})
    assert req.startswith(b"POST /p HTTP/1.1\r\nHost: h:1\r\n")
    assert b"Connection: close\r\n" in req and req.endswith(b"Expect: 100-continue\r\n\r\n")


def test_parse_response_content_length_and_interim() -> None:
    data = b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: "ab"\r\n\r\nOK\n'
    r = httpmini.parse_response(data)
    assert (r.status, r.body, r.headers["etag"]) == (200, b"OK\n", '"ab"')


def test_parse_response_chunked() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nOK\n\r\n2\r\nab\r\n0\r\n\r\n"
    assert httpmini.parse_response(data).body == b"OK\nab"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "short_body"),
        (b"garbage", "bad_response"),
        (b"SMTP ready\r\n\r\n", "bad_response"),
    ],
)
def test_parse_response_errors(data: bytes, reason: str) -> None:
    with pytest.raises(httpmini.HttpError) as ei:
        httpmini.parse_response(data)
    assert ei.value.reason == reason


def test_get_refused_port_fails_fast_with_reason() -> None:
    import socket
    import time

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    t0 = time.monotonic()
    with pytest.raises(httpmini.HttpError) as ei:
        httpmini.get(httpmini.parse_url(f"http://127.0.0.1:{port}/x"), connect_timeout=2)
    assert ei.value.reason == "http_unreachable"
    assert "--http-url" in str(ei.value)
    assert time.monotonic() - t0 < 2
