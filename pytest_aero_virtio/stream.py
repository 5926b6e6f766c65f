"""The stream of one VM's markers that tests wait on (thread-safe).

The VM's loop thread feeds it serial lines and host markers; test threads wait on it for a check's final
status, a READY line or the RESULT. Waits end at once when the answer is known to be negative (RESULT came
without the test, QEMU died), rather than at the timeout: a failing run should fail fast and say why.
Subscribers (the host reactions, the host-marker log) are called in the feeding thread, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import (
    INTERRUPTED,
    MISSING_MARKER,
    TIMEOUT,
    AeroError,
    AeroFailure,
    RunInterrupted,
    failed_token,
    missing_token,
    skipped_token,
)
from .guest_end import EndNotes, explains
from .markers import FINAL_STATUSES, GUEST_PREFIX, VERDICTS, HostMarker, Marker, StreamItem, parse_line

__all__ = ["MarkerStream", "Subscriber", "Wait"]

log = logging.getLogger(__name__)

Subscriber = Callable[[StreamItem], None]


@dataclass(frozen=True)
class Wait:
    """A wait in progress: what a test thread waits for and until when (``time.monotonic()``).

    Kept so the live progress line can say what the current test waits for and how long it may still wait.
    """

    what: str
    deadline: float
    #: When the wait began (``time.monotonic()``).
    started: float = 0.0


class MarkerStream:
    """History of one VM's markers, with waits. Thread-safe.

    The VM thread calls :meth:`feed_line` and :meth:`add_host`; subscribers are
    called in that feeding thread, in order, after the item is in the history (they must not block: a
    reaction schedules work on the VM loop). Test threads call the ``wait_*`` methods, which raise
    :class:`AeroFailure` carrying the last serial lines and ``log_paths``.
    """

    def __init__(
        self,
        tail_lines: int = 30,
        log_paths: Mapping[str, Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._dispatch = threading.RLock()
        self._history: list[StreamItem] = []
        self._tail: deque[str] = deque(maxlen=max(1, tail_lines))
        self._subscribers: list[Subscriber] = []
        self._closed: AeroError | None = None
        self._result: Marker | None = None
        self._clock = clock
        #: Artifact name -> path, attached to every failure raised by a wait (mutable: add logs as made).
        self.log_paths: dict[str, Path] = dict(log_paths or {})
        #: Exceptions raised by subscribers (logged and kept; a bad subscriber never stops the stream).
        self.subscriber_errors: list[BaseException] = []
        self.lines_seen = 0
        self._waits: dict[int, Wait] = {}
        self._notes = EndNotes()
        self._aborts: dict[int, AeroError] = {}

    # --- feeding -------------------------------------------------------------------------------------------

    def feed_line(self, line: str) -> Marker | None:
        """One complete serial line (without newline). Every line goes to the tail; guest markers to history.

        A host-marker line on the guest's console is only a line: host markers come from the host itself
        (:meth:`add_host`), so a guest cannot print the host evidence its own checks are judged by.
        """
        parsed = parse_line(line, self._clock())
        item = parsed if isinstance(parsed, Marker) else None
        explained = explains(line)  # before the lock: waiting tests and the progress ticker take it too
        with self._dispatch:
            with self._cond:
                self._tail.append(line.rstrip("\r\n"))
                self.lines_seen += 1
                if explained is not None:
                    self._notes.note(self.lines_seen, line, explained)
                if item is not None:
                    self._append(item)
            if item is not None:
                self._notify_subscribers(item)
        return item

    def add_host(self, hm: HostMarker) -> None:
        """Record what the host saw or did (it also appears in the failure tail, marked ``host:``)."""
        with self._dispatch:
            with self._cond:
                self._tail.append(f"host: {hm.line()}")
                self._append(hm)
            self._notify_subscribers(hm)

    def _append(self, item: StreamItem) -> None:
        # Caller holds self._cond.
        self._history.append(item)
        if isinstance(item, Marker) and item.kind == "RESULT":
            self._result = item
        self._cond.notify_all()

    def _notify_subscribers(self, item: StreamItem) -> None:
        for cb in list(self._subscribers):
            try:
                cb(item)
            except Exception as exc:
                log.exception("marker subscriber %r failed on %s", cb, item)
                self.subscriber_errors.append(exc)

    def subscribe(self, cb: Subscriber, replay: bool = False) -> None:
        """Call ``cb`` for every new item (in the feeding thread). ``replay`` first replays the history."""
        with self._dispatch:
            if replay:
                for item in self.history:
                    cb(item)
            self._subscribers.append(cb)

    def close(self, exc: AeroError) -> None:
        """QEMU is gone: every current and future wait that is not already satisfied raises ``exc``.

        The first close wins; later calls are ignored (the first cause is the real one).
        """
        with self._cond:
            if self._closed is None:
                self._closed = exc
            self._cond.notify_all()

    # --- queries -------------------------------------------------------------------------------------------

    @property
    def history(self) -> list[StreamItem]:
        with self._cond:
            return list(self._history)

    @property
    def markers(self) -> list[Marker]:
        """Guest markers only."""
        with self._cond:
            return [m for m in self._history if isinstance(m, Marker)]

    @property
    def host_markers(self) -> list[HostMarker]:
        with self._cond:
            return [m for m in self._history if isinstance(m, HostMarker)]

    @property
    def result(self) -> Marker | None:
        with self._cond:
            return self._result

    @property
    def closed(self) -> AeroError | None:
        """The exception given to :meth:`close`, or None while QEMU runs."""
        with self._cond:
            return self._closed

    @property
    def config(self) -> Marker | None:
        """The latest CONFIG line (the guest's effective configuration)."""
        with self._cond:
            return self._latest_kind("CONFIG")

    @property
    def end_kinds(self) -> list[str]:
        """What the explaining lines say happened (``panic``, ``poweroff``...), in order of first sight."""
        with self._cond:
            return list(self._notes.kinds)

    def tail(self, n: int | None = None) -> list[str]:
        """The last serial lines (all lines, markers or not; host markers prefixed ``host:``)."""
        with self._cond:
            lines = list(self._tail)
        return lines if n is None else lines[-n:]

    def latest(self, name: str) -> Marker | None:
        """The last TEST marker of ``name`` (any status)."""
        with self._cond:
            return self._latest_test(name, None)

    def final(self, name: str, statuses: Iterable[str] = FINAL_STATUSES) -> Marker | None:
        """The last TEST marker of ``name`` whose status is final (PASS/FAIL/SKIP/INFO by default)."""
        with self._cond:
            return self._latest_test(name, frozenset(statuses))

    def tests(self) -> list[str]:
        """Names of the tests seen so far, in first-seen order."""
        seen: dict[str, None] = {}
        for m in self.markers:
            if m.kind == "TEST" and m.name:
                seen.setdefault(m.name, None)
        return list(seen)

    def _latest_kind(self, kind: str) -> Marker | None:
        for item in reversed(self._history):
            if isinstance(item, Marker) and item.kind == kind:
                return item
        return None

    def _latest_test(self, name: str, statuses: frozenset[str] | None) -> Marker | None:
        for item in reversed(self._history):
            if (
                isinstance(item, Marker)
                and item.kind == "TEST"
                and item.name == name
                and (statuses is None or (item.status or "").upper() in statuses)
            ):
                return item
        return None

    # --- waits ---------------------------------------------------------------------------------------------

    def _failure(self, token: str, message: str, fix: str | None = None) -> AeroFailure:
        return AeroFailure(
            token,
            message,
            fix,
            serial_tail=list(self._tail),
            artifacts=self.log_paths,
            explaining=self._notes.lines(),
        )

    def _closed_failure(self, exc: AeroError) -> AeroError:
        if isinstance(exc, AeroFailure):
            return exc.with_context(
                serial_tail=list(self._tail), artifacts=self.log_paths, explaining=self._notes.lines()
            )
        return exc

    def _wait(
        self,
        check: Callable[[], Marker | None],
        early: Callable[[], AeroFailure | None],
        timeout: float,
        what: str,
    ) -> Marker:
        deadline = time.monotonic() + timeout
        me = threading.get_ident()
        with self._cond:
            self._waits[me] = Wait(what, deadline, time.monotonic())  # for the live progress line
            try:
                while (found := check()) is None:
                    self._raise_if_over(me, early, deadline, timeout, what)
                    self._cond.wait(deadline - time.monotonic())
                return found
            except RunInterrupted as exc:
                # A SIGTERM to pytest (the signal handler raised it on this thread): report the test as
                # interrupted, with what it waited for and the guest's last lines.
                raise self._failure(
                    INTERRUPTED, f"{exc.why} while the test waited for the {what}", fix=exc.fix
                ) from None
            finally:
                self._waits.pop(me, None)
                self._aborts.pop(me, None)

    def _raise_if_over(
        self, me: int, early: Callable[[], AeroFailure | None], deadline: float, timeout: float, what: str
    ) -> None:
        """Raise why the wait of thread ``me`` ends now, if it does (caller holds the condition)."""
        failure = early()
        if failure is not None:
            raise failure
        aborted = self._aborts.pop(me, None)
        if aborted is not None:
            raise self._closed_failure(aborted)
        if self._closed is not None:
            raise self._closed_failure(self._closed)
        if deadline - time.monotonic() <= 0:
            raise self._failure(
                TIMEOUT,
                f"no {what} within {timeout:g} s",
                fix="see the serial log; raise the timeout only if the guest is merely slow",
            )

    def abort_wait(self, thread_id: int, reason: Callable[[Wait], AeroError]) -> bool:
        """End the wait of thread ``thread_id`` now with ``reason(wait)`` (pytest-timeout expired for its test).

        Only that wait ends: the stream and the VM go on, so the VM's other tests still get their verdicts.
        Returns False when that thread is not waiting on this stream.
        """
        with self._cond:
            wait = self._waits.get(thread_id)
            if wait is None:
                return False
            self._aborts[thread_id] = reason(wait)
            self._cond.notify_all()
            return True

    @property
    def waits(self) -> list[Wait]:
        """The waits in progress (normally at most one: the current test's)."""
        with self._cond:
            return list(self._waits.values())

    def _missing_after_result(self, name: str, what: str) -> AeroFailure | None:
        if self._result is None or self._latest_test(name, None) is not None:
            return None
        return self._failure(
            missing_token(name),
            f"{self._result.raw} arrived without any {name} marker (waited for {what})",
            fix="the guest did not run this check: is it an old selftest, or was the device missing?",
        )

    def wait_final(self, name: str, timeout: float, statuses: Iterable[str] = FINAL_STATUSES) -> Marker:
        """Wait until test ``name`` has a final status (returns the latest such marker).

        Raises AeroFailure ``MISSING_<TEST>`` as soon as RESULT arrived without the test, ``TIMEOUT``, or the
        :meth:`close` exception (QEMU_EXITED).
        """
        wanted = frozenset(s.upper() for s in statuses)
        what = f"final {name} marker ({'/'.join(sorted(wanted))})"

        def early() -> AeroFailure | None:
            missing = self._missing_after_result(name, what)
            if missing is not None or self._result is None:
                return missing
            latest = self._latest_test(name, None)
            return self._failure(
                missing_token(name),
                f"{self._result.raw} arrived but {name} never reached a final status"
                f" (last: {latest.raw if latest else 'none'})",
            )

        return self._wait(lambda: self._latest_test(name, wanted), early, timeout, what)

    def wait_status(self, name: str, statuses: Iterable[str], timeout: float) -> Marker:
        """Wait until test ``name`` has printed one of ``statuses`` (e.g. READY); returns the latest such.

        Fails early if the test reached a verdict (PASS/FAIL/SKIP) not in ``statuses`` first (token
        ``<TEST>_SKIPPED`` / ``<TEST>_FAILED``), or RESULT arrived without it (``MISSING_<TEST>``).
        """
        wanted = frozenset(s.upper() for s in statuses)
        what = f"{name} marker with status {'/'.join(sorted(wanted))}"

        def early() -> AeroFailure | None:
            verdict = self._latest_test(name, VERDICTS - wanted)
            if verdict is not None:
                status = (verdict.status or "").upper()
                token = skipped_token(name) if status == "SKIP" else failed_token(name)
                hint = " ".join((*verdict.tokens, *(f"{k}={v}" for k, v in verdict.fields.items())))
                return self._failure(
                    token,
                    f"{name} ended with {status}{' (' + hint + ')' if hint else ''} while waiting for {what}",
                )
            missing = self._missing_after_result(name, what)
            if missing is not None or self._result is None:
                return missing
            return self._failure(missing_token(name), f"{self._result.raw} arrived without {what}")

        return self._wait(lambda: self._latest_test(name, wanted), early, timeout, what)

    def wait_result(self, timeout: float) -> Marker:
        """Wait for the RESULT line."""
        return self._wait(lambda: self._result, lambda: None, timeout, f"{GUEST_PREFIX}|RESULT line")

    def wait_for(
        self, predicate: Callable[[Marker], bool], timeout: float, what: str, until_result: bool = True
    ) -> Marker:
        """Generic wait for the latest guest marker matching ``predicate``.

        With ``until_result``, a RESULT line without a match fails at once with token ``MISSING_MARKER``;
        otherwise only the deadline (``TIMEOUT``) or :meth:`close` end the wait.
        """

        def check() -> Marker | None:
            for item in reversed(self._history):
                if isinstance(item, Marker) and predicate(item):
                    return item
            return None

        def early() -> AeroFailure | None:
            if until_result and self._result is not None:
                return self._failure(MISSING_MARKER, f"{self._result.raw} arrived without {what}")
            return None

        return self._wait(check, early, timeout, what)
