"""Tests for the node state machine, driven by hand or by the simulator, with time passed in.

Covers the relay backoff schedule, expiry of stored items and of our own texts, ack
verification (forged acks refused and counted, relaying and delivery unaffected),
relays answering copies of acknowledged messages with the ack, de-duplication,
multi-part texts up to 64 KiB, the outbox states, offline recipients and senders,
restore() of persisted store entries, and rejection counters for bad frames.
"""

from __future__ import annotations

import random

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.events import TextReceived, TextStateChanged
from comm_tui.protocol.letters import CHUNK_BYTES, MAX_TEXT_BYTES
from comm_tui.protocol.node import (
    HOUSEKEEPING_INTERVAL_S,
    MAX_TTL_S,
    REBOOTSTRAP_INTERVAL_S,
    RECEIPT_DELAY_S,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.network import SimNetwork, SimNode
from tests.wire import T0, Wire, peer_addresses


def stored_messages(node: Node) -> list[Entry]:
    return [e for e in node._store if e.kind is Kind.MESSAGE]


def message_of(entry: Entry) -> pb.Message:
    assert isinstance(entry.wire, pb.Message)
    return entry.wire


def fast_config(**overrides: float) -> NodeConfig:
    config = NodeConfig(backoff_base_s=1.0, backoff_max_s=8.0, max_relay_attempts=6)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


@pytest.fixture
def wire() -> Wire:
    return Wire()


def trio(wire: Wire, config: NodeConfig | None = None) -> tuple[Node, Node, Node]:
    """Sender A and recipient B, both connected only through relay R; B starts offline."""
    a, r, b = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    return a, r, b


def forge_frame(sender: Node, receiver: Node, frame: pb.Frame, now: float) -> bytes:
    return sender._codec.encode_frame(receiver.identity.key, frame, now)


def frames_sent(wire: Wire, node: Node, to: Node, now: float) -> list[pb.Frame]:
    """Decode what ``node`` queued for ``to`` (with a fresh codec, so nothing is spent)."""
    codec = Codec(to.identity)
    dest = wire.endpoint(to)
    return [
        frame
        for data, endpoint in node.datagrams_to_send()
        if endpoint == dest and (frame := codec.decode(data, now).frame) is not None
    ]


# ---------------------------------------------------------------- backoff and expiry


def test_relay_backoff_doubles_caps_and_stops(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    wire.nodes.pop(wire.endpoint(a))  # only R's timers matter from here
    a.send_text(b.identity.public, "hello", T0)
    for data, dest in a.datagrams_to_send():
        if dest == wire.endpoint(r):
            r.receive_datagram(data, ("10.1.0.1", 4000), T0)
    (entry,) = stored_messages(r)
    attempts_at = [(T0, entry.attempts)]
    now = T0
    while now < T0 + 200:
        now = max(now + 0.001, r.get_timer())
        before = entry.attempts
        r.handle_timer(now)
        r.datagrams_to_send()
        if entry.attempts != before:
            attempts_at.append((now, entry.attempts))
    offsets = [round(t - T0, 3) for t, _ in attempts_at]
    # First relay on arrival, then 1, 2, 4, 8 (capped), 8 s later; 6 attempts in all.
    assert offsets == [0, 1, 3, 7, 15, 23]
    assert [n for _, n in attempts_at] == [1, 2, 3, 4, 5, 6]
    assert r._store.get(Kind.MESSAGE, entry.item_id) is entry  # kept for push-on-join


def test_stored_messages_and_own_texts_expire(wire: Wire) -> None:
    # A TTL under two hours expires on the first whole hour after the send.
    config = fast_config(ttl_s=100.0)
    a, r, b = trio(wire, config)
    text_id = a.send_text(b.identity.public, "never read", T0)
    wire.pump(T0)
    assert len(stored_messages(r)) == 1
    (stored,) = stored_messages(r)
    assert stored.expires_ms == int(T0 * 1000) + 3_600_000
    wire.run(T0 + 1, T0 + 3600 - 1, step=10.0)
    assert stored_messages(r) == [stored]
    wire.run(T0 + 3600, T0 + 3600 + HOUSEKEEPING_INTERVAL_S + 1, step=1.0)
    assert stored_messages(r) == []
    assert stored_messages(a) == []
    assert r.stats.expired >= 1
    assert wire.states(a, text_id) == ["sent", "expired"]
    assert stored.key not in wire.persisted[wire.endpoint(r)]
    # B returns after expiry: nothing arrives.
    wire.offline.clear()
    b.lookup(b.address, T0 + 3700)
    wire.pump(T0 + 3700)
    assert wire.texts(b) == []


def test_expired_and_overlong_messages_are_refused(wire: Wire) -> None:
    a, r, b = trio(wire)
    a.send_text(b.identity.public, "x", T0)
    (data_to_r,) = [d for d, e in a.datagrams_to_send() if e == wire.endpoint(r)]
    r.receive_datagram(data_to_r, wire.endpoint(a), T0 + 8 * 24 * 3600)
    # The datagram itself is stale at that time: the codec refuses it first.
    assert r.stats.rejected["stale"] == 1
    (entry,) = stored_messages(a)
    msg = pb.Message()
    msg.CopyFrom(message_of(entry))
    msg.expires_ms = int(T0 * 1000)
    r.receive_datagram(forge_frame(a, r, pb.Frame(message=msg), T0), wire.endpoint(a), T0)
    msg.expires_ms = int((T0 + MAX_TTL_S + 3600) * 1000)
    r.receive_datagram(forge_frame(a, r, pb.Frame(message=msg), T0), wire.endpoint(a), T0)
    assert r.stats.rejected["expired"] == 1
    assert r.stats.rejected["ttl_too_long"] == 1
    assert stored_messages(r) == []


# ---------------------------------------------------------------- acks


def test_an_ack_and_each_copy_of_it_are_answered_with_a_receipt(wire: Wire) -> None:
    """docs/PROTOCOL.md, "7.3 Acks": a relay answers an ack it stores, and any later copy
    of one it holds, with a receipt to the endpoint it came from, so the sender of the
    ack stops sending it. Mutation testing found both receipts unpinned: one sent
    nowhere, one raising (swallowed as an internal error; bench/MUTATION.md)."""
    a, r, b = trio(wire, fast_config())
    a.send_text(b.identity.public, "for B", T0)
    wire.pump(T0)
    (entry,) = stored_messages(r)
    ack = sign_ack(b.identity, entry.item_id, entry.expires_ms)
    codec = Codec(b.identity)
    for copy in range(2):
        now = T0 + 1 + copy
        r.receive_datagram(forge_frame(b, r, pb.Frame(ack=ack), now), wire.endpoint(b), now)
        r.handle_timer(now + RECEIPT_DELAY_S)
        answers = [
            frame.WhichOneof("body")
            for data, dest in r.datagrams_to_send()
            if dest == wire.endpoint(b) and (frame := codec.decode(data, now).frame) is not None
        ]
        assert answers == ["receipt"], copy
    assert r.stats.acks_seen == 1
    assert not r.stats.rejected


def test_a_node_with_no_peers_says_hello_to_its_bootstrap_nodes_again(wire: Wire) -> None:
    """A node whose table is empty (its bootstrap node was down) says hello to its
    bootstrap endpoints again every REBOOTSTRAP_INTERVAL_S until one answers, and not in
    between; then it joins."""
    a, b = wire.add(1), wire.add(2)
    hellos: list[float] = []
    now = T0

    def tap(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if (source, dest) == (
            wire.endpoint(a),
            wire.endpoint(b),
        ) and b.address not in peer_addresses(a):
            hellos.append(now)
        return False

    wire.drop = tap
    wire.offline.add(wire.endpoint(b))
    a.bootstrap(wire.endpoint(b), now)
    wire.pump(now)
    for now in (T0 + 1, T0 + REBOOTSTRAP_INTERVAL_S - 0.5, T0 + REBOOTSTRAP_INTERVAL_S):
        wire.tick(now)
    assert hellos == [T0, T0 + REBOOTSTRAP_INTERVAL_S]
    wire.offline.clear()
    now = T0 + 2 * REBOOTSTRAP_INTERVAL_S
    wire.tick(now)
    assert b.address in peer_addresses(a) and a.address in peer_addresses(b)


def test_forged_acks_are_rejected_and_do_not_stop_delivery(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    mallory = wire.add(9, fast_config())
    wire.connect(mallory, r)
    text_id = a.send_text(b.identity.public, "for B only", T0)
    wire.pump(T0)
    (entry,) = stored_messages(r)
    mid, expires = entry.item_id, entry.expires_ms

    # 1. Signed correctly, but by Mallory's own key: does not hash to B's address.
    own_key_ack = sign_ack(mallory.identity, mid, expires)
    # 2. Carries B's key, signed by Mallory.
    wrong_sig = sign_ack(mallory.identity, mid, expires)
    wrong_sig.recipient_key = b.identity.key
    for ack in (own_key_ack, wrong_sig):
        data = forge_frame(mallory, r, pb.Frame(ack=ack), T0)
        r.receive_datagram(data, wire.endpoint(mallory), T0)
        data = forge_frame(mallory, a, pb.Frame(ack=ack), T0)
        a.receive_datagram(data, wire.endpoint(mallory), T0)
    wire.pump(T0)
    assert r.stats.rejected["forged_ack"] == 1
    assert r.stats.rejected["bad_ack"] == 1
    assert a.stats.rejected["forged_ack"] == 1
    assert a.stats.rejected["bad_ack"] == 1
    assert r.stats.acks_seen == 0
    assert r._store.get(Kind.MESSAGE, mid) is entry
    assert "delivered" not in wire.states(a, text_id)

    # Relaying goes on: R's next retry reaches B once it is back.
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 10)
    assert [t.text for t in wire.texts(b)] == ["for B only"]
    assert wire.states(a, text_id) == ["sent", "delivered"]
    assert r.stats.acks_seen == 1
    assert r._store.get(Kind.MESSAGE, mid) is None


def test_an_ack_for_a_message_the_relay_does_not_hold_is_refused(wire: Wire) -> None:
    """docs/PROTOCOL.md, "7.3 Acks": acks are taken only for held messages, so a forged
    one sent ahead of the message is refused, stores nothing and cannot shadow the real."""
    a, r, b = trio(wire, fast_config())
    mallory = wire.add(9)
    wire.connect(mallory, r)
    wire.offline.add(wire.endpoint(a))  # A's message does not reach R yet
    text_id = a.send_text(b.identity.public, "late", T0)
    a.datagrams_to_send()
    (entry,) = stored_messages(a)
    forged = sign_ack(mallory.identity, entry.item_id, entry.expires_ms)
    genuine_early = sign_ack(b.identity, entry.item_id, entry.expires_ms)
    for ack in (forged, genuine_early):
        data = forge_frame(mallory, r, pb.Frame(ack=ack), T0)
        r.receive_datagram(data, wire.endpoint(mallory), T0)
    assert r.stats.rejected["unknown_ack"] == 2
    assert r.status().stored_items == 0
    wire.offline.discard(wire.endpoint(a))
    r.receive_datagram(forge_frame(a, r, pb.Frame(message=entry.wire), T0), wire.endpoint(a), T0)
    wire.pump(T0)
    assert r.stats.acks_answered == 0
    assert len(stored_messages(r)) == 1  # stored and relayed despite the "acks"
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 10)
    assert r.stats.acks_answered == 0
    assert [t.text for t in wire.texts(b)] == ["late"]
    assert "delivered" in wire.states(a, text_id)


def test_relay_answers_a_copy_of_an_acknowledged_message_with_the_ack(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    c = wire.add(4)
    wire.connect(c, r)
    a.send_text(b.identity.public, "once", T0)
    wire.pump(T0)
    (entry,) = stored_messages(r)
    copy = pb.Message()
    copy.CopyFrom(message_of(entry))
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 5)
    assert len(wire.texts(b)) == 1
    assert stored_messages(r) == []

    c.receive_datagram(b"", ("0.0.0.0", 1), T0 + 6)  # nothing queued from c beforehand
    r.receive_datagram(forge_frame(c, r, pb.Frame(message=copy), T0 + 6), wire.endpoint(c), T0 + 6)
    answers = frames_sent(wire, r, c, T0 + 6)
    acks = [f.ack for f in answers if f.WhichOneof("body") == "ack"]
    assert len(acks) == 1
    assert acks[0].message_id == entry.item_id
    assert acks[0].recipient_key == b.identity.key
    assert r.stats.acks_answered == 1
    assert stored_messages(r) == []  # not stored or relayed again


def test_recipient_answers_every_copy_with_the_ack_and_delivers_once(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "dup", T0)
    (entry,) = stored_messages(a)
    a.datagrams_to_send()
    wire.offline.clear()
    for i in range(3):
        now = T0 + i
        b.receive_datagram(
            forge_frame(a, b, pb.Frame(message=message_of(entry)), now), wire.endpoint(a), now
        )
        acks = [f for f in frames_sent(wire, b, a, now) if f.WhichOneof("body") == "ack"]
        assert len(acks) == 1
    wire.pump(T0 + 3)
    assert len(wire.texts(b)) == 1
    assert b.stats.texts_received == 1


# ---------------------------------------------------------------- de-duplication


def test_same_message_from_two_peers_is_stored_once(wire: Wire) -> None:
    a, r, b = trio(wire)
    c = wire.add(4)
    wire.connect(c, r)
    a.send_text(b.identity.public, "twice", T0)
    (entry,) = stored_messages(a)
    a.datagrams_to_send()
    for sender in (a, c, a):
        data = forge_frame(sender, r, pb.Frame(message=message_of(entry)), T0)
        r.receive_datagram(data, wire.endpoint(sender), T0)
    assert len(stored_messages(r)) == 1
    assert r.stats.stored == 1
    assert r.stats.duplicates == 2
    # c was never sent it: its copy makes it no holder (docs/PROTOCOL.md, "7.2"), or
    # Sybils handed the bytes by a colluder could stop its replication.
    assert stored_messages(r)[0].holders == {a.address}


def test_recipient_gets_the_same_message_from_two_relays_once(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    r2 = wire.add(5, fast_config())
    wire.connect(r2, r)
    wire.connect(r2, a)
    wire.offline.discard(wire.endpoint(b))
    wire.connect(b, r2)
    wire.offline.add(wire.endpoint(b))
    text_id = a.send_text(b.identity.public, "one copy please", T0)
    wire.pump(T0)
    assert len(stored_messages(r)) == 1 and len(stored_messages(r2)) == 1
    wire.offline.clear()
    wire.run(T0 + 1, T0 + 20)
    assert [t.text for t in wire.texts(b)] == ["one copy please"]
    assert wire.states(a, text_id) == ["sent", "delivered"]


# ---------------------------------------------------------------- multi-part texts


@pytest.mark.parametrize("size", [10 * 1024, MAX_TEXT_BYTES])
def test_multi_part_text_delivered_once_and_acked_per_part(wire: Wire, size: int) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    text = ("ünïcødé-" * size)[: size // 2]  # 2-byte characters straddle part boundaries
    assert len(text.encode()) <= MAX_TEXT_BYTES
    parts = -(-len(text.encode()) // CHUNK_BYTES)
    text_id = a.send_text(b.identity.public, text, T0)
    assert len(stored_messages(a)) == parts
    wire.pump(T0)
    received = wire.texts(b)
    assert len(received) == 1
    assert received[0].text == text
    assert received[0].sender.key == a.identity.key
    assert len([e for e in b._store if e.kind is Kind.ACK]) == parts
    assert a.stats.acks_seen == parts
    assert stored_messages(a) == []
    assert wire.states(a, text_id)[-1] == "delivered"
    assert a.stats.texts_delivered == 1
    # Resending every part again delivers nothing new.
    wire.run(T0 + 1, T0 + 10)
    assert len(wire.texts(b)) == 1


def test_multi_part_text_parts_arriving_in_reverse_order(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    text = "".join(chr(0x4E00 + i % 500) for i in range(4000))  # 12,000 bytes of CJK
    text_id = a.send_text(b.identity.public, text, T0)
    out = [d for d, e in a.datagrams_to_send() if e == wire.endpoint(b)]
    assert len(out) == -(-12_000 // CHUNK_BYTES)
    for data in reversed(out):
        b.receive_datagram(data, wire.endpoint(a), T0)
    wire.pump(T0)
    assert [t.text for t in wire.texts(b)] == [text]
    assert wire.states(a, text_id)[-1] == "delivered"


def test_lost_part_is_resent_until_the_text_is_delivered(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)  # default timings
    wire.connect(a, b)
    text_id = a.send_text(b.identity.public, "p" * (CHUNK_BYTES * 3), T0)
    last_entry = max(stored_messages(a), key=lambda e: e.own_part)
    last = message_of(last_entry).sealed
    lost: list[bytes] = []

    def lose_last_part_twice(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source != wire.endpoint(a):
            return False
        frame = Codec(b.identity).decode(data, T0).frame
        if frame is not None and frame.message.sealed == last and len(lost) < 2:
            lost.append(data)
            return True
        return False

    wire.drop = lose_last_part_twice
    wire.pump(T0)
    wire.run(T0 + 1, T0 + 600)
    assert len(lost) == 2
    assert len(wire.texts(b)) == 1
    assert wire.states(a, text_id)[-1] == "delivered"


# ---------------------------------------------------------------- outbox states


def test_outbox_states_queued_sent_delivered(wire: Wire) -> None:
    a, r, b = wire.add(1, fast_config()), wire.add(2, fast_config()), wire.add(3, fast_config())
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    text_id = a.send_text(b.identity.public, "queued first", T0)
    assert a.state == "no peers"
    wire.pump(T0)
    assert wire.states(a, text_id) == []  # queued: nobody holds it yet
    wire.connect(a, r, T0 + 1)
    wire.settle(T0 + 1)  # r's receipt for the part
    assert wire.states(a, text_id) == ["sent"]
    wire.offline.clear()
    wire.run(T0 + 2, T0 + 20)
    assert wire.states(a, text_id) == ["sent", "delivered"]


def test_text_is_sent_only_once_every_part_is_handed_over(wire: Wire) -> None:
    """``sent`` means every part is held by some node; part receipts come from the recipient."""
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    text = "p" * (CHUNK_BYTES * 3)
    text_id = a.send_text(b.identity.public, text, T0)
    out = a.datagrams_to_send()
    messages = [
        (d, e)
        for d, e in out
        if (f := Codec(b.identity).decode(d, T0).frame) is not None
        and f.WhichOneof("body") == "message"
    ]
    for data, _ in messages[:-1]:
        b.receive_datagram(data, wire.endpoint(a), T0)
    wire.pump(T0)
    assert wire.states(a, text_id) == []  # the last part was lost: not yet sent
    b.receive_datagram(messages[-1][0], wire.endpoint(a), T0)
    wire.pump(T0)
    assert wire.states(a, text_id)[-1] == "delivered"
    assert [t.text for t in wire.texts(b)] == [text]


# ---------------------------------------------------------------- offline peers (simulator)


def sim_network(count: int, seed: int) -> tuple[SimNetwork, list[SimNode]]:
    net = SimNetwork(seed)
    config = NodeConfig(backoff_base_s=2.0, backoff_max_s=60.0)
    nodes = [net.add_node(config=config) for _ in range(count)]
    for sim in nodes[1:]:
        net.do(sim, lambda n: n.bootstrap(nodes[0].endpoint, net.now))
    net.run_for(30.0)
    assert all(s.node.state == "online" for s in nodes)
    return net, nodes


def sim_states(sim: SimNode, text_id: bytes) -> list[str]:
    return [e.state for e in sim.events if isinstance(e, TextStateChanged) and e.text_id == text_id]


def sim_texts(sim: SimNode) -> list[str]:
    return [e.text for e in sim.events if isinstance(e, TextReceived)]


def test_offline_recipient_gets_the_message_soon_after_rejoining() -> None:
    net, nodes = sim_network(12, seed=7)
    sender, recipient = nodes[1], nodes[-1]
    net.set_online(recipient, False)
    net.run_for(120.0)  # the others notice it is gone
    text_id: list[bytes] = []
    net.do(
        sender, lambda n: text_id.append(n.send_text(recipient.node.identity.public, "wb", net.now))
    )
    net.run_for(600.0)
    assert sim_texts(recipient) == []
    assert sim_states(sender, text_id[0]) == ["sent"]
    net.set_online(recipient, True)
    rejoined = net.now
    # Nothing is called on wake: the node notices its timers fired late and rejoins.
    net.run_for(2.0, stop=lambda: bool(sim_texts(recipient)))
    assert sim_texts(recipient) == ["wb"]
    assert net.now - rejoined < 2.0
    net.run_for(5.0)
    assert sim_states(sender, text_id[0]) == ["sent", "delivered"]


def test_offline_sender_learns_of_delivery_when_it_returns() -> None:
    net, nodes = sim_network(10, seed=11)
    sender, recipient = nodes[2], nodes[5]
    net.set_online(recipient, False)
    text_id: list[bytes] = []
    net.do(
        sender,
        lambda n: text_id.append(n.send_text(recipient.node.identity.public, "ok?", net.now)),
    )
    net.run_for(5.0)
    assert sim_states(sender, text_id[0]) == ["sent"]
    net.set_online(sender, False)
    net.set_online(recipient, True)
    net.run_for(30.0)
    assert sim_texts(recipient) == ["ok?"]
    assert sim_states(sender, text_id[0]) == ["sent"]
    net.set_online(sender, True)
    back = net.now
    net.run_for(10.0, stop=lambda: "delivered" in sim_states(sender, text_id[0]))
    assert sim_states(sender, text_id[0]) == ["sent", "delivered"]
    assert net.now - back < 10.0


def test_sixteen_nodes_deliver_many_texts_once_each() -> None:
    net, nodes = sim_network(16, seed=3)
    rng = random.Random(3)
    expected: dict[int, list[str]] = {}
    for i in range(20):
        src, dst = rng.sample(range(16), 2)
        text = f"text {i}"
        expected.setdefault(dst, []).append(text)
        recipient = nodes[dst].node.identity.public

        def send(node: Node, to: PublicIdentity = recipient, body: str = text) -> None:
            node.send_text(to, body, net.now)

        net.do(nodes[src], send)
    net.run_for(30.0)
    for index, texts in expected.items():
        assert sorted(sim_texts(nodes[index])) == sorted(texts)


# ---------------------------------------------------------------- restore


def test_restored_relay_keeps_relaying(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    text_id = a.send_text(b.identity.public, "survives a restart", T0)
    wire.settle(T0)
    blobs = list(wire.persisted[wire.endpoint(r)].values())
    assert blobs
    restarted = Node(r.identity, T0 + 5, config=fast_config(), rng=random.Random(99))
    assert restarted.restore([*blobs, b"\xffdamaged"], T0 + 5) == 1
    wire.attach(restarted, 2)  # same endpoint: replaces the old R
    assert len(stored_messages(restarted)) == 1
    wire.offline.clear()
    b.lookup(b.address, T0 + 6)
    wire.pump(T0 + 6)
    wire.run(T0 + 7, T0 + 30)
    assert [t.text for t in wire.texts(b)] == ["survives a restart"]
    assert wire.states(a, text_id) == ["sent", "delivered"]


def test_restored_sender_keeps_its_outbox(wire: Wire) -> None:
    a, r, b = trio(wire, fast_config())
    text = "s" * (CHUNK_BYTES * 2 + 5)
    text_id = a.send_text(b.identity.public, text, T0)
    wire.settle(T0)
    assert wire.states(a, text_id) == ["sent"]
    blobs = list(wire.persisted[wire.endpoint(a)].values())
    assert len(blobs) == 3
    restarted = Node(a.identity, T0 + 5, config=fast_config(), rng=random.Random(98))
    assert restarted.restore(blobs, T0 + 5) == 0
    assert len(stored_messages(restarted)) == 3
    wire.attach(restarted, 1)
    wire.events[wire.endpoint(restarted)].clear()
    wire.connect(restarted, r, T0 + 5)
    wire.offline.clear()
    wire.run(T0 + 6, T0 + 30)
    assert [t.text for t in wire.texts(b)] == [text]
    assert wire.states(restarted, text_id) == ["delivered"]
    assert stored_messages(restarted) == []


def test_restored_recipient_answers_copies_and_does_not_deliver_twice(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    a.send_text(b.identity.public, "only once", T0)
    (entry,) = stored_messages(a)
    wire.pump(T0)
    assert len(wire.texts(b)) == 1
    blobs = list(wire.persisted[wire.endpoint(b)].values())
    restarted = Node(b.identity, T0 + 5, rng=random.Random(97))
    restarted.restore(blobs, T0 + 5)
    wire.attach(restarted, 3)
    data = forge_frame(a, restarted, pb.Frame(message=message_of(entry)), T0 + 6)
    restarted.receive_datagram(data, wire.endpoint(a), T0 + 6)
    wire.pump(T0 + 6)
    assert len(wire.texts(restarted)) == 1  # the event list is shared by endpoint
    assert restarted.stats.texts_received == 0
    assert restarted.stats.acks_answered == 1


# ---------------------------------------------------------------- rejection counters


def test_malformed_and_unsolicited_frames_are_counted_by_reason(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    ep = wire.endpoint(a)
    now = T0 + 1
    cases: list[tuple[pb.Frame, str]] = [
        (pb.Frame(pong=pb.Pong(challenge=b"x" * 16)), "unsolicited"),
        (pb.Frame(nodes=pb.Nodes(query_id=b"q" * 16)), "unsolicited"),
        (pb.Frame(ping=pb.Ping(challenge=b"short")), "malformed"),
        (pb.Frame(find_node=pb.FindNode(query_id=b"q" * 16, target=b"t")), "malformed"),
        (pb.Frame(message=pb.Message(recipient=b"r", sealed=b"s")), "malformed"),
        (pb.Frame(message=pb.Message(recipient=b"r" * 20, sealed=b"s")), "bad_size"),
        (pb.Frame(ack=pb.Ack(message_id=b"m")), "malformed"),
        (pb.Frame(receipt=pb.Receipt(ids=[b""] * 513)), "malformed"),
    ]
    for frame, _ in cases:
        b.receive_datagram(a._codec.encode_frame(b.identity.key, frame, now), ep, now)
    expected: dict[str, int] = {}
    for _, why in cases:
        expected[why] = expected.get(why, 0) + 1
    for why, count in expected.items():
        assert b.stats.rejected[why] == count, why
    b.receive_datagram(b"\x00garbage", ep, now)
    b.receive_datagram(bytes(1300), ep, now)
    assert b.stats.rejected["malformed"] == expected["malformed"] + 1
    assert b.stats.rejected["oversized"] == 1


def test_message_with_a_tampered_seal_is_refused_by_the_recipient(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "x", T0)
    (entry,) = stored_messages(a)
    msg = pb.Message()
    msg.CopyFrom(message_of(entry))
    msg.sealed = bytes([msg.sealed[0] ^ 1]) + msg.sealed[1:]
    b.receive_datagram(forge_frame(a, b, pb.Frame(message=msg), T0), wire.endpoint(a), T0)
    assert b.stats.rejected["bad_seal"] == 1
    assert wire.texts(b) == []


def test_replayed_datagram_is_counted(wire: Wire) -> None:
    a, b = wire.add(1), wire.add(3)
    wire.connect(a, b)
    data = a._codec.encode_frame(b.identity.key, pb.Frame(ping=pb.Ping(challenge=b"c" * 16)), T0)
    b.receive_datagram(data, wire.endpoint(a), T0)
    b.receive_datagram(data, wire.endpoint(a), T0)
    assert b.stats.rejected["replay"] == 1


def test_a_peer_flooding_messages_hits_the_store_limits(wire: Wire) -> None:
    config = NodeConfig(store_per_peer_bytes=50_000, store_rate_per_s=1e9, store_burst=1e9)
    a, r = wire.add(1, config), wire.add(2, config)
    wire.connect(a, r)
    b = Identity.from_seed(b"\x33" * 32)
    for i in range(60):
        a.send_text(b.public, f"flood {i}", T0)
        for data, dest in a.datagrams_to_send():
            if dest == wire.endpoint(r):
                r.receive_datagram(data, wire.endpoint(a), T0)
    assert r.status().stored_bytes <= 50_000
    assert r.stats.rejected["peer_quota"] > 0 or r.stats.rejected["target_quota"] > 0
