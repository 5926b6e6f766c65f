"""Where the ``vmm_flows`` suites are when the compatibility command runs.

The suites are test files, not plugin code, and live at the top of the repository. The wheel ships a copy
inside the package (``pytest_aero_virtio/vmm_flows/``, mapped in pyproject.toml), so an installed plugin
carries the very tests the command runs; an editable install or a source checkout has no copy and uses the
checkout's ``vmm_flows/`` beside the package. The packaged copy is looked for first: it is the one that
matches the installed plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest_aero_virtio

from ..errors import AeroConfigError

#: A file every copy of the suites has: how a directory is recognised as ``vmm_flows``.
MARKER_FILE = "test_selftest.py"


def candidates(package_dir: Path | None = None) -> list[Path]:
    """The places looked at, in order: the packaged copy, then the checkout beside the package."""
    pkg = package_dir or Path(pytest_aero_virtio.__file__).resolve().parent
    return [pkg / "vmm_flows", pkg.parent / "vmm_flows"]


def flows_dir(package_dir: Path | None = None) -> Path:
    """The ``vmm_flows`` directory to run; a clear error when neither place has it."""
    places = candidates(package_dir)
    for place in places:
        if (place / MARKER_FILE).is_file():
            return place
    raise AeroConfigError(
        "the vmm_flows suites are not installed: looked in " + ", ".join(str(p) for p in places),
        fix="reinstall the plugin from its wheel (it ships them as pytest_aero_virtio/vmm_flows), or install "
        "it editable from a checkout (pip install -e .)",
    )
