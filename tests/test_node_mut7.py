"""Rules of the node that the seventh mutation round found no test for (bench/MUTATION.md,
"Seventh round (h-mut7)"): each test here kills a mutant of ``protocol/node.py`` that
every selected test let live.
"""

from __future__ import annotations

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.events import PeerAdded, PeerRemoved
from comm_tui.protocol.node import (
    DEFERRED_PAIRS_MAX,
    DEFERRED_PER_NETWORK,
    HANDSHAKE_INTERVAL_S,
    HANDSHAKE_PEERS_MAX,
    HANDSHAKE_RATE_PER_S,
    QUERY_TIMEOUT_S,
    RECEIPT_DELAY_S,
    RECEIPT_TIMEOUT_S,
    Node,
    NodeConfig,
)
from comm_tui.protocol.reachability import ATTACH_RELAYS
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from tests.natwire import NatWire
from tests.test_punch import Net
from tests.wire import T0, Wire

# Retries far off, so that only what a test does moves datagrams in its window.
SLOW = NodeConfig(backoff_base_s=600.0, backoff_max_s=600.0)


def _messages(node: Node) -> list[Entry]:
    return [e for e in node._store if e.kind is Kind.MESSAGE]


def _bodies(wire: Wire, node: Node, to: Node, now: float) -> list[str]:
    """The kinds of frame ``node`` queued for ``to``, read with a fresh codec."""
    codec = Codec(to.identity)
    dest = wire.endpoint(to)
    return [
        frame.WhichOneof("body")
        for data, endpoint in node.datagrams_to_send()
        if endpoint == dest and (frame := codec.decode(data, now).frame) is not None
    ]


def test_an_ack_ends_the_receipt_wait_of_the_peer_that_sent_it() -> None:
    """docs/PROTOCOL.md, "7.2", "Receipt wait", and "7.3 Acks": the recipient answers the
    last part of a text with the ack, not a receipt; the ack ends our wait for that
    peer's receipt of the message, so the recipient that delivered it counts no failure
    when the wait would have run out (else every text sent straight to its recipient
    marked the recipient failing, three of them making it bad)."""
    wire = Wire()
    a, b = wire.add(1, SLOW), wire.add(2, SLOW)
    wire.connect(a, b)
    text_id = a.send_text(b.identity.public, "straight to b", T0)
    wire.pump(T0)
    assert [t.text for t in wire.texts(b)] == ["straight to b"]
    assert wire.states(a, text_id)[-1] == "delivered"
    assert a.stats.acks_seen == 1 and a.stats.sent_by_kind["message"] == 1
    wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)
    entry = a._table.get(b.address)
    assert entry is not None and entry.failures == 0


def test_an_ack_from_the_peer_that_handed_us_the_message_is_not_sent_back_to_it() -> None:
    """docs/PROTOCOL.md, "7.3 Acks": an ack goes back to the peer that handed us the
    message and to its other holders, but not to the peer it came from, which holds it.
    The sender, told of delivery by the recipient itself, passes the ack to the relay
    that held its message: the relay answers with a receipt and is settled, with no ack
    echoed back to the sender."""
    wire = Wire()
    a, r, b = wire.add(1, SLOW), wire.add(2, SLOW), wire.add(3, SLOW)
    wire.connect(a, r)
    a.send_text(b.identity.public, "held by r", T0)
    wire.settle(T0)  # r's receipt for the message goes
    (held,) = _messages(r)
    assert held.origin == a.address
    ack = sign_ack(b.identity, held.item_id, held.expires_ms)
    now = T0 + 1
    r.receive_datagram(
        a._codec.encode_frame(r.identity.key, pb.Frame(ack=ack), now), wire.endpoint(a), now
    )
    assert r.stats.acks_seen == 1 and not r.stats.rejected
    r.handle_timer(now + RECEIPT_DELAY_S)  # the receipt waits that long (docs/PROTOCOL.md, "4")
    assert _bodies(wire, r, a, now) == ["receipt"]
    (stored,) = [e for e in r._store if e.kind is Kind.ACK]
    assert stored.settled  # owed to nobody: no retry of it either


def test_next_event_hands_out_the_events_oldest_first_one_at_a_time() -> None:
    """The node's face (module docstring: ``next_event()``, aioquic's shape): each call
    takes the oldest event not yet taken, None once there is none; the fuzz rigs and the
    relay benchmarks drain a node with it."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    a.bootstrap(wire.endpoint(b), T0)
    for _ in range(4):  # the hello, its answer and the node's first queries, by hand
        for data, dest in a.datagrams_to_send():
            wire.deliver(wire.endpoint(a), dest, data, T0)
        for data, dest in b.datagrams_to_send():
            wire.deliver(wire.endpoint(b), dest, data, T0)
    taken = []
    while (event := a.next_event()) is not None:
        taken.append(event)
    added = [e for e in taken if isinstance(e, PeerAdded)]
    assert [e.key for e in added] == [b.identity.key]
    assert a.next_event() is None and a.drain_events() == []


def test_past_the_bound_on_handshake_peers_the_oldest_is_forgotten_not_the_newest() -> None:
    """docs/PROTOCOL.md, "Session reset": a peer whose letters no session opens gets one
    handshake per HANDSHAKE_INTERVAL_S, remembered for HANDSHAKE_PEERS_MAX peers. Past
    the bound the least recent is forgotten (its interval long over here), so the peer
    just answered is still limited: a claim of a lost session naming it again a minute
    later (a token in the node's bucket by then) sends nothing."""
    node = Node(Identity.from_seed(bytes([5]) * 32), T0)
    step = 1 / HANDSHAKE_RATE_PER_S  # one token of the node-wide bucket each
    peers = [
        Identity.from_seed(i.to_bytes(4, "big") * 8).public for i in range(HANDSHAKE_PEERS_MAX + 1)
    ]
    for i, peer in enumerate(peers):
        node._session_lost(peer, T0 + i * step)
    assert node.stats.handshakes_sent == HANDSHAKE_PEERS_MAX + 1
    newest, later = peers[-1], T0 + len(peers) * step
    assert step < HANDSHAKE_INTERVAL_S
    node._session_lost(newest, later)
    assert node.stats.handshakes_sent == HANDSHAKE_PEERS_MAX + 1
    # The first peer, forgotten and long past its interval, is answered again.
    node._session_lost(peers[0], later + step)
    assert node.stats.handshakes_sent == HANDSHAKE_PEERS_MAX + 2


def test_a_punch_rounds_lookup_of_the_contact_asks_only_the_k_nearest() -> None:
    """docs/PROTOCOL.md, "12.6", when to punch: each round starts a lookup of the
    contact's address (section 6.2): a plain one, seeded with the k nearest of our table
    and ending with its k nearest, not one ``until_found``, which starts from up to
    LOOKUP_MAX_QUERIES of the table and goes on past the k nearest (that is for the
    recipient of an unacknowledged text, at its attempts 2 and 6). With a table of 21
    peers who all went quiet, the first round's lookup asks k of them, once each."""
    wire = Wire()
    a = wire.add(1, SLOW)
    peers = [wire.add(seed, SLOW) for seed in range(2, 26)]
    for peer in peers:
        peer.bootstrap(wire.endpoint(a), T0)
        wire.pump(T0)
    assert a.peer_count > 2 * SLOW.k and a.reachability.kind != "public"
    contact = Identity.from_seed(bytes([99]) * 32)
    now = T0 + 1
    a.set_contacts([contact.key], now)
    wire.offline.update(wire.endpoint(p) for p in peers)
    asked: list[bytes] = []

    def watch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source == wire.endpoint(a):
            frame = Codec(wire.nodes[dest].identity).decode(data, now).frame
            if (
                frame is not None
                and frame.WhichOneof("body") == "find_node"
                and frame.find_node.target == contact.address
            ):
                asked.append(wire.nodes[dest].address)
        return False

    wire.drop = watch
    a.send_text(contact.public, "through relays", now)
    wire.pump(now)
    assert a.stats.sent_by_kind["introduce"] >= 1  # the round went out
    wire.run(now, now + 4.5, 0.5)  # every query timed out (2 s), before the next round
    nearest = {p.address for p in a.closest_peers(contact.address, SLOW.k)}
    assert len(asked) == len(set(asked)) == SLOW.k
    assert set(asked) == nearest


def test_each_item_pushed_to_a_returning_node_is_counted() -> None:
    """docs/PROTOCOL.md, "7.2": a node that (re)joins is pushed what waits for it; the
    status counts every item pushed (``pushed_on_join``), which the attack tests read to
    show a forged source is pushed nothing, so the count must be of items, not of joins."""
    wire = Wire()
    a, r, b = wire.add(1, SLOW), wire.add(2, SLOW), wire.add(3, SLOW)
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    for text in ("first", "second", "third"):
        a.send_text(b.identity.public, text, T0)
    wire.pump(T0)
    assert len(_messages(r)) == 3
    wire.run(T0 + 1, T0 + 5)  # r's receipt waits for b ran out: a push is no resend now
    assert r.stats.pushed_on_join == 0
    wire.offline.clear()
    b.lookup(b.address, T0 + 6)  # b is back: its self-lookup reaches r
    wire.pump(T0 + 6)
    assert sorted(t.text for t in wire.texts(b)) == ["first", "second", "third"]
    assert r.stats.pushed_on_join == 3


def test_a_lookup_until_found_asks_past_the_k_nearest_of_each_path() -> None:
    """docs/PROTOCOL.md, "6.2 Lookups": a lookup ``until_found`` (for the recipient of a
    text of ours not yet acknowledged) starts from up to LOOKUP_MAX_QUERIES nodes of our
    table and goes on past each path's k nearest, since those may all be Sybils, until
    its frontier or its budget is spent. In a network of 25 (24 < LOOKUP_MAX_QUERIES) it
    asks every other node once, those of our table and those the answers name; a plain
    lookup stops once each path's k nearest answered (10 of them here)."""
    wire = Wire()
    a = wire.add(1, SLOW)
    peers = [wire.add(seed, SLOW) for seed in range(2, 26)]
    for peer in peers:
        peer.bootstrap(wire.endpoint(a), T0)
        wire.pump(T0)
    table = {p.address for p in a.peers()}
    assert SLOW.lookup_paths * SLOW.k < len(table) < len(peers)
    target = Identity.from_seed(bytes([98]) * 32).address
    asked: list[bytes] = []

    def watch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source == wire.endpoint(a):
            frame = Codec(wire.nodes[dest].identity).decode(data, T0 + 1).frame
            if frame is not None and frame.find_node.target == target:
                asked.append(wire.nodes[dest].address)
        return False

    wire.drop = watch
    a.lookup(target, T0 + 1, until_found=True)
    wire.pump(T0 + 1)
    wire.run(T0 + 1, T0 + 30, 0.5)
    assert len(asked) == len(set(asked))  # nobody asked twice (one path each)
    assert set(asked) == {p.address for p in peers}


def test_past_the_bound_on_deferred_pairs_the_network_holding_most_loses_one() -> None:
    """docs/PROTOCOL.md, "5.1": requests from unvalidated addresses wait for their pong,
    at most DEFERRED_PER_NETWORK pairs per network of origin and DEFERRED_PAIRS_MAX in
    all; past the bound in all, the oldest of the network holding the most is forgotten,
    never a network holding one request (here the honest first contact's, whose network
    also sorts last by name, so no order of names can stand in for the count)."""
    relay = Node(Identity.from_seed(bytes([1]) * 32), T0)
    honest, honest_at = Codec(Identity.generate()), ("99.88.77.10", 4000)
    ask = pb.Frame(get_record=pb.GetRecord(query_id=b"q" * CHALLENGE_BYTES, address=bytes(20)))
    relay.receive_datagram(honest.encode_frame(relay.identity.key, ask, T0), honest_at, T0)
    (challenge,) = [
        frame.ping.challenge
        for data, to in relay.datagrams_to_send()
        if to == honest_at and (frame := honest.decode(data, T0).frame) is not None
    ]
    networks = DEFERRED_PAIRS_MAX // DEFERRED_PER_NETWORK + 1  # full ones: past the bound
    for n in range(networks):
        for i in range(DEFERRED_PER_NETWORK):
            fresh = Codec(Identity.generate())
            data = fresh.encode_frame(relay.identity.key, ask, T0)
            relay.receive_datagram(data, (f"10.{n}.0.{i + 1}", 4000), T0)
    relay.datagrams_to_send()
    assert len(relay._deferred) == DEFERRED_PAIRS_MAX
    pong = pb.Frame(pong=pb.Pong(challenge=challenge))
    relay.receive_datagram(honest.encode_frame(relay.identity.key, pong, T0), honest_at, T0)
    answers = [
        frame
        for data, to in relay.datagrams_to_send()
        if to == honest_at and (frame := honest.decode(data, T0).frame) is not None
    ]
    assert [f.record.query_id for f in answers if f.HasField("record")] == [b"q" * CHALLENGE_BYTES]


def test_a_newcomer_takes_the_place_of_a_bad_node_in_a_full_bucket() -> None:
    """docs/PROTOCOL.md, "6.1": a node that failed max_failures times in a row with no
    replacement cached stays (out of ``closest()``) until a newcomer can take its place;
    the newcomer's first validated datagram evicts it, and the evicted key's boxes and
    replay window rejoin the bounded caches (``Codec.unpin``, at our clock). A bucket of
    k=2 holds b and c; b goes quiet and fails; d arrives and replaces it."""
    config = NodeConfig(k=2, backoff_base_s=600.0, backoff_max_s=600.0)
    own = Identity.from_seed(bytes([1]) * 32).address
    far = [
        seed
        for seed in range(2, 200)
        if (Identity.from_seed(bytes([seed]) * 32).address[0] ^ own[0]) & 0x80
    ][:3]
    wire = Wire()
    a = wire.add(1, config)
    b, c, d = (wire.add(seed, config) for seed in far)  # all in a's far half
    for peer in (b, c):
        peer.bootstrap(wire.endpoint(a), T0)
        wire.pump(T0)
    assert {p.address for p in a.peers()} == {b.address, c.address}
    wire.offline.add(wire.endpoint(b))
    now = T0 + 1
    for _ in range(3):  # three lookups, each with a query to b that times out
        a.lookup(b.address, now)
        wire.pump(now)
        now += QUERY_TIMEOUT_S + 0.5
        wire.tick(now)
    assert {p.address for p in a.peers()} == {b.address, c.address}  # bad, but no one else
    assert b.address not in {p.address for p in a.closest_peers(b.address, 2)}
    d.bootstrap(wire.endpoint(a), now)
    wire.pump(now)
    assert {p.address for p in a.peers()} == {c.address, d.address}
    assert d.identity.key in [e.key for e in wire.of(a, PeerAdded) if isinstance(e, PeerAdded)]
    # The driver hears that b left, as for any node leaving the table (its saved peers,
    # the peer count it shows).
    assert b.identity.key in [e.key for e in wire.of(a, PeerRemoved) if isinstance(e, PeerRemoved)]
    assert a.stats.rejected["internal_error"] == 0


def test_a_relay_answering_our_attach_at_a_new_endpoint_makes_us_attach_again() -> None:
    """docs/PROTOCOL.md, "12.3": a client's keep-alive Attach is answered by a Pong that
    says where the relay sees us; when a relay we are attached to sees us elsewhere, our
    router moved us (a reboot, a new public IP): we announce ourselves again and attach
    again to every relay at once. The NAT simulations pinned this only in a slow test
    deselected from the mutation run (tests/test_reachability.py)."""
    wire = NatWire()
    relays = [wire.add_public(seed) for seed in range(1, 6)]
    for relay in relays[1:]:
        wire.connect(relay, relays[0])
    for relay in relays:
        relay.lookup(relay.address, T0)
    wire.pump(T0)
    bob = wire.add_behind(41, "restricted")
    bob.bootstrap(wire.endpoint(relays[0]), T0)
    wire.run(T0, T0 + 10)
    attached = [r for r in relays if r.attached_client(bob.address)]
    assert bob.client_mode and len(attached) == ATTACH_RELAYS
    wire.reboot(bob, "198.19.222.1")
    now = T0 + 10
    while bob.stats.reannounced == 0 and now < T0 + 100:  # a keep-alive interval or so
        now += 0.5
        wire.tick(now)
    assert bob.stats.reannounced == 1
    wire.run(now, now + 1, 0.25)
    for relay in attached:
        at = relay.attached_client(bob.address)
        assert at is not None and at[1][0] == "198.19.222.1"


def test_a_contact_heard_from_an_endpoint_we_were_not_told_is_pinged_there() -> None:
    """docs/PROTOCOL.md, "12.6": during an attempt, an authenticated datagram from the
    contact at an endpoint the relay did not name (a symmetric NAT gave it another port
    toward us) makes us ping that endpoint too, a peer-reflexive candidate, at once from
    the receive path (the attempt's schedule pings it again later); the punched pair is
    at that endpoint, and nothing raised on the way: ``receive_datagram`` counts an
    exception as ``internal_error``, which a mutation of the receive path's sends
    raised after the candidate was noted (bench/MUTATION.md, seventh round)."""
    net = Net("full_cone", "symmetric")
    codec = Codec(net.b.identity)
    a_host = net.wire.endpoint(net.a)
    bob_router = net.wire.public_endpoint_of(net.b)[0]
    pinged: list[Endpoint] = []

    def watch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source == a_host and dest[0] == bob_router:
            frame = codec.decode(data, net.now).frame
            if frame is not None and frame.WhichOneof("body") == "ping":
                pinged.append(dest)
        return False

    net.wire.drop = watch
    net.send(net.a, net.b, "hello")
    net.run(8)
    endpoint = net.a.punched_peers()[net.b.address]
    assert endpoint in pinged
    assert net.a.stats.rejected["internal_error"] == 0
    assert net.b.stats.rejected["internal_error"] == 0


def test_bytes_out_counts_every_datagram_queued() -> None:
    """The status panel's "out" figure (``NodeStats.bytes_out``, with ``datagrams_out``)
    is the sum of the sizes of every datagram the node queued, over its life."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    queued: list[bytes] = []

    def count(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source == wire.endpoint(a):
            queued.append(data)
        return False

    wire.drop = count
    wire.connect(a, b)
    a.send_text(b.identity.public, "counted", T0)
    wire.pump(T0)
    assert len(queued) >= 3
    assert a.stats.datagrams_out == len(queued)
    assert a.stats.bytes_out == sum(len(data) for data in queued)


def test_a_copy_handed_back_by_a_peer_we_sent_it_to_dates_its_custody() -> None:
    """docs/PROTOCOL.md, "7.2", "A copy counts no more than a receipt": a peer we sent an
    item to that hands us a copy of it (a stem that came round) becomes a holder, as by
    its receipt; for our own text the custody view then says since when it is held
    (``first_held_at``, persisted with the entry), here the instant of the copy, the
    peer's receipt having been lost."""
    wire = Wire()
    a, r = wire.add(1, SLOW), wire.add(2, SLOW)
    wire.connect(a, r)
    codec = Codec(a.identity)

    def receipts_lost(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        frame = codec.decode(data, T0).frame if source == wire.endpoint(r) else None
        return frame is not None and frame.WhichOneof("body") == "receipt"

    wire.drop = receipts_lost
    recipient = Identity.from_seed(bytes([77]) * 32).public
    text_id = a.send_text(recipient, "round the stem", T0)
    wire.pump(T0)
    (held,) = _messages(r)
    custody = a.custody(text_id)
    assert custody is not None and custody.pending[0].held_since is None
    now = T0 + 1
    copy = r._codec.encode_frame(a.identity.key, pb.Frame(message=held.wire), now)
    a.receive_datagram(copy, wire.endpoint(r), now)
    wire.pump(now)
    custody = a.custody(text_id)
    assert custody is not None
    assert custody.pending[0].holders == 1 and custody.pending[0].held_since == now
    assert wire.states(a, text_id) == ["sent"]
    assert a.stats.rejected["internal_error"] == 0


def test_the_flood_baseline_pushes_nothing_to_a_node_that_joins() -> None:
    """Module docstring: ``policy="flood"`` is the seed's rule as written, the baseline
    the benchmarks compare with; pushing what waits to a node when it joins our table
    is ours (docs/PROTOCOL.md, "7.2"), so a flood relay holding a text for a node that
    joins later does not push it (its re-sends to the k nearest reach it); a relay of
    ours does, the same instant."""
    for policy, pushed in (("flood", 0), ("ours", 1)):
        config = NodeConfig(policy=policy, backoff_base_s=600.0, backoff_max_s=600.0)
        wire = Wire()
        a, r = wire.add(1, config), wire.add(2, config)
        wire.connect(a, r)
        recipient = Identity.from_seed(bytes([3]) * 32)
        a.send_text(recipient.public, "waiting for b", T0)
        wire.pump(T0)
        assert len(_messages(r)) == 1, policy
        b = wire.add(3, config, now=T0 + 5)
        assert b.identity.key == recipient.key
        wire.connect(b, r, T0 + 5)
        assert r.stats.pushed_on_join == pushed, policy


def test_a_fetch_while_the_push_awaits_its_receipt_pushes_nothing_and_raises_nothing() -> None:
    """docs/PROTOCOL.md, "7.2", "Receipt wait": the pushes on a join, a Fetch or an
    Attach skip an item whose receipt wait for that peer at that endpoint is open, and
    push it again once the wait ran out. Here b's answers never reach r: its Fetch at
    6 s is pushed the text, one just within the wait (4 s: doubled once by the first
    relay's timeout) nothing, one at its end the text again; nothing raised
    (``internal_error``) on the way."""
    wire = Wire()
    a, r, b = wire.add(1, SLOW), wire.add(2, SLOW), wire.add(3, SLOW)
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "pushed on fetch", T0)
    wire.pump(T0)
    wire.run(T0 + 1, T0 + 5)  # r's first relay to b went nowhere; its wait ran out
    wire.offline.clear()
    b_at, r_at = wire.endpoint(b), wire.endpoint(r)
    wire.drop = lambda source, dest, data: (source, dest) == (b_at, r_at)
    pushed = []

    def fetch(now: float) -> None:
        data = b._codec.encode_frame(r.identity.key, pb.Frame(fetch=pb.Fetch()), now)
        r.receive_datagram(data, b_at, now)
        wire.pump(now)
        pushed.append(r.stats.pushed_on_join)

    fetch(T0 + 6)
    wait = r._receipt_waits.timeout(b.address)  # doubled by the first relay's timeout
    assert wait == 2 * RECEIPT_TIMEOUT_S
    fetch(T0 + 6 + wait - 0.1)
    fetch(T0 + 6 + wait)
    assert pushed == [1, 1, 2]
    assert [t.text for t in wire.texts(b)] == ["pushed on fetch"]
    assert r.stats.rejected["internal_error"] == 0


def test_a_node_with_peers_is_bootstrapping_until_its_self_lookup_ends() -> None:
    """``Node.state`` (the status line's word): "no peers" with an empty table, and
    "bootstrapping" from the hello until the first self-lookup ends, even once the
    table holds the bootstrap node (docs/PROTOCOL.md, "13. Discovery and joining");
    "online" after."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    assert a.state == "no peers"
    a.bootstrap(wire.endpoint(b), T0)
    assert a.state == "bootstrapping"
    seen: list[tuple[int, str]] = []
    for _ in range(10):  # datagram by datagram, so every state in between is seen
        for source, node in ((wire.endpoint(a), a), (wire.endpoint(b), b)):
            for data, dest in node.datagrams_to_send():
                wire.deliver(source, dest, data, T0)
                seen.append((a.peer_count, a.state))
    assert (1, "bootstrapping") in seen
    assert seen[-1] == (1, "online")
