"""What relays learn of a text (issue 9): no sender, no send time, no length.

- Metadata: every datagram every node handles in a simulator run, opened with that
  node's own keys as it does, carries no author key or address outside the sealed part,
  only whole-hour expiries, and sealed parts of one size.
- Acks travel back the way the message came (docs/PROTOCOL.md, "7.3 Acks"), also to a
  sender that was stopped and restarted meanwhile, with a relay restarted in between.
- The stem (docs/PROTOCOL.md, "7.2"): the sender's first attempt goes to one random peer
  (and to the recipient when known), a stem relay forwards to one random peer or relays
  normally, retries relay normally, and a stem peer that drops a text only delays it.
- Coarse expiry: whole hours, jittered, the same for every part; finer ones are refused.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.seal import MESSAGE_ID_BYTES, message_id
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec, Rejected
from comm_tui.protocol.events import TextReceived, TextStateChanged
from comm_tui.protocol.letters import CHUNK_BYTES
from comm_tui.protocol.node import (
    DEFAULT_TTL_S,
    EXPIRY_UNIT_MS,
    SEALED_BYTES,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.adversary import DropAdversary
from comm_tui.sim.network import SimNetwork, SimNode
from comm_tui.sim.topology import warm_start
from tests.wire import T0, Wire, peer_addresses

# Frames that carry routing state or network records: they name nodes as nodes (every
# node's key is in many routing tables and lookups; a prekey record names its owner, and
# a record request the owner wanted), never as the author of a text.
ROUTING_FRAMES = frozenset({"find_node", "nodes", "ping", "pong", "record", "get_record"})


def states(sim: SimNode, text_id: bytes) -> list[str]:
    return [e.state for e in sim.events if isinstance(e, TextStateChanged) and e.text_id == text_id]


def only_known_fields(message: pb.Message | pb.Ack) -> bool:
    """Does ``message`` carry nothing but the fields its schema names?"""
    fields = {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}
    return type(message)(**fields).SerializeToString() == message.SerializeToString()


def received(sim: SimNode) -> list[str]:
    return [e.text for e in sim.events if isinstance(e, TextReceived)]


# ---------------------------------------------------------------- metadata


def test_relays_see_no_sender_no_send_time_and_no_length() -> None:
    net = SimNetwork(21)
    nodes = [net.add_node() for _ in range(40)]
    warm_start(net, nodes, random.Random(21))
    net.run_for(5.0)
    codecs = {sim.endpoint: Codec(sim.node.identity) for sim in nodes}
    handled: list[tuple[Endpoint, Endpoint, pb.Frame]] = []

    def tap(data: bytes, source: Endpoint, dest: Endpoint) -> None:
        try:
            decoded = codecs[dest].decode(data, net.now)
        except Rejected:
            return
        if decoded.frame is not None:
            handled.append((source, dest, decoded.frame))

    net.tap = tap
    rng = random.Random(5)
    author_of: dict[bytes, tuple[bytes, bytes]] = {}  # part id -> author's key, address
    texts: dict[bytes, SimNode] = {}
    sizes = [5, CHUNK_BYTES * 3 + 7, 1, CHUNK_BYTES]
    for i in range(24):
        sender, recipient = rng.sample(nodes, 2)
        body = chr(ord("a") + i % 26) * sizes[i % len(sizes)]
        ids: list[bytes] = []
        public = recipient.node.identity.public
        net.do(sender, lambda n, p=public, b=body, o=ids: o.append(n.send_text(p, b, net.now)))
        texts[ids[0]] = sender
        for entry in sender.node._store:
            if entry.own_text_id == ids[0]:
                author_of[entry.item_id] = (sender.node.identity.key, sender.node.address)
        net.run_for(0.3)
    net.run_for(60.0)
    assert all(states(sender, tid)[-1] == "delivered" for tid, sender in texts.items())

    def assert_anonymous(item_id: bytes, clear: bytes) -> None:
        key, address = author_of[item_id]
        assert key not in clear and address not in clear

    kinds: Counter[str] = Counter()
    expiries_by_text: dict[bytes, set[int]] = {}
    for _, _, frame in handled:
        body = frame.WhichOneof("body") or ""
        kinds[body] += 1
        clear = pb.Frame()
        clear.CopyFrom(frame)
        if body == "message":
            msg = clear.message
            item_id = message_id(msg.recipient, msg.expires_ms, msg.sealed)
            assert len(msg.sealed) == SEALED_BYTES  # every part, every text: one size
            assert msg.expires_ms % EXPIRY_UNIT_MS == 0
            assert only_known_fields(msg)  # no hop count or any other field left over
            expiries_by_text.setdefault(msg.recipient, set()).add(msg.expires_ms)
            msg.sealed = b""
            assert_anonymous(item_id, clear.SerializeToString())
        elif body == "ack":
            assert clear.ack.expires_ms % EXPIRY_UNIT_MS == 0
            assert only_known_fields(clear.ack)
            assert_anonymous(clear.ack.message_id, clear.SerializeToString())
        elif body == "receipt":
            for key in clear.receipt.ids:
                if key[0] == Kind.RECORD:
                    continue  # a record is its owner's, by design (section 8a)
                assert_anonymous(key[1 : 1 + MESSAGE_ID_BYTES], clear.SerializeToString())
        elif body not in ROUTING_FRAMES:
            # Anything else (a Fetch) names no author of any text.
            for key, address in author_of.values():
                assert key not in clear.SerializeToString()
                assert address not in clear.SerializeToString()
    # The run exercised what it checks: texts, several parts, acks and receipts.
    assert kinds["message"] >= 24 and kinds["ack"] >= 24 and kinds["receipt"] >= 24
    # Expiries are whole hours: a recipient's texts of one run share at most two.
    assert all(len(e) <= 2 for e in expiries_by_text.values())


# ---------------------------------------------------------------- acks go back


def test_a_stopped_sender_restarts_and_learns_of_delivery_from_a_restarted_relay() -> None:
    """docs/PROTOCOL.md, "7.3 Acks": the relay remembers, across its own restart, who
    handed it the message, and hands the ack back as soon as the sender is back."""
    config = NodeConfig(backoff_base_s=1.0, backoff_max_s=8.0, max_relay_attempts=4)
    wire = Wire()
    a, r, b = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    text_id = a.send_text(b.identity.public, "ack me later", T0)
    wire.settle(T0)  # r's receipt goes RECEIPT_DELAY_S later
    assert wire.states(a, text_id) == ["sent"]
    a_blobs = list(wire.persisted[wire.endpoint(a)].values())
    wire.offline = {wire.endpoint(a)}  # A stops; B comes back
    b.lookup(b.address, T0 + 1)
    wire.pump(T0 + 1)
    wire.run(T0 + 2, T0 + 60, step=1.0)  # R's ack retries to A all fail, and stop
    assert [t.text for t in wire.texts(b)] == ["ack me later"]
    (ack,) = [e for e in r._store if e.kind is Kind.ACK]
    assert not ack.settled and ack.origin_key == a.identity.key

    restarted_r = Node(r.identity, T0 + 61, config=config, rng=random.Random(7))
    restarted_r.restore(wire.persisted[wire.endpoint(r)].values(), T0 + 61)
    wire.attach(restarted_r, 2)
    restarted_a = Node(a.identity, T0 + 62, config=config, rng=random.Random(8))
    restarted_a.restore(a_blobs, T0 + 62)
    wire.attach(restarted_a, 1)
    wire.events[wire.endpoint(restarted_a)].clear()
    wire.offline.clear()
    # A reconnects; its own retries wait out the restore grace, so what tells it is R
    # pushing the ack back to it the moment it knows A again.
    wire.connect(restarted_a, restarted_r, T0 + 62)
    assert wire.states(restarted_a, text_id) == ["delivered"]
    assert restarted_r.stats.pushed_on_join >= 1


def test_the_ack_reaches_every_holder_of_the_message_back_along_its_way() -> None:
    """A chain S -> R1 -> R2 -> B: the ack goes back R2 -> R1 -> S (no destination in it),
    and every relay that held the message stops relaying it."""
    wire = Wire()
    s, r1, r2, b = (wire.add(i) for i in (1, 2, 3, 4))
    for x, y in ((s, r1), (r1, r2), (r2, b)):
        wire.connect(x, y)
    msg_ids: list[bytes] = []
    wire.offline.add(wire.endpoint(b))
    text_id = s.send_text(b.identity.public, "along the chain", T0)
    msg_ids = [e.item_id for e in s._store if e.kind is Kind.MESSAGE]
    wire.pump(T0)
    holders = [n for n in (r1, r2) if n._store.get(Kind.MESSAGE, msg_ids[0]) is not None]
    assert holders, "no relay took the text"
    wire.offline.clear()
    b.lookup(b.address, T0 + 1)
    wire.pump(T0 + 1)
    wire.run(T0 + 2, T0 + 20)
    assert wire.states(s, text_id)[-1] == "delivered"
    for relay in holders:
        assert relay._store.get(Kind.MESSAGE, msg_ids[0]) is None
        assert relay.stats.acks_seen == 1


# ---------------------------------------------------------------- the stem


def _sim(
    count: int, seed: int, config: NodeConfig | None = None
) -> tuple[SimNetwork, list[SimNode]]:
    net = SimNetwork(seed)
    nodes = [net.add_node(config=config) for _ in range(count)]
    warm_start(net, nodes, random.Random(seed))
    net.run_for(5.0)
    return net, nodes


def _messages(
    sent: list[tuple[Endpoint, Endpoint, pb.Frame]], source: Endpoint
) -> list[tuple[Endpoint, pb.Message]]:
    return [(d, f.message) for s, d, f in sent if s == source and f.WhichOneof("body") == "message"]


def _tap_frames(net: SimNetwork, nodes: list[SimNode]) -> list[tuple[Endpoint, Endpoint, pb.Frame]]:
    codecs = {sim.endpoint: Codec(sim.node.identity) for sim in nodes}
    seen: list[tuple[Endpoint, Endpoint, pb.Frame]] = []

    def tap(data: bytes, source: Endpoint, dest: Endpoint) -> None:
        try:
            frame = codecs[dest].decode(data, net.now).frame
        except Rejected:
            return
        if frame is not None:
            seen.append((source, dest, frame))

    net.tap = tap
    return seen


def test_the_first_attempt_goes_to_one_random_peer_in_the_stem_and_the_recipient() -> None:
    net, nodes = _sim(30, seed=31)
    sent = _tap_frames(net, nodes)
    sender = nodes[0]
    # A recipient the sender knows, and one it does not.
    known = next(s for s in nodes[1:] if s.node.address in peer_addresses(sender.node))
    unknown = next(s for s in nodes[1:] if s.node.address not in peer_addresses(sender.node))
    for recipient, direct in ((known, 1), (unknown, 0)):
        sent.clear()
        net.do(sender, lambda n, r=recipient: n.send_text(r.node.identity.public, "x", net.now))
        first = _messages(sent, sender.endpoint)
        stem = [d for d, m in first if m.stem]
        assert len(stem) == 1 and stem[0] != recipient.endpoint
        assert [d for d, m in first if not m.stem] == [recipient.endpoint] * direct
    net.run_for(30.0)
    assert received(known) == received(unknown) == ["x"]


def test_a_stem_relay_forwards_to_one_other_peer_or_relays_normally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the forward probability at 1 every stem hop forwards to one peer, never back;
    at 0 the first stem peer relays it normally (several copies, none in the stem)."""
    for forward, expect_stem in ((1.0, True), (0.0, False)):
        monkeypatch.setattr(node_module, "STEM_FORWARD", forward)
        net, nodes = _sim(30, seed=41)
        sent = _tap_frames(net, nodes)
        sender, recipient = nodes[0], nodes[-1]
        public = recipient.node.identity.public
        net.do(sender, lambda n, p=public, t=net.now: n.send_text(p, "y", t))
        ((hop, _),) = [(d, m) for d, m in _messages(sent, sender.endpoint) if m.stem]
        net.run_for(0.5)
        out = _messages(sent, hop)
        if expect_stem:
            ((next_hop, msg),) = out[:1]
            assert msg.stem and next_hop != sender.endpoint
            # Each hop forwards once, in the stem; it relays normally only once the item
            # came back to it (a stem that looped, or a fluff copy counting on it).
            assert sum(m.stem for _, m in out) == 1
            came_back = sum(1 for _, d, f in sent if d == hop and f.WhichOneof("body") == "message")
            assert all(m.stem for _, m in out) or came_back > 1
        else:
            assert out and not any(m.stem for _, m in out)
        net.run_for(30.0)
        assert received(recipient) == ["y"]


def test_a_stem_peer_that_drops_the_text_only_delays_it() -> None:
    """The sender's first stem peer drops the text (with a receipt, so it looks held): the
    sender's retry goes in the stem to another random peer, and the text arrives."""
    net, nodes = _sim(30, seed=51)
    sender = nodes[0]
    recipient = next(s for s in nodes[1:] if s.node.address not in peer_addresses(sender.node))
    sent = _tap_frames(net, nodes)
    text_id: list[bytes] = []
    public = recipient.node.identity.public
    net.do(sender, lambda n: text_id.append(n.send_text(public, "z", net.now)))
    ((first_hop, _),) = _messages(sent, sender.endpoint)
    dropper = DropAdversary(net, net.nodes[first_hop], seed=1)  # before the copy lands
    net.run_for(60.0)
    assert dropper.swallowed >= 1
    assert received(recipient) == ["z"]
    assert states(sender, text_id[0]) == ["sent", "delivered"]
    stems = [d for d, m in _messages(sent, sender.endpoint) if m.stem]
    assert len(stems) >= 2 and set(stems) != {first_hop}


def test_every_attempt_of_the_sender_goes_in_the_stem_to_a_fresh_random_peer() -> None:
    """Retries sent straight from the sender to the recipient's neighbourhood would single
    it out there whenever the recipient is offline (docs/PROTOCOL.md, "7.2")."""
    net, nodes = _sim(30, seed=61)
    sender = nodes[0]
    recipient = next(s for s in nodes[1:] if s.node.address not in peer_addresses(sender.node))
    net.set_online(recipient, False)
    sent = _tap_frames(net, nodes)
    public = recipient.node.identity.public
    net.do(sender, lambda n: n.send_text(public, "are you there?", net.now))
    net.run_for(31.0)  # attempts at 0, 2, 6, 14 and 30 s
    copies = _messages(sent, sender.endpoint)
    assert len(copies) == 5
    assert all(m.stem for _, m in copies)
    assert len({d for d, _ in copies}) >= 3


# ---------------------------------------------------------------- coarse expiry


def test_expiries_are_whole_hours_jittered_and_shared_by_every_part() -> None:
    wire = Wire()
    node = wire.add(1)
    recipient = Identity.from_seed(b"\x09" * 32).public
    seen: set[int] = set()
    for i in range(40):
        now = T0 + 1234.567 + i * 0.001
        node.send_text(recipient, "p" * (CHUNK_BYTES * 2 + 1), now)
        parts = [e for e in node._store if e.kind is Kind.MESSAGE and e.stored_at == now]
        expiries = {e.expires_ms for e in parts}
        assert len(parts) == 3 and len(expiries) == 1
        (expiry,) = expiries
        assert expiry % EXPIRY_UNIT_MS == 0
        latest = (int((now + DEFAULT_TTL_S) * 1000) // EXPIRY_UNIT_MS) * EXPIRY_UNIT_MS
        assert expiry in (latest, latest - EXPIRY_UNIT_MS)
        seen.add(expiry)
    assert len(seen) == 2  # both jitters occur


def test_an_expiry_that_is_not_a_whole_hour_is_refused() -> None:
    wire = Wire()
    relay, peer = wire.add(1), wire.add(2)
    wire.connect(peer, relay)
    base = int(T0 * 1000) + 24 * EXPIRY_UNIT_MS
    for i, expires_ms in enumerate((base + 1, base - 1, base + EXPIRY_UNIT_MS // 2, base)):
        msg = pb.Message(
            recipient=bytes([i]) * 20, expires_ms=expires_ms, sealed=bytes([i]) * SEALED_BYTES
        )
        data = peer._codec.encode_frame(relay.identity.key, pb.Frame(message=msg), T0 + i)
        relay.receive_datagram(data, wire.endpoint(peer), T0 + i)
    assert relay.stats.rejected["fine_expiry"] == 3
    assert [e.expires_ms for e in relay._store] == [base]


def test_the_ack_also_goes_to_the_other_holders_of_the_message() -> None:
    """A relay holding a message with two holders (the peer it took it from, and a peer
    it relayed it to that handed a copy back: a holder, as it was sent the item) sends
    the ack, come from a third, back to both."""
    wire = Wire()
    a, r, x, y = (wire.add(i) for i in (1, 2, 3, 4))
    for peer in (a, x, y):
        wire.connect(peer, r)
    b = Identity.from_seed(b"\x06" * 32)  # x and y nearer it than r: r relays to both
    msg = pb.Message(
        recipient=b.address,
        expires_ms=int(T0 * 1000) + 24 * EXPIRY_UNIT_MS,
        sealed=b"s" * SEALED_BYTES,
    )
    item_id = message_id(msg.recipient, msg.expires_ms, msg.sealed)
    data = a._codec.encode_frame(r.identity.key, pb.Frame(message=msg), T0 + 1)
    r.receive_datagram(data, wire.endpoint(a), T0 + 1)
    relayed = {dest for _, dest in r.datagrams_to_send()}
    assert {wire.endpoint(x), wire.endpoint(y)} <= relayed
    data = x._codec.encode_frame(r.identity.key, pb.Frame(message=msg), T0 + 1)
    r.receive_datagram(data, wire.endpoint(x), T0 + 1)
    r.datagrams_to_send()
    ack = sign_ack(b, item_id, msg.expires_ms)
    r.receive_datagram(
        y._codec.encode_frame(r.identity.key, pb.Frame(ack=ack), T0 + 2), wire.endpoint(y), T0 + 2
    )
    acked = [
        dest
        for data, dest in r.datagrams_to_send()
        if (frame := Codec(wire.nodes[dest].identity).decode(data, T0 + 2).frame) is not None
        and frame.WhichOneof("body") == "ack"
    ]
    assert sorted(acked) == sorted([wire.endpoint(a), wire.endpoint(x)])
    (entry,) = r._store
    assert entry.kind is Kind.ACK and not entry.settled


def test_a_stem_that_loops_back_is_relayed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hop forwards in the stem: the walk comes back to a node that only forwarded
    it, which relays it normally then and there; the text arrives on its first attempt,
    not at the sender's retry 2 s later (docs/PROTOCOL.md, "7.2")."""
    monkeypatch.setattr(node_module, "STEM_FORWARD", 1.0)
    net, nodes = _sim(30, seed=41)
    sender = nodes[0]
    recipient = next(s for s in nodes[1:] if s.node.address not in peer_addresses(sender.node))
    public = recipient.node.identity.public
    net.do(sender, lambda n, p=public, t=net.now: n.send_text(p, "loop", t))
    net.run_for(1.5)
    assert received(recipient) == ["loop"]


# ---------------------------------------------------------------- fan-out bounds


def _sender_and_peers(config: NodeConfig) -> tuple[Wire, Node, list[tuple[Endpoint, Endpoint]]]:
    """A sender that knows more peers than its ``k`` (each peer knows only it), and a
    record of who sends a message frame to whom."""
    wire = Wire()
    sender = wire.add(1, config)
    for seed in range(20, 34):
        peer = wire.add(seed)
        peer.bootstrap(wire.endpoint(sender), T0)  # buckets of k: not every peer gets in
        wire.pump(T0)
    assert sender.peer_count > config.k
    codecs = {wire.endpoint(n): Codec(n.identity) for n in wire.nodes.values()}
    messages: list[tuple[Endpoint, Endpoint]] = []

    def tap(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        frame = codecs[dest].decode(data, T0).frame
        if frame is not None and frame.WhichOneof("body") == "message":
            messages.append((source, dest))
        return False

    wire.drop = tap
    return wire, sender, messages


def test_with_no_stem_peer_our_text_goes_to_sender_fanout_nearest_more_on_each_retry() -> None:
    """docs/PROTOCOL.md, "7.2": with no peer to stem to (every peer missed a query), the
    sender hands its text to the ``sender_fanout`` nodes nearest the recipient, one more on
    every retry up to k; never to all k at once, which would show more nodes the text
    first from its sender."""
    config = NodeConfig(k=4, sender_fanout=1, backoff_base_s=1.0, backoff_max_s=8.0)
    wire, sender, messages = _sender_and_peers(config)
    for peer in list(sender.peers()):
        sender._table.record_failure(peer.address, T0)  # out of the stem, still usable
    recipient = Identity.from_seed(bytes([99]) * 32).public
    order = sorted(
        sender.peers(),
        key=lambda n: int.from_bytes(n.address) ^ int.from_bytes(recipient.address),
    )
    nearest = [n.endpoint for n in order]
    wire.offline.update(nearest)  # nobody answers: every attempt is a retry
    sender.send_text(recipient, "x", T0)
    wire.pump(T0)
    assert [d for _, d in messages] == nearest[:1]
    messages.clear()
    # The first retry (backoff 1 s) widens to two, but skips the nearest: its receipt may
    # still come (RECEIPT_TIMEOUT_S, docs/PROTOCOL.md, "Receipt wait").
    wire.tick(T0 + 1.0)
    assert [d for _, d in messages] == nearest[1:2]
    messages.clear()
    wire.tick(T0 + 3.0)  # the second (2 s later): three, the first two's waits are over
    assert sorted(d for _, d in messages) == sorted(nearest[:3])


def test_the_flood_baseline_sends_to_its_k_nearest_and_no_more() -> None:
    """The "flood" policy (the baseline the benchmarks compare with) sends every item to
    the k nodes nearest its target, not to every node it knows."""
    config = NodeConfig(k=4, policy="flood")
    wire, sender, messages = _sender_and_peers(config)
    recipient = Identity.from_seed(bytes([99]) * 32).public
    order = sorted(
        sender.peers(),
        key=lambda n: int.from_bytes(n.address) ^ int.from_bytes(recipient.address),
    )
    sender.send_text(recipient, "x", T0)
    wire.pump(T0)
    sent_to = [d for s, d in messages if s == wire.endpoint(sender)]
    assert sorted(sent_to) == sorted(n.endpoint for n in order[: config.k])


def test_a_stem_relay_whose_coin_says_stem_forwards_one_stem_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "7.2": a relay that gets a text in the stem forwards it, with
    probability STEM_FORWARD, in the stem again: one copy, flagged stem, to one random
    peer other than the one that handed it over (the fast sibling of the deselected
    simulation; a mutant that ignored the coin lived through the selection)."""
    monkeypatch.setattr(node_module, "STEM_FORWARD", 1.0)
    wire = Wire()
    a, r = wire.add(1), wire.add(2)
    peers = [wire.add(seed) for seed in range(20, 24)]
    wire.connect(a, r)
    for peer in peers:
        wire.connect(peer, r)
    recipient = Identity.from_seed(bytes([99]) * 32).public
    a.send_text(recipient, "x", T0)
    codecs = {wire.endpoint(n): Codec(n.identity) for n in wire.nodes.values()}

    def messages(node: Node) -> list[tuple[bytes, Endpoint, pb.Message]]:
        out = []
        for data, dest in node.datagrams_to_send():
            frame = codecs[dest].decode(data, T0).frame if dest in codecs else None
            if frame is not None and frame.WhichOneof("body") == "message":
                out.append((data, dest, frame.message))
        return out

    ((data, first_hop, message),) = messages(a)
    assert message.stem
    relay = wire.nodes[first_hop]
    relay.receive_datagram(data, wire.endpoint(a), T0)
    forwarded = messages(relay)
    assert [(m.stem, dest != wire.endpoint(a)) for _, dest, m in forwarded] == [(True, True)]


def test_our_own_text_handed_back_in_the_stem_goes_again_at_once() -> None:
    """A stem walk that comes round to the text's sender got nowhere: the sender sends its
    next attempt (a fresh stem) then, not at the retry 2 s later (docs/PROTOCOL.md,
    "7.2"); only in the first attempt, so more keys handing it back cannot push the
    retries back; a copy that is no stem, or from a holder, changes nothing."""
    wire = Wire()
    sender, a, b, c = wire.add(1), wire.add(2), wire.add(3), wire.add(4)
    for peer in (a, b, c):
        wire.connect(sender, peer)
    recipient = Identity.from_seed(b"\x09" * 32).public
    sender.send_text(recipient, "round", T0)
    first = {dest for _, dest in sender.datagrams_to_send()}  # the first attempt
    ((stem_peer,), (one, other)) = (
        [n for n in (a, b, c) if wire.endpoint(n) in first],
        [n for n in (a, b, c) if wire.endpoint(n) not in first],
    )
    (entry,) = sender._own_entries()
    assert isinstance(entry.wire, pb.Message) and entry.attempts == 1
    codecs = {wire.endpoint(n): Codec(n.identity) for n in (a, b, c)}

    def hand_back(peer: Node, stem: bool, now: float) -> list[pb.Frame]:
        msg = pb.Message()
        msg.CopyFrom(entry.wire)
        msg.stem = stem
        data = peer._codec.encode_frame(sender.identity.key, pb.Frame(message=msg), now)
        sender.receive_datagram(data, wire.endpoint(peer), now)
        frames = [codecs[dest].decode(d, now).frame for d, dest in sender.datagrams_to_send()]
        return [f for f in frames if f is not None and f.WhichOneof("body") == "message"]

    assert hand_back(one, stem=False, now=T0 + 0.1) == []  # fluff: no loop
    receipt = pb.Frame(receipt=pb.Receipt(ids=[entry.key]))
    data = stem_peer._codec.encode_frame(sender.identity.key, receipt, T0 + 0.12)
    sender.receive_datagram(data, wire.endpoint(stem_peer), T0 + 0.12)
    assert stem_peer.address in entry.holders
    assert hand_back(stem_peer, stem=True, now=T0 + 0.15) == []  # a holder: no loop
    (again,) = hand_back(one, stem=True, now=T0 + 0.2)
    assert again.message.stem and entry.attempts == 2  # a new attempt, in the stem
    # Its next retry is the second attempt's: twice the base backoff after this one.
    assert entry.next_at == pytest.approx(T0 + 0.2 + 2 * NodeConfig().backoff_base_s)
    assert hand_back(other, stem=True, now=T0 + 0.3) == []  # once per text
    assert entry.attempts == 2
