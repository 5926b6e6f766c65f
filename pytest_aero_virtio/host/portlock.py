"""Fixed host ports are taken in turn: VMs of one user that need the same fixed port wait for each other.

A Windows guest has its ports baked into its provisioning (18080/18081), so two of its VMs cannot run at
once on one host. Under pytest-xdist two workers would boot such VMs at the same time and the second would
fail with ``PORT_IN_USE``; with this lock the second waits until the first VM has stopped. A port held by
something that is not a VM of this plugin still fails at once, with ``PORT_IN_USE`` from the bind.

The locks are ``flock`` files in a private (0700) directory of the user's temp dir: the kernel releases them
when the holder exits, however it exits, so a crashed worker never leaves a port locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from ..errors import PORT_IN_USE, AeroConfigError

_POLL_S = 0.2


def lock_dir() -> Path:
    """The user's private lock directory (created 0700; refused if someone else owns it)."""
    path = Path(tempfile.gettempdir()) / f"aero-virtio-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise AeroConfigError(
            f"{path} is not a private directory of this user",
            fix=f"remove {path} (it is recreated with mode 0700)",
        )
    return path


class PortLocks:
    """Hold one lock per fixed port (port 0, ephemeral, needs none) until :meth:`release`."""

    def __init__(self, ports: Iterable[int], timeout_s: float, directory: Path | None = None) -> None:
        self.ports = sorted({p for p in ports if p})
        self.timeout_s = timeout_s
        self._dir = directory
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take every lock, in port order (no deadlock between two VMs wanting the same pair)."""
        if not self.ports:
            return
        directory = self._dir or lock_dir()
        deadline = time.monotonic() + self.timeout_s
        try:
            for port in self.ports:
                fd = os.open(directory / f"port-{port}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._fds.append(fd)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise AeroConfigError(
                                f"host port {port} stayed in use by another VM of this user for {self.timeout_s:g} s",
                                fix="the guest's ports are fixed: run its tests with -n 1, or give each guest "
                                "its own --vm-http-port/--vm-udp-port",
                                token=PORT_IN_USE,
                            ) from None
                        time.sleep(_POLL_S)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops its flock
        self._fds.clear()

    def __enter__(self) -> PortLocks:
        self.acquire()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
