"""The selftest's main sequence: START, CONFIG, blk, input, snd, net (PROTOCOL.md section 2), RESULT.

Each device module's checks are isolated: an exception in one check becomes a FAIL marker for that check
and the run continues.  A watchdog guarantees a RESULT line even if something blocks beyond every
per-check timeout, so the host never waits for its global timeout.
"""

from __future__ import annotations

import os
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence

from . import PROTOCOL_VERSION, blk, config, inputs, net, snd
from .markers import Reporter, error_text, format_line, write_fd

WATCHDOG_S = 400.0


def _raw_output(fd: int) -> None:
    """LF line ends on the serial port: clear OPOST so the tty does not turn LF into CRLF."""
    try:
        if os.isatty(fd):
            attrs = termios.tcgetattr(fd)
            attrs[1] &= ~termios.OPOST
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
    except termios.error:
        pass


def _start_watchdog(rep: Reporter, seconds: float) -> None:
    def fire() -> None:
        rep.emit(format_line("RESULT", {"reason": "watchdog", "after_s": int(seconds)}, ("FAIL",)))
        os._exit(1)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _raw_output(1)
    rep = Reporter(write_fd(1))
    t0 = time.monotonic()
    rep.emit(format_line("START", {"version": PROTOCOL_VERSION}))
    cfg = config.load(args, os.environ)
    rep.emit(format_line("CONFIG", config.config_fields(cfg)))
    if cfg.unknown:
        rep.info("selftest-config", unknown_args=",".join(cfg.unknown))
    _start_watchdog(rep, WATCHDOG_S)
    steps: list[tuple[str, Callable[[Reporter, config.Config], None]]] = [
        ("blk", blk.run),
        ("input", inputs.run),
        ("snd", snd.run),
        ("net", net.run),
    ]
    for label, step in steps:
        try:
            step(rep, cfg)
        except Exception as exc:  # a bug outside any check's own guard: report it, keep going
            rep.fail(f"selftest-{label}", "exception", err=error_text(exc))
    rep.result()
    sys.stderr.write(f"aero_selftest: done in {time.monotonic() - t0:.1f} s\n")
    return 0
