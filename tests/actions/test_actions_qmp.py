"""Reactions driven by marker lines, executed through the real QMPClient against a fake QMP peer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aero_actions_rig import make_caps, rig, run
from aero_fake_qmp import QmpFault

from pytest_aero_virtio.actions import ActionContext, Reaction, Reactor
from pytest_aero_virtio.errors import (
    QMP_BLK_RESIZE_FAILED,
    QMP_INPUT_INJECT_FAILED,
    QMP_INPUT_TABLET_INJECT_FAILED,
    QMP_MEDIA_KEYS_UNSUPPORTED,
    QMP_NET_LINK_FLAP_FAILED,
)
from pytest_aero_virtio.markers import Marker

P = "AERO_VIRTIO_SELFTEST|TEST|"
FAST: dict[str, Any] = {"input_interval_s": 0.05, "input_deadline_s": 5.0}


def buttons(calls: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["button"] for c in calls for e in c["events"] if e["type"] == "btn"]


# --- input events -----------------------------------------------------------------------------------------
def test_input_events_device_mode_repeats_until_final() -> None:
    async def main() -> None:
        async with rig({"input_events"}, **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            await asyncio.sleep(0.3)
            r.feed(P + "virtio-input-events|PASS|keys=2")
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            assert sends and all(c["device"] == "vga0" for c in sends)
            per_attempt = 2 + 3  # a down/up + motion + left down/up
            assert len(sends) % per_attempt == 0 and len(sends) // per_attempt >= 2
            first = sends[:per_attempt]
            assert first[0]["events"][0]["data"]["key"]["data"] == "a"
            assert [e["data"]["axis"] for e in first[2]["events"]] == ["x", "y"]
            assert "wheel-up" not in buttons(sends)
            markers = r.host("VIRTIO_INPUT_EVENTS_INJECT")
            assert len(markers) == len(sends) // per_attempt
            assert (
                markers[0]
                .line()
                .startswith(
                    "AERO_VIRTIO_WIN7_HOST|VIRTIO_INPUT_EVENTS_INJECT|PASS|attempt=1|backend=qmp_input_send_event"
                    "|kbd_mode=device|mouse_mode=device"
                )
            )
            assert r.log_lines[0] == markers[0].line()
            count = len(sends)
            await asyncio.sleep(0.2)
            assert len(r.peer.executed("input-send-event")) == count  # stopped after the final status

    run(main())


def test_input_events_fall_back_to_broadcast_when_console_refused() -> None:
    async def main() -> None:
        async with rig({"input_events"}, peer_kwargs={"displays": set()}, **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            r.feed(P + "virtio-input-events|PASS")  # final at once: exactly one attempt
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            # each kind tries its console once, is refused, and stays on broadcast from then on
            assert ["device" in c for c in sends] == [True, False, False, True, False, False, False]
            (m,) = r.host("VIRTIO_INPUT_EVENTS_INJECT")
            assert m.status == "PASS"
            assert m.fields["kbd_mode"] == "broadcast" and m.fields["mouse_mode"] == "broadcast"

    run(main())


def test_input_events_broadcast_without_display_property() -> None:
    async def main() -> None:
        async with rig({"input_events"}, caps=make_caps(display_prop=False), **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            r.feed(P + "virtio-input-events|FAIL|reason=x")
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            assert len(sends) == 5 and all("device" not in c for c in sends)
            assert r.host("VIRTIO_INPUT_EVENTS_INJECT")[0].fields["kbd_mode"] == "broadcast"

    run(main())


def test_input_events_stop_at_deadline() -> None:
    async def main() -> None:
        async with rig({"input_events"}, input_interval_s=0.05, input_deadline_s=0.3) as r:
            r.feed(P + "virtio-input-events|READY")
            await r.reactor.drain(5)
            attempts = [int(m.fields["attempt"]) for m in r.host("VIRTIO_INPUT_EVENTS_INJECT")]
            assert 3 <= len(attempts) <= 8 and attempts == list(range(1, len(attempts) + 1))

    run(main())


def test_input_events_extended_and_wheel() -> None:
    async def main() -> None:
        async with rig({"input_events", "input_events_extended", "input_wheel"}, **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            r.feed(P + "virtio-input-events|PASS")
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            assert buttons(sends) == [
                "left", "left", "wheel-up", "wheel-up", "wheel-right", "wheel-right",
                "side", "side", "extra", "extra",
            ]  # fmt: skip
            keys = [e["data"]["key"]["data"] for c in sends for e in c["events"] if e["type"] == "key"]
            assert keys[:6] == ["a", "a", "shift", "b", "b", "shift"] and "f1" in keys
            (m,) = r.host("VIRTIO_INPUT_EVENTS_INJECT")
            assert (m.fields["set"], m.fields["wheel"]) == ("extended", "1")

    run(main())


def test_input_events_wheel_only() -> None:
    async def main() -> None:
        async with rig({"input_events", "input_wheel"}, **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            r.feed(P + "virtio-input-events|PASS")
            await r.reactor.drain(5)
            assert "wheel-right" in buttons(r.peer.executed("input-send-event"))
            assert "side" not in buttons(r.peer.executed("input-send-event"))

    run(main())


def test_input_events_failure_is_a_fail_marker() -> None:
    async def main() -> None:
        async with rig({"input_events"}, peer_kwargs={"qcodes": set()}, **FAST) as r:
            r.feed(P + "virtio-input-events|READY")
            await r.reactor.drain(5)
            (m,) = r.host("VIRTIO_INPUT_EVENTS_INJECT")
            assert m.status == "FAIL" and m.fields["token"] == QMP_INPUT_INJECT_FAILED
            assert "does not accept value 'a'" in m.fields["reason"]
            assert "|" not in m.fields["reason"]

    run(main())


def test_not_triggered_by_other_lines() -> None:
    async def main() -> None:
        async with rig({"input_events", "blk_resize"}, **FAST) as r:
            r.feed(P + "virtio-input-events|SKIP|flag_not_set")
            r.feed(P + "virtio-blk-resize|PASS")
            r.feed("AERO_VIRTIO_SELFTEST|RESULT|PASS")
            await r.reactor.drain(5)
            assert [c.cmd for c in r.peer.calls] == ["qmp_capabilities"]
            assert r.ctx.recorded == []

    run(main())


# --- media keys and tablet ----------------------------------------------------------------------------------
def test_media_keys() -> None:
    async def main() -> None:
        async with rig({"input_media_keys"}, **FAST) as r:
            r.feed(P + "virtio-input-media-keys|READY")
            r.feed(P + "virtio-input-media-keys|PASS")
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            assert [(c["device"], c["events"][0]["data"]["down"]) for c in sends] == [
                ("vga0", True),
                ("vga0", False),
            ]
            assert sends[0]["events"][0]["data"]["key"] == {"type": "qcode", "data": "volumeup"}
            (m,) = r.host("VIRTIO_INPUT_MEDIA_KEYS_INJECT")
            assert m.status == "PASS" and m.fields["kbd_mode"] == "device"

    run(main())


def test_media_keys_unsupported() -> None:
    async def main() -> None:
        async with rig({"input_media_keys"}, peer_kwargs={"qcodes": {"a"}}, **FAST) as r:
            r.feed(P + "virtio-input-media-keys|READY")
            await r.reactor.drain(5)
            (m,) = r.host("VIRTIO_INPUT_MEDIA_KEYS_INJECT")
            assert m.status == "FAIL" and m.fields["token"] == QMP_MEDIA_KEYS_UNSUPPORTED
            assert "volumeup" in m.fields["reason"]

    run(main())


def test_tablet_goes_to_its_own_console() -> None:
    async def main() -> None:
        async with rig({"input_tablet_events"}, **FAST) as r:
            r.feed(P + "virtio-input-tablet-events|READY")
            r.feed(P + "virtio-input-tablet-events|PASS")
            await r.reactor.drain(5)
            sends = r.peer.executed("input-send-event")
            assert all(c["device"] == "vga1" for c in sends) and len(sends) == 4
            assert [(e["type"], e["data"].get("axis"), e["data"].get("value")) for e in sends[1]["events"]] == [
                ("abs", "x", 10000),
                ("abs", "y", 20000),
            ]
            (m,) = r.host("VIRTIO_INPUT_TABLET_EVENTS_INJECT")
            assert m.line().startswith(
                "AERO_VIRTIO_WIN7_HOST|VIRTIO_INPUT_TABLET_EVENTS_INJECT|PASS|attempt=1|backend=qmp_input_send_event"
                "|tablet_mode=device"
            )

    run(main())


def test_tablet_failure_token() -> None:
    def refuse(args: dict[str, Any]) -> None:
        raise QmpFault("VM not running")

    async def main() -> None:
        async with rig({"input_tablet_events"}, peer_kwargs={"hooks": {"input-send-event": refuse}}, **FAST) as r:
            r.feed(P + "virtio-input-tablet-events|READY")
            await r.reactor.drain(5)
            (m,) = r.host("VIRTIO_INPUT_TABLET_EVENTS_INJECT")
            assert m.status == "FAIL" and m.fields["token"] == QMP_INPUT_TABLET_INJECT_FAILED
            assert m.fields["tablet_mode"] == "broadcast"  # the refusal made it try broadcast too

    run(main())


# --- blk resize ------------------------------------------------------------------------------------------
def test_blk_resize_block_resize_once() -> None:
    async def main() -> None:
        async with rig({"blk_resize"}) as r:
            r.feed(P + "virtio-blk-resize|READY|disk=1|old_bytes=67108864")
            r.feed(P + "virtio-blk-resize|READY|disk=1|old_bytes=67108864")  # repeated READY: still once
            await r.reactor.drain(5)
            assert r.peer.executed("block_resize") == [{"node-name": "disk0", "size": 134217728}]
            assert r.peer.executed("blockdev-resize") == []
            req, ok = r.host("VIRTIO_BLK_RESIZE")
            assert req.line() == (
                "AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_RESIZE|REQUEST|disk=1|old_bytes=67108864|new_bytes=134217728"
                "|qmp_cmd=block_resize"
            )
            assert ok.status == "PASS" and ok.fields["qmp_cmd"] == "block_resize"

    run(main())


def test_blk_resize_prefers_blockdev_resize_and_rounds() -> None:
    async def main() -> None:
        caps = make_caps(commands={"blockdev-resize", "block_resize"})
        peer = {"commands": {"qmp_capabilities", "blockdev-resize", "block_resize"}}
        async with rig({"blk_resize"}, caps=caps, peer_kwargs=peer, blk_resize_delta=1000) as r:
            r.feed(P + "virtio-blk-resize|READY|disk=0|old_bytes=1000")
            await r.reactor.drain(5)
            assert r.peer.executed("blockdev-resize") == [{"node-name": "disk0", "size": 2048}]
            assert r.peer.executed("block_resize") == []
            assert [m.status for m in r.host("VIRTIO_BLK_RESIZE")] == ["REQUEST", "PASS"]

    run(main())


def test_blk_resize_falls_back_when_blockdev_resize_refused() -> None:
    async def main() -> None:
        caps = make_caps(commands={"blockdev-resize", "block_resize"})  # caps say yes, QEMU says no
        async with rig({"blk_resize"}, caps=caps) as r:
            r.feed(P + "virtio-blk-resize|READY|disk=0|old_bytes=512")
            await r.reactor.drain(5)
            assert [c.cmd for c in r.peer.calls[1:]] == ["blockdev-resize", "block_resize"]
            req, ok = r.host("VIRTIO_BLK_RESIZE")
            assert req.fields["qmp_cmd"] == "blockdev-resize" and ok.fields["qmp_cmd"] == "block_resize"
            assert ok.status == "PASS"

    run(main())


def test_blk_resize_failure() -> None:
    async def main() -> None:
        async with rig({"blk_resize"}, peer_kwargs={"nodes": set()}) as r:
            r.feed(P + "virtio-blk-resize|READY|disk=0|old_bytes=512")
            await r.reactor.drain(5)
            _, fail = r.host("VIRTIO_BLK_RESIZE")
            assert fail.status == "FAIL" and fail.fields["token"] == QMP_BLK_RESIZE_FAILED
            assert "node-name='disk0'" in fail.fields["reason"]

    run(main())


def test_blk_resize_bad_ready_line() -> None:
    async def main() -> None:
        async with rig({"blk_resize"}) as r:
            r.feed(P + "virtio-blk-resize|READY|disk=0")
            await r.reactor.drain(5)
            (fail,) = r.host("VIRTIO_BLK_RESIZE")
            assert fail.status == "FAIL" and "old_bytes" in fail.fields["reason"]
            assert r.peer.executed("block_resize") == []

    run(main())


# --- net link flap ---------------------------------------------------------------------------------------
def test_net_link_flap() -> None:
    async def main() -> None:
        async with rig({"net_link_flap"}, link_down_s=0.2) as r:
            r.feed(P + "virtio-net-link-flap|READY")
            await r.reactor.drain(5)
            calls = [c for c in r.peer.calls if c.cmd == "set_link"]
            assert [c.args for c in calls] == [{"name": "vnet0", "up": False}, {"name": "vnet0", "up": True}]
            assert calls[1].t - calls[0].t >= 0.2
            assert [m.status for m in r.host("VIRTIO_NET_LINK_FLAP")] == ["REQUEST", "DOWN", "PASS"]
            assert r.peer.link_up == {"vnet0": True}

    run(main())


def test_net_link_flap_refused() -> None:
    async def main() -> None:
        async with rig({"net_link_flap"}, link_down_s=0.01, peer_kwargs={"links": set()}) as r:
            r.feed(P + "virtio-net-link-flap|READY")
            await r.reactor.drain(5)
            fail = r.host("VIRTIO_NET_LINK_FLAP")[-1]
            assert fail.status == "FAIL" and fail.fields["token"] == QMP_NET_LINK_FLAP_FAILED
            assert fail.fields["step"] == "down" and "vnet0" in fail.fields["reason"]

    run(main())


def test_net_link_flap_cancelled_brings_link_up() -> None:
    async def main() -> None:
        async with rig({"net_link_flap"}, link_down_s=10) as r:
            r.feed(P + "virtio-net-link-flap|READY")
            await asyncio.sleep(0.2)
            assert r.peer.link_up == {"vnet0": False}
            await r.reactor.cancel()
            assert r.peer.link_up == {"vnet0": True}

    run(main())


# --- the reactor ---------------------------------------------------------------------------------------
def _reaction(trigger: Any, run_fn: Any) -> Reaction:
    return Reaction(name="probe", trigger=trigger, run=run_fn, topic="PROBE", token="PROBE_FAILED")


def test_reactor_reports_exceptions_as_fail_markers() -> None:
    async def boom(ctx: ActionContext, m: Marker) -> None:
        raise RuntimeError("kaboom|x")

    def bad_trigger(m: Marker) -> bool:
        raise KeyError("nope")

    async def main() -> None:
        async with rig(set()) as r:
            reactor = Reactor(r.ctx, [_reaction(lambda m: True, boom)])
            r.stream.subscribe(reactor.on_marker)
            r.feed(P + "virtio-blk|PASS")
            await reactor.drain(5)
            (m,) = r.host("PROBE")
            assert (m.status, m.fields["token"], m.fields["reason"]) == (
                "FAIL",
                "PROBE_FAILED",
                "RuntimeError: kaboom/x",
            )
            reactor2 = Reactor(r.ctx, [_reaction(bad_trigger, boom)])
            reactor2.on_marker(r.stream.final("virtio-blk"))  # type: ignore[arg-type]
            await reactor2.drain(5)
            assert "KeyError" in r.host("PROBE")[-1].fields["reason"]

    run(main())


def test_reactor_forwards_calls_from_other_threads() -> None:
    seen: list[str] = []

    async def note(ctx: ActionContext, m: Marker) -> None:
        seen.append(threading.current_thread().name)

    async def main() -> None:
        async with rig(set()) as r:
            loop = asyncio.get_running_loop()
            reactor = Reactor(r.ctx, [_reaction(lambda m: m.status == "READY", note)], loop=loop)
            r.stream.subscribe(reactor.on_marker)
            await asyncio.to_thread(r.feed, P + "virtio-x|READY")
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.01)
            await reactor.drain(5)
            assert seen == [threading.current_thread().name]

    run(main())


def test_reactor_drain_timeout_cancels() -> None:
    async def slow(ctx: ActionContext, m: Marker) -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        async with rig(set()) as r:
            reactor = Reactor(r.ctx, [_reaction(lambda m: True, slow)])
            r.stream.subscribe(reactor.on_marker)
            r.feed(P + "virtio-x|READY")
            assert reactor.pending == 1
            await reactor.drain(0.1)
            assert reactor.pending == 0

    run(main())
