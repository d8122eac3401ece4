"""One host floods a relay with 100,000 messages: quotas hold, nobody else is pushed out.

Real datagrams through ``Node.receive_datagram`` (boxed, authenticated, one per message),
with the clock advancing so the flood stays under the per-peer rate limits: what stops it
is the store quota, which is the thing under test.
"""

from __future__ import annotations

import random

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.node import SEALED_BYTES, Node, NodeConfig
from comm_tui.protocol.relay_store import Kind

T0 = 1_800_000_000.0
FLOOD_MESSAGES = 100_000
PER_PEER_BYTES = 1024 * 1024
TOTAL_BYTES = 4 * 1024 * 1024
DAY_MS = 24 * 3600 * 1000
RELAY = ("198.18.1.1", 4000)


def _message(rng: random.Random, expires_ms: int) -> pb.Message:
    return pb.Message(
        recipient=rng.randbytes(20), expires_ms=expires_ms, sealed=rng.randbytes(SEALED_BYTES)
    )


def test_one_host_with_fresh_keys_cannot_fill_the_store() -> None:
    """Issue 8, finding 5: keys are free, so the flooder takes a new key every 50 messages.

    Before, quotas counted keys and recipients only: one host filled the whole store
    and an honest message was then refused ``store_full``. Now its network holds at
    most ``per_net_share`` of the store, and everyone else's items still get in.
    """
    rng = random.Random(1)
    config = NodeConfig(
        store_per_peer_bytes=PER_PEER_BYTES,
        store_total_bytes=TOTAL_BYTES,
        store_rate_per_s=1e6,
        store_burst=1e6,
    )
    relay = Node(Identity.from_seed(bytes([1]) * 32), T0, config=config, rng=random.Random(2))
    honest = Node(Identity.from_seed(bytes([3]) * 32), T0, rng=random.Random(4))
    late = Node(Identity.from_seed(bytes([4]) * 32), T0, rng=random.Random(5))

    def deliver(sender: Node, endpoint: tuple[str, int], msg: pb.Message, now: float) -> None:
        """One message, and the round trips that prove the sender's address (the
        strongest flooder answers every challenge, so its items count as its network's)."""
        data = sender._codec.encode_frame(relay.identity.key, pb.Frame(message=msg), now)
        relay.receive_datagram(data, endpoint, now)
        for _ in range(3):
            for out, dest in relay.datagrams_to_send():
                if dest == endpoint:
                    sender.receive_datagram(out, RELAY, now)
            for back, dest in sender.datagrams_to_send():
                if dest == RELAY:
                    relay.receive_datagram(back, endpoint, now)
        while relay.next_event() is not None:
            pass

    honest_msg = _message(rng, int(T0 * 1000) + DAY_MS)
    deliver(honest, ("198.18.3.1", 4000), honest_msg, T0)
    honest_id = message_id(honest_msg.recipient, honest_msg.expires_ms, honest_msg.sealed)

    sealed = rng.randbytes(SEALED_BYTES)
    now = T0
    flooder = Node(Identity.generate(), T0)
    for i in range(FLOOD_MESSAGES):
        if i % 50 == 0:
            flooder = Node(Identity.generate(), T0)
        now += 0.002  # 500 datagrams/s: at the per-endpoint rate, not above it
        # A whole-hour expiry, as relays require; a new recipient makes each a new item.
        msg = pb.Message(
            recipient=rng.randbytes(20), expires_ms=int(T0 * 1000) + DAY_MS, sealed=sealed
        )
        deliver(flooder, ("198.18.2.1", 4000), msg, now)

    assert relay.stats.rejected_total == relay.stats.rejected["net_quota"]
    assert relay.stats.rejected["net_quota"] > 0.95 * FLOOD_MESSAGES
    honest_entry = relay._store.get(Kind.MESSAGE, honest_id)
    assert honest_entry is not None
    flooded = relay.status().stored_bytes - honest_entry.size
    # Its network's share, plus the share of items from not-yet-validated pairs (each
    # fresh key's first message), which everyone shares and which is evicted first.
    assert relay._store.per_net_limit == TOTAL_BYTES * 5 // 100
    assert flooded <= 2 * relay._store.per_net_limit
    # A newcomer from another network can still store: at once once its address is
    # proven, so at the latest with its first retry.
    late_msg = _message(rng, int(T0 * 1000) + DAY_MS)
    late_id = message_id(late_msg.recipient, late_msg.expires_ms, late_msg.sealed)
    deliver(late, ("198.18.4.1", 4000), late_msg, now)
    if relay._store.get(Kind.MESSAGE, late_id) is None:
        deliver(late, ("198.18.4.1", 4000), late_msg, now + 2)
    assert relay._store.get(Kind.MESSAGE, late_id) is not None
