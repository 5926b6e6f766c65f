"""Splitting a VM plan over N CI jobs, whole VMs per shard (pure).

``--vm-shard=K/N`` runs shard K of N. Every CI job computes the split on its own, with no coordinator, so the
split must come out identical on every runner for the same selection: the same VMs, the same expected
durations, the same tie-breaks. Everything here is therefore a pure function of

* the *set* of selected items: the VMs are planned from the items in a canonical order (file, line, node id:
  :func:`canonical_key`, which ``make_plan(canonical=...)`` sorts by), not in run order, which ``-p randomly``,
  ``--ff`` or the order of the paths on the command line may change from runner to runner;
* the expected duration of each VM, in integer milliseconds: a recorded duration from a file every runner
  shares (``--vm-durations``), else a plan-based estimate (:func:`estimate_seconds`); never a runner's own
  pytest cache, which differs between runners and would make them disagree (see docs/sharding.md);
* sort keys that are plain strings and integers (``str(VmConfig)`` and node ids), never dict, set or hash
  order.

VMs are placed longest first on the least-loaded shard (LPT), then a local search moves or swaps VMs while
that lowers the longest shard. Items that use no VM are spread by a stable hash of their node id.
"""

from __future__ import annotations

import re
import statistics
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .checks import lookup
from .config import VmConfig
from .errors import AeroConfigError
from .plan import ItemNeeds, Plan

__all__ = [
    "BOOT_S",
    "CHECK_S",
    "HOST_REACTION_S",
    "SOUND_S",
    "CanonicalKey",
    "ShardSpec",
    "Split",
    "VmJob",
    "assign",
    "canonical_key",
    "estimate_seconds",
    "loose_item_shard",
    "parse_durations",
    "parse_shard",
    "split_plan",
    "vm_key",
]

#: QEMU start, guest boot to its first marker and stop, on TCG with the reference guest (about 6-8 s here).
BOOT_S = 7.0
#: Each distinct check a VM's tests wait for (most take milliseconds; this also covers the test's own work).
CHECK_S = 0.1
#: A check with a host reaction (READY line -> QMP injection, resize, link flap: up to 3 s).
HOST_REACTION_S = 0.5
#: A sound check (playback, capture, buffer limits: about 1 s each on TCG).
SOUND_S = 0.5

#: A sort key for the canonical order of items, see :func:`canonical_key`.
CanonicalKey = tuple[tuple[str, ...], int, str]

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_MAX_SHARDS = 1000


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` (1-based) of ``total``."""

    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse_shard(value: str | None, flag: str = "--vm-shard") -> ShardSpec | None:
    """``"2/3"`` -> ShardSpec(2, 3); None or empty -> None (no sharding). Anything else is a usage error that
    names the option and the accepted form."""
    if value is None or str(value).strip() == "":
        return None
    fix = (
        f"pass {flag}=K/N with 1 <= K <= N (K counts from 1), e.g. {flag}=1/3; "
        f"in GitLab CI: {flag}=$CI_NODE_INDEX/$CI_NODE_TOTAL"
    )
    match = _SPEC.fullmatch(str(value))
    if match is None:
        raise AeroConfigError(f"{flag}={value!r}: not of the form K/N", fix=fix)
    index, total = int(match.group(1)), int(match.group(2))
    if not 1 <= total <= _MAX_SHARDS:
        raise AeroConfigError(f"{flag}={value!r}: N must be 1..{_MAX_SHARDS}", fix=fix)
    if not 1 <= index <= total:
        raise AeroConfigError(f"{flag}={value!r}: there is no shard {index} of {total}", fix=fix)
    return ShardSpec(index, total)


def parse_durations(data: object, source: str) -> dict[str, float]:
    """Validate a durations mapping (``{"<str(VmConfig)>": seconds}``, as the plugin records it)."""
    if not isinstance(data, dict):
        raise AeroConfigError(
            f"{source}: expected a JSON object of VM id -> seconds, got {type(data).__name__}",
            fix='write it as {"blk-net-input": 12.5, ...} (copy .pytest_cache/v/aero-virtio/vm-durations)',
        )
    out: dict[str, float] = {}
    for key, seconds in data.items():
        ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e6
        if not ok:
            raise AeroConfigError(
                f"{source}: VM {key!r} has {seconds!r}, not a number of seconds",
                fix="give every VM a non-negative number of seconds",
            )
        out[str(key)] = float(seconds)
    return out


def vm_key(config: VmConfig) -> str:
    """The id durations are recorded and looked up by: stable across runs, runners and hash seeds."""
    return str(config)


def estimate_seconds(checks: Iterable[str]) -> float:
    """Expected boot-to-stop seconds of a VM whose tests wait for ``checks`` (guest check names).

    A fixed boot cost plus a cost per distinct check, more for checks the host answers (QMP reactions) and
    for sound checks. Rough on purpose: it only has to rank VMs; recorded durations replace it."""
    total = BOOT_S
    for name in sorted(set(checks)):
        check = lookup(name)
        total += CHECK_S + (HOST_REACTION_S if check.reactions else 0.0) + (SOUND_S if check.snd else 0.0)
    return round(total, 3)


@dataclass(frozen=True)
class VmJob:
    """One VM of the plan as the splitter sees it: its id, its items and its expected duration."""

    key: str
    items: tuple[str, ...]
    millis: int
    recorded: bool = False

    @property
    def seconds(self) -> float:
        return self.millis / 1000


def _order_key(job: VmJob) -> tuple[int, str, tuple[str, ...]]:
    # Longest first; ties by VM id, then by items (disjoint, so the order is total even for equal ids).
    return (-job.millis, job.key, job.items)


def _load(shard: Sequence[VmJob]) -> int:
    return sum(job.millis for job in shard)


def assign(jobs: Sequence[VmJob], total: int) -> list[list[VmJob]]:
    """Place the VMs on ``total`` shards: longest first onto the least-loaded shard (lowest index on a tie),
    then :func:`_improve`. The result depends only on the set of jobs, never on their input order."""
    shards: list[list[VmJob]] = [[] for _ in range(total)]
    loads = [0] * total
    for job in sorted(jobs, key=_order_key):
        target = min(range(total), key=lambda i: (loads[i], i))
        shards[target].append(job)
        loads[target] += job.millis
    _improve(shards)
    for shard in shards:
        shard.sort(key=_order_key)
    return shards


def _improve(shards: list[list[VmJob]], max_rounds: int = 1000) -> None:
    """Local search after LPT: move a VM off the longest shard, or swap it with a shorter VM of another
    shard, whenever both shards end up shorter than the longest was. Each step lowers the sum of squared
    loads, so it ends; the scan order is fixed, so it ends the same way everywhere."""
    for _ in range(max_rounds):
        loads = [_load(s) for s in shards]
        top = max(range(len(shards)), key=lambda i: (loads[i], -i))
        if not _one_step(shards, loads, top):
            return


def _one_step(shards: list[list[VmJob]], loads: list[int], top: int) -> bool:
    for job in sorted(shards[top], key=_order_key):
        for other in range(len(shards)):
            if other == top:
                continue
            if loads[other] + job.millis < loads[top]:
                shards[top].remove(job)
                shards[other].append(job)
                return True
            for small in sorted(shards[other], key=_order_key):
                gain = job.millis - small.millis
                if gain > 0 and loads[other] + gain < loads[top]:
                    shards[top].remove(job)
                    shards[other].remove(small)
                    shards[top].append(small)
                    shards[other].append(job)
                    return True
    return False


def loose_item_shard(nodeid: str, total: int) -> int:
    """The 1-based shard of an item that uses no VM (or is skipped before planning): a stable hash of its
    node id (CRC-32, not ``hash()``, which changes with PYTHONHASHSEED)."""
    return zlib.crc32(nodeid.encode("utf-8")) % total + 1


def canonical_key(nodeid: str, lineno: int | None) -> CanonicalKey:
    """(path parts of the test file, definition line, node id): pytest's collection order of a directory
    (files by name, tests in definition order), computed from the item alone."""
    path = nodeid.split("::", 1)[0]
    return (tuple(path.split("/")), -1 if lineno is None else lineno, nodeid)


@dataclass(frozen=True)
class Split:
    """The whole split as every runner computes it, and this runner's part of it."""

    spec: ShardSpec
    shards: tuple[tuple[VmJob, ...], ...]
    plan: Plan  # this shard's plan, in run order
    source: str  # where the durations came from, for the report header

    @property
    def mine(self) -> tuple[VmJob, ...]:
        return self.shards[self.spec.index - 1]

    def loads(self) -> list[float]:
        return [_load(s) / 1000 for s in self.shards]


def split_plan(
    plan: Plan,
    needs: Mapping[str, ItemNeeds],
    spec: ShardSpec,
    *,
    durations: Mapping[str, float] | None = None,
    source: str = "estimates",
) -> Split:
    """Weigh each planned VM, split whole VMs over the shards, and return this shard's part of the plan.

    ``plan`` must be the canonical plan (``make_plan(..., canonical=...)``), so every runner weighs the same VMs;
    ``needs`` gives each item's checks, from which a VM's duration is estimated when none is recorded."""
    estimates = {vm.id: estimate_seconds(c for t in vm.tests for c in needs[t].checks if t in needs) for vm in plan.vms}
    recorded = {vm.id: durations[vm_key(vm.config)] for vm in plan.vms if durations and vm_key(vm.config) in durations}
    scale = _scale(recorded, estimates)
    jobs = []
    for vm in plan.vms:
        seconds = recorded.get(vm.id, estimates[vm.id] * scale)
        # items sorted: the job (and so the split) must not depend on this runner's run order
        jobs.append(VmJob(vm_key(vm.config), tuple(sorted(vm.tests)), round(seconds * 1000), vm.id in recorded))
    shards = assign(jobs, spec.total)
    mine = {job.items for job in shards[spec.index - 1]}
    kept = tuple(vm for vm in plan.vms if tuple(sorted(vm.tests)) in mine)
    return Split(spec, tuple(tuple(s) for s in shards), Plan(kept, tuple(t for vm in kept for t in vm.tests)), source)


def _scale(recorded: Mapping[str, float], estimates: Mapping[str, float]) -> float:
    """Estimates of VMs the durations file does not know are put on its scale (a Windows guest on KVM is not
    the reference guest on TCG): the median ratio recorded/estimated over the VMs it does know."""
    ratios = sorted(recorded[c] / estimates[c] for c in recorded if estimates[c] > 0)
    return statistics.median(ratios) if ratios else 1.0
