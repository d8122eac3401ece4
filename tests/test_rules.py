"""One test per protocol rule that a one-line mutation of the core used to slip past.

The mutation audit of issue 14 (as of commit 0ec85d1) found these rules unpinned: the ack
expiry and TTL checks, quotas on acks from peers, the per-endpoint datagram rate limit,
pongs from a key other than the one pinged, and the restore grace period. Each test here
fails when its rule is switched off.
"""

from __future__ import annotations

import random

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import (
    MAX_TTL_S,
    RESTORE_GRACE_S,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Kind
from tests.wire import T0, Wire

DAY_MS = 24 * 3600 * 1000


def ack_frame(signer: Identity, expires_ms: int, rng: random.Random) -> pb.Frame:
    return pb.Frame(ack=sign_ack(signer, rng.randbytes(32), rng.randbytes(20), expires_ms))


def test_acks_that_expired_or_live_too_long_are_refused() -> None:
    wire = Wire()
    relay, peer = wire.add(1), wire.add(2)
    wire.connect(peer, relay)
    rng = random.Random(1)
    now_ms = int(T0 * 1000)
    cases = {
        "expired": now_ms - 1,
        "ttl_too_long": now_ms + int((MAX_TTL_S + 601) * 1000),
    }
    for reason, expires_ms in cases.items():
        frame = ack_frame(Identity.generate(), expires_ms, rng)
        relay.receive_datagram(
            peer.codec.encode_frame(relay.identity.key, frame, T0), wire.endpoint(peer), T0
        )
        assert relay.stats.rejected[reason] == 1
    assert not [e for e in relay.store if e.kind is Kind.ACK]
    fresh = ack_frame(Identity.generate(), now_ms + DAY_MS, rng)
    relay.receive_datagram(
        peer.codec.encode_frame(relay.identity.key, fresh, T0), wire.endpoint(peer), T0
    )
    assert len([e for e in relay.store if e.kind is Kind.ACK]) == 1


def test_acks_from_peers_count_against_the_store_quotas() -> None:
    """Valid acks are signed by their own (free) keys: without quotas, a store-filler."""
    wire = Wire()
    config = NodeConfig(store_total_bytes=200_000, store_rate_per_s=1e6, store_burst=1e6)
    relay, peer = wire.add(1, config), wire.add(2)
    wire.connect(peer, relay)
    rng = random.Random(2)
    for i in range(2000):
        now = T0 + i / 1000
        frame = ack_frame(Identity.generate(), int(T0 * 1000) + DAY_MS, rng)
        data = peer.codec.encode_frame(relay.identity.key, frame, now)
        relay.receive_datagram(data, wire.endpoint(peer), now)
    assert relay.stats.rejected["net_quota"] > 0
    assert relay.store.total_bytes <= relay.store.per_net_limit


def test_acks_from_peers_are_held_to_the_store_rate() -> None:
    wire = Wire()
    relay, peer = wire.add(1, NodeConfig(store_rate_per_s=10, store_burst=20)), wire.add(2)
    wire.connect(peer, relay)
    rng = random.Random(3)
    for _ in range(50):
        frame = ack_frame(Identity.generate(), int(T0 * 1000) + DAY_MS, rng)
        data = peer.codec.encode_frame(relay.identity.key, frame, T0)
        relay.receive_datagram(data, wire.endpoint(peer), T0)
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
        data = peer.codec.encode_frame(relay.identity.key, ping, T0 + 1 + i / 1000)
        relay.receive_datagram(data, wire.endpoint(peer), T0 + 1 + i / 1000)
    assert 40 <= relay.stats.rejected["rate_limited"] - before <= 60


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
    (entry,) = [e for e in restarted.store if e.kind is Kind.MESSAGE]
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
    later = T0 + MAX_TTL_S + 1
    restarted = Node(relay.identity, later, rng=random.Random(8))
    assert restarted.restore(blobs, later) == 0
    assert len(restarted.store) == 0
