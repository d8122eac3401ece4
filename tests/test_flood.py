"""One peer floods a relay with 100,000 messages: quotas hold, nobody else is pushed out.

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


def _message(rng: random.Random, expires_ms: int) -> pb.Message:
    return pb.Message(
        recipient=rng.randbytes(20), expires_ms=expires_ms, sealed=rng.randbytes(SEALED_BYTES)
    )


def test_a_100k_message_flood_cannot_push_out_others_or_grow_past_the_quota() -> None:
    rng = random.Random(1)
    config = NodeConfig(
        store_per_peer_bytes=PER_PEER_BYTES,
        store_total_bytes=TOTAL_BYTES,
        store_rate_per_s=1e6,
        store_burst=1e6,
    )
    relay = Node(Identity.from_seed(bytes([1]) * 32), T0, config=config, rng=random.Random(2))
    flooder = Node(Identity.from_seed(bytes([2]) * 32), T0, rng=random.Random(3))
    honest = Node(Identity.from_seed(bytes([3]) * 32), T0, rng=random.Random(4))
    late = Node(Identity.from_seed(bytes([4]) * 32), T0, rng=random.Random(5))

    def deliver(sender: Node, endpoint: tuple[str, int], msg: pb.Message, now: float) -> None:
        data = sender.codec.encode_frame(relay.identity.key, pb.Frame(message=msg), now)
        relay.receive_datagram(data, endpoint, now)
        relay.datagrams_to_send()
        while relay.next_event() is not None:
            pass

    honest_msg = _message(rng, int(T0 * 1000) + DAY_MS)
    deliver(honest, ("10.0.0.3", 4000), honest_msg, T0)
    honest_id = message_id(honest_msg.recipient, honest_msg.expires_ms, honest_msg.sealed)

    sealed = rng.randbytes(SEALED_BYTES)
    now = T0
    for i in range(FLOOD_MESSAGES):
        now += 0.002  # 500 datagrams/s: at the per-endpoint rate, not above it
        msg = pb.Message(
            recipient=rng.randbytes(20), expires_ms=int(T0 * 1000) + DAY_MS + i, sealed=sealed
        )
        deliver(flooder, ("10.0.0.2", 4000), msg, now)

    assert relay.stats.datagrams_in == FLOOD_MESSAGES + 1
    assert relay.stats.rejected_total == relay.stats.rejected["peer_quota"]
    assert relay.stats.rejected["peer_quota"] > 0.95 * FLOOD_MESSAGES
    assert (
        relay.store.total_bytes
        <= PER_PEER_BYTES + 2 * relay.store.get(Kind.MESSAGE, honest_id).size
    )  # type: ignore[union-attr]
    assert len(relay.store) < PER_PEER_BYTES // 1000 + 2
    # A newcomer can still store.
    late_msg = _message(rng, int(T0 * 1000) + DAY_MS)
    deliver(late, ("10.0.0.4", 4000), late_msg, now)
    late_id = message_id(late_msg.recipient, late_msg.expires_ms, late_msg.sealed)
    assert relay.store.get(Kind.MESSAGE, late_id) is not None
