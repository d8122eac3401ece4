"""The prekey directory driven alone, through its ``DirectoryHost`` face only: what it
sends, relays and reports is all it may do (docs/PROTOCOL.md, "8a. Records")."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PrekeyStore
from comm_tui.crypto.records import bundle_of
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.directory import BUNDLE_REPUBLISH_MIN_S, Directory, DirectoryHost
from comm_tui.protocol.events import BundleFetched, Event
from comm_tui.protocol.lookup import Candidate, Lookup
from comm_tui.protocol.ratelimit import RateLimiter
from comm_tui.protocol.relay_store import Entry, Kind, RelayStore
from comm_tui.protocol.routing import Endpoint
from comm_tui.protocol.sessions import SessionBook
from comm_tui.protocol.stats import NodeStats
from tests.wire import T0


@dataclass
class Recorder:
    """What the directory asked its node to do."""

    events: list[Event] = field(default_factory=list)
    relayed: list[Entry] = field(default_factory=list)
    frames: list[tuple[bytes, Endpoint, pb.Frame]] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)
    queries: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)  # id: key, owner
    query_room: int = 1024

    def send_frame(
        self, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float, *, probe: bool = False
    ) -> bool:
        self.frames.append((key, endpoint, frame))
        return True

    def new_lookup(self, target: bytes) -> Lookup:
        seed = Candidate(b"\x05" * 32, b"\x06" * 20, ("198.18.0.5", 4000))
        return Lookup(target, [seed], k=8, alpha=3, paths=2)

    def open_query(self, key: bytes, endpoint: Endpoint, owner: bytes, now: float) -> bytes | None:
        if len(self.queries) >= self.query_room:
            return None
        query_id = len(self.queries).to_bytes(16, "big")
        self.queries[query_id] = (key, owner)
        return query_id

    def close_query(self, query_id: bytes, peer_key: bytes) -> bytes | None:
        asked = self.queries.get(query_id)
        if asked is None or asked[0] != peer_key:
            return None
        del self.queries[query_id]
        return asked[1]


def directory_with(
    identity: Identity, recorder: Recorder, store: RelayStore | None = None
) -> tuple[Directory, PrekeyStore]:
    prekeys = PrekeyStore(identity.key, T0)
    host = DirectoryHost(
        identity=identity,
        store=store if store is not None else RelayStore(identity.address),
        sessions=SessionBook(identity, prekeys),
        stats=NodeStats(),
        store_limit=RateLimiter(100.0, 300.0),
        emit=recorder.events.append,
        send_frame=recorder.send_frame,
        send_item=lambda entry, key, endpoint, now: None,
        send_receipt=lambda key, endpoint, ids, now: None,
        add_holder=lambda entry, holder, now: None,
        relay=lambda entry, now: recorder.relayed.append(entry),
        origin=lambda key, addr: "198.18.0.0/24",
        relaying=lambda: True,
        joined=lambda: True,
        new_lookup=recorder.new_lookup,
        advance_lookup=lambda lookup, now: recorder.lookups.append(lookup),
        open_query=recorder.open_query,
        close_query=recorder.close_query,
    )
    return Directory(host), prekeys


def test_our_bundle_is_republished_on_change_at_most_once_a_minute() -> None:
    recorder = Recorder()
    directory, prekeys = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    assert directory.keep_published(T0)  # once per run
    assert not directory.keep_published(T0 + 1)  # unchanged
    prekeys.bundle_version += 1  # a one-time prekey used, say
    assert not directory.keep_published(T0 + BUNDLE_REPUBLISH_MIN_S - 1)
    assert directory.keep_published(T0 + BUNDLE_REPUBLISH_MIN_S)
    directory.prekeys_replaced()  # restored prekeys: their versions count from 1 again
    assert directory.keep_published(T0 + 2 * BUNDLE_REPUBLISH_MIN_S)
    issued = [entry.wire.issued_ms for entry in recorder.relayed]
    assert len(issued) == 3 and all(entry.kind is Kind.RECORD for entry in recorder.relayed)
    assert issued == sorted(issued)


def test_a_fetch_with_no_query_room_ends_at_once_unfound() -> None:
    recorder = Recorder(query_room=0)
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    owner = Identity.from_seed(b"\x02" * 32).address
    assert directory.fetch(owner, T0)
    assert directory.fetch(owner, T0)  # one fetch per owner in flight
    (lookup,) = recorder.lookups
    met = Candidate(b"\x07" * 32, b"\x08" * 20, ("198.18.0.7", 4000))
    lookup.responded[met.address] = met
    directory.lookup_finished(lookup, T0 + 1)
    assert recorder.events == [BundleFetched(owner, False)]
    assert recorder.frames == []


def test_a_record_answer_counts_only_from_the_node_asked() -> None:
    recorder = Recorder()
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    owner = Identity.from_seed(b"\x02" * 32).address
    directory.fetch(owner, T0)
    (lookup,) = recorder.lookups
    asked = Identity.from_seed(b"\x07" * 32).public
    met = Candidate(asked.key, asked.address, ("198.18.0.7", 4000))
    lookup.responded[met.address] = met
    directory.lookup_finished(lookup, T0 + 1)
    ((key, endpoint, frame),) = recorder.frames
    assert (key, endpoint) == (met.key, met.endpoint) and frame.get_record.address == owner
    answer = pb.Record(query_id=frame.get_record.query_id)  # "none held"
    stranger = Identity.from_seed(b"\x09" * 32).public
    with pytest.raises(Rejected, match="unsolicited"):
        directory.on_record(stranger, answer, endpoint, T0 + 2)
    assert recorder.events == []  # the fetch still waits for the node asked
    directory.on_record(asked, answer, endpoint, T0 + 2)
    assert recorder.events == [BundleFetched(owner, False)]


def test_a_record_held_for_its_owner_gives_its_bundle_at_once_until_it_expires() -> None:
    """A fetch learns the bundle of a record we store for its owner without asking the
    network (verified when it was stored), but not once the record has expired."""
    owner = Identity.from_seed(b"\x02" * 32)
    published = Recorder()
    owner_directory, _ = directory_with(owner, published)
    assert owner_directory.keep_published(T0)
    (record,) = published.relayed
    assert isinstance(record.wire, pb.PrekeyBundle)
    me = Identity.from_seed(b"\x01" * 32)
    expired_at = record.wire.expires_ms / 1000 + 0.0005  # the very millisecond it expires
    for now, learned in ((T0 + 1, True), (expired_at, False)):
        store = RelayStore(me.address)
        store.add(record, enforce_quota=False)
        directory, _ = directory_with(me, Recorder(), store)
        assert directory.fetch(owner.address, now)  # the network is asked all the same
        assert (owner.address in directory.known_bundles) is learned
        if learned:
            assert directory.known_bundles[owner.address] == bundle_of(record.wire)
