"""The diagnostic mirror: guest irq/msix/throughput fields copied into stable host markers."""

from __future__ import annotations

from aero_actions_rig import rig, run

from pytest_aero_virtio.actions import MIRROR, vm_reactions
from pytest_aero_virtio.actions.mirror import mirror_of
from pytest_aero_virtio.config import VmConfig
from pytest_aero_virtio.markers import Marker, parse_line

P = "AERO_VIRTIO_SELFTEST|TEST|"


def marker(line: str) -> Marker:
    m = parse_line(line)
    assert isinstance(m, Marker)
    return m


def test_blk_irq_matches_reference_example() -> None:
    m = marker(
        P + "virtio-blk|PASS|write_bytes=1024|irq_mode=msix|irq_message_count=2|msix_config_vector=0x0000"
        "|msix_queue_vector=0x0001"
    )
    irq, io = mirror_of(m)
    assert irq.line() == (
        "AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_IRQ|PASS|irq_mode=msix|irq_message_count=2"
        "|msix_config_vector=0x0000|msix_queue_vector=0x0001"
    )
    assert io.line() == "AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_IO|PASS|write_bytes=1024"


def test_whole_copies_and_tokens() -> None:
    (hm,) = mirror_of(marker(P + "virtio-net-msix|SKIP|not_supported|mode=intx"))
    assert hm.line() == "AERO_VIRTIO_WIN7_HOST|VIRTIO_NET_MSIX|SKIP|not_supported|mode=intx"
    (large,) = mirror_of(marker(P + "virtio-net|PASS|large_ok=1|large_bytes=1048576|upload_ok=1|other=x"))
    assert dict(large.fields) == {"large_ok": "1", "large_bytes": "1048576", "upload_ok": "1"}


def test_nothing_to_mirror() -> None:
    assert mirror_of(marker(P + "virtio-net|PASS")) == []  # old guest: no fields
    assert mirror_of(marker(P + "virtio-blk-resize|READY|old_bytes=1")) == []
    assert mirror_of(marker(P + "virtio-blk-msix|READY")) == []
    assert mirror_of(marker("AERO_VIRTIO_SELFTEST|RESULT|PASS")) == []


def test_vm_reactions_include_mirror() -> None:
    names = [r.name for r in vm_reactions(VmConfig(reactions=frozenset({"net_link_flap"})))]
    assert names == ["net_link_flap", "mirror"]
    assert MIRROR not in vm_reactions(VmConfig(), mirror=False)


def test_mirror_reaction_fires_every_time() -> None:
    async def main() -> None:
        async with rig(set()) as r:
            from pytest_aero_virtio.actions import Reactor

            reactor = Reactor(r.ctx, [MIRROR])
            r.stream.subscribe(reactor.on_marker)
            r.feed(P + "virtio-snd-eventq|INFO|events=0")
            r.feed(P + "virtio-input|PASS|irq_mode=intx")
            r.feed(P + "virtio-input|PASS|irq_mode=msix")
            await reactor.drain(5)
            assert [(h.topic, h.get("events") or h.get("irq_mode")) for h in r.ctx.recorded] == [
                ("VIRTIO_SND_EVENTQ", "0"),
                ("VIRTIO_INPUT_IRQ", "intx"),
                ("VIRTIO_INPUT_IRQ", "msix"),
            ]
            assert r.stream.host_markers[-1].topic == "VIRTIO_INPUT_IRQ"

    run(main())
