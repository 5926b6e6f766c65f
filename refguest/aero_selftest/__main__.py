"""Entry point: ``python3 -m aero_selftest [args...]``."""

from .main import main

raise SystemExit(main())
