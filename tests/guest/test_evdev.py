"""evdev decoding, classification and the READY tests' event matchers."""

from __future__ import annotations

import struct

from aero_selftest import evdev
from aero_selftest.evdev import (
    ABS_X,
    ABS_Y,
    BTN_LEFT,
    EV_ABS,
    EV_KEY,
    EV_LED,
    EV_REL,
    EV_SYN,
    KEY_A,
    REL_HWHEEL,
    REL_WHEEL,
    REL_X,
    REL_Y,
    Caps,
    Event,
)
from aero_selftest.inputs import events_matcher, wheel_verdict


def ev(t: int, c: int, v: int) -> Event:
    return Event(0, 0, t, c, v)


SYN = ev(EV_SYN, 0, 0)


def test_event_size_and_decode_roundtrip() -> None:
    assert evdev.EVENT_SIZE == 24
    raw = struct.pack("llHHi", 12, 34, EV_KEY, KEY_A, 1) + evdev.encode(EV_SYN, 0, 0) + b"\x01\x02"
    events = evdev.decode(raw)
    assert events == [Event(12, 34, EV_KEY, KEY_A, 1), Event(0, 0, EV_SYN, 0, 0)]  # partial record ignored
    assert evdev.decode(evdev.encode(EV_REL, REL_X, -10))[0].value == -10


def test_bits_to_set() -> None:
    assert evdev.bits_to_set(b"\x05\x80") == {0, 2, 15}
    assert evdev.bits_to_set(b"") == frozenset()


def test_ioctl_numbers_match_linux_headers() -> None:
    assert evdev.eviocgbit(0, 4) == 0x80044520
    assert evdev.eviocgbit(EV_KEY, 96) == 0x80604521
    assert evdev.eviocgname(256) == 0x81004506
    assert evdev.eviocgabs(ABS_X) == 0x80184540


KBD = Caps(ev=frozenset({EV_SYN, EV_KEY, EV_LED}), key=frozenset(range(1, 120)), led=frozenset({0, 1, 2}))
MOUSE = Caps(
    ev=frozenset({EV_SYN, EV_KEY, EV_REL}),
    key=frozenset({BTN_LEFT, BTN_LEFT + 1, BTN_LEFT + 2}),
    rel=frozenset({REL_X, REL_Y, REL_WHEEL}),
)
TABLET = Caps(
    ev=frozenset({EV_SYN, EV_KEY, EV_ABS, EV_REL}),
    key=frozenset({BTN_LEFT}),
    abs=frozenset({ABS_X, ABS_Y}),
    rel=frozenset({REL_WHEEL}),
)


def test_classify() -> None:
    assert evdev.classify(KBD) == "keyboard"
    assert evdev.classify(MOUSE) == "mouse"
    assert evdev.classify(TABLET) == "tablet"
    combo = Caps(ev=KBD.ev | MOUSE.ev, key=KBD.key | MOUSE.key, rel=MOUSE.rel)
    assert evdev.classify(combo) == "mixed"
    assert evdev.classify(Caps()) == "other"


def test_ordered_requires_order_and_ignores_noise_and_repeats() -> None:
    m = evdev.press(KEY_A, ["keyboard"])
    for e in [ev(EV_KEY, KEY_A, 0), ev(EV_KEY, KEY_A, 2), SYN, ev(EV_KEY, KEY_A, 1)]:
        m.feed("keyboard", e)
    assert not m.done  # an up before the down does not count; autorepeat (2) ignored
    m.feed("keyboard", ev(EV_KEY, KEY_A, 0))
    assert m.done


def _run(m: evdev.Matcher, seq: list[tuple[str, Event]]) -> None:
    for role, e in seq:
        if role in m.roles:
            m.feed(role, e)


def _round(wheel: bool = False, hwheel: bool = False) -> list[tuple[str, Event]]:
    """One host round as the virtio devices deliver it."""
    seq = [
        ("keyboard", ev(EV_KEY, KEY_A, 1)),
        ("keyboard", SYN),
        ("keyboard", ev(EV_KEY, KEY_A, 0)),
        ("keyboard", SYN),
        ("mouse", ev(EV_REL, REL_X, 10)),
        ("mouse", ev(EV_REL, REL_Y, 5)),
        ("mouse", SYN),
        ("mouse", ev(EV_KEY, BTN_LEFT, 1)),
        ("mouse", SYN),
        ("mouse", ev(EV_KEY, BTN_LEFT, 0)),
        ("mouse", SYN),
    ]
    if wheel:
        seq += [("mouse", ev(EV_REL, REL_WHEEL, 1)), ("mouse", SYN)]
    if hwheel:
        seq += [("mouse", ev(EV_REL, REL_HWHEEL, 1)), ("mouse", SYN)]
    return seq


def test_base_events_pass_without_wheel_and_wheel_is_optional() -> None:
    m = events_matcher(extended=False, hwheel=True)
    _run(m, _round())
    assert m.done
    wheel = m.parts["wheel"]
    assert isinstance(wheel, evdev.Wheel)
    assert wheel_verdict(wheel) == ("SKIP", "not_injected")


def test_base_events_fail_when_a_part_is_missing() -> None:
    m = events_matcher(extended=False, hwheel=False)
    _run(m, [x for x in _round() if x[1].code != REL_Y])
    assert not m.done
    assert m.missing() == ["rel_y"]


def test_wheel_required_hwheel_only_when_device_has_it() -> None:
    m = events_matcher(extended=False, hwheel=True)
    _run(m, _round(wheel=True))
    wheel = m.parts["wheel"]
    assert isinstance(wheel, evdev.Wheel)
    assert wheel_verdict(wheel) == ("FAIL", "incomplete")
    _run(m, _round(wheel=True, hwheel=True))
    assert wheel_verdict(wheel) == ("PASS", "")
    assert wheel.fields()["wheel_total"] == 2 and wheel.fields()["hwheel_total"] == 1

    m2 = events_matcher(extended=False, hwheel=False)
    _run(m2, _round(wheel=True))
    w2 = m2.parts["wheel"]
    assert isinstance(w2, evdev.Wheel)
    assert wheel_verdict(w2) == ("PASS", "")


def test_rel_motion_accepts_multiples_only() -> None:
    m = evdev.RelMotion(REL_X, 10, ["mouse"])
    m.feed("mouse", ev(EV_REL, REL_X, 7))
    m.feed("mouse", ev(EV_REL, REL_X, -10))
    assert not m.done
    m.feed("mouse", ev(EV_REL, REL_X, 20))
    assert m.done and m.total == 17


def test_extended_set_requires_modifiers_buttons_and_wheel() -> None:
    m = events_matcher(extended=True, hwheel=False)
    _run(m, _round(wheel=True))
    assert not m.done
    assert set(m.missing()) == {"shift_b", "ctrl", "alt", "f1", "side", "extra"}
    K = EV_KEY
    seq = []
    for code, v in [(42, 1), (48, 1), (48, 0), (42, 0), (29, 1), (29, 0), (56, 1), (56, 0), (59, 1), (59, 0)]:
        seq += [("keyboard", ev(K, code, v)), ("keyboard", SYN)]
    for code in (evdev.BTN_SIDE, evdev.BTN_EXTRA):
        seq += [("mouse", ev(K, code, 1)), ("mouse", ev(K, code, 0))]
    _run(m, seq)
    assert m.done


def test_shift_b_order_matters() -> None:
    m = events_matcher(extended=True, hwheel=False)
    mods = m.parts["modifiers"]
    assert isinstance(mods, evdev.AllOf)
    # b pressed before shift: not the expected sequence
    for code, v in [(48, 1), (42, 1), (48, 0), (42, 0)]:
        mods.feed("keyboard", ev(EV_KEY, code, v))
    assert "shift_b" in mods.missing()


def test_tablet_path_scaling_and_initial_origin() -> None:
    assert evdev.scale_qemu_abs(10000, 0, 32767) == 10000
    assert evdev.scale_qemu_abs(32767, 0, 1000) == 1000
    # initial state already (0, 0): the host's move there is suppressed by the input core
    m = evdev.TabletPath((0, 0), (10000, 20000), (0, 32767), (0, 32767), initial=(0, 0))
    m.feed("tablet", ev(EV_ABS, ABS_X, 10000))
    m.feed("tablet", ev(EV_ABS, ABS_Y, 20000))
    assert not m.done  # sampled at SYN only
    m.feed("tablet", SYN)
    assert m.done


def test_tablet_path_needs_origin_before_target() -> None:
    m = evdev.TabletPath((0, 0), (10000, 20000), (0, 32767), (0, 32767), initial=(500, 500))
    for e in [ev(EV_ABS, ABS_X, 10000), ev(EV_ABS, ABS_Y, 20000), SYN]:
        m.feed("tablet", e)
    assert not m.done  # never seen at the origin
    for e in [
        ev(EV_ABS, ABS_X, 0),
        ev(EV_ABS, ABS_Y, 0),
        SYN,
        ev(EV_ABS, ABS_X, 10000),
        ev(EV_ABS, ABS_Y, 20000),
        SYN,
    ]:
        m.feed("tablet", e)
    assert m.done
    assert m.fields()["last_x"] == 10000


def test_tablet_path_no_events_at_target_already_is_not_a_pass() -> None:
    m = evdev.TabletPath((0, 0), (0, 0), (0, 32767), (0, 32767), initial=(0, 0))
    m.feed("tablet", SYN)
    assert not m.done  # no absolute event ever arrived
