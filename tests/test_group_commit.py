"""Group commit (comm_tui/net/commit.py): batched durable writes on a real SQLite file.

The rule (docs/PROTOCOL.md, "8.2 Local durability"): no datagram leaves, and no notice is
given out, before every write the core asked for up to then is committed. What is checked
as committed is read through a second SQLite connection, which sees only committed rows.
The batch bounds (window, count, back-pressure on a slow disk) and the fail-stop of a
commit that fails on the writer thread are pinned here too; the service-level tests run
real nodes over UDP on 127.0.0.1.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import StorageError
from comm_tui.net.commit import Datagram, GroupCommit
from comm_tui.net.service import NodeFailed, NodeService
from comm_tui.protocol.events import (
    Event,
    PeerRemoved,
    SessionReset,
    StoreChanged,
    TextReceived,
)
from comm_tui.store.db import Database
from tests.test_integration import Network, first_hop, net, until

__all__ = ["net"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)

FAR_S = 30.0  # a window that never ends within a test
SLOW_DISK_S = 0.05


def committed_meta(path: Path) -> set[str]:
    """The meta keys another connection sees: committed ones only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM meta")}
    finally:
        conn.close()


def committed_text_ids(path: Path) -> set[bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {bytes(row[0]) for row in conn.execute("SELECT text_id FROM messages")}
    finally:
        conn.close()


class GatedExecutor(ThreadPoolExecutor):
    """A disk whose commits wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.gate = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def gated() -> Any:
            self.gate.wait(FAR_S)
            return fn(*args, **kwargs)

        return super().submit(gated)


class SlowDisk(ThreadPoolExecutor):
    """A disk whose every commit takes SLOW_DISK_S longer, like a slow fsync."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def slow() -> Any:
            time.sleep(SLOW_DISK_S)
            return fn(*args, **kwargs)

        return super().submit(slow)


class Harness:
    """A GroupCommit on a real database; each event writes one meta row."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.db = Database.open(path)
        self.transmitted: list[Datagram] = []
        self.notices: list[str] = []
        self.notified_uncommitted: list[str] = []
        self.failures: list[Exception] = []
        self.journal: GroupCommit[str] = GroupCommit(
            self.db,
            apply=self.apply,
            notify=self.notify,
            transmit=self.transmitted.extend,
            on_failure=self.failures.append,
            wake=lambda: None,
            **options,
        )

    def apply(self, events: list[Event]) -> list[str]:
        keys = [f"row-{event.key.hex()}" for event in events if isinstance(event, PeerRemoved)]
        for key in keys:
            self.db.set_meta(key, "v")
        return keys

    def notify(self, notices: list[str]) -> None:
        seen = committed_meta(self.path)
        self.notified_uncommitted.extend(n for n in notices if n not in seen)
        self.notices.extend(notices)

    def close(self) -> None:
        self.journal.close()
        self.db.close()


def event(n: int) -> PeerRemoved:
    return PeerRemoved(bytes([n]))


def datagram(n: int) -> Datagram:
    return (bytes([n]), ("127.0.0.1", 9))


async def test_a_batch_commits_after_its_window_and_tells_only_then(tmp_path: Path) -> None:
    h = Harness(tmp_path / "db", window_s=0.05)
    try:
        h.journal.add([event(1)], [datagram(1)])
        h.journal.add([event(2)], [datagram(2)])
        # Both wait in one batch: nothing sent, nothing told, nothing written yet.
        assert h.journal.pending == 4 and not h.journal.committing
        assert h.transmitted == [] and h.notices == [] and committed_meta(h.path) == set()
        await until(lambda: len(h.notices) == 2, "the window to end and the batch to commit")
        assert h.transmitted == [datagram(1), datagram(2)]
        assert h.notified_uncommitted == []
        assert h.journal.commits == 1 and h.journal.committed_events == 2
    finally:
        h.close()


async def test_a_full_batch_commits_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path / "db", window_s=FAR_S, max_items=4)
    try:
        h.journal.add([event(1)], [datagram(1)])
        h.journal.add([event(2)], [])
        assert h.journal.pending == 3 and not h.journal.committing  # the window runs
        h.journal.add([event(3)], [])
        assert h.journal.pending == 0 and h.journal.committing  # the count ended it
        await until(lambda: len(h.notices) == 3, "the full batch to commit", timeout_s=5.0)
        assert h.transmitted == [datagram(1)]
    finally:
        h.close()


async def test_datagrams_wait_for_the_commit_running_before_them(tmp_path: Path) -> None:
    disk = GatedExecutor()
    h = Harness(tmp_path / "db", window_s=0.0, executor=disk)
    try:
        h.journal.add([event(1)], [datagram(1)])
        await until(lambda: h.journal.committing, "the commit to start")
        # No event of its own, but made after a write that is not on disk yet.
        h.journal.add([], [datagram(2)])
        assert h.transmitted == []
        disk.gate.set()
        await until(lambda: h.transmitted == [datagram(1), datagram(2)], "the batch's datagrams")
        assert h.notified_uncommitted == []
        # Nothing uncommitted now: a datagram without events leaves at once.
        h.journal.add([], [datagram(3)])
        assert h.transmitted[-1] == datagram(3)
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_a_full_batch_behind_a_slow_commit_makes_the_loop_wait(tmp_path: Path) -> None:
    disk = GatedExecutor()
    h = Harness(tmp_path / "db", window_s=0.0, max_items=8, executor=disk)
    try:
        h.journal.add([event(1)], [datagram(1)])
        await until(lambda: h.journal.committing, "the commit to start")
        opener = threading.Timer(0.2, disk.gate.set)
        opener.start()
        started = time.monotonic()
        h.journal.add([event(n) for n in range(2, 6)], [datagram(n) for n in range(2, 6)])
        waited_s = time.monotonic() - started
        # The first commit returned inside add (its datagram is out), and what gathered
        # behind it is being committed now: memory stays bounded whatever arrives.
        assert disk.gate.is_set() and waited_s > 0.1
        assert h.transmitted == [datagram(1)]
        assert h.journal.pending == 0 and h.journal.committing
        await until(lambda: len(h.notices) == 5, "the second batch")
        assert h.transmitted == [datagram(n) for n in range(1, 6)]
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_commit_now_writes_what_is_pending_first_and_is_durable_on_return(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path / "db", window_s=FAR_S)
    try:
        h.journal.add([event(1)], [datagram(1)])

        def write() -> tuple[str, list[str]]:
            h.db.set_meta("command", "v")
            return "done", ["command"]

        assert h.journal.commit_now(write) == "done"
        assert committed_meta(h.path) == {"row-01", "command"}
        assert h.transmitted == [datagram(1)]
        assert h.notices == ["row-01", "command"] and h.notified_uncommitted == []
    finally:
        h.close()


async def test_a_write_that_fails_in_a_batch_stops_everything_after_it(tmp_path: Path) -> None:
    h = Harness(tmp_path / "db", window_s=0.0)
    h.db._conn.execute("VACUUM")
    pages = h.db._conn.execute("PRAGMA page_count").fetchone()[0]
    h.db._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"
    try:
        h.journal.add([PeerRemoved(bytes(range(256)) * 40)], [datagram(1)])
        await until(lambda: bool(h.failures), "the batch to fail")
        assert isinstance(h.failures[0], StorageError)
        h.journal.add([event(2)], [datagram(2)])
        assert h.transmitted == [] and h.notices == []
        assert committed_meta(h.path) == set()
        with pytest.raises(StorageError):
            h.journal.commit_now(lambda: (None, []))
    finally:
        h.close()


class FailingDisk(ThreadPoolExecutor):
    """A disk whose commits fail: the batch is undone (rolled back) under the COMMIT."""

    def __init__(self, db: Database, log: list[str]) -> None:
        super().__init__(max_workers=1)
        self.db = db
        self.log = log

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.log.append("commit")

        def failing() -> Any:
            self.db._raw.execute("ROLLBACK")
            return fn(*args, **kwargs)

        return super().submit(failing)


async def test_no_ack_leaves_before_the_received_text_is_committed(net: Network) -> None:
    """On a slow disk, every datagram the recipient's core produced after it took the
    text (the ack, receipts, and anything later) is checked against the file when it is
    sent. Datagrams produced before (a batch committing when the text arrived) depend on
    earlier writes only and may go out while the text's batch waits."""
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to join")
    service, protocol = recipient.running, recipient.running.protocol
    journal = service.journal
    assert protocol is not None and protocol.transport is not None and journal is not None
    journal.settle()
    journal._executor = SlowDisk()  # every commit now takes 50 ms longer
    received: list[bytes] = []
    node = service.node
    drain_events, datagrams_to_send = node.drain_events, node.datagrams_to_send
    sendto = protocol.transport.sendto
    # Each datagram by its bytes (nonces make them unique): the texts taken before the
    # core produced it, which it may depend on.
    depends_on: dict[bytes, list[bytes]] = {}
    checks: list[int] = []
    violations: list[bytes] = []

    def recording_drain_events() -> list[Event]:
        got = drain_events()
        received.extend(e.text_id for e in got if isinstance(e, TextReceived))
        return got

    def recording_datagrams_to_send() -> list[Datagram]:
        out = datagrams_to_send()
        for data, _ in out:
            depends_on[data] = list(received)
        return out

    def checking_sendto(data: bytes, *args: Any) -> None:
        texts = depends_on.get(data, [])
        if texts:
            on_disk = committed_text_ids(recipient.db_path)
            violations.extend(t for t in texts if t not in on_disk)
            checks.append(len(texts))
        sendto(data, *args)

    node.drain_events = recording_drain_events  # type: ignore[method-assign]
    node.datagrams_to_send = recording_datagrams_to_send  # type: ignore[method-assign]
    protocol.transport.sendto = checking_sendto  # type: ignore[method-assign]
    row = sender.running.send_text(recipient.identity.public, "on disk before the ack")
    await until(lambda: sender.state_of(row.text_id) == "delivered", "the ack")
    assert received == [row.text_id]
    assert checks, "the ack was sent, so the rule was checked"
    assert violations == []


async def test_a_commit_that_fails_stops_the_node_and_its_batch_never_leaves(
    net: Network,
) -> None:
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to join")
    service, protocol = recipient.running, recipient.running.protocol
    assert protocol is not None and protocol.transport is not None and service.journal is not None
    assert recipient.db is not None
    log: list[str] = []
    sendto = protocol.transport.sendto

    def recording_sendto(data: bytes, *args: Any) -> None:
        log.append("sent")
        sendto(data, *args)

    protocol.transport.sendto = recording_sendto  # type: ignore[method-assign]
    service.journal.settle()
    service.journal._executor = FailingDisk(recipient.db, log)
    row = sender.running.send_text(recipient.identity.public, "not acked unless written")
    await until(lambda: any(isinstance(e, NodeFailed) for e in recipient.events), "the failure")
    assert protocol.failure is not None
    assert "commit" in log and "sent" not in log[log.index("commit") :]
    assert row.text_id not in committed_text_ids(recipient.db_path)
    with pytest.raises(StorageError):
        service.send_text(sender.identity.public, "cannot go out either")
    assert sender.state_of(row.text_id) != "delivered"


async def test_a_refused_command_undoes_only_itself_and_the_batch_is_committed(
    tmp_path: Path,
) -> None:
    """The core already acted on the pending events (it may have acked them): they must
    be written even when the user's command that follows them is refused."""
    h = Harness(tmp_path / "db", window_s=FAR_S)
    try:
        h.journal.add([event(1)], [datagram(1)])

        def refused() -> tuple[None, list[str]]:
            h.db.set_meta("command", "v")
            raise ValueError("the text is too long")

        with pytest.raises(ValueError):
            h.journal.commit_now(refused)
        assert committed_meta(h.path) == {"row-01"}
        assert h.transmitted == [datagram(1)] and h.notices == ["row-01"]
        assert h.failures == [] and h.journal.failure is None
    finally:
        h.close()


def test_a_batch_without_savepoints_with_a_failed_write_is_never_committed(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path / "db")
    try:
        db.begin_batch(savepoints=False)
        db.set_meta("kept", "v")
        with pytest.raises(ValueError), db.transaction():
            db.set_meta("half", "v")
            raise ValueError("a write that failed half way")
        with pytest.raises(StorageError):
            db.commit_batch()
        assert committed_meta(tmp_path / "db") == set()
        db.set_meta("after", "v")  # the connection is usable again
        assert committed_meta(tmp_path / "db") == {"after"}
    finally:
        db.close()


def test_relay_store_changes_merged_over_a_batch_keep_the_later_one(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0))
    try:
        item = (b"blob", 2**62)
        with db.transaction():
            service._persist(
                [
                    StoreChanged({b"a": item, b"b": item}, frozenset()),
                    StoreChanged({}, frozenset({b"a"})),
                    StoreChanged({b"c": item}, frozenset({b"c"})),  # both: deleted
                    StoreChanged({}, frozenset({b"d"})),
                    StoreChanged({b"d": item}, frozenset()),
                ]
            )
        assert sorted(key for key, _ in db.load_relay_items(0)) == [b"b", b"d"]
    finally:
        db.close()


async def test_what_a_batch_made_the_core_do_is_pumped_after_its_commit(tmp_path: Path) -> None:
    """A session reset re-sends texts from inside the batch's writes: the core's output
    for them is taken (and sent) right after the commit, not at some later pump."""
    db = Database.open(tmp_path / "db")
    service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0))
    await service.start()
    try:
        protocol, journal = service.protocol, service.journal
        assert protocol is not None and journal is not None
        peer = Identity.generate().public
        db.add_outgoing(b"t" * 16, peer.key, peer.address, "to be sent again", time.time())
        after_commit: list[bool] = []  # a pump made by finishing a commit
        inside: list[bool] = [False]
        pump, committed = protocol.pump, journal._committed

        def counting_pump() -> None:
            if inside[0]:
                after_commit.append(True)
            pump()

        def marked_committed(future: Any) -> None:
            inside[0] = True
            try:
                committed(future)
            finally:
                inside[0] = False

        protocol.pump = counting_pump  # type: ignore[method-assign]
        journal._committed = marked_committed  # type: ignore[method-assign]
        base = journal.commits
        journal.add([PeerRemoved(b"p" * 32)], [])
        await until(lambda: journal.commits > base and not journal.committing, "a plain batch")
        assert after_commit == []  # nothing to take after a batch that gave the core no command
        journal.add([SessionReset(peer.key)], [])
        await until(lambda: journal.commits > base + 1 and not journal.committing, "the reset")
        assert after_commit == [True]
        assert [r.direction for r in db.history(peer.address)] == ["out", "notice"]
    finally:
        await service.stop()
        db.close()
