"""From the pytest run's reports to the old harness's last line and exit code (pure).

The old harness stopped at the first thing that went wrong while it read the guest's output, so its one
``FAIL: <TOKEN>: <message>`` line named the earliest failure *in the order the guest prints* (blk, input,
snd, net, then RESULT). A pytest run reports every failing test; :func:`decide` picks the one the old
harness would have stopped at and maps its token to the old exit code with
:func:`pytest_aero_virtio.requirements.exit_code`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .. import requirements
from ..checks import CATALOG
from ..errors import (
    CONFIG_ERROR,
    IMAGE_INVALID,
    IMAGE_UNREADABLE,
    PORT_IN_USE,
    QEMU_NOT_FOUND,
    QEMU_PCI_PREFLIGHT_FAILED,
    SELFTEST_FAILED,
    UDP_PORT_MISMATCH,
    VM_BOOT_FAILED,
    AeroConfigError,
    AeroFailure,
    fail_line,
    failed_token,
    missing_token,
    skipped_token,
    token_for,
)
from .table import RESULT_TEST

PASS_LINE = "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS"
#: Exit code of an interrupted run (Ctrl-C), as for any command a shell stops with SIGINT.
INTERRUPTED_CODE = 130

_FAIL_LINE = re.compile(r"^FAIL: ([A-Z][A-Z0-9_]*): (.*)$", re.MULTILINE)
#: Tokens of a run that could not start: exit code 2, like the old harness's configuration errors.
_CONFIG_TOKENS = frozenset({CONFIG_ERROR, QEMU_NOT_FOUND, IMAGE_UNREADABLE, IMAGE_INVALID, PORT_IN_USE})
#: Failures that happen before the guest prints anything, and the CONFIG line that comes first.
_BEFORE_GUEST = _CONFIG_TOKENS | {QEMU_PCI_PREFLIGHT_FAILED, VM_BOOT_FAILED}
_GUEST_POSITION = {name: i for i, name in enumerate(CATALOG)}
_FIRST_CHECK = 2  # rank of the first guest check: 0 before the guest runs, 1 its CONFIG line
_RESULT_RANK = _FIRST_CHECK + len(CATALOG) + 1
_PYTEST_INTERNAL_ERROR = 3  # pytest.ExitCode values; plain ints keep this module free of pytest
_PYTEST_USAGE_ERROR = 4


@dataclass
class ItemRecord:
    """One selected test as the run saw it (``key`` is ``<file>::<test>`` relative to ``vmm_flows``)."""

    key: str
    index: int
    checks: tuple[str, ...] = ()
    outcome: str = "passed"  # passed | failed | skipped (worst phase wins)
    text: str = ""  # the failing phase's report text
    crash: str = ""  # its one-line summary (``AssertionError: ...``)
    skip_reason: str = ""
    serial_log: str | None = None


@dataclass
class SessionFacts:
    """What the run as a whole said, beyond the tests' reports."""

    pytest_code: int = 0
    usage_error: str | None = None
    collect_errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Failure:
    token: str
    message: str
    rank: int
    index: int

    @property
    def line(self) -> str:
        return fail_line(self.token, self.message)


@dataclass(frozen=True)
class Verdict:
    """The exit code and the last line to print (None: print no verdict line, as for a dry run)."""

    code: int
    line: str | None


def exit_code_for(token: str, message: str = "") -> int:
    """The old harness's exit code for a failure token (``requirements.exit_code``)."""
    if token in _CONFIG_TOKENS:
        return requirements.exit_code(AeroConfigError(message, token=token))
    return requirements.exit_code(AeroFailure(token, message))


def split_fail(text: str) -> tuple[str, str] | None:
    """``(token, message)`` of the first ``FAIL: <TOKEN>: <message>`` line in ``text``, or None."""
    found = _FAIL_LINE.search(text)
    return (found.group(1), found.group(2).strip()) if found else None


def guest_rank(token: str, checks: Iterable[str], key: str) -> int:
    """Where in the guest's output a failure happened: before the guest ran, its CONFIG line, the position
    of the check the token names (or the test's first check), or RESULT."""
    if key == RESULT_TEST or token == SELFTEST_FAILED:
        return _RESULT_RANK
    if token in _BEFORE_GUEST:
        return 0
    if token == UDP_PORT_MISMATCH:
        return 1
    for name, position in _GUEST_POSITION.items():
        if token in (missing_token(name), failed_token(name), skipped_token(name)):
            return _FIRST_CHECK + position
    positions = [_GUEST_POSITION.get(c, len(CATALOG)) for c in checks]
    return _FIRST_CHECK + min(positions) if positions else 0


def _own_token(rec: ItemRecord, suffix: str) -> str:
    """``<FIRST_CHECK>_<suffix>``, or ``<TEST_NAME>_<suffix>`` (without ``test_``) for a test with no check."""
    return token_for(rec.checks[0] if rec.checks else rec.key.split("::")[-1].removeprefix("test_"), suffix)


def failure_of(rec: ItemRecord, required: Iterable[str], skip_tokens: Mapping[str, str]) -> Failure | None:
    """The test's failure as the old harness would have printed it, or None.

    A failure whose text starts with the plugin's ``FAIL: <TOKEN>:`` keeps it; a plain assertion gets the
    token of the test's first check (``VIRTIO_BLK_MSIX_FAILED``). A *required* test that was skipped fails
    too - the old harness failed a requirement that did not run.
    """
    if rec.outcome == "failed":
        found = split_fail(rec.text)
        if found is None:
            detail = rec.crash.splitlines()[0] if rec.crash else "failed"
            found = (_own_token(rec, "FAILED"), f"{rec.key}: {detail}")
    elif rec.outcome == "skipped" and rec.key in set(required):
        token = skip_tokens.get(rec.key) or _own_token(rec, "SKIPPED")
        found = (token, f"{rec.key} was required but skipped: {rec.skip_reason or 'no reason given'}")
    else:
        return None
    token, message = found
    return Failure(token, message, guest_rank(token, rec.checks, rec.key), rec.index)


def _config(message: str) -> Verdict:
    return Verdict(2, fail_line(CONFIG_ERROR, message))


def decide(
    records: Iterable[ItemRecord],
    facts: SessionFacts,
    required: Iterable[str] = (),
    skip_tokens: Mapping[str, str] | None = None,
) -> Verdict:
    """The run's verdict: the earliest failure in guest order, else PASS when the RESULT test passed."""
    if facts.interrupted:
        return Verdict(INTERRUPTED_CODE, None)
    if facts.usage_error is not None:
        token, message = split_fail(facts.usage_error) or (CONFIG_ERROR, facts.usage_error.strip().splitlines()[0])
        return Verdict(exit_code_for(token, message), fail_line(token, message))
    if facts.collect_errors:
        return _config(f"pytest could not collect the tests: {facts.collect_errors[0]}")
    if facts.pytest_code in (_PYTEST_USAGE_ERROR, _PYTEST_INTERNAL_ERROR):
        what = "refused its command line" if facts.pytest_code == _PYTEST_USAGE_ERROR else "failed internally"
        return _config(f"pytest {what} (exit code {facts.pytest_code}): see its message above")
    if facts.dry_run:
        return Verdict(0 if facts.pytest_code == 0 else 2, None)
    recs = list(records)
    wanted = list(required)
    failures = [f for f in (failure_of(r, wanted, skip_tokens or {}) for r in recs) if f is not None]
    if failures:
        first = min(failures, key=lambda f: (f.rank, f.index))
        return Verdict(exit_code_for(first.token, first.message), first.line)
    if not any(r.key == RESULT_TEST and r.outcome == "passed" for r in recs):
        return _config(
            f"no test checked the guest's RESULT line ({RESULT_TEST} did not run; pytest exit code {facts.pytest_code})"
        )
    return Verdict(0, PASS_LINE)
