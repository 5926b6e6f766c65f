"""The selection on the real vmm_flows (collect only, no VM boots): the old default set plus required tests."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from pytest_aero_virtio.checks import lookup
from pytest_aero_virtio.compat import cli
from pytest_aero_virtio.compat.flows import flows_dir
from pytest_aero_virtio.compat.run import CompatPlugin

from .test_table import flow_tests


def collect(pytester: pytest.Pytester, required: Sequence[str], *extra: str) -> CompatPlugin:
    """Collect vmm_flows with the compat command's selection; the plugin records what was selected."""
    tr = cli.translate(*cli.parse([]))
    plugin = CompatPlugin(required=tuple(required))
    args = [*cli.pytest_args(flows_dir(), tr), "--collect-only", "-q", *extra]
    result = pytester.runpytest_inprocess(*args, plugins=[plugin])
    plugin.facts.pytest_code = int(result.ret)
    return plugin


def selected(plugin: CompatPlugin) -> set[str]:
    return {rec.key for rec in plugin.records.values()}


def is_opt_in(checks: Sequence[str]) -> bool:
    return any(lookup(c).opt_in for c in checks)


def test_default_set_is_every_test_without_a_guest_opt_in(pytester: pytest.Pytester) -> None:
    plugin = collect(pytester, ())
    tests = flow_tests()
    assert plugin.facts.pytest_code == 0, plugin.facts
    assert selected(plugin) == {key for key, checks in tests.items() if not is_opt_in(checks)}
    assert "test_selftest.py::test_selftest_result" in selected(plugin)
    assert "test_blk.py::test_virtio_blk_resize" not in selected(plugin)


def test_required_tests_join_the_default_set(pytester: pytest.Pytester) -> None:
    required = ("test_blk.py::test_virtio_blk_resize", "test_snd.py::test_virtio_snd_capture")
    plugin = collect(pytester, required)
    default = collect(pytester, ())
    assert selected(plugin) == selected(default) | set(required)
    records = {rec.key: rec for rec in plugin.records.values()}
    assert records["test_blk.py::test_virtio_blk_resize"].checks == ("virtio-blk-resize",)
    assert all(rec.outcome == "notrun" for rec in records.values())


def test_a_stale_table_entry_is_a_usage_error(pytester: pytest.Pytester) -> None:
    plugin = collect(pytester, ("test_blk.py::test_no_such_test",))
    assert plugin.facts.pytest_code == int(pytest.ExitCode.USAGE_ERROR)
    assert "test_blk.py::test_no_such_test" in str(plugin.facts.usage_error)


def test_pytest_configuration_of_the_current_directory_is_ignored(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\naddopts = --this-option-does-not-exist\n")
    pytester.makeconftest("raise RuntimeError('a conftest of the current directory must not be loaded')")
    plugin = collect(pytester, ())
    assert plugin.facts.pytest_code == 0
    assert os.devnull in cli.pytest_args(flows_dir(), cli.translate(*cli.parse([])))
