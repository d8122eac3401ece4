"""Everything the simulator's adversaries and attack measurements read of protocol internals.

Whatever the attacks need beyond the public ``Node`` driver API goes through this
module, so that a change in the core's internals is a change here only:

- a ``Codec`` for an identity;
- encoding a boxed frame and a cleartext hello for any key;
- the node's own codec's ``encode_frame``, wrapped so a tampering node can rewrite the
  frames it sends (inside the box, before they are sealed);
- ``node.stats`` counters (rejections by reason, bytes), the relay store's byte total,
  and the routing table's entries (keys, endpoints, the nearest to a target);
- a warm start: peers put straight into a routing table, link boxes derived ahead;
- wire constants: ``SEALED_BYTES``, the longest TTL, the Fetch answer cap, and a valid
  (whole-hour) expiry for a forged message.
"""

from __future__ import annotations

from collections.abc import Callable

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import HELLO_PADDING_BYTES, PROTOCOL_VERSION, Codec, Rejected
from comm_tui.protocol.node import (
    EXPIRY_UNIT_MS,
    FETCH_ITEMS_MAX,
    MAX_TTL_S,
    SEALED_BYTES,
    Node,
)
from comm_tui.protocol.routing import Endpoint

__all__ = [
    "CHALLENGE_BYTES",
    "FETCH_ITEMS_MAX",
    "MAX_TTL_S",
    "SEALED_BYTES",
    "Codec",
    "Rejected",
    "closest_peers",
    "encode_frame",
    "forged_expiry_ms",
    "hello_packet",
    "is_validated",
    "make_codec",
    "rejections",
    "rewrite_outgoing_frames",
    "seed_table",
    "store_bytes",
    "table_endpoints",
    "table_keys",
    "table_size",
    "warm_box",
]

FrameRewriter = Callable[[bytes, pb.Frame], pb.Frame]


def make_codec(identity: Identity) -> Codec:
    """A codec of its own for ``identity`` (adversaries encode and peek with it)."""
    return Codec(identity)


def forged_expiry_ms(now: float) -> int:
    """The longest expiry a relay takes at ``now``: a whole hour, as relays require."""
    return (int((now + MAX_TTL_S) * 1000) // EXPIRY_UNIT_MS) * EXPIRY_UNIT_MS


def encode_frame(codec: Codec, peer_key: bytes, frame: pb.Frame, now: float) -> bytes:
    return codec.encode_frame(peer_key, frame, now)


def hello_packet(key: bytes, challenge: bytes) -> bytes:
    """A cleartext hello claiming ``key``: nothing in it proves the sender holds the key."""
    packet = pb.Packet(
        version=PROTOCOL_VERSION,
        sender_key=key,
        hello=pb.Hello(challenge=challenge, padding=bytes(HELLO_PADDING_BYTES)),
    )
    return packet.SerializeToString()


def rewrite_outgoing_frames(node: Node, rewrite: FrameRewriter) -> Callable[..., bytes]:
    """Make ``node`` pass every frame it sends through ``rewrite(peer_key, frame)``.

    Every frame is sealed by ``Codec.seal`` (the relay path hands it bytes), so that is
    where the frame is read, rewritten and written again. Returns a function with
    ``encode_frame``'s signature that sends frames untouched.
    """
    codec = node._codec
    original: Callable[..., bytes] = codec.seal

    def seal(peer_key: bytes, plaintext: bytes, now: float, *, cookie: bytes = b"") -> bytes:
        frame = rewrite(peer_key, pb.Frame.FromString(plaintext))
        return original(peer_key, frame.SerializeToString(), now, cookie=cookie)

    def untouched(peer_key: bytes, frame: pb.Frame, now: float, *, cookie: bytes = b"") -> bytes:
        return original(peer_key, frame.SerializeToString(), now, cookie=cookie)

    codec.seal = seal  # type: ignore[method-assign]
    return untouched


def rejections(node: Node) -> dict[str, int]:
    """A copy of the node's rejection counters, by reason."""
    return dict(node.stats.rejected)


def store_bytes(node: Node) -> int:
    """What the node's relay store holds now, in bytes (its sampled peak is a figure)."""
    return node._store.total_bytes


def table_keys(node: Node) -> list[bytes]:
    """Keys of every node in the routing table."""
    return [peer.key for peer in node.peers()]


def table_endpoints(node: Node) -> set[Endpoint]:
    """Where the nodes in the routing table speak from."""
    return {peer.endpoint for peer in node.peers()}


def table_size(node: Node) -> int:
    return node.peer_count


def closest_peers(node: Node, target: bytes, count: int) -> list[tuple[bytes, bytes, Endpoint]]:
    """(key, address, endpoint) of the ``count`` usable table entries nearest ``target``."""
    return [(p.key, p.address, p.endpoint) for p in node.closest_peers(target, count)]


def seed_table(node: Node, key: bytes, endpoint: Endpoint, now: float) -> None:
    """Put a peer straight into ``node``'s routing table, unvalidated: only for a warm
    start (``sim/topology.py``) and benchmarks, which skip the join to measure the rest."""
    node._table.observe(key, address_of(key), endpoint, now)


def is_validated(node: Node, key: bytes, endpoint: Endpoint) -> bool:
    """Has ``key`` proved to ``node`` that it receives at ``endpoint`` (docs/PROTOCOL.md,
    "5.1 Address validation"), in its routing table or by a challenge answered?"""
    return node._is_validated(key, endpoint)


def warm_box(node: Node, key: bytes) -> None:
    """Derive ``node``'s link boxes with ``key`` now (a relay up for a while has them)."""
    node._codec.box(key)
