"""Mirror guest diagnostics into stable host markers (informational, reference document 000).

Users' log scrapers look for ``AERO_VIRTIO_WIN7_HOST|VIRTIO_BLK_IRQ|...``, ``...|VIRTIO_NET_MSIX|...`` and
friends, which the original harness derived from the guest's own markers. They never decide a verdict;
they copy what the guest said under a stable topic. :func:`mirror_of` is the pure mapping;
:data:`MIRROR` is the (not ``once``) reaction that records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.actions.base import ActionContext, Reaction
from pytest_aero_virtio.errors import MIRROR_FAILED
from pytest_aero_virtio.markers import FINAL_STATUSES, HostMarker, Marker

__all__ = ["MIRROR", "mirror_of"]

#: guest test -> host topic, copying every field
WHOLE: Mapping[str, str] = {
    "virtio-blk-msix": topics.BLK_MSIX,
    "virtio-net-msix": topics.NET_MSIX,
    "virtio-snd-msix": topics.SND_MSIX,
    "virtio-input-msix": topics.INPUT_MSIX,
    "virtio-snd-eventq": topics.SND_EVENTQ,
    "virtio-snd-format": topics.SND_FORMAT,
    "virtio-net-udp": topics.NET_UDP,
    "virtio-net-udp-dns": topics.NET_UDP_DNS,
}

#: guest test -> [(host topic, which fields)] for markers that carry several kinds of figures
PARTS: Mapping[str, list[tuple[str, Callable[[str], bool]]]] = {
    "virtio-blk": [
        (topics.BLK_IRQ, lambda k: k.startswith(("irq_", "msix_"))),
        (topics.BLK_IO, lambda k: k.startswith(("write_", "read_", "flush"))),
    ],
    "virtio-net": [
        (topics.NET_IRQ, lambda k: k.startswith(("irq_", "msix_"))),
        (topics.NET_LARGE, lambda k: k.startswith(("large_", "upload_"))),
    ],
    "virtio-snd": [(topics.SND_IRQ, lambda k: k.startswith(("irq_", "msix_")))],
    "virtio-input": [(topics.INPUT_IRQ, lambda k: k.startswith(("irq_", "msix_")))],
}


def mirror_of(m: Marker) -> list[HostMarker]:
    """The host markers mirroring guest marker ``m`` (empty when it carries nothing to mirror)."""
    if m.kind != "TEST" or m.name is None or m.status not in FINAL_STATUSES:
        return []
    if m.name in WHOLE:
        return [HostMarker(topic=WHOLE[m.name], status=m.status, fields=dict(m.fields), tokens=m.tokens)]
    out: list[HostMarker] = []
    for topic, wanted in PARTS.get(m.name, []):
        fields = {k: v for k, v in m.fields.items() if wanted(k)}
        if fields:
            out.append(HostMarker(topic=topic, status=m.status, fields=fields))
    return out


def _has_mirror(m: Marker) -> bool:
    return bool(mirror_of(m))


async def _record_mirror(ctx: ActionContext, m: Marker) -> None:
    for hm in mirror_of(m):
        ctx.record(hm)


MIRROR = Reaction(
    name="mirror",
    trigger=_has_mirror,
    run=_record_mirror,
    topic=topics.MIRROR,
    token=MIRROR_FAILED,
    once=False,
)
