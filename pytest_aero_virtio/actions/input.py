"""Input injection over QMP ``input-send-event`` (docs/protocol.md).

Facts this module is built on (measured on QEMU 7.2 and checked against ``ui/input.c``):

* ``input-send-event``'s ``device`` names a *display* (a QemuConsole), never an input device. QEMU routes
  each event to the first handler, in activation order, that is bound to that console and accepts the
  event kind; unbound handlers get only events sent without ``device``. So the machine binds the virtio
  keyboard and mouse to ``vga0`` (``display=vga0``) and we send with ``device=vga0``: a PS/2 keyboard or
  an unbound device can no longer take the events.
* A mouse and a tablet both accept button events. Bound to one console, the one the guest driver
  activated *last* gets ``btn`` - a race we cannot see from the host. The tablet therefore gets its own
  console, ``secondary-vga`` ``vga1``, and tablet events go to ``device=vga1``: each console has exactly
  one pointer, so routing is deterministic.
* Axes are only ``x`` and ``y``; wheel motion is a *button* (``wheel-up``/``wheel-down``,
  ``wheel-left``/``wheel-right``). QEMU 7.2's virtio mouse maps only the vertical wheel (it logs "unmapped
  button: wheel-right"); later versions map both.
* When ``device`` is refused (a QEMU without the ``display`` property, so nothing is bound), we fall back
  to broadcast (no ``device``) and say so in the host marker (``kbd_mode=broadcast``).

Each READY is answered by repeating the whole sequence every ``input_interval_s`` until the stream has a
final status for the guest test (the guest accepts multiples of the deltas), or ``input_deadline_s``.

The event lists are pure functions returning batches; each batch is one ``input-send-event`` (QEMU sends
one SYN per command), so a press and its release are never merged into one frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.actions.base import ActionContext, Reaction, is_qmp_refusal, on_ready
from pytest_aero_virtio.errors import (
    QMP_INPUT_INJECT_FAILED,
    QMP_INPUT_TABLET_INJECT_FAILED,
    QMP_MEDIA_KEYS_UNSUPPORTED,
)
from pytest_aero_virtio.markers import Marker

__all__ = [
    "INPUT_EVENTS",
    "INPUT_MEDIA_KEYS",
    "INPUT_TABLET_EVENTS",
    "Batch",
    "InputPlan",
    "Target",
    "abs_event",
    "btn_event",
    "input_events_plan",
    "key_event",
    "keyboard_events",
    "media_key_events",
    "mouse_events",
    "rel_event",
    "tablet_events",
]

Event = dict[str, Any]
Batch = list[Event]
Mode = Literal["device", "broadcast"]

BACKEND = "qmp_input_send_event"
EVENTS_TEST = "virtio-input-events"
MEDIA_TEST = "virtio-input-media-keys"
TABLET_TEST = "virtio-input-tablet-events"


# --- pure event construction ----------------------------------------------------------------------------
def key_event(qcode: str, down: bool) -> Event:
    """A key press/release by QEMU qcode name (``a``, ``shift``, ``volumeup``...)."""
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}


def btn_event(button: str, down: bool) -> Event:
    """A pointer button: left, right, middle, side, extra, wheel-up/-down/-left/-right."""
    return {"type": "btn", "data": {"down": down, "button": button}}


def rel_event(axis: Literal["x", "y"], value: int) -> Event:
    """Relative motion; QEMU knows only the axes x and y."""
    return {"type": "rel", "data": {"axis": axis, "value": value}}


def abs_event(axis: Literal["x", "y"], value: int) -> Event:
    """Absolute position in QEMU's 0..0x7fff range."""
    return {"type": "abs", "data": {"axis": axis, "value": value}}


def _press(qcode: str) -> list[Batch]:
    return [[key_event(qcode, True)], [key_event(qcode, False)]]


def _click(button: str) -> list[Batch]:
    return [[btn_event(button, True)], [btn_event(button, False)]]


def keyboard_events(extended: bool = False) -> list[Batch]:
    """``a`` down/up; extended: shift+b (shift down, b down, b up, shift up), ctrl, alt, f1."""
    batches = _press("a")
    if extended:
        batches += [
            [key_event("shift", True)],
            [key_event("b", True)],
            [key_event("b", False)],
            [key_event("shift", False)],
        ]
        for qcode in ("ctrl", "alt", "f1"):
            batches += _press(qcode)
    return batches


def mouse_events(wheel: bool = False, extended: bool = False) -> list[Batch]:
    """rel x +10 and y +5 in one batch, left click; wheel as buttons (up, right); extended: side, extra."""
    batches: list[Batch] = [[rel_event("x", 10), rel_event("y", 5)]]
    batches += _click("left")
    if wheel:
        batches += _click("wheel-up") + _click("wheel-right")
    if extended:
        batches += _click("side") + _click("extra")
    return batches


def media_key_events() -> list[Batch]:
    """qcode ``volumeup`` down/up (a consumer-control key the virtio keyboard reports as KEY_VOLUMEUP)."""
    return _press("volumeup")


def tablet_events() -> list[Batch]:
    """abs (0, 0), abs (10000, 20000), left down, left up."""
    return [
        [abs_event("x", 0), abs_event("y", 0)],
        [abs_event("x", 10000), abs_event("y", 20000)],
        *_click("left"),
    ]


# --- plans: which batches go to which console --------------------------------------------------------------
@dataclass
class Target:
    """One kind of input (keyboard, mouse, tablet) aimed at a console, degrading to broadcast once."""

    kind: str  # "kbd", "mouse", "tablet": the name in the host marker (kbd_mode=...)
    display: str | None  # None: bound to nothing, broadcast from the start
    batches: Sequence[Batch]
    mode: Mode = "device"

    def __post_init__(self) -> None:
        if self.display is None:
            self.mode = "broadcast"

    def args(self, batch: Batch) -> dict[str, Any]:
        if self.mode == "device" and self.display is not None:
            return {"device": self.display, "events": batch}
        return {"events": batch}


@dataclass(frozen=True)
class InputPlan:
    """What one READY is answered with: the targets and the marker fields describing the set."""

    targets: tuple[Target, ...]
    info: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Handshake:
    """One READY handshake answered by injection: the guest test, the host topic and the failure token."""

    test: str
    topic: str
    token: str


def _bound_display(ctx: ActionContext, driver: str, display: str) -> str | None:
    """The console ``driver`` is bound to, or None when this QEMU has no ``display`` property."""
    return display if ctx.caps.has_prop(driver, "display") else None


def input_events_plan(ctx: ActionContext) -> InputPlan:
    """The keyboard+mouse plan: extended set and wheel depend on the armed reaction names."""
    extended = "input_events_extended" in ctx.armed
    wheel = extended or "input_wheel" in ctx.armed
    return InputPlan(
        targets=(
            Target("kbd", _bound_display(ctx, "virtio-keyboard-pci", ctx.display), keyboard_events(extended)),
            Target("mouse", _bound_display(ctx, "virtio-mouse-pci", ctx.display), mouse_events(wheel, extended)),
        ),
        info=(("set", "extended" if extended else "base"), ("wheel", "1" if wheel else "0")),
    )


def media_keys_plan(ctx: ActionContext) -> InputPlan:
    return InputPlan(
        targets=(Target("kbd", _bound_display(ctx, "virtio-keyboard-pci", ctx.display), media_key_events()),),
        info=(("qcode", "volumeup"),),
    )


def tablet_plan(ctx: ActionContext) -> InputPlan:
    return InputPlan(
        targets=(Target("tablet", _bound_display(ctx, "virtio-tablet-pci", ctx.tablet_display), tablet_events()),),
    )


# --- I/O ---------------------------------------------------------------------------------------------------
async def _send(ctx: ActionContext, target: Target, batch: Batch) -> None:
    """Send one batch; on QEMU refusing the console, switch this target to broadcast for good and retry."""
    try:
        await ctx.qmp.execute("input-send-event", target.args(batch))
    except Exception as exc:
        if target.mode != "device" or not is_qmp_refusal(exc):
            raise
        target.mode = "broadcast"
        await ctx.qmp.execute("input-send-event", target.args(batch))


async def inject_until_final(ctx: ActionContext, plan: InputPlan, hs: Handshake) -> None:
    """Inject the plan's batches, repeating until the guest test has a final status or the deadline."""
    deadline = time.monotonic() + ctx.input_deadline_s
    attempt = 0
    while True:
        attempt += 1
        started = time.monotonic()
        try:
            for target in plan.targets:
                for batch in target.batches:
                    await _send(ctx, target, batch)
        except Exception as exc:
            ctx.host(
                hs.topic,
                "FAIL",
                attempt=attempt,
                backend=BACKEND,
                **{f"{t.kind}_mode": t.mode for t in plan.targets},
                reason=f"{type(exc).__name__}: {exc}",
                token=hs.token,
            )
            return
        ctx.host(
            hs.topic,
            "PASS",
            attempt=attempt,
            backend=BACKEND,
            **{f"{t.kind}_mode": t.mode for t in plan.targets},
            **dict(plan.info),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        if _final(ctx, hs.test) or time.monotonic() + ctx.input_interval_s > deadline:
            return
        await asyncio.sleep(ctx.input_interval_s)
        if _final(ctx, hs.test):
            return


def _final(ctx: ActionContext, test: str) -> bool:
    return ctx.stream.final(test) is not None


def _injection(name: str, hs: Handshake, plan: Callable[[ActionContext], InputPlan]) -> Reaction:
    """The reaction that answers ``hs.test``'s READY line by injecting ``plan(ctx)`` until the verdict."""

    async def run(ctx: ActionContext, m: Marker) -> None:
        await inject_until_final(ctx, plan(ctx), hs)

    return on_ready(name, hs.test, run, hs.topic, hs.token)


#: One reaction serves ``input_events``, ``input_events_extended`` and ``input_wheel`` (registered under all
#: three names): they answer the same READY line, and the extra names only widen the injected set.
INPUT_EVENTS = _injection(
    "input_events", Handshake(EVENTS_TEST, topics.INPUT_EVENTS_INJECT, QMP_INPUT_INJECT_FAILED), input_events_plan
)
INPUT_MEDIA_KEYS = _injection(
    "input_media_keys",
    Handshake(MEDIA_TEST, topics.INPUT_MEDIA_KEYS_INJECT, QMP_MEDIA_KEYS_UNSUPPORTED),
    media_keys_plan,
)
INPUT_TABLET_EVENTS = _injection(
    "input_tablet_events",
    Handshake(TABLET_TEST, topics.INPUT_TABLET_EVENTS_INJECT, QMP_INPUT_TABLET_INJECT_FAILED),
    tablet_plan,
)
