"""``aero-virtio-win7-tests``: the old harness's command line (``invoke_aero_virtio_win7_tests.py``) as a
front end to pytest and this plugin, for CI scripts that still call it.

``table`` holds the one mapping from old options to pytest; ``cli`` parses and translates; ``run`` runs
pytest in this process and reads the reports back; ``outcome`` picks the old last line and exit code;
``flows`` finds the ``vmm_flows`` suites of the installed plugin.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    """Console-script entry point (imports lazily: ``--help`` must not pay for pytest's import)."""
    from .cli import main as cli_main

    return cli_main()
