"""Prekey records: signed bundles stored at the owner's neighbourhood and fetched from it.

docs/PROTOCOL.md, "8a. Records". Covers the record itself (canonical signing bytes,
every field under the signature, shape checks, the worst case fitting one datagram),
publishing, replication and fetching across a network while the owner is offline,
refresh before expiry, newest-wins, refusals counted by reason (forged, expired,
over-long, from the future, wrong owner, out of shape, unsolicited), admission of
GetRecord, store quotas against a flood of records, and restarts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PublicBundle
from comm_tui.crypto.records import (
    MAX_ONE_TIME_PREKEYS,
    MAX_RECORD_LIFETIME_S,
    RECORD_LIFETIME_S,
    RECORD_REFRESH_S,
    bundle_of,
    record_problem,
    record_signing_bytes,
    sign_record,
    verify_record,
)
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import MAX_DATAGRAM_BYTES, Codec
from comm_tui.protocol.directory import (
    BUNDLE_FETCHES_MAX,
    BUNDLE_REPUBLISH_MIN_S,
    BUNDLE_RETRY_S,
    KNOWN_BUNDLES_MAX,
)
from comm_tui.protocol.events import BundleFetched
from comm_tui.protocol.node import (
    HOUSEKEEPING_INTERVAL_S,
    QUERY_TIMEOUT_S,
    RECEIPT_DELAY_S,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.network import SimNetwork, SimNode
from tests.wire import T0, Wire

MS = 1000


def bundle_for(identity: Identity, prekeys: int = 4, spk_id: int = 7) -> PublicBundle:
    return PublicBundle(
        identity.key,
        spk_id,
        os.urandom(32),
        tuple((100 + i, os.urandom(32)) for i in range(prekeys)),
    )


def record_for(
    identity: Identity,
    issued: float = T0,
    lifetime_s: float = RECORD_LIFETIME_S,
    prekeys: int = 4,
) -> pb.PrekeyBundle:
    issued_ms = int(issued * MS)
    return sign_record(
        identity, bundle_for(identity, prekeys), issued_ms, issued_ms + int(lifetime_s * MS)
    )


def resigned(identity: Identity, record: pb.PrekeyBundle) -> pb.PrekeyBundle:
    """``record`` as edited, signed again by ``identity`` without any shape check."""
    signed = record_signing_bytes(
        record.owner_key,
        record.signed_prekey_id,
        record.signed_prekey,
        tuple((p.id, p.key) for p in record.one_time_prekeys),
        record.issued_ms,
        record.expires_ms,
    )
    out = pb.PrekeyBundle()
    out.CopyFrom(record)
    out.signature = identity.sign(signed)
    return out


def push(wire: Wire, sender: Node, receiver: Node, record: pb.PrekeyBundle, now: float) -> None:
    """``sender`` hands ``receiver`` a record for storage, as a relay would."""
    frame = pb.Frame(record=pb.Record(bundle=record))
    data = sender._codec.encode_frame(receiver.identity.key, frame, now)
    receiver.receive_datagram(data, wire.endpoint(sender), now)


def plant(node: Node, record: pb.PrekeyBundle, owner: bytes) -> None:
    """Make ``node`` hold ``record`` as the record of ``owner`` (a hostile relay's store)."""
    entry = Entry(Kind.RECORD, owner, owner, int(T0) * MS + 10**9, record, stored_at=T0)
    node._store.add(entry, enforce_quota=False)


def tap(wire: Wire, node: Node) -> list[pb.Frame]:
    """From now on, collect every frame delivered to ``node`` (nothing is dropped)."""
    frames: list[pb.Frame] = []
    codec = Codec(node.identity)
    dest = wire.endpoint(node)

    def look(source: tuple[str, int], to: tuple[str, int], data: bytes) -> bool:
        if to == dest:
            packet = codec.parse(data)
            if packet.WhichOneof("body") == "boxed":
                sent_at = int.from_bytes(packet.boxed[:8], "big") / MS  # any test time
                frame = codec.open(packet, sent_at).frame
                if frame is not None:
                    frames.append(frame)
        return False

    wire.drop = look
    return frames


def fetched(wire: Wire, node: Node) -> list[BundleFetched]:
    return [e for e in wire.of(node, BundleFetched) if isinstance(e, BundleFetched)]


def sim_fetched(sim: SimNode) -> list[BundleFetched]:
    return [e for e in sim.events if isinstance(e, BundleFetched)]


@pytest.fixture
def wire() -> Wire:
    return Wire()


# ---------------------------------------------------------------- the record itself


def test_signed_record_verifies_and_carries_the_bundle() -> None:
    owner = Identity.from_seed(b"\x01" * 32)
    public = bundle_for(owner, prekeys=MAX_ONE_TIME_PREKEYS)
    record = sign_record(owner, public, 5 * MS, 6 * MS)
    assert verify_record(record)
    assert bundle_of(record) == public
    # The wire form round-trips: what a relay forwards verifies at the fetcher.
    assert verify_record(pb.PrekeyBundle.FromString(record.SerializeToString()))


def _edit_spk_id(r: pb.PrekeyBundle) -> None:
    r.signed_prekey_id += 1


def _edit_spk(r: pb.PrekeyBundle) -> None:
    r.signed_prekey = bytes([r.signed_prekey[0] ^ 1]) + r.signed_prekey[1:]


def _edit_otpk_id(r: pb.PrekeyBundle) -> None:
    r.one_time_prekeys[0].id += 50


def _edit_otpk_key(r: pb.PrekeyBundle) -> None:
    r.one_time_prekeys[1].key = bytes(32)


def _swap_otpks(r: pb.PrekeyBundle) -> None:
    first, second = pb.OneTimePrekey(), pb.OneTimePrekey()
    first.CopyFrom(r.one_time_prekeys[0])
    second.CopyFrom(r.one_time_prekeys[1])
    r.one_time_prekeys[0].CopyFrom(second)
    r.one_time_prekeys[1].CopyFrom(first)


def _drop_otpk(r: pb.PrekeyBundle) -> None:
    del r.one_time_prekeys[-1]


def _edit_issued(r: pb.PrekeyBundle) -> None:
    r.issued_ms += 1


def _edit_expires(r: pb.PrekeyBundle) -> None:
    r.expires_ms += 1


def _edit_owner(r: pb.PrekeyBundle) -> None:
    r.owner_key = Identity.from_seed(b"\x02" * 32).key


@pytest.mark.parametrize(
    "edit",
    [
        _edit_spk_id,
        _edit_spk,
        _edit_otpk_id,
        _edit_otpk_key,
        _swap_otpks,
        _drop_otpk,
        _edit_issued,
        _edit_expires,
        _edit_owner,
    ],
)
def test_every_field_is_under_the_signature(edit: Callable[[pb.PrekeyBundle], None]) -> None:
    record = record_for(Identity.from_seed(b"\x01" * 32))
    edit(record)
    assert record_problem(record) is None
    assert not verify_record(record)


def test_signing_bytes_are_the_documented_layout() -> None:
    key, spk = bytes(range(32)), bytes(range(32, 64))
    signed = record_signing_bytes(key, 7, spk, ((1, b"\xaa" * 32),), 0x0102, 0x0304)
    assert signed == (
        b"comm-tui prekey record v1\x00"
        + key
        + b"\x00\x00\x00\x07"
        + spk
        + b"\x01"
        + b"\x00\x00\x00\x01"
        + b"\xaa" * 32
        + (0x0102).to_bytes(8, "big")
        + (0x0304).to_bytes(8, "big")
    )


def _shape(**changes: object) -> pb.PrekeyBundle:
    record = record_for(Identity.from_seed(b"\x01" * 32))
    for name, value in changes.items():
        if name == "prekeys":
            del record.one_time_prekeys[:]
            assert isinstance(value, list)
            record.one_time_prekeys.extend(value)
        else:
            setattr(record, name, value)
    return record


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_shape(owner_key=b"\x01" * 31), "malformed"),
        (_shape(signed_prekey=b"\x01" * 33), "malformed"),
        (_shape(signature=b"\x01" * 63), "malformed"),
        (_shape(signed_prekey_id=0), "malformed"),
        (_shape(prekeys=[pb.OneTimePrekey(id=0, key=b"k" * 32)]), "malformed"),
        (_shape(prekeys=[pb.OneTimePrekey(id=3, key=b"k" * 32)] * 2), "malformed"),
        (_shape(prekeys=[pb.OneTimePrekey(id=3, key=b"k" * 31)]), "malformed"),
        (
            _shape(
                prekeys=[
                    pb.OneTimePrekey(id=i + 1, key=b"k" * 32)
                    for i in range(MAX_ONE_TIME_PREKEYS + 1)
                ]
            ),
            "malformed",
        ),
        (_shape(issued_ms=10, expires_ms=10), "malformed"),
        (_shape(issued_ms=10, expires_ms=10 + MAX_RECORD_LIFETIME_S * MS + 1), "record_too_long"),
        (_shape(owner_key=bytes(32)), "bad_key"),
    ],
)
def test_out_of_shape_records_are_named(record: pb.PrekeyBundle, reason: str) -> None:
    assert record_problem(record) == reason
    assert not verify_record(record)


def test_the_longest_lifetime_allowed_is_exact() -> None:
    record = _shape(issued_ms=10, expires_ms=10 + MAX_RECORD_LIFETIME_S * MS)
    assert record_problem(record) is None


def test_only_the_owner_signs_its_bundle() -> None:
    owner, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    with pytest.raises(ValueError, match="own identity"):
        sign_record(other, bundle_for(owner), 1, 2)
    with pytest.raises(ValueError, match="would be refused"):
        sign_record(owner, bundle_for(owner, prekeys=MAX_ONE_TIME_PREKEYS + 1), 1, 2)


def test_the_largest_record_answer_fits_a_datagram_with_a_cookie() -> None:
    """Every varint at its largest, every prekey slot used, answering a GetRecord."""
    record = pb.PrekeyBundle(
        owner_key=b"\xff" * 32,
        signed_prekey_id=2**32 - 1,
        signed_prekey=b"\xff" * 32,
        one_time_prekeys=[
            pb.OneTimePrekey(id=2**32 - 1 - i, key=b"\xff" * 32)
            for i in range(MAX_ONE_TIME_PREKEYS)
        ],
        issued_ms=2**64 - 1,
        expires_ms=2**64 - 1,
        signature=b"\xff" * 64,
    )
    frame = pb.Frame(record=pb.Record(query_id=b"\xff" * 16, bundle=record))
    codec = Codec(Identity.from_seed(b"\x01" * 32))
    data = codec.encode_frame(Identity.from_seed(b"\x02" * 32).key, frame, T0, cookie=b"c" * 16)
    assert len(data) <= MAX_DATAGRAM_BYTES


# ---------------------------------------------------------------- across a network


def sim_network(count: int, seed: int) -> tuple[SimNetwork, list[SimNode]]:
    net = SimNetwork(seed)
    config = NodeConfig(backoff_base_s=2.0, backoff_max_s=60.0)
    nodes = [net.add_node(config=config) for _ in range(count)]
    for sim in nodes[1:]:
        net.do(sim, lambda n: n.bootstrap(nodes[0].endpoint, net.now))
    net.run_for(30.0)
    assert all(s.node.state == "online" for s in nodes)
    return net, nodes


def holders_of(nodes: list[SimNode], owner: Node) -> list[SimNode]:
    return [
        s for s in nodes if s.node is not owner and s.node._store.get(Kind.RECORD, owner.address)
    ]


def test_bundle_of_an_offline_owner_is_fetched_from_its_neighbourhood() -> None:
    net, nodes = sim_network(16, seed=5)
    owner, fetcher = nodes[4], nodes[11]
    public = bundle_for(owner.node.identity, prekeys=MAX_ONE_TIME_PREKEYS)
    net.do(owner, lambda n: n.set_own_bundle(public, net.now))
    net.run_for(10.0)
    holders = holders_of(nodes, owner.node)
    assert len(holders) >= 5
    # Held by the owner's neighbourhood: the replicas are among the nodes nearest it.
    nearest = sorted(
        (s for s in nodes if s is not owner),
        key=lambda s: (
            int.from_bytes(s.node.address, "big") ^ int.from_bytes(owner.node.address, "big")
        ),
    )
    assert set(nearest[:5]) <= set(holders)
    net.set_online(owner, False)
    net.run_for(60.0)
    net.do(fetcher, lambda n: n.fetch_bundle(owner.node.address, net.now))
    net.run_for(10.0, stop=lambda: bool(sim_fetched(fetcher)))
    assert sim_fetched(fetcher) == [BundleFetched(owner.node.address, True)]
    assert fetcher.node._directory.known_bundles[owner.node.address] == public


def test_a_bundle_nobody_published_is_not_found() -> None:
    net, nodes = sim_network(8, seed=6)
    nobody = Identity.from_seed(b"\x77" * 32).address
    net.do(nodes[2], lambda n: n.fetch_bundle(nobody, net.now))
    net.run_for(10.0, stop=lambda: bool(sim_fetched(nodes[2])))
    assert sim_fetched(nodes[2]) == [BundleFetched(nobody, False)]
    assert nobody not in nodes[2].node._directory.known_bundles


def test_record_is_issued_again_before_it_expires() -> None:
    net, nodes = sim_network(8, seed=8)
    owner = nodes[3]
    net.do(owner, lambda n: n.set_own_bundle(bundle_for(n.identity), net.now))
    net.run_for(10.0)
    first = {
        s.node._store.get(Kind.RECORD, owner.node.address).wire.issued_ms  # type: ignore[union-attr]
        for s in holders_of(nodes, owner.node)
    }
    assert len(first) == 1
    net.run_for(RECORD_LIFETIME_S + 3600.0)
    holders = holders_of(nodes, owner.node)
    assert len(holders) >= 5
    for sim in holders:
        entry = sim.node._store.get(Kind.RECORD, owner.node.address)
        assert entry is not None and isinstance(entry.wire, pb.PrekeyBundle)
        assert entry.wire.issued_ms >= min(first) + RECORD_REFRESH_S * MS * 4
        assert entry.expires_ms > net.now * MS


def test_set_again_within_one_millisecond_still_replaces_the_last(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    a.set_own_bundle(bundle_for(a.identity, spk_id=1), T0)
    newer = bundle_for(a.identity, spk_id=2)
    a.set_own_bundle(newer, T0)
    wire.pump(T0)
    held = r._store.get(Kind.RECORD, a.address)
    assert held is not None and isinstance(held.wire, pb.PrekeyBundle)
    assert bundle_of(held.wire) == newer
    assert r.stats.rejected["stale_record"] == 0


def test_records_are_never_sent_to_their_owner(wire: Wire) -> None:
    a, r, b = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(a, r)
    wire.connect(b, r)
    to_b = tap(wire, b)
    c = wire.add(4)
    wire.connect(c, r)
    push(wire, c, r, record_for(b.identity), T0)
    wire.pump(T0)
    wire.run(T0 + 1, T0 + 10)  # r's retries replicate it
    assert r._store.get(Kind.RECORD, b.address) is not None
    assert a._store.get(Kind.RECORD, b.address) is not None  # replicated to a
    # b rejoins: its Fetch is answered with what waits for it, which is not its record.
    b.lookup(b.address, T0 + 11)
    wire.pump(T0 + 11)
    assert b.stats.sent_by_kind["fetch"] > 0
    # Never its own record to b, nearest its address (others' own records may reach it).
    assert not [
        f for f in to_b if f.HasField("record") and f.record.bundle.owner_key == b.identity.key
    ]


def test_an_owner_keeps_its_own_record_whatever_it_is_pushed(wire: Wire) -> None:
    a, owner = wire.add(1), wire.add(2)
    wire.connect(a, owner)
    push(wire, a, owner, record_for(owner.identity, issued=T0 + 60), T0)
    assert owner._store.get(Kind.RECORD, owner.address) is None
    public = bundle_for(owner.identity)
    owner.set_own_bundle(public, T0)
    wire.pump(T0)
    push(wire, a, owner, record_for(owner.identity, issued=T0 + 60), T0)
    assert owner.stats.rejected["own_record"] == 2
    held = owner._store.get(Kind.RECORD, owner.address)
    assert held is not None and isinstance(held.wire, pb.PrekeyBundle)
    assert bundle_of(held.wire) == public


def test_a_rejoining_owner_offers_its_record_to_new_neighbours(wire: Wire) -> None:
    owner, r = wire.add(1), wire.add(2)
    wire.connect(owner, r)
    owner.set_own_bundle(bundle_for(owner.identity), T0)
    wire.pump(T0)
    newcomer = wire.add(3)
    wire.connect(newcomer, r, T0 + 1)
    assert newcomer._store.get(Kind.RECORD, owner.address) is None
    owner.lookup(owner.address, T0 + 2)  # as after a sleep or a restart
    wire.pump(T0 + 2)  # no timer runs: only the rejoin hands it over
    assert newcomer._store.get(Kind.RECORD, owner.address) is not None


def test_relaying_its_own_record_never_makes_the_owner_look_itself_up(wire: Wire) -> None:
    """The relay rule's lookup of an item's target (docs/PROTOCOL.md, "7.2") is not for
    our own record: its target is us, and every self-lookup ends in a Fetch and the
    record offered again, which made an idle network's background after joining."""
    owner = wire.add(1, NodeConfig(k=2))  # 3 peers: not a thin table, no self-lookups
    peers = [wire.add(seed) for seed in (2, 3, 4)]
    for peer in peers:
        wire.connect(owner, peer)
    owner.set_own_bundle(bundle_for(owner.identity), T0)
    wire.pump(T0)
    fetches = owner.stats.sent_by_kind["fetch"]
    wire.run(T0 + 1, T0 + 140)  # the record's attempts 1 to 7 (2, 4, ... 64 s apart)
    entry = owner._store.get(Kind.RECORD, owner.address)
    assert entry is not None and entry.attempts >= 7
    assert all(peer._store.get(Kind.RECORD, owner.address) is not None for peer in peers)
    assert owner.stats.sent_by_kind["fetch"] == fetches


# ---------------------------------------------------------------- newest wins


def test_an_older_record_never_replaces_a_newer_one(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    owner = Identity.from_seed(b"\x55" * 32)
    newer, older = record_for(owner, issued=T0), record_for(owner, issued=T0 - 60)
    push(wire, a, r, newer, T0)
    wire.pump(T0)
    push(wire, a, r, older, T0)
    held = r._store.get(Kind.RECORD, owner.address)
    assert held is not None and held.wire == newer
    assert r.stats.rejected["stale_record"] == 1
    # Its sender is handed the newer one, so a stale holder catches up.
    assert a._store.get(Kind.RECORD, owner.address) is None
    wire.pump(T0)
    assert a._store.get(Kind.RECORD, owner.address) is not None
    held_by_a = a._store.get(Kind.RECORD, owner.address)
    assert held_by_a is not None and held_by_a.wire == newer


def test_records_signed_in_the_same_millisecond_do_not_bounce_between_relays(
    wire: Wire,
) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    owner = Identity.from_seed(b"\x55" * 32)
    first, second = record_for(owner, issued=T0), record_for(owner, issued=T0)
    assert first != second
    plant(a, first, owner.address)
    plant(r, second, owner.address)
    planted = a._store.get(Kind.RECORD, owner.address)
    assert planted is not None
    # Sent by a's node, as its relay would: a receipt counts only for an item sent
    # (docs/PROTOCOL.md, "7.2", "Receipt wait").
    a._send_item(planted, r.identity.key, wire.endpoint(r), T0)
    wire.settle(T0)  # raises if datagrams kept flowing
    assert r.stats.rejected["stale_record"] == 1
    assert a.stats.rejected["stale_record"] == 0
    held_by_r, held_by_a = (
        r._store.get(Kind.RECORD, owner.address),
        a._store.get(Kind.RECORD, owner.address),
    )
    assert held_by_r is not None and held_by_r.wire == second
    assert held_by_a is not None and held_by_a.wire == first
    # The stale push was answered with a receipt: its sender counts no failure against r.
    assert r.address in held_by_a.holders


def test_a_newer_record_replaces_the_held_one(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    owner = Identity.from_seed(b"\x55" * 32)
    older, newer = record_for(owner, issued=T0 - 60), record_for(owner, issued=T0)
    push(wire, a, r, older, T0)
    push(wire, a, r, newer, T0)
    held = r._store.get(Kind.RECORD, owner.address)
    assert held is not None and held.wire == newer
    assert len([e for e in r._store if e.kind is Kind.RECORD]) == 1


@pytest.mark.parametrize("older_first", [True, False])
def test_the_fetcher_keeps_the_newest_of_the_answers(wire: Wire, older_first: bool) -> None:
    """A hostile relay can only serve an older valid record; the newer answer wins."""
    fetcher, first, second = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(fetcher, first)
    wire.connect(fetcher, second)
    owner = Identity.from_seed(b"\x55" * 32)
    older, newer = record_for(owner, issued=T0 - 600), record_for(owner, issued=T0)
    plant(first, older if older_first else newer, owner.address)
    plant(second, newer if older_first else older, owner.address)
    assert fetcher.fetch_bundle(owner.address, T0)
    wire.pump(T0)
    assert fetched(wire, fetcher) == [BundleFetched(owner.address, True)]
    assert fetcher._directory.known_bundles[owner.address] == bundle_of(newer)


# ---------------------------------------------------------------- refusals


def _forged(owner: Identity) -> pb.PrekeyBundle:
    record = record_for(owner)
    record.signed_prekey = os.urandom(32)
    return record


def _expired(owner: Identity) -> pb.PrekeyBundle:
    return record_for(owner, issued=T0 - RECORD_LIFETIME_S - 1)


def _over_long(owner: Identity) -> pb.PrekeyBundle:
    record = record_for(owner)
    record.expires_ms = record.issued_ms + MAX_RECORD_LIFETIME_S * MS + 1
    return resigned(owner, record)


def _from_future(owner: Identity) -> pb.PrekeyBundle:
    return record_for(owner, issued=T0 + 3600)


def _oversized(owner: Identity) -> pb.PrekeyBundle:
    record = record_for(owner, prekeys=MAX_ONE_TIME_PREKEYS)
    record.one_time_prekeys.add(id=9999, key=os.urandom(32))
    return resigned(owner, record)


REFUSED = [
    (_forged, "bad_record"),
    (_expired, "expired"),
    (_over_long, "record_too_long"),
    (_from_future, "record_from_future"),
    (_oversized, "malformed"),
]


@pytest.mark.parametrize(("make", "reason"), REFUSED)
def test_bad_records_pushed_for_storage_are_refused_and_counted(
    wire: Wire, make: Callable[[Identity], pb.PrekeyBundle], reason: str
) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    owner = Identity.from_seed(b"\x55" * 32)
    push(wire, a, r, make(owner), T0)
    assert r.stats.rejected[reason] == 1
    assert r._store.get(Kind.RECORD, owner.address) is None
    # The same owner's good record is still taken: nothing was poisoned.
    push(wire, a, r, record_for(owner), T0)
    assert r._store.get(Kind.RECORD, owner.address) is not None


@pytest.mark.parametrize(("make", "reason"), [*REFUSED, (None, "wrong_owner")])
def test_bad_answers_to_a_fetch_are_refused_and_counted(
    wire: Wire, make: Callable[[Identity], pb.PrekeyBundle] | None, reason: str
) -> None:
    fetcher, hostile = wire.add(1), wire.add(2)
    wire.connect(fetcher, hostile)
    owner = Identity.from_seed(b"\x55" * 32)
    # ``None``: a valid record, of someone else.
    served = record_for(Identity.from_seed(b"\x56" * 32)) if make is None else make(owner)
    plant(hostile, served, owner.address)
    fetcher.fetch_bundle(owner.address, T0)
    wire.pump(T0)
    assert fetcher.stats.rejected[reason] == 1
    assert fetched(wire, fetcher) == [BundleFetched(owner.address, False)]
    assert owner.address not in fetcher._directory.known_bundles


def test_answers_nobody_asked_for_are_unsolicited(wire: Wire) -> None:
    fetcher, hostile, other = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(fetcher, hostile)
    wire.connect(fetcher, other)
    owner = Identity.from_seed(b"\x55" * 32)
    answer = pb.Frame(record=pb.Record(query_id=os.urandom(16), bundle=record_for(owner)))
    data = hostile._codec.encode_frame(fetcher.identity.key, answer, T0)
    fetcher.receive_datagram(data, wire.endpoint(hostile), T0)
    assert fetcher.stats.rejected["unsolicited"] == 1
    # A real query id, answered by a node it was not sent to.
    held: list[bytes] = []

    def hold(source: tuple[str, int], dest: tuple[str, int], data: bytes) -> bool:
        if dest != wire.endpoint(other):
            return False
        frame = Codec(other.identity).decode(data, T0).frame
        if frame is None or not frame.HasField("get_record"):
            return False
        held.append(frame.get_record.query_id)
        return True

    wire.drop = hold
    fetcher.fetch_bundle(owner.address, T0)
    wire.pump(T0)
    assert len(held) == 1
    stolen = pb.Frame(record=pb.Record(query_id=held[0], bundle=record_for(owner)))
    fetcher.receive_datagram(
        hostile._codec.encode_frame(fetcher.identity.key, stolen, T0), wire.endpoint(hostile), T0
    )
    assert fetcher.stats.rejected["unsolicited"] == 2
    assert owner.address not in fetcher._directory.known_bundles


def test_an_empty_record_push_is_malformed(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    data = a._codec.encode_frame(r.identity.key, pb.Frame(record=pb.Record()), T0)
    r.receive_datagram(data, wire.endpoint(a), T0)
    assert r.stats.rejected["malformed"] == 1


# ---------------------------------------------------------------- admission and quotas


def test_get_record_from_an_unvalidated_endpoint_amplifies_nothing(wire: Wire) -> None:
    relay = wire.add(2)
    owner = Identity.from_seed(b"\x55" * 32)
    plant(relay, record_for(owner, prekeys=MAX_ONE_TIME_PREKEYS), owner.address)
    attacker = Node(Identity.from_seed(b"\x66" * 32), T0)
    victim = ("192.0.2.9", 5000)
    ask = pb.Frame(get_record=pb.GetRecord(query_id=os.urandom(16), address=owner.address))
    data = attacker._codec.encode_frame(relay.identity.key, ask, T0)
    relay.receive_datagram(data, victim, T0)
    out = relay.datagrams_to_send()
    assert sum(len(d) for d, _ in out) <= len(data)
    frames = [Codec(attacker.identity).decode(d, T0).frame for d, _ in out]
    assert all(f is not None and f.HasField("ping") for f in frames)
    assert relay.stats.sent_by_kind["record"] == 0


def test_get_record_is_answered_once_the_endpoint_is_validated(wire: Wire) -> None:
    relay, asker = wire.add(2), wire.add(3)
    owner = Identity.from_seed(b"\x55" * 32)
    record = record_for(owner)
    plant(relay, record, owner.address)
    got: list[pb.Record] = []

    def capture(source: tuple[str, int], dest: tuple[str, int], data: bytes) -> bool:
        if dest == wire.endpoint(asker):
            frame = Codec(asker.identity).decode(data, T0).frame
            if frame is not None and frame.HasField("record"):
                got.append(frame.record)
        return False

    wire.drop = capture
    ask = pb.Frame(get_record=pb.GetRecord(query_id=os.urandom(16), address=owner.address))
    relay.receive_datagram(
        asker._codec.encode_frame(relay.identity.key, ask, T0), wire.endpoint(asker), T0
    )
    wire.pump(T0)  # the challenge goes to the asker, its pong validates it, the answer follows
    assert len(got) == 1 and got[0].bundle == record


def test_an_expired_record_is_not_served_even_before_housekeeping(wire: Wire) -> None:
    relay, asker = wire.add(2), wire.add(3)
    wire.connect(asker, relay)
    owner = Identity.from_seed(b"\x55" * 32)
    record = record_for(owner, lifetime_s=600.0)
    relay._store.add(
        Entry(Kind.RECORD, owner.address, owner.address, record.expires_ms, record, T0),
        enforce_quota=False,
    )
    to_asker = tap(wire, asker)
    later = T0 + 601  # the relay's housekeeping has not run since
    ask = pb.Frame(get_record=pb.GetRecord(query_id=os.urandom(16), address=owner.address))
    relay.receive_datagram(
        asker._codec.encode_frame(relay.identity.key, ask, later), wire.endpoint(asker), later
    )
    wire.pump(later)
    answers = [f.record for f in to_asker if f.HasField("record")]
    assert len(answers) == 1 and not answers[0].HasField("bundle")


def test_a_flood_of_records_from_many_keys_is_bounded_by_the_store_quotas(wire: Wire) -> None:
    config = NodeConfig(store_per_peer_bytes=20_000, store_rate_per_s=1e9, store_burst=1e9)
    a, r = wire.add(1, config), wire.add(2, config)
    wire.connect(a, r)
    for i in range(40):
        owner = Identity.from_seed(i.to_bytes(2, "big") * 16)
        push(wire, a, r, record_for(owner, prekeys=MAX_ONE_TIME_PREKEYS), T0)
    assert r.status().stored_bytes <= 20_000
    assert r.stats.rejected["peer_quota"] > 0


def test_a_flood_of_records_is_bounded_by_the_store_rate(wire: Wire) -> None:
    config = NodeConfig(store_rate_per_s=1.0, store_burst=5.0)
    a, r = wire.add(1, config), wire.add(2, config)
    wire.connect(a, r)
    for i in range(20):
        push(wire, a, r, record_for(Identity.from_seed(i.to_bytes(2, "big") * 16)), T0)
    assert len([e for e in r._store if e.kind is Kind.RECORD]) == 5
    assert r.stats.rejected["store_rate"] == 15


def test_fetches_in_flight_are_bounded(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    started = [
        a.fetch_bundle(Identity.from_seed(i.to_bytes(2, "big") * 16).address, T0)
        for i in range(BUNDLE_FETCHES_MAX + 3)
    ]
    assert started.count(True) == BUNDLE_FETCHES_MAX
    wire.pump(T0)
    assert len(fetched(wire, a)) == BUNDLE_FETCHES_MAX
    assert a.fetch_bundle(Identity.from_seed(b"\x99" * 32).address, T0)  # room again


def test_known_bundles_are_bounded_and_forget_expired_ones(wire: Wire) -> None:
    fetcher = wire.add(1)
    relays = [wire.add(10 + i) for i in range(2)]
    for relay in relays:
        wire.connect(fetcher, relay)
    owners = [Identity.from_seed(i.to_bytes(2, "big") * 16) for i in range(KNOWN_BUNDLES_MAX + 4)]
    for i, owner in enumerate(owners):
        lifetime = 600.0 if i == len(owners) - 1 else RECORD_LIFETIME_S
        plant(relays[0], record_for(owner, lifetime_s=lifetime), owner.address)
    for i in range(0, len(owners), BUNDLE_FETCHES_MAX):
        for owner in owners[i : i + BUNDLE_FETCHES_MAX]:
            fetcher.fetch_bundle(owner.address, T0)
        wire.pump(T0)
    assert len(fetcher._directory.known_bundles) == KNOWN_BUNDLES_MAX
    assert owners[0].address not in fetcher._directory.known_bundles  # the least recent forgotten
    assert owners[-1].address in fetcher._directory.known_bundles
    # Session code may drop a bundle or fill one in directly: the bookkeeping copes.
    del fetcher._directory.known_bundles[owners[-2].address]
    fetcher._directory.known_bundles[b"\x01" * 20] = bundle_for(owners[0])
    fetcher.handle_timer(T0 + 601 + HOUSEKEEPING_INTERVAL_S)
    assert owners[-1].address not in fetcher._directory.known_bundles
    assert len(fetcher._directory.known_bundles) == KNOWN_BUNDLES_MAX - 1
    fetcher._directory.known_bundles.move_to_end(b"\x01" * 20, last=False)  # the next one evicted
    plant(relays[0], record_for(owners[0]), owners[0].address)
    fetcher.fetch_bundle(owners[0].address, T0 + 700)
    fetcher.fetch_bundle(owners[-2].address, T0 + 700)
    wire.pump(T0 + 700)
    assert fetcher.stats.rejected["internal_error"] == 0
    assert b"\x01" * 20 not in fetcher._directory.known_bundles


# ---------------------------------------------------------------- restarts


def test_a_restarted_relay_keeps_the_records_it_held(wire: Wire) -> None:
    a, r, f = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(a, r)
    owner = Identity.from_seed(b"\x55" * 32)
    push(wire, a, r, record_for(owner), T0)
    wire.pump(T0)
    blobs = list(wire.persisted[wire.endpoint(r)].values())
    restarted = Node(r.identity, T0 + 5, rng=random.Random(2))
    assert restarted.restore(blobs, T0 + 5) == 0
    wire.attach(restarted, 2)
    wire.connect(f, restarted, T0 + 6)
    f.fetch_bundle(owner.address, T0 + 6)
    wire.pump(T0 + 6)
    assert fetched(wire, f) == [BundleFetched(owner.address, True)]


def test_a_restarted_owner_keeps_refreshing_its_record(wire: Wire) -> None:
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    public = a._prekeys.public_bundle()  # what a node publishes of its own accord
    a.set_own_bundle(public, T0)
    wire.pump(T0)
    blobs = list(wire.persisted[wire.endpoint(a)].values())
    restarted = Node(a.identity, T0 + 60, rng=random.Random(1))
    assert restarted.restore(blobs, T0 + 60) == 0
    assert restarted.restore_sessions(a._prekeys.serialize(), [], T0 + 60) == 0
    wire.attach(restarted, 1)
    wire.connect(restarted, r, T0 + 61)
    later = T0 + RECORD_REFRESH_S + HOUSEKEEPING_INTERVAL_S + 1
    restarted.handle_timer(later)
    wire.pump(later)
    held = r._store.get(Kind.RECORD, a.address)
    assert held is not None and isinstance(held.wire, pb.PrekeyBundle)
    assert held.wire.issued_ms > T0 * MS + RECORD_REFRESH_S * MS
    assert bundle_of(held.wire) == public


def test_a_damaged_stored_record_is_skipped() -> None:
    owner = Identity.from_seed(b"\x55" * 32)
    record = record_for(owner)
    record.signed_prekey_id = 0
    entry = Entry(Kind.RECORD, owner.address, owner.address, record.expires_ms, record, T0)
    node = Node(Identity.from_seed(b"\x01" * 32), T0)
    assert node.restore([entry.serialize()], T0) == 1


# ---------------------------------------------------------------------- wiring to sessions


def test_contacts_bundles_are_fetched_so_a_first_text_opens_with_x3dh() -> None:
    """A node publishes its prekeys by itself; a contact's bundle, wanted, is fetched."""
    net, nodes = sim_network(12, seed=8)
    alice, bob = nodes[3], nodes[9]
    net.do(alice, lambda n: n.want_bundles([bob.node.identity.key], net.now))
    net.run_for(30.0, stop=lambda: bob.node.address in alice.node._directory.known_bundles)
    assert (
        alice.node._directory.known_bundles[bob.node.address] == bob.node._prekeys.public_bundle()
    )
    net.set_online(bob, False)  # the first text opens a session while bob is away
    net.do(alice, lambda n: n.send_text(bob.node.identity.public, "hello", net.now))
    session = alice.node._sessions.active(bob.node.identity.key)
    assert session is not None and session.pending_init is not None
    signed_prekey_id, one_time_prekey_id = session.pending_init
    assert signed_prekey_id != 0  # 0 would be the fallback on bob's identity key
    assert one_time_prekey_id != 0
    # Once it has a session, alice wants bob's bundle no more.
    net.run_for(BUNDLE_RETRY_S + 10.0)
    assert bob.node.address not in alice.node._directory.wanted


def test_a_used_one_time_prekey_is_withdrawn_from_the_published_bundle() -> None:
    net, nodes = sim_network(12, seed=9)
    alice, bob = nodes[2], nodes[7]
    net.do(alice, lambda n: n.want_bundles([bob.node.identity.key], net.now))
    net.run_for(30.0, stop=lambda: bob.node.address in alice.node._directory.known_bundles)
    before = bob.node._prekeys.public_bundle()
    net.do(alice, lambda n: n.send_text(bob.node.identity.public, "hello", net.now))
    net.run_for(10.0, stop=lambda: bob.node._prekeys.public_bundle() != before)
    used = dict(before.one_time_prekeys)
    now_published = dict(bob.node._prekeys.public_bundle().one_time_prekeys)
    assert set(used) - set(now_published)  # the one alice used is gone from bob's stock
    # ...and from the record his neighbourhood serves, within BUNDLE_REPUBLISH_MIN_S.
    net.run_for(BUNDLE_REPUBLISH_MIN_S + 10.0)
    holders = holders_of(nodes, bob.node)
    assert holders
    for holder in holders:
        held = holder.node._store.get(Kind.RECORD, bob.node.address)
        assert held is not None and isinstance(held.wire, pb.PrekeyBundle)
        assert bundle_of(held.wire) == bob.node._prekeys.public_bundle()


def test_a_record_offered_again_is_a_duplicate_with_a_receipt(wire: Wire) -> None:
    """A holder offered the record it holds (another replica's relay, a retry) counts a
    duplicate and answers with a receipt, so the sender stops offering it; nothing is
    refused. The sender, never sent the record, is no holder: a copy from a key we did not
    send it to proves nothing (docs/PROTOCOL.md, "7.2")."""
    a, r, c = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(a, r)
    wire.connect(c, r)
    a.set_own_bundle(bundle_for(a.identity), T0)
    wire.pump(T0)
    held = r._store.get(Kind.RECORD, a.address)
    assert held is not None and isinstance(held.wire, pb.PrekeyBundle)
    duplicates, rejected = r.stats.duplicates, r.stats.rejected_total
    frame = pb.Frame(record=pb.Record(bundle=held.wire))
    r.receive_datagram(
        c._codec.encode_frame(r.identity.key, frame, T0 + 1), wire.endpoint(c), T0 + 1
    )
    r.handle_timer(T0 + 1 + RECEIPT_DELAY_S)
    answers = [
        Codec(c.identity).decode(data, T0 + 1).frame
        for data, dest in r.datagrams_to_send()
        if dest == wire.endpoint(c)
    ]
    assert r.stats.duplicates == duplicates + 1
    assert r.stats.rejected_total == rejected
    assert [f.WhichOneof("body") for f in answers if f is not None] == ["receipt"]
    assert c.address not in held.holders


def test_a_fetch_whose_record_query_times_out_still_ends(wire: Wire) -> None:
    """A GetRecord nobody answers ends when it times out (QUERY_TIMEOUT_S); the last
    one ends the fetch with BundleFetched, found or not, so the text waiting for the
    bundle goes on (with the fallback). A mutant that ended no fetch on a timeout lived
    through the whole selection (bench/MUTATION.md)."""
    fetcher, holder = wire.add(1), wire.add(2)
    wire.connect(fetcher, holder)
    owner = Identity.from_seed(b"\x55" * 32)
    codec = Codec(holder.identity)
    lost: list[float] = []

    def lose_record_queries(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if dest != wire.endpoint(holder):
            return False
        frame = codec.decode(data, T0).frame
        if frame is not None and frame.WhichOneof("body") == "get_record":
            lost.append(T0)
            return True
        return False

    wire.drop = lose_record_queries
    fetcher.fetch_bundle(owner.address, T0)
    wire.pump(T0)
    assert len(lost) == 1 and fetched(wire, fetcher) == []
    wire.run(T0 + 1, T0 + QUERY_TIMEOUT_S + 1)
    assert fetched(wire, fetcher) == [BundleFetched(owner.address, False)]


def test_a_fetch_ends_only_once_every_node_asked_has_answered(wire: Wire) -> None:
    """The fetch ends when the last GetRecord is answered or timed out, not the first:
    a first answer without the record must not report the bundle missing while another
    node asked holds it (docs/PROTOCOL.md, "Records")."""
    fetcher, without, holder = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(fetcher, without)
    wire.connect(fetcher, holder)
    owner = Identity.from_seed(b"\x55" * 32)
    plant(holder, record_for(owner), owner.address)
    assert fetcher.fetch_bundle(owner.address, T0)
    wire.pump(T0)  # ``without`` answers first: it comes first in the wire's order
    assert fetched(wire, fetcher) == [BundleFetched(owner.address, True)]
    assert owner.address in fetcher._directory.known_bundles


@pytest.mark.parametrize(
    ("spk_id", "one_time_id", "ok"),
    [
        (1, 1, True),
        (2**32 - 1, 2**32 - 1, True),
        (0, 1, False),  # the signed prekey's id out of range, the one-time ones fine
        (2**32, 1, False),
        (1, 0, False),  # a one-time prekey's id out of range, the signed one fine
        (1, 2**32, False),
    ],
)
def test_a_record_is_signed_only_with_prekey_ids_from_1_to_2_32_minus_1(
    spk_id: int, one_time_id: int, ok: bool
) -> None:
    """docs/PROTOCOL.md, "Records": prekey ids are 1 .. 2^32-1 (u32, 0 reserved); the
    owner never signs a record that breaks it, whichever id does."""
    owner = Identity.from_seed(b"\x55" * 32)
    bundle = PublicBundle(owner.key, spk_id, os.urandom(32), ((one_time_id, os.urandom(32)),))
    issued = int(T0) * MS
    if ok:
        assert verify_record(sign_record(owner, bundle, issued, issued + 3_600_000))
    else:
        with pytest.raises(ValueError, match="prekey ids"):
            sign_record(owner, bundle, issued, issued + 3_600_000)
