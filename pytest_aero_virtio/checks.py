"""The catalog of guest checks: one entry per marker name of docs/protocol.md.

Each entry says what a test of that check needs from the VM (devices, the guest's opt-in flag, the host
reaction that answers its READY line, the audio backend) and what verdict it expects. The plan derives
VM configurations from it and the requirements module derives failure tokens from it, so a check's
needs are written once, here, and nowhere else.

Unknown marker names are not an error anywhere: a newer guest may print checks this catalog has not
heard of yet; they are kept in the stream and can be asserted with :meth:`AeroVm.expect_pass`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Device = Literal["blk", "net", "input", "snd"]
Expect = Literal["pass", "info"]
Audio = Literal["wav", "none"]


@dataclass(frozen=True)
class GuestCheck:
    """What one guest check needs and what it must report.

    ``guest_flags`` are the guest's opt-in provisioning flags (without ``--``); a check with flags prints
    ``SKIP|flag_not_set`` when the guest was not provisioned with them, which fails a test that selected it.
    ``reactions`` name host actions (``pytest_aero_virtio.actions.ACTIONS``) that must be armed before boot.
    ``audio`` is the sound backend the check needs: the wav backend records playback for the host-side
    check but cannot capture, so capture checks need ``none``.
    ``base`` marks the per-test markers that must accompany ``RESULT|PASS`` so an old guest binary that
    prints only a RESULT line cannot pass (docs/protocol.md).
    """

    name: str
    device: Device
    expect: Expect = "pass"
    guest_flags: tuple[str, ...] = ()
    reactions: tuple[str, ...] = ()
    tablet: bool = False
    snd: bool = False
    audio: Audio | None = None
    base: bool = False

    @property
    def opt_in(self) -> bool:
        """Whether the guest runs this check only when provisioned for it."""
        return bool(self.guest_flags)


def _c(name: str, device: Device, **kw: object) -> GuestCheck:
    return GuestCheck(name, device, **kw)  # type: ignore[arg-type]


_SND = {"snd": True}

CATALOG: dict[str, GuestCheck] = {
    c.name: c
    for c in (
        # blk
        _c("virtio-blk", "blk", base=True),
        _c("virtio-blk-msix", "blk"),
        _c("virtio-blk-counters", "blk", expect="info"),
        _c("virtio-blk-resize", "blk", guest_flags=("test-blk-resize",), reactions=("blk_resize",)),
        _c("virtio-blk-reset", "blk", guest_flags=("test-blk-reset",)),
        # input
        _c("virtio-input-bind", "input", base=True),
        _c("virtio-input-binding", "input"),
        _c("virtio-input", "input", base=True),
        _c("virtio-input-tablet", "input", tablet=True),
        _c("virtio-input-msix", "input"),
        _c("virtio-input-led", "input", guest_flags=("test-input-led",)),
        _c("virtio-input-leds", "input", guest_flags=("test-input-leds",)),
        _c("virtio-input-events", "input", guest_flags=("test-input-events",), reactions=("input_events",)),
        _c(
            "virtio-input-wheel",
            "input",
            guest_flags=("test-input-events",),
            reactions=("input_events", "input_wheel"),
        ),
        *(
            _c(
                f"virtio-input-events-{part}",
                "input",
                guest_flags=("test-input-events", "test-input-events-extended"),
                reactions=("input_events", "input_events_extended"),
            )
            for part in ("modifiers", "buttons", "wheel")
        ),
        _c(
            "virtio-input-media-keys",
            "input",
            guest_flags=("test-input-media-keys",),
            reactions=("input_media_keys",),
        ),
        _c(
            "virtio-input-tablet-events",
            "input",
            guest_flags=("test-input-tablet-events",),
            reactions=("input_tablet_events",),
            tablet=True,
        ),
        # snd
        _c("virtio-snd", "snd", **_SND),
        _c("virtio-snd-capture", "snd", audio="none", guest_flags=("test-snd-capture",), **_SND),
        _c("virtio-snd-duplex", "snd", audio="none", guest_flags=("test-snd-capture",), **_SND),
        _c("virtio-snd-buffer-limits", "snd", guest_flags=("test-snd-buffer-limits",), **_SND),
        _c("virtio-snd-format", "snd", expect="info", **_SND),
        _c("virtio-snd-eventq", "snd", expect="info", **_SND),
        _c("virtio-snd-msix", "snd", **_SND),
        # net
        _c("virtio-net-udp", "net", base=True),
        _c("virtio-net", "net", base=True),
        _c("virtio-net-udp-dns", "net", expect="info"),
        _c("virtio-net-offload-csum", "net"),
        _c("virtio-net-link-flap", "net", guest_flags=("test-net-link-flap",), reactions=("net_link_flap",)),
        _c("virtio-net-msix", "net"),
    )
}

#: The per-test markers ``RESULT|PASS`` must be accompanied by (docs/protocol.md).
BASE_CHECKS: tuple[str, ...] = tuple(c.name for c in CATALOG.values() if c.base)

#: Order of the guest's devices (docs/protocol.md), used to sort reports.
DEVICE_ORDER: tuple[Device, ...] = ("blk", "input", "snd", "net")


def lookup(name: str) -> GuestCheck:
    """The catalog entry for ``name``; an unknown name gets a neutral entry (no needs, expects PASS).

    Unknown names are allowed on purpose: a newer guest may add checks before this catalog knows them.
    """
    found = CATALOG.get(name)
    if found is not None:
        return found
    device: Device = "net"
    for dev in DEVICE_ORDER:
        if name.startswith(f"virtio-{dev}"):
            device = dev
            break
    return GuestCheck(name, device, snd=device == "snd")
