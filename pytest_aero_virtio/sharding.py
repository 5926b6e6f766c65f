"""``--vm-shard=K/N`` and VM durations: the pytest side of :mod:`pytest_aero_virtio.shard`.

``plugin.py`` registers this module as a plugin (its hooks below) and calls :func:`select` right after it
made the plan: the shard's items stay, the others go through ``pytest_deselected``, and the plan shrinks to
this shard's VMs (so the header, the dry run and the xdist groups show only them).

Durations: every VM's boot-to-stop time is recorded in pytest's cache (``aero-virtio/vm-durations``); the
split itself reads only ``--vm-durations=PATH``, a file all runners share, or falls back to estimates. A
runner's own cache is never read for the split: two runners with different caches would split differently,
and tests would run twice or not at all. docs/sharding.md explains the rule to users.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import options as opts
from .config import VmConfig
from .errors import AeroConfigError, AeroError
from .plan import ItemNeeds
from .refenv.cache import file_lock
from .shard import ShardSpec, Split, canonical_key, loose_item_shard, parse_durations, parse_shard, split_plan, vm_key

#: The pytest cache key of the recorded durations: ``{"<str(VmConfig)>": seconds}``.
DURATIONS_KEY = "aero-virtio/vm-durations"
_WORKEROUTPUT_KEY = "aero_shard"

if TYPE_CHECKING:
    from .run import AeroRun


@dataclass
class ShardState:
    """The run's shard option, its durations and, after collection, what this shard kept."""

    spec: ShardSpec | None
    durations: dict[str, float] | None = None
    durations_source: str = "estimates"
    selected: int = 0  # items in the whole selection
    kept: int = 0  # items of this shard
    lines: list[str] = field(default_factory=list)
    from_workers: list[dict[str, Any]] = field(default_factory=list)


_STATE = pytest.StashKey[ShardState]()


def _raw(config: pytest.Config) -> dict[str, Any]:
    return opts.collect(config)


def read_durations(value: str | None) -> tuple[dict[str, float] | None, str]:
    """The ``--vm-durations`` file, validated; (None, "estimates") without one. A named file that is missing
    is an error, not a silent fallback: a typo on one runner would make the runners disagree."""
    if value is None or value == "":
        return None, "estimates"
    path = Path(os.path.expanduser(value))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AeroConfigError(
            f"--vm-durations={value}: no such file",
            fix=f"record one with a full run and copy it: cp .pytest_cache/v/{DURATIONS_KEY} {value} "
            "(see docs/sharding.md), or drop --vm-durations to split by estimates",
        ) from None
    except (OSError, ValueError) as exc:
        raise AeroConfigError(
            f"--vm-durations={value}: cannot read it as JSON ({exc})",
            fix="give a JSON object of VM id -> seconds, as the plugin records it in its pytest cache",
        ) from None
    return parse_durations(data, f"--vm-durations={value}"), str(path)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Validate ``--vm-shard`` and ``--vm-durations`` before anything runs (also in the xdist controller,
    which never collects): a bad value is a usage error naming the option and the accepted form."""
    raw = _raw(config)
    try:
        spec = parse_shard(raw.get("vm_shard"))
        durations, source = read_durations(raw.get("vm_durations"))
    except AeroError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = ShardState(spec=spec, durations=durations, durations_source=source)


def canonical_order(session: pytest.Session) -> dict[str, Any]:
    """Item id -> its canonical sort key (file, definition line, node id), for ``make_plan(canonical=...)``."""
    return {it.nodeid: canonical_key(it.nodeid, it.location[1]) for it in session.items}


def select(session: pytest.Session, run: AeroRun, needs: dict[str, ItemNeeds]) -> None:
    """Called by plugin.py once the (canonical) plan is made: arm the duration recording, and under
    ``--vm-shard`` keep only this shard's items and shrink ``run.plan`` to this shard's VMs."""
    config = session.config
    run.on_vm_stopped = recorder(config)
    state = config.stash.get(_STATE, None)
    if state is None or state.spec is None or run.plan is None:
        return
    split = split_plan(run.plan, needs, state.spec, durations=state.durations, source=state.durations_source)
    keep = set(split.plan.order)
    _keep_only(session, state, lambda it: it.nodeid in keep if it.nodeid in needs else _loose_here(it, state))
    state.lines = header_lines(split, state.kept)
    _tell_controller(config, state)
    run.plan = split.plan


def split_without_vms(session: pytest.Session) -> None:
    """Called by plugin.py when the selection uses no VM: under ``--vm-shard`` the items are still split (by
    a stable hash of their node ids), so every selected test runs in exactly one shard."""
    state = session.config.stash.get(_STATE, None)
    if state is None or state.spec is None:
        return
    _keep_only(session, state, lambda it: _loose_here(it, state))
    state.lines = [f"aero-virtio: shard {state.spec}: no VM tests selected; {state.kept} other test(s) here"]
    _tell_controller(session.config, state)


def _loose_here(item: pytest.Item, state: ShardState) -> bool:
    assert state.spec is not None
    return loose_item_shard(item.nodeid, state.spec.total) == state.spec.index


def _keep_only(session: pytest.Session, state: ShardState, here: Callable[[pytest.Item], bool]) -> None:
    items = session.items
    kept = [it for it in items if here(it)]
    dropped = [it for it in items if not here(it)]
    state.selected, state.kept = len(items), len(kept)
    if dropped:
        session.config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def header_lines(split: Split, kept: int) -> list[str]:
    """The report header: which shard this is, its VMs and their expected durations, and every shard's load
    (how balanced the split is expected to be)."""
    total_vms = sum(len(s) for s in split.shards)
    loads = ", ".join(f"{load:.1f}" for load in split.loads())
    lines = [
        f"aero-virtio: shard {split.spec}: {len(split.mine)} of {total_vms} VM(s), {kept} test(s), "
        f"expected {split.loads()[split.spec.index - 1]:.1f} s; shards: {loads} s (durations: {split.source})"
    ]
    for job in split.mine:
        how = "recorded" if job.recorded else "estimated"
        lines.append(f"  shard VM: {job.key} ({len(job.items)} test(s), {job.seconds:.1f} s {how})")
    return lines


def _tell_controller(config: pytest.Config, state: ShardState) -> None:
    """In an xdist worker, hand the shard's counts and header to the controller (which never collects)."""
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKEROUTPUT_KEY] = {"selected": state.selected, "kept": state.kept, "lines": state.lines}


def pytest_report_collectionfinish(config: pytest.Config, start_path: Any, items: Any) -> list[str] | None:
    state = config.stash.get(_STATE, None)
    return state.lines if state is not None and state.lines else None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what each worker's shard selection was."""
    state = node.config.stash.get(_STATE, None)
    report = getattr(node, "workeroutput", {}).get(_WORKEROUTPUT_KEY)
    if state is not None and isinstance(report, dict):
        state.from_workers.append(report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Under xdist the header is the workers' (not shown): the controller prints the shard lines here."""
    state = config.stash.get(_STATE, None)
    if state is None or not state.from_workers or state.lines:
        return
    terminalreporter.section("aero-virtio shard")
    for line in state.from_workers[0].get("lines", []):
        terminalreporter.write_line(str(line))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """An empty shard (more shards than VMs) ran nothing by design: exit 0, not 5 ("no tests collected"),
    so its CI job passes. An empty *selection* still exits 5 in every shard, as without sharding."""
    state = session.config.stash.get(_STATE, None)
    if state is None or state.spec is None or exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED:
        return
    reports = state.from_workers or [{"selected": state.selected, "kept": state.kept}]
    if any(r.get("selected", 0) > 0 and r.get("kept", 0) == 0 for r in reports):
        session.exitstatus = pytest.ExitCode.OK


def recorder(config: pytest.Config) -> Callable[[VmConfig, float], None]:
    """Record each VM's boot-to-stop seconds in pytest's cache as it stops (``config.cache``; nothing with
    ``-p no:cacheprovider``). xdist workers share the cache: a lock file serialises their updates."""

    def record(vm: VmConfig, seconds: float) -> None:
        cache = getattr(config, "cache", None)
        if cache is None:
            return
        with contextlib.suppress(OSError), file_lock(Path(cache.mkdir("aero-virtio")) / "vm-durations.lock"):
            current = cache.get(DURATIONS_KEY, {})
            merged = dict(current) if isinstance(current, dict) else {}
            merged[vm_key(vm)] = round(seconds, 2)
            cache.set(DURATIONS_KEY, dict(sorted(merged.items())))

    return record


__all__ = ["DURATIONS_KEY", "ShardState", "read_durations", "recorder", "select", "split_without_vms"]
