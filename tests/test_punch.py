"""Hole punching between two contacts behind NATs (docs/PROTOCOL.md, "12.6 Hole punching").

Sans-IO: real ``Node`` cores on ``tests/punch_nat.NatWire``, an internet of five public
relays and two hosts, each behind a NAT router of its own.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from comm_tui.crypto.identity import Identity, PublicIdentity, address_of
from comm_tui.protocol import punch
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.node import Node
from comm_tui.protocol.punch import (
    INTRODUCE_PADDING,
    NODE_NOTICES_BURST,
    NOTICES_PER_WIDE_NETWORK_BURST,
    PEER_INTRODUCTIONS_BURST,
    PENDING_INTRODUCTIONS_MAX,
    PUNCH_ATTEMPTS_MAX,
    PUNCH_ENDPOINTS_MAX,
    PUNCH_KEEPALIVE_S,
    PUNCH_LINGER_S,
    PUNCH_RELAYS_PER_ROUND,
    PUNCHED_PAIRS_MAX,
    RELAY_BURST,
    RELAY_WAIT_S,
    Punching,
)
from comm_tui.protocol.reachability import Reachability
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from tests.natwire import NatKind, NatWire
from tests.wire import T0, peer_addresses

START = T0 + 11


class Net:
    """Five public relays, and Alice and Bob behind NAT routers, contacts of each other."""

    def __init__(self, kind_a: NatKind, kind_b: NatKind) -> None:
        self.wire = w = NatWire()
        self.relays = [w.add_public(seed) for seed in range(1, 6)]
        for relay in self.relays[1:]:
            w.connect(relay, self.relays[0])
        for relay in self.relays:
            relay.lookup(relay.address, T0)
        w.pump(T0)
        self.a = w.add_behind(40, kind_a)
        self.b = w.add_behind(41, kind_b)
        self.a.bootstrap(w.endpoint(self.relays[0]), T0)
        self.b.bootstrap(w.endpoint(self.relays[1]), T0)
        w.run(T0, T0 + 10)
        # Both are clients, attached to relays near them, and reach each other only
        # through relays (no table names a client: docs/PROTOCOL.md, "12.3").
        for x, y in ((self.a, self.b), (self.b, self.a)):
            assert x.client_mode and x.joined and y.address not in peer_addresses(x)
            assert any(r.attached_client(x.address) for r in self.relays)
        self.a.set_contacts([self.b.identity.key], T0 + 10)
        self.b.set_contacts([self.a.identity.key], T0 + 10)
        self.now = START

    def run(self, seconds: float, step: float = 0.25) -> None:
        end = self.now + seconds
        self.wire.run(self.now, end, step)
        self.now = end + step

    def send(self, sender: Node, recipient: Node, text: str) -> bytes:
        text_id = sender.send_text(PublicIdentity(recipient.identity.key), text, self.now)
        self.wire.pump(self.now)
        return text_id

    def relay_copies(self, recipient: Node) -> int:
        """Messages for ``recipient`` that relays took into their stores (or still hold)."""
        return sum(r.stats.stored for r in self.relays) + sum(
            1
            for r in self.relays
            for e in r._store.for_target(recipient.address)
            if e.kind is Kind.MESSAGE
        )


def _watch_between(net: Net) -> list[tuple[Endpoint, Endpoint]]:
    """From now on, every datagram Alice and Bob send each other (list filled as they go)."""
    hosts = {net.wire.endpoint(net.a), net.wire.endpoint(net.b)}
    routers = {net.wire.public_endpoint_of(n)[0] for n in (net.a, net.b)}
    seen: list[tuple[Endpoint, Endpoint]] = []

    def watch(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source in hosts and dest[0] in routers:
            seen.append((source, dest))
        return False

    net.wire.drop = watch
    return seen


def _received(net: Net, node: Node) -> list[str]:
    return [t.text for t in net.wire.texts(node)]


@pytest.mark.parametrize(
    ("kind_a", "kind_b"),
    [("restricted", "restricted"), ("full_cone", "full_cone"), ("full_cone", "restricted")],
)
def test_cone_nats_punch_and_later_texts_go_directly(kind_a: NatKind, kind_b: NatKind) -> None:
    net = Net(kind_a, kind_b)
    first = net.send(net.a, net.b, "hello through relays")
    net.run(8)
    assert net.wire.states(net.a, first)[-1] == "delivered"
    # One relay near Bob introduced them; each pinged the other; both hold the pair.
    assert sum(r._punch.introduced for r in net.relays) >= 1
    # One round: the 3 nodes nearest Bob; the lookup of his neighbourhood met the same
    # ones, who are not asked twice.
    assert net.a.stats.sent_by_kind["introduce"] == PUNCH_RELAYS_PER_ROUND
    assert net.a.punched_peers()[net.b.address][0] == "198.19.41.1"  # Bob's router
    assert net.b.punched_peers()[net.a.address][0] == "198.19.40.1"
    copies = net.relay_copies(net.b)
    ids = [net.send(net.a, net.b, f"direct {i}") for i in range(5)]
    net.run(3)
    assert all(net.wire.states(net.a, i)[-1] == "delivered" for i in ids)
    assert _received(net, net.b)[1:] == [f"direct {i}" for i in range(5)]
    # No relay saw a copy: the texts went straight to Bob's router.
    assert net.relay_copies(net.b) == copies
    # And Bob's replies go straight back.
    copies_a = net.relay_copies(net.a)
    reply = net.send(net.b, net.a, "reply")
    net.run(3)
    assert net.wire.states(net.b, reply)[-1] == "delivered"
    assert net.relay_copies(net.a) == copies_a


def test_symmetric_nat_falls_back_to_relays_with_every_text_delivered() -> None:
    net = Net("symmetric", "restricted")
    ids = [net.send(net.a, net.b, f"text {i}") for i in range(3)]
    net.run(10)
    # Bob's router let in only the relay-facing port it was told of, and Alice's
    # router gave Bob a new port toward him: the pings crossed nowhere.
    assert net.a._punch.failed == 1 and net.a._punch.punched == 0
    assert net.a.punched_peers() == {} and net.b.punched_peers() == {}
    ids += [net.send(net.a, net.b, f"text {i}") for i in range(3, 20)]
    net.run(20)
    assert all(net.wire.states(net.a, i)[-1] == "delivered" for i in ids)
    assert sorted(_received(net, net.b)) == sorted(f"text {i}" for i in range(20))
    # Given up quietly: no second attempt for PUNCH_GIVE_UP_S.
    assert net.a._punch.started == 1
    assert net.b.address in net.a._punch.given_up


def test_a_symmetric_nat_meets_a_full_cone_through_the_port_it_pings_from() -> None:
    """Bob's pings come from a port his router opened toward Alice alone; Alice's full
    cone lets them in, and Alice pings that port back (a peer-reflexive candidate)."""
    net = Net("full_cone", "symmetric")
    net.send(net.a, net.b, "hello")
    net.run(8)
    endpoint = net.a.punched_peers()[net.b.address]
    assert endpoint[0] == "198.19.41.1"
    told = {w.endpoint for r in net.relays for w in r._punch.waiting.values()}
    assert endpoint not in told
    copies = net.relay_copies(net.b)
    text = net.send(net.a, net.b, "direct")
    net.run(3)
    assert net.wire.states(net.a, text)[-1] == "delivered"
    assert net.relay_copies(net.b) == copies


def test_a_pair_is_kept_alive_while_texts_flow_then_let_go() -> None:
    net = Net("restricted", "restricted")  # routers forget a mapping after 20 s / 30 s
    net.send(net.a, net.b, "hello")
    net.run(5)
    assert net.b.address in net.a.punched_peers()
    # Idle for four router timeouts: the keep-alives hold both mappings open.
    net.run(120, step=1.0)
    copies = net.relay_copies(net.b)
    text = net.send(net.a, net.b, "after two idle minutes")
    net.run(2)
    assert net.wire.states(net.a, text)[-1] == "delivered"
    assert net.relay_copies(net.b) == copies
    # One ping (and its pong) per keep-alive interval, from one side only.
    pings = [n.stats.sent_by_kind["ping"] for n in (net.a, net.b)]
    net.run(PUNCH_KEEPALIVE_S * 4, step=1.0)
    sent = [n.stats.sent_by_kind["ping"] - p for n, p in zip((net.a, net.b), pings, strict=True)]
    assert min(sent) == 0 and 3 <= max(sent) <= 4
    # Past PUNCH_LINGER_S without a text, the pair is let go: no more keep-alives.
    net.run(PUNCH_LINGER_S, step=5.0)
    assert net.a.punched_peers() == {} and net.b.punched_peers() == {}
    between = _watch_between(net)
    net.run(PUNCH_KEEPALIVE_S * 4, step=5.0)
    assert between == []


def test_a_closed_hole_costs_one_retry_and_nothing_is_lost() -> None:
    net = Net("restricted", "restricted")
    net.send(net.a, net.b, "hello")
    net.run(5)
    assert net.b.address in net.a.punched_peers()
    # Bob's router reboots with a new public address: every mapping is gone. Bob
    # attaches to his relays again (docs/PROTOCOL.md, "12.5"); Alice's pair is dead.
    net.wire.reboot(net.b, "198.19.141.1")
    text = net.send(net.a, net.b, "after the reboot")
    net.run(30)
    assert net.wire.states(net.a, text)[-1] == "delivered"
    assert "after the reboot" in _received(net, net.b)


# ---------------------------------------------------------------------- hostile cases


def _deliver(
    sender: Node, receiver: Node, frame: pb.Frame, source: Endpoint, now: float
) -> list[tuple[bytes, Endpoint]]:
    """Hand ``receiver`` one boxed frame from ``sender`` arriving from ``source``;
    returns what the receiver sends in response."""
    receiver.datagrams_to_send()
    receiver.receive_datagram(
        sender._codec.encode_frame(receiver.identity.key, frame, now), source, now
    )
    return receiver.datagrams_to_send()


def _introduce(target: bytes, padding: int = INTRODUCE_PADDING) -> pb.Frame:
    return pb.Frame(
        introduce=pb.Introduce(target=target, nonce=bytes(range(16)), padding=bytes(padding))
    )


def _mallory(net: Net) -> Node:
    """A public node, validated at every relay, that is nobody's contact."""
    mallory = net.wire.add(9)
    net.wire.connect(mallory, net.relays[0], net.now)
    for relay in net.relays[1:]:
        relay.add_known_peer(mallory.identity.key, net.wire.endpoint(mallory), net.now)
    net.wire.pump(net.now)
    assert all(mallory.address in peer_addresses(r) for r in net.relays)
    return mallory


def test_a_stranger_asking_to_meet_learns_nothing() -> None:
    net = Net("restricted", "restricted")
    mallory = _mallory(net)
    relay = net.relays[2]
    mallory._send_frame(
        relay.identity.key, net.wire.endpoint(relay), _introduce(net.b.address), net.now
    )
    net.wire.pump(net.now)
    net.run(RELAY_WAIT_S + 1)
    # The relay told Bob that Mallory asks (a notice, with no endpoint in it); Bob, whose
    # contact Mallory is not, did not ask back, so the relay gave out no endpoint.
    assert relay.stats.sent_by_kind["introduced"] == 1
    assert net.b.stats.rejected["not_contact"] == 1
    assert net.b.stats.sent_by_kind["introduce"] == 0
    assert relay._punch.introduced == 0 and not relay._punch.waiting


def test_a_notice_counts_only_from_a_relay_of_our_table() -> None:
    net = Net("restricted", "restricted")
    stranger = Node(Identity.from_seed(bytes([77]) * 32), net.now)
    notice = pb.Frame(introduced=pb.Introduced(key=net.a.identity.key))
    sent = _deliver(stranger, net.b, notice, ("198.18.77.1", 4000), net.now)
    assert net.b.stats.rejected["unsolicited"] == 1
    assert net.b._punch.asked == {}
    # (Only the address validation of a first contact goes back, never an Introduce.)
    assert len(sent) == 1
    relay = net.relays[1]
    sent = _deliver(relay, net.b, notice, net.wire.endpoint(relay), net.now)
    assert len(net.b._punch.asked) == 1 and len(sent) == 1
    # From a relay of our table, but at an endpoint it is not known by: refused too.
    _deliver(net.relays[2], net.b, notice, ("198.18.66.1", 4000), net.now)
    assert net.b.stats.rejected["unsolicited"] == 2


def test_forged_answers_make_us_ping_nobody() -> None:
    net = Net("restricted", "restricted")
    relay = net.relays[2]
    relay_at = net.wire.endpoint(relay)
    sends = net.a._punch._ask(relay.identity.key, relay_at, net.b.address, net.now)
    nonce = sends.frame.introduce.nonce
    victim = ("198.18.99.1", 53)
    ip = bytes([198, 18, 99, 1])

    def answer(key: bytes, nonce: bytes) -> pb.Frame:
        return pb.Frame(introduced=pb.Introduced(key=key, nonce=nonce, ip=ip, port=victim[1]))

    mallory = _mallory(net)
    cases = [
        (mallory, answer(net.b.identity.key, nonce)),  # not the relay we asked
        (relay, answer(net.b.identity.key, bytes(16))),  # not a nonce of ours
        (relay, answer(mallory.identity.key, nonce)),  # not the key of the address asked
    ]
    for sender, frame in cases:
        sent = _deliver(sender, net.a, frame, net.wire.endpoint(sender), net.now)
        assert victim not in [dest for _, dest in sent]
    assert net.a.stats.rejected["unsolicited"] == 3
    assert net.a._punch.attempts == {}
    # The genuine answer (the relay asked, our nonce, Bob's key) starts the pings.
    sent = _deliver(relay, net.a, answer(net.b.identity.key, nonce), relay_at, net.now)
    assert [dest for _, dest in sent] == [victim]


def test_the_relay_introduces_only_validated_requesters_to_nodes_it_holds() -> None:
    net = Net("restricted", "restricted")
    relay = net.relays[2]
    # A first contact's Introduce waits for its address to be validated: only the
    # challenge goes back, nothing reaches Bob.
    stranger = Node(Identity.from_seed(bytes([78]) * 32), net.now)
    sent = _deliver(stranger, relay, _introduce(net.b.address), ("198.18.78.1", 4000), net.now)
    assert len(sent) == 1 and relay.stats.sent_by_kind["introduced"] == 0
    mallory = _mallory(net)
    at = net.wire.endpoint(mallory)
    # A target the relay does not hold: nothing sent.
    assert _deliver(mallory, relay, _introduce(bytes(20)), at, net.now) == []
    assert relay.stats.rejected["unknown_target"] == 1
    # Too little padding: the answer could be larger than the request.
    assert (
        _deliver(mallory, relay, _introduce(net.b.address, INTRODUCE_PADDING - 1), at, net.now)
        == []
    )
    assert relay.stats.rejected["malformed"] == 1
    # A flood from one requester: a burst of notices, then nothing.
    for _ in range(100):
        _deliver(mallory, relay, _introduce(net.b.address), at, net.now)
    # (The request for an unknown target above spent one of the requester's tokens.)
    assert relay.stats.sent_by_kind["introduced"] == RELAY_BURST - 1
    assert relay.stats.rejected["introduce_rate"] == 100 - (RELAY_BURST - 1)


def test_a_former_contact_loses_the_direct_path_at_once() -> None:
    net = Net("restricted", "restricted")
    net.send(net.a, net.b, "hello")
    net.run(5)
    assert net.b.address in net.a.punched_peers()
    net.a.set_contacts([], net.now)
    assert net.a.punched_peers() == {}
    asked = net.a.stats.sent_by_kind["introduce"]
    text = net.send(net.a, net.b, "through relays again")
    net.run(PUNCH_KEEPALIVE_S * 3, step=1.0)
    assert net.wire.states(net.a, text)[-1] == "delivered"
    assert net.a._punch.wants == {} and net.a._punch.asked == {}
    assert net.a.stats.sent_by_kind["introduce"] == asked  # no introduction asked since


# ---------------------------------------------------------------------- rules, one by one


def _keys(n: int, base: int = 100) -> list[bytes]:
    return [Identity.from_seed(bytes([base + i]) * 32).key for i in range(n)]


def test_an_answer_is_never_larger_than_its_request() -> None:
    """docs/PROTOCOL.md, "Admission": with the widest endpoints (IPv6, port 65535)."""
    relay = Punching(_keys(1, 200)[0], T0)
    a, b = _keys(2)
    at_a, at_b = ("2001:2::1", 65535), ("2001:2::2", 65535)
    ask_b = _introduce(address_of(b))
    ask_b.introduce.nonce = bytes(16)
    (notice,) = relay.on_introduce(a, at_a, ask_b.introduce, (b, at_b), T0)
    assert notice.frame.ByteSize() <= ask_b.ByteSize()
    ask_a = _introduce(address_of(a))
    answers = relay.on_introduce(b, at_b, ask_a.introduce, None, T0)
    assert [s.endpoint for s in answers] == [at_b, at_a]
    assert all(s.frame.ByteSize() <= ask_a.ByteSize() for s in answers)
    assert answers[0].frame.introduced.key == a and answers[1].frame.introduced.key == b


def test_pending_introductions_and_attempts_are_bounded() -> None:
    me = Punching(_keys(1, 201)[0], T0)
    contacts = _keys(PUNCH_ATTEMPTS_MAX + 1)
    me.set_contacts(contacts)
    relay = _keys(1, 202)[0]
    for _ in range(PENDING_INTRODUCTIONS_MAX * 2):
        me._ask(relay, ("198.18.0.1", 1), address_of(contacts[0]), T0)
    assert len(me.asked) == PENDING_INTRODUCTIONS_MAX
    for i, key in enumerate(contacts):
        nonce = me._ask(relay, ("198.18.0.1", 1), address_of(key), T0).frame.introduce.nonce
        answer = pb.Introduced(key=key, nonce=nonce, ip=bytes([198, 18, 1, i]), port=4000)
        if i < PUNCH_ATTEMPTS_MAX:
            assert len(me.on_answer(relay, ("198.18.0.1", 1), answer, T0)) == 1
        else:
            with pytest.raises(Rejected, match="punch_rate"):
                me.on_answer(relay, ("198.18.0.1", 1), answer, T0)
    assert len(me.attempts) == PUNCH_ATTEMPTS_MAX
    # An attempt pings at most PUNCH_ENDPOINTS_MAX endpoints, whatever it hears from.
    address = address_of(contacts[0])
    for port in range(1, 50):
        me.heard(address, ("198.18.3.3", port), T0)
    assert len(me.attempts[address].endpoints) == PUNCH_ENDPOINTS_MAX


def test_punched_pairs_are_bounded() -> None:
    me = Punching(_keys(1, 203)[0], T0)
    contacts = _keys(PUNCHED_PAIRS_MAX + 8)
    me.set_contacts(contacts)
    for i, key in enumerate(contacts):
        address, endpoint = address_of(key), ("198.18.5.5", 1000 + i)
        me.attempts[address] = punch._Attempt(key, T0, 1, {endpoint: bytes([i]) * 16})
        assert me.pong(address, endpoint, bytes([i]) * 16, T0)
        me.attempts.clear()
    assert len(me.pairs) == PUNCHED_PAIRS_MAX
    assert address_of(contacts[-1]) in me.pairs and address_of(contacts[0]) not in me.pairs


def test_notices_are_answered_within_the_node_budget_and_spend_none_of_our_rounds() -> None:
    me = Punching(_keys(1, 204)[0], T0)
    contacts = _keys(100)
    me.set_contacts(contacts)
    relays = _keys(100, 150)
    asked = 0
    for i, (relay, key) in enumerate(zip(relays, contacts, strict=True)):
        try:  # a relay of a wide network each
            asked += len(me.on_notice(relay, (f"{1 + i}.18.0.1", 1), key, T0))
        except Rejected as exc:
            assert exc.reason == "punch_rate"
    assert asked == NODE_NOTICES_BURST
    with pytest.raises(Rejected, match="not_contact"):
        me.on_notice(relays[0], ("198.18.0.1", 1), _keys(1, 250)[0], T0 + 3600)
    # The notices spent none of our own rounds' budgets, the contact's or the node's.
    address = address_of(contacts[0])
    me.asked.clear()
    me.want(address, T0)
    ours = [(k, (f"198.19.{i}.1", 1)) for i, k in enumerate(_keys(3, 251))]
    assert [s.key for s in me.ask_relays(address, ours, T0, spend=True)] == [k for k, _ in ours]


def test_notices_from_relays_of_one_wide_network_share_a_budget() -> None:
    """docs/PROTOCOL.md, "12.6": relays in many /24s of one /16 (or /48s of one /32) are
    one wide network, whose notices we answer within a burst of 4."""
    me = Punching(_keys(1, 204)[0], T0)
    contacts = _keys(40)
    me.set_contacts(contacts)
    relays = _keys(40, 150)
    for at in ((lambda i: f"198.18.{i}.1"), (lambda i: f"2001:db8:{i:x}::1")):
        asked = 0
        for i, (relay, key) in enumerate(zip(relays, contacts, strict=True)):
            try:
                asked += len(me.on_notice(relay, (at(i), 1), key, T0))
            except Rejected as exc:
                assert exc.reason == "punch_rate"
        assert asked == NOTICES_PER_WIDE_NETWORK_BURST
        me.asked.clear()


def test_requests_held_by_a_relay_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(punch, "RELAY_WAITING_MAX", 8)
    relay = Punching(_keys(1, 205)[0], T0)
    requesters, targets = _keys(20), _keys(20, 150)
    for i, (requester, target) in enumerate(zip(requesters, targets, strict=True)):
        ask = _introduce(address_of(target))
        at = (f"{10 + i}.18.0.1", 1)  # a wide network each: one has a budget (12.6)
        relay.on_introduce(requester, at, ask.introduce, (target, ("198.18.0.2", 2)), T0)
    assert len(relay.waiting) == 8
    # The newest are kept: the last requester's match is still possible.
    answer = _introduce(address_of(requesters[-1]))
    assert len(relay.on_introduce(targets[-1], ("198.18.0.2", 2), answer.introduce, None, T0)) == 2


def test_only_a_pong_from_the_endpoint_pinged_punches_the_pair() -> None:
    me = Punching(_keys(1, 206)[0], T0)
    (contact,) = _keys(1)
    me.set_contacts([contact])
    address, pinged = address_of(contact), ("198.18.7.7", 4000)
    me.attempts[address] = punch._Attempt(contact, T0, 1, {pinged: bytes(16)})
    with pytest.raises(Rejected) as refused:
        me.pong(address, ("198.18.7.7", 4001), bytes(16), T0)
    assert refused.value.reason == "wrong_endpoint"  # counted by its exact reason
    assert me.pairs == {}
    assert not me.pong(address, pinged, bytes([1]) * 16, T0)  # not our challenge
    assert me.pong(address, pinged, bytes(16), T0) and me.hop(address) == (contact, pinged)


def test_a_public_node_asks_no_introduction() -> None:
    """A public node is reached through the routing table and receives its contact's
    acks directly: punching would only cost (docs/PROTOCOL.md, "12.6", when to punch).
    The kind is set by hand here (tests/test_reachability.py classifies real ones)."""
    net = Net("restricted", "restricted")
    alice, bob = net.a, PublicIdentity(net.b.identity.key)
    for kind, asked in (("public", 0), ("cone", PUNCH_RELAYS_PER_ROUND)):
        alice._reachability.reach = Reachability(kind, ("198.19.40.1", 4000), net.now)
        alice.send_text(bob, f"as a {kind} node", net.now)
        # The first round goes out at once, with the text.
        assert alice.stats.sent_by_kind["introduce"] == asked


def test_the_figures_script_runs_and_its_matrix_holds(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/punch.py, small: cone NATs on both sides (or a full cone facing anything)
    punch, and their texts skip the relays; a symmetric NAT facing a restricted one does
    not, and every text still arrives."""
    from bench import punch as bench_punch

    assert bench_punch.main(["--texts", "3", "--idle-minutes", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    rows = {(r["alice"], r["bob"]): r for r in figures["matrix"]}
    for (a, b), row in rows.items():
        assert row["delivered"] == 3
        assert row["punched"] == ("symmetric" not in (a, b) or "full_cone" in (a, b))
        assert (row["relay_copies"] == 0) == row["punched"]
    assert figures["keepalive"]["still_punched"]
    assert figures["keepalive"]["pings_and_pongs_sent"] == [4, 4]


def test_the_contacts_relays_are_looked_up_when_our_table_lacks_them() -> None:
    """A client attaches only to the few nodes nearest its own address; in a large
    network our table may hold none of them, so each round also looks the contact's
    neighbourhood up and asks the nearest nodes the lookup met."""
    net = Net("restricted", "restricted")
    attached = [r for r in net.relays if r.attached_client(net.b.address)]
    assert attached and len(attached) < len(net.relays)
    for relay in attached:
        net.a._table.remove(relay.address)
    net.send(net.a, net.b, "hello")
    net.run(1)  # before the second round (PUNCH_RETRY_S)
    assert net.b.address in net.a.punched_peers()
    assert sum(r.stats.rejected["unknown_target"] for r in net.relays) >= 1


def test_a_round_spends_the_contacts_budget_once_its_lookup_asks_nothing_more() -> None:
    me = Punching(_keys(1, 207)[0], T0)
    (contact,) = _keys(1)
    me.set_contacts([contact])
    address = address_of(contact)
    me.want(address, T0)
    relays = [(key, ("198.18.9.9", 1000 + i)) for i, key in enumerate(_keys(60, 150))]
    for i in range(0, 30, 3):  # asks that end rounds' lookups: free
        assert len(me.ask_relays(address, relays[i : i + 3], T0, spend=False)) == 3
    asked = [me.ask_relays(address, relays[30 + 3 * i :], T0, spend=True) for i in range(8)]
    assert [len(a) for a in asked] == [3] * int(PEER_INTRODUCTIONS_BURST) + [0, 0]


# ---------------------------------------------------------------- mutation round 3 (B)


def _punch_pair(me: Punching, contact: bytes, relay: bytes, now: float) -> Endpoint:
    """Punch a pair with ``contact`` through our public face: a round asks ``relay``, its
    answer starts an attempt, the pong to our ping punches it. Returns the endpoint."""
    address, at_relay, at_contact = address_of(contact), ("198.18.0.1", 4000), ("198.18.7.7", 1)
    me.want(address, now)
    (ask,) = me.tick(now, {address: [(relay, at_relay)]}, {address})
    answer = pb.Introduced(
        key=contact, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1
    )
    (ping,) = me.on_answer(relay, at_relay, answer, now)
    assert me.pong(address, at_contact, ping.frame.ping.challenge, now)
    return at_contact


def test_a_notice_about_a_contact_we_are_punched_with_asks_nothing() -> None:
    """docs/PROTOCOL.md, "12.6": a notice about a contact we already meet directly (a
    duplicate from another relay, or a late one) is answered by no Introduce and spends
    no budget; nor is one about a contact whose attempt is under way."""
    me = Punching(_keys(1, 208)[0], T0)
    paired, trying = _keys(2)
    me.set_contacts([paired, trying])
    relay, other_relay = _keys(2, 150)
    _punch_pair(me, paired, relay, T0)
    assert address_of(paired) in me.pairs and address_of(paired) not in me.attempts
    assert me.on_notice(other_relay, ("198.18.1.1", 4000), paired, T0) == []
    assert me.asked == {}
    me.want(address_of(trying), T0)
    (ask,) = me.tick(
        T0, {address_of(trying): [(relay, ("198.18.0.1", 4000))]}, {address_of(trying)}
    )
    answer = pb.Introduced(
        key=trying, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 8, 8]), port=1
    )
    assert me.on_answer(relay, ("198.18.0.1", 4000), answer, T0)
    assert me.on_notice(other_relay, ("198.18.1.1", 4000), trying, T0) == []
    assert me.asked == {}


def test_given_up_contacts_are_remembered_up_to_punch_wants_max() -> None:
    """A contact is given up on after PUNCH_ROUNDS rounds of Introduce (docs/PROTOCOL.md,
    "12.6"): PUNCH_WANTS_MAX of them are remembered, so none is wanted again before
    PUNCH_GIVE_UP_S; past the bound the one given up on first is forgotten first."""
    me = Punching(_keys(1, 209)[0], T0)
    contacts = _keys(punch.PUNCH_WANTS_MAX + 1)
    me.set_contacts(contacts)
    addresses = [address_of(key) for key in contacts]

    def give_up_on(wanted: list[bytes], now: float) -> float:
        for address in wanted:
            me.want(address, now)
        while me.wants:  # no relays: each round asks nobody, the last one gives up
            assert me.tick(now, {}, set(wanted)) == []
            now = min(w.next_at for w in me.wants.values()) if me.wants else now
        return now

    now = give_up_on(addresses[:-1], T0)
    assert set(me.given_up) == set(addresses[:-1])
    for address in addresses[:-1]:
        me.want(address, now)
        assert address not in me.wants
    give_up_on(addresses[-1:], now)
    assert len(me.given_up) == punch.PUNCH_WANTS_MAX
    assert addresses[0] not in me.given_up and addresses[-1] in me.given_up


@pytest.mark.parametrize(
    ("target", "requester_at"),
    [
        ("requester", ("198.18.0.9", 1)),  # to meet itself
        ("relay", ("198.18.0.9", 1)),  # to meet the relay
        ("other", ("relay.example", 1)),  # from an endpoint that is no IP address
    ],
)
def test_an_introduce_the_relay_cannot_serve_is_malformed(
    target: str, requester_at: Endpoint
) -> None:
    relay_key, requester, other = _keys(3, 210)
    relay = Punching(relay_key, T0)
    targets = {"requester": requester, "relay": relay_key, "other": other}
    ask = _introduce(address_of(targets[target]))
    with pytest.raises(Rejected) as refused:
        relay.on_introduce(requester, requester_at, ask.introduce, None, T0)
    assert refused.value.reason == "malformed"
    assert relay.waiting == {}


def test_a_request_held_past_relay_wait_is_never_answered_even_behind_a_repeated_one() -> None:
    """docs/PROTOCOL.md, "12.6": a relay holds a request RELAY_WAIT_S. A request asked
    again is held anew, as the newest (the relay's table is in order of deadline), so an
    older request of another pair expires on time instead of waiting behind it."""
    relay = Punching(_keys(1, 219)[0], T0)
    a, b, c, d = _keys(4, 220)
    at = {key: (f"198.18.{i}.1", 4000) for i, key in enumerate((a, b, c, d), start=1)}

    def introduce(requester: bytes, target: bytes, now: float, held: bool) -> list[punch.Send]:
        ask = _introduce(address_of(target)).introduce
        where = (target, at[target]) if held else None
        return relay.on_introduce(requester, at[requester], ask, where, now)

    assert len(introduce(a, b, T0, held=True)) == 1  # a notice to b
    assert len(introduce(c, d, T0 + 1, held=True)) == 1  # a notice to d
    assert len(introduce(a, b, T0 + 2, held=True)) == 1  # a asks again: held until T0 + 7
    late = T0 + 1 + RELAY_WAIT_S + 0.5
    with pytest.raises(Rejected, match="unknown_target"):
        introduce(d, c, late, held=False)  # c's request expired: nothing to match
    assert [s.key for s in introduce(b, a, late, held=False)] == [b, a]


def test_pings_and_keepalives_go_out_exactly_when_next_due_says() -> None:
    """docs/PROTOCOL.md, "12.6": an attempt pings on PUNCH_SCHEDULE_S, a punched pair is
    pinged after its keep-alive silence (the side with the lower address first). The
    node's timer wakes at ``next_due``: at that very instant ``tick`` sends the ping."""
    me = Punching(_keys(1, 211)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    address = address_of(contact)
    me.want(address, T0)
    (ask,) = me.tick(T0, {address: [(relay, ("198.18.0.1", 4000))]}, {address})
    answer = pb.Introduced(
        key=contact, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1
    )
    (first,) = me.on_answer(relay, ("198.18.0.1", 4000), answer, T0)
    assert me.next_due() == T0 + punch.PUNCH_SCHEDULE_S[1]
    (second,) = me.tick(T0 + punch.PUNCH_SCHEDULE_S[1], {}, {address})
    assert second.frame == first.frame and second.endpoint == ("198.18.7.7", 1)
    heard = T0 + 1.0
    assert me.pong(address, ("198.18.7.7", 1), first.frame.ping.challenge, heard)
    silence = punch.PUNCH_KEEPALIVE_S
    if me.own_address > address:
        silence += punch.PUNCH_KEEPALIVE_BACKUP_S
    assert me.next_due() == heard + silence
    (keepalive,) = me.tick(heard + silence, {}, set())
    assert keepalive.frame == first.frame and keepalive.endpoint == ("198.18.7.7", 1)


def test_a_failed_attempt_gives_the_contact_up_and_asks_no_more_rounds() -> None:
    """An attempt whose pings got no pong within PUNCH_ATTEMPT_S fails: the contact is
    no longer wanted and is given up on for PUNCH_GIVE_UP_S, so later rounds of
    Introduce do not ask relays for it (texts keep going through relays)."""
    me = Punching(_keys(1, 212)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    address = address_of(contact)
    relays_for = {address: [(relay, ("198.18.0.1", 4000))]}
    me.want(address, T0)
    (ask,) = me.tick(T0, relays_for, {address})
    answer = pb.Introduced(
        key=contact, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1
    )
    assert me.on_answer(relay, ("198.18.0.1", 4000), answer, T0)
    now = T0
    while now < T0 + punch.PUNCH_ATTEMPT_S:
        now = me.next_due()
        me.tick(now, relays_for, {address})
    assert me.failed == 1 and address not in me.attempts
    assert address not in me.wants and address in me.given_up
    for later in (T0 + 15, T0 + 35, T0 + 75):
        assert me.tick(later, relays_for, {address}) == []


def test_a_pong_to_a_punched_pairs_ping_from_another_endpoint_is_refused() -> None:
    """Only the pair's own endpoint answers its keep-alive: the same challenge answered
    from elsewhere (a replay, a forged source) is ``wrong_endpoint`` and moves nothing."""
    me = Punching(_keys(1, 213)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    at = _punch_pair(me, contact, relay, T0)
    address = address_of(contact)
    silence = me.next_due() - T0
    (keepalive,) = me.tick(T0 + silence, {}, set())
    with pytest.raises(Rejected) as refused:
        me.pong(address, ("198.18.7.7", 2), keepalive.frame.ping.challenge, T0 + silence)
    assert refused.value.reason == "wrong_endpoint"  # counted by its exact reason
    assert me.hop(address) == (contact, at)
    assert me.pong(address, at, keepalive.frame.ping.challenge, T0 + silence)


@pytest.mark.parametrize("used", [True, False])
def test_a_punched_pair_lingers_punch_linger_s_after_its_last_use(used: bool) -> None:
    """docs/PROTOCOL.md, "12.6": a pair is kept while texts flow over it and
    PUNCH_LINGER_S after the last one, however long the contact keeps answering."""
    me = Punching(_keys(1, 214)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    at = _punch_pair(me, contact, relay, T0)
    address = address_of(contact)
    for step in range(1, 33):  # the contact answers every 10 s
        now = T0 + 10 * step
        me.heard(address, at, now)
        if used and now == T0 + 200:
            me.used(address, now)
        me.tick(now, {}, set())
    kept = me.hop(address) == (contact, at)
    assert kept is used  # at T0 + 320: 120 s after a use at 200, or 320 after the punch


def test_the_relays_rate_limiters_remember_relay_limiter_keys_requesters_and_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay side's limiters per requester and per (target, requester's network)
    each remember the RELAY_LIMITER_KEYS most recent keys, no more (a bound on memory:
    a key pushed out starts again with a full burst). Here 4,096 fresh requesters of 512
    networks (of a wide network each), each for another target, push out a requester
    and a (target, network) whose bursts were spent; 0.2 s later both are served again.
    (A network's burst is made 8 here, so that the home network still has tokens.)"""
    monkeypatch.setattr(punch, "RELAY_NETWORK_BURST", 8.0)
    relay = Punching(_keys(1, 215)[0], T0)
    spent_requester, other = b"\x01" * 32, b"\x02" * 32
    home: Endpoint = ("198.18.1.1", 4000)
    target = _keys(1, 216)[0]

    def introduce(requester: bytes, at: Endpoint, to: bytes, now: float) -> None:
        relay.on_introduce(requester, at, _introduce(address_of(to)).introduce, None, now)

    for _ in range(int(RELAY_BURST)):  # spends the requester's and (target, home)'s bursts
        with pytest.raises(Rejected, match="unknown_target"):
            introduce(spent_requester, home, target, T0)
    with pytest.raises(Rejected, match="introduce_rate"):
        introduce(spent_requester, home, _keys(1, 217)[0], T0)
    for i in range(punch.RELAY_LIMITER_KEYS):
        flood_at = (f"{10 + i // 8 // 256}.{i // 8 % 256}.0.1", 4000)  # 8 a network: its burst
        with pytest.raises(Rejected):
            introduce((1000 + i).to_bytes(32, "big"), flood_at, (5000 + i).to_bytes(32, "big"), T0)
    later = T0 + 0.2  # the node-wide budget refills 12.8 tokens; the others far less than 1
    with pytest.raises(Rejected, match="unknown_target"):  # past every rate check
        introduce(spent_requester, home, _keys(1, 217)[0], later)
    with pytest.raises(Rejected, match="unknown_target"):
        introduce(other, home, target, later)


def test_the_per_contact_budget_remembers_relay_limiter_keys_contacts() -> None:
    """The budget of our rounds per contact remembers RELAY_LIMITER_KEYS contacts: rounds
    for 4,096 others push out one whose burst was spent, which is then asked for again
    once the node-wide budget has a token."""
    me = Punching(_keys(1, 218)[0], T0)
    spent = _keys(1, 219)[0]
    others = [
        Identity.from_seed(i.to_bytes(32, "big")).key for i in range(punch.RELAY_LIMITER_KEYS)
    ]
    me.set_contacts([spent, *others])
    relays = [(key, (f"198.18.{i}.1", 4000)) for i, key in enumerate(_keys(12, 150))]

    def round_for(key: bytes, relay: int, now: float) -> int:
        me.want(address_of(key), now)
        return len(me.ask_relays(address_of(key), relays[relay : relay + 1], now, spend=True))

    asked = [round_for(spent, i, T0) for i in range(int(PEER_INTRODUCTIONS_BURST) + 1)]
    assert asked == [1] * int(PEER_INTRODUCTIONS_BURST) + [0]
    for key in others:
        round_for(key, 10, T0)
    later = T0 + 1.0  # one node-wide token; a contact's burst refills 1/60 in that time
    assert round_for(spent, 11, later) == 1


def test_fresh_keys_of_one_network_get_relay_network_burst_introductions() -> None:
    """docs/PROTOCOL.md, "12.6": keys are free and networks are not, so a relay serves
    one network of origin RELAY_NETWORK_BURST requests at once whatever keys and targets
    they name (then RELAY_NETWORK_RATE_PER_S); another network is still served."""
    relay = Punching(_keys(1, 221)[0], T0)

    def introduce(i: int, host: str) -> None:
        ask = _introduce(address_of((7000 + i).to_bytes(32, "big"))).introduce
        relay.on_introduce((6000 + i).to_bytes(32, "big"), (host, 4000), ask, None, T0)

    for i in range(int(punch.RELAY_NETWORK_BURST)):
        with pytest.raises(Rejected, match="unknown_target"):  # past every rate check
            introduce(i, f"203.0.113.{i + 1}")
    with pytest.raises(Rejected, match="introduce_rate"):
        introduce(100, "203.0.113.200")
    with pytest.raises(Rejected, match="unknown_target"):
        introduce(101, "198.51.100.1")


# ------------------------------------------------------------ sixth mutation round (h-mut6)

AT_RELAY: Endpoint = ("198.18.0.1", 4000)


def _asking_me(seed: int) -> tuple[Punching, bytes, bytes, pb.Introduce]:
    """A node that wants ``contact`` and has asked ``relay`` about it (one round, at T0):
    the node, the contact's key, the relay's key, the Introduce it sent."""
    me = Punching(_keys(1, seed)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    address = address_of(contact)
    me.want(address, T0)
    (ask,) = me.tick(T0, {address: [(relay, AT_RELAY)]}, {address})
    return me, contact, relay, ask.frame.introduce


def test_an_introduce_of_ours_is_forgotten_at_its_deadline() -> None:
    """docs/PROTOCOL.md, "12.6": an Introduce of ours is pending INTRODUCE_TIMEOUT_S; at
    that instant it is gone (its answer is ``unsolicited``) and the timer moves on."""
    me, contact, relay, introduce = _asking_me(230)
    deadline = T0 + punch.INTRODUCE_TIMEOUT_S
    assert me.next_due() <= deadline
    me.tick(deadline, {}, {address_of(contact)})
    assert me.asked == {} and me.next_due() > deadline
    answer = pb.Introduced(key=contact, nonce=introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1)
    with pytest.raises(Rejected, match="unsolicited"):
        me.on_answer(relay, AT_RELAY, answer, deadline)


def test_a_punched_pair_is_let_go_exactly_punch_linger_s_after_its_last_use() -> None:
    """docs/PROTOCOL.md, "12.6": a pair the contact keeps answering is kept until, and
    not at, PUNCH_LINGER_S after its last use (here the punch itself)."""
    me = Punching(_keys(1, 231)[0], T0)
    contact, relay = _keys(1)[0], _keys(1, 150)[0]
    me.set_contacts([contact])
    at = _punch_pair(me, contact, relay, T0)
    address = address_of(contact)
    now = T0
    while now + 10 < T0 + PUNCH_LINGER_S:  # the contact answers every 10 s: alive
        now += 10
        me.heard(address, at, now)
        me.tick(now, {}, set())
    me.heard(address, at, T0 + PUNCH_LINGER_S - 0.001)
    me.tick(T0 + PUNCH_LINGER_S - 0.001, {}, set())
    assert me.hop(address) == (contact, at)
    me.tick(T0 + PUNCH_LINGER_S, {}, set())
    assert me.hop(address) is None


def test_a_request_is_held_relay_wait_s_and_not_at_its_deadline() -> None:
    """docs/PROTOCOL.md, "12.6": the relay holds a request RELAY_WAIT_S: the other
    side's request at that very instant finds nothing to match."""
    relay = Punching(_keys(1, 232)[0], T0)
    a, b = _keys(2, 233)
    at = {a: ("198.18.1.1", 4000), b: ("198.18.2.1", 4000)}
    assert len(relay.on_introduce(a, at[a], _introduce(address_of(b)).introduce, (b, at[b]), T0))
    with pytest.raises(Rejected, match="unknown_target"):
        relay.on_introduce(b, at[b], _introduce(address_of(a)).introduce, None, T0 + RELAY_WAIT_S)


def test_rounds_of_introduce_back_off_doubling_punch_retry_s() -> None:
    """docs/PROTOCOL.md, "12.6": round n + 1 follows round n after PUNCH_RETRY_S *
    2 ** (n - 1): 5 s, then 10, then 20."""
    me = Punching(_keys(1, 234)[0], T0)
    contact = _keys(1)[0]
    me.set_contacts([contact])
    address = address_of(contact)
    me.want(address, T0)
    now = T0
    for n in range(1, 4):
        me.tick(now, {}, {address})  # round n (no relay known: asks nobody)
        gap = punch.PUNCH_RETRY_S * 2 ** (n - 1)
        assert me.due_wants(now + gap - 0.001) == []
        assert me.due_wants(now + gap) == [address]
        now += gap


def test_relays_are_asked_only_for_a_wanted_contact_with_no_attempt_under_way() -> None:
    """docs/PROTOCOL.md, "12.6": ``ask_relays`` (the asks ending a round's lookup) asks
    nothing for a contact no longer wanted, nor for one whose attempt is under way."""
    me = Punching(_keys(1, 235)[0], T0)
    unwanted, trying = _keys(2)
    me.set_contacts([unwanted, trying])
    others = [(key, (f"198.18.{i}.1", 4000)) for i, key in enumerate(_keys(3, 160), 1)]
    assert me.ask_relays(address_of(unwanted), others, T0, spend=False) == []
    address = address_of(trying)
    relay = _keys(1, 150)[0]
    me.want(address, T0)
    (ask,) = me.tick(T0, {address: [(relay, AT_RELAY)]}, {address})
    answer = pb.Introduced(
        key=trying, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1
    )
    assert me.on_answer(relay, AT_RELAY, answer, T0) and address in me.attempts
    assert me.ask_relays(address, others, T0, spend=False) == []
    assert me.asked == {}


def test_a_late_answer_for_a_contact_punched_meanwhile_starts_no_attempt() -> None:
    """A round asks several relays; the first answer punches the pair, and a second
    relay's answer then pings nobody: the contact is met already."""
    me = Punching(_keys(1, 236)[0], T0)
    contact = _keys(1)[0]
    me.set_contacts([contact])
    address = address_of(contact)
    relays = [(key, (f"198.18.{i}.1", 4000)) for i, key in enumerate(_keys(2, 150), 1)]
    me.want(address, T0)
    first, second = me.tick(T0, {address: relays}, {address})
    answers = [
        pb.Introduced(key=contact, nonce=s.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1)
        for s in (first, second)
    ]
    (ping,) = me.on_answer(relays[0][0], relays[0][1], answers[0], T0)
    assert me.pong(address, ("198.18.7.7", 1), ping.frame.ping.challenge, T0)
    assert me.on_answer(relays[1][0], relays[1][1], answers[1], T0) == []
    assert address not in me.attempts and me.started == 1


def test_an_answer_with_an_endpoint_out_of_shape_is_malformed() -> None:
    me, contact, relay, introduce = _asking_me(237)
    answer = pb.Introduced(key=contact, nonce=introduce.nonce, ip=bytes([198, 18, 7]), port=1)
    with pytest.raises(Rejected) as refused:
        me.on_answer(relay, AT_RELAY, answer, T0)
    assert refused.value.reason == "malformed" and me.attempts == {}


def test_a_notice_from_the_relay_we_are_asking_about_that_contact_asks_nothing_more() -> None:
    """docs/PROTOCOL.md, "12.6": the relay we asked tells the contact, whose Introduce
    makes the relay notify us in turn: we are asking it already, so nothing more goes."""
    me, contact, relay, _ = _asking_me(238)
    assert me.on_notice(relay, AT_RELAY, contact, T0) == []
    assert len(me.asked) == 1


def test_the_notices_budget_per_network_remembers_relay_limiter_keys_networks() -> None:
    """docs/PROTOCOL.md, "12.6": the budget of notices answered per relay's network of
    origin remembers the RELAY_LIMITER_KEYS most recent networks, no more (a bound on
    memory): notices from 4,096 other networks push out one whose burst was spent, which
    is then answered again once the node-wide budget has a token."""
    me = Punching(_keys(1, 239)[0], T0)
    contact = _keys(1)[0]
    me.set_contacts([contact])
    home: Endpoint = ("198.18.1.1", 4000)
    relays = iter(i.to_bytes(32, "big") for i in range(1, 10_000))
    for _ in range(int(punch.NOTICES_PER_NETWORK_BURST)):
        assert len(me.on_notice(next(relays), home, contact, T0)) == 1
    with pytest.raises(Rejected, match="punch_rate"):
        me.on_notice(next(relays), home, contact, T0)
    for i in range(punch.RELAY_LIMITER_KEYS):
        with contextlib.suppress(Rejected):  # most refused by the wider budgets
            me.on_notice(next(relays), (f"10.{i // 256}.{i % 256}.1", 4000), contact, T0)
    later = T0 + 1.0  # the node-wide budget refills 4 tokens, a network's 1/15
    assert len(me.on_notice(next(relays), home, contact, later)) == 1
