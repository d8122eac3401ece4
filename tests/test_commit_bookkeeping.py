"""Bookkeeping writes in the group commit (docs/PROTOCOL.md, "8.2 Local durability").

The relay store's bookkeeping of entries already written (schedule, holders) and its
deletions hold no datagram back: what follows them leaves at once, and they are committed
with the next batch, or ``lazy_window_s`` after the first of them. Every other write still
holds back every datagram after it until it is committed, including those that follow a
bookkeeping write. The core marks the bookkeeping (``StoreChanged.bookkeeping``); the
service's rule (``holds``) and the commit's mechanism are pinned here, on a
real SQLite file read through a second connection that sees only committed rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.net.commit import Hold
from comm_tui.net.service import holds
from comm_tui.protocol.events import (
    Event,
    PeerAdded,
    PeerRemoved,
    StoreChanged,
    TextReceived,
)
from comm_tui.protocol.relay_store import RelayStore
from tests.test_group_commit import (
    FAR_S,
    GatedExecutor,
    Harness,
    committed_meta,
    datagram,
    event,
)
from tests.test_integration import until
from tests.test_relay_store import message_entry
from tests.wire import T0, Wire

pytestmark = pytest.mark.timeout(60)

LAZY_S = 0.3


def chore(n: int) -> PeerAdded:
    """A bookkeeping write in the harness (it writes a meta row, as a real one writes)."""
    return PeerAdded(bytes([n]), ("127.0.0.1", 9))


class LazyHarness(Harness):
    """The group commit harness, with PeerAdded standing for a bookkeeping write."""

    def __init__(self, path: Path, **options: Any) -> None:
        options.setdefault("lazy_window_s", LAZY_S)
        super().__init__(
            path,
            holds=lambda e: Hold.NOTHING if isinstance(e, PeerAdded) else Hold.ALL,
            **options,
        )

    def apply(self, events: list[Event]) -> list[str]:
        notices = super().apply(events)
        for chore_event in (e for e in events if isinstance(e, PeerAdded)):
            self.db.set_meta(f"chore-{chore_event.key.hex()}", "v")
        return notices


async def test_datagrams_after_bookkeeping_leave_at_once_and_it_commits_later(
    tmp_path: Path,
) -> None:
    h = LazyHarness(tmp_path / "db", window_s=0.0)
    try:
        h.journal.add([chore(1)], [datagram(1)])
        h.journal.add([chore(2)], [datagram(2)])
        assert h.transmitted == [datagram(1), datagram(2)]  # nothing they wait for
        assert committed_meta(h.path) == set() and h.journal.pending == 2
        took_s = await until(lambda: h.journal.commits == 1, "the lazy batch's window")
        await until(lambda: not h.journal.committing, "its commit")
        assert took_s > LAZY_S / 2  # its own window, not the urgent one (0 here)
        assert committed_meta(h.path) == {"chore-01", "chore-02"}
        assert h.journal.committed_events == 2 and h.journal.lazy_commits == 1
        assert h.notices == []
    finally:
        h.close()


async def test_an_urgent_write_brings_the_pending_bookkeeping_with_it(tmp_path: Path) -> None:
    h = LazyHarness(tmp_path / "db", window_s=0.05, lazy_window_s=FAR_S)
    try:
        h.journal.add([chore(1)], [datagram(1)])
        h.journal.add([event(2)], [datagram(2)])
        # The urgent write holds back what follows it, bookkeeping or not.
        h.journal.add([chore(3)], [datagram(3)])
        assert h.transmitted == [datagram(1)]
        await until(lambda: h.notices == ["row-02"], "the urgent window (not the lazy one)")
        assert h.transmitted == [datagram(1), datagram(2), datagram(3)]
        assert committed_meta(h.path) == {"chore-01", "row-02", "chore-03"}
        assert h.journal.commits == 1 and h.journal.lazy_commits == 0
        assert h.notified_uncommitted == []
    finally:
        h.close()


async def test_after_bookkeeping_datagrams_still_wait_for_an_urgent_commit_running(
    tmp_path: Path,
) -> None:
    disk = GatedExecutor()
    h = LazyHarness(tmp_path / "db", window_s=0.0, lazy_window_s=FAR_S, executor=disk)
    try:
        h.journal.add([event(1)], [datagram(1)])
        await until(lambda: h.journal.committing, "the urgent commit to start")
        h.journal.add([chore(2)], [datagram(2)])
        assert h.transmitted == []  # it may answer for what is still being written
        disk.gate.set()
        await until(lambda: h.transmitted == [datagram(1), datagram(2)], "the commit's return")
        # The bookkeeping left behind waits for its own window, not the commit's return.
        assert h.journal.commits == 1 and h.journal.pending == 1 and not h.journal.committing
        h.journal.add([chore(3)], [datagram(3)])
        assert h.transmitted[-1] == datagram(3)
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_after_a_bookkeeping_commit_starts_datagrams_do_not_wait_for_it(
    tmp_path: Path,
) -> None:
    disk = GatedExecutor()
    h = LazyHarness(tmp_path / "db", window_s=FAR_S, lazy_window_s=0.0, executor=disk)
    try:
        h.journal.add([chore(1)], [])
        await until(lambda: h.journal.committing, "the bookkeeping commit to start")
        h.journal.add([], [datagram(1)])
        assert h.transmitted == [datagram(1)]
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_bookkeeping_whose_window_ended_during_a_commit_goes_at_its_return(
    tmp_path: Path,
) -> None:
    disk = GatedExecutor()
    h = LazyHarness(tmp_path / "db", window_s=0.0, lazy_window_s=0.05, executor=disk)
    try:
        h.journal.add([event(1)], [])
        await until(lambda: h.journal.committing, "the urgent commit to start")
        h.journal.add([chore(2)], [])
        loop_time = h.journal._loop.time
        await until(lambda: loop_time() > h.journal._due, "the lazy window to end")
        disk.gate.set()
        await until(lambda: h.journal.commits == 2, "the bookkeeping's commit")
        await until(lambda: not h.journal.committing, "its end")
        assert committed_meta(h.path) == {"row-01", "chore-02"}
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


def test_the_rule_defers_only_bookkeeping_and_deletions() -> None:
    item = (b"blob", 2**62)
    nothing = Hold.NOTHING
    assert holds(StoreChanged({b"a": item}, frozenset(), frozenset({b"a"}))) is nothing
    assert holds(StoreChanged({}, frozenset({b"a"}))) is nothing  # a deletion
    assert holds(StoreChanged({b"a": item}, frozenset({b"b"}), frozenset({b"a", b"c"}))) is nothing
    # One entry written anew among re-scheduled ones: what follows it must wait.
    assert holds(StoreChanged({b"a": item, b"b": item}, frozenset(), frozenset({b"a"}))) is Hold.ALL
    assert holds(StoreChanged({b"a": item}, frozenset())) is Hold.ALL  # the default
    assert holds(PeerRemoved(b"p" * 32)) is Hold.ALL
    sender = Identity.generate().public
    assert holds(TextReceived(b"t" * 16, sender, "hi", 0)) is Hold.ALL  # shown to the user


def test_the_store_tells_a_new_entry_from_its_bookkeeping() -> None:
    store = RelayStore(bytes(20))
    entry = message_entry(1)
    store.add(entry)
    store.touch(entry, bookkeeping=True)  # re-scheduled before it was ever written
    assert store.take_changes().bookkeeping == frozenset()
    store.touch(entry, bookkeeping=True)
    changes = store.take_changes()
    assert set(changes.put) == {entry.key} and changes.bookkeeping == {entry.key}
    store.touch(entry, bookkeeping=True)
    store.add(message_entry(1))  # replaced: its content is new again
    assert store.take_changes().bookkeeping == frozenset()


def test_a_receipt_makes_the_senders_entry_bookkeeping_and_the_relays_copy_is_not() -> None:
    """Through the core: our own part's first write holds datagrams back, the holder a
    receipt adds does not; the relay's new copy does (its receipt answers for it)."""
    wire = Wire()
    sender, relay, recipient = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(sender, relay)
    wire.connect(relay, recipient)
    wire.offline.add(wire.endpoint(recipient))
    sender.send_text(recipient.identity.public, "held by the relay", T0)
    wire.pump(T0)
    wire.run(T0, T0 + 5.0)
    own = [e for e in wire.of(sender, StoreChanged) if isinstance(e, StoreChanged) and e.put]
    first, *later = own
    part_keys = set(first.put) - first.bookkeeping
    assert part_keys, "the part's first write is not bookkeeping"
    # Re-scheduled at each attempt, a holder added by the relay's receipt: bookkeeping.
    rewrites = [e for e in later if part_keys & set(e.put)]
    assert rewrites and all(part_keys <= e.bookkeeping for e in rewrites)
    copies = [e for e in wire.of(relay, StoreChanged) if isinstance(e, StoreChanged)]
    assert any(set(e.put) & part_keys - e.bookkeeping for e in copies)
