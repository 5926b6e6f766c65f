"""virtio-net checks: DHCP (busybox udhcpc), UDP echo, DNS, HTTP download/upload, checksum offload,
link flap and MSI-X routing.  The host is the HTTP URL's host (10.0.2.2 under QEMU user networking).

Every network operation has a short timeout: a host that does not serve the port named on the CONFIG line
must make the check FAIL within seconds with a reason, never hang the run.
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

from . import httpmini, irq, sysfs
from .config import Config
from .markers import Reporter, error_text
from .pure import LARGE_FNV1A64, LARGE_SIZE, fnv1a64, mib_per_s, pattern_bytes
from .record import asdict, record

UDP_SMALL = 32
UDP_MTU = 1400
UDP_TRIES = 3
UDP_WAIT_S = 1.0
DHCP_TIMEOUT_S = 20.0
DNS_TIMEOUT_S = 4.0
FLAP_DOWN_TIMEOUT_S = 30.0
FLAP_UP_TIMEOUT_S = 30.0
FLAP_POLL_S = 0.05
LEASE_FILE = Path("/run/aero-udhcpc.env")
SCRIPT_FILE = Path("/run/aero-udhcpc.sh")

NAMES = (
    "virtio-net-udp",
    "virtio-net",
    "virtio-net-udp-dns",
    "virtio-net-offload-csum",
    "virtio-net-link-flap",
    "virtio-net-msix",
)


def udhcpc_script(shell: str, lease_file: str) -> str:
    """The udhcpc event script: configure address, default route and /etc/resolv.conf from the lease.

    udhcpc runs it with the event in $1 and the lease in the environment ($interface, $ip, $mask
    (prefix length), $router, $dns, $mtu); it also records the lease in ``lease_file`` for the
    selftest to read.  ``shell`` is the interpreter line (``/path/to/busybox sh``) because the image
    need not have /bin/sh.
    """
    return f"""#!{shell}
# udhcpc event script written by aero_selftest
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${{mask:-24}}" dev "$interface"
    if [ -n "$mtu" ]; then ip link set "$interface" mtu "$mtu"; fi
    if [ -n "$router" ]; then
      ip route del default 2>/dev/null
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "options timeout:1 attempts:2" >> /etc/resolv.conf
    {{
      echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns"; echo "interface=$interface"
    }} > {lease_file}
    ;;
esac
exit 0
"""


def parse_lease(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def body_fnv1a64(body: bytes) -> int:
    """FNV-1a 64 of a download.  A byte-wise Python FNV over 1 MiB takes ~1.5 s under TCG, so a body
    identical to the protocol's pattern gets that pattern's hash (equal bytes, equal hash; the constant is
    checked against :func:`fnv1a64` by the unit tests); any other body is hashed for real."""
    if len(body) == LARGE_SIZE and body == pattern_bytes(LARGE_SIZE):
        return LARGE_FNV1A64
    return fnv1a64(body)


def find_iface() -> tuple[str, str]:
    """(interface, virtioN) of the first network interface driven by virtio_net."""
    for name in sorted(os.listdir("/sys/class/net")):
        dev_link = Path("/sys/class/net") / name / "device"
        driver = Path("/sys/class/net") / name / "device" / "driver"
        if driver.exists() and driver.resolve().name == "virtio_net":
            return name, sysfs.virtio_of(dev_link)
    raise LookupError("no network interface is driven by virtio_net (is a virtio-net-pci device attached?)")


def dhcp(iface: str) -> dict[str, str]:
    busybox = shutil.which("busybox")
    shell = f"{busybox} sh" if busybox else "/bin/sh"
    SCRIPT_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCRIPT_FILE.write_text(udhcpc_script(shell, str(LEASE_FILE)))
    SCRIPT_FILE.chmod(0o755)
    LEASE_FILE.unlink(missing_ok=True)
    cp = sysfs.run(["ip", "link", "set", iface, "up"], timeout=10)
    if cp.returncode != 0:
        raise RuntimeError(f"ip link set {iface} up: {sysfs.out_text(cp)}")
    cp = sysfs.run(
        ["udhcpc", "-i", iface, "-s", str(SCRIPT_FILE), "-f", "-q", "-n", "-t", "6", "-T", "2", "-A", "1"],
        timeout=DHCP_TIMEOUT_S,
    )
    lease = parse_lease(sysfs.read(LEASE_FILE))
    if cp.returncode != 0 or not lease.get("ip"):
        raise RuntimeError(f"udhcpc on {iface} got no lease: {sysfs.out_text(cp)}")
    return lease


def udp_echo(host: str, port: int, size: int, tag: int) -> float:
    """Send one ``size``-byte datagram and wait for the identical echo; returns the round trip in ms."""
    payload = (f"AERO{tag:08d}".encode() + os.urandom(16) + pattern_bytes(size))[:size]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        s.settimeout(UDP_WAIT_S)
        last = "no reply"
        for _attempt in range(UDP_TRIES):
            t0 = time.monotonic()
            s.send(payload)
            deadline = t0 + UDP_WAIT_S
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    break
                except ConnectionRefusedError as exc:
                    raise ConnectionRefusedError(
                        f"UDP port {port} on {host} refused (ICMP port unreachable): is the host's UDP echo "
                        "listening on the port in --udp-port?"
                    ) from exc
                if data == payload:
                    return (time.monotonic() - t0) * 1000
                last = f"echo differs ({len(data)} bytes back for {size})"
        raise TimeoutError(f"no UDP echo of {size} bytes from {host}:{port} after {UDP_TRIES} tries ({last})")


# ---------------------------------------------------------------------------------------- checksum offload

SIOCETHTOOL = 0x8946
ETHTOOL_GRXCSUM = 0x14
ETHTOOL_GTXCSUM = 0x16
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_CSUM_VALID = 1 << 7
ETH_P_ALL = 0x0003


def ethtool_value(iface: str, cmd: int) -> int:
    """A ``struct ethtool_value`` query (SIOCETHTOOL) -- what ``ethtool -k`` shows for tx/rx checksumming."""
    buf = array.array("I", [cmd, 0])
    addr, _n = buf.buffer_info()
    ifr = bytearray(struct.pack("16sP", iface.encode()[:15], addr).ljust(40, b"\0"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    return int(buf[1])


@record
class CsumCounts:
    tx_packets: int = 0
    tx_csum: int = 0
    tx_udp: int = 0
    rx_packets: int = 0
    rx_csum: int = 0


def count_frame(counts: CsumCounts, frame: bytes, outgoing: bool, tp_status: int) -> None:
    """Count one captured IPv4 TCP/UDP frame.

    An outgoing frame whose checksum the stack left to the device carries TP_STATUS_CSUMNOTREADY (the
    skb is CHECKSUM_PARTIAL: checksum offloaded to virtio-net); an incoming frame the device vouched for
    (VIRTIO_NET_HDR_F_DATA_VALID) carries TP_STATUS_CSUM_VALID.
    """
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return
    proto = frame[23]
    if proto not in (6, 17):
        return
    if outgoing:
        counts.tx_packets += 1
        if tp_status & TP_STATUS_CSUMNOTREADY:
            counts.tx_csum += 1
            if proto == 17:
                counts.tx_udp += 1
    else:
        counts.rx_packets += 1
        if tp_status & TP_STATUS_CSUM_VALID:
            counts.rx_csum += 1


def capture_csum(iface: str, traffic: list[tuple[str, int]], host: str, port: int) -> CsumCounts:
    """Capture our own UDP echo traffic on ``iface`` (AF_PACKET + PACKET_AUXDATA) and count offloads."""
    counts = CsumCounts()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as ps:
        ps.bind((iface, ETH_P_ALL))
        ps.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        for tag, size in traffic:
            udp_echo(host, port, size, int(tag))
        ps.setblocking(False)
        while True:
            try:
                data, anc, _flags, addr = ps.recvmsg(65536, socket.CMSG_SPACE(20))
            except BlockingIOError:
                break
            status = 0
            for level, ctype, cdata in anc:
                if level == SOL_PACKET and ctype == PACKET_AUXDATA and len(cdata) >= 4:
                    status = struct.unpack_from("I", cdata)[0]
            count_frame(counts, data, addr[2] == PACKET_OUTGOING, status)
    return counts


# ---------------------------------------------------------------------------------------------- checks


class NetState:
    def __init__(self) -> None:
        self.iface = ""
        self.dev = ""
        self.lease: dict[str, str] = {}
        self.error = ""

    @property
    def up(self) -> bool:
        return bool(self.lease)


def setup(st: NetState) -> None:
    try:
        st.iface, st.dev = find_iface()
        st.lease = dhcp(st.iface)
    except Exception as exc:  # reported by every check that needs the network
        st.error = error_text(exc)


def check_udp(rep: Reporter, cfg: Config, st: NetState) -> None:
    name = "virtio-net-udp"
    if not st.up:
        rep.fail(name, "no_network", err=st.error)
        return
    host = httpmini.parse_url(cfg.http_url).host
    try:
        rtt_small = udp_echo(host, cfg.udp_port, UDP_SMALL, 1)
        rtt_big = udp_echo(host, cfg.udp_port, UDP_MTU, 2)
    except (OSError, TimeoutError) as exc:
        rep.fail(name, "udp_echo_failed", err=error_text(exc), host=host, port=cfg.udp_port)
        return
    rep.pass_(
        name,
        bytes=UDP_MTU,
        small_bytes=UDP_SMALL,
        mtu_bytes=UDP_MTU,
        rtt_ms=round(max(rtt_small, rtt_big), 2),
        host=host,
        port=cfg.udp_port,
        ip=st.lease.get("ip", ""),
    )


def check_http(rep: Reporter, cfg: Config, st: NetState) -> None:
    name = "virtio-net"
    if not st.up:
        rep.fail(name, "no_network", err=st.error)
        return
    fields: dict[str, str | int | float] = {}
    try:
        small = httpmini.get(httpmini.parse_url(cfg.http_url))
        if small.status != 200 or small.body != b"OK\n":
            rep.fail(name, "bad_small_response", status=small.status, body=small.body[:32].decode("latin-1"))
            return
        large_url = httpmini.parse_url(cfg.http_url_large)
        t0 = time.monotonic()
        large = httpmini.get(large_url)
        t_large = time.monotonic() - t0
        h = body_fnv1a64(large.body)
        etag = large.headers.get("etag", "").strip('"').lower()
        fields.update(
            large_ok=int(large.status == 200 and len(large.body) == LARGE_SIZE and h == LARGE_FNV1A64),
            large_bytes=len(large.body),
            large_fnv1a64=f"0x{h:016x}",
            large_mbps=round(mib_per_s(len(large.body), t_large), 2),
            etag_ok=int(etag == f"{h:016x}"),
        )
        body = pattern_bytes(LARGE_SIZE)
        t0 = time.monotonic()
        resp, continued = httpmini.post_expect_continue(large_url, body)
        t_up = time.monotonic() - t0
        fields.update(
            upload_ok=int(resp.status == 200),
            upload_bytes=len(body),
            upload_mbps=round(mib_per_s(len(body), t_up), 2),
            upload_status=resp.status,
            expect_continue=int(continued),
        )
    except httpmini.HttpError as exc:
        rep.fail(name, exc.reason, err=str(exc), url=cfg.http_url, **fields)
        return
    except OSError as exc:
        rep.fail(name, "http_error", err=error_text(exc), url=cfg.http_url, **fields)
        return
    if not fields["large_ok"]:
        rep.fail(name, "large_download_mismatch", **fields)
    elif not fields["etag_ok"]:
        rep.fail(name, "etag_mismatch", **fields)
    elif not fields["upload_ok"]:
        rep.fail(name, "upload_rejected", **fields)
    else:
        rep.pass_(name, **fields)


def check_dns(rep: Reporter, cfg: Config, st: NetState) -> None:
    """Resolve dns_host through the DHCP-provided resolver (in a thread: getaddrinfo has no timeout)."""
    name = "virtio-net-udp-dns"
    if not st.up:
        rep.info(name, host=cfg.dns_host, ok=0, error="no_network")
        return
    result: list[str] = []
    error: list[str] = []

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(cfg.dns_host, None, socket.AF_INET, socket.SOCK_DGRAM)
            result.extend(sorted({str(i[4][0]) for i in infos}))
        except OSError as exc:
            error.append(error_text(exc))

    t0 = time.monotonic()
    th = threading.Thread(target=resolve, daemon=True)
    th.start()
    th.join(DNS_TIMEOUT_S)
    ms = int((time.monotonic() - t0) * 1000)
    server = st.lease.get("dns", "").split(" ")[0]
    if result:
        rep.info(name, host=cfg.dns_host, ok=1, addr=",".join(result), ms=ms, server=server)
    else:
        rep.info(name, host=cfg.dns_host, ok=0, error=error[0] if error else "timeout", ms=ms, server=server)


def check_offload(rep: Reporter, cfg: Config, st: NetState) -> None:
    """Report the checksum offloads Linux negotiated and what really happened on the wire.

    Features: ETHTOOL_GTXCSUM / ETHTOOL_GRXCSUM (``ethtool -k``).  Counts: our own UDP echo traffic is
    captured with an AF_PACKET socket and PACKET_AUXDATA, whose status tells whether each outgoing packet
    left with its checksum offloaded to the device (tx_csum, tx_udp) and whether each incoming one was
    vouched for by the device (rx_csum).  The virtio-net driver has no offload counters of its own, so
    this is what can be observed honestly.  Under QEMU's user networking (slirp) the device offers no
    checksum offload (its backend has no vnet header), so tx_csum=0 is the expected truth there.  PASS
    means the measurement worked (our packets were seen); INFO when packet capture is unavailable.
    """
    name = "virtio-net-offload-csum"
    if not st.up:
        rep.fail(name, "no_network", err=st.error)
        return
    tx_feat = ethtool_value(st.iface, ETHTOOL_GTXCSUM)
    rx_feat = ethtool_value(st.iface, ETHTOOL_GRXCSUM)
    host = httpmini.parse_url(cfg.http_url).host
    try:
        counts = capture_csum(st.iface, [("11", UDP_SMALL), ("12", UDP_MTU), ("13", UDP_SMALL)], host, cfg.udp_port)
    except (TimeoutError, ConnectionRefusedError) as exc:
        rep.fail(name, "udp_echo_failed", err=error_text(exc), tx_offload=tx_feat, rx_offload=rx_feat)
        return
    except (PermissionError, AttributeError) as exc:
        rep.info(name, tx_offload=tx_feat, rx_offload=rx_feat, reason="capture_unavailable", err=error_text(exc))
        return
    fields = {
        **asdict(counts),
        "tx_offload": "on" if tx_feat else "off",
        "rx_offload": "on" if rx_feat else "off",
    }
    if counts.tx_packets >= 3 and counts.rx_packets >= 3:
        rep.pass_(name, **fields)
    else:
        rep.fail(name, "capture_incomplete", **fields)


def _carrier(iface: str) -> str:
    return sysfs.read(Path("/sys/class/net") / iface / "carrier", "0")


def check_link_flap(rep: Reporter, cfg: Config, st: NetState) -> None:
    """READY, then wait for the carrier to drop (host: set_link up=false) and come back, then UDP echo."""
    name = "virtio-net-link-flap"
    if not cfg.has("test-net-link-flap"):
        rep.skip_flag_not_set(name)
        return
    if not st.up:
        rep.fail(name, "no_network", err=st.error)
        return
    carrier_path = Path("/sys/class/net") / st.iface
    rep.ready(name, iface=st.iface)
    t0 = time.monotonic()
    while _carrier(st.iface) == "1":
        if time.monotonic() - t0 > FLAP_DOWN_TIMEOUT_S:
            rep.fail(
                name,
                "link_down_timeout",
                timeout_s=int(FLAP_DOWN_TIMEOUT_S),
                operstate=sysfs.read(carrier_path / "operstate"),
            )
            return
        time.sleep(FLAP_POLL_S)
    t_down = time.monotonic()
    down_ms = int((t_down - t0) * 1000)
    while _carrier(st.iface) != "1":
        if time.monotonic() - t_down > FLAP_UP_TIMEOUT_S:
            rep.fail(name, "link_up_timeout", down_ms=down_ms, timeout_s=int(FLAP_UP_TIMEOUT_S))
            return
        time.sleep(FLAP_POLL_S)
    up_ms = int((time.monotonic() - t_down) * 1000)
    host = httpmini.parse_url(cfg.http_url).host
    deadline = time.monotonic() + 10
    while True:
        try:
            udp_echo(host, cfg.udp_port, UDP_MTU, 99)
            break
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                rep.fail(name, "udp_after_flap_failed", down_ms=down_ms, up_ms=up_ms, err=error_text(exc))
                return
    rep.pass_(name, down_ms=down_ms, up_ms=up_ms, udp_after=1, operstate=sysfs.read(carrier_path / "operstate"))


def check_msix(rep: Reporter, cfg: Config, st: NetState) -> None:
    name = "virtio-net-msix"
    dev = st.dev or (sysfs.virtio_devices("virtio_net") or [""])[0]
    if not dev:
        rep.skip(name, "device_missing")
        return
    info = irq.read_device_irqs(dev)
    fields = irq.msix_fields(info)
    fields.update(rx_vector=info.vector("input.0"), tx_vector=info.vector("output.0"))
    if info.mode == "msix":
        rep.pass_(name, **fields)
    elif cfg.has("require-net-msix"):
        rep.fail(name, "not_msix", **fields, required_by="--require-net-msix")
    else:
        rep.skip(name, "not_msix", **fields)


def run(rep: Reporter, cfg: Config) -> None:
    st = NetState()
    setup(st)
    for check, name in (
        (check_udp, "virtio-net-udp"),
        (check_http, "virtio-net"),
        (check_dns, "virtio-net-udp-dns"),
        (check_offload, "virtio-net-offload-csum"),
        (check_link_flap, "virtio-net-link-flap"),
        (check_msix, "virtio-net-msix"),
    ):
        with rep.group(name):
            check(rep, cfg, st)
