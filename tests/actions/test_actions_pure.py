"""Pure parts of the reactions: event sequences, resize arithmetic, registry."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_aero_virtio.actions import ACTIONS, reactions_for
from pytest_aero_virtio.actions.base import ready_trigger
from pytest_aero_virtio.actions.blk import resize_commands, resize_target
from pytest_aero_virtio.actions.input import (
    Target,
    keyboard_events,
    media_key_events,
    mouse_events,
    tablet_events,
)
from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.markers import HostMarker, Marker, clean_host_value


def flat(batches: list[list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for batch in batches:
        for ev in batch:
            d = ev["data"]
            if ev["type"] == "key":
                out.append(("key", d["key"]["type"], d["key"]["data"], d["down"]))
            elif ev["type"] == "btn":
                out.append(("btn", d["button"], d["down"]))
            else:
                out.append((ev["type"], d["axis"], d["value"]))
    return out


def test_keyboard_base() -> None:
    assert flat(keyboard_events()) == [("key", "qcode", "a", True), ("key", "qcode", "a", False)]
    assert len(keyboard_events()) == 2  # press and release are separate commands (separate SYN)


def test_keyboard_extended() -> None:
    seq = [(e[2], e[3]) for e in flat(keyboard_events(extended=True))]
    assert seq == [
        ("a", True), ("a", False),
        ("shift", True), ("b", True), ("b", False), ("shift", False),
        ("ctrl", True), ("ctrl", False), ("alt", True), ("alt", False), ("f1", True), ("f1", False),
    ]  # fmt: skip


def test_mouse_base_one_motion_batch() -> None:
    batches = mouse_events()
    assert flat(batches[:1]) == [("rel", "x", 10), ("rel", "y", 5)]
    assert flat(batches[1:]) == [("btn", "left", True), ("btn", "left", False)]


def test_mouse_wheel_is_buttons_and_axes_only_xy() -> None:
    events = flat(mouse_events(wheel=True, extended=True))
    assert ("btn", "wheel-up", True) in events and ("btn", "wheel-up", False) in events
    assert ("btn", "wheel-right", True) in events and ("btn", "wheel-right", False) in events
    assert ("btn", "side", True) in events and ("btn", "extra", False) in events
    axes = {e[1] for e in events if e[0] in ("rel", "abs")}
    assert axes == {"x", "y"}
    assert not any(e[0] == "btn" and e[1].startswith("wheel") for e in flat(mouse_events(extended=False)))


def test_media_and_tablet() -> None:
    assert flat(media_key_events()) == [
        ("key", "qcode", "volumeup", True),
        ("key", "qcode", "volumeup", False),
    ]
    assert flat(tablet_events()) == [
        ("abs", "x", 0), ("abs", "y", 0), ("abs", "x", 10000), ("abs", "y", 20000),
        ("btn", "left", True), ("btn", "left", False),
    ]  # fmt: skip
    assert all(0 <= e[2] <= 0x7FFF for e in flat(tablet_events()) if e[0] == "abs")


def test_target_args() -> None:
    t = Target("kbd", "vga0", keyboard_events())
    assert t.args([]) == {"device": "vga0", "events": []}
    t.mode = "broadcast"
    assert t.args([]) == {"events": []}
    assert Target("kbd", None, []).mode == "broadcast"


@pytest.mark.parametrize(
    ("old", "delta", "new"),
    [
        (0, 512, 512),
        (1000, 64 << 20, ((1000 + (64 << 20) + 511) // 512) * 512),
        (1 << 30, 64 << 20, (1 << 30) + (64 << 20)),
    ],
)
def test_resize_target(old: int, delta: int, new: int) -> None:
    assert resize_target(old, delta) == new and new % 512 == 0 and new >= old + delta


def test_resize_target_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        resize_target(-1, 512)
    with pytest.raises(ValueError):
        resize_target(0, 0)


def test_resize_commands() -> None:
    assert [c for c, _ in resize_commands(False, "disk0", 512)] == ["block_resize"]
    cmds = resize_commands(True, "disk0", 1024)
    assert cmds == [
        ("blockdev-resize", {"node-name": "disk0", "size": 1024}),
        ("block_resize", {"node-name": "disk0", "size": 1024}),
    ]


def test_registry_aliases_and_unknown() -> None:
    assert set(ACTIONS) == {
        "blk_resize", "input_events", "input_events_extended", "input_wheel",
        "input_media_keys", "input_tablet_events", "net_link_flap",
    }  # fmt: skip
    got = reactions_for(["input_events", "input_wheel", "input_events_extended", "blk_resize"])
    assert [r.name for r in got] == ["blk_resize", "input_events"]
    with pytest.raises(AeroConfigError) as info:
        reactions_for(["input_event"])
    assert "input_event" in info.value.message and "input_events" in (info.value.fix or "")


def test_ready_trigger() -> None:
    trig = ready_trigger("virtio-blk-resize")
    ready = Marker(kind="TEST", name="virtio-blk-resize", status="READY", fields={}, tokens=(), raw="", t=0.0)
    other = Marker(kind="TEST", name="virtio-blk-resize", status="PASS", fields={}, tokens=(), raw="", t=0.0)
    assert trig(ready) and not trig(other)


def test_clean_host_value_is_the_one_rule_for_host_lines() -> None:
    assert clean_host_value("a|b\r\nc") == "a/b c"
    assert clean_host_value(3) == "3"
    hm = HostMarker("T", "FAIL", {"reason": "x|y\nz"}, ("tok|en",))
    assert hm.line() == "AERO_VIRTIO_WIN7_HOST|T|FAIL|tok/en|reason=x/y z"
