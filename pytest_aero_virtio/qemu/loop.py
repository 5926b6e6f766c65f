"""The VM's event loop in its own daemon thread, and the one way test threads call into it.

Why a thread per VM: a guest blocked at a READY line waits only seconds for the host, whatever pytest is doing,
so the serial reader, QMP and the reactions must run on their own loop. Test code is synchronous and reaches
that loop only through :meth:`LoopThread.call` (with a timeout), never by touching it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

_T = TypeVar("_T")
LOG = logging.getLogger(__name__)


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A connection that ends because QEMU ended (EOF, a reset) is the normal end of a VM, not an error: the QMP
    library's reader task leaves such an exception in a future nobody awaits, which asyncio would otherwise
    print to stderr as "exception was never retrieved" when it is collected, long after the test."""
    exc = context.get("exception")
    if isinstance(exc, EOFError | ConnectionError):
        LOG.debug("%s: %r", context.get("message"), exc)
        return
    loop.default_exception_handler(context)


class LoopThread:
    """An asyncio loop running forever in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_exception_handler)
        self.loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name=self.name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return (
            self.loop is not None and self._thread is not None and self._thread.is_alive() and not self.loop.is_closed()
        )

    def on_loop_thread(self) -> bool:
        """True when called from the loop's own thread (where a blocking call would deadlock)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coro`` on the loop and wait for its result; ``concurrent.futures.TimeoutError`` after
        ``timeout`` (the coroutine is cancelled)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError("the VM loop is not running")
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError("a VM's sync API called from its own loop thread (would deadlock)")
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except BaseException:
            # A timeout, or Ctrl-C, SIGTERM or pytest-timeout's signal interrupting the caller: the coroutine must
            # not run on beside whatever follows (a start still spawning QEMU while the stop's ladder runs).
            if not fut.done():
                fut.cancel()
            raise

    def stop(self, join_timeout: float = 10.0) -> None:
        """Stop the loop (what is still pending is cancelled) and join its thread."""
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=join_timeout)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
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
