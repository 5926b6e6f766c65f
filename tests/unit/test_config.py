"""Frozen configs: validation, stable ids, merging for the planner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_aero_virtio.config import QemuCommand, RunOptions, Vectors, VmConfig
from pytest_aero_virtio.errors import AeroConfigError

Q = QemuCommand(Path("/usr/bin/qemu-system-x86_64"))


def test_defaults_match_the_original_harness() -> None:
    opts = RunOptions(qemu=Q)
    assert (opts.http_port, opts.udp_port, opts.http_path) == (18080, 18081, "/aero-virtio-selftest")
    assert opts.timeout_s == 600 and opts.snapshot is True and opts.machine == "q35"
    assert opts.accel == "auto" and opts.memory_mib == 512 and opts.smp == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"memory_mib": 0}, "memory"),
        ({"smp": 0}, "smp"),
        ({"machine": "q35,usb=on"}, "machine"),
        ({"accel": "hvf"}, "accel"),
        ({"timeout_s": 0}, "timeout"),
        ({"http_port": 70000}, "http_port"),
        ({"udp_port": -1}, "udp_port"),
        ({"http_path": "no-slash"}, "HTTP path"),
        ({"initrd": Path("/i")}, "initrd"),
        ({"append": "console=ttyS0"}, "append"),
    ],
)
def test_run_options_validation_names_the_problem(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(AeroConfigError, match=needle) as info:
        RunOptions(qemu=Q, **kwargs)  # type: ignore[arg-type]
    assert info.value.token == "CONFIG_ERROR"
    assert info.value.fix


def test_run_options_is_frozen_and_hashable() -> None:
    opts = RunOptions(qemu=Q, extra_args=["-s"])  # type: ignore[arg-type]
    assert opts.extra_args == ("-s",)
    hash(opts)
    with pytest.raises(AttributeError):
        opts.smp = 2  # type: ignore[misc]


def test_vectors_reject_negative() -> None:
    with pytest.raises(AeroConfigError, match="vectors for net"):
        Vectors(net=-1)
    assert Vectors().is_default() and not Vectors(blk=0).is_default()
    assert str(Vectors(blk=4, snd=0)) == "blk4.snd0"


def test_vm_id_default() -> None:
    assert str(VmConfig()) == "blk-net-input"


def test_vm_id_is_stable_sorted_and_path_safe() -> None:
    a = VmConfig(
        tablet=True,
        snd=True,
        audio="none",
        vectors=Vectors(blk=4, net=0),
        transitional=True,
        guest_flags=frozenset({"test-input-events", "test-blk-resize", "require-snd"}),
        reactions=frozenset({"input_events", "blk_resize"}),
    )
    b = VmConfig(
        tablet=True,
        snd=True,
        audio="none",
        vectors=Vectors(blk=4, net=0),
        transitional=True,
        guest_flags=frozenset({"require-snd", "test-blk-resize", "--test-input-events"}),
        reactions=frozenset({"blk_resize", "input_events"}),
    )
    assert a == b and hash(a) == hash(b)
    assert (
        str(a)
        == str(b)
        == (
            "blk-net-input+tablet+snd.none_vec.blk4.net0_transitional"
            "_flags.blk-resize.input-events.require-snd_react.blk_resize.input_events"
        )
    )
    assert re.fullmatch(r"[A-Za-z0-9._+\-]+", str(a))


def test_vm_ids_differ_when_configs_differ() -> None:
    configs = [
        VmConfig(),
        VmConfig(tablet=True),
        VmConfig(snd=True),
        VmConfig(snd=True, audio="none"),
        VmConfig(vectors=Vectors(blk=0)),
        VmConfig(transitional=True),
        VmConfig(guest_flags=frozenset({"test-blk-resize"})),
        VmConfig(reactions=frozenset({"blk_resize"})),
    ]
    assert len({str(c) for c in configs}) == len(configs)


def test_bad_audio_backend() -> None:
    with pytest.raises(AeroConfigError, match="audio backend"):
        VmConfig(audio="alsa")  # type: ignore[arg-type]
