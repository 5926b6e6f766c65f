"""virtio-snd: playback (checked on the host in the recorded WAV), capture, duplex, buffer limits, diagnostics.

Needs a QEMU with ``virtio-sound-pci`` (8.2 or newer); on an older QEMU every test here is skipped with a
reason that names the missing device.
"""

from __future__ import annotations

import pytest

from pytest_aero_virtio.testing import MODERN_IDS, AeroDevice, expected_irq_mode

pytestmark = pytest.mark.virtio_snd


@pytest.mark.aero_check("virtio-snd")
def test_snd_pci_preflight(virtio_snd: AeroDevice) -> None:
    virtio_snd.pci_preflight(MODERN_IDS["snd"])


@pytest.mark.aero_check("virtio-snd")
def test_virtio_snd(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_pass()


@pytest.mark.aero_check("virtio-snd", audio="wav", at_end=True)
def test_virtio_snd_wav_on_host(virtio_snd: AeroDevice) -> None:
    """What the guest played reached QEMU's wav backend: not silent, 440 Hz dominant."""
    virtio_snd.expect_pass()
    virtio_snd.vm.check_wav(expect_hz=440.0)  # not silent, 440 Hz dominant, frames > 0 (WAV_CHECK_FAILED)


@pytest.mark.aero_check("virtio-snd-capture")
def test_virtio_snd_capture(virtio_snd: AeroDevice) -> None:
    m = virtio_snd.expect_pass()
    if m.has("frames"):
        m.integer("frames", minimum=1)


@pytest.mark.aero_check("virtio-snd-duplex")
def test_virtio_snd_duplex(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_pass()


@pytest.mark.aero_check("virtio-snd-buffer-limits")
def test_virtio_snd_buffer_limits(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_pass()


@pytest.mark.aero_check("virtio-snd-format")
def test_virtio_snd_format(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_info().text("render")


@pytest.mark.aero_check("virtio-snd-eventq")
def test_virtio_snd_eventq(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_info()


@pytest.mark.aero_check("virtio-snd-msix")
def test_virtio_snd_msix(virtio_snd: AeroDevice) -> None:
    virtio_snd.expect_pass().expect("mode", expected_irq_mode(virtio_snd.vm.config.vectors.snd))
