"""A first contact's FindNode is answered at once within the anti-amplification budget
(docs/PROTOCOL.md, "5.1 Address validation", "First contact").

Before, a FindNode from a pair not validated yet waited for a validation round trip
(Ping, Pong, then Nodes): 4 datagrams and two round trips where Kademlia needs 2 and
one. Now the answer goes at once when it fits the 3x credit of its (key, endpoint) pair
(QUIC's rule, RFC 9000 section 8.1), which a FindNode padded to
``FIND_NODE_FIRST_CONTACT_BYTES`` always has. What the tests hold: the sizes that make
this true, the answer at once, the fallback to validation when the answer does not
fit, that no forged source (one or many) gets more than 3x what was sent from it, that
the answered node is challenged only when our table has room for it, and that lookups
pad exactly the FindNodes to nodes outside our table.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import AMPLIFICATION_FACTOR
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.lookup import FIND_NODE_FIRST_CONTACT_BYTES, FIND_NODE_PADDING
from comm_tui.protocol.node import FIND_NODE_ANSWER_NODES, Node, nodes_frame, parse_node_info
from comm_tui.protocol.routing import Endpoint, RoutingTable
from tests.wire import T0, Wire, peer_addresses

NOW = 1_800_000_000.0
QUERY_ID = b"q" * 16


def _identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"first contact %d" % n).digest())


def _v6(n: int) -> Endpoint:
    """An IPv6 endpoint in its own /48 (the table's per-network limit never applies)."""
    return (f"2001:db8:{n:x}::1", 40000 + n)


def _relay(fillers: int) -> Node:
    """A node whose table holds ``fillers`` responsive nodes at IPv6 endpoints: its
    answers are the largest an honest node sends."""
    node = Node(_identity(0), NOW, rng=random.Random(0))
    for n in range(1, fillers + 1):
        key = _identity(n).key
        node._table.observe(key, address_of(key), _v6(n), NOW)
    return node


def _find_node(codec: Codec, to: Node, *, padded: bool, target: bytes = b"t" * 20) -> bytes:
    find = pb.FindNode(query_id=QUERY_ID, target=target)
    if padded:
        find.padding = FIND_NODE_PADDING
    return codec.encode_frame(to.identity.key, pb.Frame(find_node=find), NOW)


def _stranger(relay: Node, *, room: bool, start: int = 1000) -> Codec:
    """A fresh key the relay's table has room for (or, ``room=False``, has none for)."""
    for n in range(start, start + 10_000):
        identity = _identity(n)
        if relay._table.has_room(identity.address, _v6(n)) == room:
            return Codec(identity)
    raise AssertionError("no such key")


def _sent(relay: Node, codec: Codec) -> list[tuple[str, int, Endpoint]]:
    """What the relay sent: each datagram's frame kind, size and destination."""
    out = []
    for data, endpoint in relay.datagrams_to_send():
        frame = codec.decode(data, NOW).frame
        assert frame is not None
        out.append((frame.WhichOneof("body") or "", len(data), endpoint))
    return out


def test_a_padded_find_node_covers_the_largest_answer() -> None:
    """The largest Nodes answer (8 IPv6 entries at the largest port, the client flag and a
    cookie) fits in 3x a padded FindNode that has neither: the padding is enough."""
    sender, receiver = Codec(_identity(1)), _identity(2)
    info = pb.NodeInfo(key=b"\xff" * 32, ip=b"\xff" * 16, port=65535)
    largest = pb.Frame(
        nodes=pb.Nodes(query_id=QUERY_ID, nodes=[info] * FIND_NODE_ANSWER_NODES), client=True
    )
    answer = sender.encode_frame(receiver.key, largest, NOW, cookie=b"c" * 16)
    find = pb.Frame(find_node=pb.FindNode(query_id=QUERY_ID, target=b"t" * 20))
    bare = sender.encode_frame(receiver.key, find, NOW)
    find.find_node.padding = FIND_NODE_PADDING
    padded = sender.encode_frame(receiver.key, find, NOW)
    assert len(padded) == FIND_NODE_FIRST_CONTACT_BYTES == 200
    assert len(answer) == 585 <= AMPLIFICATION_FACTOR * len(padded)
    # Unpadded, the answer would not fit: that is what the padding is for.
    assert len(answer) > AMPLIFICATION_FACTOR * len(bare)


def test_nodes_frame_writes_what_protobuf_writes() -> None:
    infos = [
        pb.NodeInfo(key=bytes([n]) * 32, ip=bytes([n]) * (4 if n % 2 else 16), port=n * 999)
        for n in range(1, FIND_NODE_ANSWER_NODES + 1)
    ]
    for count in (0, 1, FIND_NODE_ANSWER_NODES):
        chosen = infos[:count]
        expected = pb.Frame(nodes=pb.Nodes(query_id=QUERY_ID, nodes=chosen))
        written = nodes_frame(QUERY_ID, [i.SerializeToString() for i in chosen])
        assert written == expected.SerializeToString()


def test_a_padded_first_contact_is_answered_at_once_and_not_challenged_without_room() -> None:
    relay = _relay(60)
    stranger = _stranger(relay, room=False)
    query = _find_node(stranger, relay, padded=True)
    relay.receive_datagram(query, ("198.51.100.7", 5000), NOW)
    sent = _sent(relay, stranger)
    assert [kind for kind, _, _ in sent] == ["nodes"]
    assert sent[0][1] <= AMPLIFICATION_FACTOR * len(query)
    assert relay.stats.withheld == 0 and not relay._deferred


def test_a_padded_first_contact_with_room_in_our_table_is_answered_and_challenged() -> None:
    relay = _relay(3)
    stranger = _stranger(relay, room=True)
    relay.receive_datagram(_find_node(stranger, relay, padded=True), ("198.51.100.7", 5000), NOW)
    assert [kind for kind, _, _ in _sent(relay, stranger)] == ["nodes", "ping"]


def test_an_answer_that_does_not_fit_waits_for_validation() -> None:
    """Unpadded (120 bytes: 360 of credit), a full answer (8 IPv6 entries) does not fit:
    the request is held, the address challenged, and answered once the pong is back."""
    relay = _relay(60)
    stranger = _stranger(relay, room=False)
    at = ("198.51.100.7", 5000)
    relay.receive_datagram(_find_node(stranger, relay, padded=False), at, NOW)
    frames = [stranger.decode(d, NOW).frame for d, _ in relay.datagrams_to_send()]
    assert [f.WhichOneof("body") for f in frames if f is not None] == ["ping"]
    ping = frames[0]
    assert ping is not None and relay.stats.withheld == 0
    pong = pb.Frame(pong=pb.Pong(challenge=ping.ping.challenge))
    relay.receive_datagram(stranger.encode_frame(relay.identity.key, pong, NOW), at, NOW)
    kinds = [kind for kind, _, _ in _sent(relay, stranger)]
    assert kinds == ["nodes"]


def test_forged_sources_get_no_more_than_three_times_what_each_sent() -> None:
    """An attacker writes victims' addresses as the source of FindNodes, padded and not,
    from fresh keys and from one: nothing the relay sends to any of them, at any moment,
    exceeds 3x the bytes that arrived from it, and so neither does the sum."""
    relay = _relay(60)
    rng = random.Random(7)
    received: dict[Endpoint, int] = {}
    sent: dict[Endpoint, int] = {}
    one_key = Codec(_identity(999))
    for n in range(300):
        victim = (f"203.0.113.{rng.randrange(1, 20)}", 6000)
        codec = one_key if n % 3 == 0 else Codec(_identity(2000 + n))
        data = _find_node(codec, relay, padded=rng.random() < 0.5, target=rng.randbytes(20))
        relay.receive_datagram(data, victim, NOW + n * 0.001)
        received[victim] = received.get(victim, 0) + len(data)
        for out, endpoint in relay.datagrams_to_send():
            sent[endpoint] = sent.get(endpoint, 0) + len(out)
        for endpoint, count in sent.items():
            assert count <= AMPLIFICATION_FACTOR * received[endpoint]
    assert sum(sent.values()) <= AMPLIFICATION_FACTOR * sum(received.values())
    # Answers did go out (the rule is not "never answer"), and some were held back.
    assert relay.stats.sent_by_kind["nodes"] > 0 and relay.stats.sent_by_kind["ping"] > 0


def test_has_room_says_what_observe_would_do() -> None:
    own = b"\x00" * 20
    table = RoutingTable(own, k=2)
    far = [bytes([0x80 | n]) + bytes(19) for n in range(4)]  # one bucket: first bit 1
    near = bytes([0x01]) + bytes(19)
    assert not table.has_room(own, _v6(0))
    assert table.has_room(far[0], _v6(1))  # the only bucket, splittable
    for n, address in enumerate(far[:2]):
        table.observe(address, address, _v6(n), NOW)
    table.observe(near, near, _v6(9), NOW)  # splits: the far bucket is full, not last
    assert table.has_room(far[0], _v6(1))  # in the table already
    assert not table.has_room(far[2], _v6(2))  # full of responsive nodes
    for _ in range(3):
        table.record_failure(far[0], NOW)
    assert table.has_room(far[2], _v6(2)) == (far[0] in table)


def test_has_room_counts_the_networks_share_of_a_bucket() -> None:
    own = b"\x00" * 20
    table = RoutingTable(own, k=8)
    addresses = [bytes([0x80 | n]) + bytes(19) for n in range(4)]
    table.observe(addresses[0], addresses[0], ("198.51.100.1", 1), NOW)
    table.observe(addresses[1], addresses[1], ("198.51.100.2", 1), NOW)
    table.observe(b"\x01" + bytes(19), b"\x01" + bytes(19), _v6(1), NOW)
    assert not table.has_room(addresses[2], ("198.51.100.3", 1))  # its /24 holds 2
    assert table.has_room(addresses[2], ("192.0.2.3", 1))


def test_lookups_pad_the_find_nodes_to_nodes_outside_our_table() -> None:
    """a knows b (both tables), b knows c (put in its table, so c never joined and
    knows nobody); a's lookup meets c through b. The FindNode to b goes bare, the one to
    c padded; c answers it at once (its first datagram to a is the Nodes answer, no
    ping before it) and challenges a after, having room for it."""
    wire = Wire()
    a, b, c = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(a, b, T0)
    b._table.observe(c.identity.key, c.address, wire.endpoint(c), T0)
    assert c.address not in peer_addresses(a) and a.address not in peer_addresses(c)
    readers: dict[Endpoint, Codec] = {}
    find_sizes: dict[Endpoint, list[int]] = {}
    c_to_a: list[str] = []

    def watch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        # A codec of its own (own replay window), so the real delivery is not a replay.
        reader = readers.setdefault(dest, Codec(wire.nodes[dest].identity))
        frame = reader.decode(data, T0).frame
        assert frame is not None
        if source == wire.endpoint(a) and frame.HasField("find_node"):
            find_sizes.setdefault(dest, []).append(len(data))
        if source == wire.endpoint(c) and dest == wire.endpoint(a):
            c_to_a.append(frame.WhichOneof("body") or "")
        return False

    wire.drop = watch
    a.lookup(c.address, T0)
    wire.pump(T0)
    to_b = find_sizes[wire.endpoint(b)]
    assert to_b and max(to_b) < FIND_NODE_FIRST_CONTACT_BYTES
    assert find_sizes[wire.endpoint(c)] == [FIND_NODE_FIRST_CONTACT_BYTES]
    assert c_to_a[:2] == ["nodes", "ping"]
    assert a.address in peer_addresses(c)


def test_the_parsed_nodes_memo_is_bounded_and_parses_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_parse_nodes`` memoizes entries by their fields: past ``NODE_INFO_MEMO`` it starts
    again, and what it returns is ``parse_node_info``'s, our own entry and junk left out."""
    monkeypatch.setattr(node_module, "NODE_INFO_MEMO", 16)
    relay = _relay(0)
    key = _identity(5).key
    own = pb.NodeInfo(key=relay.identity.key, ip=bytes([10, 0, 0, 1]), port=1)
    junk = pb.NodeInfo(key=key, ip=b"\x01\x02\x03", port=1)
    ip = bytes([10, 0, 0, 1])
    for _ in range(3):  # 40 entries a round, through a memo of 16
        for start in range(1, 41, 8):
            infos = [pb.NodeInfo(key=key, ip=ip, port=p) for p in range(start, start + 8)]
            answer = pb.Nodes(query_id=QUERY_ID, nodes=[*infos, own, junk])
            found = relay._parse_nodes(answer, ("10.0.0.2", 4000))  # a LAN answerer
            assert found == [parse_node_info(i) for i in infos]
            assert len(relay._candidates) <= 16


def test_the_written_nodes_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "NODE_INFO_MEMO", 4)
    relay = _relay(30)
    asker = Codec(_identity(77))
    for n in range(10):
        find = pb.FindNode(query_id=QUERY_ID, target=_identity(100 + n).address)
        answer = relay._nodes_answer(asker.identity.public, find)
        nodes = pb.Frame.FromString(answer).nodes.nodes
        assert len(nodes) == FIND_NODE_ANSWER_NODES
        assert len(relay._node_infos) <= 4
