"""One QEMU process and everything attached to it: QMP, the serial console, host services, shutdown.

:class:`VmSession` owns one asyncio event loop running in a dedicated daemon thread per VM. Everything that
must react in real time lives on that loop: the serial reader (always draining the console, so QEMU never
stalls on a full socket), the QMP client (``qemu.qmp.QMPClient``), the host services, the reactions armed for
READY lines, and the watcher that notices the moment QEMU exits. Test code is synchronous and reaches the loop
through :func:`asyncio.run_coroutine_threadsafe` with timeouts (``start``, ``stop``, ``qmp``).

Launching follows QEMU's own ``python/qemu/machine`` (``QEMUMachine``): no shell, and the QMP monitor and the
console are each one end of a ``socket.socketpair()`` handed to QEMU as ``-chardev socket,fd=N``. There is no
listening socket and no path in the file system, so there is no connection race and nothing to collide with
under pytest-xdist.

Process hygiene, because a leaked QEMU keeps a CPU busy for minutes:

* QEMU runs in its own session/process group, so signals to the group reach helpers it may fork, and a Ctrl-C
  in the terminal goes to pytest only (the harness decides how QEMU ends).
* ``PR_SET_PDEATHSIG=SIGKILL`` is set in the child. Linux delivers it when the *thread* that forked the child
  exits, not the process. The fork therefore happens on the VM's loop thread, which by construction lives
  until QEMU has been reaped: if the whole pytest process dies (SIGKILL, a crashed xdist worker), the kernel
  kills QEMU; if the loop thread somehow ends early, QEMU is killed too, which is what we want.
* A module-level registry of live sessions and :func:`kill_all` (SIGKILL to every QEMU process group) serve
  emergency paths: atexit, SIGTERM/SIGINT handlers and pytest-timeout installed by the plugin.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from pytest_aero_virtio.artifacts import ArtifactDir
from pytest_aero_virtio.errors import (
    QEMU_EXITED,
    QEMU_NOT_FOUND,
    TIMEOUT,
    AeroConfigError,
    AeroError,
    AeroFailure,
)
from pytest_aero_virtio.markers import LineSplitter

if TYPE_CHECKING:
    from pytest_aero_virtio.host.services import HostServices
    from pytest_aero_virtio.markers import HostMarker, Marker, MarkerStream

__all__ = [
    "NO_SERIAL_OUTPUT",
    "QmpChannel",
    "Reactions",
    "StopTimeouts",
    "VmSession",
    "child_setup",
    "describe_status",
    "exit_failure",
    "kill_all",
    "live_sessions",
    "stop_all",
    "tail_lines",
]

LOG = logging.getLogger(__name__)

#: The guest printed nothing on the first serial port within ``first_output_timeout``.
NO_SERIAL_OUTPUT = "NO_SERIAL_OUTPUT"

#: How long an exit waits for the console to reach EOF before the stream is closed. QEMU's end of the socket
#: closes when it exits, so EOF is immediate unless a stray process still holds the descriptor.
_SERIAL_DRAIN_S = 0.5
_READ_CHUNK = 65536
_STDERR_TAIL_BYTES = 16384
_HARNESS_PREFIX = "[aero-harness]"

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# --------------------------------------------------------------------------------------------------------


def describe_status(returncode: int | None) -> str:
    """``0`` -> ``exit status 0``, ``-9`` -> ``killed by signal 9 (SIGKILL)``, None -> ``still running``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit status {returncode}"


def tail_lines(data: bytes, n: int) -> list[str]:
    """The last ``n`` non-empty lines of ``data``, decoded leniently: the part of QEMU's stderr to show."""
    text = data.decode("utf-8", errors="replace")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return lines[-n:] if n > 0 else []


def exit_failure(
    returncode: int | None,
    *,
    during_start: bool,
    result_seen: bool,
    stopped_how: str | None,
    stderr_tail: Sequence[str],
    artifacts: Mapping[str, Path] | None = None,
) -> AeroFailure:
    """The error that closes the marker stream when QEMU is gone; every pending wait raises it.

    The token is always ``QEMU_EXITED`` (what CI greps for), but the message tells apart the cases a reader
    must not confuse: QEMU refused to start (its stderr says why), QEMU died under a running guest (a
    failure), the guest powered off after its RESULT line (normal - only waits for markers that never came
    fail), and the harness stopped the VM itself.
    """
    status = describe_status(returncode)
    tail = [f"qemu: {line}" for line in stderr_tail]
    if stopped_how is not None:
        message = f"the harness stopped QEMU ({stopped_how}, {status}); the awaited marker never came"
        fix = None
    elif during_start:
        message = f"QEMU exited during start-up ({status})"
        fix = (
            "read QEMU's error below (an unknown device/property, a missing file, a busy port); "
            "the full command line is in qemu-argv.txt"
        )
    elif result_seen:
        message = (
            f"QEMU exited ({status}) after the guest's RESULT line (normal end of the selftest); "
            "the awaited marker never came"
        )
        fix = "the guest finished without printing it: check that the guest runs this check (serial.log)"
    else:
        message = f"QEMU exited unexpectedly ({status}) before the guest's RESULT line"
        fix = "see QEMU's stderr below and qemu-stderr.log; a guest poweroff or panic before RESULT ends here"
    if tail:
        message += "\n" + "\n".join(tail)
    return AeroFailure(QEMU_EXITED, message, fix, artifacts=artifacts)


def _qemu_not_found(binary: str, reason: str) -> AeroConfigError:
    return AeroConfigError(
        f"QEMU binary not usable: {binary!r} ({reason})",
        "install qemu-system-x86 (apt install qemu-system-x86), pass --qemu-system=PATH, "
        "or provision the pinned QEMU with `aero-virtio-refenv qemu`",
        token=QEMU_NOT_FOUND,
    )


def _check_binary(binary: str) -> None:
    """Fail with QEMU_NOT_FOUND before forking when argv[0] cannot possibly be executed."""
    if os.sep in binary:
        if not os.path.exists(binary):
            raise _qemu_not_found(binary, "no such file")
        if os.path.isdir(binary) or not os.access(binary, os.X_OK):
            raise _qemu_not_found(binary, "not an executable file")
    elif shutil.which(binary) is None:
        raise _qemu_not_found(binary, "not found on PATH")


# --------------------------------------------------------------------------------------------------------
# Process registry and emergency cleanup
# --------------------------------------------------------------------------------------------------------

# Re-entrant: kill_all() may run in a signal handler that interrupted this very lock's holder (main thread).
_LIVE_LOCK = threading.RLock()
#: pid (== process group id) of every QEMU started and not yet reaped -> its session.
_LIVE: dict[int, VmSession] = {}


def live_sessions() -> list[VmSession]:
    """Sessions whose QEMU has been started and not yet reaped."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


def kill_all() -> int:
    """SIGKILL the process group of every live QEMU; safe in signal handlers and atexit. Returns the count.

    A pid stays in the registry until its session reaps it, and reaping happens under the same lock after
    removal, so a pid signalled here can never have been recycled for an unrelated process.
    """
    n = 0
    with _LIVE_LOCK:
        for pid in list(_LIVE):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                n += 1
    return n


def stop_all() -> None:
    """Orderly :meth:`VmSession.stop` of every live session (session teardown); never raises."""
    for session in live_sessions():
        try:
            session.stop()
        except Exception:  # last-resort cleanup must go on with the other sessions
            LOG.exception("stopping %r failed", session)
    kill_all()


atexit.register(kill_all)


def child_setup(parent_pid: int) -> Callable[[], None]:
    """The ``preexec_fn``: ask the kernel to SIGKILL the child when its forking thread dies.

    The libc function is resolved here, in the parent, so the child (a fork of a threaded process) only makes
    one plain system call before exec. If the parent already died between fork and prctl, the death signal
    would never come, hence the ppid check.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: process-group kills remain
        return lambda: None
    pr_set_pdeathsig = 1

    def setup() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(127)

    return setup


# --------------------------------------------------------------------------------------------------------
# QMP
# --------------------------------------------------------------------------------------------------------


class _QmpLog:
    """Append-only JSON-lines log of QMP traffic: ``<seconds since launch> <direction> <json>``."""

    def __init__(self, fh: IO[str], t0: float) -> None:
        self._fh = fh
        self._t0 = t0

    def write(self, direction: str, payload: object) -> None:
        if self._fh.closed:
            return
        try:
            text = json.dumps(payload, default=str, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(payload)
        self._fh.write(f"{time.monotonic() - self._t0:9.3f} {direction} {text}\n")
        self._fh.flush()


class _LoggingListener(EventListener):
    """Records every QMP event in qmp.log and in memory instead of queueing it for a reader."""

    def __init__(self, log: _QmpLog, keep: list[dict[str, Any]]) -> None:
        super().__init__()
        self._log = log
        self._keep = keep

    async def put(self, event: Any) -> None:
        self._log.write("<-- event", dict(event))
        self._keep.append(dict(event))


class QmpChannel:
    """The VM's QMP connection as the harness and the actions see it.

    ``execute`` may be awaited before the connection is up (a READY line could in theory beat the QMP
    greeting): it waits for the session, and raises ``QEMU_EXITED`` at once when QEMU is gone, so an action
    never hangs on a dead VM. QMP-level errors (``qemu.qmp.ExecuteError`` with ``error_class``) pass through
    unchanged so actions can fall back (``blockdev-resize`` -> ``block_resize``). Every command, reply, error
    and event is written to qmp.log.
    """

    def __init__(self, name: str, log: _QmpLog) -> None:
        self.client = QMPClient(name)
        self.events: list[dict[str, Any]] = []
        self._log = log
        self._ready = asyncio.Event()
        self._gone: AeroError | None = None
        self._gone_event = asyncio.Event()
        self.client.register_listener(_LoggingListener(log, self.events))

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._gone is None

    async def connect(self, sock: socket.socket) -> None:
        """Negotiate over our end of the socketpair (greeting + ``qmp_capabilities``)."""
        await self.client.connect(sock)
        greeting = self.client.greeting
        self._log.write("<-- greeting", greeting._asdict() if greeting is not None else None)
        self._ready.set()

    def mark_gone(self, error: AeroError) -> None:
        """QEMU exited or the harness is stopping: fail pending and future commands with ``error``."""
        if self._gone is None:
            self._gone = error
        self._gone_event.set()

    async def _wait_ready(self) -> None:
        if self._ready.is_set() or self._gone is not None:
            return
        ready = asyncio.ensure_future(self._ready.wait())
        gone = asyncio.ensure_future(self._gone_event.wait())
        try:
            await asyncio.wait({ready, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            gone.cancel()

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        await self._wait_ready()
        if self._gone is not None:
            raise self._gone
        msg: dict[str, object] = {"execute": cmd}
        if arguments:
            msg["arguments"] = dict(arguments)
        self._log.write("-->", msg)
        try:
            result = await self.client.execute(cmd, dict(arguments) if arguments else None)
        except ExecuteError as exc:
            self._log.write("<-- error", {"error": {"class": exc.error_class, "desc": str(exc)}, "cmd": cmd})
            raise
        except (QMPError, OSError, EOFError) as exc:
            self._log.write("<-- lost", {"cmd": cmd, "exception": f"{type(exc).__name__}: {exc}"})
            if self._gone is not None:
                raise self._gone from exc
            raise AeroFailure(
                QEMU_EXITED, f"QMP connection lost during {cmd!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self._log.write("<--", {"return": result})
        return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 2.0)


# --------------------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------------------


class Reactions(Protocol):
    """What the session needs from the reaction engine (an adapter around ``actions.base.Reactor``).

    ``on_marker`` is subscribed to the stream before QEMU starts and is therefore called on the VM loop, in
    order, for every marker (and host marker); it must not block - start tasks with
    ``asyncio.get_running_loop().create_task``. Optional members, used when present:

    * ``bind(qmp: QmpChannel) -> None`` - called on the VM loop before QEMU starts, with the channel the
      actions will use (it accepts commands at once and waits for the QMP handshake itself);
    * ``async aclose()`` (or ``async cancel()``, as ``Reactor`` has) - awaited first thing at stop, so no
      action talks to a QEMU that is going away.
    """

    def on_marker(self, item: Marker | HostMarker) -> None: ...


@dataclass(frozen=True)
class StopTimeouts:
    """Seconds each rung of the shutdown ladder waits for QEMU to exit."""

    quit: float = 5.0
    term: float = 3.0
    kill: float = 5.0

    @property
    def total(self) -> float:
        return self.quit + self.term + self.kill


ArgvFactory = Callable[[int, int], Sequence[str]]


class VmSession:
    """One VM: QEMU process, its loop thread, QMP, console, host services and reactions.

    Construct, then :meth:`start` (returns once QMP is negotiated), use :attr:`stream` / :meth:`qmp`, and
    always :meth:`stop` (idempotent, never raises for an already-dead QEMU; also a context manager).

    ``argv_factory(serial_fd, qmp_fd)`` returns QEMU's argv using the two inherited descriptors, e.g.
    ``-chardev socket,id=...,fd=<serial_fd> -serial chardev:...`` and
    ``-chardev socket,id=...,fd=<qmp_fd> -mon chardev=...,mode=control``. ``env`` entries are added to
    (override) the harness's environment. ``first_output_timeout``: if the console stays completely silent
    that long, the stream is closed with ``NO_SERIAL_OUTPUT`` (QEMU keeps running until :meth:`stop`).
    """

    def __init__(
        self,
        argv_factory: ArgvFactory,
        *,
        artifacts: ArtifactDir,
        stream: MarkerStream,
        env: Mapping[str, str] | None = None,
        services: HostServices | None = None,
        reactions: Reactions | None = None,
        follow_serial: Callable[[str], None] | None = None,
        start_timeout: float = 30.0,
        first_output_timeout: float | None = None,
        stop_timeouts: StopTimeouts = StopTimeouts(),
        name: str | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.stream = stream
        self.services = services
        self.reactions = reactions
        self.name = name or artifacts.name
        self._argv_factory = argv_factory
        self._env = env
        self._follow = follow_serial
        self._start_timeout = start_timeout
        self._first_output_timeout = first_output_timeout
        self._stop_timeouts = stop_timeouts

        self.argv: list[str] = []
        #: How QEMU ended: exited | quit | term | kill | unkillable | not-started (None while running).
        self.ended: str | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._t0 = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_lock = threading.RLock()
        self._stop_thread: int | None = None
        self._stopped = False
        self._stopping = False  # set on the loop when the ladder starts: an exit is then expected
        self._starting = False
        self._exited = threading.Event()
        self._exit_async: asyncio.Event | None = None
        self._stream_closed = False
        self._qmp_channel: QmpChannel | None = None
        self._serial_ours: socket.socket | None = None
        self._qmp_ours: socket.socket | None = None
        self._serial_task: asyncio.Task[None] | None = None
        self._watch_tasks: list[asyncio.Task[Any]] = []
        self._first_output: asyncio.Event | None = None
        self._services_started = False
        self._files: list[IO[Any]] = []
        self._serial_fh: IO[bytes] | None = None
        self._stderr_fh: IO[bytes] | None = None
        self._qmp_log: _QmpLog | None = None
        self._host_log_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<VmSession {self.name!r} pid={self.pid} {describe_status(self.returncode)}>"

    def __enter__(self) -> VmSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- read-only state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """QEMU's pid (also its process group id), once launched."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once reaped (negative: killed by that signal), else None."""
        return self._popen.returncode if self._popen is not None and self._exited.is_set() else None

    @property
    def alive(self) -> bool:
        """True between a successful launch and the moment QEMU's exit is noticed."""
        return self._popen is not None and not self._exited.is_set()

    @property
    def qmp_events(self) -> list[dict[str, Any]]:
        """QMP events received so far (``SHUTDOWN``, ``STOP``, ...), oldest first."""
        return list(self._qmp_channel.events) if self._qmp_channel is not None else []

    @property
    def qmp_channel(self) -> QmpChannel | None:
        """The async QMP channel (for code running on the VM loop, e.g. actions)."""
        return self._qmp_channel

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The VM's event loop (runs in its own thread); None before start / after stop."""
        return self._loop

    def host_log(self, line: str) -> None:
        """Append one host-marker line to host-markers.log (thread-safe; ``ActionContext.host_log``)."""
        with self._host_log_lock, open(self.artifacts.host_markers, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\r\n") + "\n")

    def stderr_tail(self, lines: int = 20) -> list[str]:
        """The last lines QEMU wrote on stdout/stderr (read back from qemu-stderr.log)."""
        try:
            with open(self.artifacts.stderr, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _STDERR_TAIL_BYTES))
                data = fh.read()
        except OSError:
            return []
        return [line for line in tail_lines(data, lines + 5) if not line.startswith(_HARNESS_PREFIX)][-lines:]

    # ---- sync API -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start services, launch QEMU and negotiate QMP; raise a clear AeroError if any of it fails.

        On failure everything already started is torn down before the error propagates.
        """
        if self._thread is not None:
            raise RuntimeError("VmSession.start() called twice")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name=f"aero-vm-{self.name}", daemon=True
        )
        self._thread.start()
        budget = self._start_timeout + 10.0
        try:
            self._call(self._async_start(), budget)
        except BaseException as exc:
            if isinstance(exc, AeroError):
                self._close_stream(exc)  # waits already pending fail with the start error itself
            self.stop()
            raise

    def stop(self) -> str:
        """Shut QEMU down (QMP quit -> SIGTERM -> SIGKILL), then QMP, sockets, services and the loop.

        Idempotent and safe from any thread; returns how QEMU ended. A re-entrant call on the thread already
        stopping (a signal handler) only SIGKILLs the process group.
        """
        if self._stop_thread == threading.get_ident() or (
            self._thread is not None and threading.current_thread() is self._thread
        ):
            # Re-entered from a signal handler, or called on the VM loop (a subscriber/action): an orderly
            # stop would wait for this very thread, so only kill; the owner's stop() finishes the job.
            self.kill()
            return self.ended or "kill"
        with self._stop_lock:
            if self._stopped:
                return self.ended or "not-started"
            self._stop_thread = threading.get_ident()
            try:
                self._stop_locked()
            finally:
                self._stop_thread = None
                self._stopped = True
            return self.ended or "not-started"

    def kill(self) -> None:
        """SIGKILL QEMU's process group now (emergency; the loop still reaps it and closes the stream)."""
        pid = self.pid
        if pid is None or self._exited.is_set():
            return
        with _LIVE_LOCK:
            if pid in _LIVE:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def qmp(self, cmd: str, args: Mapping[str, object] | None = None, timeout: float = 30.0) -> Any:
        """Run a QMP command from test code; returns QMP's ``return`` value.

        Raises ``qemu.qmp.ExecuteError`` for a QMP error reply, ``AeroFailure(QEMU_EXITED)`` when QEMU is
        gone, ``AeroFailure(TIMEOUT)`` when no reply comes within ``timeout`` seconds.
        """
        channel = self._qmp_channel
        if channel is None or self._loop is None or self._stopped:
            raise AeroFailure(
                QEMU_EXITED,
                f"QMP {cmd!r}: the VM is not running",
                None,
                artifacts=self.artifacts.paths(existing_only=True),
            )
        try:
            return self._call(channel.execute(cmd, args), timeout)
        except concurrent.futures.TimeoutError:
            raise AeroFailure(
                TIMEOUT,
                f"QMP {cmd!r} got no reply within {timeout:g} s",
                "QEMU may be stuck; see qmp.log and qemu-stderr.log",
                artifacts=self.artifacts.paths(existing_only=True),
            ) from None

    def wait_exit(self, timeout: float) -> int | None:
        """Wait until QEMU exits by itself (e.g. the guest powers off after RESULT); its status or None."""
        if self._popen is None:
            return None
        self._exited.wait(timeout)
        return self.returncode

    # ---- loop plumbing --------------------------------------------------------------------------------

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError("the VM loop is not running")
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("VmSession's sync API called from its own loop thread (would deadlock)")
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    # ---- start ----------------------------------------------------------------------------------------

    def _open(self, path: os.PathLike[str], mode: str) -> IO[Any]:
        fh: IO[Any] = open(path, mode)  # noqa: SIM115
        self._files.append(fh)
        return fh

    async def _async_start(self) -> None:
        loop = asyncio.get_running_loop()
        self._exit_async = asyncio.Event()
        self._first_output = asyncio.Event()
        self._serial_fh = self._open(self.artifacts.serial, "wb")
        self._stderr_fh = self._open(self.artifacts.stderr, "ab")
        self._qmp_log = _QmpLog(self._open(self.artifacts.qmp, "w"), self._t0)
        channel = QmpChannel(self.name, self._qmp_log)
        self._qmp_channel = channel

        if self.services is not None:
            await self.services.start()
            self._services_started = True

        if self.reactions is not None:
            bind = getattr(self.reactions, "bind", None)
            if bind is not None:
                bind(channel)
            self.stream.subscribe(self.reactions.on_marker)

        serial_ours, serial_theirs = socket.socketpair()
        qmp_ours, qmp_theirs = socket.socketpair()
        self._serial_ours, self._qmp_ours = serial_ours, qmp_ours
        try:
            self.argv = [str(a) for a in self._argv_factory(serial_theirs.fileno(), qmp_theirs.fileno())]
            self.artifacts.argv.write_text(shlex.join(self.argv) + "\n")
            if not self.argv:
                raise AeroConfigError("the QEMU command line is empty", "this is a harness bug; report it")
            _check_binary(self.argv[0])
            env = {**os.environ, **self._env} if self._env is not None else None
            self._starting = True
            self._t0 = time.monotonic()
            with _LIVE_LOCK:
                try:
                    # Forked from this (the loop) thread on purpose: PDEATHSIG is tied to the forking thread.
                    self._popen = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=self._stderr_fh,
                        stderr=subprocess.STDOUT,
                        pass_fds=(serial_theirs.fileno(), qmp_theirs.fileno()),
                        start_new_session=True,
                        preexec_fn=child_setup(os.getpid()),
                        env=env,
                    )
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.EISDIR):
                        raise _qemu_not_found(self.argv[0], exc.strerror or str(exc)) from exc
                    raise
                _LIVE[self._popen.pid] = self
        finally:
            # QEMU holds its own copies now; ours must go, or EOF would never be seen when QEMU exits.
            serial_theirs.close()
            qmp_theirs.close()

        self._watch_exit(loop, self._popen)
        serial_ours.setblocking(False)
        self._serial_task = loop.create_task(self._read_serial(serial_ours), name=f"{self.name}-serial")
        if self._first_output_timeout is not None:
            self._watch_tasks.append(loop.create_task(self._watch_first_output(self._first_output_timeout)))

        connect = loop.create_task(channel.connect(qmp_ours))
        exited = loop.create_task(self._exit_async.wait())
        try:
            done, _ = await asyncio.wait(
                {connect, exited}, timeout=self._start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
        if connect in done and connect.exception() is None:
            self._starting = False
            if self._exit_async.is_set():  # exited right as QMP came up: _on_exit left the closing to us
                self._watch_tasks.append(loop.create_task(self._close_after_drain()))
            return
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        if not self._exit_async.is_set():
            # QMP failed or is late while QEMU still runs: give it a moment to die on its own (fatal
            # option errors print and exit right after start), so the error carries its stderr.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit_async.wait(), 2.0)
        if self._exit_async.is_set():
            raise exit_failure(
                self._popen.returncode,
                during_start=True,
                result_seen=False,
                stopped_how=None,
                stderr_tail=self.stderr_tail(),
                artifacts=self.artifacts.paths(existing_only=True),
            )
        if connect in done:
            what = f"the QMP handshake failed: {connect.exception()!r}"
        else:
            what = f"QEMU did not complete the QMP handshake within {self._start_timeout:g} s"
        raise AeroFailure(
            TIMEOUT,
            what,
            "QEMU may be overloaded or the argv lacks `-mon chardev=...,mode=control` on the QMP fd; "
            "see qemu-argv.txt and qemu-stderr.log",
            artifacts=self.artifacts.paths(existing_only=True),
        )

    # ---- exit detection -------------------------------------------------------------------------------

    def _watch_exit(self, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes]) -> None:
        """Notice the instant QEMU exits: a pidfd in the loop's selector (Linux >= 5.3), else polling."""
        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._watch_tasks.append(loop.create_task(self._poll_exit(popen.pid)))
            return

        def on_readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._on_exit()

        loop.add_reader(pidfd, on_readable)

    async def _poll_exit(self, pid: int) -> None:
        while True:
            try:
                # WNOWAIT: notice the exit without reaping, so reaping stays under _LIVE_LOCK in _on_exit.
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
                break
            if info is not None:
                break
            await asyncio.sleep(0.05)
        self._on_exit()

    def _on_exit(self) -> None:
        """On the loop: reap QEMU, then (after draining the console) end every wait on the stream."""
        popen = self._popen
        assert popen is not None
        with _LIVE_LOCK:
            _LIVE.pop(popen.pid, None)
            # The leader is a zombie until reaped, so the group id still names only QEMU's own group:
            # take down any helper it left behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        if self.ended is None and not self._stopping:
            self.ended = "exited"
        self._exited.set()
        assert self._exit_async is not None
        self._exit_async.set()
        if self._qmp_channel is not None:
            self._qmp_channel.mark_gone(
                AeroFailure(QEMU_EXITED, f"QEMU is gone ({describe_status(popen.returncode)})")
            )
        if not self._starting:
            asyncio.get_running_loop().create_task(self._close_after_drain())

    async def _close_after_drain(self) -> None:
        await self._drain_serial()
        if self._stopping:
            return  # the stop path closes the stream with its own reason
        popen = self._popen
        assert popen is not None
        self._close_stream(
            exit_failure(
                popen.returncode,
                during_start=False,
                result_seen=self._result_seen(),
                stopped_how=None,
                stderr_tail=self.stderr_tail(),
                artifacts=self.artifacts.paths(existing_only=True),
            )
        )

    def _result_seen(self) -> bool:
        try:
            return self.stream.result is not None
        except Exception:
            return False

    def _close_stream(self, error: AeroError) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        try:
            self.stream.close(error)
        except Exception:
            LOG.exception("closing the marker stream of %s failed", self.name)

    # ---- serial ---------------------------------------------------------------------------------------

    async def _read_serial(self, sock: socket.socket) -> None:
        """Drain the console forever: raw bytes to serial.log, complete lines to the stream (and follow)."""
        loop = asyncio.get_running_loop()
        splitter = LineSplitter()
        assert self._serial_fh is not None and self._first_output is not None
        while True:
            try:
                data = await loop.sock_recv(sock, _READ_CHUNK)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                break
            self._first_output.set()
            if not self._serial_fh.closed:
                self._serial_fh.write(data)
                self._serial_fh.flush()
            self._emit(splitter.feed(data))
        self._emit(splitter.flush())

    def _emit(self, lines: Sequence[str]) -> None:
        for line in lines:
            if self._follow is not None:
                try:
                    self._follow(line)
                except Exception:
                    LOG.exception("follow_serial callback failed")
            try:
                self.stream.feed_line(line)
            except Exception:  # a subscriber bug must not stop the console from draining
                LOG.exception("feeding serial line to the stream failed: %r", line)

    async def _drain_serial(self) -> None:
        task = self._serial_task
        if task is None or task.done():
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), _SERIAL_DRAIN_S)

    async def _watch_first_output(self, timeout: float) -> None:
        assert self._first_output is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_output.wait(), timeout)
            return
        if self._exited.is_set() or self._stopping:
            return
        self._close_stream(
            AeroFailure(
                NO_SERIAL_OUTPUT,
                f"the guest printed nothing on the first serial port in {timeout:g} s",
                "is the image bootable (try `aero-virtio-refenv bare --run`, see qemu-stderr.log)? is the "
                "selftest installed and started at boot? does it write to COM1, the first serial port?",
                artifacts=self.artifacts.paths(existing_only=True),
            )
        )

    # ---- stop -----------------------------------------------------------------------------------------

    def _stop_locked(self) -> None:
        loop, thread = self._loop, self._thread
        interrupted: BaseException | None = None  # Ctrl-C / pytest-timeout during the ladder: finish, then re-raise
        if loop is not None and thread is not None and thread.is_alive() and not loop.is_closed():
            try:
                self._call(self._async_stop(), self._stop_timeouts.total + 15.0)
            except Exception:
                LOG.exception("orderly stop of %s failed; killing", self.name)
            except BaseException as exc:
                LOG.warning("stop of %s interrupted (%s); killing", self.name, type(exc).__name__)
                interrupted = exc
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10.0)
        # Whatever happened above, no QEMU may survive this call.
        popen = self._popen
        if popen is not None and not self._exited.is_set():
            self.kill()
            with _LIVE_LOCK:
                _LIVE.pop(popen.pid, None)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=self._stop_timeouts.kill)
            if popen.returncode is not None:
                self._exited.set()
                self.ended = self.ended or "kill"
        self._close_sockets()
        self._close_files()
        if self._popen is None and self.ended is None:
            self.ended = "not-started"
        if interrupted is not None:
            raise interrupted

    async def _async_stop(self) -> None:
        self._stopping = True
        popen = self._popen
        # Actions are pointless once the VM is going away, and must not race the quit.
        await self._close_reactions()
        if popen is not None:
            if not self._exited.is_set():
                self.ended = await self._ladder(popen.pid)
            self._record_end(popen.returncode)
        for task in self._watch_tasks:
            task.cancel()
        await self._drain_serial()
        if self._serial_task is not None and not self._serial_task.done():
            self._serial_task.cancel()
        stopped = self.ended if self.ended not in (None, "exited") else None
        if popen is None:
            self._close_stream(AeroFailure(QEMU_EXITED, "the VM was stopped before QEMU started"))
        else:
            self._close_stream(
                exit_failure(
                    popen.returncode,
                    during_start=False,
                    result_seen=self._result_seen(),
                    stopped_how=stopped,
                    stderr_tail=self.stderr_tail(),
                    artifacts=self.artifacts.paths(existing_only=True),
                )
            )
        if self._qmp_channel is not None:
            self._qmp_channel.mark_gone(AeroFailure(QEMU_EXITED, "the VM has been stopped"))
            await self._qmp_channel.close()
        self._close_sockets()
        if self.services is not None and self._services_started:
            try:
                await asyncio.wait_for(self.services.stop(), 10.0)
            except Exception:
                LOG.exception("stopping host services of %s failed", self.name)
            self._services_started = False

    async def _close_reactions(self) -> None:
        close = getattr(self.reactions, "aclose", None) or getattr(self.reactions, "cancel", None)
        if close is None:
            return
        try:
            await asyncio.wait_for(close(), 5.0)
        except Exception:
            LOG.exception("closing reactions of %s failed", self.name)

    async def _ladder(self, pid: int) -> str:
        """QMP ``quit``, then SIGTERM, then SIGKILL to the process group, each with its own wait."""
        assert self._exit_async is not None
        t = self._stop_timeouts
        deadline = time.monotonic() + t.quit
        channel = self._qmp_channel
        if channel is not None and channel.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.execute("quit"), t.quit)
        if await self._wait_exit_async(deadline - time.monotonic()):
            return "quit"
        for how, sig, wait in (("term", signal.SIGTERM, t.term), ("kill", signal.SIGKILL, t.kill)):
            with _LIVE_LOCK:
                if pid in _LIVE:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, sig)
            if await self._wait_exit_async(wait):
                return how
        return "unkillable"

    async def _wait_exit_async(self, timeout: float) -> bool:
        assert self._exit_async is not None
        if self._exit_async.is_set():
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._exit_async.wait(), max(timeout, 0.0))
        return self._exit_async.is_set()

    def _record_end(self, returncode: int | None) -> None:
        line = f"how={self.ended} status={describe_status(returncode)} returncode={returncode}\n"
        with contextlib.suppress(OSError):
            self.artifacts.shutdown.write_text(line)
        fh = self._stderr_fh
        if fh is not None and not fh.closed:
            with contextlib.suppress(OSError):
                fh.write(f"{_HARNESS_PREFIX} QEMU ended: {line}".encode())
                fh.flush()

    def _close_sockets(self) -> None:
        for sock in (self._serial_ours, self._qmp_ours):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _close_files(self) -> None:
        for fh in self._files:
            with contextlib.suppress(OSError):
                fh.close()
