"""Splitting the VM plan into shards: balance, determinism, coverage, option parsing (pure)."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from pytest_aero_virtio.config import Vectors
from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.plan import ItemNeeds, Plan, make_plan
from pytest_aero_virtio.shard import (
    ShardSpec,
    Split,
    VmJob,
    assign,
    canonical_key,
    estimate_seconds,
    loose_item_shard,
    parse_durations,
    parse_shard,
    split_plan,
    vm_key,
)

INTX = Vectors(blk=0, net=0, input=0, snd=0)


def n(*checks: str, **kw: object) -> ItemNeeds:
    return ItemNeeds(checks=checks, **kw)  # type: ignore[arg-type]


#: A selection shaped like vmm_flows: one big VM, variants that split off, and a sound backend conflict.
SELECTION: list[tuple[str, ItemNeeds]] = [
    ("f/test_blk.py::test_blk", n("virtio-blk")),
    ("f/test_blk.py::test_resize", n("virtio-blk-resize")),
    ("f/test_blk.py::test_intx", n("virtio-blk", vectors=INTX)),
    ("f/test_input.py::test_events", n("virtio-input-events")),
    ("f/test_input.py::test_tablet", n("virtio-input-tablet-events")),
    ("f/test_net.py::test_flap", n("virtio-net-link-flap")),
    ("f/test_net.py::test_net", n("virtio-net")),
    ("f/test_selftest.py::test_transitional", n(transitional=True)),
    ("f/test_selftest.py::test_transitional_blk", n("virtio-blk", transitional=True)),
    ("f/test_snd.py::test_play", n("virtio-snd")),
    ("f/test_snd.py::test_wav", n("virtio-snd", audio="wav", at_end=True)),
    ("f/test_snd.py::test_capture", n("virtio-snd-capture")),
    ("f/test_snd.py::test_msix4", n("virtio-snd", vectors=Vectors(snd=4))),
]
ORDER = {nodeid: canonical_key(nodeid, line) for line, (nodeid, _) in enumerate(SELECTION)}


def canonical_plan(selection: list[tuple[str, ItemNeeds]], vectors: Vectors | None, order: dict[str, Any]) -> Plan:
    return make_plan(selection, vectors, canonical=order)


def split(selection: list[tuple[str, ItemNeeds]], shard: ShardSpec, **kw: Any) -> Split:
    """How the plugin splits: the canonical plan of this runner's selection (in its run order), then the shard."""
    return split_plan(canonical_plan(selection, None, ORDER), dict(selection), shard, **kw)


def spec(text: str) -> ShardSpec:
    parsed = parse_shard(text)
    assert parsed is not None
    return parsed


def job(key: str, seconds: float) -> VmJob:
    return VmJob(key, (f"t::{key}",), round(seconds * 1000))


def loads(shards: list[list[VmJob]]) -> list[int]:
    return [sum(j.millis for j in s) for s in shards]


def optimum(jobs: list[VmJob], total: int) -> int:
    """The best makespan, by brute force (small inputs only)."""
    best = sum(j.millis for j in jobs)
    for choice in itertools.product(range(total), repeat=len(jobs)):
        per = [0] * total
        for j, k in zip(jobs, choice, strict=True):
            per[k] += j.millis
        best = min(best, max(per))
    return best


# --- --vm-shard ---------------------------------------------------------------------------------------------
def test_parse_shard_accepts_k_of_n() -> None:
    assert parse_shard("2/3") == parse_shard(" 2 / 3 ")
    parsed = spec("2/3")
    assert (parsed.index, parsed.total, str(parsed)) == (2, 3, "2/3")
    assert parse_shard("1/1") is not None
    assert parse_shard(None) is None and parse_shard("") is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("3", "not of the form K/N"),
        ("a/b", "not of the form K/N"),
        ("-1/3", "not of the form K/N"),
        ("1/3/5", "not of the form K/N"),
        ("/", "not of the form K/N"),
        ("0/3", "there is no shard 0 of 3"),
        ("4/3", "there is no shard 4 of 3"),
        ("1/0", "N must be 1..1000"),
    ],
)
def test_bad_shard_names_the_option_and_the_form(value: str, why: str) -> None:
    with pytest.raises(AeroConfigError) as exc:
        parse_shard(value)
    text = str(exc.value)
    assert f"--vm-shard={value!r}" in text and why in text
    assert "fix: pass --vm-shard=K/N with 1 <= K <= N" in text and "CI_NODE_INDEX" in text


# --- assignment ---------------------------------------------------------------------------------------------
def test_longest_first_balances_and_local_search_beats_plain_lpt() -> None:
    # Plain LPT puts 3+2+2 on one shard and 3+2 on the other (7 vs 5); a swap makes it 6 and 6.
    jobs = [job("a", 3), job("b", 3), job("c", 2), job("d", 2), job("e", 2)]
    shards = assign(jobs, 2)
    assert sorted(loads(shards)) == [6000, 6000]


def test_assignment_is_within_the_lpt_bound_of_the_optimum() -> None:
    rng = random.Random(1234)
    for _ in range(60):
        count, total = rng.randint(1, 7), rng.randint(1, 4)
        jobs = [job(f"vm{i}", rng.choice([0.1, 1, 2.5, 7, 7, 12, 30]) + rng.random()) for i in range(count)]
        best = optimum(jobs, total)
        got = max(loads(assign(jobs, total)))
        assert best <= got <= best * 4 / 3 + 1, (jobs, total)


def test_assignment_does_not_depend_on_input_order() -> None:
    jobs = [job(f"vm{i}", s) for i, s in enumerate([9, 7, 7, 5, 3, 3, 3, 1, 0.5])]
    expected = [[j.key for j in s] for s in assign(jobs, 3)]
    rng = random.Random(7)
    for _ in range(30):
        shuffled = jobs[:]
        rng.shuffle(shuffled)
        assert [[j.key for j in s] for s in assign(shuffled, 3)] == expected


def test_equal_ids_and_durations_still_split_deterministically() -> None:
    twins = [VmJob("same", ("a",), 1000), VmJob("same", ("b",), 1000), VmJob("same", ("c",), 1000)]
    first = [[j.items for j in s] for s in assign(twins, 2)]
    assert [[j.items for j in s] for s in assign(list(reversed(twins)), 2)] == first


# --- split of a plan ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 8])
def test_every_vm_and_every_item_in_exactly_one_shard(total: int) -> None:
    full = canonical_plan(SELECTION, None, ORDER)
    splits = [split(SELECTION, spec(f"{k}/{total}")) for k in range(1, total + 1)]
    items = [i for s in splits for i in s.plan.order]
    assert sorted(items) == sorted(nodeid for nodeid, _ in SELECTION)
    configs = [c for s in splits for c in s.plan.configs]
    assert sorted(map(str, configs)) == sorted(map(str, full.configs))
    for s in splits:  # every shard agrees on the whole split
        assert s.shards == splits[0].shards
    if total > len(full.configs):
        empty = [s for s in splits if not s.plan.configs]
        assert len(empty) == total - len(full.configs)
        assert all(not s.plan.order for s in empty)


def test_split_does_not_depend_on_run_order() -> None:
    """-p randomly or --ff reorder items differently on each runner: the split must not move."""
    two_of_three = spec("2/3")
    expected = split(SELECTION, two_of_three)
    rng = random.Random(42)
    for _ in range(25):
        shuffled = SELECTION[:]
        rng.shuffle(shuffled)
        got = split(shuffled, two_of_three)
        assert got.shards == expected.shards
        assert set(got.plan.order) == set(expected.plan.order)
        assert set(got.plan.configs) == set(expected.plan.configs)
        # ... but within the shard, the tests run in this runner's order (at_end ones last)
        runs = [i for i, _ in shuffled if i in got.plan.assignment]
        for config in got.plan.configs:
            mine = [i for i in got.plan.order if got.plan.assignment[i] == config]
            assert [i for i in mine if i != "f/test_snd.py::test_wav"] == [
                i for i in runs if got.plan.assignment[i] == config and i != "f/test_snd.py::test_wav"
            ]
            if "f/test_snd.py::test_wav" in mine:
                assert mine[-1] == "f/test_snd.py::test_wav"


def test_canonical_plan_is_the_plan_of_collection_order() -> None:
    """Greedy planning depends on order (the sound backend conflict); the canonical order is the file's."""
    by_file = make_plan(SELECTION)
    backwards = list(reversed(SELECTION))
    assert set(make_plan(backwards).configs) != set(by_file.configs)  # the planner alone is order-dependent
    assert set(canonical_plan(backwards, None, ORDER).configs) == set(by_file.configs)


def test_split_is_the_same_under_other_hash_seeds() -> None:
    """VmConfig holds frozensets: nothing in the split may follow their iteration order."""
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from test_shard import ORDER, SELECTION
        from test_shard import split
        from pytest_aero_virtio.shard import parse_shard
        out = [[j.key for j in s] for s in split(SELECTION, parse_shard("1/3")).shards]
        print(json.dumps(out))
    """)
    here = str(__import__("pathlib").Path(__file__).parent)
    results = set()
    for seed in ("0", "1", "12345"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([sys.executable, "-c", script, here], capture_output=True, text=True, env=env, check=True)
        results.add(proc.stdout)
    assert len(results) == 1, results
    assert len(json.loads(results.pop())) == 3


def test_a_shard_keeps_whole_vms_with_their_canonical_ids() -> None:
    full = canonical_plan(SELECTION, None, ORDER)
    for k in (1, 2, 3):
        part = split(SELECTION, spec(f"{k}/3")).plan
        for vm in part.vms:
            assert vm in full.vms  # same id, config and tests as in the unsharded plan
        assert list(part.order) == [t for vm in part.vms for t in vm.tests]


# --- durations ----------------------------------------------------------------------------------------------
def test_estimates_rank_boot_checks_reactions_and_sound() -> None:
    boot = estimate_seconds([])
    plain = estimate_seconds(["virtio-blk"])
    assert boot < plain < estimate_seconds(["virtio-blk-resize"]) and plain < estimate_seconds(["virtio-snd"])
    assert estimate_seconds(["virtio-blk", "virtio-blk"]) == plain  # the guest runs a check once
    assert estimate_seconds(["virtio-net", "virtio-blk"]) == estimate_seconds(["virtio-blk", "virtio-net"])


def test_recorded_durations_win_and_rescale_the_estimates() -> None:
    half = spec("1/2")
    full = canonical_plan(SELECTION, None, ORDER)
    by_estimate = split(SELECTION, half)
    est = {j.key: j.seconds for s in by_estimate.shards for j in s}
    intx = next(str(c) for c in full.configs if c.vectors == INTX)
    durations = {intx: est[intx] * 10}
    recorded = split(SELECTION, half, durations=durations, source="d.json")
    got = {j.key: j for s in recorded.shards for j in s}
    assert got[intx].recorded and got[intx].seconds == pytest.approx(est[intx] * 10, abs=0.001)
    others = [k for k in got if k != intx]
    for key in others:  # unknown VMs get the estimate on the file's scale (here 10x)
        assert not got[key].recorded and got[key].seconds == pytest.approx(est[key] * 10, abs=0.01)
    assert recorded.source == "d.json" and vm_key(full.configs[0]) in got


def test_parse_durations_validates() -> None:
    assert parse_durations({"a": 1, "b": 2.5}, "f") == {"a": 1.0, "b": 2.5}
    with pytest.raises(AeroConfigError, match="expected a JSON object"):
        parse_durations([1, 2], "f")
    for bad in ("12", -1, True, None):
        with pytest.raises(AeroConfigError, match="not a number of seconds"):
            parse_durations({"a": bad}, "f")


def test_items_without_a_vm_spread_by_a_stable_hash() -> None:
    ids = [f"tests/test_x.py::test_{i}" for i in range(300)]
    shards = [loose_item_shard(i, 3) for i in ids]
    assert set(shards) == {1, 2, 3} and min(shards.count(k) for k in (1, 2, 3)) > 60
    assert loose_item_shard("tests/test_x.py::test_0", 3) == loose_item_shard("tests/test_x.py::test_0", 3)
    assert all(loose_item_shard(i, 1) == 1 for i in ids)
