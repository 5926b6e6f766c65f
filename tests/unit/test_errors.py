"""The error strings are a public interface: CI greps ``FAIL: <TOKEN>:``."""

from __future__ import annotations

from pathlib import Path

from pytest_aero_virtio import errors
from pytest_aero_virtio.errors import (
    AeroConfigError,
    AeroError,
    AeroFailure,
    failed_token,
    missing_token,
    name_token,
    skipped_token,
    token_for,
)


def test_str_is_fail_token_message() -> None:
    assert str(AeroError("TIMEOUT", "no RESULT within 600 s")) == "FAIL: TIMEOUT: no RESULT within 600 s"


def test_fix_is_rendered_on_its_own_line() -> None:
    err = AeroConfigError("qemu-system-x86_64 not found", fix="pass --qemu-system", token=errors.QEMU_NOT_FOUND)
    assert str(err) == "FAIL: QEMU_NOT_FOUND: qemu-system-x86_64 not found\nfix: pass --qemu-system"
    assert err.token == "QEMU_NOT_FOUND"
    assert isinstance(err, AeroError)


def test_config_error_default_token() -> None:
    assert AeroConfigError("bad").token == errors.CONFIG_ERROR


def test_failure_renders_tail_and_artifacts_after_message() -> None:
    err = AeroFailure(
        "MISSING_VIRTIO_BLK",
        "RESULT arrived without virtio-blk",
        serial_tail=["line one", "AERO_VIRTIO_SELFTEST|RESULT|PASS"],
        artifacts={"serial": Path("/a/serial.log"), "argv": Path("/a/argv.txt")},
    )
    text = str(err)
    assert text.startswith("FAIL: MISSING_VIRTIO_BLK: RESULT arrived without virtio-blk\n")
    assert "  | AERO_VIRTIO_SELFTEST|RESULT|PASS" in text
    assert text.index("argv: /a/argv.txt") < text.index("serial: /a/serial.log")
    assert text.index("line one") < text.index("artifacts:")


def test_with_context_fills_only_missing_parts() -> None:
    err = AeroFailure("TIMEOUT", "x", serial_tail=["mine"])
    out = err.with_context(serial_tail=["other"], artifacts={"serial": Path("/s")})
    assert out.serial_tail == ["mine"]
    assert out.artifacts == {"serial": Path("/s")}
    assert out.token == "TIMEOUT" and out is not err


def test_tokens() -> None:
    assert token_for("virtio-input-events", "SKIPPED") == "VIRTIO_INPUT_EVENTS_SKIPPED"
    assert skipped_token("virtio-input-events") == "VIRTIO_INPUT_EVENTS_SKIPPED"
    assert failed_token("virtio-net") == "VIRTIO_NET_FAILED"
    assert missing_token("virtio-blk") == "MISSING_VIRTIO_BLK"
    assert missing_token("virtio-input-events") == "MISSING_VIRTIO_INPUT_EVENTS"
    assert name_token("virtio-snd.x y") == "VIRTIO_SND_X_Y"


def test_protocol_tokens_are_constants() -> None:
    for token in (
        "TIMEOUT",
        "QEMU_EXITED",
        "SELFTEST_FAILED",
        "QMP_INPUT_INJECT_FAILED",
        "QMP_INPUT_TABLET_INJECT_FAILED",
        "QMP_MEDIA_KEYS_UNSUPPORTED",
        "QMP_BLK_RESIZE_FAILED",
        "QMP_NET_LINK_FLAP_FAILED",
        "QEMU_PCI_PREFLIGHT_FAILED",
        "UDP_PORT_MISMATCH",
        "VIRTIO_SND_FORCE_NULL_BACKEND",
    ):
        assert getattr(errors, token) == token
        assert token in errors.ALL_FIXED_TOKENS
