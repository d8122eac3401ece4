"""An item is held under the network it came from, once its sender proved its address
(docs/PROTOCOL.md, "8.1 Local caps": per-network quotas).

The relay store's quotas and fair eviction share its space by network of origin (an
IPv4 /24): a peer that proved it receives at its endpoint is counted under that
endpoint's network, and unproven sources all share one "unvalidated" origin. If every
item fell into the unvalidated share, one network's flood would crowd out every other
network's mail. Mutation testing found the node's choice of origin unpinned
(bench/MUTATION.md).
"""

from __future__ import annotations

import random

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.events import TextReceived
from comm_tui.protocol.letters import (
    CHUNK_BYTES,
    REASSEMBLY_MAX_TEXTS,
    REASSEMBLY_MAX_TEXTS_PER_SENDER,
)
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint, origin_network
from tests.wire import T0, Wire


def test_a_relay_holds_a_validated_peers_text_under_the_peers_network() -> None:
    wire = Wire()
    config = NodeConfig(backoff_base_s=1.0, backoff_max_s=8.0, max_relay_attempts=6)
    a, relay, b = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, relay)
    wire.connect(b, relay)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "for later", T0)
    wire.pump(T0 + 1)
    origins = dict(relay.relay_usage().origins)
    assert list(origins) == [origin_network(wire.endpoint(a))] == ["10.1.0.0/24"]
    assert origins["10.1.0.0/24"] == relay.relay_usage().bytes_held > 0


def _place(wire: Wire, seed: int, endpoint: Endpoint, config: NodeConfig) -> Node:
    """A node at a chosen endpoint (``Wire.add`` gives each seed its own /24)."""
    node = Node(Identity.from_seed(bytes([seed]) * 32), T0, config=config, rng=random.Random(seed))
    wire.nodes[endpoint] = node
    wire.events.setdefault(endpoint, [])
    wire.persisted.setdefault(endpoint, {})
    return node


def _message_datagrams(sender: Node, receiver: Node, to: Endpoint, now: float) -> list[bytes]:
    """What ``sender`` has to send ``receiver`` (at ``to``) that carries a message frame:
    a text's parts, in order."""
    codec = Codec(receiver.identity)
    return [
        data
        for data, dest in sender.datagrams_to_send()
        if dest == to
        and (frame := codec.decode(data, now).frame) is not None
        and frame.WhichOneof("body") == "message"
    ]


def test_a_flood_of_half_finished_texts_from_one_network_evicts_only_its_own() -> None:
    """docs/PROTOCOL.md, "7.1 Letters": past REASSEMBLY_MAX_TEXTS the reassembly table
    gives up a slot of the network holding the most, so a flood of half-finished texts
    from one /24 (any number of keys) cannot push out a text another network started.
    That holds only if the node tells the reassembler which network each part came from
    (a mutant that did not lived through the whole selection, bench/MUTATION.md)."""
    wire = Wire()
    # Room in the victim's table for the flood's keys on one /24 (the default keeps 2
    # per /24): each flooder is then a validated peer, held under its network.
    roomy = NodeConfig(k=64, ip_prefix_limit=64)
    at = ("10.1.0.1", 4000)
    victim = _place(wire, 1, at, roomy)
    honest = _place(wire, 2, ("10.200.0.1", 4000), NodeConfig())
    flooders_count = REASSEMBLY_MAX_TEXTS // REASSEMBLY_MAX_TEXTS_PER_SENDER
    flooders = [
        _place(wire, 10 + i, (f"10.9.0.{10 + i}", 4000), NodeConfig())
        for i in range(flooders_count)
    ]
    for sender in (honest, *flooders):
        wire.connect(sender, victim)
        sender.send_text(victim.identity.public, "a session first", T0)
    wire.pump(T0)
    assert len(wire.texts(victim)) == 1 + flooders_count
    two_parts = "h" * (CHUNK_BYTES + 1)
    now = T0 + 1

    # The honest text's first part arrives first: the least recently progressed of all.
    honest.send_text(victim.identity.public, two_parts, now)
    first, second = _message_datagrams(honest, victim, at, now)
    victim.receive_datagram(first, wire.endpoint(honest), now)
    # Then every flooder starts as many two-part texts as the per-sender cap allows, and
    # never sends their second parts: the table fills up and past that must evict.
    for flooder in flooders:
        for _ in range(REASSEMBLY_MAX_TEXTS_PER_SENDER):
            flooder.send_text(victim.identity.public, "f" * (CHUNK_BYTES + 1), now)
            part, _ = _message_datagrams(flooder, victim, at, now)
            victim.receive_datagram(part, wire.endpoint(flooder), now)
    victim.drain_events()
    assert len(victim._reassembler) == REASSEMBLY_MAX_TEXTS
    assert sum(victim.stats.rejected.values()) == 0  # every part was taken in
    # The honest text's slot survived the flood: its second part completes it.
    victim.receive_datagram(second, wire.endpoint(honest), now)
    received = [e for e in victim.drain_events() if isinstance(e, TextReceived)]
    assert [(e.sender.key, e.text) for e in received] == [(honest.identity.key, two_parts)]
