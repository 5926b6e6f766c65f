"""The compatibility table itself: complete, consistent with vmm_flows and the plugin's options (pure)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pytest_aero_virtio import options
from pytest_aero_virtio.checks import lookup
from pytest_aero_virtio.compat import table
from pytest_aero_virtio.compat.flows import flows_dir

#: The Python harness's options as the old harness's README describes them (canonical names and aliases).
#: The table must accept every one of them.
README_OPTIONS = (
    "--qemu-system", "--disk-image", "--serial-log", "--timeout-seconds", "--snapshot", "--follow-serial",
    "--dry-run", "--print-qemu", "--print-qemu-cmd", "--enable-virtio-snd", "--with-virtio-snd",
    "--virtio-snd-audio-backend", "--virtio-snd-wav-path", "--with-snd-buffer-limits", "--with-blk-resize",
    "--with-blk-reset", "--require-net-csum-offload", "--require-net-udp-csum-offload", "--virtio-msix-vectors",
    "--virtio-blk-vectors", "--virtio-net-vectors", "--virtio-input-vectors", "--virtio-snd-vectors",
    "--require-virtio-blk-msix", "--require-virtio-net-msix", "--require-virtio-snd-msix",
    "--require-virtio-input-msix", "--with-virtio-tablet", "--with-input-events", "--with-virtio-input-events",
    "--with-input-wheel", "--with-virtio-input-wheel", "--require-virtio-input-wheel",
    "--enable-virtio-input-wheel", "--with-input-events-extended", "--with-input-media-keys",
    "--with-input-led", "--with-input-leds", "--with-input-tablet-events", "--with-virtio-input-tablet-events",
    "--with-tablet-events", "--qemu-preflight-pci", "--qmp-preflight-pci", "--memory-mb", "--smp",
)
#: The guest's opt-in flags the README names; accepted as the requirement they provision.
README_GUEST_FLAGS = (
    "--test-blk-resize", "--test-blk-reset", "--test-input-events", "--test-input-events-extended",
    "--test-input-media-keys", "--test-input-led", "--test-input-leds", "--test-input-tablet-events",
    "--test-tablet-events", "--test-snd", "--test-snd-buffer-limits", "--test-snd-capture",
)
def flow_tests() -> dict[str, tuple[str, ...]]:
    """``<file>::<test>`` -> the test's aero_check names, read from the vmm_flows sources."""
    out: dict[str, tuple[str, ...]] = {}
    for path in sorted(flows_dir().glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                checks: tuple[str, ...] = ()
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("aero_check"):
                        checks = tuple(a.value for a in deco.args if isinstance(a, ast.Constant))
                out[f"{path.name}::{node.name}"] = checks
    return out


def test_every_spelling_is_in_one_row() -> None:
    flags = table.by_flag()
    assert all(flag.startswith("--") for flag in flags)
    assert len(flags) == sum(len(row.flags) for row in table.OLD_OPTIONS)


@pytest.mark.parametrize("flag", README_OPTIONS + README_GUEST_FLAGS)
def test_every_option_of_the_old_readme_is_in_the_table(flag: str) -> None:
    assert flag in table.by_flag()


def test_every_named_test_exists_in_vmm_flows() -> None:
    known = flow_tests()
    named = {t for row in table.OLD_OPTIONS for t in row.tests}
    named |= {t for row in table.OLD_OPTIONS for ts in (row.choices or {}).values() for t in ts}
    named.add(table.RESULT_TEST)
    assert named - set(known) == set()


def test_every_opt_in_test_can_be_asked_for() -> None:
    """The old default set leaves out the opt-in tests; each must be reachable by some old flag."""
    opt_in = {key for key, checks in flow_tests().items() if any(lookup(c).opt_in for c in checks)}
    assert opt_in, "vmm_flows has opt-in tests"
    reachable = {t for row in table.OLD_OPTIONS for t in row.tests}
    assert opt_in - reachable == set()


def test_every_plugin_option_the_table_emits_is_registered() -> None:
    registered = {opt.flag for opt in options.OPTIONS}
    for name in table.PYTEST_OPTION.values():
        assert name in registered, name


def test_rows_are_complete_for_their_kind() -> None:
    for row in table.OLD_OPTIONS:
        assert row.note, row.name
        if row.kind in ("value", "copy", "choice"):
            assert row.takes_value, row.name
        if row.kind in ("value", "flag"):
            assert row.args, row.name
        if row.kind == "select":
            assert row.tests and not row.takes_value, row.name
        if row.kind == "copy":
            assert row.artifact, row.name
        if row.kind == "refuse":
            assert "pytest" in row.note or "test_" in row.note, f"{row.name}: a refusal names the pytest way"


def test_serial_log_keeps_the_old_default() -> None:
    row = table.by_flag()["--serial-log"]
    assert (row.kind, row.artifact, row.default) == ("copy", "serial.log", "win7-virtio-serial.log")


def test_markdown_rows_escape_pipes() -> None:
    rows = table.markdown_rows()
    assert len(rows) == 2 + len(table.OLD_OPTIONS)
    assert all(row.count(" | ") == 2 for row in rows[2:]), [r for r in rows[2:] if r.count(" | ") != 2]
    assert any("RESULT\\|PASS" in row for row in rows)


def test_flows_dir_of_this_checkout_is_the_repository_one() -> None:
    assert flows_dir() == Path(__file__).resolve().parents[2] / "vmm_flows"
