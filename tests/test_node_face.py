"""The node's public face (docs: comm_tui/protocol/views.py) and its driver's timer.

Callers read a node through copies (``status()``, ``peers()``), take its events with
``drain_events()``, and the UDP adapter re-arms its one timer only when the node's
deadline moved.
"""

from __future__ import annotations

import asyncio
import random

from comm_tui.crypto.identity import Identity
from comm_tui.net.udp import open_udp
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.events import Event, PeerAdded, StoreChanged
from comm_tui.protocol.node import Node
from tests.test_relay_fast import _expiry, _message_frame, _stored_key
from tests.wire import T0, Wire

NOW = T0


def _pair() -> tuple[Wire, Node, Node]:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    return wire, a, b


def test_drain_events_takes_all_in_order_once() -> None:
    node = Node(Identity.from_seed(bytes(32 * [3])), NOW, rng=random.Random(1))
    node._events.extend([PeerAdded(b"k" * 32, ("10.0.0.9", 1)), PeerAdded(b"j" * 32, ("h", 2))])
    events: list[Event] = node.drain_events()
    assert [e.key for e in events if isinstance(e, PeerAdded)] == [b"k" * 32, b"j" * 32]
    assert node.drain_events() == []
    assert node.next_event() is None


def test_status_and_peers_are_copies() -> None:
    _, a, b = _pair()
    status = a.status()
    assert status.peers == a.peer_count == 1
    assert [p.key for p in a.peers()] == [b.identity.key]
    assert a.closest_peers(b.address, 1)[0].address == b.address
    received = status.stats.datagrams_in
    assert received > 0
    a.receive_datagram(b"junk", ("10.2.0.1", 4000), NOW)
    assert a.stats.datagrams_in == received + 1
    assert status.stats.datagrams_in == received  # the copy did not move
    assert status.state == a.state


def test_timer_is_rearmed_only_when_the_deadline_moves() -> None:
    async def run() -> None:
        node = Node(Identity.from_seed(bytes(32 * [4])), NOW, rng=random.Random(2))
        protocol, _ = await open_udp(node, ("127.0.0.1", 0), lambda events: None)
        try:
            first = protocol._timer
            assert first is not None
            protocol.pump()  # nothing changed: the same handle stays armed
            assert protocol._timer is first
            node.bootstrap(("127.0.0.1", 9), NOW)  # a hello out: its timeout is sooner
            protocol.pump()
            assert protocol._timer is not first
            assert first.cancelled()
        finally:
            protocol.close()

    asyncio.run(run())


def test_the_datagrams_of_a_pump_make_one_store_changed_at_the_drain() -> None:
    """What the datagrams received since the last drain changed in the store is handed
    over as one StoreChanged, by ``drain_events`` or ``next_event`` alike (none when
    nothing changed), not one per datagram."""
    wire, relay, sender = _pair()
    relay.drain_events()
    codec = Codec(sender.identity)
    for take in ("drain", "next"):
        frames = [_message_frame(bytes([i]) * 20, _expiry(NOW)) for i in range(3)]
        for frame in frames:
            data = codec.encode_frame(relay.identity.key, frame, NOW)
            relay.receive_datagram(data, wire.endpoint(sender), NOW)
        if take == "drain":
            events: list[Event] = relay.drain_events()
        else:
            events = list(iter(relay.next_event, None))
        changes = [e for e in events if isinstance(e, StoreChanged)]
        assert len(changes) == 1, take
        assert {_stored_key(f) for f in frames} <= set(changes[0].put), take
    assert relay.drain_events() == []
