"""From an old command line to the pytest run: every row of the table, refusals, conflicts (pure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_aero_virtio.compat import cli, table
from pytest_aero_virtio.compat.table import PYTEST_OPTION as OPT

ALL_FLAGS = [(row, flag) for row in table.OLD_OPTIONS for flag in row.flags]


def translate(*argv: str) -> cli.Translation:
    ns, qemu = cli.parse(argv)
    return cli.translate(ns, qemu)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        translate(*argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def sample_value(row: table.OldOption) -> str:
    if row.choices:
        return sorted(row.choices)[-1]
    return "7" if row.integer else "/some where/x.log"


def test_no_option_is_the_old_default_run() -> None:
    tr = translate()
    assert tr.required == ()
    assert f"{OPT['memory']}=2048" in tr.options and f"{OPT['smp']}=2" in tr.options
    assert f"{OPT['timeout']}=600" in tr.options and f"{OPT['silence']}=600" in tr.options
    assert not any(o.startswith((OPT["image"], OPT["qemu"], OPT["http_port"])) for o in tr.options)
    serial = Path("win7-virtio-serial.log").absolute()
    assert tr.copies == (("serial.log", serial),)
    assert f"{OPT['artifacts']}={serial.parent / 'aero-artifacts'}" in tr.options
    assert not tr.dry_run


@pytest.mark.parametrize(("row", "flag"), [(r, f) for r, f in ALL_FLAGS if r.kind == "value"],
                         ids=[f for r, f in ALL_FLAGS if r.kind == "value"])
def test_value_options_become_plugin_options(row: table.OldOption, flag: str) -> None:
    tr = translate(flag, "7" if row.integer else "/some where/x")
    value = "7" if row.integer else "/some where/x"
    for arg in row.args:
        assert f"{OPT[arg.option]}={value}" in tr.options


@pytest.mark.parametrize(("row", "flag"), [(r, f) for r, f in ALL_FLAGS if r.kind == "flag"],
                         ids=[f for r, f in ALL_FLAGS if r.kind == "flag"])
def test_flags_become_plugin_options(row: table.OldOption, flag: str) -> None:
    tr = translate(flag)
    assert {arg.render() for arg in row.args} <= set(tr.options)
    assert tr.dry_run == (flag in ("--dry-run", "--print-qemu", "--print-qemu-cmd"))


@pytest.mark.parametrize(("row", "flag"), [(r, f) for r, f in ALL_FLAGS if r.kind == "select"],
                         ids=[f for r, f in ALL_FLAGS if r.kind == "select"])
def test_requirement_flags_select_their_tests(row: table.OldOption, flag: str) -> None:
    tr = translate(flag)
    assert tr.required == row.tests
    assert tr.options == translate().options  # a requirement changes the selection only


@pytest.mark.parametrize(("row", "flag"), [(r, f) for r, f in ALL_FLAGS if r.kind == "copy"],
                         ids=[f for r, f in ALL_FLAGS if r.kind == "copy"])
def test_copy_options_name_a_destination(row: table.OldOption, flag: str, tmp_path: Path) -> None:
    tr = translate(flag, str(tmp_path / "out" / "f.bin"))
    assert (row.artifact, tmp_path / "out" / "f.bin") in tr.copies


@pytest.mark.parametrize(("row", "flag"), [(r, f) for r, f in ALL_FLAGS if r.kind == "refuse"],
                         ids=[f for r, f in ALL_FLAGS if r.kind == "refuse"])
def test_refused_options_say_why_and_what_instead(
    row: table.OldOption, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (flag, "200") if row.takes_value else (flag,)
    err = usage_error(capsys, *argv)
    assert f"{flag} is not supported: {row.note}" in err


def test_every_row_was_exercised() -> None:
    """The parametrised tests above cover every kind of row there is."""
    assert {row.kind for row in table.OLD_OPTIONS} == {"value", "flag", "select", "choice", "copy", "refuse"}


def test_aliases_mean_the_same() -> None:
    for row in table.OLD_OPTIONS:
        if row.kind == "refuse":
            continue
        value = (sample_value(row),) if row.takes_value else ()
        results = [translate(flag, *value) for flag in row.flags]
        assert all(r == results[0] for r in results), row.flags


def test_concrete_translations() -> None:
    tr = translate("--qemu-system", "/usr/bin/qemu-system-x86_64", "--disk-image", "win7.qcow2",
                   "--memory-mb", "4096", "--smp", "1", "--timeout-seconds", "30", "--http-port", "28080",
                   "--with-input-wheel", "--with-blk-resize", "--with-input-events")
    assert tr.options[:2] == ("--qemu-system=/usr/bin/qemu-system-x86_64", "--vm-image=win7.qcow2")
    assert {"--vm-memory=4096", "--vm-smp=1", "--vm-timeout=30", "--vm-silence-timeout=30",
            "--vm-http-port=28080"} <= set(tr.options)
    assert tr.required == (
        "test_blk.py::test_virtio_blk_resize",
        "test_input_events.py::test_virtio_input_events",
        "test_input_events.py::test_virtio_input_wheel",
    )


def test_audio_backend_choice() -> None:
    assert translate("--virtio-snd-audio-backend", "none").required == ()
    assert translate("--virtio-snd-audio-backend", "wav").required == ("test_snd.py::test_virtio_snd_wav_on_host",)


def test_bad_choice_and_bad_number_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice" in usage_error(capsys, "--virtio-snd-audio-backend", "alsa")
    assert "invalid int value" in usage_error(capsys, "--timeout-seconds", "ten")


def test_skip_tokens_of_csum_requirements() -> None:
    tr = translate("--require-net-csum-offload", "--require-virtio-net-udp-csum-offload")
    assert tr.skip_tokens == {
        "test_net.py::test_virtio_net_tx_csum_offloaded": "VIRTIO_NET_CSUM_OFFLOAD_ZERO",
        "test_net.py::test_virtio_net_udp_csum_offloaded": "VIRTIO_NET_UDP_CSUM_OFFLOAD_ZERO",
    }
    assert translate("--with-blk-resize").skip_tokens == {}


def test_contradicting_options_are_refused() -> None:
    with pytest.raises(cli.CompatUsageError, match="--virtio-msix-vectors and --virtio-disable-msix contradict"):
        translate("--virtio-msix-vectors", "4", "--intx-only")
    # the same value twice is no contradiction
    assert "--vm-msix-vectors=0" in translate("--virtio-msix-vectors", "0", "--force-intx").options


def test_unknown_options_are_refused_with_the_qemu_hint(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "--disk-image", "x.img", "-cpu", "max")
    assert "unrecognized arguments: -cpu max" in err and "after `--`" in err
    assert "unrecognized" in usage_error(capsys, "--with-blk-resiz")  # no abbreviations, as before


def test_qemu_arguments_after_double_dash() -> None:
    tr = translate("--snapshot", "--", "-cpu", "max", "--snapshot")
    assert tr.options[-3:] == ("--qemu-extra-arg=-cpu", "--qemu-extra-arg=max", "--qemu-extra-arg=--snapshot")
    assert "--vm-snapshot=on" in tr.options


def test_artifacts_go_beside_the_serial_log(tmp_path: Path) -> None:
    tr = translate("--serial-log", str(tmp_path / "ci" / "serial.txt"))
    assert tr.artifacts == tmp_path / "ci" / "aero-artifacts"
    assert tr.copies == (("serial.log", tmp_path / "ci" / "serial.txt"),)


def test_pytest_command_line(tmp_path: Path) -> None:
    tr = translate("--with-blk-reset", "--disk-image", "w.img")
    args = cli.pytest_args(tmp_path / "vmm_flows", tr)
    assert args[0] == str(tmp_path / "vmm_flows")
    assert args[args.index("-m") + 1] == "not aero_opt_in or aero_compat_required"
    assert args[args.index("-c") + 1] == os.devnull
    assert args[args.index("--rootdir") + 1] == str(tmp_path)
    assert args[args.index("--confcutdir") + 1] == str(tmp_path / "vmm_flows")
    assert "no:cacheprovider" in args and "no:xdist" in args
    assert args[-len(tr.options):] == list(tr.options)


def test_help_lists_every_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in table.by_flag())
