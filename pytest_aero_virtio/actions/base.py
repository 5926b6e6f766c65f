"""Reactions: host actions bound to guest lines, run as tasks on the VM's event loop.

A guest blocked at a READY line waits a few seconds for the host (docs/protocol.md) and then gives up,
whatever pytest happens to be doing. So reactions are armed before QEMU starts and fire from the stream's
subscriber callback the moment the line is parsed: :meth:`Reactor.on_marker` only matches triggers and
schedules tasks, it never blocks the loop and never re-enters the stream (the stream may hold its lock
while it calls subscribers). Every outcome, including an unexpected exception, becomes an
``AERO_VIRTIO_WIN7_HOST|<TOPIC>|<STATUS>|...`` host marker through :meth:`ActionContext.record`, so a
failed action is visible in the stream, in the host log and in the failing test's message; nothing is
swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from pytest_aero_virtio.config import VmConfig
from pytest_aero_virtio.markers import HostMarker, Marker
from pytest_aero_virtio.stream import MarkerStream

__all__ = [
    "DEFAULT_BLK_RESIZE_DELTA",
    "ActionContext",
    "CapsView",
    "QmpExecutor",
    "Reaction",
    "Reactor",
    "is_qmp_refusal",
    "on_ready",
    "ready_trigger",
]

log = logging.getLogger(__name__)

#: How much the disk grows on ``virtio-blk-resize|READY`` (docs/protocol.md).
DEFAULT_BLK_RESIZE_DELTA = 64 * 1024 * 1024


class QmpExecutor(Protocol):
    """What reactions need from QMP: the VM's :class:`~pytest_aero_virtio.qemu.qmp.QmpChannel` (which waits
    for the QMP handshake itself, so a reaction may run before it completes); its ``execute`` raises
    ``qemu.qmp.ExecuteError`` when QEMU answers with an error."""

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> Any: ...


class CapsView(Protocol):
    """The part of :class:`pytest_aero_virtio.qemu.caps.Caps` reactions consult."""

    def has_prop(self, device: str, prop: str) -> bool: ...

    def has_command(self, name: str) -> bool: ...


def is_qmp_refusal(exc: BaseException) -> bool:
    """True when QEMU answered the command with an error (as opposed to QMP being gone): only a refusal
    justifies a fallback to another command or mode."""
    try:
        from qemu.qmp import ExecuteError
    except ImportError:  # pragma: no cover - qemu.qmp is a hard dependency
        return False
    return isinstance(exc, ExecuteError)


@dataclass
class ActionContext:
    """Everything a reaction may touch, built once per VM before QEMU starts (``vm.py``).

    ``qmp`` is the VM's QMP channel itself, known from the start: no late binding. The ids must equal the ones
    ``qemu/argv.py`` put on the command line (``DEVICE_IDS``), hence the defaults here are the same.
    Timing knobs are fields so tests can shrink them.
    """

    qmp: QmpExecutor
    stream: MarkerStream
    vm: VmConfig
    caps: CapsView
    display: str = "vga0"  # keyboard + mouse are bound to this QemuConsole
    tablet_display: str = "vga1"  # the tablet is bound to its own console (see docs/design.md)
    disk_node: str = "disk0"
    nic: str = "vnet0"
    blk_resize_delta: int = DEFAULT_BLK_RESIZE_DELTA
    input_interval_s: float = 0.5
    input_deadline_s: float = 20.0
    link_down_s: float = 3.0
    recorded: list[HostMarker] = field(default_factory=list)

    @property
    def armed(self) -> frozenset[str]:
        """Names of the reactions armed for this VM (options such as ``input_wheel`` are read from here)."""
        return self.vm.reactions

    def record(self, hm: HostMarker) -> None:
        """Add a host marker to the stream; the stream's subscribers write it to host-markers.log."""
        self.recorded.append(hm)
        self.stream.add_host(hm)

    def host(self, topic: str, status: str, **fields: object) -> HostMarker:
        """Build and record ``AERO_VIRTIO_WIN7_HOST|topic|status|k=v...`` (cleaned by :class:`HostMarker`)."""
        hm = HostMarker(topic=topic, status=status, fields={k: str(v) for k, v in fields.items()})
        self.record(hm)
        return hm


RunFn = Callable[[ActionContext, Marker], Awaitable[None]]


@dataclass(frozen=True)
class Reaction:
    """A host action bound to a guest line.

    ``topic`` and ``token`` let the reactor report an unexpected exception of ``run`` as
    ``AERO_VIRTIO_WIN7_HOST|<topic>|FAIL|reason=...|token=<token>``. A ``once`` reaction fires for the first
    matching marker only (a disk must be resized exactly once even if the guest repeats its READY line).
    """

    name: str
    trigger: Callable[[Marker], bool]
    run: RunFn
    topic: str
    token: str
    once: bool = True


def on_ready(name: str, test: str, run: RunFn, topic: str, token: str) -> Reaction:
    """A ``once`` reaction to ``<test>|READY``: the shape of every READY handshake's host action."""
    return Reaction(name=name, trigger=ready_trigger(test), run=run, topic=topic, token=token)


def ready_trigger(test: str) -> Callable[[Marker], bool]:
    """Trigger on ``AERO_VIRTIO_SELFTEST|TEST|<test>|READY``."""

    def trigger(m: Marker) -> bool:
        return m.kind == "TEST" and m.name == test and m.status == "READY"

    trigger.__name__ = f"ready_{test.replace('-', '_')}"
    return trigger


class Reactor:
    """Dispatch markers to reactions; one per VM, living on the VM loop.

    Subscribe :meth:`on_marker` to the stream *before* QEMU starts. It must be called on the loop thread
    (the stream is fed there); a call from another thread is forwarded with ``call_soon_threadsafe``
    when the reactor knows its loop. :meth:`drain` waits for running actions (at shutdown);
    :meth:`cancel` stops them.
    """

    def __init__(
        self,
        ctx: ActionContext,
        reactions: Iterable[Reaction],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.ctx = ctx
        unique: dict[str, Reaction] = {}
        for reaction in reactions:
            unique.setdefault(reaction.name, reaction)  # aliases (input_wheel -> input_events) run once
        self.reactions: tuple[Reaction, ...] = tuple(unique.values())
        self._loop = loop
        self._fired: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Number of actions still running."""
        return sum(1 for t in self._tasks if not t.done())

    def on_marker(self, m: Marker | HostMarker) -> None:
        """Stream subscriber: schedule every reaction whose trigger matches ``m``. Never blocks."""
        if not isinstance(m, Marker):
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or (self._loop is not None and running is not self._loop):
            if self._loop is None:
                raise RuntimeError("Reactor.on_marker called outside an event loop and no loop was given")
            self._loop.call_soon_threadsafe(self.on_marker, m)
            return
        for reaction in self.reactions:
            if reaction.once and reaction.name in self._fired:
                continue
            try:
                matched = reaction.trigger(m)
            except Exception as exc:  # a buggy trigger is reported, and must not stop other reactions
                self._spawn(running, reaction, m, partial(_raise, exc))
                continue
            if matched:
                self._fired.add(reaction.name)
                self._spawn(running, reaction, m, partial(reaction.run, self.ctx, m))

    def _spawn(
        self,
        loop: asyncio.AbstractEventLoop,
        reaction: Reaction,
        m: Marker,
        start: Callable[[], Awaitable[None]],
    ) -> None:
        task = loop.create_task(self._guard(reaction, m, start), name=f"aero-reaction-{reaction.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, reaction: Reaction, m: Marker, start: Callable[[], Awaitable[None]]) -> None:
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("reaction %s failed on %r", reaction.name, m.raw)
            self.ctx.host(
                reaction.topic,
                "FAIL",
                reason=f"{type(exc).__name__}: {exc}",
                token=reaction.token,
                reaction=reaction.name,
            )

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every scheduled action has finished (or ``timeout``; then cancel the rest)."""
        while self._tasks:
            tasks = set(self._tasks)
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                await self.cancel()
                return

    async def cancel(self) -> None:
        """Cancel running actions and wait for them to unwind."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _raise(exc: Exception) -> None:
    raise exc
