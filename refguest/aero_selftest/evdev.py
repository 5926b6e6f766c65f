"""Linux evdev: event decoding, capability bitmaps, device classification and event-sequence matchers.

Everything here but the small ioctl wrappers at the bottom is pure, so the matchers the READY tests rely
on are unit-tested on the host.  ``struct input_event`` is ``{struct timeval; __u16 type; __u16 code;
__s32 value}``: 24 bytes (``llHHi``) on x86_64.
"""

from __future__ import annotations

import fcntl
import struct
from collections.abc import Iterable, Sequence

from .record import record

EVENT_FORMAT = "llHHi"
EVENT_SIZE = struct.calcsize(EVENT_FORMAT)

EV_SYN, EV_KEY, EV_REL, EV_ABS, EV_MSC, EV_LED, EV_REP = 0x00, 0x01, 0x02, 0x03, 0x04, 0x11, 0x14
EV_MAX = 0x1F
SYN_REPORT = 0
KEY_Q, KEY_A, KEY_B, KEY_Z = 16, 30, 48, 44
KEY_LEFTCTRL, KEY_LEFTSHIFT, KEY_LEFTALT, KEY_F1, KEY_VOLUMEUP = 29, 42, 56, 59, 115
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA = 0x110, 0x111, 0x112, 0x113, 0x114
KEY_MAX = 0x2FF
REL_X, REL_Y, REL_HWHEEL, REL_WHEEL = 0x00, 0x01, 0x06, 0x08
REL_MAX = 0x0F
ABS_X, ABS_Y = 0x00, 0x01
ABS_MAX = 0x3F
LED_NUML, LED_CAPSL, LED_SCROLLL = 0x00, 0x01, 0x02
LED_MAX = 0x0F
QEMU_ABS_MAX = 0x7FFF  # QEMU's absolute axis range is 0..0x7fff (INPUT_EVENT_ABS_MAX)

CODE_MAX = {EV_KEY: KEY_MAX, EV_REL: REL_MAX, EV_ABS: ABS_MAX, EV_LED: LED_MAX}


@record(frozen=True)
class Event:
    sec: int
    usec: int
    type: int
    code: int
    value: int

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.type, self.code, self.value)


def decode(buf: bytes) -> list[Event]:
    """Decode whole ``input_event`` records (a trailing partial record is ignored)."""
    n = len(buf) // EVENT_SIZE
    return [Event(*struct.unpack_from(EVENT_FORMAT, buf, i * EVENT_SIZE)) for i in range(n)]


def encode(type_: int, code: int, value: int) -> bytes:
    """An ``input_event`` to write to an evdev node (the kernel ignores the timestamp on write)."""
    return struct.pack(EVENT_FORMAT, 0, 0, type_, code, value)


def bits_to_set(mask: bytes) -> frozenset[int]:
    """A kernel bitmap (little-endian longs, i.e. byte order on x86_64) to the set of bit numbers."""
    return frozenset(i * 8 + b for i, byte in enumerate(mask) for b in range(8) if byte >> b & 1)


@record(frozen=True)
class Caps:
    """Capabilities of one evdev device (from EVIOCGBIT)."""

    ev: frozenset[int] = frozenset()
    key: frozenset[int] = frozenset()
    rel: frozenset[int] = frozenset()
    abs: frozenset[int] = frozenset()
    led: frozenset[int] = frozenset()


def classify(caps: Caps) -> str:
    """``keyboard``, ``mouse``, ``tablet``, ``mixed`` (more than one role) or ``other``.

    keyboard: EV_KEY with letter keys (A, Q, Z), no pointer axes.  mouse: relative X and Y plus
    BTN_LEFT, no absolute axes.  tablet: absolute X and Y.  A device that is a keyboard and a pointer at
    once is ``mixed``: the protocol wants separate keyboard-only and mouse-only devices.
    """
    has_letters = EV_KEY in caps.ev and {KEY_A, KEY_Q, KEY_Z} <= caps.key
    has_rel = EV_REL in caps.ev and {REL_X, REL_Y} <= caps.rel
    has_abs = EV_ABS in caps.ev and {ABS_X, ABS_Y} <= caps.abs
    has_btn = EV_KEY in caps.ev and BTN_LEFT in caps.key
    roles = []
    if has_letters:
        roles.append("keyboard")
    if has_abs:
        roles.append("tablet")
    elif has_rel and has_btn:
        roles.append("mouse")
    if len(roles) > 1:
        return "mixed"
    return roles[0] if roles else "other"


# ---------------------------------------------------------------------------------------------- matchers


class Matcher:
    """Fed the events of the devices in ``roles``; ``done`` once the expected behaviour was seen."""

    roles: frozenset[str] = frozenset()

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def feed(self, role: str, ev: Event) -> None:
        raise NotImplementedError

    def fields(self) -> dict[str, str | int]:
        return {}


class Ordered(Matcher):
    """The ``(type, code, value)`` steps must appear in this order (other events may come in between).

    Repeated host rounds are fine: the first complete subsequence wins.
    """

    def __init__(self, steps: Sequence[tuple[int, int, int]], roles: Iterable[str]) -> None:
        self.steps = list(steps)
        self.roles = frozenset(roles)
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.steps)

    def feed(self, role: str, ev: Event) -> None:
        if not self.done and ev.key == self.steps[self.pos]:
            self.pos += 1

    def fields(self) -> dict[str, str | int]:
        return {"steps": f"{self.pos}/{len(self.steps)}"}


def press(code: int, roles: Iterable[str]) -> Ordered:
    """Key or button ``code`` down, then up."""
    return Ordered([(EV_KEY, code, 1), (EV_KEY, code, 0)], roles)


class RelMotion(Matcher):
    """A relative motion of +``unit`` (or a positive multiple: the host may repeat) on axis ``code``."""

    def __init__(self, code: int, unit: int, roles: Iterable[str]) -> None:
        self.code, self.unit, self.roles = code, unit, frozenset(roles)
        self.total = 0
        self.hits = 0

    @property
    def done(self) -> bool:
        return self.hits > 0

    def feed(self, role: str, ev: Event) -> None:
        if ev.type == EV_REL and ev.code == self.code:
            self.total += ev.value
            if ev.value > 0 and ev.value % self.unit == 0:
                self.hits += 1


class Wheel(Matcher):
    """Vertical wheel total > 0 (host: wheel-up) and, when the device has REL_HWHEEL, horizontal != 0.

    QEMU sends wheel motion as buttons; the virtio mouse turns wheel-up/down into REL_WHEEL +1/-1 and (where
    the QEMU version supports it) wheel-left/right into REL_HWHEEL.  A mouse without REL_HWHEEL cannot
    report horizontal motion, so it is not required there (``hwheel=unsupported``).
    """

    def __init__(self, roles: Iterable[str], require_hwheel: bool) -> None:
        self.roles = frozenset(roles)
        self.require_hwheel = require_hwheel
        self.wheel_total = 0
        self.hwheel_total = 0

    @property
    def done(self) -> bool:
        return self.wheel_total > 0 and (self.hwheel_total != 0 or not self.require_hwheel)

    @property
    def seen(self) -> bool:
        """Some wheel motion arrived (done or not)."""
        return self.wheel_total != 0 or self.hwheel_total != 0

    def feed(self, role: str, ev: Event) -> None:
        if ev.type == EV_REL and ev.code == REL_WHEEL:
            self.wheel_total += ev.value
        elif ev.type == EV_REL and ev.code == REL_HWHEEL:
            self.hwheel_total += ev.value

    def fields(self) -> dict[str, str | int]:
        return {
            "wheel_total": self.wheel_total,
            "hwheel_total": self.hwheel_total,
            "hwheel": "required" if self.require_hwheel else "unsupported",
        }


class AllOf(Matcher):
    """Done when every part is done; each part sees only the events of its own roles."""

    def __init__(self, parts: dict[str, Matcher], optional: Iterable[str] = ()) -> None:
        self.parts = parts
        self.optional = frozenset(optional)
        self.roles = frozenset().union(*(p.roles for p in parts.values()))

    @property
    def done(self) -> bool:
        """Every part but the optional ones is done (optional parts are fed, and reported, all the same)."""
        return all(p.done for name, p in self.parts.items() if name not in self.optional)

    def feed(self, role: str, ev: Event) -> None:
        for p in self.parts.values():
            if role in p.roles:
                p.feed(role, ev)

    def missing(self) -> list[str]:
        out = []
        for name, p in self.parts.items():
            if name in self.optional:
                continue
            if isinstance(p, AllOf) and not p.done:
                out += p.missing()
            elif not p.done:
                out.append(name)
        return out

    def fields(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        for p in self.parts.values():
            out.update(p.fields())
        out.pop("steps", None)
        return out


def scale_qemu_abs(v: int, lo: int, hi: int) -> int:
    """The evdev value a QEMU absolute coordinate ``v`` (0..0x7fff) arrives as on an axis lo..hi."""
    return lo + round(v * (hi - lo) / QEMU_ABS_MAX)


class TabletPath(Matcher):
    """The tablet is at ``start`` and later at ``end`` (QEMU coordinates, scaled to the axis range).

    The state is sampled at every SYN_REPORT.  The input core drops an absolute event whose value equals
    the current one, so a move to the point where the pointer already is never arrives: the initial state
    (from EVIOCGABS) therefore counts as a sample too.
    """

    def __init__(
        self,
        start: tuple[int, int],
        end: tuple[int, int],
        x_range: tuple[int, int],
        y_range: tuple[int, int],
        initial: tuple[int, int],
        tolerance: int = 2,
    ) -> None:
        self.roles = frozenset({"tablet"})
        self.start = (scale_qemu_abs(start[0], *x_range), scale_qemu_abs(start[1], *y_range))
        self.end = (scale_qemu_abs(end[0], *x_range), scale_qemu_abs(end[1], *y_range))
        self.tol = tolerance
        self.x, self.y = initial
        self.abs_events = 0
        self.stage = 0
        self._sample()

    def _near(self, p: tuple[int, int]) -> bool:
        return abs(self.x - p[0]) <= self.tol and abs(self.y - p[1]) <= self.tol

    def _sample(self) -> None:
        if self.stage == 0 and self._near(self.start):
            self.stage = 1
        if self.stage == 1 and self._near(self.end) and self.abs_events > 0:
            self.stage = 2

    @property
    def done(self) -> bool:
        return self.stage >= 2

    def feed(self, role: str, ev: Event) -> None:
        if ev.type == EV_ABS and ev.code == ABS_X:
            self.x = ev.value
            self.abs_events += 1
        elif ev.type == EV_ABS and ev.code == ABS_Y:
            self.y = ev.value
            self.abs_events += 1
        elif ev.type == EV_SYN and ev.code == SYN_REPORT:
            self._sample()

    def fields(self) -> dict[str, str | int]:
        return {
            "abs_events": self.abs_events,
            "last_x": self.x,
            "last_y": self.y,
            "expect_x": self.end[0],
            "expect_y": self.end[1],
        }


# ------------------------------------------------------------------------------------------ ioctl (thin)

_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("E") << 8) | nr


def eviocgbit(ev: int, size: int) -> int:
    return _ioc(_IOC_READ, 0x20 + ev, size)


def eviocgname(size: int) -> int:
    return _ioc(_IOC_READ, 0x06, size)


def eviocgabs(axis: int) -> int:
    return _ioc(_IOC_READ, 0x40 + axis, 24)


def eviocgled(size: int) -> int:
    return _ioc(_IOC_READ, 0x19, size)


def _ioctl_buf(fd: int, request: int, size: int) -> bytes:
    buf = bytearray(size)
    fcntl.ioctl(fd, request, buf, True)
    return bytes(buf)


def read_caps(fd: int) -> Caps:
    """EVIOCGBIT for the event types and the key/rel/abs/led code sets."""
    ev = bits_to_set(_ioctl_buf(fd, eviocgbit(0, (EV_MAX + 8) // 8), (EV_MAX + 8) // 8))
    sets: dict[int, frozenset[int]] = {}
    for t, mx in CODE_MAX.items():
        size = (mx + 8) // 8
        sets[t] = bits_to_set(_ioctl_buf(fd, eviocgbit(t, size), size)) if t in ev else frozenset()
    return Caps(ev, sets[EV_KEY], sets[EV_REL], sets[EV_ABS], sets[EV_LED])


def read_name(fd: int) -> str:
    raw = _ioctl_buf(fd, eviocgname(256), 256)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_abs(fd: int, axis: int) -> tuple[int, int, int]:
    """(value, minimum, maximum) of an absolute axis."""
    value, lo, hi, _fuzz, _flat, _res = struct.unpack("6i", _ioctl_buf(fd, eviocgabs(axis), 24))
    return value, lo, hi


def read_leds(fd: int) -> frozenset[int]:
    return bits_to_set(_ioctl_buf(fd, eviocgled((LED_MAX + 8) // 8), (LED_MAX + 8) // 8))
