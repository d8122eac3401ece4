"""Group commit: a node's durable writes in batches, and what depends on them held back.

Every pump of the core gives events to write down and datagrams to send. Written one
transaction (one fsync) at a time, a busy node spends its loop waiting for the disk. Here
the events of many pumps are written in one transaction whose ``COMMIT`` runs on a writer
thread, so the loop keeps receiving while the disk works, and the rule of
docs/PROTOCOL.md, "8.2 Local durability" still holds: no datagram the core produced leaves
before every write it depends on is committed. A batch's datagrams (the acks of the
texts it writes, the parts of our own texts) wait in the batch and go out when its commit
returns; its notices (a text shown as received) are given out then too, never before.

What a write holds back (``holds``, the core's event classified by the driver):

- ``Hold.ALL``, a *strict* write (our texts, the acks we sign, a text received, sessions,
  peers...): every datagram after it;
- ``Hold.RECEIPTS``, an item held for others added or replaced (a relayed message, the
  ack that replaced one): only the Receipts after it. A Receipt is the promise "I hold
  it", on which the sender counts us a holder; a forwarded copy promises nothing about
  our disk. Lost in a crash, such a write had drawn no receipt yet, so its sender still
  counts us as not holding it and retries, and the node we forwarded to holds its own
  copy;
- ``Hold.NOTHING``, bookkeeping (the relay schedule of an entry already written, a
  deletion): nothing. Its loss only makes the node repeat a send the network tolerates.

Receipts come apart from the other datagrams (``add``'s ``receipts``); a receipt waits
for every write before it that is not bookkeeping, the simpler rule than the writes it
names, and as safe. Every write still joins the next batch, in order, so what is on disk
after a crash is always every write up to some point.

When a batch starts committing:

- after ``window_s`` from its first strict write (by default 0: at the end of the loop's
  turn, so the pumps of the datagrams read in the same turn share it; more gather while
  a commit runs);
- after ``relay_window_s`` from its first write of an item held for others, when it has
  no strict write: only receipts wait for it, so many items share one commit;
- after ``lazy_window_s`` from its first write when all of it is bookkeeping;
- at once when it holds ``max_items`` events and datagrams, so a burst does not wait;
- at once when the previous commit returns, for what gathered while it ran, unless it
  has no strict write and its window has not ended.

One commit runs at a time. A batch that reaches ``max_items`` while one runs makes the loop
wait for that commit (it stops reading the socket; the kernel drops what overflows), so
what is held in memory is bounded by ``max_items`` plus one pump whatever arrives.

A disk error fails the node for good (``on_failure``, which is ``NodeProtocol.fail``): the
batch's datagrams and everything after it are dropped, its notices never given out.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import functools
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

from comm_tui.errors import StorageError
from comm_tui.protocol.events import Event
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database

Datagram = tuple[bytes, Endpoint]
N = TypeVar("N")
T = TypeVar("T")

# How long a batch's first write waits for others before its commit starts. 0: the end
# of the loop's turn. A node sees a write every ~50 ms in the loopback benchmark, so a
# 2 ms window grouped nothing more (the pumps that arrive during a running commit do)
# and added 2 ms to every hop; 10 ms saved no measurable CPU either (bench/RESULTS.md,
# "Issue 11, fourth session: the SQLite path").
COMMIT_WINDOW_S = 0.0
# How long a batch whose writes are of items held for others (only receipts wait for
# it) gathers before its commit. The sender's receipt wait is at least 2 s
# (protocol/receipts.py, RECEIPT_TIMEOUT_S); 0.25 s groups the writes of a relay seeing
# one every 50-100 ms into one commit and keeps the receipt's delay well inside that
# wait (bench/RESULTS.md, "Issue 11, sixth session: promises wait, forwards do not").
COMMIT_RELAY_WINDOW_S = 0.25
# How long a batch of bookkeeping only (nothing waits for it) gathers before its commit:
# what a crash may lose of it, at most (docs/PROTOCOL.md, "8.2 Local durability").
COMMIT_LAZY_WINDOW_S = 1.0
# Events and datagrams in one batch, at most, before its commit starts (or the loop waits).
COMMIT_MAX_ITEMS = 256
# Writer threads shared by every node of the process. Each node has one commit running at
# most, so its order holds; fewer threads than nodes switch less (bench/RESULTS.md), and
# fsyncs of different files still overlap.
COMMIT_WRITERS = 4


class Hold(enum.IntEnum):
    """What an event's write holds back until it is committed, least first
    (docs/PROTOCOL.md, "8.2 Local durability")."""

    NOTHING = 0  # bookkeeping
    RECEIPTS = 1  # an item held for others: the receipts after it
    ALL = 2  # a strict write: every datagram after it


class GroupCommit(Generic[N]):
    """Batches one node's durable writes; owned by the thread that runs the node's loop.

    ``apply`` writes events inside the open batch and returns the notices to give out
    once it is committed (``notify``); ``transmit`` sends datagrams; ``wake`` pumps the
    core again after a commit (writing may have made it produce more); ``holds`` says
    what an event's write holds back (by default everything: ``Hold.ALL``).
    """

    def __init__(
        self,
        db: Database,
        *,
        apply: Callable[[list[Event]], list[N]],
        notify: Callable[[list[N]], None],
        transmit: Callable[[list[Datagram]], None],
        on_failure: Callable[[Exception], None],
        wake: Callable[[], None],
        holds: Callable[[Event], Hold] = lambda event: Hold.ALL,
        window_s: float = COMMIT_WINDOW_S,
        relay_window_s: float | None = None,
        lazy_window_s: float = COMMIT_LAZY_WINDOW_S,
        max_items: int = COMMIT_MAX_ITEMS,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._db = db
        self._apply = apply
        self._notify = notify
        self._transmit = transmit
        self._on_failure = on_failure
        self._wake = wake
        self._holds = holds
        self.window_s = window_s
        # None: the module's value when the node starts (a test's process may set it).
        self.relay_window_s = COMMIT_RELAY_WINDOW_S if relay_window_s is None else relay_window_s
        self.lazy_window_s = lazy_window_s
        self.max_items = max_items
        self._executor = executor or _writers()
        self._loop = asyncio.get_running_loop()
        self._returns = _returns_to(self._loop)
        self._events: list[Event] = []
        self._datagrams: list[Datagram] = []
        self._receipts: list[Datagram] = []
        self._window: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop time the pending batch's commit is due at (with a window)
        # The pending batch, and the running commit, hold a strict write (every datagram
        # waits for it: urgent) or one of an item held for others (receipts wait: relay).
        self._urgent = False
        self._relay = False
        self._inflight: Future[None] | None = None
        self._inflight_urgent = False
        self._inflight_relay = False
        self._inflight_datagrams: list[Datagram] = []
        self._inflight_receipts: list[Datagram] = []
        self._inflight_notices: list[N] = []
        self.failure: Exception | None = None
        # Batches committed, those of bookkeeping alone, those whose writes were of items
        # held for others (and bookkeeping), and the events they held (for benchmarks).
        self.commits = 0
        self.lazy_commits = 0
        self.relay_commits = 0
        self.committed_events = 0

    @property
    def pending(self) -> int:
        """Events, datagrams and receipts waiting for a batch's commit to start."""
        return len(self._events) + len(self._datagrams) + len(self._receipts)

    @property
    def committing(self) -> bool:
        """A batch's commit is running on the writer thread."""
        return self._inflight is not None

    @property
    def holding(self) -> bool:
        """A strict write is not on disk yet (pending or committing): every datagram waits."""
        return self._urgent or (self._inflight is not None and self._inflight_urgent)

    @property
    def promising(self) -> bool:
        """A write that is not bookkeeping is not on disk yet: receipts wait."""
        return (
            self._urgent
            or self._relay
            or (self._inflight is not None and (self._inflight_urgent or self._inflight_relay))
        )

    def add(
        self,
        events: list[Event],
        datagrams: list[Datagram],
        receipts: list[Datagram] | None = None,
    ) -> None:
        """Take one pump's output: write the events in a batch, send what depends on them
        after it.

        Datagrams go out at once when no strict write is uncommitted, receipts when no
        write but bookkeeping is (``holds``; docs/PROTOCOL.md, "8.2 Local durability").
        """
        if self.failure is not None or not (events or datagrams or receipts):
            return  # most pumps of a busy node (a timer, a datagram answered by nothing)
        hold = max(map(self._holds, events), default=Hold.NOTHING)
        self._events.extend(events)
        if hold is Hold.ALL:
            self._urgent = True
        elif hold is Hold.RECEIPTS:
            self._relay = True
        if self.holding:
            self._datagrams.extend(datagrams)
        else:
            self._transmit(datagrams)
        if receipts:
            if self.promising:
                self._receipts.extend(receipts)
            else:
                self._transmit(receipts)
        if self.pending >= self.max_items:
            if self._inflight is not None:
                self.settle()  # back-pressure: the loop waits for the disk, then commits this
            else:
                self._flush()
        elif events:
            # Only this pump's events can make the batch's commit due sooner: the window
            # armed for what was pending before still stands (a fired window that found
            # a commit running is due, and that commit's return flushes the batch).
            if self._urgent:
                self._arm(self.window_s)
            else:
                self._arm(self.relay_window_s if self._relay else self.lazy_window_s)

    def _arm(self, delay_s: float) -> None:
        """Start the pending batch's commit within ``delay_s`` (an earlier due time stays)."""
        due = self._loop.time() + delay_s
        if self._window is not None:
            if self._due <= due:
                return
            self._window.cancel()
        self._due = due
        self._window = self._loop.call_at(due, self._flush)

    def settle(self) -> None:
        """Wait for the running commit (blocking this thread) and finish it here."""
        future = self._inflight
        if future is not None:
            concurrent.futures.wait([future])
            self._committed(future)

    def commit_now(self, write: Callable[[], tuple[T, list[N]]]) -> T:
        """Run ``write`` after what is pending, in one transaction committed on this thread.

        For a user's command, durable when this returns. ``write`` returns its result and
        the notices to give out once it is committed. The batch's datagrams go out after
        the commit; what the core produced for ``write`` is the caller's to pump. A disk
        error fails the node and is raised (StorageError), as is a node already stopped.
        A command refused with another exception (a text too long) undoes only its own
        writes: the pending batch is committed all the same, then the exception raised,
        for the core has already acted on what the batch holds.
        """
        self.settle()
        if self.failure is not None:
            raise StorageError(f"the node has stopped: {self.failure}")
        self._cancel_window()
        events, datagrams, receipts, _, _ = self._take()
        refused: Exception | None = None
        result: T | None = None
        more: list[N] = []
        try:
            self._db.begin_batch()
            try:
                notices = self._apply(events)
                try:
                    with self._db.transaction():  # a savepoint: undone alone if refused
                        result, more = write()
                except StorageError:
                    raise
                except Exception as exc:
                    refused = exc
            except BaseException:
                self._db.rollback_batch()
                raise
            self._db.commit_batch()
        except Exception as exc:  # any failure to write: fail-stop, send nothing
            self._fail(exc)
            raise
        self._count(events)
        self._transmit(datagrams)
        self._transmit(receipts)
        self._notify(notices + more)
        if refused is not None:
            raise refused
        return cast(T, result)

    def close(self) -> None:
        """Commit what is pending (on this thread); the writers stay for other nodes."""
        self.settle()
        if self.failure is None and self.pending:
            # A disk error here fails the node; on_failure has reported it.
            with contextlib.suppress(StorageError):
                self.commit_now(lambda: (None, []))
        self._cancel_window()

    def _take(self) -> tuple[list[Event], list[Datagram], list[Datagram], bool, bool]:
        taken = self._events, self._datagrams, self._receipts, self._urgent, self._relay
        self._events, self._datagrams, self._receipts = [], [], []
        self._urgent = self._relay = False
        return taken

    def _count(self, events: list[Event]) -> None:
        if events:
            self.commits += 1
            self.committed_events += len(events)

    def _cancel_window(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None

    def _flush(self) -> None:
        """Write the pending events in a batch and start its commit on the writer thread."""
        if self._inflight is not None:
            return  # its return starts this batch's commit, or re-arms the window
        self._cancel_window()
        if self.failure is not None or not self.pending:
            return
        events, datagrams, receipts, urgent, relay = self._take()
        if not events:
            # They waited for a commit that has returned: nothing of theirs is unwritten.
            self._transmit(datagrams)
            self._transmit(receipts)
            return
        try:
            self._db.begin_batch(savepoints=False)  # all of it, or a failed node
            try:
                notices = self._apply(events)
            except BaseException:
                self._db.rollback_batch()
                raise
            future = self._db.commit_batch_in(self._executor)
        except Exception as exc:  # any failure to write: fail-stop, send nothing
            self._fail(exc)
            return
        self._inflight = future
        self._inflight_urgent = urgent
        self._inflight_relay = relay
        self._inflight_datagrams = datagrams
        self._inflight_receipts = receipts
        self._inflight_notices = notices
        self._count(events)
        self.lazy_commits += not urgent and not relay
        self.relay_commits += relay and not urgent
        future.add_done_callback(self._signal)

    def _signal(self, future: Future[None]) -> None:
        """On the writer thread: hand the finished commit back to the loop."""
        self._returns.put(self, future)

    def _committed(self, future: Future[None]) -> None:
        """The batch is on disk (or failed): send its datagrams, give out its notices."""
        if future is not self._inflight:
            return  # already finished by settle()
        self._inflight = None
        datagrams, self._inflight_datagrams = self._inflight_datagrams, []
        receipts, self._inflight_receipts = self._inflight_receipts, []
        notices, self._inflight_notices = self._inflight_notices, []
        exc = future.exception()
        if exc is not None:
            self._fail(exc if isinstance(exc, Exception) else StorageError(str(exc)))
            return
        self._transmit(datagrams)
        self._transmit(receipts)
        if not self._urgent and self._datagrams:
            # They waited for this commit only: nothing pending is a strict write.
            datagrams, self._datagrams = self._datagrams, []
            self._transmit(datagrams)
        if not self._urgent and not self._relay and self._receipts:
            # They waited for this commit only: what is pending is bookkeeping.
            receipts, self._receipts = self._receipts, []
            self._transmit(receipts)
        self._notify(notices)
        if (
            self._urgent
            or self.pending >= self.max_items
            or (self._window is not None and self._due <= self._loop.time())
        ):
            self._flush()
        self._wake()

    def _fail(self, exc: Exception) -> None:
        """Stop for good: nothing unwritten, and nothing after it, may go out."""
        self.failure = exc
        self._cancel_window()
        self._take()
        self._inflight_urgent = self._inflight_relay = False
        self._inflight_datagrams, self._inflight_receipts, self._inflight_notices = [], [], []
        self._on_failure(exc)


class Writers(concurrent.futures.Executor):
    """The writer threads: each runs one job at a time off a shared queue.

    A ``ThreadPoolExecutor`` without what a commit never needs (its per-job work item,
    the idle-thread semaphores, growing the pool on demand): the hand-off of a batch's
    ``COMMIT`` is a queue put and a ``Future``. With an empty job, the pool and one
    ``call_soon_threadsafe`` per job cost ~11 µs of CPU a hand-off, these writers and
    ``_Returns`` under 1 µs (bench/RESULTS.md, "Issue 11, fifth session: the SQLite
    path"). The threads are daemons, started with
    the first job: a node settles its commits before it stops (``GroupCommit.close``), and
    nothing is shown before its commit returned, so a process that exits with a commit
    running has shown nothing that depends on it.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` on a writer thread; its future holds its result or exception."""
        if not self._threads:
            self._start()
        future: Future[T] = Future()
        self._jobs.put((future, functools.partial(fn, *args, **kwargs) if args or kwargs else fn))
        return future

    def _start(self) -> None:
        with self._start_lock:
            while len(self._threads) < self._count:
                thread = threading.Thread(
                    target=self._work, name=f"comm-tui-commit_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn  # a finished job holds no batch while the thread waits


class _Returns:
    """Finished commits on their way back to one event loop, one wake-up for many.

    A writer appends the commit it finished and wakes the loop only when no wake-up is
    already pending: commits that finish while the loop is busy (many nodes on one loop,
    or a burst) return in one callback instead of one self-pipe write and one callback
    each.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the registry below forgets a loop once nothing else holds it.
        self._loop = weakref.ref(loop)
        self._done: collections.deque[tuple[GroupCommit[Any], Future[None]]] = collections.deque()
        self._armed = False

    def put(self, group: GroupCommit[Any], future: Future[None]) -> None:
        """On a writer thread: hand a finished commit back to the loop."""
        self._done.append((group, future))
        if not self._armed:
            self._armed = True
            loop = self._loop()
            try:
                if loop is None:
                    raise RuntimeError("the loop is gone")
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed: nobody is left to tell
                self._armed = False

    def _drain(self) -> None:
        # Disarmed first: a commit appended from now on either is taken below or wakes
        # the loop again (an empty wake-up at worst, never a lost one).
        self._armed = False
        done = self._done
        while done:
            group, future = done.popleft()
            group._committed(future)


_shared_writers: list[Writers] = []
_shared_writers_lock = threading.Lock()
_returns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Returns] = (
    weakref.WeakKeyDictionary()
)


def _writers() -> Writers:
    """The process's writer threads, started with the first node that needs them."""
    with _shared_writers_lock:
        if not _shared_writers:
            _shared_writers.append(Writers(COMMIT_WRITERS))
        return _shared_writers[0]


def _returns_to(loop: asyncio.AbstractEventLoop) -> _Returns:
    """The return path of ``loop``, shared by every node that runs on it."""
    with _shared_writers_lock:
        returns = _returns.get(loop)
        if returns is None:
            returns = _returns[loop] = _Returns(loop)
        return returns
