"""The plan: selection decides devices, guest flags, reactions and how many VMs boot."""

from __future__ import annotations

import shlex

from pytest_aero_virtio.checks import BASE_CHECKS, CATALOG, lookup
from pytest_aero_virtio.config import Vectors, VmConfig
from pytest_aero_virtio.plan import ItemNeeds, guest_args, make_plan


def n(*checks: str, **kw: object) -> ItemNeeds:
    return ItemNeeds(checks=checks, **kw)  # type: ignore[arg-type]


def test_blk_only_selection_boots_one_vm_without_tablet_or_sound() -> None:
    plan = make_plan([("a", n("virtio-blk")), ("b", n("virtio-blk-msix"))])
    assert len(plan.configs) == 1
    cfg = plan.configs[0]
    assert not cfg.snd and not cfg.tablet
    assert cfg.guest_flags == frozenset() and cfg.reactions == frozenset()


def test_opt_in_check_passes_its_flag_and_arms_its_reaction() -> None:
    plan = make_plan([("a", n("virtio-blk")), ("r", n("virtio-blk-resize"))])
    (cfg,) = plan.configs
    assert cfg.guest_flags == {"test-blk-resize"}
    assert cfg.reactions == {"blk_resize"}
    assert plan.assignment["a"] is plan.assignment["r"]


def test_sound_and_tablet_attached_only_when_selected() -> None:
    plan = make_plan([("t", n("virtio-input-tablet-events")), ("s", n("virtio-snd"))])
    (cfg,) = plan.configs
    assert cfg.tablet and cfg.snd
    assert "input_tablet_events" in cfg.reactions


def test_capture_and_wav_check_need_separate_vms() -> None:
    plan = make_plan(
        [
            ("play", n("virtio-snd")),
            ("wav", n("virtio-snd", audio="wav", at_end=True)),
            ("cap", n("virtio-snd-capture")),
        ]
    )
    audios = sorted(c.audio for c in plan.configs)
    assert audios == ["none", "wav"]
    assert plan.assignment["wav"].audio == "wav"
    assert plan.assignment["cap"].audio == "none"


def test_vectors_and_transitional_split_vms_and_at_end_runs_last() -> None:
    plan = make_plan(
        [
            ("end", n("virtio-snd", audio="wav", at_end=True)),
            ("intx", n("virtio-blk", vectors=Vectors(blk=0, net=0, input=0, snd=0))),
            ("x", n("virtio-net")),
            ("tr", n(transitional=True)),
        ]
    )
    assert len(plan.configs) == 3
    assert plan.order.index("end") > plan.order.index("x")
    same_vm = [i for i in plan.order if plan.assignment[i] == plan.assignment["x"]]
    assert same_vm[-1] == "end"
    assert plan.assignment["tr"].transitional


def test_session_vectors_apply_unless_the_item_overrides() -> None:
    plan = make_plan(
        [("a", n("virtio-blk")), ("b", n("virtio-net", vectors=Vectors(net=0)))],
        default_vectors=Vectors(blk=4),
    )
    assert plan.assignment["a"].vectors == Vectors(blk=4)
    assert plan.assignment["b"].vectors == Vectors(net=0)


def test_plan_is_deterministic() -> None:
    items = [(f"i{k}", n(name)) for k, name in enumerate(CATALOG)]
    assert make_plan(items) == make_plan(items)


def test_guest_args_carry_ports_flags_and_sound_consequences() -> None:
    cfg = VmConfig(snd=True, audio="wav", guest_flags=frozenset({"test-snd-capture", "test-blk-resize"}))
    args = shlex.split(guest_args(cfg, http_port=4321, udp_port=4322, http_path="/p"))
    assert "--test-blk-resize" in args
    assert "--test-snd-capture" not in args and "--disable-snd-capture" in args
    assert "--require-snd" in args
    assert "--http-url=http://10.0.2.2:4321/p" in args and "--udp-port=4322" in args
    none = shlex.split(
        guest_args(
            VmConfig(snd=True, audio="none", guest_flags=frozenset({"test-snd-capture"})),
            http_port=1,
            udp_port=2,
            http_path="/p",
        )
    )
    assert "--test-snd-capture" in none and "--disable-snd-capture" not in none


def test_catalog_base_checks_and_unknown_names() -> None:
    assert set(BASE_CHECKS) == {
        "virtio-blk",
        "virtio-input",
        "virtio-input-bind",
        "virtio-net",
        "virtio-net-udp",
    }
    unknown = lookup("virtio-snd-future-thing")
    assert unknown.device == "snd" and not unknown.opt_in
    for check in CATALOG.values():
        assert check.name.startswith(f"virtio-{check.device}")
        if check.reactions:
            assert check.opt_in, f"{check.name}: a READY reaction only makes sense for an opt-in check"


def test_required_checks_need_flags_and_reactions() -> None:
    from pytest_aero_virtio.plan import required_checks

    events_only = make_plan([("e", n("virtio-input-events"))]).configs[0]
    names = {c.name for c in required_checks(events_only)}
    assert "virtio-input-events" in names and set(BASE_CHECKS) <= names
    assert "virtio-input-wheel" not in names  # same guest flag, but the wheel injection is not armed
    with_wheel = make_plan([("e", n("virtio-input-events")), ("w", n("virtio-input-wheel"))]).configs[0]
    assert "virtio-input-wheel" in {c.name for c in required_checks(with_wheel)}
    assert {c.name for c in required_checks(VmConfig())} == set(BASE_CHECKS)
