"""virtio-net: DHCP, UDP echo, DNS, HTTP and 1 MiB transfers against the host services, link flap."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.testing import MODERN_IDS, AeroDevice, expected_irq_mode

pytestmark = pytest.mark.virtio_net

LARGE_FNV1A64 = "0x8505ae4435522325"


@pytest.mark.aero_check()
def test_net_pci_preflight(virtio_net: AeroDevice) -> None:
    virtio_net.pci_preflight(MODERN_IDS["net"])


@pytest.mark.aero_check("virtio-net-udp")
def test_virtio_net_udp(virtio_net: AeroDevice) -> None:
    """UDP echo of a 32-byte and a 1400-byte datagram; the host's echo really saw them."""
    m = virtio_net.expect_pass()
    if m.has("bytes"):
        m.require(m.integer("bytes") == 1400, f"bytes={m.get('bytes')}, expected the 1400-byte datagram")
    virtio_net.vm.expect_udp_echoes(2)


@pytest.mark.aero_check("virtio-net")
def test_virtio_net(virtio_net: AeroDevice) -> None:
    """HTTP GET, the 1 MiB download (FNV-1a 64 checked by the guest) and the 1 MiB upload (SHA-256 on the host)."""
    m = virtio_net.expect_pass()
    if m.has("large_ok"):
        m.expect("large_ok", "1")
        m.require(m.integer("large_bytes") == 1 << 20, f"large_bytes={m.get('large_bytes')}, expected 1048576")
        m.expect("large_fnv1a64", LARGE_FNV1A64)
    if m.has("upload_ok"):
        m.expect("upload_ok", "1")
    virtio_net.vm.expect_http("GET", virtio_net.vm.options.http_path, 200)


@pytest.mark.aero_check("virtio-net-udp-dns")
def test_virtio_net_udp_dns(virtio_net: AeroDevice) -> None:
    virtio_net.expect_info()


@pytest.mark.aero_check("virtio-net-offload-csum")
def test_virtio_net_offload_csum(virtio_net: AeroDevice) -> None:
    virtio_net.expect_pass()


@pytest.mark.aero_check("virtio-net-msix")
def test_virtio_net_msix(virtio_net: AeroDevice) -> None:
    virtio_net.expect_pass().expect("mode", expected_irq_mode(virtio_net.vm.config.vectors.net))


@pytest.mark.aero_check("virtio-net-link-flap")
def test_virtio_net_link_flap(virtio_net: AeroDevice) -> None:
    """The host drops the link over QMP ``set_link`` when the guest is READY; the guest sees down then up."""
    virtio_net.expect_pass()
    virtio_net.vm.expect_host(topics.NET_LINK_FLAP, "PASS")


def _offload_counter(virtio_net: AeroDevice, counter: str) -> None:
    m = virtio_net.expect_pass()
    if m.get("tx_offload") == "off":
        pytest.skip(
            f"{counter}: the device offered no TX checksum offload ({m.raw.split('|', 4)[-1]}); QEMU's user "
            "networking has no vnet header, so it never does - run with a tap/vhost backend to require it"
        )
    m.require(m.integer(counter, minimum=0) > 0, f"offload is on but no packet used it ({counter}=0)")


@pytest.mark.aero_check("virtio-net-offload-csum")
def test_virtio_net_tx_csum_offloaded(virtio_net: AeroDevice) -> None:
    """Old ``--require-net-csum-offload``: at least one TX packet had its checksum offloaded."""
    _offload_counter(virtio_net, "tx_csum")


@pytest.mark.aero_check("virtio-net-offload-csum")
def test_virtio_net_udp_csum_offloaded(virtio_net: AeroDevice) -> None:
    """Old ``--require-net-udp-csum-offload``: at least one UDP TX packet had its checksum offloaded."""
    _offload_counter(virtio_net, "tx_udp")
