"""QMP reactions bound to guest READY lines (see :mod:`.base` for the machinery).

:data:`ACTIONS` maps the names used in ``VmConfig.reactions`` (and ``checks.py``) to reactions.
``input_events_extended`` and ``input_wheel`` are *aliases* of ``input_events``: all three answer the same
``virtio-input-events|READY``; arming the extra names widens the injected set (extended keys and
buttons; wheel buttons), read from ``ActionContext.armed``. The :class:`~.base.Reactor` de-duplicates by
reaction name, so the READY line is answered by exactly one injection loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_aero_virtio.actions.base import (
    ActionContext,
    CapsView,
    QmpExecutor,
    Reaction,
    Reactor,
    ready_trigger,
)
from pytest_aero_virtio.actions.blk import BLK_RESIZE
from pytest_aero_virtio.actions.input import INPUT_EVENTS, INPUT_MEDIA_KEYS, INPUT_TABLET_EVENTS
from pytest_aero_virtio.actions.mirror import MIRROR
from pytest_aero_virtio.actions.net import NET_LINK_FLAP
from pytest_aero_virtio.config import VmConfig
from pytest_aero_virtio.errors import AeroConfigError

__all__ = [
    "ACTIONS",
    "MIRROR",
    "ActionContext",
    "CapsView",
    "QmpExecutor",
    "Reaction",
    "Reactor",
    "reactions_for",
    "ready_trigger",
]

ACTIONS: dict[str, Reaction] = {
    "blk_resize": BLK_RESIZE,
    "input_events": INPUT_EVENTS,
    "input_events_extended": INPUT_EVENTS,
    "input_wheel": INPUT_EVENTS,
    "input_media_keys": INPUT_MEDIA_KEYS,
    "input_tablet_events": INPUT_TABLET_EVENTS,
    "net_link_flap": NET_LINK_FLAP,
}


def reactions_for(names: Iterable[str]) -> list[Reaction]:
    """The reactions for ``VmConfig.reactions`` (unique, in a stable order); unknown names are an error."""
    unknown = sorted(set(names) - ACTIONS.keys())
    if unknown:
        raise AeroConfigError(
            f"unknown host reaction(s): {', '.join(unknown)}",
            fix=f"use names from pytest_aero_virtio.actions.ACTIONS: {', '.join(sorted(ACTIONS))}",
        )
    out: dict[str, Reaction] = {}
    for name in sorted(set(names)):
        reaction = ACTIONS[name]
        out.setdefault(reaction.name, reaction)
    return list(out.values())


def vm_reactions(vm: VmConfig, mirror: bool = True) -> list[Reaction]:
    """Everything to arm for one VM: its named reactions plus (by default) the diagnostic mirror, which
    copies guest irq/msix/throughput fields into stable ``AERO_VIRTIO_WIN7_HOST`` lines."""
    return reactions_for(vm.reactions) + ([MIRROR] if mirror else [])
