"""Every host-marker topic, defined once: ``AERO_VIRTIO_WIN7_HOST|<TOPIC>|<STATUS>|...``.

Users' log scrapers and the tests of ``vmm_flows`` look for these exact words, so they are constants here and
nowhere else (a test of the repository enforces it). The mirror topics copy guest diagnostics under stable
names (see :mod:`.mirror`); the action topics record what the host did in answer to a READY line.
"""

from __future__ import annotations

__all__ = [
    "BLK_IO",
    "BLK_IRQ",
    "BLK_MSIX",
    "BLK_RESIZE",
    "INPUT_EVENTS_INJECT",
    "INPUT_IRQ",
    "INPUT_MEDIA_KEYS_INJECT",
    "INPUT_MSIX",
    "INPUT_TABLET_EVENTS_INJECT",
    "MIRROR",
    "NET_IRQ",
    "NET_LARGE",
    "NET_LINK_FLAP",
    "NET_MSIX",
    "NET_UDP",
    "NET_UDP_DNS",
    "PCI_PREFLIGHT",
    "SND_EVENTQ",
    "SND_FORMAT",
    "SND_IRQ",
    "SND_MSIX",
]

# --- what the host did (actions and host-side checks) ------------------------------------------------------
BLK_RESIZE = "VIRTIO_BLK_RESIZE"
INPUT_EVENTS_INJECT = "VIRTIO_INPUT_EVENTS_INJECT"
INPUT_MEDIA_KEYS_INJECT = "VIRTIO_INPUT_MEDIA_KEYS_INJECT"
INPUT_TABLET_EVENTS_INJECT = "VIRTIO_INPUT_TABLET_EVENTS_INJECT"
NET_LINK_FLAP = "VIRTIO_NET_LINK_FLAP"
PCI_PREFLIGHT = "QEMU_PCI_PREFLIGHT"
#: An unexpected exception of the diagnostic mirror itself (never a verdict).
MIRROR = "HOST_MIRROR"

# --- guest diagnostics mirrored under stable names ----------------------------------------------------------
BLK_MSIX = "VIRTIO_BLK_MSIX"
NET_MSIX = "VIRTIO_NET_MSIX"
SND_MSIX = "VIRTIO_SND_MSIX"
INPUT_MSIX = "VIRTIO_INPUT_MSIX"
SND_EVENTQ = "VIRTIO_SND_EVENTQ"
SND_FORMAT = "VIRTIO_SND_FORMAT"
NET_UDP = "VIRTIO_NET_UDP"
NET_UDP_DNS = "VIRTIO_NET_UDP_DNS"
BLK_IRQ = "VIRTIO_BLK_IRQ"
BLK_IO = "VIRTIO_BLK_IO"
NET_IRQ = "VIRTIO_NET_IRQ"
NET_LARGE = "VIRTIO_NET_LARGE"
SND_IRQ = "VIRTIO_SND_IRQ"
INPUT_IRQ = "VIRTIO_INPUT_IRQ"
