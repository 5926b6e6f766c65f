"""One VM session: a QEMU process with its loop thread, QMP, console, host services and reactions.

The session is a small state machine in the manner of ``qemu.qmp``'s ``Runstate``: ``Runstate`` names where
it is, ``TRANSITIONS`` the moves that are legal (both in :mod:`.lifecycle`), and every move goes through one
method that checks it. How QEMU ended is a separate fact, ``Ending`` (it may exit on its own while the
harness is stopping).

Threads. Each session owns one asyncio event loop in a daemon thread (:mod:`.loop`). Everything that must
react in real time lives there: the serial reader, the QMP client, the host services, the reactions armed for
READY lines, the silence watch and the watcher that notices the instant QEMU exits. Test threads reach it
only through :meth:`VmSession.start`, :meth:`VmSession.stop` and :meth:`VmSession.qmp`, with timeouts.

Launching follows QEMU's own ``QEMUMachine``: no shell; QMP is one end of a ``socket.socketpair()`` handed to
QEMU as ``-chardev socket,fd=N``, and the console is QEMU's stdin and stdout, two pipes (a pipe merges QEMU's
one-byte console writes, which a socket would keep one buffer each): no listening socket, no path in the file
system, nothing to collide with under pytest-xdist. Stopping is a ladder: reactions cancelled, QMP ``quit``,
wait, SIGTERM, wait, SIGKILL, wait; then the stream is closed with the reason, QMP and the services.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from ..artifacts import ArtifactDir
from ..errors import QEMU_EXITED, TIMEOUT, AeroConfigError, AeroError, AeroFailure
from ..guest_end import describe_guest_end
from .lifecycle import (
    HARNESS_PREFIX,
    TRANSITIONS,
    Ending,
    Reactions,
    Runstate,
    StateError,
    StopTimeouts,
    exit_failure,
    handshake_failure,
    qemu_stderr_tail,
)
from .loop import LoopThread
from .process import QemuProcess, describe_status
from .qmp import QmpChannel
from .serial import ConsolePipes, SerialReader
from .watchdog import SilenceWatch, silence_failure

if TYPE_CHECKING:
    from ..host.services import HostServices
    from ..stream import MarkerStream

__all__ = ["Reactions", "VmSession"]

LOG = logging.getLogger(__name__)

#: How long an exit waits for console EOF before the stream is closed (immediate unless a stray process holds it).
_SERIAL_DRAIN_S = 0.5


ArgvFactory = Callable[[int], Sequence[str]]
DEFAULT_STOP = StopTimeouts()


class VmSession:
    """One VM. Construct, :meth:`start` (returns once QMP is negotiated), use :attr:`stream` and :meth:`qmp`,
    and always :meth:`stop` (idempotent, never raises for an already-dead QEMU; also a context manager).

    ``argv_factory(qmp_fd)`` returns QEMU's argv: the QMP monitor on that inherited descriptor, the console on
    QEMU's own stdio (``-chardev stdio``), which the session wires to pipes.
    ``qmp`` is the channel the reactions were built with (one is made when not given). ``env`` entries are
    added to the harness's environment. ``silence_timeout``: if the console stays silent that long (any quiet
    stretch before RESULT), the stream is closed with ``NO_SERIAL_OUTPUT`` (QEMU keeps running until
    :meth:`stop`); ``silence_warn(quiet_s)`` is called on the VM loop (it must not block) once per quiet stretch
    after :attr:`.watchdog.SilenceWatch.warn_after` seconds (60, or half the timeout if shorter).
    """

    def __init__(
        self,
        argv_factory: ArgvFactory,
        *,
        artifacts: ArtifactDir,
        stream: MarkerStream,
        qmp: QmpChannel | None = None,
        env: Mapping[str, str] | None = None,
        services: HostServices | None = None,
        reactions: Reactions | None = None,
        follow_serial: Callable[[str], None] | None = None,
        start_timeout: float = 30.0,
        silence_timeout: float | None = None,
        stop_timeouts: StopTimeouts = DEFAULT_STOP,
        name: str | None = None,
        silence_warn: Callable[[float], None] | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.stream = stream
        self.services = services
        self.reactions = reactions
        self.name = name or artifacts.name
        self.qmp_channel = qmp or QmpChannel(self.name, artifacts.qmp)
        self.process = QemuProcess()
        self.argv: list[str] = []
        #: How QEMU ended; None while it runs (or before it started).
        self.ending: Ending | None = None
        self._argv_factory = argv_factory
        self._env = env
        self._follow = follow_serial
        self._start_timeout = start_timeout
        self._silence_timeout = silence_timeout
        self._silence_warn = silence_warn
        self._stop_timeouts = stop_timeouts
        self._state = Runstate.IDLE
        self._state_lock = threading.Lock()
        self._stop_lock = threading.RLock()
        self._t0 = time.monotonic()
        self._loop_thread = LoopThread(f"aero-vm-{self.name}")
        self._qmp_sock: socket.socket | None = None  # our end of the QMP socketpair
        self._console: ConsolePipes | None = None
        self._files: list[IO[Any]] = []
        self._stderr_log: IO[bytes] | None = None
        self._serial: SerialReader | None = None
        self._watchers: list[asyncio.Task[Any]] = []
        self.silence: SilenceWatch | None = None
        #: More descriptors QEMU inherits at the same numbers (an ``-add-fd`` snapshot overlay); the caller
        #: sets them before :meth:`start` and may close its copies once it returns.
        self.extra_fds: list[int] = []

    def __repr__(self) -> str:
        return f"<VmSession {self.name!r} {self._state.value} pid={self.pid} {describe_status(self.returncode)}>"

    def __enter__(self) -> VmSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state ------------------------------------------------------------------------------------------

    @property
    def state(self) -> Runstate:
        return self._state

    def _move(self, new: Runstate, *, expect: frozenset[Runstate] | None = None) -> bool:
        """Move to ``new`` if legal; with ``expect``, only from those states (False, no move, otherwise)."""
        with self._state_lock:
            old = self._state
            if expect is not None and old not in expect:
                return False
            if new not in TRANSITIONS[old]:
                raise StateError(f"{self.name}: illegal move {old.value} -> {new.value}")
            self._state = new
        LOG.debug("%s: %s -> %s", self.name, old.value, new.value)
        return True

    @property
    def pid(self) -> int | None:
        """QEMU's pid (also its process group id), once launched."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def alive(self) -> bool:
        """True between a successful launch and the moment QEMU's exit is noticed."""
        return self.process.spawned and not self.process.exited

    def _last_output(self) -> float:
        """When the guest last printed anything (when QEMU started, if it never did)."""
        last = self._serial.last_output if self._serial is not None else None
        return last if last is not None else self._t0

    def _exit_failure(self) -> AeroFailure:
        """Why the stream ends now: the one place a QEMU-is-gone failure is built."""
        artifacts = self.artifacts.paths(existing_only=True)
        if not self.process.spawned:
            return AeroFailure(QEMU_EXITED, "the VM was stopped before QEMU started", artifacts=artifacts)
        stopping = self._state in (Runstate.STOPPING, Runstate.STOPPED)
        stopped_how = self.ending.value if stopping and self.ending not in (None, Ending.EXITED) else None
        return exit_failure(
            self.process.returncode,
            during_start=self._state is Runstate.STARTING,
            result_seen=self.stream.result is not None,
            stopped_how=stopped_how,
            stderr_tail=qemu_stderr_tail(self.artifacts.stderr),
            artifacts=artifacts,
            guest_end=describe_guest_end(self.stream.end_kinds, self.qmp_channel.events),
        )

    # ---- sync API ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start services, launch QEMU and negotiate QMP; raise a clear AeroError if any of it fails.

        On failure everything already started is torn down (a stop) before the error propagates.
        """
        if not self._move(Runstate.STARTING, expect=frozenset({Runstate.IDLE})):
            raise StateError(f"{self.name}: start() in state {self._state.value}")
        self._loop_thread.start()
        try:
            self._loop_thread.call(self._start_steps(), self._start_timeout + 10.0)
        except BaseException as exc:
            if isinstance(exc, AeroError):
                self.stream.close(exc)  # waits already pending fail with the start error itself
            self.stop()
            raise

    def stop(self) -> Ending:
        """Shut QEMU down (the ladder), then QMP, sockets, services and the loop; returns how QEMU ended.

        Idempotent and safe from any thread. Called on the VM loop itself (a subscriber) or re-entered on the
        thread already stopping (a signal handler), it only SIGKILLs: the owner's stop finishes the job.
        """
        if self._loop_thread.on_loop_thread():
            self.kill()
            return self.ending or Ending.KILL
        with self._stop_lock:
            if self._state is Runstate.STOPPED:
                return self.ending or Ending.NOT_STARTED
            if self._state is Runstate.STOPPING:  # re-entered on this thread, from a signal handler
                self.kill()
                return self.ending or Ending.KILL
            if self._move(Runstate.STOPPED, expect=frozenset({Runstate.IDLE})):
                self.ending = Ending.NOT_STARTED
                return self.ending
            self._move(Runstate.STOPPING)
            try:
                self._stop_steps()
            finally:
                self._move(Runstate.STOPPED)
            return self.ending or Ending.NOT_STARTED

    def kill(self) -> None:
        """SIGKILL QEMU's process group now (emergency; the loop still reaps it and closes the stream)."""
        self.process.signal_group(signal.SIGKILL)

    def qmp(self, cmd: str, args: Mapping[str, object] | None = None, timeout: float = 30.0) -> Any:
        """Run a QMP command from test code; returns QMP's ``return`` value.

        Raises ``qemu.qmp.ExecuteError`` for a QMP error reply, ``AeroFailure(QEMU_EXITED)`` when QEMU is
        gone, ``AeroFailure(TIMEOUT)`` when no reply comes within ``timeout`` seconds.
        """
        if self._state not in (Runstate.RUNNING, Runstate.EXITED) or not self._loop_thread.running:
            raise AeroFailure(
                QEMU_EXITED,
                f"QMP {cmd!r}: the VM is not running ({self._state.value})",
                artifacts=self.artifacts.paths(existing_only=True),
            )
        try:
            return self._loop_thread.call(self.qmp_channel.execute(cmd, args), timeout)
        except concurrent.futures.TimeoutError:
            raise AeroFailure(
                TIMEOUT,
                f"QMP {cmd!r} got no reply within {timeout:g} s",
                "QEMU may be stuck; see qmp.log and qemu-stderr.log",
                artifacts=self.artifacts.paths(existing_only=True),
            ) from None

    @property
    def loop(self) -> LoopThread:
        """The VM's loop thread: ``call`` runs a coroutine there from a test thread (screenshots, attaching)."""
        return self._loop_thread

    @property
    def console(self) -> tuple[int, SerialReader] | None:
        """The console while QEMU runs: our end of its stdin pipe (non-blocking) and the reader of its output
        (the attach point relays both)."""
        return (self._console.input, self._serial) if self._serial is not None and self._console is not None else None

    def wait_exit(self, timeout: float) -> int | None:
        """Wait until QEMU exits by itself (e.g. the guest powers off after RESULT); its status or None."""
        return self.process.wait(timeout)

    # ---- start, as named steps (on the loop) ------------------------------------------------------------

    async def _start_steps(self) -> None:
        serial_log = self._open_logs()
        await self._start_services()
        self._arm_reactions()
        qmp_sock = self._spawn_qemu(serial_log)
        await self._await_qmp(qmp_sock)
        self._move(Runstate.RUNNING)
        if self.process.exited:  # it exited right as QMP came up: _on_exit saw STARTING and left it to us
            self._on_exited_running()

    def _open_logs(self) -> IO[bytes]:
        """serial.log (raw console bytes), qemu-stderr.log and qmp.log of this VM."""
        serial_log: IO[bytes] = open(self.artifacts.serial, "wb")  # noqa: SIM115 - closed in _close_files
        self._stderr_log = open(self.artifacts.stderr, "ab")  # noqa: SIM115
        self._files += [serial_log, self._stderr_log]
        self.qmp_channel.log.open(self._t0)
        return serial_log

    async def _start_services(self) -> None:
        if self.services is not None:
            await self.services.start()

    def _arm_reactions(self) -> None:
        """Subscribe the reactions before QEMU exists, so no READY line can come before they listen."""
        if self.reactions is not None:
            self.stream.subscribe(self.reactions.on_marker)

    def _spawn_qemu(self, serial_log: IO[bytes]) -> socket.socket:
        """Fork QEMU (on this, the loop thread: the parent-death signal is tied to it): its console on its
        stdin/stdout pipes, QMP on a socketpair; start draining the console and watching for the exit.
        Returns our end of the QMP socketpair."""
        loop = asyncio.get_running_loop()
        pipes = self._console = ConsolePipes()
        qmp_ours, qmp_theirs = socket.socketpair()
        self._qmp_sock = qmp_ours
        try:
            self.argv = [str(a) for a in self._argv_factory(qmp_theirs.fileno())]
            self.artifacts.argv.write_text(shlex.join(self.argv) + "\n")
            if not self.argv:
                raise AeroConfigError("the QEMU command line is empty", "this is a harness bug; report it")
            env = {**os.environ, **self._env} if self._env is not None else None
            self._t0 = time.monotonic()
            assert self._stderr_log is not None
            fds = (qmp_theirs.fileno(), *self.extra_fds)
            stdio = {"stdin": pipes.qemu_stdin, "stdout": pipes.qemu_stdout}
            self.process.spawn(self.argv, **stdio, stderr=self._stderr_log, pass_fds=fds, env=env)
        except BaseException:
            os.close(pipes.output)
            raise
        finally:
            pipes.close_qemu_ends()
            qmp_theirs.close()
        self.process.watch_exit(loop, self._on_exit)
        self._serial = SerialReader(serial_log, self._on_serial_line)
        self._serial.start(pipes.output, self.name)
        if self._silence_timeout is not None:
            self.silence = SilenceWatch(
                self._silence_timeout,
                self._last_output,
                self._on_silence,
                on_warn=self._silence_warn,
                active=self._guest_may_speak,
            )
            self._watchers.append(loop.create_task(self.silence.run()))
        return qmp_ours

    async def _await_qmp(self, sock: socket.socket) -> None:
        """The QMP handshake, racing QEMU's exit; a failure carries QEMU's stderr or says what timed out."""
        connect = asyncio.ensure_future(self.qmp_channel.connect(sock))
        exited = asyncio.ensure_future(self.process.wait_async(self._start_timeout))
        try:
            done, _ = await asyncio.wait(
                {connect, exited}, timeout=self._start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
        if connect in done and connect.exception() is None:
            return
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        # QMP failed or is late while QEMU may still run: give it a moment to die on its own (fatal option
        # errors print and exit right after start), so the error carries its stderr.
        if await self.process.wait_async(2.0):
            raise self._exit_failure()
        error = connect.exception() if connect in done else None
        raise handshake_failure(error, self._start_timeout, self.artifacts.paths(existing_only=True))

    # ---- while it runs (on the loop) --------------------------------------------------------------------

    def _on_serial_line(self, line: str) -> None:
        if self._follow is not None:
            try:
                self._follow(line)
            except Exception:
                LOG.exception("follow_serial callback failed")
        self.stream.feed_line(line)

    def _on_exit(self) -> None:
        """QEMU exited and was reaped. QMP fails from now on; a running session turns EXITED."""
        self.qmp_channel.mark_gone(
            AeroFailure(QEMU_EXITED, f"QEMU is gone ({describe_status(self.process.returncode)})")
        )
        if self._state is Runstate.RUNNING:
            self._on_exited_running()
        # STARTING: the start step reports it; STOPPING: the ladder was waiting for exactly this.

    def _on_exited_running(self) -> None:
        if self._move(Runstate.EXITED, expect=frozenset({Runstate.RUNNING})):
            self.ending = Ending.EXITED
            self._watchers.append(asyncio.get_running_loop().create_task(self._close_after_drain()))

    async def _close_after_drain(self) -> None:
        if self._serial is not None:
            await self._serial.drain(_SERIAL_DRAIN_S)
        if self._state is Runstate.EXITED:  # a stop in between closes the stream with its own reason
            self.stream.close(self._exit_failure())

    def _guest_may_speak(self) -> bool:
        """Silence counts only while the guest runs and has not printed RESULT (then it has nothing to say)."""
        return self._state is Runstate.RUNNING and self.stream.result is None

    def _on_silence(self, quiet_s: float) -> None:
        printed = self._serial is not None and self._serial.bytes_seen > 0
        self.stream.close(silence_failure(quiet_s, printed, self.artifacts.paths(existing_only=True)))

    # ---- stop -------------------------------------------------------------------------------------------

    def _stop_steps(self) -> None:
        """The ladder on the loop; whatever happens there, no QEMU survives this call."""
        interrupted: BaseException | None = None  # Ctrl-C / pytest-timeout during the ladder: finish, then re-raise
        if self._loop_thread.running:
            try:
                self._loop_thread.call(self._stop_async(), self._stop_timeouts.total + 15.0)
            except Exception:
                LOG.exception("orderly stop of %s failed; killing", self.name)
            except BaseException as exc:
                LOG.warning("stop of %s interrupted (%s); killing", self.name, type(exc).__name__)
                interrupted = exc
        self._loop_thread.stop()
        if self.process.spawned and not self.process.exited:
            self.process.kill_and_reap(self._stop_timeouts.kill)
            self.ending = self.ending or Ending.KILL
        self._close_sockets()
        self._close_files()
        if interrupted is not None:
            raise interrupted

    async def _stop_async(self) -> None:
        if self.reactions is not None:  # actions must not race the quit
            try:
                await asyncio.wait_for(self.reactions.cancel(), 5.0)
            except Exception:
                LOG.exception("cancelling the reactions of %s failed", self.name)
        if self.process.spawned:
            if not self.process.exited:
                self.ending = await self._ladder()
            self.ending = self.ending or Ending.EXITED
            self._record_end()
        for task in self._watchers:
            task.cancel()
        if self._serial is not None:
            await self._serial.drain(_SERIAL_DRAIN_S)
            self._serial.cancel()
        self.stream.close(self._exit_failure())
        self.qmp_channel.mark_gone(AeroFailure(QEMU_EXITED, "the VM has been stopped"))
        await self.qmp_channel.close()
        if self.services is not None:
            try:
                await asyncio.wait_for(self.services.stop(), 10.0)
            except Exception:
                LOG.exception("stopping host services of %s failed", self.name)

    async def _ladder(self) -> Ending:
        """QMP ``quit``, then SIGTERM, then SIGKILL to the process group, each with its own wait."""
        t = self._stop_timeouts
        deadline = time.monotonic() + t.quit
        if self.qmp_channel.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp_channel.execute("quit"), t.quit)
        if await self.process.wait_async(deadline - time.monotonic()):
            return Ending.QUIT
        for how, sig, wait in ((Ending.TERM, signal.SIGTERM, t.term), (Ending.KILL, signal.SIGKILL, t.kill)):
            self.process.signal_group(sig)
            if await self.process.wait_async(wait):
                return how
        return Ending.UNKILLABLE

    def _record_end(self) -> None:
        rc, ending = self.process.returncode, self.ending.value if self.ending else "unknown"
        line = f"how={ending} status={describe_status(rc)} returncode={rc}\n"
        with contextlib.suppress(OSError):
            self.artifacts.shutdown.write_text(line)
        fh = self._stderr_log
        if fh is not None and not fh.closed:
            with contextlib.suppress(OSError):
                fh.write(f"{HARNESS_PREFIX} QEMU ended: {line}".encode())
                fh.flush()

    def _close_sockets(self) -> None:
        if self._qmp_sock is not None:
            self._qmp_sock.close()
        if self._console is not None:
            self._console.close()

    def _close_files(self) -> None:
        for fh in self._files:
            with contextlib.suppress(OSError):
                fh.close()
        self.qmp_channel.log.close()
