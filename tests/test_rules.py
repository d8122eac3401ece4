"""One test per protocol rule that a one-line mutation of the core used to slip past.

The mutation audit of issue 14 (as of commit 0ec85d1) found these rules unpinned: the ack
expiry checks, bounds on acks from peers (since issue 9: only for messages held), the
per-endpoint datagram rate limit, pongs from a key other than the one pinged, and the
restore grace period. Each test here fails when its rule is switched off.
"""

from __future__ import annotations

import random

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import (
    CHALLENGED_MAX,
    DEFAULT_TTL_S,
    EXPIRY_UNIT_MS,
    RECEIPT_TIMEOUT_S,
    RESTORE_GRACE_S,
    SEALED_BYTES,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from tests.wire import T0, Wire, peer_addresses

DAY_MS = 24 * 3600 * 1000


def held_messages(
    relay: Node, peer: Node, wire: Wire, recipient: Identity, count: int, expires_ms: int
) -> list[bytes]:
    """Have ``peer`` hand ``relay`` ``count`` new messages for ``recipient``; their ids."""
    rng = random.Random(relay.status().stored_items)
    before = relay.status().stored_items
    ids = []
    for i in range(count):
        msg = pb.Message(
            recipient=recipient.address, expires_ms=expires_ms, sealed=rng.randbytes(SEALED_BYTES)
        )
        now = T0 + i / 1000
        data = peer._codec.encode_frame(relay.identity.key, pb.Frame(message=msg), now)
        relay.receive_datagram(data, wire.endpoint(peer), now)
        ids.append(message_id(msg.recipient, msg.expires_ms, msg.sealed))
    assert relay.status().stored_items - before == len(set(ids)) == count
    return ids


def send_ack(relay: Node, peer: Node, wire: Wire, ack: pb.Ack, now: float) -> None:
    data = peer._codec.encode_frame(relay.identity.key, pb.Frame(ack=ack), now)
    relay.receive_datagram(data, wire.endpoint(peer), now)


def test_acks_for_expired_messages_or_with_another_expiry_are_refused() -> None:
    wire = Wire()
    relay, peer, acker = wire.add(1), wire.add(2), wire.add(4)
    wire.connect(peer, relay)
    wire.connect(acker, relay)
    recipient = Identity.from_seed(b"\x03" * 32)
    expires_ms = int(T0 * 1000) + EXPIRY_UNIT_MS
    soon, other = held_messages(relay, peer, wire, recipient, 2, expires_ms)
    # Signed by the recipient, but for another expiry than the message's.
    send_ack(relay, acker, wire, sign_ack(recipient, other, expires_ms + EXPIRY_UNIT_MS), T0 + 1)
    assert relay.stats.rejected["forged_ack"] == 1
    assert not [e for e in relay._store if e.kind is Kind.ACK]
    send_ack(relay, acker, wire, sign_ack(recipient, other, expires_ms), T0 + 2)
    assert len([e for e in relay._store if e.kind is Kind.ACK]) == 1
    # The message expired (housekeeping has not run yet): its ack is refused too.
    late = expires_ms / 1000 + 1
    send_ack(relay, acker, wire, sign_ack(recipient, soon, expires_ms), late)
    assert relay.stats.rejected["expired"] == 1


def test_acks_from_peers_are_bounded_by_the_messages_held() -> None:
    """Valid acks are signed by their own (free) keys: unless each must answer a message
    we hold, and take its place, they fill the store (docs/PROTOCOL.md, "7.3 Acks")."""
    wire = Wire()
    config = NodeConfig(store_rate_per_s=1e6, store_burst=1e6)
    relay, peer, acker = wire.add(1, config), wire.add(2), wire.add(4)
    wire.connect(peer, relay)
    wire.connect(acker, relay)
    rng = random.Random(2)
    expires_ms = int(T0 * 1000) // EXPIRY_UNIT_MS * EXPIRY_UNIT_MS + DAY_MS
    for i in range(200):
        ack = sign_ack(Identity.generate(), rng.randbytes(32), expires_ms)
        send_ack(relay, acker, wire, ack, T0 + i / 1000)
    assert relay.stats.rejected["unknown_ack"] == 200
    assert relay.status().stored_items == 0
    recipient = Identity.from_seed(b"\x03" * 32)
    ids = held_messages(relay, peer, wire, recipient, 5, expires_ms)
    held_bytes = relay.status().stored_bytes
    for mid in ids:
        send_ack(relay, acker, wire, sign_ack(recipient, mid, expires_ms), T0 + 1)
    assert [e.kind for e in relay._store] == [Kind.ACK] * 5
    assert relay.status().stored_bytes < held_bytes


def test_acks_from_peers_are_held_to_the_store_rate() -> None:
    wire = Wire()
    relay = wire.add(1, NodeConfig(store_rate_per_s=1e-3, store_burst=50))
    first, second, acker = wire.add(2), wire.add(3), wire.add(4)
    for peer in (first, second, acker):
        wire.connect(peer, relay)
    recipient = Identity.from_seed(b"\x05" * 32)
    expires_ms = int(T0 * 1000) + DAY_MS
    ids = held_messages(relay, first, wire, recipient, 40, expires_ms)
    ids += held_messages(relay, second, wire, recipient, 40, expires_ms)
    for mid in ids:
        send_ack(relay, acker, wire, sign_ack(recipient, mid, expires_ms), T0 + 1)
    assert relay.stats.rejected["store_rate"] == 30


def test_datagrams_from_an_unproven_endpoint_are_rate_limited() -> None:
    """Limited by source endpoint after the parse (cheap), before any key agreement."""
    relay = Node(Identity.generate(), T0, config=NodeConfig(datagram_burst=100))
    stranger = Codec(Identity.generate())
    for _ in range(150):
        hello = stranger.encode_hello(random.randbytes(CHALLENGE_BYTES))
        relay.receive_datagram(hello, ("198.18.9.9", 9), T0)
    assert relay.stats.rejected["rate_limited"] == 50
    assert relay.stats.sent_by_kind["pong"] == 100


def test_a_validated_peer_is_rate_limited_by_its_key() -> None:
    wire = Wire()
    relay, peer = wire.add(1, NodeConfig(datagram_burst=100, datagram_rate_per_s=1)), wire.add(2)
    wire.connect(peer, relay, T0)
    before = relay.stats.rejected["rate_limited"]
    for i in range(150):
        ping = pb.Frame(ping=pb.Ping(challenge=random.randbytes(CHALLENGE_BYTES)))
        data = peer._codec.encode_frame(relay.identity.key, ping, T0 + 1 + i / 1000)
        relay.receive_datagram(data, wire.endpoint(peer), T0 + 1 + i / 1000)
    assert 40 <= relay.stats.rejected["rate_limited"] - before <= 60


def test_a_flood_forged_from_a_peers_endpoint_does_not_silence_the_peer() -> None:
    """docs/PROTOCOL.md, "Admission": a known key at its validated endpoint is limited by
    its key, not by the endpoint, so junk sent with the peer's address forged as source
    spends the endpoint's budget and never the peer's. A mutant that never took the
    peer's boxed datagrams for its own lived through the selection (bench/MUTATION.md)."""
    wire = Wire()
    relay, peer = wire.add(1, NodeConfig(datagram_burst=20, datagram_rate_per_s=1)), wire.add(2)
    wire.connect(peer, relay, T0)
    now = T0 + 1
    stranger = Codec(Identity.generate())
    before = relay.stats.rejected["rate_limited"]
    for _ in range(40):  # forged: the peer's endpoint as source, a stranger's hellos
        hello = stranger.encode_hello(random.randbytes(CHALLENGE_BYTES))
        relay.receive_datagram(hello, wire.endpoint(peer), now)
    assert relay.stats.rejected["rate_limited"] - before >= 20  # the endpoint's budget is spent
    pongs = relay.stats.sent_by_kind["pong"]
    for _ in range(5):
        ping = pb.Frame(ping=pb.Ping(challenge=random.randbytes(CHALLENGE_BYTES)))
        relay.receive_datagram(
            peer._codec.encode_frame(relay.identity.key, ping, now), wire.endpoint(peer), now
        )
    assert relay.stats.sent_by_kind["pong"] - pongs == 5  # the peer itself is still heard


def test_a_challenge_answered_after_a_flood_of_challenges_still_lets_the_frame_in() -> None:
    """docs/PROTOCOL.md, "Admission": the table of pairs we challenged is bounded
    (CHALLENGED_MAX), so a flood of frames from forged endpoints evicts an honest peer's
    pair before its pong comes. The challenge itself is stateless: the pong still proves
    the pair, and the request that waited for it is answered (a mutant that assumed the
    pair was still in the table raised there, bench/MUTATION.md)."""
    relay = Node(Identity.from_seed(b"\x01" * 32), T0, rng=random.Random(1))
    peer, at = Codec(Identity.from_seed(b"\x02" * 32)), ("198.18.1.1", 4000)
    # Held until proven (a FindNode that fits the credit is answered at once instead).
    find = pb.Frame(get_record=pb.GetRecord(query_id=b"q" * CHALLENGE_BYTES, address=b"t" * 20))
    relay.receive_datagram(peer.encode_frame(relay.identity.key, find, T0), at, T0)
    (ping,) = [peer.decode(d, T0).frame for d, dest in relay.datagrams_to_send() if dest == at]
    assert ping is not None and ping.WhichOneof("body") == "ping"
    # A key per 500 frames (each key's allowance, spent from whatever source: 5.4), from
    # as many forged endpoints.
    mallories = [
        Codec(Identity.from_seed(bytes([9 + n]) * 32)) for n in range(CHALLENGED_MAX // 500 + 1)
    ]
    for i in range(CHALLENGED_MAX):
        mallory, now = mallories[i // 500], T0 + i / 1000
        frame = pb.Frame(ping=pb.Ping(challenge=random.randbytes(CHALLENGE_BYTES)))
        forged = (f"203.0.{i // 250}.{i % 250 + 1}", 5000)
        relay.receive_datagram(mallory.encode_frame(relay.identity.key, frame, now), forged, now)
        if i % 512 == 0:
            relay.datagrams_to_send()
    relay.datagrams_to_send()
    later = T0 + 5
    pong = pb.Frame(pong=pb.Pong(challenge=ping.ping.challenge))
    relay.receive_datagram(peer.encode_frame(relay.identity.key, pong, later), at, later)
    answers = [
        frame.WhichOneof("body")
        for data, dest in relay.datagrams_to_send()
        if dest == at and (frame := peer.decode(data, later).frame) is not None
    ]
    assert "record" in answers  # the request that waited for the proof
    assert not relay.stats.rejected


def test_a_bootstrap_nodes_pong_proves_its_address_at_once() -> None:
    """docs/PROTOCOL.md, "Admission": our hello's challenge, answered from the endpoint
    we sent it to, proves that the bootstrap node's key receives there; it enters our
    table without a second challenge (a mutant that proved key None lived through the
    selection: one ping more per join, and the node unproven until then)."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    a.bootstrap(wire.endpoint(b), T0)
    wire.pump(T0)
    assert b.address in peer_addresses(a)
    assert a.stats.sent_by_kind["ping"] == 0
    assert b.stats.sent_by_kind["pong"] == 1  # the hello's, and no other


def test_a_pong_from_another_key_than_the_one_pinged_is_unsolicited() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.add_known_peer(b.identity.key, wire.endpoint(b), T0 + 1)
    ((ping_data, _),) = a.datagrams_to_send()
    challenge = Codec(b.identity).decode(ping_data, T0 + 1).frame.ping.challenge  # type: ignore[union-attr]
    impostor = Codec(Identity.generate())
    pong = impostor.encode_frame(a.identity.key, pb.Frame(pong=pb.Pong(challenge=challenge)), T0)
    a.receive_datagram(pong, wire.endpoint(b), T0 + 1)
    assert a.stats.rejected["unsolicited"] == 1


def test_restored_relay_items_wait_for_the_grace_period() -> None:
    wire = Wire()
    sender, relay, recipient = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(sender, relay)
    wire.connect(recipient, relay)
    wire.offline.add(wire.endpoint(recipient))
    sender.send_text(recipient.identity.public, "after a restart", T0)
    wire.pump(T0)
    blobs = list(wire.persisted[wire.endpoint(relay)].values())
    restart = T0 + 1000
    restarted = Node(relay.identity, restart, rng=random.Random(7))
    restarted.restore(blobs, restart)
    (entry,) = [e for e in restarted._store if e.kind is Kind.MESSAGE]
    attempts = entry.attempts
    assert entry.next_at >= restart + RESTORE_GRACE_S
    restarted.handle_timer(restart + RESTORE_GRACE_S - 0.1)
    assert entry.attempts == attempts
    restarted.handle_timer(restart + RESTORE_GRACE_S)
    assert entry.attempts == attempts + 1


def test_restore_drops_what_expired_while_the_node_was_down() -> None:
    wire = Wire()
    sender, relay, recipient = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(sender, relay)
    wire.offline.add(wire.endpoint(recipient))
    sender.send_text(recipient.identity.public, "too late", T0)
    wire.pump(T0)
    blobs = list(wire.persisted[wire.endpoint(relay)].values())
    later = T0 + DEFAULT_TTL_S + 1
    restarted = Node(relay.identity, later, rng=random.Random(8))
    assert restarted.restore(blobs, later) == 0
    assert restarted.status().stored_items == 0


def _find_node_sent(a: Node, b: Node, wire: Wire, now: float) -> pb.FindNode:
    """Start a lookup at ``a`` (whose table holds ``b``) and return the FindNode it sent b."""
    a.lookup(Identity.generate().address, now)
    codec = Codec(b.identity)
    for data, dest in a.datagrams_to_send():
        frame = codec.decode(data, now).frame
        if dest == wire.endpoint(b) and frame is not None and frame.HasField("find_node"):
            return frame.find_node
    raise AssertionError("no FindNode sent to b")


def test_a_nodes_answer_from_another_key_than_the_one_asked_is_unsolicited() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    find = _find_node_sent(a, b, wire, T0 + 1)
    impostor = Codec(Identity.generate())
    answer = pb.Frame(nodes=pb.Nodes(query_id=find.query_id))
    a.receive_datagram(
        impostor.encode_frame(a.identity.key, answer, T0 + 1), wire.endpoint(b), T0 + 1
    )
    assert a.stats.rejected["unsolicited"] == 1
    # The real answer is still taken: the impostor spent nothing of the query.
    real = b._codec.encode_frame(a.identity.key, answer, T0 + 1)
    a.receive_datagram(real, wire.endpoint(b), T0 + 1)
    assert a.stats.rejected["unsolicited"] == 1


def test_an_oversized_nodes_answer_is_malformed_and_the_lookup_moves_on() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    find = _find_node_sent(a, b, wire, T0 + 1)
    infos = [
        pb.NodeInfo(key=Identity.generate().key, ip=bytes([10, 9, 0, i]), port=4000)
        for i in range(17)  # FIND_NODE_ANSWER_NODES * 2 + 1
    ]
    answer = pb.Frame(nodes=pb.Nodes(query_id=find.query_id, nodes=infos))
    a.receive_datagram(
        b._codec.encode_frame(a.identity.key, answer, T0 + 1), wire.endpoint(b), T0 + 1
    )
    assert a.stats.rejected["malformed"] == 1
    # None of the 17 was taken as a candidate: nothing was sent to any of them.
    named = {(f"10.9.0.{i}", 4000) for i in range(17)}
    assert not [dest for _, dest in a.datagrams_to_send() if dest in named]


def test_a_pong_from_another_endpoint_than_the_one_pinged_is_refused() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.add_known_peer(b.identity.key, wire.endpoint(b), T0 + 1)
    ((ping_data, _),) = a.datagrams_to_send()
    challenge = Codec(b.identity).decode(ping_data, T0 + 1).frame.ping.challenge  # type: ignore[union-attr]
    pong = b._codec.encode_frame(a.identity.key, pb.Frame(pong=pb.Pong(challenge=challenge)), T0)
    elsewhere = ("10.99.0.1", 4000)
    a.receive_datagram(pong, elsewhere, T0 + 1)
    assert a.stats.rejected["wrong_endpoint"] == 1
    assert not a._addresses.is_validated(b.identity.key, elsewhere)


def test_liveness_pings_go_one_per_peer_bounded_and_only_to_peers_not_heard_lately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "7.2", "A wait that runs out is no failure": the ping after a
    wait that ran out goes once per peer while it is out, not to a peer heard from
    within ``ALIVE_HEARD_S``, nor to one we do not route to, and at most
    ``ALIVE_CHECKS_MAX`` at once (junk addressed to every node we know must not fill
    the query table that lookups need)."""
    monkeypatch.setattr(node_module, "ALIVE_CHECKS_MAX", 4)
    wire = Wire()
    relay = wire.add(1)
    peers = [wire.add(seed) for seed in range(10, 20)]
    for peer in peers:
        wire.connect(peer, relay)
    wire.pump(T0)
    known = [p for p in peers if p.address in relay._table]
    assert len(known) > 5
    relay._queries.clear()

    def pings() -> int:
        return sum(1 for q in relay._queries.values() if q.kind == "ping")

    heard = max(entry.last_seen for entry in relay._table)
    relay._check_alive(known[0].address, heard + node_module.ALIVE_HEARD_S / 2)
    assert pings() == 0  # heard from lately
    now = heard + node_module.ALIVE_HEARD_S
    relay._check_alive(Identity.generate().address, now)
    assert pings() == 0  # nobody we route to
    relay._check_alive(known[0].address, now)
    relay._check_alive(known[0].address, now + 0.1)
    assert pings() == 1  # one per peer while it is out
    for peer in known[1:]:
        relay._check_alive(peer.address, now + 0.2)
    assert pings() == 4  # ALIVE_CHECKS_MAX
    relay._check_alive(known[0].address, now + node_module.QUERY_TIMEOUT_S)
    assert pings() == 5  # its first one timed out (as far as the checks know): again


def test_an_answered_liveness_ping_frees_its_place_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """red6: a liveness check answered frees its place among the ``ALIVE_CHECKS_MAX``
    when its Pong comes, not at its deadline; junk addressed to many live peers held
    every place for the query timeout, and a dead peer's run-out wait then checked
    nothing."""
    monkeypatch.setattr(node_module, "ALIVE_CHECKS_MAX", 1)
    wire = Wire()
    relay = wire.add(1)
    peers = [wire.add(seed) for seed in range(10, 14)]
    for peer in peers:
        wire.connect(peer, relay)
    now = wire.settle(T0) + 2 * node_module.ALIVE_HEARD_S
    known = [p for p in peers if p.address in relay._table]
    relay._check_alive(known[0].address, now)
    assert list(relay._alive_checks) == [known[0].address]
    wire.pump(now)  # the ping goes, its Pong comes back
    assert not relay._alive_checks
    now += 2 * node_module.ALIVE_HEARD_S
    relay._check_alive(known[1].address, now)
    assert list(relay._alive_checks) == [known[1].address]


def test_an_item_relayed_without_a_receipt_counts_only_an_unanswered_ping_against_the_peer() -> (
    None
):
    """docs/PROTOCOL.md, "7.2", "Receipt wait": no receipt within RECEIPT_TIMEOUT_S is no
    failure (a node refuses junk without one), but makes us ping the peer; only the
    ping's timeout counts (three evict the peer for a replacement)."""
    wire = Wire()
    # Retries far off, so only the first relay's deadline falls in the window watched.
    slow = NodeConfig(backoff_base_s=600.0, backoff_max_s=600.0)
    a, b = wire.add(1, slow), wire.add(2, slow)
    wire.connect(a, b)
    a_end, b_end = wire.endpoint(a), wire.endpoint(b)
    reader = Codec(a.identity)  # reads what B sends A, with a replay window of its own
    kinds: list[str] = []
    silent = False

    def receipts_lost(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if (source, dest) != (b_end, a_end):
            return False
        frame = reader.decode(data, T0).frame
        kinds.append(frame.WhichOneof("body") if frame is not None else "?")
        return silent or kinds[-1] == "receipt"

    wire.drop = receipts_lost
    entry = a._table.get(b.address)
    assert entry is not None and entry.failures == 0
    a.send_text(Identity.generate().public, "held by b, never confirmed", T0)
    wire.settle(T0)  # B's receipt goes RECEIPT_DELAY_S later
    assert "receipt" in kinds  # B took the item and answered; the answer was lost
    wire.tick(T0 + RECEIPT_TIMEOUT_S - 0.1)
    pings = a.stats.sent_by_kind["ping"]
    wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)
    assert a.stats.sent_by_kind["ping"] == pings + 1 and "pong" in kinds
    wire.tick(T0 + 2 * RECEIPT_TIMEOUT_S + 0.2)
    assert entry.failures == 0  # B answered the ping: alive

    # B goes silent: a stranger's message that A relays to B (its only peer) draws no
    # receipt; its wait running out pings B, and the ping's timeout counts.
    silent = True
    now = T0 + 15
    expires_ms = (int(now * 1000) + 24 * 3_600_000) // EXPIRY_UNIT_MS * EXPIRY_UNIT_MS
    msg = pb.Message(
        recipient=Identity.generate().address,
        expires_ms=expires_ms,
        sealed=random.randbytes(SEALED_BYTES),
    )
    data = Codec(Identity.generate()).encode_frame(a.identity.key, pb.Frame(message=msg), now)
    a.receive_datagram(data, ("198.18.5.5", 7000), now)
    wire.settle(now)
    wait = a._receipt_waits.timeout(b.address)  # 4 s: doubled by the first one
    wire.tick(now + wait + 0.1)
    (ping,) = [q for q in a._queries.values() if q.kind == "ping"]
    assert ping.peer_key == b.identity.key
    failures = entry.failures
    wire.tick(now + wait + RECEIPT_TIMEOUT_S + 0.2)
    assert ping not in a._queries.values() and entry.failures == failures + 1

    # The same with the receipt arriving: no ping, no failure.
    silent = False
    wire.drop = None
    b_seen = entry.last_seen
    a.send_text(Identity.generate().public, "confirmed", T0 + 20)
    wire.settle(T0 + 20)
    pings = a.stats.sent_by_kind["ping"]
    wire.tick(T0 + 20 + RECEIPT_TIMEOUT_S + 0.1)
    assert entry.failures == 0 and entry.last_seen > b_seen
    assert a.stats.sent_by_kind["ping"] == pings
