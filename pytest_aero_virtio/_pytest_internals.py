"""Every use of pytest's and pytest-xdist's private internals, in one place, each with why it is needed.

Nothing else in the package touches an underscore attribute of pytest or xdist. When an upstream change
makes one of these unnecessary or breaks it, this is the only module to change; tests in
``tests/plugin/test_pytest_internals.py`` fail when that happens.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

__all__ = ["XDIST_LOADGROUP_ISSUE", "set_node_id", "terminal_fd", "write_junit_now"]

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


def write_junit_now(config: pytest.Config) -> bool:
    """Write the ``--junitxml`` file now, with the tests reported so far; False when there is none to write.

    Why: pytest-timeout's ``thread`` method ends a hung test by ``os._exit(1)``, so pytest never reaches
    ``pytest_sessionfinish``, where its JUnit plugin writes the file, and CI loses the results of every test
    that finished. The JUnit plugin object (``LogXML``) is kept under a private stash key
    (``_pytest.junitxml.xml_key``); its ``pytest_sessionfinish`` takes no arguments and only writes the file.
    Under xdist this is the controller's job (workers have no LogXML), so it does nothing in a worker.
    """
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - a pytest that moved it
        return False
    xml = config.stash.get(xml_key, None)
    if xml is None:
        return False
    try:
        xml.pytest_sessionfinish()
    except Exception:
        return False
    return True
