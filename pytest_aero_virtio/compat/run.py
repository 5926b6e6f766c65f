"""The pytest run behind the compatibility command, in this process, and what is read back from it.

In-process (``pytest.main(args, plugins=[CompatPlugin(...)])``) rather than a child ``python -m pytest``:
the plugin object sees every report as a Python object - outcome, failure text, skip reason, JUnit user
properties, the test's ``aero_check`` names - so nothing is parsed back out of terminal output or XML, and
a plugin usage error (a missing image, no QEMU) is caught with its token. Ctrl-C and SIGTERM reach pytest
and the QEMU processes exactly as in a plain pytest run.

The plugin also applies the selection: it puts :data:`~.table.REQUIRED_MARKER` on the tests the
requirement flags asked for, so ``-m "not aero_opt_in or aero_compat_required"`` selects the old default set
plus those tests.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..testing import checks_of
from .outcome import ItemRecord, SessionFacts
from .table import REQUIRED_MARKER, RESULT_TEST

PROG = "aero-virtio-win7-tests"


def item_key(item: pytest.Item) -> str:
    """``<file>::<test>`` relative to ``vmm_flows``: the table's test names, whatever the rootdir is."""
    return f"{item.path.name}::{item.name}"


@dataclass
class CompatPlugin:
    """Selection and bookkeeping for one compatibility run (registered with ``pytest.main(plugins=...)``)."""

    required: Sequence[str] = ()
    records: dict[str, ItemRecord] = field(default_factory=dict)
    facts: SessionFacts = field(default_factory=SessionFacts)

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", f"{REQUIRED_MARKER}: asked for by a requirement flag of {PROG}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        found: set[str] = set()
        for item in items:
            if item_key(item) in self.required:
                item.add_marker(REQUIRED_MARKER)
                found.add(item_key(item))
        missing = [key for key in self.required if key not in found]
        if missing and not self.facts.collect_errors:
            self.facts.usage_error = (
                f"the compatibility table names tests vmm_flows does not have: {', '.join(missing)} "
                "(a stale table in pytest_aero_virtio/compat/table.py)"
            )
            raise pytest.UsageError(self.facts.usage_error)

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_finish(self, session: pytest.Session) -> Generator[None, None, None]:
        try:
            yield
        except pytest.UsageError as exc:
            self.facts.usage_error = str(exc)
            raise
        for index, item in enumerate(session.items):
            self.records[item.nodeid] = ItemRecord(
                key=item_key(item), index=index, checks=checks_of(item), outcome="notrun"
            )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            lines = [line for line in str(report.longreprtext).splitlines() if line.strip()]
            self.facts.collect_errors.append(f"{report.nodeid}: {lines[-1] if lines else 'collection failed'}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = self.records.get(report.nodeid)
        if rec is None:
            return
        for key, value in report.user_properties:
            if key == "serial_log" and rec.serial_log is None:
                rec.serial_log = str(value)
        if report.when == "call" and report.passed and rec.outcome == "notrun":
            rec.outcome = "passed"
        elif report.failed and rec.outcome != "failed":
            rec.outcome = "failed"
            rec.text = report.longreprtext
            crash = getattr(report.longrepr, "reprcrash", None)
            rec.crash = str(getattr(crash, "message", "") or "")
        elif report.skipped and rec.outcome in ("notrun", "passed"):
            rec.outcome = "skipped"
            rec.skip_reason = _skip_reason(report.longrepr)

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.facts.interrupted = True


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def run_pytest(args: Sequence[str], plugin: CompatPlugin) -> int:
    """Run pytest in this process with ``plugin``; returns pytest's exit code (also kept in plugin.facts)."""
    code = int(pytest.main(list(args), plugins=[plugin]))
    plugin.facts.pytest_code = code
    return code


# -- artifacts -------------------------------------------------------------------------------------------------


def list_dirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def vm_dirs(records: Sequence[ItemRecord], root: Path, before: set[Path]) -> list[Path]:
    """This run's VM artifact directories, the one that checked RESULT first, then in run order.

    The tests' ``serial_log`` JUnit property names the VMs that booted; a VM that failed to boot has no such
    property, so directories that appeared under the artifacts root during the run are added after them.
    """
    ordered = sorted(records, key=lambda r: (r.key != RESULT_TEST, r.index))
    out: list[Path] = []
    for rec in ordered:
        if rec.serial_log is not None:
            d = Path(rec.serial_log).parent
            if d not in out:
                out.append(d)
    out.extend(sorted(d for d in list_dirs(root) - before if d not in out))
    return out


def host_marker_lines(dirs: Sequence[Path]) -> list[str]:
    """The ``AERO_VIRTIO_WIN7_HOST|...`` lines each VM recorded, VM by VM."""
    lines: list[str] = []
    for d in dirs:
        path = d / "host-markers.log"
        if path.is_file():
            lines.extend(line for line in path.read_text(errors="replace").splitlines() if line.strip())
    return lines


def sibling(dest: Path, n: int) -> Path:
    """Where the ``n``-th further VM's copy goes: ``<stem>.vm<n><suffix>`` beside ``dest``."""
    return dest.with_name(f"{dest.stem}.vm{n}{dest.suffix}")


def stale_siblings(dest: Path) -> list[Path]:
    """Copies an earlier run left beside ``dest`` (this run may have fewer VMs)."""
    pattern = re.compile(rf"{re.escape(dest.stem)}\.vm\d+{re.escape(dest.suffix)}")
    if not dest.parent.is_dir():
        return []
    return [p for p in dest.parent.glob(f"{dest.stem}.vm*") if pattern.fullmatch(p.name)]


def copy_artifact(dirs: Sequence[Path], artifact: str, dest: Path) -> list[tuple[Path, Path]]:
    """Copy ``artifact`` of the first VM that has it to ``dest`` and each further VM's beside it (see
    :func:`sibling`); returns (source, destination) pairs."""
    sources = [d / artifact for d in dirs if (d / artifact).is_file()]
    done: list[tuple[Path, Path]] = []
    for i, src in enumerate(sources):
        target = dest if i == 0 else sibling(dest, i)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        done.append((src, target))
    return done
