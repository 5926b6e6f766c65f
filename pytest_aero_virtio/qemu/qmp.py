"""The VM's QMP connection (``qemu.qmp.QMPClient``) as the harness and the host reactions see it.

One :class:`QmpChannel` per VM, created before QEMU starts and handed both to the session (which connects it
over its end of a socketpair) and to the reactions (which only ever call :meth:`QmpChannel.execute`). So a
READY line has exactly one path to QEMU: reaction -> ``channel.execute`` -> QMP. Every command, reply, error
and event is written to the VM's qmp.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from ..errors import QEMU_EXITED, AeroError, AeroFailure

__all__ = ["QmpChannel", "QmpLog"]


class QmpLog:
    """Append-only log of QMP traffic: ``<seconds since launch> <direction> <json>`` per line.

    Opened by the session when it starts (the artifact directory exists by then); writes before that or after
    close are dropped rather than failing a command.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._t0 = time.monotonic()

    def open(self, t0: float) -> None:
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._t0 = t0

    def write(self, direction: str, payload: object) -> None:
        fh = self._fh
        if fh is None or fh.closed:
            return
        try:
            text = json.dumps(payload, default=str, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(payload)
        fh.write(f"{time.monotonic() - self._t0:9.3f} {direction} {text}\n")
        fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()


class _LoggingListener(EventListener):
    """Records every QMP event in qmp.log and in memory instead of queueing it for a reader."""

    def __init__(self, log: QmpLog, keep: list[dict[str, Any]]) -> None:
        super().__init__()
        self._log = log
        self._keep = keep

    async def put(self, event: Any) -> None:
        self._log.write("<-- event", dict(event))
        self._keep.append(dict(event))


class _ToQmpLog(logging.Handler):
    """Puts the QMP library's own log records of one VM into its qmp.log.

    ``qemu.qmp`` logs a failed handshake (QEMU exiting at start-up closes the socket: EOF) at ERROR, and a
    disconnect that raises in that state as CRITICAL "Unexpected bottom half exception ... This is a bug in
    the QMP library". Both are the expected end of a QEMU that refused to start, whose own error the failure
    already quotes; in a test's captured log they only bury it. So each client gets a private logger (not in
    the logging tree: nothing propagates to pytest's capture or the root logger) whose records go here.
    """

    def __init__(self, log: QmpLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._log.write("<-- library", {"level": record.levelname, "message": record.getMessage()})


def _private_logger(name: str, log: QmpLog) -> logging.Logger:
    logger = logging.Logger(f"qemu.qmp.{name}", logging.INFO)  # not registered: no parent, no propagation
    logger.propagate = False
    logger.addHandler(_ToQmpLog(log))
    return logger


class QmpChannel:
    """One VM's QMP connection.

    ``execute`` may be awaited before the connection is up (a READY line could in theory beat the QMP
    greeting): it waits for the handshake, and raises ``QEMU_EXITED`` at once when QEMU is gone, so an action
    never hangs on a dead VM. QMP-level errors (``qemu.qmp.ExecuteError`` with ``error_class``) pass through
    unchanged so actions can fall back (``blockdev-resize`` -> ``block_resize``).
    """

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log = QmpLog(log_path)
        self.events: list[dict[str, Any]] = []
        self._client: QMPClient | None = None
        self._ready: asyncio.Event | None = None
        self._gone: AeroError | None = None
        self._gone_event: asyncio.Event | None = None

    def _bind_loop(self) -> None:
        # The client and events are made on the VM loop the first time they are needed there.
        if self._client is None:
            self._client = QMPClient(self.name)
            self._client.logger = _private_logger(self.name, self.log)
            self._client.register_listener(_LoggingListener(self.log, self.events))
            self._ready = asyncio.Event()
            self._gone_event = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._ready is not None and self._ready.is_set() and self._gone is None

    async def connect(self, sock: socket.socket) -> None:
        """Negotiate over our end of the socketpair (greeting + ``qmp_capabilities``)."""
        self._bind_loop()
        assert self._client is not None and self._ready is not None
        await self._client.connect(sock)
        greeting = self._client.greeting
        self.log.write("<-- greeting", greeting._asdict() if greeting is not None else None)
        self._ready.set()

    def mark_gone(self, error: AeroError) -> None:
        """QEMU exited or the harness is stopping: fail pending and future commands with ``error``."""
        if self._gone is None:
            self._gone = error
        if self._gone_event is not None:
            self._gone_event.set()

    async def _wait_ready(self) -> None:
        self._bind_loop()
        assert self._ready is not None and self._gone_event is not None
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
        assert self._client is not None
        msg: dict[str, object] = {"execute": cmd}
        if arguments:
            msg["arguments"] = dict(arguments)
        self.log.write("-->", msg)
        try:
            result = await self._client.execute(cmd, dict(arguments) if arguments else None)
        except ExecuteError as exc:
            self.log.write("<-- error", {"error": {"class": exc.error_class, "desc": str(exc)}, "cmd": cmd})
            raise
        except (QMPError, OSError, EOFError) as exc:
            self.log.write("<-- lost", {"cmd": cmd, "exception": f"{type(exc).__name__}: {exc}"})
            if self._gone is not None:
                raise self._gone from exc
            raise AeroFailure(QEMU_EXITED, f"QMP connection lost during {cmd!r}: {type(exc).__name__}: {exc}") from exc
        self.log.write("<--", {"return": result})
        return result

    async def close(self) -> None:
        """Disconnect (bounded: a dead peer must not hold up the stop) and close the log."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.disconnect(), 2.0)
        self.log.close()
