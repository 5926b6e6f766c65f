"""aero_selftest: the reference Linux guest's selftest, speaking the aero virtio selftest protocol.

It runs inside the reference VM (``python3 -m aero_selftest``, started by the image's /init) on the guest's
Python 3.13 with the standard library only, exercises every virtio device through its Linux driver, and
prints ``AERO_VIRTIO_SELFTEST|...`` markers on the first serial port (see docs/protocol.md).  The host-side
plugin never imports it; only its pure parts are unit-tested on the host (tests/guest/), so every module must
also import on Python 3.11.
"""

PROTOCOL_VERSION = 1
