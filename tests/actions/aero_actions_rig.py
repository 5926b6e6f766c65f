"""Shared helpers for the reaction tests: a rig of fake QMP peer + real QMPClient + real MarkerStream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from pytest_aero_virtio.actions import ActionContext, Reactor, reactions_for
from pytest_aero_virtio.config import VmConfig
from pytest_aero_virtio.markers import HostMarker
from pytest_aero_virtio.qemu.caps import Caps
from pytest_aero_virtio.stream import MarkerStream

INPUT_DRIVERS = ("virtio-keyboard-pci", "virtio-mouse-pci", "virtio-tablet-pci")


def make_caps(display_prop: bool = True, commands: Iterable[str] = ("block_resize", "set_link")) -> Caps:
    props = {d: frozenset({"display"} if display_prop else set()) for d in INPUT_DRIVERS}
    return Caps(version=(7, 2, 0), device_props=props, qmp_commands=frozenset(commands))


def make_stream() -> MarkerStream:
    return MarkerStream()


@dataclass
class Rig:
    peer: Any
    ctx: ActionContext
    reactor: Reactor
    stream: MarkerStream

    @property
    def log_lines(self) -> list[str]:
        """The host lines as the host-markers.log writer (a stream subscriber) would write them."""
        return [hm.line() for hm in self.stream.host_markers]

    def feed(self, line: str) -> None:
        self.stream.feed_line(line)

    def host(self, topic: str) -> list[HostMarker]:
        return [hm for hm in self.ctx.recorded if hm.topic == topic]


@contextlib.asynccontextmanager
async def rig(
    reactions: Iterable[str],
    caps: Caps | None = None,
    peer_kwargs: dict[str, Any] | None = None,
    **ctx_kwargs: Any,
) -> AsyncIterator[Rig]:
    """A fake QMP peer + real QMPClient + stream + context + reactor subscribed to the stream."""
    from aero_fake_qmp import FakeQmpPeer

    tmp = Path(tempfile.mkdtemp(prefix="aqmp", dir="/tmp"))  # short: unix socket paths max 107 bytes
    peer = FakeQmpPeer(tmp / "q.sock", **(peer_kwargs or {}))
    await peer.start()
    qmp = QMPClient("fake")
    try:
        await qmp.connect(str(tmp / "q.sock"))
        names = frozenset(reactions)
        stream = make_stream()
        ctx = ActionContext(
            qmp=qmp,
            stream=stream,
            vm=VmConfig(reactions=names),
            caps=caps or make_caps(),
            **ctx_kwargs,
        )
        reactor = Reactor(ctx, reactions_for(names))
        stream.subscribe(reactor.on_marker)
        yield Rig(peer, ctx, reactor, stream)
        await reactor.drain(timeout=10)
    finally:
        await qmp.disconnect()
        await peer.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))
