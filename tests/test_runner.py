"""NodeRunner: a real NodeService on its own thread, driven from other threads.

Real UDP on 127.0.0.1 and real SQLite files. What the runner promises: commands from any
thread run on the node thread and resolve their futures once committed; events reach the
caller's callback (called on the node thread); a disk failure is reported as NodeFailed;
stop is bounded and leaves a runner that refuses commands; and a text whose future has
resolved survives a SIGKILL of the process the very next moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import StorageError, UserError
from comm_tui.net.runner import EventSink, NodeNotRunning, NodeRunner, ServiceStarter
from comm_tui.net.service import IncomingText, NodeFailed, NodeService, ServiceEvent
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database, HistoryRow

pytestmark = pytest.mark.timeout(60)

WAIT_S = 15.0
STOP_BOUND_S = 5.0


def _starter(
    path: Path,
    identity: Identity,
    *,
    listen: Endpoint = ("127.0.0.1", 0),
    bootstrap: list[Endpoint] | None = None,
) -> ServiceStarter:
    """A service on its own connection to ``path``, opened on the node thread."""

    async def start(stack: contextlib.AsyncExitStack) -> NodeService:
        db = Database.open(path)
        stack.callback(db.close)
        service = NodeService(identity, db, listen=listen, bootstrap=bootstrap)
        await service.start()
        return service

    return start


class Recorder:
    """The caller's callback: events with the thread each was delivered on."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[ServiceEvent, str]] = queue.Queue()

    def __call__(self, event: ServiceEvent) -> None:
        self.events.put((event, threading.current_thread().name))

    def wait_for(self, kind: type[object]) -> tuple[ServiceEvent, str]:
        deadline = time.monotonic() + WAIT_S
        while (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                event, thread = self.events.get(timeout=remaining)
                if isinstance(event, kind):
                    return event, thread
        raise AssertionError(f"no {kind.__name__} within {WAIT_S} s")


@contextlib.contextmanager
def running(starter: ServiceStarter, recorder: EventSink) -> Iterator[tuple[NodeRunner, Endpoint]]:
    runner = NodeRunner(starter, recorder)
    try:
        bound = runner.start().result(WAIT_S)
        yield runner, bound
    finally:
        assert runner.join(STOP_BOUND_S), "the node thread did not stop in time"


def test_commands_from_other_threads_are_committed_and_events_reach_the_callback(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    events_a, events_b = Recorder(), Recorder()
    with (
        running(_starter(tmp_path / "bob.db", bob), events_b) as (_, bob_at),
        running(_starter(tmp_path / "alice.db", alice, bootstrap=[bob_at]), events_a) as (
            runner,
            _,
        ),
    ):
        # Four threads send at once; each future resolves with the committed row.
        rows: list[HistoryRow] = []
        lock = threading.Lock()

        def send(n: int) -> None:
            row = runner.send_text(bob.public, f"text {n}").result(WAIT_S)
            with lock:
                rows.append(row)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        assert sorted(row.text for row in rows) == [f"text {n}" for n in range(4)]
        # Committed: another connection (the app's, say) reads them at once.
        with Database.open(tmp_path / "alice.db") as reader:
            assert {r.text_id for r in reader.history(bob.address)} == {r.text_id for r in rows}
        # Bob's node reports each arrival through his callback, on his node thread.
        event, delivered_on = events_b.wait_for(IncomingText)
        assert isinstance(event, IncomingText) and event.row.text.startswith("text ")
        assert delivered_on == "comm-tui node" != threading.current_thread().name
        # Read-outs run on the node thread too.
        assert runner.submit(lambda s: threading.current_thread().name).result(WAIT_S) == (
            "comm-tui node"
        )
        # A command's own error comes back on its future; the node goes on.
        too_long = runner.send_text(bob.public, "x" * 100_000)
        with pytest.raises(ValueError):
            too_long.result(WAIT_S)
        assert runner.running


def test_an_event_reaches_the_callback_only_once_its_rows_are_committed(tmp_path: Path) -> None:
    """The service reports from inside its transaction; the caller reads with its own
    connection, which sees a row only after the commit. So the runner hands events over
    after it: checked here from inside the callback, with a connection of the caller's."""
    bob = Identity.generate()
    visible: queue.Queue[bool] = queue.Queue()

    def check(event: ServiceEvent) -> None:
        if isinstance(event, IncomingText):
            # A connection of the caller's, opened on the thread that calls back.
            with Database.open(tmp_path / "bob.db") as reader:
                rows = reader.history(event.row.peer_address)
            visible.put(any(r.text_id == event.row.text_id for r in rows))

    with (
        running(_starter(tmp_path / "bob.db", bob), check) as (_, bob_at),
        running(
            _starter(tmp_path / "a.db", Identity.generate(), bootstrap=[bob_at]), Recorder()
        ) as (runner, _),
    ):
        for n in range(3):
            runner.send_text(bob.public, f"text {n}").result(WAIT_S)
        assert [visible.get(timeout=WAIT_S) for _ in range(3)] == [True, True, True]


def test_stop_is_bounded_and_a_stopped_runner_refuses_commands(tmp_path: Path) -> None:
    recorder = Recorder()
    runner = NodeRunner(_starter(tmp_path / "a.db", Identity.generate()), recorder)
    bound = runner.start().result(WAIT_S)
    assert runner.running
    started = time.monotonic()
    assert runner.join(STOP_BOUND_S)
    assert time.monotonic() - started < STOP_BOUND_S
    assert not runner.running
    assert runner.stop().done()  # a second stop is harmless
    with pytest.raises(NodeNotRunning):
        runner.send_text(Identity.generate().public, "after stop").result(1.0)
    # The node closed its socket (the port is free again) and its database.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(bound)
    with Database.open(tmp_path / "a.db") as db:
        assert db.is_intact()


def test_a_failed_start_is_reported_on_the_start_future(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        runner = NodeRunner(
            _starter(tmp_path / "a.db", Identity.generate(), listen=("127.0.0.1", port)),
            Recorder(),
        )
        with pytest.raises(UserError, match="already in use"):
            runner.start().result(WAIT_S)
        assert runner.join(STOP_BOUND_S)
        with pytest.raises(NodeNotRunning):
            runner.card().result(1.0)


def test_a_disk_error_reports_node_failed_and_fails_the_command(tmp_path: Path) -> None:
    recorder = Recorder()
    with running(_starter(tmp_path / "a.db", Identity.generate()), recorder) as (runner, _):

        def fill_disk(service: NodeService) -> None:
            conn = service.db._conn
            conn.execute("VACUUM")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"

        runner.submit(fill_disk).result(WAIT_S)
        recipient = Identity.generate().public
        with pytest.raises(StorageError):
            runner.send_text(recipient, "must not leave unwritten " * 100).result(WAIT_S)
        event, _ = recorder.wait_for(NodeFailed)
        assert isinstance(event, NodeFailed) and "node stopped" in event.message
        with pytest.raises(StorageError):  # the stopped node refuses, it does not queue
            runner.send_text(recipient, "later").result(WAIT_S)


def test_a_callback_that_raises_does_not_stop_the_node(tmp_path: Path) -> None:
    calls: list[ServiceEvent] = []

    def broken(event: ServiceEvent) -> None:
        calls.append(event)
        raise RuntimeError("a bug in the caller")

    bob = Identity.generate()
    seen = Recorder()
    with (
        running(_starter(tmp_path / "bob.db", bob), broken) as (bob_runner, bob_at),
        running(_starter(tmp_path / "a.db", Identity.generate(), bootstrap=[bob_at]), seen) as (
            runner,
            _,
        ),
    ):
        runner.send_text(bob.public, "one").result(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not any(isinstance(e, IncomingText) for e in calls):
            assert time.monotonic() < deadline, "bob never received the text"
            time.sleep(0.05)
        assert bob_runner.running
        assert bob_runner.card().result(WAIT_S).startswith("comm")


# The child: a runner on a profile database, one text sent; it prints the text's id the
# moment its future resolves, then idles until it is killed.
CHILD = textwrap.dedent(
    """
    import contextlib, sys, time
    from pathlib import Path
    from comm_tui.crypto.identity import Identity, PublicIdentity
    from comm_tui.net.runner import NodeRunner
    from comm_tui.net.service import NodeService
    from comm_tui.store.db import Database

    path, recipient = Path(sys.argv[1]), PublicIdentity(bytes.fromhex(sys.argv[2]))

    async def start(stack):
        db = Database.open(path)
        stack.callback(db.close)
        service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0))
        await service.start()
        return service

    runner = NodeRunner(start, lambda event: None)
    runner.start().result(20)
    row = runner.send_text(recipient, "survives the kill").result(20)
    print(row.text_id.hex(), flush=True)
    time.sleep(60)
    """
)


def test_a_text_whose_future_resolved_survives_sigkill_the_next_moment(tmp_path: Path) -> None:
    recipient = Identity.generate().public
    path = tmp_path / "profile.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), recipient.key.hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # bounded by the test's timeout
        os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert line.strip(), "the child printed no text id"
    text_id = bytes.fromhex(line.strip())
    with Database.open(path) as db:
        rows = [r for r in db.history(recipient.address) if r.text_id == text_id]
        assert [r.text for r in rows] == ["survives the kill"]
        # Its sealed parts were committed with it: the next node on this profile sends them.
        assert db.relay_item_count() >= 1


def test_commands_before_start_and_from_a_future_callback_do_not_deadlock(tmp_path: Path) -> None:
    """Futures resolve on the node thread: a done-callback that submits again must not wait
    on itself, and a command before start is refused, not lost in a queue."""
    early = NodeRunner(_starter(tmp_path / "e.db", Identity.generate()), Recorder())
    with pytest.raises(NodeNotRunning):
        early.card().result(1.0)
    assert early.join(STOP_BOUND_S)
    assert early.stop().done()  # stopping a runner never started, twice, is harmless
    with running(_starter(tmp_path / "a.db", Identity.generate()), Recorder()) as (runner, _):
        chained: Future[str] = Future()

        def then(_: Future[str]) -> None:
            runner.card().add_done_callback(lambda f: chained.set_result(f.result()))

        runner.card().add_done_callback(then)
        assert chained.result(WAIT_S).startswith("comm")


def test_a_command_queued_in_the_loops_last_step_fails_instead_of_waiting_forever() -> None:
    """An asyncio loop drops the callbacks it still holds when it closes. A command that
    reached the loop in its very last step (here: one is queued at every step, until
    the loop ends after a failed start) must fail with NodeNotRunning: a status request
    left unresolved kept the app from ever asking for another one."""
    submitted: list[Future[None]] = []
    runner: NodeRunner

    async def start(stack: contextlib.AsyncExitStack) -> NodeService:
        loop = asyncio.get_running_loop()

        def every_step() -> None:
            submitted.append(runner.submit(lambda service: None))
            loop.call_soon(every_step)

        loop.call_soon(every_step)
        await asyncio.sleep(0)  # a step in which the first one runs
        raise UserError("this node does not start")

    runner = NodeRunner(start, Recorder())
    with pytest.raises(UserError):
        runner.start().result(WAIT_S)
    assert runner.join(STOP_BOUND_S)
    assert len(submitted) >= 2
    for future in submitted:  # all resolved: none is left pending
        assert isinstance(future.exception(timeout=0), NodeNotRunning)


READ_META = (
    "import sys; from pathlib import Path; from comm_tui.store.db import Database\n"
    "with Database.open(Path(sys.argv[1])) as db: print(db.get_meta('written') or '')"
)


def test_a_second_connection_in_the_process_keeps_the_first_ones_wal(tmp_path: Path) -> None:
    """The node's connection is the process's second (the app's or the CLI's is first).

    Opening it must not drop the locks the first one holds: another process closing its
    connection would then take itself for the last, delete the WAL, and a reader would
    no longer see what the node committed (nor would it survive a crash).
    """
    path = tmp_path / "profile.db"
    with Database.open(path) as first, Database.open(path) as second:
        first.set_meta("before", "1")
        # Another process opens and closes the database (`comm-tui history`, say).
        subprocess.run([sys.executable, "-c", READ_META, str(path)], check=True, timeout=30)
        second.set_meta("written", "by the node")
        shown = subprocess.run(
            [sys.executable, "-c", READ_META, str(path)],
            check=True,
            timeout=30,
            capture_output=True,
            text=True,
        )
        assert shown.stdout.strip() == "by the node"
