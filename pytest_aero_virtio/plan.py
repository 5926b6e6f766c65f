"""From the selected test items to the VMs that serve them (pure).

Every test of ``vmm_flows`` names the guest check it asserts (``@pytest.mark.aero_check("virtio-blk-resize")``)
and may ask for a particular VM (``@pytest.mark.aero_vm(vectors=0)``). This module turns the *selected*
items (after ``-k``, ``-m`` and node ids) into as few VM configurations as possible:

* what a check needs is unioned into one VM: the tablet and the sound device are attached only when a
  selected test needs them, the guest's opt-in flags are passed only for selected opt-in checks (so an
  unselected opt-in prints ``SKIP|flag_not_set`` at once instead of waiting for a host that will not
  answer), and the host reactions for those READY lines are armed;
* what cannot be unioned splits VMs: different MSI-X vector counts, modern vs transitional devices, and the
  sound backend (the wav backend records playback for the host-side check but cannot capture).

The result is deterministic: the same selection always gives the same VMs in the same order, so test
ids, artifact directories and xdist workers agree.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checks import BASE_CHECKS, CATALOG, Audio, GuestCheck, lookup
from .config import Vectors, VmConfig


@dataclass(frozen=True)
class ItemNeeds:
    """What one test item asks of its VM, read from its markers.

    ``checks`` are guest check names (catalog keys or unknown names); ``audio`` overrides the catalog's
    backend need; ``vectors``/``transitional`` select a device variant; ``at_end`` marks a test that needs
    the VM to have finished (a host check of the recorded WAV), so it is ordered after its VM's other tests.
    """

    checks: tuple[str, ...] = ()
    audio: Audio | None = None
    vectors: Vectors | None = None
    transitional: bool = False
    at_end: bool = False


@dataclass
class _Group:
    vectors: Vectors
    transitional: bool
    audio: Audio | None = None
    tablet: bool = False
    snd: bool = False
    flags: set[str] = field(default_factory=set)
    reactions: set[str] = field(default_factory=set)
    items: list[str] = field(default_factory=list)
    #: What made this VM what it is -> the first check that asked for it (the plan's "why").
    why: dict[str, str] = field(default_factory=dict)

    def add(self, item_id: str, checks: Sequence[GuestCheck], audio: Audio | None) -> None:
        def because(what: str, check: GuestCheck) -> None:
            self.why.setdefault(what, check.name)

        if audio is not None:
            self.audio = audio
        for c in checks:
            if c.snd:
                self.snd = True
                because("sound device", c)
            if c.tablet:
                self.tablet = True
                because("tablet", c)
            for flag in c.guest_flags:
                self.flags.add(flag)
                because(f"--{flag}", c)
            for reaction in c.reactions:
                self.reactions.add(reaction)
                because(f"reaction {reaction}", c)
            if c.audio is not None:
                because(f"audio {c.audio}", c)
        self.items.append(item_id)

    def accepts(self, vectors: Vectors, transitional: bool, audio: Audio | None) -> bool:
        if vectors != self.vectors or transitional != self.transitional:
            return False
        return audio is None or self.audio is None or audio == self.audio

    def config(self) -> VmConfig:
        return VmConfig(
            tablet=self.tablet,
            snd=self.snd,
            audio=self.audio or "wav",
            vectors=self.vectors,
            transitional=self.transitional,
            guest_flags=frozenset(self.flags),
            reactions=frozenset(self.reactions),
        )


@dataclass(frozen=True)
class PlannedVm:
    """One VM of the plan: its short id (``vm0``), its configuration, the tests it serves and why it is so.

    ``why`` maps each thing the selection added (``tablet``, ``sound device``, ``--test-blk-resize``,
    ``reaction blk_resize``, ``audio none``) to the first check that asked for it, so a reader of the plan (or
    of a fixture's repr) sees the reason for every device, flag and reaction.
    """

    index: int
    config: VmConfig
    tests: tuple[str, ...]
    why: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return f"vm{self.index}"

    def __str__(self) -> str:
        return self.id

    def devices(self) -> str:
        """``blk net input tablet snd(wav)``: what is attached, in one short phrase."""
        cfg = self.config
        attached = ["blk", "net", "input"] + (["snd"] if cfg.snd else [])
        parts = (
            ["blk", "net", "input"] + (["tablet"] if cfg.tablet else []) + ([f"snd({cfg.audio})"] if cfg.snd else [])
        )
        vectors = [f"{dev}={getattr(cfg.vectors, dev)}" for dev in attached if getattr(cfg.vectors, dev) is not None]
        if vectors:
            parts.append(f"vectors {','.join(vectors)}")
        if cfg.transitional:
            parts.append("transitional")
        return " ".join(parts)

    def describe(self, verbose: bool = False) -> list[str]:
        """The plan of this VM as lines a person reads at a glance: devices, guest flags, reactions; with
        ``verbose`` also why each was added and the tests it serves."""
        cfg = self.config
        flags = " ".join(f"--{f}" for f in sorted(cfg.guest_flags)) or "none (base checks only)"
        reactions = " ".join(sorted(cfg.reactions)) or "none"
        lines = [f"devices:     {self.devices()}", f"guest flags: {flags}", f"reactions:   {reactions}"]
        if verbose:
            lines += [f"why:         {what} <- {check}" for what, check in self.why]
            lines += [f"test:        {test}" for test in self.tests]
        return lines


@dataclass(frozen=True)
class Plan:
    """The VMs of a run and which item runs on which, in run order.

    ``order`` is the item order to run: grouped by VM (so each VM runs once, start to finish), the groups in
    order of first appearance, ``at_end`` items last within their group.
    """

    vms: tuple[PlannedVm, ...]
    order: tuple[str, ...]

    @property
    def configs(self) -> tuple[VmConfig, ...]:
        return tuple(vm.config for vm in self.vms)

    @property
    def assignment(self) -> dict[str, VmConfig]:
        """Item id -> the configuration of the VM it runs on."""
        return {test: vm.config for vm in self.vms for test in vm.tests}

    def vm_of(self, item_id: str) -> PlannedVm:
        """The planned VM of an item (KeyError for items without a VM)."""
        for vm in self.vms:
            if item_id in vm.tests:
                return vm
        raise KeyError(item_id)


def make_plan(
    items: Sequence[tuple[str, ItemNeeds]],
    default_vectors: Vectors | None = None,
    canonical: Mapping[str, Any] | None = None,
) -> Plan:
    """Group items into VM configurations.

    ``default_vectors`` are the session-wide vector options (``--vm-msix-vectors`` and friends); an item's own
    ``vectors`` replaces them. Items are placed greedily into the first compatible group, which keeps the
    number of boots minimal for the usual selections.

    ``canonical`` (item id -> sort key; the plugin passes test file, definition line, node id) makes the
    grouping and the VM ids independent of the order the items run in (``--ff``, ``-p randomly``, the order of
    paths on the command line): the same selection always gives the same VMs, on every CI runner. The VMs then
    run in order of their first item in ``items``, each VM's items in that order with ``at_end`` items last.
    """
    base_vectors = default_vectors or Vectors()
    run_rank = {item_id: i for i, (item_id, _) in enumerate(items)}
    keys = canonical or {}
    grouping = sorted(items, key=lambda it: (it[0] not in keys, keys.get(it[0], ()), run_rank[it[0]]))
    groups: list[_Group] = []
    at_end = {item_id for item_id, needs in items if needs.at_end}
    for item_id, needs in grouping:
        checks = [lookup(n) for n in needs.checks]
        audio = needs.audio or next((c.audio for c in checks if c.audio is not None), None)
        vectors = needs.vectors if needs.vectors is not None else base_vectors
        group = next((g for g in groups if g.accepts(vectors, needs.transitional, audio)), None)
        if group is None:
            group = _Group(vectors=vectors, transitional=needs.transitional)
            groups.append(group)
        group.add(item_id, checks, audio)
    vms: list[PlannedVm] = []
    for index, g in enumerate(groups):
        in_run = sorted(g.items, key=run_rank.__getitem__)
        ordered = [i for i in in_run if i not in at_end] + [i for i in in_run if i in at_end]
        vms.append(PlannedVm(index, g.config(), tuple(ordered), tuple(sorted(g.why.items()))))
    vms.sort(key=lambda vm: min(run_rank[t] for t in vm.tests))
    return Plan(vms=tuple(vms), order=tuple(test for vm in vms for test in vm.tests))


def guest_args(
    vm: VmConfig,
    *,
    http_port: int,
    udp_port: int,
    http_path: str,
    host: str = "10.0.2.2",
    extra: Iterable[str] = (),
) -> str:
    """The guest's command line for this VM (sent through fw_cfg ``opt/aero/args``).

    It carries the opt-in flags of the selected checks, the ports the host really listens on, and the
    consequences of the VM's devices: ``--require-snd`` when a sound device is attached (a missing device
    must fail, not skip) and ``--disable-snd-capture`` with the wav backend, which cannot capture.
    """
    args = [f"--{f}" for f in sorted(vm.guest_flags)]
    if vm.snd:
        args.append("--require-snd")
        if vm.audio == "wav":
            args = [a for a in args if a != "--test-snd-capture"]
            args.append("--disable-snd-capture")
    args.append(f"--http-url=http://{host}:{http_port}{http_path}")
    args.append(f"--udp-port={udp_port}")
    args.extend(extra)
    return shlex.join(args)


def required_checks(vm: VmConfig) -> list[GuestCheck]:
    """The per-test markers that must accompany ``RESULT|PASS`` on ``vm``: the base checks, plus every opt-in
    check the VM is fully provisioned for - its guest flags passed *and* its host reactions armed. (Flags
    alone are not enough: ``virtio-input-wheel`` shares ``--test-input-events`` but the guest skips it when
    the host was not asked to inject the wheel.)"""
    names = list(BASE_CHECKS)
    for check in CATALOG.values():
        provisioned = set(check.guest_flags) <= vm.guest_flags and set(check.reactions) <= vm.reactions
        if check.guest_flags and provisioned:
            names.append(check.name)
    return [lookup(n) for n in names]
