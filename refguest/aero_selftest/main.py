"""The selftest's main sequence: START, CONFIG, blk, input, snd, net, RESULT (docs/protocol.md).

START is normally written by :mod:`early` before this module is imported; with serial noise asked for, the
noise and then START are written here, once the configuration is known.

Each device module's checks are isolated: an exception in one check becomes a FAIL marker for that check
and the run continues.  A watchdog guarantees a RESULT line even if something blocks beyond every
per-check timeout, so the host never waits for its global timeout.

Exit status: 0 after RESULT, ``EXIT_WATCHDOG`` after the watchdog's RESULT; anything else means the process
died before a RESULT line, and the image's /init writes ``RESULT|FAIL|reason=selftest_crashed`` for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import PROTOCOL_VERSION, blk, config, early, inputs, net, snd
from .markers import Reporter, error_text, format_line, write_all, write_bytes, write_console, write_fd
from .pure import noise_binary, noise_line

WATCHDOG_S = 400.0
EXIT_WATCHDOG = 3


def _start_watchdog(rep: Reporter, seconds: float) -> None:
    def fire() -> None:
        rep.emit(format_line("RESULT", {"reason": "watchdog", "after_s": int(seconds)}, ("FAIL",)))
        os._exit(EXIT_WATCHDOG)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


DRIVERS_TIMEOUT_S = 60.0


def wait_for_drivers(environ: Mapping[str, str], timeout: float = DRIVERS_TIMEOUT_S) -> float:
    """Wait until the image's background driver loader is done (``AERO_SELFTEST_DRIVERS``); returns seconds.

    Its errors (``<path>.log``: failed insmods) go to stderr, i.e. the serial log, between markers.  After
    ``timeout`` the checks run anyway and report what is missing.
    """
    prefix = environ.get(early.DRIVERS_ENV, "")
    if not prefix:
        return 0.0
    t0 = time.monotonic()
    done = Path(prefix + ".done")
    while not done.exists() and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        log = Path(prefix + ".log").read_text(errors="replace").strip()
        if log:
            sys.stderr.write(log + "\n")
    return time.monotonic() - t0


def write_noise(fd: int, cfg: config.Config) -> None:
    """The serial-cost noise (``--noise-line-bytes``, ``--noise-binary-bytes``): serial port only."""
    write_bytes(fd, noise_line(cfg.noise_line_bytes))
    write_bytes(fd, noise_binary(cfg.noise_binary_bytes))


def main(
    argv: Sequence[str] | None = None,
    started: bool = False,
    console_fd: int | None = None,
    args_texts: tuple[str, str] | None = None,
) -> int:
    """Run every check; ``started``: START is out already; ``console_fd``: the console to mirror markers on;
    ``args_texts``: the args files' texts as :func:`early.read_args` read them (read here when not given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    early.raw_output(1)
    write = write_fd(1)
    if console_fd is not None:
        write = write_all(write, write_console(console_fd))
    rep = Reporter(write)
    t0 = time.monotonic()
    image_text, fw_cfg_text = early.read_args() if args_texts is None else args_texts
    cfg = config.load(args, os.environ, image_text, fw_cfg_text)
    if not started:
        write_noise(1, cfg)
        rep.emit(format_line("START", {"version": PROTOCOL_VERSION}))
    rep.emit(format_line("CONFIG", config.config_fields(cfg)))
    if cfg.unknown:
        rep.info("selftest-config", unknown_args=",".join(cfg.unknown))
    _start_watchdog(rep, WATCHDOG_S)
    wait_for_drivers(os.environ)
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
    with contextlib.suppress(OSError):
        sys.stderr.write(f"aero_selftest: done in {time.monotonic() - t0:.1f} s\n")
    return 0
