"""Every use of pytest's and pytest-xdist's private internals, in one place, each with why it is needed.

Nothing else in the package touches an underscore attribute of pytest or xdist. When an upstream change
makes one of these unnecessary or breaks it, this is the only module to change; tests in
``tests/plugin/test_pytest_internals.py`` fail when that happens.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

import pytest

__all__ = [
    "XDIST_LOADGROUP_ISSUE",
    "junit_case",
    "junit_case_output",
    "junit_suite_property",
    "junit_xml",
    "set_node_id",
    "terminal_fd",
    "write_junit_now",
]

#: pytest-xdist's own ``xdist_group`` handling assigns ``item._nodeid``, which pytest 9 no longer reads (it
#: keeps the id in ``item._id``), so ``--dist loadgroup`` silently stops grouping. Upstream issue:
XDIST_LOADGROUP_ISSUE = "https://github.com/pytest-dev/pytest-xdist/issues/1386"


def set_node_id(item: pytest.Item, new_id: str) -> None:
    """Give ``item`` a new node id (the ``@aero-vmN`` loadgroup suffix).

    Why: xdist's ``loadgroup`` scheduler groups by the ``@group`` suffix of node ids; there is no public way
    to put a collected item into a group (see :data:`XDIST_LOADGROUP_ISSUE`). pytest 9 stores the id in
    ``_id`` (a NodeId), earlier versions in ``_nodeid``.
    """
    if hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id  # type: ignore[import-not-found, unused-ignore]

        item._id = coerce_node_id(new_id)  # type: ignore[attr-defined, unused-ignore]
    else:  # pragma: no cover - pytest < 9
        item._nodeid = new_id  # type: ignore[attr-defined]


def terminal_fd(config: pytest.Config) -> int:
    """A new descriptor of the terminal pytest started on, past its output capture.

    Why: with ``--capture=fd`` (the default) fds 1 and 2 point into capture files during tests; live output
    (the followed serial port, progress lines) must reach the user's terminal, and the capture manager keeps
    a duplicate of the original descriptors (``targetfd_save``) that no public API exposes. Without capture
    (``-s``) fd 2 is the terminal itself.
    """
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    multi = getattr(capman, "_global_capturing", None)
    for capture in (getattr(multi, "err", None), getattr(multi, "out", None)):
        saved = getattr(capture, "targetfd_save", None)
        if isinstance(saved, int):
            return os.dup(saved)
    return os.dup(2)


def junit_xml(config: pytest.Config) -> Any | None:
    """pytest's JUnit writer (``_pytest.junitxml.LogXML``) when ``--junitxml`` is given, else None.

    Why: a plugin has no public way to add a test case's ``system-out`` (pytest writes none with the default
    ``junit_logging=no``) or a suite property from the xdist controller (``record_testsuite_property`` is a
    fixture, and fixtures run in the workers, where there is no XML). The writer sits in the config's stash
    under ``_pytest.junitxml.xml_key``.
    """
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest that moved it
        return None
    return config.stash.get(xml_key, None)


def junit_case(logxml: Any, report: pytest.TestReport) -> Any | None:
    """The finished test case of ``report``'s test (a ``_NodeReporter`` that pytest finalized), or None.

    Why: pytest builds a ``<testcase>`` per test and finalizes it while handling the teardown report; a plugin
    hook that runs after that (trylast) finds it among ``LogXML.node_reporters_ordered`` by its name and class
    name (``mangle_test_address``, as pytest derives them), the node id being final by then (the plugin drops
    its xdist scheduling suffix first).
    """
    from _pytest.junitxml import bin_xml_escape, mangle_test_address

    names = mangle_test_address(report.nodeid)
    name, classname = bin_xml_escape(names[-1]), ".".join(names[:-1])
    for case in reversed(logxml.node_reporters_ordered):
        if getattr(case, "nodes", None) is not None:
            continue  # still open: not this report's (finalized) case
        element = case.to_xml()
        if element.get("name") == name and str(element.get("classname", "")).endswith(classname):
            return case
    return None


def junit_case_output(case: Any, text: str) -> None:
    """Add ``text`` to the test case's ``<system-out>``, merged into the one pytest wrote if any.

    Works before and after pytest finalized the case: once finalized, ``_NodeReporter`` keeps only the built
    element (``to_xml()`` returns it). ``bin_xml_escape`` drops what XML cannot carry (a serial line holds
    control characters and ANSI escapes).
    """
    from _pytest.junitxml import bin_xml_escape

    escaped = bin_xml_escape(text)
    nodes: list[ET.Element] | None = getattr(case, "nodes", None)
    if nodes is None:  # finalized: edit the built <testcase> element itself
        element = case.to_xml()
        nodes = list(element)
        existing = next((n for n in nodes if n.tag == "system-out"), None)
        if existing is None:
            existing = ET.SubElement(element, "system-out")
    else:
        existing = next((n for n in nodes if n.tag == "system-out"), None)
        if existing is None:
            existing = ET.Element("system-out")
            nodes.append(existing)
    existing.text = (existing.text + "\n" if existing.text else "") + escaped


def junit_suite_property(logxml: Any, name: str, value: str) -> None:
    """A ``<property>`` of the test suite (``LogXML.add_global_property``, what ``record_testsuite_property``
    calls), added by the process that writes the XML: the xdist controller, or the only process."""
    logxml.add_global_property(name, value)


def write_junit_now(config: pytest.Config) -> bool:
    """Write the ``--junitxml`` file now, with the tests reported so far; False when there is none to write.

    Why: pytest-timeout's ``thread`` method ends a hung test by ``os._exit(1)``, so pytest never reaches
    ``pytest_sessionfinish``, where its JUnit plugin writes the file, and CI loses the results of every test
    that finished. The JUnit plugin object (``LogXML``) is kept under a private stash key
    (``_pytest.junitxml.xml_key``); its ``pytest_sessionfinish`` takes no arguments and only writes the file.
    Under xdist this is the controller's job (workers have no LogXML), so it does nothing in a worker.
    """
    xml = junit_xml(config)
    if xml is None:
        return False
    try:
        xml.pytest_sessionfinish()
    except Exception:
        return False
    return True
