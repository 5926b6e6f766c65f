"""Verdicts: from a check's final marker (or its absence) to pass, or a failure with the protocol's token.

Pure. The rules (docs/protocol.md):

* a required check passes only with PASS (informational checks: INFO or PASS);
* SKIP fails with ``<TEST>_SKIPPED``, FAIL with ``<TEST>_FAILED``, absence with ``MISSING_<TEST>`` - each
  with its own token, so CI can tell "the guest was not provisioned" from "the driver is broken";
* ``RESULT|PASS`` alone is not a pass: every required per-test marker must be there too, so an old guest
  binary that prints only a RESULT line cannot pass by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from .checks import GuestCheck, lookup
from .errors import (
    NO_SERIAL_OUTPUT,
    QEMU_EXITED,
    QEMU_PCI_PREFLIGHT_FAILED,
    SELFTEST_FAILED,
    TIMEOUT,
    UDP_PORT_MISMATCH,
    VIRTIO_SND_FORCE_NULL_BACKEND,
    VM_BOOT_FAILED,
    WAV_CHECK_FAILED,
    AeroConfigError,
    AeroError,
    AeroFailure,
    failed_token,
    missing_token,
    skipped_token,
)
from .markers import Marker

__all__ = [
    "Expect",
    "describe",
    "exit_code",
    "raise_first",
    "require",
    "result_problems",
    "verdict",
]

Expect = Literal["pass", "info"]
CheckLike = GuestCheck | str

_ACCEPTED: dict[str, frozenset[str]] = {
    "pass": frozenset({"PASS"}),
    "info": frozenset({"INFO", "PASS"}),
}


def _check(check: CheckLike) -> GuestCheck:
    return lookup(check) if isinstance(check, str) else check


def describe(marker: Marker) -> str:
    """The interesting part of a marker for a message: bare tokens then ``k=v`` fields."""
    parts = [*marker.tokens, *(f"{k}={v}" for k, v in marker.fields.items())]
    return " ".join(parts)


def _flags_hint(check: GuestCheck) -> str:
    return " ".join(f"--{f}" for f in check.guest_flags)


def verdict(check: CheckLike, marker: Marker | None, expect: Expect | None = None) -> AeroFailure | None:
    """None when ``marker`` satisfies ``check`` (``expect`` defaults to the check's own), else the failure.

    The failure carries no serial tail; the caller adds context (``AeroFailure.with_context``).
    """
    c = _check(check)
    want = expect or c.expect
    name = c.name
    if marker is None:
        return AeroFailure(
            missing_token(name),
            f"the guest printed no final {name} marker",
            fix="an old selftest binary, a missing device, or a guest that stopped early: see the serial log",
        )
    status = (marker.status or "").upper()
    if status in _ACCEPTED[want]:
        return None
    detail = describe(marker)
    if status == "SKIP":
        if "flag_not_set" in marker.tokens and c.opt_in:
            message = f"guest not provisioned with {_flags_hint(c)} ({marker.raw})"
            fix = (
                f"provision the guest with {_flags_hint(c)}: the plugin passes it through fw_cfg "
                "opt/aero/args to guests that read it; a Windows image must have it baked in"
            )
        else:
            message = f"{name} was skipped by the guest{': ' + detail if detail else ''} ({marker.raw})"
            fix = "see why in the marker's reason; the device or feature may be missing from the VM"
        return AeroFailure(skipped_token(name), message, fix=fix)
    if status == "FAIL" and name.startswith("virtio-snd") and "force_null_backend" in marker.raw.lower():
        return AeroFailure(
            VIRTIO_SND_FORCE_NULL_BACKEND,
            f"{name} failed because the driver's ForceNullBackend bring-up toggle is set ({marker.raw})",
            fix="clear HKLM\\SYSTEM\\CurrentControlSet\\Enum\\<DeviceInstancePath>\\Device Parameters\\"
            "Parameters\\ForceNullBackend (set it to 0) in the guest image",
        )
    if status == "FAIL":
        return AeroFailure(
            failed_token(name),
            f"{name} failed in the guest{': ' + detail if detail else ''} ({marker.raw})",
        )
    expected = "/".join(sorted(_ACCEPTED[want]))
    return AeroFailure(
        failed_token(name),
        f"{name} reported {status or 'no status'} where {expected} is required ({marker.raw})",
    )


def require(check: CheckLike, marker: Marker | None, expect: Expect | None = None) -> Marker:
    """:func:`verdict`, raising its failure; returns the marker when it passes."""
    failure = verdict(check, marker, expect)
    if failure is not None:
        raise failure
    assert marker is not None
    return marker


def result_problems(
    result: Marker | None,
    final: Callable[[str], Marker | None],
    required: Iterable[CheckLike],
    seen: Iterable[Marker] = (),
) -> list[AeroFailure]:
    """Every reason the run as a whole did not pass, most decisive first (empty list: it passed).

    ``final(name)`` gives a test's final marker (``MarkerStream.final``); ``required`` are the checks that
    must accompany RESULT|PASS (the base checks plus every opt-in the VM was provisioned for); ``seen`` (the
    stream's markers, optional) lets a RESULT|FAIL name the tests that failed.
    """
    problems: list[AeroFailure] = []
    if result is None:
        problems.append(AeroFailure(TIMEOUT, "the guest printed no RESULT line"))
    elif (result.status or "").upper() != "PASS":
        failed = [m.name for m in seen if m.kind == "TEST" and m.name and (m.status or "").upper() == "FAIL"]
        names = list(dict.fromkeys(failed))
        problems.append(
            AeroFailure(
                SELFTEST_FAILED,
                f"the guest reported {result.raw}" + (f"; failed: {', '.join(names)}" if names else ""),
            )
        )
    for check in required:
        c = _check(check)
        failure = verdict(c, final(c.name), c.expect)
        if failure is not None:
            if result is not None and failure.token == missing_token(c.name):
                failure = AeroFailure(
                    failure.token,
                    f"{result.raw} arrived without a final {c.name} marker",
                    fix="an old selftest binary cannot pass on RESULT alone; use a guest that runs this check",
                )
            problems.append(failure)
    return problems


def raise_first(problems: Sequence[AeroFailure]) -> None:
    """Raise the first of ``problems`` (:func:`result_problems`), its message listing the others too."""
    if problems:
        raise _combine(problems)


def _combine(problems: Sequence[AeroFailure]) -> AeroFailure:
    first = problems[0]
    if len(problems) == 1:
        return first
    more = "; ".join(f"{p.token}: {p.message}" for p in problems[1:])
    return AeroFailure(first.token, f"{first.message} (also: {more})", fix=first.fix)


def exit_code(error: AeroError | None) -> int:
    """The original harness's exit code for an outcome (docs/protocol.md).

    0 pass; 1 a marker or requirement failed; 2 timeout, configuration or preflight error; 3 QEMU exited
    before a RESULT line; 4 the captured WAV failed its check.
    """
    if error is None:
        return 0
    if isinstance(error, AeroConfigError) or error.token in (
        TIMEOUT,
        NO_SERIAL_OUTPUT,  # a guest that never speaks: the old harness's timeout
        VM_BOOT_FAILED,  # a VM that cannot be started: its preflight error
        QEMU_PCI_PREFLIGHT_FAILED,
        UDP_PORT_MISMATCH,
    ):
        return 2
    if error.token == QEMU_EXITED:
        return 3
    if error.token == WAV_CHECK_FAILED:
        return 4
    return 1
