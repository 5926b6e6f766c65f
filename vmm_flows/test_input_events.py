"""virtio-input end to end: events injected over QMP on the guest's READY lines reach the guest's devices."""

from __future__ import annotations

import pytest

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.testing import AeroDevice

pytestmark = pytest.mark.virtio_input


@pytest.mark.aero_check("virtio-input-events")
def test_virtio_input_events(virtio_input: AeroDevice) -> None:
    """Key ``a``, a relative move and a left click, injected the moment the guest is READY."""
    virtio_input.expect_pass()
    virtio_input.vm.expect_host(topics.INPUT_EVENTS_INJECT, "PASS").expect("backend", "qmp_input_send_event")


@pytest.mark.aero_check("virtio-input-wheel")
def test_virtio_input_wheel(virtio_input: AeroDevice) -> None:
    """Wheel motion arrives as QEMU wheel buttons and reads as REL_WHEEL/REL_HWHEEL in the guest."""
    m = virtio_input.expect_pass()
    if m.has("wheel_total"):
        m.require(m.integer("wheel_total") != 0, "wheel_total=0: no vertical wheel motion reached the guest")
    # A virtio mouse without REL_HWHEEL (QEMU does not map wheel-left/right) cannot report it: the guest says so
    # with hwheel=unsupported, and only then is a zero horizontal total acceptable.
    if m.has("hwheel_total") and m.get("hwheel") != "unsupported":
        m.require(m.integer("hwheel_total") != 0, "hwheel_total=0 although the guest's mouse supports it")


@pytest.mark.aero_check("virtio-input-events-modifiers")
def test_virtio_input_events_modifiers(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-events-buttons")
def test_virtio_input_events_buttons(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-events-wheel")
def test_virtio_input_events_wheel(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()


@pytest.mark.aero_check("virtio-input-media-keys")
def test_virtio_input_media_keys(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()
    virtio_input.vm.expect_host(topics.INPUT_MEDIA_KEYS_INJECT, "PASS")


@pytest.mark.aero_check("virtio-input-tablet-events")
def test_virtio_input_tablet_events(virtio_input: AeroDevice) -> None:
    virtio_input.expect_pass()
    virtio_input.vm.expect_host(topics.INPUT_TABLET_EVENTS_INJECT, "PASS")
