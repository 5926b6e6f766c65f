"""virtio-input: enumeration and driver binding, separate keyboard and mouse, tablet, LEDs, interrupts."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.testing import MODERN_IDS, AeroDevice, expected_irq_mode

pytestmark = pytest.mark.virtio_input


@pytest.mark.aero_check()
def test_input_pci_preflight(virtio_input: AeroDevice) -> None:
    virtio_input.pci_preflight(MODERN_IDS["input"])


@pytest.mark.aero_check("virtio-input-bind")
def test_virtio_input_bind(virtio_input: AeroDevice) -> None:
    """Keyboard and mouse always bind, plus the tablet when this VM has one."""
    m = virtio_input.expect_pass()
    if m.has("devices"):
        m.integer("devices", minimum=2 + int(virtio_input.vm.config.tablet))


@pytest.mark.aero_check("virtio-input-binding")
def test_virtio_input_binding(virtio_input: AeroDevice) -> None:
    """The guest names the driver service bound to the devices."""
    virtio_input.expect_pass().text("service")


@pytest.mark.aero_check("virtio-input")
def test_virtio_input(virtio_input: AeroDevice) -> None:
    """A keyboard-only and a mouse-only device, not one combined device."""
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-tablet")
def test_virtio_input_tablet(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-msix")
def test_virtio_input_msix(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass().expect("mode", expected_irq_mode(virtio_input.vm.config.vectors.input))


@pytest.mark.aero_check("virtio-input-led")
def test_virtio_input_led(virtio_input: AeroDevice) -> None:
    """Guest-driven: LED output reports travel down the virtio statusq."""
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-leds")
def test_virtio_input_leds(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass().integer("writes", minimum=1)
