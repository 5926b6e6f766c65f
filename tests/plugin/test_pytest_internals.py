"""The private pytest internals the plugin relies on (pytest_aero_virtio/_pytest_internals.py) still behave.

Each test drives a real pytest run; when an upstream change breaks an internal, the test of that internal
fails here by name, rather than JUnit reports silently losing their evidence.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

CONFTEST = """
import pytest
from pytest_aero_virtio._pytest_internals import junit_case, junit_case_output, junit_suite_property, junit_xml

def pytest_configure(config):
    global CONFIG
    CONFIG = config

@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    logxml = junit_xml(CONFIG)
    if report.when == "teardown" and logxml is not None:
        case = junit_case(logxml, report)
        assert case is not None, report.nodeid
        junit_case_output(case, "evidence of " + report.nodeid + " \\x1b[31mred\\x1b[0m")

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    logxml = junit_xml(session.config)
    if logxml is not None:
        junit_suite_property(logxml, "aero.example", "42")
"""

TESTS = """
def test_passes():
    print("captured output")

def test_fails():
    print("captured output")
    assert False

def test_twin():
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> ET.Element:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_one=TESTS, test_two="def test_twin():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml", *args)
    result.assert_outcomes(passed=3, failed=1)
    return ET.parse(pytester.path / "junit.xml").getroot()


@pytest.mark.parametrize(
    "args",
    [(), ("-o", "junit_logging=system-out"), ("-o", "junit_logging=all", "-o", "junit_log_passing_tests=true")],
    ids=["no-logging", "system-out", "all"],
)
def test_system_out_and_suite_properties(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    root = _run(pytester, *args)
    suite = root.find("testsuite")
    assert suite is not None
    assert [(p.get("name"), p.get("value")) for p in suite.iter("property")] == [("aero.example", "42")]
    cases = suite.findall("testcase")
    assert len(cases) == 4  # no empty case was added by looking one up
    for case in cases:
        outs = case.findall("system-out")
        assert len(outs) == 1, ET.tostring(case)  # merged into pytest's own when it writes one
        text = outs[0].text or ""
        assert "evidence of" in text and "\x1b" not in text  # escaped: XML cannot carry ESC
        assert f"::{case.get('name')}" in text  # each case got its own test's evidence
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    assert "captured output" in (by_name[("test_one", "test_fails")].findtext("system-out") or "") or not args


def test_under_xdist_the_controller_writes_them(pytester: pytest.Pytester) -> None:
    root = _run(pytester, "-n", "2")
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 4
    assert all("evidence of" in (c.findtext("system-out") or "") for c in cases)
    assert [p.get("name") for p in root.iter("property")] == ["aero.example"]


def test_xdist_own_grouping_is_still_broken_so_set_node_id_is_needed(pytester: pytest.Pytester) -> None:
    """pytest-xdist's ``xdist_group`` marker does not group on pytest 9 (``XDIST_LOADGROUP_ISSUE``): its node id
    suffix never lands, so the plugin sets ``@aero-vmN`` itself (``set_node_id``). When this test fails, xdist
    fixed it upstream: mark the items with ``xdist_group`` instead and delete ``set_node_id``."""
    from pytest_aero_virtio._pytest_internals import XDIST_LOADGROUP_ISSUE

    pytester.makepyfile(
        test_grouped="""
        import pytest

        @pytest.mark.xdist_group("together")
        @pytest.mark.parametrize("i", range(6))
        def test_x(i):
            pass
        """
    )
    res = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=6)
    out = res.stdout.str()
    grouped = "@together" in out and len(set(re.findall(r"\[(gw\d)\] \[", out))) == 1
    assert not grouped, f"xdist groups by itself again ({XDIST_LOADGROUP_ISSUE} fixed): remove set_node_id"
