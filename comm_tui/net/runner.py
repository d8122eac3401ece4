"""A node on a thread of its own: the one bridge between a caller's thread and a NodeService.

Every durable write of a node ends in an fsync (``synchronous=FULL``), 1 to 10 ms on a
laptop disk, and a busy relay makes several a second; on the app's own event loop each
one would stop the screen. So the node, its UDP socket, its timers and its ``Database``
connection live on one thread with its own asyncio loop, and the caller talks to it
only through this object:

- commands go in from any thread (``send_text``, ``conversation_read``, ...); each
  returns a :class:`concurrent.futures.Future` that resolves on the node thread once the
  command is done, and for a command that writes, once its transaction is committed.
  A caller on an event loop awaits it with ``asyncio.wrap_future``; it must never block
  on ``result()`` there;
- read-outs (the status panel's figures, a log line of stats) are taken on the node
  thread by :meth:`NodeRunner.submit`, so nothing reads the node's tables while it
  changes them;
- events come out through the ``on_event`` callback, called on the node thread once the
  transaction that produced them is committed (the service reports them from inside it,
  where its own connection already sees the rows; the caller's connection sees them only
  after the commit): the app posts them as Textual messages (``post_message`` is
  thread-safe), the CLI logs.

SQLite connections belong to the thread that opened them: the node thread opens the
service's own connection (the ``ServiceStarter`` does, on the node thread) and closes
it when the node stops. The caller keeps its own connection for reads, which WAL mode
lets run beside the node's writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from comm_tui.crypto.identity import PublicIdentity
from comm_tui.errors import UserError
from comm_tui.net.service import NodeFailed, NodeService, ServiceEvent
from comm_tui.protocol.custody import Custody
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import HistoryRow

# How long stop() waits for the node to flush and close before it gives up on the thread
# (a daemon thread then: the process may still exit). A clean stop takes milliseconds;
# the bound covers a router that does not answer the port-mapping removal (its own
# timeouts are shorter) and a disk that is slow to take the last peers.
STOP_TIMEOUT_S = 10.0

T = TypeVar("T")
# Starts the service on the node thread. It opens what the service needs there (its
# Database connection) and registers on ``stack`` how to close it; the runner stops the
# service first, then closes the stack.
ServiceStarter = Callable[[contextlib.AsyncExitStack], Awaitable[NodeService]]
EventSink = Callable[[ServiceEvent], object]

_log = logging.getLogger(__name__)


class NodeNotRunning(UserError):
    """A command reached the runner while its node was not running (starting or stopped)."""


class NodeRunner:
    """Owns one NodeService on its own thread and event loop; safe to use from any thread."""

    def __init__(self, start: ServiceStarter, on_event: EventSink, *, name: str = "node") -> None:
        self._start = start
        self._on_event = on_event
        self._name = name
        self._lock = threading.Lock()  # guards _loop against the thread ending under a submit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: NodeService | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[Endpoint] = concurrent.futures.Future()
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop_requested = False
        self._pending: list[ServiceEvent] = []  # reported, to hand over once committed
        # Submitted and not yet run: failed when the thread ends, since a loop drops the
        # callbacks it still holds when it closes (see submit). Guarded by _lock.
        self._queued: set[concurrent.futures.Future[Any]] = set()

    # ---------------------------------------------------------------- lifetime

    def start(self) -> concurrent.futures.Future[Endpoint]:
        """Start the node thread; the future gives the bound endpoint, or why it failed
        (a UserError such as a port in use, an OSError, a StorageError)."""
        if self._thread is not None:
            raise RuntimeError("a NodeRunner starts once")
        self._thread = threading.Thread(target=self._main, name=f"comm-tui {self._name}")
        # A daemon: a node that will not stop within STOP_TIMEOUT_S (a hung router) must
        # not keep the process alive; what it committed is on disk either way.
        self._thread.daemon = True
        self._thread.start()
        return self._started

    def stop(self) -> concurrent.futures.Future[None]:
        """Ask the node to stop: its timers end, the last peers are saved, the socket
        closes, then its database. The future resolves when that is done; ``join`` waits
        for it with a bound. Safe to call more than once and before ``start``."""
        with self._lock:
            self._stop_requested = True
            if self._thread is None:
                if not self._stopped.done():
                    self._stopped.set_result(None)
            elif self._loop is not None and self._stopping is not None:
                # The loop may be closing on its own (a failed start): then it is stopping.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._stopping.set)
        return self._stopped

    def join(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop and wait at most ``timeout`` seconds; False if the thread is still running.

        Blocks: for a CLI's main thread or a test, never for an event loop's handler
        (there, await ``asyncio.wrap_future(runner.stop())``)."""
        self.stop()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """The node is bound and takes commands."""
        return self._started.done() and not self._stopped.done() and self._service is not None

    # ---------------------------------------------------------------- commands

    def submit(self, command: Callable[[NodeService], T]) -> concurrent.futures.Future[T]:
        """Run ``command(service)`` on the node thread, between two datagrams.

        The one way into the node: the named commands below and every read-out go
        through here. Its exception (a ValueError for a text too long, a StorageError
        from a failing disk) is set on the future; NodeNotRunning if the node is not
        running (still starting, failed to start, or stopped). The future always
        resolves: a command the loop had not run when the thread ended (an asyncio loop
        drops the callbacks it holds when it closes) fails then with NodeNotRunning, so
        no caller waits on a command that will never run.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            with self._lock:
                self._queued.discard(future)
            if not future.set_running_or_notify_cancel():
                return
            service = self._service
            if service is None:
                future.set_exception(NodeNotRunning("the node is not running"))
                return
            try:
                result = command(service)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        with self._lock:
            loop = self._loop
            try:
                if loop is None or self._stop_requested:
                    raise RuntimeError("stopped")
                loop.call_soon_threadsafe(run)
            except RuntimeError:  # not started, stopping, or its loop just closed
                future.set_exception(NodeNotRunning("the node is not running"))
            else:
                self._queued.add(future)
        return future

    def send_text(
        self, recipient: PublicIdentity, text: str
    ) -> concurrent.futures.Future[HistoryRow]:
        """Record, queue and transmit a text; the row once it is committed (then, and only
        then, may a screen show it as sent: docs/PROTOCOL.md, "Durable order")."""
        return self.submit(lambda service: service.send_text(recipient, text))

    def set_display_name(self, name: str) -> concurrent.futures.Future[bool]:
        return self.submit(lambda service: service.set_display_name(name))

    def conversation_read(self, peer_address: bytes) -> concurrent.futures.Future[None]:
        return self.submit(lambda service: service.conversation_read(peer_address))

    def contact_added(
        self, key: bytes, hints: Iterable[Endpoint] = ()
    ) -> concurrent.futures.Future[None]:
        endpoints = list(hints)  # taken now: the caller's iterable is not the node thread's
        return self.submit(lambda service: service.contact_added(key, endpoints))

    def contacts_changed(self) -> concurrent.futures.Future[None]:
        return self.submit(lambda service: service.contacts_changed())

    def set_relaying(self, on: bool) -> concurrent.futures.Future[None]:
        return self.submit(lambda service: service.set_relaying(on))

    def custody(self, text_id: bytes) -> concurrent.futures.Future[Custody | None]:
        return self.submit(lambda service: service.custody(text_id))

    def card(self) -> concurrent.futures.Future[str]:
        return self.submit(lambda service: service.card)

    # ---------------------------------------------------------------- the node thread

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # a bug, or a disk failing as the node stops: never silent
            error = exc
            _log.exception("the node thread ended with an error")
            self._fail_start(exc)
            if not self._stop_requested:
                self._emit(NodeFailed(f"node stopped: {exc}"))
        finally:
            with self._lock:
                self._loop = None
                self._service = None
                lost, self._queued = self._queued, set()
            for future in lost:
                # set_running_or_notify_cancel: False if the caller cancelled it meanwhile.
                if future.set_running_or_notify_cancel():
                    future.set_exception(NodeNotRunning("the node stopped"))
            if self._stopped.done():  # cancelled by a caller that stopped waiting
                pass
            elif error is None:
                self._stopped.set_result(None)
            else:
                self._stopped.set_exception(error)

    async def _serve(self) -> None:
        stopping = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stopping = stopping
            if self._stop_requested:
                stopping.set()
        async with contextlib.AsyncExitStack() as stack:
            try:
                service = await self._start(stack)
            except BaseException as exc:
                self._fail_start(exc)
                return
            stack.push_async_callback(service.stop)
            service.subscribe(self._report)
            self._service = service
            assert service.bound is not None
            if not self._started.done():  # the caller may have given up waiting (cancelled)
                self._started.set_result(service.bound)
            await stopping.wait()
            self._service = None  # commands from here on are refused, not half-run
        # Leaving the stack stopped the service (last pump, peers saved) and closed its db.
        self._hand_over()  # what it reported as it stopped

    def _report(self, event: ServiceEvent) -> None:
        """The service's listener: keep the event until the current loop step is over.

        The service reports only what is committed (its group commit hands notices over
        after the batch's COMMIT, docs/PROTOCOL.md "8.2"); handing them over on the next
        step keeps the caller's callback out of the service's own call stack, so a slow
        or failing callback never runs in the middle of a commit.
        """
        self._pending.append(event)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._hand_over)

    def _hand_over(self) -> None:
        events, self._pending = self._pending, []
        for event in events:
            self._emit(event)

    def _fail_start(self, exc: BaseException) -> None:
        if not self._started.done():
            self._started.set_exception(exc)

    def _emit(self, event: ServiceEvent) -> None:
        """Hand an event to the caller; a caller's bug must not stop the node."""
        try:
            self._on_event(event)
        except Exception:
            _log.exception("the node's event callback failed")
