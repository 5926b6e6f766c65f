"""The silence watch: a guest that goes quiet is seen early, not at the end of a ten-minute run timeout.

Every quiet stretch counts, not only the wait for the first byte: a guest that printed START and then hung
(a blue screen, a dialog, a deadlocked driver) is as stuck as one that never printed. After ``warn_after``
seconds of silence (60, or half the timeout if shorter) the owner is told once per quiet stretch (a terminal
warning, a screenshot); after ``timeout`` seconds the run of that VM is declared failed. A check that
legitimately stays quiet longer says so with :meth:`SilenceWatch.allow_quiet`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import NO_SERIAL_OUTPUT, AeroFailure

__all__ = ["SILENCE_WARN_S", "SilenceWatch", "silence_failure"]

LOG = logging.getLogger(__name__)
#: A guest quiet this long (or half the silence timeout, if shorter) gets a warning line while the run goes on.
SILENCE_WARN_S = 60.0


def silence_failure(quiet_s: float, printed_before: bool, artifacts: Mapping[str, Path]) -> AeroFailure:
    """The ``NO_SERIAL_OUTPUT`` verdict: before the first byte, or a quiet stretch after some output."""
    said = "nothing more" if printed_before else "nothing"
    return AeroFailure(
        NO_SERIAL_OUTPUT,
        f"the guest printed {said} on the first serial port for {quiet_s:.3g} s (--vm-silence-timeout)",
        "is the image bootable (try `aero-virtio-refenv bare --run`, see qemu-stderr.log)? is the "
        "selftest installed and started at boot? does it write to COM1, the first serial port? a guest "
        "that hung shows why on its screen: see the screenshot",
        artifacts=artifacts,
    )


class SilenceWatch:
    """Polls the time of the last output once a second on the VM loop (cheap, and exact enough). Nothing fires
    while ``active()`` is false; without ``on_warn`` nothing warns."""

    def __init__(
        self,
        timeout: float,
        last_output: Callable[[], float],
        on_timeout: Callable[[float], None],
        *,
        on_warn: Callable[[float], None] | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.timeout = timeout
        #: When a quiet stretch earns a warning: 60 s, or half the silence timeout if that is shorter.
        self.warn_after = min(SILENCE_WARN_S, timeout / 2)
        self._last_output = last_output
        self._on_timeout = on_timeout
        self._on_warn = on_warn
        self._active = active
        self._poll_s = min(1.0, timeout / 4)
        self._quiet_ok_until = 0.0
        self._warned_for: float | None = None

    def allow_quiet(self, seconds: float) -> None:
        """A check that legitimately prints nothing for a while: no silence counts for ``seconds`` from now."""
        self._quiet_ok_until = max(self._quiet_ok_until, time.monotonic() + seconds)

    def quiet_for(self) -> float:
        """Seconds of silence that count (a permitted quiet period does not)."""
        return time.monotonic() - max(self._last_output(), self._quiet_ok_until)

    async def run(self) -> None:
        """Until the timeout fires (then once ``on_timeout(quiet_s)``) or the task is cancelled."""
        while True:
            await asyncio.sleep(self._poll_s)
            quiet = self.quiet_for()
            if not self._active():  # e.g. after the guest's RESULT: it has nothing more to say
                continue
            if quiet >= self.timeout:
                self._on_timeout(quiet)
                return
            if self._on_warn is not None and quiet >= self.warn_after:
                stretch = self._last_output()
                if self._warned_for != stretch:
                    self._warned_for = stretch
                    try:
                        self._on_warn(quiet)
                    except Exception:  # a warning must never stop the watch
                        LOG.exception("silence warning failed")
