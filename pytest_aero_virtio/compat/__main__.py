"""``python -m pytest_aero_virtio.compat``: the same as the ``aero-virtio-win7-tests`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
