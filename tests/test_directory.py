"""The prekey directory driven alone, through its ``DirectoryHost`` face only: what it
sends, relays and reports is all it may do (docs/PROTOCOL.md, "8a. Records")."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PrekeyStore
from comm_tui.crypto.records import RECORD_LIFETIME_S, RECORD_REFRESH_S, bundle_of, record_problem
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
    joined: bool = True  # whether the node has a routing table to look up from
    relaying: bool = True  # whether the node stores items for others
    opened: list[tuple[bytes, Endpoint]] = field(default_factory=list)  # GetRecords asked
    probes: list[bool] = field(default_factory=list)  # each frame's probe flag
    receipts: list[tuple[bytes, Endpoint, bytes, float]] = field(default_factory=list)
    holders: list[tuple[Entry, bytes, float]] = field(default_factory=list)
    stats: NodeStats = field(default_factory=NodeStats)

    def send_frame(
        self, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float, *, probe: bool = False
    ) -> bool:
        self.frames.append((key, endpoint, frame))
        self.probes.append(probe)
        return True

    def owe_receipt(self, key: bytes, endpoint: Endpoint, item: bytes, now: float) -> None:
        self.receipts.append((key, endpoint, item, now))

    def add_holder(self, entry: Entry, holder: bytes, now: float) -> None:
        self.holders.append((entry, holder, now))

    def new_lookup(self, target: bytes) -> Lookup:
        seed = Candidate(b"\x05" * 32, b"\x06" * 20, ("198.18.0.5", 4000))
        return Lookup(target, [seed], k=8, alpha=3, paths=2)

    def open_query(self, key: bytes, endpoint: Endpoint, owner: bytes, now: float) -> bytes | None:
        if len(self.queries) >= self.query_room:
            return None
        self.opened.append((key, endpoint))
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
    identity: Identity,
    recorder: Recorder,
    store: RelayStore | None = None,
    sessions: SessionBook | None = None,
) -> tuple[Directory, PrekeyStore]:
    prekeys = PrekeyStore(identity.key, T0)
    host = DirectoryHost(
        identity=identity,
        store=store if store is not None else RelayStore(identity.address),
        sessions=sessions if sessions is not None else SessionBook(identity, prekeys),
        stats=recorder.stats,
        store_limit=RateLimiter(100.0, 300.0),
        emit=recorder.events.append,
        send_frame=recorder.send_frame,
        send_item=lambda entry, key, endpoint, now: None,
        owe_receipt=recorder.owe_receipt,
        add_holder=recorder.add_holder,
        relay=lambda entry, now: recorder.relayed.append(entry),
        origin=lambda key, addr: "198.18.0.0/24",
        relaying=lambda: recorder.relaying,
        joined=lambda: recorder.joined,
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


def _published_record(owner: Identity, now: float) -> Entry:
    """The record ``owner``'s directory issues when it first publishes, at ``now``."""
    published = Recorder()
    owner_directory, _ = directory_with(owner, published)
    assert owner_directory.keep_published(now)
    (record,) = published.relayed
    return record


def test_a_fetch_asks_each_node_met_for_the_record_as_a_probe_of_ours() -> None:
    """A GetRecord is a request we start: our query table bounds it, not the 3x limit on
    answers to unvalidated endpoints, which would hold it back (docs/PROTOCOL.md,
    "Admission"; ``faces.SendFrame``)."""
    recorder = Recorder()
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    owner = Identity.from_seed(b"\x02" * 32).address
    directory.fetch(owner, T0)
    (lookup,) = recorder.lookups
    met = []
    for seed in (7, 8):
        node = Identity.from_seed(bytes([seed]) * 32).public
        met.append(Candidate(node.key, node.address, (f"198.18.0.{seed}", 4000)))
        lookup.responded[node.address] = met[-1]
    directory.lookup_finished(lookup, T0 + 1)
    assert [frame.WhichOneof("body") for _, _, frame in recorder.frames] == ["get_record"] * 2
    assert recorder.probes == [True, True]
    # Each query is opened for the node and endpoint it goes to: only that pair's answer
    # is taken (``close_query``).
    assert sorted(recorder.opened) == sorted((node.key, node.endpoint) for node in met)
    assert sorted((key, endpoint) for key, endpoint, _ in recorder.frames) == sorted(
        recorder.opened
    )


def test_a_pushed_record_is_receipted_to_its_sender_and_again_as_a_duplicate() -> None:
    """A record pushed for storage is stored once and receipted to the endpoint it came
    from; the same record pushed again is counted as a duplicate each time, its sender
    becomes a holder and is receipted too (docs/PROTOCOL.md, "8a.3")."""
    owner = Identity.from_seed(b"\x02" * 32)
    record = _published_record(owner, T0)
    assert isinstance(record.wire, pb.PrekeyBundle)
    recorder = Recorder()
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    pusher = Identity.from_seed(b"\x03" * 32).public
    addr = ("198.18.0.3", 4003)
    directory.on_record(pusher, pb.Record(bundle=record.wire), addr, T0 + 1)
    assert recorder.stats.stored == 1 and recorder.stats.duplicates == 0
    (stored,) = recorder.relayed
    assert recorder.receipts == [(pusher.key, addr, stored.key, T0 + 1)]
    for time in (T0 + 2, T0 + 3):
        directory.on_record(pusher, pb.Record(bundle=record.wire), addr, time)
    assert recorder.stats.stored == 1 and recorder.stats.duplicates == 2
    assert recorder.receipts[1:] == [(pusher.key, addr, stored.key, t) for t in (T0 + 2, T0 + 3)]
    assert [(holder, t) for _, holder, t in recorder.holders] == [
        (pusher.address, T0 + 2),
        (pusher.address, T0 + 3),
    ]


def test_a_restored_own_record_is_issued_again_when_its_refresh_falls_due() -> None:
    """After a restart the record we had published is refreshed RECORD_REFRESH_S after it
    was issued, with the same bundle, not before (docs/PROTOCOL.md, "8a.4")."""
    owner = Identity.from_seed(b"\x02" * 32)
    record = _published_record(owner, T0)
    assert isinstance(record.wire, pb.PrekeyBundle)
    store = RelayStore(owner.address)
    store.add(record, enforce_quota=False)
    recorder = Recorder()
    directory, _ = directory_with(owner, recorder, store)
    directory.restore_own_record(record)
    directory.housekeeping(T0 + RECORD_REFRESH_S - 1)
    assert recorder.relayed == []
    directory.housekeeping(T0 + RECORD_REFRESH_S)
    (again,) = recorder.relayed
    assert isinstance(again.wire, pb.PrekeyBundle)
    assert again.wire.issued_ms > record.wire.issued_ms
    assert bundle_of(again.wire) == bundle_of(record.wire)


def test_bundles_are_wanted_only_of_other_contacts_we_have_no_session_with() -> None:
    """Neither our own key nor a contact we already have a session with is wanted, even
    while we cannot fetch yet (the list is bounded: such keys would push out contacts we
    need); every other key given is, whatever comes before it, and is fetched once we
    have joined (docs/PROTOCOL.md, "8a.5")."""
    me = Identity.from_seed(b"\x01" * 32)
    sessions = SessionBook(me, PrekeyStore(me.key, T0))
    with_session = Identity.from_seed(b"\x04" * 32).public
    sessions.start_session(with_session, None, T0)
    wanted = [Identity.from_seed(seed * 32).public for seed in (b"\x05", b"\x06")]
    recorder = Recorder(joined=False)
    directory, _ = directory_with(me, recorder, sessions=sessions)
    keys = [me.key, wanted[0].key, with_session.key, wanted[1].key]
    directory.want(keys, T0)
    assert list(directory.wanted) == [contact.address for contact in wanted]
    assert recorder.lookups == []  # no table yet
    recorder.joined = True
    directory.fetch_wanted(T0 + 1)
    assert [lookup.target for lookup in recorder.lookups] == list(directory.wanted)


def test_our_own_record_pushed_back_is_refused_with_a_receipt_for_ours() -> None:
    """Records never go to their owner, so ours coming back is a confused or hostile
    peer's: refused as ``own_record``, and receipted (we hold ours) at the time it came
    (docs/PROTOCOL.md, "8a.3")."""
    me = Identity.from_seed(b"\x02" * 32)
    record = _published_record(me, T0)
    assert isinstance(record.wire, pb.PrekeyBundle)
    store = RelayStore(me.address)
    store.add(record, enforce_quota=False)
    recorder = Recorder()
    directory, _ = directory_with(me, recorder, store)
    pusher = Identity.from_seed(b"\x03" * 32).public
    with pytest.raises(Rejected) as refused:
        directory.on_record(pusher, pb.Record(bundle=record.wire), ("198.18.0.3", 1), T0 + 5)
    assert refused.value.reason == "own_record"
    assert recorder.receipts == [(pusher.key, ("198.18.0.3", 1), record.key, T0 + 5)]


def test_a_record_pushed_to_a_node_that_relays_nothing_is_refused_as_not_relay() -> None:
    """docs/PROTOCOL.md, "12.3": with relaying off nothing is stored for others, and the
    refusal is counted under ``not_relay``."""
    record = _published_record(Identity.from_seed(b"\x02" * 32), T0)
    assert isinstance(record.wire, pb.PrekeyBundle)
    recorder = Recorder(relaying=False)
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    pusher = Identity.from_seed(b"\x03" * 32).public
    with pytest.raises(Rejected) as refused:
        directory.on_record(pusher, pb.Record(bundle=record.wire), ("198.18.0.3", 1), T0 + 1)
    assert refused.value.reason == "not_relay"
    assert recorder.relayed == [] and recorder.receipts == []


def test_a_get_record_out_of_shape_is_malformed_and_answered_with_nothing() -> None:
    recorder = Recorder()
    directory, _ = directory_with(Identity.from_seed(b"\x01" * 32), recorder)
    asker = Identity.from_seed(b"\x03" * 32).public
    owner = Identity.from_seed(b"\x02" * 32).address
    for query_id, address in ((bytes(15), owner), (bytes(16), owner[:-1])):
        get = pb.GetRecord(query_id=query_id, address=address)
        with pytest.raises(Rejected) as refused:
            directory.on_get_record(asker, get, ("198.18.0.3", 1), T0)
        assert refused.value.reason == "malformed"
    assert recorder.frames == []


def test_a_forgotten_bundle_is_no_longer_started_from() -> None:
    """``forget``: a bundle with an unusable key is dropped, so the next text to its
    owner starts from no bundle (the fallback)."""
    owner = Identity.from_seed(b"\x02" * 32)
    record = _published_record(owner, T0)
    me = Identity.from_seed(b"\x01" * 32)
    store = RelayStore(me.address)
    store.add(record, enforce_quota=False)
    directory, _ = directory_with(me, Recorder(), store)
    assert directory.fetch(owner.address, T0 + 1)
    assert directory.bundle_to_start_with(owner.address, T0 + 1) is not None
    directory.forget(owner.address)
    assert directory.bundle_to_start_with(owner.address, T0 + 1) is None


def test_our_record_lives_record_lifetime_and_passes_the_checks_relays_make() -> None:
    """docs/PROTOCOL.md, "8a.2": a record living longer than RECORD_LIFETIME_S is out of
    shape, and relays would refuse ours."""
    record = _published_record(Identity.from_seed(b"\x02" * 32), T0)
    assert isinstance(record.wire, pb.PrekeyBundle)
    assert record.wire.expires_ms - record.wire.issued_ms == int(RECORD_LIFETIME_S * 1000)
    assert record_problem(record.wire) is None


def test_our_record_is_kept_even_when_the_store_takes_nothing_for_others() -> None:
    """Our own record is stored without quota, like our outbox: a store full (here: no
    room at all) of items for others never refuses it."""
    me = Identity.from_seed(b"\x02" * 32)
    recorder = Recorder()
    directory, _ = directory_with(me, recorder, RelayStore(me.address, max_items=0))
    assert directory.keep_published(T0)
    (record,) = recorder.relayed
    assert record.kind is Kind.RECORD and record.target == me.address


def test_our_record_is_issued_again_when_its_refresh_falls_due() -> None:
    """docs/PROTOCOL.md, "8a.4": the bundle we set is signed again RECORD_REFRESH_S
    later, so our record never expires while we run."""
    recorder = Recorder()
    directory, _ = directory_with(Identity.from_seed(b"\x02" * 32), recorder)
    assert directory.keep_published(T0)
    directory.housekeeping(T0 + RECORD_REFRESH_S - 1)
    assert len(recorder.relayed) == 1
    directory.housekeeping(T0 + RECORD_REFRESH_S)
    first, again = recorder.relayed
    assert isinstance(first.wire, pb.PrekeyBundle) and isinstance(again.wire, pb.PrekeyBundle)
    assert bundle_of(again.wire) == bundle_of(first.wire)
    assert again.wire.issued_ms > first.wire.issued_ms
