"""The error hierarchy of the plugin: every error carries a token, a cause and (when known) a fix.

Users' CI greps the original harness's output for ``FAIL: <TOKEN>: ...`` (docs/protocol.md), so the
token is part of the public interface: ``str(error)`` starts with exactly that prefix, and every token the
protocol knows is a constant here, so no module spells one by hand.

Two kinds of error:

* :class:`AeroConfigError` - the run cannot start (bad option, missing binary, unreadable image, busy port).
  Exit-code 2 semantics: a usage problem, the fix is on the user's side.
* :class:`AeroFailure` - a verdict about the guest or QEMU (timeout, missing marker, QEMU died). It carries
  the tail of the serial log and the artifact paths, so a failure report is self-contained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "ALL_FIXED_TOKENS",
    "CONFIG_ERROR",
    "FAIL_PREFIX",
    "HOST_HTTP_NOT_SEEN",
    "HOST_UDP_NOT_SEEN",
    "IMAGE_INVALID",
    "IMAGE_UNREADABLE",
    "INTERRUPTED",
    "MIRROR_FAILED",
    "MISSING_MARKER",
    "NO_SERIAL_OUTPUT",
    "PORT_IN_USE",
    "QEMU_EXITED",
    "QEMU_NOT_FOUND",
    "QEMU_PCI_PREFLIGHT_FAILED",
    "QMP_BLK_RESIZE_FAILED",
    "QMP_INPUT_INJECT_FAILED",
    "QMP_INPUT_TABLET_INJECT_FAILED",
    "QMP_MEDIA_KEYS_UNSUPPORTED",
    "QMP_NET_LINK_FLAP_FAILED",
    "SELFTEST_FAILED",
    "TIMEOUT",
    "UDP_PORT_MISMATCH",
    "VIRTIO_SND_FORCE_NULL_BACKEND",
    "VM_BOOT_FAILED",
    "WAV_CHECK_FAILED",
    "AeroConfigError",
    "AeroError",
    "AeroFailure",
    "EvidenceMissing",
    "RunInterrupted",
    "bad_field_token",
    "fail_line",
    "failed_token",
    "host_status_token",
    "missing_host_token",
    "missing_token",
    "name_token",
    "skipped_token",
    "token_for",
]

# --- tokens of the original harness (docs/protocol.md); CI greps these exact strings ---------------
TIMEOUT = "TIMEOUT"
QEMU_EXITED = "QEMU_EXITED"
SELFTEST_FAILED = "SELFTEST_FAILED"
QMP_INPUT_INJECT_FAILED = "QMP_INPUT_INJECT_FAILED"
QMP_INPUT_TABLET_INJECT_FAILED = "QMP_INPUT_TABLET_INJECT_FAILED"
QMP_MEDIA_KEYS_UNSUPPORTED = "QMP_MEDIA_KEYS_UNSUPPORTED"
QMP_BLK_RESIZE_FAILED = "QMP_BLK_RESIZE_FAILED"
QMP_NET_LINK_FLAP_FAILED = "QMP_NET_LINK_FLAP_FAILED"
QEMU_PCI_PREFLIGHT_FAILED = "QEMU_PCI_PREFLIGHT_FAILED"
UDP_PORT_MISMATCH = "UDP_PORT_MISMATCH"
VIRTIO_SND_FORCE_NULL_BACKEND = "VIRTIO_SND_FORCE_NULL_BACKEND"

# --- tokens of this plugin (configuration errors and host-side verdicts) --------------------------------
CONFIG_ERROR = "CONFIG_ERROR"
QEMU_NOT_FOUND = "QEMU_NOT_FOUND"
IMAGE_UNREADABLE = "IMAGE_UNREADABLE"
PORT_IN_USE = "PORT_IN_USE"
#: The host-side check of the captured WAV failed (exit code 4 of the original harness).
WAV_CHECK_FAILED = "WAV_CHECK_FAILED"
#: The guest printed nothing on the first serial port for the silence timeout.
NO_SERIAL_OUTPUT = "NO_SERIAL_OUTPUT"
#: A VM could not be started for a reason that is not QEMU's own (an I/O error preparing it, a harness bug).
VM_BOOT_FAILED = "VM_BOOT_FAILED"
#: The diagnostic mirror of guest fields failed (a harness bug; never decides a verdict).
MIRROR_FAILED = "MIRROR_FAILED"
#: The host's UDP echo did not see what a passing guest claims it sent.
HOST_UDP_NOT_SEEN = "HOST_UDP_NOT_SEEN"
#: The host's HTTP server did not see the request a passing guest claims it made.
HOST_HTTP_NOT_SEEN = "HOST_HTTP_NOT_SEEN"
#: A generic wait (not for a named check) ended with the guest's RESULT line and no match.
MISSING_MARKER = "MISSING_MARKER"
#: The file given as the VM image is no disk image QEMU can boot (empty, text, unknown format).
IMAGE_INVALID = "IMAGE_INVALID"
#: The run was ended from outside (SIGTERM: a CI job cancelled or timed out) while this test ran.
INTERRUPTED = "INTERRUPTED"

ALL_FIXED_TOKENS: frozenset[str] = frozenset(
    {
        TIMEOUT,
        QEMU_EXITED,
        SELFTEST_FAILED,
        QMP_INPUT_INJECT_FAILED,
        QMP_INPUT_TABLET_INJECT_FAILED,
        QMP_MEDIA_KEYS_UNSUPPORTED,
        QMP_BLK_RESIZE_FAILED,
        QMP_NET_LINK_FLAP_FAILED,
        QEMU_PCI_PREFLIGHT_FAILED,
        UDP_PORT_MISMATCH,
        VIRTIO_SND_FORCE_NULL_BACKEND,
        CONFIG_ERROR,
        QEMU_NOT_FOUND,
        IMAGE_UNREADABLE,
        PORT_IN_USE,
        WAV_CHECK_FAILED,
        NO_SERIAL_OUTPUT,
        VM_BOOT_FAILED,
        MISSING_MARKER,
        MIRROR_FAILED,
        HOST_UDP_NOT_SEEN,
        HOST_HTTP_NOT_SEEN,
        IMAGE_INVALID,
        INTERRUPTED,
    }
)

_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def name_token(test_name: str) -> str:
    """``virtio-input-events`` -> ``VIRTIO_INPUT_EVENTS`` (any run of non-alphanumerics becomes ``_``)."""
    return _NON_WORD.sub("_", test_name).strip("_").upper()


def token_for(test_name: str, suffix: str) -> str:
    """``("virtio-input-events", "SKIPPED")`` -> ``VIRTIO_INPUT_EVENTS_SKIPPED``."""
    return f"{name_token(test_name)}_{suffix.upper()}"


def missing_token(test_name: str) -> str:
    """``"virtio-blk"`` -> ``MISSING_VIRTIO_BLK``: the RESULT line came (or QEMU ended) without this test."""
    return f"MISSING_{name_token(test_name)}"


def failed_token(test_name: str) -> str:
    """``"virtio-net"`` -> ``VIRTIO_NET_FAILED``."""
    return token_for(test_name, "FAILED")


def skipped_token(test_name: str) -> str:
    """``"virtio-input-events"`` -> ``VIRTIO_INPUT_EVENTS_SKIPPED``."""
    return token_for(test_name, "SKIPPED")


#: How every failure line starts (``FAIL: <TOKEN>: <message>``).
FAIL_PREFIX = "FAIL: "


def fail_line(token: str, message: str) -> str:
    """``FAIL: <TOKEN>: <message>``: the first line of every failure, what CI greps (the old harness's form)."""
    return f"{FAIL_PREFIX}{token}: {message}"


def bad_field_token(name: str) -> str:
    """``"virtio-net"`` -> ``VIRTIO_NET_BAD_FIELD``: a marker of that check (or host topic) lacks a field a test
    reads, or carries one that is empty, not a number, out of range, or not the value the test requires."""
    return token_for(name, "BAD_FIELD")


def missing_host_token(topic: str) -> str:
    """``"VIRTIO_BLK_RESIZE"`` -> ``MISSING_HOST_VIRTIO_BLK_RESIZE``: the host never recorded that action."""
    return f"MISSING_HOST_{name_token(topic)}"


def host_status_token(topic: str, status: str) -> str:
    """``("VIRTIO_NET_LINK_FLAP", "FAIL")`` -> ``VIRTIO_NET_LINK_FLAP_FAIL``: the host recorded another outcome
    than the one a test requires (the status the host recorded, so CI sees what happened)."""
    return f"{name_token(topic)}_{name_token(status)}"


class AeroError(Exception):
    """Base of every error the plugin raises on purpose.

    ``str()`` is ``FAIL: <TOKEN>: <message>`` followed by ``\\nfix: <fix>`` when a fix is known, so the
    first line is what the original harness printed and what CI greps for.
    """

    token: str
    message: str
    fix: str | None

    def __init__(self, token: str, message: str, fix: str | None = None) -> None:
        super().__init__(token, message, fix)
        self.token = token
        self.message = message
        self.fix = fix

    def headline(self) -> str:
        """``FAIL: TOKEN: message`` without the fix and any context."""
        return fail_line(self.token, self.message)

    def __str__(self) -> str:
        text = self.headline()
        if self.fix:
            text += f"\nfix: {self.fix}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token={self.token!r}, message={self.message!r}, fix={self.fix!r})"


class AeroConfigError(AeroError):
    """The run cannot start: a bad option or input (exit-code 2 semantics). Default token CONFIG_ERROR."""

    def __init__(self, message: str, fix: str | None = None, token: str = CONFIG_ERROR) -> None:
        super().__init__(token, message, fix)


class AeroFailure(AeroError):
    """A verdict: the guest or QEMU did not do what a test needs.

    ``serial_tail`` (the last serial lines) and ``artifacts`` (name -> path, e.g. ``{"serial": ...}``) are
    rendered after the message, so a report shows what the guest last said and where the full logs are.
    """

    serial_tail: list[str]
    artifacts: dict[str, Path]
    explaining: list[str]

    def __init__(
        self,
        token: str,
        message: str,
        fix: str | None = None,
        serial_tail: Sequence[str] | None = None,
        artifacts: Mapping[str, Path] | None = None,
        explaining: Sequence[str] | None = None,
    ) -> None:
        super().__init__(token, message, fix)
        self.serial_tail = list(serial_tail or ())
        self.artifacts = dict(artifacts or {})
        #: Serial lines that explain how the guest ended (a kernel panic, an oops, a power down), with their
        #: line numbers: they are often far above the tail (a panic's stack trace fills the last lines).
        self.explaining = list(explaining or ())

    def with_context(
        self,
        serial_tail: Sequence[str] | None = None,
        artifacts: Mapping[str, Path] | None = None,
        explaining: Sequence[str] | None = None,
    ) -> AeroFailure:
        """A copy of this failure (same class) with the given tail/artifacts filled in where still empty."""
        clone = type(self).__new__(type(self))
        AeroFailure.__init__(
            clone,
            self.token,
            self.message,
            self.fix,
            serial_tail=self.serial_tail or list(serial_tail or ()),
            artifacts={**dict(artifacts or {}), **self.artifacts},
            explaining=self.explaining or list(explaining or ()),
        )
        return clone

    def __str__(self) -> str:
        text = super().__str__()
        if self.explaining:
            text += "\nserial lines that explain the end:\n" + "\n".join(f"  ! {line}" for line in self.explaining)
        if self.serial_tail:
            text += f"\nlast {len(self.serial_tail)} serial lines:\n" + "\n".join(
                f"  | {line}" for line in self.serial_tail
            )
        if self.artifacts:
            text += "\nartifacts:\n" + "\n".join(f"  {name}: {path}" for name, path in sorted(self.artifacts.items()))
        return text


class RunInterrupted(BaseException):
    """Raised on the test's thread by the plugin's SIGTERM handler: the run is being ended from outside.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` in a test or a helper swallows it;
    unlike KeyboardInterrupt, pytest reports the test it interrupts (as ``FAIL: INTERRUPTED: ...``) and
    then stops the run cleanly, so the JUnit file and the summary are written.
    """

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame
        self.why = f"{signame} received (the run is being cancelled, e.g. a CI job timed out or was stopped)"
        self.fix = (
            "nothing to fix in the test: the VMs were stopped and the run ended early; raise the CI job's time "
            "limit if it was hit"
        )

    def failure(self, where: str) -> AeroError:
        """The report of the test this interrupted, ``where`` saying what it was doing."""
        return AeroError(INTERRUPTED, f"{self.why} during {where}", self.fix)


class EvidenceMissing(Exception):
    """A replayed run (``--vm-replay``) did not record what a check needs (an HTTP log, QMP, the WAV): the test
    is skipped with this reason, never failed - nothing was observed, so nothing can be judged."""
