"""The pytest hooks that let a person see what happened: progress, screenshots, kept VMs, JUnit and HTML.

One plugin object, registered by :mod:`pytest_aero_virtio.plugin` at configure time with the stash keys it
uses to find a test's VM, so this module needs nothing else from the plugin and the plugin stays a list of
hooks. What each hook does:

* ``pytest_runtestloop`` starts and stops the progress ticker (:mod:`.progress`) where tests run;
* ``pytest_runtest_makereport``: a failed test gets its screenshot (taken while QEMU still runs) and, with
  ``--vm-keep-on-failure``, marks its VM to be kept; every test's teardown report carries its evidence (the
  serial tail and the attachments for JUnit, the HTML block for pytest-html), which xdist carries to the
  controller with the report;
* ``pytest_exception_interact`` (``--pdb``): how to reach the VM, printed before pdb starts;
* ``pytest_runtest_logreport`` and ``pytest_sessionfinish``: the JUnit ``system-out`` per test and the suite
  properties, written by the process that writes the XML (the xdist controller, or the only process).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from .._pytest_internals import junit_case, junit_case_output, junit_suite_property, junit_xml, terminal_fd
from ..checks import lookup
from ..errors import FAIL_PREFIX, AeroError
from ..plan import PlannedVm
from ..qemu.lifecycle import Runstate
from ..qemu.process import read_tail
from ..run import AeroRun
from ..testing import checks_of
from ..vm import VmHandle
from .attach import KeepRequest, announce
from .html import RowEvidence, row_extras
from .junit import SERIAL_TAIL_LINES, suite_properties, system_out
from .progress import InPlace, ProgressTicker
from .screens import screen_path

__all__ = ["ObservePlugin"]

LOG = logging.getLogger(__name__)


def _headline(report: pytest.TestReport) -> str:
    """The line a person needs first: ``FAIL: TOKEN: ...``, the assertion (``E ...``), or the last line."""
    lines = [line.strip() for line in report.longreprtext.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(FAIL_PREFIX):
            return line
    errors = [line.removeprefix("E").strip() for line in lines if line.startswith("E ")]
    return errors[0] if errors else (lines[-1] if lines else report.outcome)


class ObservePlugin:
    """The hooks of issue 8's observability (see the module docstring)."""

    def __init__(
        self, config: pytest.Config, run_key: pytest.StashKey[AeroRun], vm_key: pytest.StashKey[PlannedVm]
    ) -> None:
        self._config = config
        self._run_key = run_key
        self._vm_key = vm_key
        self._ticker: ProgressTicker | None = None
        self._saw_vm_reports = False

    def _handle(self, item: pytest.Item) -> VmHandle | None:
        run = item.config.stash.get(self._run_key, None)
        planned = item.stash.get(self._vm_key, None)
        if run is None or planned is None or run.started_pool is None:
            return None
        handle = run.started_pool.handle(planned)
        return handle if isinstance(handle, VmHandle) else None  # a replay has no live VM to observe

    # -- progress ---------------------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        run = session.config.stash.get(self._run_key, None)
        if run is not None and not run.settings.options.dry_run:
            self._ticker = self._make_ticker(session.config, run)
            self._ticker.start()
        try:
            return (yield)
        finally:
            if self._ticker is not None:
                self._ticker.stop()

    def _make_ticker(self, config: pytest.Config, run: AeroRun) -> ProgressTicker:
        def handles() -> list[VmHandle]:
            booted = run.started_pool.booted if run.started_pool is not None else []
            return [h for h in booted if isinstance(h, VmHandle)]

        if "PYTEST_XDIST_WORKER" in os.environ or config.pluginmanager.get_plugin("terminalreporter") is None:
            return ProgressTicker(handles, config.get_verbosity(), run.say)  # pytest's line is not ours to read
        tw = config.get_terminal_writer()
        column = lambda: tw.width_of_current_line  # noqa: E731
        in_place = self._in_place(config, run, lambda: tw.fullwidth, column)
        return ProgressTicker(handles, config.get_verbosity(), run.say, in_place, column)

    @staticmethod
    def _in_place(
        config: pytest.Config, run: AeroRun, width: Callable[[], int], column: Callable[[], int]
    ) -> InPlace | None:
        """A status redrawn in place, only where nothing else writes to the terminal while tests run (the
        caller has already ruled out an xdist worker and a run without pytest's terminal reporter)."""
        quiet_terminal = (
            config.getoption("capture") != "no"
            and not run.settings.options.follow_serial
            and not config.getoption("log_cli_level")
            and not config.getini("log_cli")
        )
        if not quiet_terminal:
            return None
        fd = terminal_fd(config)
        if not os.isatty(fd):
            os.close(fd)
            return None
        return InPlace(fd, width, column)

    def _erase(self) -> None:
        if self._ticker is not None:
            self._ticker.erase()

    def _say(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """``say``, erasing the in-place status first (a banner must not be drawn over it)."""

        def write(line: str) -> None:
            self._erase()
            say(line)

        return write

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self) -> None:
        self._erase()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logfinish(self) -> None:
        self._erase()

    # -- screenshots, kept VMs, evidence ------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report: pytest.TestReport = yield
        handle = self._handle(item)
        if handle is not None:
            try:
                self._observe(item, report, handle)
            except Exception:  # evidence must never change a test's outcome
                LOG.exception("aero-virtio: collecting the evidence of %s failed", item.nodeid)
        return report

    def _observe(self, item: pytest.Item, report: pytest.TestReport, handle: VmHandle) -> None:
        if report.failed and report.when in ("setup", "call"):
            shot = handle.failure_screenshot(item.name)
            if shot is not None and str(shot) not in report.longreprtext:
                report.sections.append(("aero-virtio screenshot", str(shot)))
            run = item.config.stash[self._run_key]
            if run.settings.keep_on_failure and handle.keep is None and run.say is not None:
                handle.keep = KeepRequest(item.nodeid, _headline(report), self._say(run.say))
        if report.when == "teardown":
            self._evidence(item, report, handle)

    def _evidence(self, item: pytest.Item, report: pytest.TestReport, handle: VmHandle) -> None:
        """The test's evidence on its teardown report: JUnit (``report.aero``) and HTML (``report.extras``)."""
        stopped = handle.session.state is Runstate.STOPPED
        own = screen_path(handle.artifacts, f"fail-{item.name}")
        end = screen_path(handle.artifacts, "end")
        shots = [(f"{handle.planned.id}: screen when {item.name} failed", own)] if own.exists() else []
        if stopped and end.exists():
            shots.append((f"{handle.planned.id}: last screen of the VM", end))
        marker = item.get_closest_marker("aero_check")
        snd = any(lookup(n).snd for n in checks_of(item))
        wav = handle.wav_path if snd and handle.wav_path is not None and handle.wav_path.exists() else None
        tail = read_tail(handle.artifacts.serial, SERIAL_TAIL_LINES, max_bytes=1 << 16)
        files = [handle.artifacts.serial, *(p for _, p in shots), *([wav] if wav is not None else [])]
        report.aero = {"vm": handle.planned.id, "tail": tail, "attachments": [str(p) for p in files]}  # type: ignore[attr-defined]
        if item.config.getoption("htmlpath", None):
            wav_plot = wav if wav is not None and (stopped or _wants_wav(marker)) else None
            timeline = handle.artifacts.file("timeline.jsonl") if stopped else None
            ev = RowEvidence(handle.planned.id, tail, shots, wav_plot, timeline)
            report.extras = [*getattr(report, "extras", []), *row_extras(ev)]  # type: ignore[attr-defined]

    @pytest.hookimpl(tryfirst=True)
    def pytest_exception_interact(self, node: pytest.Item, call: Any, report: Any) -> None:
        """``--pdb``: the failing test's VM stays up while pdb runs; say how to reach it before pdb starts."""
        if not node.config.getoption("usepdb", False) or not isinstance(node, pytest.Item):
            return
        handle = self._handle(node)
        run = node.config.stash.get(self._run_key, None)
        if handle is not None and run is not None and run.say is not None and announce(handle, self._say(run.say)):
            run.say("aero-virtio: the VM stays up while pdb runs; it is stopped as usual once the test ends")

    def pytest_enter_pdb(self) -> None:
        if self._ticker is not None:
            self._ticker.pause(True)

    def pytest_leave_pdb(self) -> None:
        if self._ticker is not None:
            self._ticker.pause(False)

    # -- JUnit ------------------------------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """After pytest's JUnit writer closed the test case (trylast): add the system-out."""
        self._erase()
        data = getattr(report, "aero", None)
        if not isinstance(data, dict) or report.when != "teardown":
            return
        self._saw_vm_reports = True
        logxml = junit_xml(self._config)
        case = junit_case(logxml, report) if logxml is not None else None
        if case is not None:
            base = self._config.invocation_params.dir
            junit_case_output(case, system_out(data["vm"], data["tail"], map(Path, data["attachments"]), base))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Suite properties, before pytest writes the XML (tryfirst), by the process that writes it."""
        config = session.config
        logxml = junit_xml(config)
        run = config.stash.get(self._run_key, None)
        if logxml is None or hasattr(config, "workerinput") or not (self._saw_vm_reports or run is not None):
            return
        try:
            from ..settings import settings_from_config

            run = run if run is not None else AeroRun(settings_from_config(config))
            for name, value in suite_properties(run):
                junit_suite_property(logxml, name, value)
        except (AeroError, OSError) as exc:
            LOG.warning("aero-virtio: no JUnit suite properties: %s", exc)


def _wants_wav(marker: Any) -> bool:
    return marker is not None and marker.kwargs.get("audio") == "wav"
