"""Process plumbing for every child the plugin starts: QEMU itself and the short probes (version, caps, KVM).

Why a module of its own: a leaked QEMU keeps a CPU busy for minutes, so every way of starting a child goes
through the two functions here, which give it the same hygiene:

* its own session and process group (``start_new_session``), so a signal to the group reaches helpers it may
  fork, and a Ctrl-C in the terminal goes to pytest only (the harness decides how QEMU ends);
* ``PR_SET_PDEATHSIG=SIGKILL``: the kernel kills the child when the *thread* that forked it exits. For QEMU
  the fork happens on the VM's loop thread, which lives until QEMU has been reaped, so if the whole pytest
  process dies (SIGKILL, a crashed xdist worker) the kernel kills QEMU;
* a registry of live QEMU process groups and :func:`kill_all` for the emergency paths (atexit, SIGTERM).

:class:`QemuProcess` is one QEMU: spawn, notice its exit the instant it happens (a pidfd in the loop's
selector), reap it, and :meth:`QemuProcess.signal_group` - the one place that signals a QEMU process group.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from ..errors import QEMU_NOT_FOUND, AeroConfigError

__all__ = [
    "QemuProcess",
    "child_setup",
    "describe_status",
    "kill_all",
    "live_pids",
    "qemu_not_found",
    "read_tail",
    "run_child",
    "run_child_text",
    "tail_lines",
]


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


def read_tail(path: os.PathLike[str] | str, n: int, skip_prefix: str = "", max_bytes: int = 16384) -> list[str]:
    """The last ``n`` non-empty lines of a log file (its last ``max_bytes`` only); [] when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = tail_lines(data, n + 5)
    return [line for line in lines if not (skip_prefix and line.startswith(skip_prefix))][-n:]


def qemu_not_found(binary: str, reason: str) -> AeroConfigError:
    """The usage error for a QEMU that cannot be executed, with the three ways to get one."""
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
            raise qemu_not_found(binary, "no such file")
        if os.path.isdir(binary) or not os.access(binary, os.X_OK):
            raise qemu_not_found(binary, "not an executable file")
    elif shutil.which(binary) is None:
        raise qemu_not_found(binary, "not found on PATH")


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


def run_child(
    argv: Sequence[str],
    timeout: float | None,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a child that is not QEMU (a QEMU probe, a build tool such as apt-get or mkfs.erofs) to completion
    with the hygiene of a QEMU run: its own process group, killed with the parent (the death signal).

    On timeout or an interruption (Ctrl-C, SIGTERM) the whole process group is killed, not just the direct
    child: a ``--qemu-system`` launcher script that runs QEMU without ``exec``, or apt-get's download methods,
    would otherwise be left behind, re-parented to init. ``timeout=None`` waits as long as the child runs.
    Raises :class:`subprocess.TimeoutExpired` after the kill, and :class:`OSError` when the binary cannot start.
    """
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=child_setup(os.getpid()),
        env=dict(env) if env is not None else None,
        cwd=cwd,
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:  # timeout, Ctrl-C: no probe may outlive the call
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        finally:
            # The direct child is done; a helper it forked into the group must not linger either.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_child_text(
    argv: Sequence[str],
    timeout: float | None,
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """:func:`run_child` with its output decoded (undecodable bytes replaced: a probe's or a tool's words are
    for a message, never parsed as binary)."""
    raw = run_child(argv, timeout, input=input, env=env, cwd=cwd)
    out, err = (b.decode(errors="replace") for b in (raw.stdout, raw.stderr))
    return subprocess.CompletedProcess(raw.args, raw.returncode, out, err)


# Re-entrant: kill_all() may run in a signal handler that interrupted this very lock's holder (main thread).
_LIVE_LOCK = threading.RLock()
#: pid (== process group id) of every QEMU started and not yet reaped.
_LIVE: set[int] = set()


def live_pids() -> list[int]:
    """Process group ids of the QEMUs started and not yet reaped."""
    with _LIVE_LOCK:
        return sorted(_LIVE)


def kill_all() -> int:
    """SIGKILL the process group of every live QEMU; safe in signal handlers and atexit. Returns the count.

    A pid stays in the registry until its owner reaps it, and reaping happens under the same lock after
    removal, so a pid signalled here can never have been recycled for an unrelated process.
    """
    n = 0
    with _LIVE_LOCK:
        for pid in list(_LIVE):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                n += 1
    return n


atexit.register(kill_all)


class QemuProcess:
    """One QEMU process: spawned in its own group with the parent-death signal, registered until reaped.

    :meth:`spawn` must be called on the thread that will outlive QEMU (the VM's loop thread): the parent-death
    signal is tied to it. Exit is noticed on the loop (:meth:`watch_exit`), and both a thread waiting in
    :meth:`wait` and a coroutine awaiting :meth:`wait_async` wake up.
    """

    def __init__(self) -> None:
        self._popen: subprocess.Popen[bytes] | None = None
        self._exited = threading.Event()
        self._exited_async: asyncio.Event | None = None

    @property
    def pid(self) -> int | None:
        """QEMU's pid (also its process group id), once spawned."""
        return self._popen.pid if self._popen is not None else None

    @property
    def spawned(self) -> bool:
        return self._popen is not None

    @property
    def exited(self) -> bool:
        """True once QEMU has exited and been reaped."""
        return self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped (negative: killed by that signal), else None."""
        return self._popen.returncode if self._popen is not None and self.exited else None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int,
        stdout: int,
        stderr: IO[bytes],
        pass_fds: Sequence[int],
        env: Mapping[str, str] | None,
    ) -> None:
        """Start QEMU with ``stdin``/``stdout`` (the console's pipes) and ``stderr`` (its log). Raises
        QEMU_NOT_FOUND (a usage error) when the binary cannot be executed."""
        _check_binary(argv[0])
        self._exited_async = asyncio.Event()
        with _LIVE_LOCK:
            try:
                self._popen = subprocess.Popen(
                    list(argv),
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=tuple(pass_fds),
                    start_new_session=True,
                    preexec_fn=child_setup(os.getpid()),
                    env=dict(env) if env is not None else None,
                )
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.EISDIR):
                    raise qemu_not_found(argv[0], exc.strerror or str(exc)) from exc
                raise
            _LIVE.add(self._popen.pid)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to QEMU's process group if it has not been reaped; the only place QEMU is signalled.

        Under the registry lock, so the group id cannot have been recycled: a reaped QEMU is no longer in the
        registry, and reaping happens under the same lock.
        """
        pid = self.pid
        if pid is None:
            return False
        with _LIVE_LOCK:
            if pid not in _LIVE:
                return False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            return True

    def watch_exit(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit`` on the loop right after QEMU exits and has been reaped.

        A pidfd in the loop's selector notices the exit at once (Linux >= 5.3); elsewhere a 50 ms poll.
        """
        assert self._popen is not None
        pid = self._popen.pid

        def reaped() -> None:
            self._reap()
            on_exit()

        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            loop.create_task(self._poll_exit(pid, reaped))
            return

        def on_readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            reaped()

        loop.add_reader(pidfd, on_readable)

    @staticmethod
    async def _poll_exit(pid: int, reaped: Callable[[], None]) -> None:
        while True:
            try:
                # WNOWAIT: notice the exit without reaping, so reaping stays under the registry lock.
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is not None:
                break
            await asyncio.sleep(0.05)
        reaped()

    def _reap(self, timeout: float = 5.0) -> None:
        popen = self._popen
        assert popen is not None
        with _LIVE_LOCK:
            _LIVE.discard(popen.pid)
            # The leader is a zombie until reaped, so the group id still names only QEMU's own group: take down
            # any helper it left behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=timeout)
        if popen.returncode is not None:
            self._exited.set()
            if self._exited_async is not None:
                self._exited_async.set()

    def kill_and_reap(self, timeout: float) -> None:
        """Last resort when the loop is gone: SIGKILL the group and reap here (no QEMU may outlive a stop)."""
        if self._popen is None or self.exited:
            return
        self.signal_group(signal.SIGKILL)
        self._reap(timeout)

    def wait(self, timeout: float | None) -> int | None:
        """Block until QEMU exits (from a test thread); its status, or None on timeout."""
        if self._popen is None:
            return None
        self._exited.wait(timeout)
        return self.returncode

    async def wait_async(self, timeout: float) -> bool:
        """On the loop: wait up to ``timeout`` s for the exit; True when QEMU has exited."""
        if self.exited or self._exited_async is None:
            return self.exited
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._exited_async.wait(), max(timeout, 0.0))
        return self.exited

    def __repr__(self) -> str:
        return f"<QemuProcess pid={self.pid} {describe_status(self.returncode)}>"
