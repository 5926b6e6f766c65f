"""Flap the NIC's link when the guest says ``virtio-net-link-flap|READY``.

``set_link`` accepts either the NIC's id (``vnet0``) or its netdev's (``net0``): measured on QEMU 7.2,
both are accepted and both end in the NIC's link status change (QEMU propagates a netdev's state to its
NIC peer). We name the NIC itself, the device the guest driver watches. The link is brought back up even
when the action is cancelled while down, so a cancelled run never leaves a guest without network.
"""

from __future__ import annotations

import asyncio
import time

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.actions.base import ActionContext, on_ready
from pytest_aero_virtio.errors import QMP_NET_LINK_FLAP_FAILED
from pytest_aero_virtio.markers import Marker

__all__ = ["NET_LINK_FLAP", "run_net_link_flap"]

TOPIC = topics.NET_LINK_FLAP
TEST = "virtio-net-link-flap"


async def run_net_link_flap(ctx: ActionContext, m: Marker) -> None:
    name = ctx.nic
    ctx.host(TOPIC, "REQUEST", name=name, down_s=ctx.link_down_s)
    try:
        await ctx.qmp.execute("set_link", {"name": name, "up": False})
    except Exception as exc:
        ctx.host(
            TOPIC,
            "FAIL",
            name=name,
            step="down",
            reason=f"{type(exc).__name__}: {exc}",
            token=QMP_NET_LINK_FLAP_FAILED,
        )
        return
    down_at = time.monotonic()
    ctx.host(TOPIC, "DOWN", name=name)
    up_error: Exception | None = None
    try:
        await asyncio.sleep(ctx.link_down_s)
    finally:  # also on cancellation: never leave the guest's link down
        try:
            await ctx.qmp.execute("set_link", {"name": name, "up": True})
        except Exception as exc:
            up_error = exc
            ctx.host(
                TOPIC,
                "FAIL",
                name=name,
                step="up",
                reason=f"{type(exc).__name__}: {exc}",
                token=QMP_NET_LINK_FLAP_FAILED,
            )
    if up_error is None:
        ctx.host(TOPIC, "PASS", name=name, down_ms=round((time.monotonic() - down_at) * 1000, 1))


NET_LINK_FLAP = on_ready("net_link_flap", TEST, run_net_link_flap, TOPIC, QMP_NET_LINK_FLAP_FAILED)
