"""What the attack tests share: a node with a fixed key and seed, frames opened as their
recipient sees them, a valid expiry, and an address validation played out."""

from __future__ import annotations

import random

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import EXPIRY_UNIT_MS, Node, NodeConfig
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from tests.wire import T0, Wire

DAY_MS = 24 * 3600 * 1000


def node(seed: int, config: NodeConfig | None = None) -> Node:
    return Node(Identity.from_seed(bytes([seed]) * 32), T0, config=config, rng=random.Random(seed))


def frames_to(codec: Codec, sent: list[tuple[bytes, Endpoint]], dest: Endpoint) -> list[pb.Frame]:
    """The frames among ``sent`` that went to ``dest``, opened by ``codec``."""
    frames = []
    for data, to in sent:
        if to == dest:
            frame = codec.decode(data, T0).frame
            if frame is not None:
                frames.append(frame)
    return frames


def expiry(now: float) -> int:
    """An item's expiry a day from ``now``, on the whole hour the protocol asks."""
    return (int(now * 1000) + DAY_MS) // EXPIRY_UNIT_MS * EXPIRY_UNIT_MS


def validate(peer: Codec, at_node: Node, at: Endpoint, now: float, *, client: bool = False) -> None:
    """``peer`` proves to ``at_node`` that it receives at ``at`` (a ping, then the pong to
    the node's challenge); ``client``: in client mode (it never enters the table)."""
    ping = pb.Frame(ping=pb.Ping(challenge=b"p" * 16), client=client)
    at_node.receive_datagram(peer.encode_frame(at_node.identity.key, ping, now), at, now)
    for frame in frames_to(peer, at_node.datagrams_to_send(), at):
        if frame.HasField("ping"):
            pong = pb.Frame(pong=pb.Pong(challenge=frame.ping.challenge), client=client)
            at_node.receive_datagram(peer.encode_frame(at_node.identity.key, pong, now), at, now)
    at_node.datagrams_to_send()
    assert at_node._is_validated(peer.identity.key, at)


def late_copy_answered(victim: Node, copy: pb.Message, now: float) -> bool:
    """A late copy of a text to ``victim``, handed over by a validated hop: answered with
    an ack or a receipt, and no session reset started for it?"""
    hop = Codec(Identity.from_seed(b"h" * 32))
    hop_at = ("198.51.100.9", 4000)
    validate(hop, victim, hop_at, now)
    handshakes = victim.stats.handshakes_sent
    victim.receive_datagram(
        hop.encode_frame(victim.identity.key, pb.Frame(message=copy), now), hop_at, now
    )
    victim.drain_events()
    answered = frames_to(hop, victim.datagrams_to_send(), hop_at)
    return victim.stats.handshakes_sent == handshakes and any(
        f.HasField("ack") or f.HasField("receipt") for f in answered
    )


def contact_text_then_strangers(
    texts: int, *, contact: bool = True
) -> tuple[Node, pb.Message, float]:
    """A contact (one of the victim's user's, as the service tells the node) writes the
    victim a text, then a stranger writes it ``texts`` more, each delivered before the
    next: the victim, a copy of the first text (what a relay's retry would hand over
    later) and the time after the last. ``contact=False``: the first text is the
    stranger's too."""
    wire = Wire()
    first, stranger, victim = wire.add(1), wire.add(3), wire.add(2)
    if not contact:
        first = stranger
    wire.connect(first, victim)
    wire.connect(stranger, victim)
    now = T0 + 1
    if contact:
        victim.set_contacts([first.identity.key], now)
    victim_id = PublicIdentity(victim.identity.key)
    first.send_text(victim_id, "hello", now)
    (copy,) = [e.wire for e in first._store if e.kind is Kind.MESSAGE]
    now = wire.settle(now)
    assert len(wire.texts(victim)) == 1
    for i in range(texts):
        stranger.send_text(victim_id, f"text {i}", now)
        now = wire.settle(now) + 0.1
    return victim, copy, now
