"""virtio-input checks: driver binding, device classes from evdev capabilities, LEDs, injected events.

Devices are the virtio devices bound to ``virtio_input``; each has one evdev node, opened read-write and
non-blocking.  The READY tests drain stale events, print READY, then read evdev until the expected
sequence arrived or their timeout passed.  The host repeats its injection every 0.5 s, so the matchers in
:mod:`evdev` accept repeats and multiples.
"""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path

from . import evdev, irq, sysfs
from .config import Config
from .evdev import Matcher
from .markers import Reporter
from .record import record

EVENTS_TIMEOUT_S = 10.0
EVENTS_EXTENDED_TIMEOUT_S = 15.0
MEDIA_TIMEOUT_S = 10.0
TABLET_TIMEOUT_S = 10.0
POINTER = ("mouse", "tablet")
WHEEL_GRACE_S = 1.5


@record
class InputDev:
    dev: str  # virtioN
    event: str  # eventK
    fd: int
    name: str
    caps: evdev.Caps
    role: str


def enumerate_devices() -> list[InputDev]:
    out = []
    for dev in sysfs.virtio_devices("virtio_input"):
        base = sysfs.VIRTIO_BUS / "devices" / dev / "input"
        try:
            inputs = sorted(os.listdir(base))
        except OSError:
            continue
        for inp in inputs:
            events = sorted(n for n in os.listdir(base / inp) if n.startswith("event"))
            for ev in events:
                node = Path("/dev/input") / ev
                sysfs.wait_for(node, exists=True, timeout=3)
                fd = os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                caps = evdev.read_caps(fd)
                out.append(InputDev(dev, ev, fd, evdev.read_name(fd), caps, evdev.classify(caps)))
    return out


def unbound_input_devices() -> list[str]:
    """virtio devices of type input (virtio device id 18) that no driver has."""
    out = []
    try:
        names = os.listdir(sysfs.VIRTIO_BUS / "devices")
    except OSError:
        return []
    for n in names:
        d = sysfs.VIRTIO_BUS / "devices" / n
        if sysfs.read(d / "device") in ("0x0012", "18") and not (d / "driver").exists():
            out.append(n)
    return sorted(out)


def drain(devs: list[InputDev]) -> int:
    """Discard pending events (so only what the host sends after READY counts)."""
    n = 0
    for d in devs:
        while True:
            try:
                data = os.read(d.fd, evdev.EVENT_SIZE * 64)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                raise
            if not data:
                break
            n += len(data) // evdev.EVENT_SIZE
    return n


def pump(devs: list[InputDev], matcher: Matcher, timeout: float) -> tuple[bool, int, int]:
    """Read the devices of the matcher's roles until it is done or ``timeout`` passed.

    Returns (done, events read, elapsed ms).
    """
    fds = {d.fd: d for d in devs if d.role in matcher.roles}
    t0 = time.monotonic()
    deadline = t0 + timeout
    count = 0
    pending: dict[int, bytes] = {fd: b"" for fd in fds}
    while not matcher.done:
        left = deadline - time.monotonic()
        if left <= 0 or not fds:
            break
        ready, _, _ = select.select(list(fds), [], [], left)
        for fd in ready:
            try:
                data = os.read(fd, evdev.EVENT_SIZE * 64)
            except BlockingIOError:
                continue
            buf = pending[fd] + data
            events = evdev.decode(buf)
            pending[fd] = buf[len(events) * evdev.EVENT_SIZE :]
            for ev in events:
                count += 1
                matcher.feed(fds[fd].role, ev)
    return matcher.done, count, int((time.monotonic() - t0) * 1000)


class InputState:
    devs: list[InputDev]

    def __init__(self) -> None:
        self.devs = []

    def role(self, role: str) -> list[InputDev]:
        return [d for d in self.devs if d.role == role]


def check_bind(rep: Reporter, cfg: Config, st: InputState) -> None:
    bound = sysfs.virtio_devices("virtio_input")
    unbound = unbound_input_devices()
    if unbound:
        rep.fail("virtio-input-bind", "unbound_devices", devices=len(bound), unbound=",".join(unbound))
    elif not bound:
        rep.fail("virtio-input-bind", "no_devices", devices=0)
    else:
        rep.pass_("virtio-input-bind", devices=len(bound))
    if not bound:
        rep.fail("virtio-input-binding", "no_devices", service="virtio_input")
        return
    ids = sysfs.pci_ids(bound[0])
    all_ids = {sysfs.pnp_id(sysfs.pci_ids(d)) for d in bound}
    rep.pass_(
        "virtio-input-binding",
        service="virtio_input",
        pnp_id=sysfs.pnp_id(ids),
        pci=ids["address"],
        hwids=",".join(sorted(all_ids)),
        devices=len(bound),
    )


def check_devices(rep: Reporter, cfg: Config, st: InputState) -> None:
    st.devs = enumerate_devices()
    roles = [d.role for d in st.devs]
    kbd, mouse, tab, mixed = (roles.count(r) for r in ("keyboard", "mouse", "tablet", "mixed"))
    fields: dict[str, str | int] = {
        "keyboard_devices": kbd,
        "mouse_devices": mouse,
        "tablet_devices": tab,
        "mixed_devices": mixed,
        "devices": ",".join(f"{d.event}:{d.role}" for d in st.devs) or "none",
    }
    if kbd >= 1 and mouse >= 1 and mixed == 0:
        rep.pass_("virtio-input", **fields)
    else:
        reason = "mixed_device" if mixed else ("no_keyboard" if kbd == 0 else "no_mouse")
        rep.fail("virtio-input", reason, **fields)


def check_tablet(rep: Reporter, cfg: Config, st: InputState) -> None:
    tabs = st.role("tablet")
    if not tabs:
        rep.skip("virtio-input-tablet", "not_present", tablet_devices=0)
        return
    t = tabs[0]
    _v, x_lo, x_hi = evdev.read_abs(t.fd, evdev.ABS_X)
    _v, y_lo, y_hi = evdev.read_abs(t.fd, evdev.ABS_Y)
    rep.pass_(
        "virtio-input-tablet",
        tablet_devices=len(tabs),
        device=t.event,
        abs_x=f"{x_lo}..{x_hi}",
        abs_y=f"{y_lo}..{y_hi}",
    )


def check_msix(rep: Reporter, cfg: Config, st: InputState) -> None:
    name = "virtio-input-msix"
    devs = sysfs.virtio_devices("virtio_input")
    if not devs:
        rep.skip(name, "device_missing")
        return
    infos = [irq.read_device_irqs(d) for d in devs]
    modes = {i.mode for i in infos}
    mode = modes.pop() if len(modes) == 1 else "mixed"
    fields = irq.msix_fields(infos[0])
    fields.update(
        mode=mode,
        messages=sum(i.messages for i in infos),
        dev=",".join(devs),
        mapping=";".join(f"{i.dev}:" + ",".join(f"{k}={v}" for k, v in i.vectors.items()) for i in infos),
    )
    if mode == "msix":
        rep.pass_(name, **fields)
    elif cfg.has("require-input-msix"):
        rep.fail(name, "not_msix", **fields, required_by="--require-input-msix")
    else:
        rep.skip(name, "not_msix", **fields)


def check_led(rep: Reporter, cfg: Config, st: InputState) -> None:
    """Write EV_LED on/off (+ SYN) for each LED the keyboard has; the virtio_input driver forwards LED
    state changes to the device's status queue.  Each LED's state is read back with EVIOCGLED."""
    names = ("virtio-input-led", "virtio-input-leds")
    if not (cfg.has("test-input-led") or cfg.has("test-input-leds")):
        rep.skip_flag_not_set(*names)
        return
    kbds = [d for d in st.role("keyboard") if evdev.EV_LED in d.caps.ev and d.caps.led]
    if not kbds:
        for n in names:
            rep.fail(n, "no_led_keyboard", keyboards=len(st.role("keyboard")))
        return
    k = kbds[0]
    irq_before = irq.read_device_irqs(k.dev).total
    writes = 0
    confirmed = 0
    leds = sorted(k.caps.led & {evdev.LED_NUML, evdev.LED_CAPSL, evdev.LED_SCROLLL}) or sorted(k.caps.led)[:3]
    for led in leds:
        for value in (1, 0):
            os.write(k.fd, evdev.encode(evdev.EV_LED, led, value))
            os.write(k.fd, evdev.encode(evdev.EV_SYN, evdev.SYN_REPORT, 0))
            writes += 1
            if (led in evdev.read_leds(k.fd)) == bool(value):
                confirmed += 1
    time.sleep(0.05)  # let the device complete the status buffers before counting interrupts
    irq_after = irq.read_device_irqs(k.dev).total
    fields: dict[str, str | int] = {
        "writes": writes,
        "confirmed": confirmed,
        "leds": ",".join(str(x) for x in leds),
        "device": k.event,
        "irq_delta": irq_after - irq_before,
    }
    for n in names:
        if confirmed == writes and writes > 0:
            rep.pass_(n, **fields)
        else:
            rep.fail(n, "led_state_mismatch", **fields)


def _wait_and_report(
    rep: Reporter, st: InputState, name: str, matcher: evdev.AllOf, timeout: float
) -> tuple[bool, int, int]:
    drain(st.devs)
    rep.ready(name)
    return pump(st.devs, matcher, timeout)


def events_matcher(extended: bool, hwheel: bool) -> evdev.AllOf:
    """What the virtio-input-events READY waits for.

    Required: ``a`` down/up (keyboard), REL_X +10 and REL_Y +5 (mouse), BTN_LEFT down/up (a pointer);
    with the extended set also the modifier keys, BTN_SIDE/BTN_EXTRA and the wheel.  The plain wheel part
    is optional: the host injects the wheel only when a wheel test is wanted (see check_events).
    """
    K = evdev.EV_KEY
    parts: dict[str, Matcher] = {
        "base": evdev.AllOf(
            {
                "key_a": evdev.press(evdev.KEY_A, ["keyboard"]),
                "rel_x": evdev.RelMotion(evdev.REL_X, 10, ["mouse"]),
                "rel_y": evdev.RelMotion(evdev.REL_Y, 5, ["mouse"]),
                "btn_left": evdev.press(evdev.BTN_LEFT, POINTER),
            }
        ),
        "wheel": evdev.Wheel(POINTER, hwheel),
    }
    if extended:
        shift_b = [
            (K, evdev.KEY_LEFTSHIFT, 1),
            (K, evdev.KEY_B, 1),
            (K, evdev.KEY_B, 0),
            (K, evdev.KEY_LEFTSHIFT, 0),
        ]
        parts["modifiers"] = evdev.AllOf(
            {
                "shift_b": evdev.Ordered(shift_b, ["keyboard"]),
                "ctrl": evdev.press(evdev.KEY_LEFTCTRL, ["keyboard"]),
                "alt": evdev.press(evdev.KEY_LEFTALT, ["keyboard"]),
                "f1": evdev.press(evdev.KEY_F1, ["keyboard"]),
            }
        )
        parts["buttons"] = evdev.AllOf(
            {"side": evdev.press(evdev.BTN_SIDE, POINTER), "extra": evdev.press(evdev.BTN_EXTRA, POINTER)}
        )
        parts["ext_wheel"] = evdev.Wheel(POINTER, hwheel)
    return evdev.AllOf(parts, optional=("wheel",))


def wheel_verdict(wheel: evdev.Wheel) -> tuple[str, str]:
    """(status, reason) of virtio-input-wheel when the wheel was optional.

    PASS when the expected motion arrived; FAIL when some wheel motion arrived but not all of it (the
    host did inject, the guest saw too little); SKIP|not_injected when nothing arrived: the host did
    not inject a wheel (a host that requires the wheel treats that SKIP as a failure of its own).
    """
    if wheel.done:
        return "PASS", ""
    if wheel.seen:
        return "FAIL", "incomplete"
    return "SKIP", "not_injected"


def check_events(rep: Reporter, cfg: Config, st: InputState) -> None:
    """virtio-input-events (+ wheel, + the extended set): one READY, one read loop for all of them.

    The host repeats its round every 0.5 s until virtio-input-events has a final status, so that marker
    is printed only after every part is decided.  Once the required parts are seen, the wheel gets a
    grace of WHEEL_GRACE_S (three host rounds) if it has not shown up yet.
    """
    ext_names = ("virtio-input-events-modifiers", "virtio-input-events-buttons", "virtio-input-events-wheel")
    extended = cfg.has("test-input-events-extended")
    if not (cfg.has("test-input-events") or extended):
        rep.skip_flag_not_set("virtio-input-events", "virtio-input-wheel", *ext_names)
        return
    kbd, mice = st.role("keyboard"), st.role("mouse")
    if not kbd or not mice:
        reason = "no_keyboard" if not kbd else "no_mouse"
        for n in ("virtio-input-events", "virtio-input-wheel", *(ext_names if extended else ())):
            rep.fail(n, reason)
        if not extended:
            rep.skip_flag_not_set(*ext_names)
        return
    hwheel = any(evdev.REL_HWHEEL in m.caps.rel for m in mice)
    matcher = events_matcher(extended, hwheel)
    timeout = EVENTS_EXTENDED_TIMEOUT_S if extended else EVENTS_TIMEOUT_S
    t0 = time.monotonic()
    done, count, elapsed = _wait_and_report(rep, st, "virtio-input-events", matcher, timeout)
    wheel = matcher.parts["wheel"]
    assert isinstance(wheel, evdev.Wheel)
    if done and not wheel.done:
        grace = min(WHEEL_GRACE_S, timeout - (time.monotonic() - t0))
        _d, more, _e = pump(st.devs, evdev.AllOf({"wheel": wheel}), max(0.0, grace))
        count += more
        elapsed = int((time.monotonic() - t0) * 1000)

    def report(name: str, part: Matcher, **extra: str | int) -> None:
        fields: dict[str, str | int] = {**part.fields(), **extra, "events": count, "elapsed_ms": elapsed}
        if part.done:
            rep.pass_(name, **fields)
        else:
            missing = part.missing() if isinstance(part, evdev.AllOf) else ["wheel"]
            rep.fail(name, "timeout", missing=",".join(missing), timeout_s=int(timeout), **fields)

    base = matcher.parts["base"]
    assert isinstance(base, evdev.AllOf)
    rel_x, rel_y = base.parts["rel_x"], base.parts["rel_y"]
    assert isinstance(rel_x, evdev.RelMotion) and isinstance(rel_y, evdev.RelMotion)
    report("virtio-input-events", base, rel_x_total=rel_x.total, rel_y_total=rel_y.total)
    if extended:
        report("virtio-input-wheel", wheel)
    else:
        status, reason = wheel_verdict(wheel)
        fields: dict[str, str | int] = {**wheel.fields(), "events": count}
        if status == "PASS":
            rep.pass_("virtio-input-wheel", **fields)
        elif status == "FAIL":
            rep.fail("virtio-input-wheel", reason, **fields)
        else:
            rep.skip("virtio-input-wheel", reason, **fields)
    if extended:
        report("virtio-input-events-modifiers", matcher.parts["modifiers"])
        report("virtio-input-events-buttons", matcher.parts["buttons"])
        report("virtio-input-events-wheel", matcher.parts["ext_wheel"])
    else:
        rep.skip_flag_not_set(*ext_names)


def check_media_keys(rep: Reporter, cfg: Config, st: InputState) -> None:
    name = "virtio-input-media-keys"
    if not cfg.has("test-input-media-keys"):
        rep.skip_flag_not_set(name)
        return
    kbds = st.role("keyboard")
    if not kbds:
        rep.fail(name, "no_keyboard")
        return
    if not any(evdev.KEY_VOLUMEUP in k.caps.key for k in kbds):
        rep.fail(name, "key_not_supported", err="no virtio keyboard advertises KEY_VOLUMEUP")
        return
    matcher = evdev.AllOf({"volumeup": evdev.press(evdev.KEY_VOLUMEUP, ["keyboard"])})
    done, count, elapsed = _wait_and_report(rep, st, name, matcher, MEDIA_TIMEOUT_S)
    fields: dict[str, str | int] = {"key": "KEY_VOLUMEUP", "code": evdev.KEY_VOLUMEUP, "events": count}
    if done:
        rep.pass_(name, **fields, elapsed_ms=elapsed)
    else:
        rep.fail(name, "timeout", **fields, timeout_s=int(MEDIA_TIMEOUT_S))


def check_tablet_events(rep: Reporter, cfg: Config, st: InputState) -> None:
    name = "virtio-input-tablet-events"
    if not cfg.has("test-input-tablet-events"):
        rep.skip_flag_not_set(name)
        return
    tabs = st.role("tablet")
    if not tabs:
        rep.fail(name, "no_tablet", tablet_devices=0)
        return
    t = tabs[0]
    x0, x_lo, x_hi = evdev.read_abs(t.fd, evdev.ABS_X)
    y0, y_lo, y_hi = evdev.read_abs(t.fd, evdev.ABS_Y)
    drain(st.devs)
    x0, _lo, _hi = evdev.read_abs(t.fd, evdev.ABS_X)
    y0, _lo, _hi = evdev.read_abs(t.fd, evdev.ABS_Y)
    path = evdev.TabletPath((0, 0), (10000, 20000), (x_lo, x_hi), (y_lo, y_hi), (x0, y0))
    matcher = evdev.AllOf({"path": path, "btn_left": evdev.press(evdev.BTN_LEFT, ["tablet"])})
    rep.ready(name)
    done, count, elapsed = pump(st.devs, matcher, TABLET_TIMEOUT_S)
    fields: dict[str, str | int] = {**matcher.fields(), "events": count, "range_x": f"{x_lo}..{x_hi}"}
    if done:
        rep.pass_(name, **fields, elapsed_ms=elapsed)
    else:
        rep.fail(name, "timeout", missing=",".join(matcher.missing()), timeout_s=int(TABLET_TIMEOUT_S), **fields)


def run(rep: Reporter, cfg: Config) -> None:
    st = InputState()
    try:
        with rep.group("virtio-input-bind", "virtio-input-binding"):
            check_bind(rep, cfg, st)
        with rep.group("virtio-input"):
            check_devices(rep, cfg, st)
        with rep.group("virtio-input-tablet"):
            check_tablet(rep, cfg, st)
        with rep.group("virtio-input-msix"):
            check_msix(rep, cfg, st)
        with rep.group("virtio-input-led", "virtio-input-leds"):
            check_led(rep, cfg, st)
        with rep.group(
            "virtio-input-events",
            "virtio-input-wheel",
            "virtio-input-events-modifiers",
            "virtio-input-events-buttons",
            "virtio-input-events-wheel",
        ):
            check_events(rep, cfg, st)
        with rep.group("virtio-input-media-keys"):
            check_media_keys(rep, cfg, st)
        with rep.group("virtio-input-tablet-events"):
            check_tablet_events(rep, cfg, st)
    finally:
        for d in st.devs:
            os.close(d.fd)
