"""Entry point: ``python3 -m aero_selftest [args...]``.

START is written (by :mod:`early`) before the checks are imported; see there why.
"""

import os
import sys

from . import PROTOCOL_VERSION, early

_console = early.open_console(os.environ)
_args_texts = early.read_args()  # read once: for the noise check here and for the configuration in main
_started = early.begin(sys.argv[1:], PROTOCOL_VERSION, _args_texts, console_fd=_console)
early.seed_crng()

from .main import main  # noqa: E402  (deliberately after START)

raise SystemExit(main(started=_started, console_fd=_console, args_texts=_args_texts))
