"""pytest-aero-virtio: test virtio drivers end to end under QEMU through the aero selftest protocol."""

__version__ = "0.1.0"
