"""``aero-virtio-win7-tests``: the old ``invoke_aero_virtio_win7_tests.py`` command line on top of pytest.

The options come from :data:`.table.OLD_OPTIONS` (argparse is generated from it); :func:`translate` turns
the parsed options into the pytest run (pure); :func:`main` runs it and prints what the old harness
printed: the ``AERO_VIRTIO_WIN7_HOST|...`` lines and, last, ``PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS`` or
``FAIL: <TOKEN>: <message>``, with the old exit codes (0 pass, 1 failed requirement, 2 timeout or
configuration, 3 QEMU exited before RESULT, 4 WAV check).

Unknown options are refused. The old harness passed them on to QEMU; here QEMU arguments go after ``--``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..errors import AeroConfigError
from . import flows
from .outcome import Verdict, decide
from .run import (
    PROG,
    CompatPlugin,
    copy_artifact,
    host_marker_lines,
    list_dirs,
    run_pytest,
    stale_siblings,
    vm_dirs,
)
from .table import BASE_EXPRESSION, OLD_OPTIONS, PYTEST_OPTION, REQUIRED_MARKER, OldOption, mapping_text

_EPILOG = (
    "QEMU arguments go after `--` (the old harness passed unknown options to QEMU; this one refuses them). "
    "Every option and its pytest equivalent: docs/migration.md."
)


class CompatUsageError(Exception):
    """A command line this command cannot run; printed as an argparse error (exit code 2)."""


class _Refuse(argparse.Action):
    """An old option that cannot be honoured: using it is an error naming the reason and the pytest way."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string} is {self.help}")


def dest(row: OldOption) -> str:
    return row.name.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """The old harness's options, generated from the table (``allow_abbrev=False``, as the old one)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        epilog=_EPILOG,
        description="Run the aero virtio selftest suites with the old harness's "
        "options (a front end to pytest and pytest-aero-virtio).",
    )
    for row in OLD_OPTIONS:
        kw: dict[str, Any] = {"dest": dest(row), "help": f"{mapping_text(row)}: {row.note}"}
        if row.kind == "refuse":
            kw.update(
                action=_Refuse,
                nargs=None if row.takes_value else 0,
                metavar=row.metavar,
                help=f"not supported: {row.note}",
            )
        elif row.kind in ("flag", "select"):
            kw.update(action="store_true", default=False)
        elif row.kind == "choice":
            kw.update(choices=sorted(row.choices or {}), default=None)
        else:
            kw.update(default=None, metavar=row.metavar, type=int if row.integer else str)
        parser.add_argument(*row.flags, **kw)
    return parser


@dataclass(frozen=True)
class Translation:
    """The pytest run an old command line asks for."""

    options: tuple[str, ...]  # plugin options, in table order, then the QEMU arguments
    required: tuple[str, ...]  # tests (``<file>::<test>`` in vmm_flows) the requirement flags asked for
    copies: tuple[tuple[str, Path], ...]  # (artifact file name, destination)
    skip_tokens: dict[str, str]
    artifacts: Path
    dry_run: bool


def _row_args(row: OldOption, value: Any) -> list[str]:
    if row.kind == "value" and (value is not None or row.default is not None):
        return [arg.render(str(value if value is not None else row.default)) for arg in row.args]
    if row.kind == "flag" and value:
        return [arg.render() for arg in row.args]
    return []


def _check_conflicts(emitted: Sequence[tuple[str, str]]) -> None:
    """Two old options that set one plugin option to different values (``--force-intx`` with
    ``--virtio-msix-vectors 4``) is an error, as it was in the old harness."""
    seen: dict[str, tuple[str, str]] = {}
    for old, arg in emitted:
        option = arg.split("=", 1)[0]
        if option in seen and seen[option][1] != arg:
            raise CompatUsageError(f"{seen[option][0]} and {old} contradict each other ({seen[option][1]} vs {arg})")
        seen[option] = (old, arg)


def translate(ns: argparse.Namespace, qemu_args: Sequence[str] = ()) -> Translation:
    """The pytest run for parsed old options (pure): plugin options, required tests, files to copy."""
    emitted: list[tuple[str, str]] = []
    required: list[str] = []
    copies: list[tuple[str, Path]] = []
    skip_tokens: dict[str, str] = {}
    for row in OLD_OPTIONS:
        value = getattr(ns, dest(row), None)
        emitted.extend((row.name, arg) for arg in _row_args(row, value))
        given = value not in (None, False)
        tests = row.selected(value if row.kind == "choice" else None) if given else ()
        required.extend(t for t in tests if t not in required)
        if row.skip_token and given:
            skip_tokens.update(dict.fromkeys(tests, row.skip_token))
        if row.kind == "copy" and (given or row.default is not None):
            assert row.artifact is not None
            copies.append((row.artifact, Path(str(value or row.default)).expanduser().absolute()))
    _check_conflicts(emitted)
    serial = next(path for artifact, path in copies if artifact == "serial.log")
    artifacts = serial.parent / "aero-artifacts"
    options = [arg for _, arg in emitted]
    options.append(f"{PYTEST_OPTION['artifacts']}={artifacts}")
    options.extend(f"{PYTEST_OPTION['qemu_arg']}={a}" for a in qemu_args)
    dry_run = PYTEST_OPTION["dry_run"] in options
    return Translation(tuple(options), tuple(required), tuple(copies), skip_tokens, artifacts, dry_run)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse an old command line; QEMU arguments after ``--``. Errors exit 2 with argparse's message."""
    args = list(argv)
    qemu = args[args.index("--") + 1 :] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    parser = build_parser()
    ns, unknown = parser.parse_known_args(own)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (the old harness passed unknown arguments to QEMU: "
            "put QEMU arguments after `--`; a guest selftest flag goes to pytest as --vm-guest-arg)"
        )
    return ns, qemu


def pytest_args(flows_dir: Path, tr: Translation) -> list[str]:
    """The pytest command line: the suites, the old default set plus the required tests, isolated from any
    pytest configuration of the current directory (``-c`` the null device, ``rootdir`` and ``confcutdir`` at
    the suites), no cache written into the installed package, and in this one process: xdist workers would
    neither see the selection plugin nor send back their collection."""
    return [
        str(flows_dir),
        "-m",
        BASE_EXPRESSION,
        "-c",
        os.devnull,
        "--rootdir",
        str(flows_dir.parent),
        "--confcutdir",
        str(flows_dir),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-rfEs",
        "--tb=short",
        *tr.options,
    ]


def prepare_copies(tr: Translation) -> None:
    """Like the old harness: a stale file from an earlier run must not pass for this run's log."""
    for _, path in tr.copies:
        if path.is_dir():
            raise CompatUsageError(f"{path} is a directory; pass a file path")
        for old in [path, *stale_siblings(path)]:
            old.unlink(missing_ok=True)


def _say(text: str) -> None:
    print(f"{PROG}: {text}", flush=True)


def _report(plugin: CompatPlugin, tr: Translation, before: set[Path]) -> None:
    records = sorted(plugin.records.values(), key=lambda r: r.index)
    dirs = vm_dirs(records, tr.artifacts, before)
    for line in host_marker_lines(dirs):
        print(line)
    for artifact, dest_path in tr.copies:
        done = copy_artifact(dirs, artifact, dest_path)
        if not done and not tr.dry_run:
            _say(f"no VM wrote {artifact}, so {dest_path} was not written")
        for src, target in done:
            _say(f"{artifact} of {src.parent.name} -> {target}")


def _finish(verdict: Verdict) -> int:
    sys.stdout.flush()
    if verdict.line is not None:
        print(verdict.line, file=sys.stdout if verdict.code == 0 else sys.stderr, flush=True)
    return verdict.code


def _usage_error(message: str) -> NoReturn:
    build_parser().error(message)


def main(argv: Sequence[str] | None = None) -> int:
    ns, qemu = parse(sys.argv[1:] if argv is None else argv)
    try:
        tr = translate(ns, qemu)
        prepare_copies(tr)
        suites = flows.flows_dir()
    except CompatUsageError as exc:
        _usage_error(str(exc))
    except AeroConfigError as exc:
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return _finish(Verdict(2, exc.headline()))
    args = pytest_args(suites, tr)
    _say("pytest " + shlex.join(args))
    if tr.required:
        _say(f"required ({REQUIRED_MARKER}): " + ", ".join(tr.required))
    before = list_dirs(tr.artifacts)
    plugin = CompatPlugin(required=tr.required)
    run_pytest(args, plugin)
    plugin.facts.dry_run = tr.dry_run
    _report(plugin, tr, before)
    return _finish(decide(plugin.records.values(), plugin.facts, tr.required, tr.skip_tokens))
