"""The writer side of the group commit (comm_tui/net/commit.py): relay-store batches
written whole on the writer thread, the writer threads, and their return to the loop.

docs/PROTOCOL.md, "8.2 Local durability": a batch of relay-store rows alone is written
``BEGIN`` to ``COMMIT`` on a writer thread, and still nothing that depends on it leaves
before it is on disk, and a failing disk still stops the node. What is checked as
committed is read through a second SQLite connection, which sees only committed rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from comm_tui.net.commit import Datagram, GroupCommit, Writers, _Returns
from comm_tui.net.service import store_rows_alone
from comm_tui.protocol.events import Event, PeerRemoved, StoreChanged
from comm_tui.store.db import Database
from tests.test_integration import until

pytestmark = pytest.mark.timeout(60)


def committed_relay_keys(path: Path) -> set[bytes]:
    """The relay items another connection sees: committed ones only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {bytes(row[0]) for row in conn.execute("SELECT key FROM relay_items")}
    finally:
        conn.close()


def stored(key: bytes) -> StoreChanged:
    return StoreChanged(put={key: (b"entry " + key, 10**15)}, delete=frozenset())


class Harness:
    """A GroupCommit with the service's relay-store split on a real database; each
    statement is recorded with the thread that ran it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database.open(path)
        self.statements: list[tuple[str, int]] = []
        self.db._raw.set_trace_callback(
            lambda sql: self.statements.append((sql.split()[0], threading.get_ident()))
        )
        self.sent: list[tuple[Datagram, set[bytes]]] = []
        self.failures: list[Exception] = []
        self.journal: GroupCommit[str] = GroupCommit(
            self.db,
            apply=self.apply,
            notify=lambda notices: None,
            transmit=self.transmit,
            on_failure=self.failures.append,
            wake=lambda: None,
            store_rows=store_rows_alone,
            window_s=0.0,
        )

    def apply(self, events: list[Event]) -> list[str]:
        for event in events:
            if isinstance(event, StoreChanged):
                self.db.apply_store_changes(dict(event.put), event.delete)
            elif isinstance(event, PeerRemoved):
                self.db.set_meta("peer-" + event.key.hex(), "gone")
        return []

    def transmit(self, datagrams: list[Datagram]) -> None:
        on_disk = committed_relay_keys(self.path)
        self.sent.extend((datagram, on_disk) for datagram in datagrams)

    def close(self) -> None:
        self.journal.close()
        self.db.close()


async def test_relay_rows_alone_are_written_on_the_writer_before_what_waits_for_them(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path / "db")
    loop_thread = threading.get_ident()
    try:
        h.statements.clear()
        h.journal.add([stored(b"one"), stored(b"two")], [(b"receipt", ("127.0.0.1", 9))])
        await until(lambda: h.sent, "the batch's datagram")
        [(_, on_disk)] = h.sent
        assert on_disk == {b"one", b"two"}  # sent only once both rows were durable
        kinds = [kind for kind, _ in h.statements]
        assert kinds == ["BEGIN", "INSERT", "INSERT", "COMMIT"]  # a trace line per row
        assert all(thread != loop_thread for _, thread in h.statements)
        assert h.journal.whole_on_writer == 1 and h.failures == []
    finally:
        h.close()


async def test_a_batch_with_anything_else_is_written_on_the_loop_thread(tmp_path: Path) -> None:
    h = Harness(tmp_path / "db")
    loop_thread = threading.get_ident()
    try:
        h.statements.clear()
        h.journal.add([stored(b"one"), PeerRemoved(b"p" * 32)], [(b"ack", ("127.0.0.1", 9))])
        await until(lambda: h.sent, "the batch's datagram")
        assert h.sent[0][1] == {b"one"}
        begins = [thread for kind, thread in h.statements if kind == "BEGIN"]
        assert begins == [loop_thread] and h.journal.whole_on_writer == 0
    finally:
        h.close()


async def test_relay_rows_that_fail_on_the_writer_stop_the_node_and_send_nothing(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path / "db")
    try:
        h.db._raw.execute("DROP TABLE relay_items")  # every write of a relay row fails now
        h.journal.add([stored(b"one")], [(b"receipt", ("127.0.0.1", 9))])
        await until(lambda: h.failures, "the failure")
        assert h.sent == [] and h.journal.failure is not None
        h.journal.add([stored(b"two")], [(b"later", ("127.0.0.1", 9))])
        assert h.sent == []
        # Undone, not half-written: the connection is usable for reads and not in a transaction.
        assert h.db._raw.in_transaction is False
    finally:
        h.close()


async def test_commits_that_finish_together_return_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    returns = _Returns(loop)
    wakes: list[object] = []  # each a self-pipe write and a callback on the loop
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        wakes.append(callback)
        return call_soon_threadsafe(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        returned: list[int] = []

        class Group:
            def __init__(self, n: int) -> None:
                self.n = n

            def _committed(self, future: Future[None]) -> None:
                returned.append(self.n)

        done: Future[None] = Future()
        done.set_result(None)
        # Two commits finish before the loop runs again: one wake-up takes both, in order.
        returns.put(Group(3), done)  # type: ignore[arg-type]
        returns.put(Group(4), done)  # type: ignore[arg-type]
        assert len(wakes) == 1
        await asyncio.sleep(0)
        assert returned == [3, 4]
        # Drained, so the next commit wakes the loop again.
        returns.put(Group(5), done)  # type: ignore[arg-type]
        assert len(wakes) == 2
        await asyncio.sleep(0)
        assert returned == [3, 4, 5]
    finally:
        loop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign]


def test_a_writer_job_hands_back_its_result_or_its_exception() -> None:
    writers = Writers(2)
    assert writers.submit(pow, 2, 10).result(timeout=10) == 1024
    failed = writers.submit(lambda: 1 // 0)
    assert isinstance(failed.exception(timeout=10), ZeroDivisionError)
    # The threads survive a failed job.
    assert writers.submit(lambda: "still here").result(timeout=10) == "still here"
