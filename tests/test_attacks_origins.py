"""Red-team findings on per-origin bounds, each replayed in the shape that worked.

Three findings a previous pass left open, all "one origin spends what everyone shares":

1. the validated-pairs flush (docs/PROTOCOL.md, "5.1 Address validation");
2. the Introduce budget drained by fresh keys (section 12.6);
3. one observation tally for both address families (section 12.1).

Sans-IO, as tests/test_attacks.py: real ``Node`` and ``Codec`` objects, datagrams handed
over by hand from the source addresses the attacker really owns.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.net.lan import BEACONS_PER_SOURCE_BURST, BeaconReader, Sighting, encode_beacon
from comm_tui.protocol import admission
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES, VALIDATED_PER_NETWORK
from comm_tui.protocol.codec import Codec, Rejected
from comm_tui.protocol.node import (
    DEFERRED_PAIRS_MAX,
    DEFERRED_PER_NETWORK,
    Node,
)
from comm_tui.protocol.punch import (
    INTRODUCE_PADDING,
    NONCE_BYTES,
    NOTICES_PER_NETWORK_BURST,
    Punching,
)
from comm_tui.protocol.reachability import FamilyTallies, Judgement, judge
from comm_tui.protocol.reachability_agent import seen_endpoint
from comm_tui.protocol.routing import Endpoint
from tests.attack_helpers import frames_to, node
from tests.wire import T0, peer_addresses

HONEST: Endpoint = ("198.51.100.10", 4000)
ATTACKER_HOST = "203.0.113.7"


def prove(peer: Codec, relay: Node, at: Endpoint, now: float, *, client: bool) -> int:
    """``peer`` pings ``relay`` from ``at`` and answers the validation challenge it gets,
    as anyone can from an address it owns. Returns the datagrams it took (2)."""
    ping = pb.Frame(ping=pb.Ping(challenge=b"p" * CHALLENGE_BYTES), client=client)
    relay.receive_datagram(peer.encode_frame(relay.identity.key, ping, now), at, now)
    for frame in frames_to(peer, relay.datagrams_to_send(), at):
        if frame.HasField("ping"):
            pong = pb.Frame(pong=pb.Pong(challenge=frame.ping.challenge), client=client)
            relay.receive_datagram(peer.encode_frame(relay.identity.key, pong, now), at, now)
    return 2


# ---------------------------------------------------------------- 1. validated pairs


def test_one_host_validating_many_ports_cannot_flush_an_honest_peers_proof(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush: one key from one host validates a pair per source port until the table
    of validated pairs is full (2 datagrams a pair: 32,768 for the 16,384 pairs). Before,
    the honest client's proof went first (least recent), so its next FindNode waited for
    a new challenge, and pushes to it (larger than what it sent) were withheld until its
    next Attach. Now one network holds at most ``VALIDATED_PER_NETWORK`` pairs and a
    full table forgets from the largest network: the honest proof stays. (The table is
    made 256 pairs here so the test takes 600 datagrams, not 33,000; the rule is the same.)
    """
    monkeypatch.setattr(admission, "VALIDATED_PAIRS", 256)
    relay = node(1)
    honest = Codec(Identity.generate())
    now = T0
    prove(honest, relay, HONEST, now, client=True)
    assert relay._is_validated(honest.identity.key, HONEST)
    assert honest.identity.address not in peer_addresses(relay)  # a client: only its proof counts

    attacker = Codec(Identity.generate())
    spent = 0
    for port in range(1, 301):
        now += 0.001
        spent += prove(attacker, relay, (ATTACKER_HOST, port), now, client=True)
    assert spent == 600
    assert relay._is_validated(honest.identity.key, HONEST)
    assert relay._is_validated(attacker.identity.key, (ATTACKER_HOST, 300))
    oldest_kept = 300 - VALIDATED_PER_NETWORK + 1
    assert relay._is_validated(attacker.identity.key, (ATTACKER_HOST, oldest_kept))
    assert not relay._is_validated(attacker.identity.key, (ATTACKER_HOST, oldest_kept - 1))

    # What the proof buys the honest peer: its request is answered at once, not challenged.
    find = pb.Frame(find_node=pb.FindNode(query_id=b"q" * CHALLENGE_BYTES, target=bytes(20)))
    relay.receive_datagram(honest.encode_frame(relay.identity.key, find, now), HONEST, now)
    answers = frames_to(honest, relay.datagrams_to_send(), HONEST)
    bodies = [f.WhichOneof("body") for f in answers]
    assert "nodes" in bodies and "ping" not in bodies


def test_the_many_48s_of_one_32_cannot_flush_an_honest_peers_proof(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush with networks instead of ports: whoever holds an IPv6 /32 holds 65,536
    /48s, each a network of origin. One pair from each of 16,384 of them (32,768
    datagrams) left every network holding one pair, the honest peer's too, and the
    oldest of those went first: the honest proof. Now a wide network (a /32) holds at
    most ``VALIDATED_PER_WIDE_NETWORK`` pairs and a full table forgets from the wide
    network holding the most (docs/PROTOCOL.md, "5.1"). (A table of 256 pairs here.)"""
    monkeypatch.setattr(admission, "VALIDATED_PAIRS", 256)
    relay = node(1)
    honest = Codec(Identity.generate())
    now = T0
    prove(honest, relay, HONEST, now, client=True)
    attacker = Codec(Identity.generate())
    for i in range(300):
        now += 0.001
        prove(attacker, relay, (f"2001:db8:{i:x}::7", 4000), now, client=True)
    assert relay._is_validated(honest.identity.key, HONEST)
    assert relay._is_validated(attacker.identity.key, ("2001:db8:12b::7", 4000))
    assert not relay._is_validated(attacker.identity.key, ("2001:db8:0::7", 4000))


# ---------------------------------------------------------------- 2. Introduce budget


def _introduce(target: bytes) -> pb.Introduce:
    nonce = os.urandom(NONCE_BYTES)
    return pb.Introduce(target=target, nonce=nonce, padding=bytes(INTRODUCE_PADDING))


@pytest.mark.parametrize("aim", ["random targets", "the victim"])
def test_fresh_keys_from_one_network_cannot_spend_introductions_for_everyone(aim: str) -> None:
    """Before: the relay's Introduce budgets were per requester key, per target and
    node-wide (burst 40). Fresh keys from one /24 (each validated from an address it
    owns: 2 datagrams a key) asking for random addresses spent the node-wide burst with
    40 requests, and asking for the victim spent the victim's burst with 4: either way an
    honest NAT'd contact asking to meet the victim got ``introduce_rate``, silenced
    behind its NAT until the buckets refill. Now a network of origin has a budget of its
    own before the node's, and a target's budget is per network of the requester."""
    relay = Punching(Identity.generate().key, T0)
    victim = Identity.generate()
    target_at = (victim.key, ("198.51.100.30", 6000))
    for i in range(100):
        fresh = Identity.generate().key
        target = os.urandom(20) if aim == "random targets" else victim.address
        known = target_at if target == victim.address else None
        try:  # unknown_target, or a notice to the victim, then introduce_rate
            relay.on_introduce(fresh, (f"203.0.113.{1 + i}", 4000), _introduce(target), known, T0)
        except Rejected as refused:
            assert refused.reason in ("unknown_target", "introduce_rate")
    honest = Identity.generate().key
    sent = relay.on_introduce(honest, HONEST, _introduce(victim.address), target_at, T0)
    assert [s.endpoint for s in sent] == [target_at[1]]  # the victim hears of it


MANY_NETWORKS = {
    "ten /24s of ten /16s": [f"{100 + i}.0.113.7" for i in range(10)],
    "ten /48s of ten /32s": [f"2001:{0xDB8 + i:x}::7" for i in range(10)],
    "thirty /24s of thirty /16s": [f"{100 + i}.0.113.7" for i in range(30)],
    "a hundred /48s of one /32": [f"2001:db8:{i:x}::7" for i in range(100)],
}
FLOOD_S = 90.0
STEP_S = 0.25


def _under_flood(
    networks: list[str],
    flood: Callable[[str, float], None],
    honest: Callable[[int, float], bool],
    *,
    spread: bool,
) -> list[bool]:
    """Every network floods once a second: all together from the start (``spread``
    False: their bursts at once), or network i from ``i * STEP_S`` on (their buckets
    refill at spread times, as independent hosts' would, so that their rates add up).
    Every 5 s once all have started, an honest party tries its luck right after a
    step's floods. What each try got."""
    outcomes = []
    step = 0
    while step * STEP_S <= FLOOD_S:
        now = T0 + step * STEP_S
        for i, host in enumerate(networks):
            start = i if spread else 0
            if step >= start and (step - start) % int(1 / STEP_S) == 0:
                flood(host, now)
        started = not spread or step >= len(networks)
        if started and step % int(5 / STEP_S) == 0:
            outcomes.append(honest(len(outcomes), now))
        step += 1
    return outcomes


def _introduced(relay: Punching, k: int, now: float) -> bool:
    """Do two honest contacts (a wide network each), each asking once for the other,
    get introduced?"""
    alice, bob = Identity.generate(), Identity.generate()
    alice_at: Endpoint = (f"{30 + k}.51.100.10", 4000)
    bob_at: Endpoint = (f"{30 + k}.0.2.20", 5000)
    try:
        notice = relay.on_introduce(
            alice.key, alice_at, _introduce(bob.address), (bob.key, bob_at), now
        )
        assert [s.endpoint for s in notice] == [bob_at]
        answers = relay.on_introduce(bob.key, bob_at, _introduce(alice.address), None, now)
    except Rejected as refused:
        assert refused.reason == "introduce_rate"
        return False
    return sorted(s.endpoint for s in answers) == sorted([alice_at, bob_at])


@pytest.mark.parametrize("spread", ["together", "spread"])
@pytest.mark.parametrize("networks", MANY_NETWORKS.values(), ids=MANY_NETWORKS.keys())
def test_many_networks_cannot_spend_the_relays_introductions(
    networks: list[str], spread: str
) -> None:
    """Before: each network of origin had a budget of 8 Introduces (2/s) and the relay
    one of 40 (20/s): ten networks (ten /24s, or ten of the 65,536 /48s of one /32)
    spent it, and two honest contacts behind NATs were not introduced while they
    flooded. Now a network has 4 (1/s), a wide network 8 (2/s; docs/PROTOCOL.md, "5.2"),
    and the relay 256 (64/s): draining it takes 32 wide networks, or 64 networks."""
    relay = Punching(Identity.generate().key, T0)

    def flood(host: str, now: float) -> None:
        for _ in range(4):  # random targets: unknown_target, spending the budgets anyway
            try:
                ask = _introduce(os.urandom(20))
                relay.on_introduce(os.urandom(32), (host, 4000), ask, None, now)
            except Rejected as refused:
                assert refused.reason in ("unknown_target", "introduce_rate")

    outcomes = _under_flood(
        networks, flood, lambda k, now: _introduced(relay, k, now), spread=spread == "spread"
    )
    assert outcomes == [True] * len(outcomes)


@pytest.mark.parametrize("spread", ["together", "spread"])
@pytest.mark.parametrize("networks", MANY_NETWORKS.values(), ids=MANY_NETWORKS.keys())
def test_hostile_relays_of_many_networks_cannot_silence_an_honest_notice(
    networks: list[str], spread: str
) -> None:
    """Before: notices from relays of one network had a budget of 4 (one per 15 s), and
    those we answer one of 32 (1/s) for the node, shared with our own rounds: eight
    networks of our table naming our contacts spent it, an honest relay's notice went
    unanswered and our own rounds asked nobody. Now a network has 2, a wide network 4,
    the node 64 (4/s) for notices alone (docs/PROTOCOL.md, "12.6")."""
    me = Punching(Identity.generate().key, T0)
    contacts = [Identity.generate().key for _ in range(60)]
    me.set_contacts(contacts)
    hostile_named = contacts[20:]

    def flood(host: str, now: float) -> None:
        for _ in range(2):  # a relay of our table (a fresh key each time) names contacts
            key = hostile_named[int.from_bytes(os.urandom(2)) % len(hostile_named)]
            try:
                me.on_notice(os.urandom(32), (host, 7000), key, now)
            except Rejected as refused:
                assert refused.reason == "punch_rate"
            me.asked.clear()  # the hostile relays never answer: our asks time out

    def answered(k: int, now: float) -> bool:
        relay = Identity.generate().key
        try:
            asked = me.on_notice(relay, (f"{30 + k}.51.100.77", 7000), contacts[k], now)
        except Rejected as refused:
            assert refused.reason == "punch_rate"
            return False
        return [s.key for s in asked] == [relay]

    outcomes = _under_flood(networks, flood, answered, spread=spread == "spread")
    assert outcomes == [True] * len(outcomes)
    ours = address_of(contacts[19])
    me.want(ours, T0 + FLOOD_S)
    relays = [(Identity.generate().key, (f"192.0.2.{i}", 7000)) for i in range(3)]
    assert [s.endpoint for s in me.ask_relays(ours, relays, T0 + FLOOD_S, spend=True)] == [
        e for _, e in relays
    ]


# ---------------------------------------------------------------- 3. one tally, two families

LOCAL_V4: Endpoint = ("198.51.100.5", 7400)
LOCAL_V6: Endpoint = ("2001:db8:5::5", 7400)


def observe(peer: Codec, at_node: Node, at: Endpoint, observed: Endpoint, now: float) -> None:
    """``peer`` pings the node from ``at``, and answers its validation challenge with a
    Pong saying it saw the node at ``observed``: what any peer can say."""
    ping = pb.Frame(ping=pb.Ping(challenge=b"p" * CHALLENGE_BYTES), client=True)
    at_node.receive_datagram(peer.encode_frame(at_node.identity.key, ping, now), at, now)
    for frame in frames_to(peer, at_node.datagrams_to_send(), at):
        if frame.HasField("ping"):
            seen = seen_endpoint(observed)
            assert seen is not None
            pong = pb.Pong(challenge=frame.ping.challenge, observed=seen)
            data = peer.encode_frame(at_node.identity.key, pb.Frame(pong=pong, client=True), now)
            at_node.receive_datagram(data, at, now)


@pytest.mark.parametrize("lie", ["ports vary", "an IPv4 endpoint"])
def test_ipv6_observations_cannot_change_the_ipv4_verdict(lie: str) -> None:
    """Before: one tally counted both families. A dual-stack node, public on IPv4 (three
    /24s see it where it is bound, strangers reach it), was made a symmetric-NAT client
    by four IPv6 /32s reporting its IPv6 address at four ports (the most-reported IP
    was theirs), or announced an endpoint of the attacker's choice when they reported
    it as an IPv4 endpoint (4 of 7 networks: a majority). 8 datagrams from 4 networks,
    which IPv6 makes cheap. Now each family has its own tally, an observation is
    counted in the family of the path it came over (and only if of that family), and
    one family's evidence cannot take the other's `public` or its endpoint."""
    relay = node(1)
    relay.set_local_endpoints([LOCAL_V4, LOCAL_V6], T0)
    now = T0
    for i in range(3):
        now += 1.0
        observe(Codec(Identity.generate()), relay, (f"198.18.{i}.1", 5000), LOCAL_V4, now)
    assert relay.reachability.kind == "public"
    assert relay.reachability.public_endpoint == LOCAL_V4
    for i in range(4):  # within a second: no arrival refreshes the probe outcome
        now += 0.1
        claim = (LOCAL_V6[0], 40000 + i) if lie == "ports vary" else ("203.0.113.66", 666)
        observe(Codec(Identity.generate()), relay, (f"2001:db{9 + i:x}::1", 5000), claim, now)
    assert relay.reachability.kind == "public"
    assert relay.reachability.public_endpoint == LOCAL_V4
    assert not relay.client_mode


def test_an_observation_counts_only_in_the_family_of_its_path() -> None:
    """docs/PROTOCOL.md, "12.1": over IPv6 a ponger sees an IPv6 source; what it claims
    of another family is not counted anywhere."""
    tallies = FamilyTallies()
    assert not tallies.add(("2001:db9::1", 1), LOCAL_V4, T0)
    assert not tallies.add(("198.18.0.1", 1), LOCAL_V6, T0)
    assert tallies.recent(T0) == {}
    assert tallies.add(("::ffff:198.18.0.1", 1), LOCAL_V4, T0)  # IPv4-mapped is IPv4
    assert tallies.add(("2001:db9::1", 1), LOCAL_V6, T0)
    assert len(tallies.family(4)) == len(tallies.family(6)) == 1


def test_each_family_is_judged_on_its_own_and_public_wins() -> None:
    """docs/PROTOCOL.md, "12.3": public if either family is (IPv4's endpoint first);
    else IPv4's verdict when it has observations, else IPv6's; NAT if either suspects."""
    local = frozenset({LOCAL_V4, LOCAL_V6})
    tallies = FamilyTallies()
    assert judge(tallies, local, "arrived", False, T0) == Judgement("unknown", None, False)
    for i in range(3):  # IPv6 public where it is bound
        tallies.add((f"2001:db{9 + i:x}::1", 1), LOCAL_V6, T0)
    assert judge(tallies, local, "arrived", False, T0) == Judgement("public", LOCAL_V6, False)
    away = ("198.19.0.1", 1234)
    for i in range(3):  # IPv4 behind a NAT: the IPv6 verdict stands, NAT suspected
        tallies.add((f"198.18.{i}.1", 1), away, T0)
    assert judge(tallies, local, "arrived", False, T0) == Judgement("public", LOCAL_V6, False)
    assert judge(tallies, local, "failed", False, T0) == Judgement("cone", away, True)
    for i in range(3):  # and IPv4 public too: its endpoint is the one announced
        tallies.add((f"198.18.{10 + i}.1", 1), LOCAL_V4, T0)
        tallies.add((f"198.18.{20 + i}.1", 1), LOCAL_V4, T0)
    assert judge(tallies, local, "arrived", False, T0) == Judgement("public", LOCAL_V4, False)


def test_while_unknown_only_the_deciding_family_can_suspect_a_nat() -> None:
    """Before any probe decided, a node suspecting a NAT is a client (12.3); IPv6
    networks reporting it elsewhere must not make an IPv4 node seen at home one."""
    local = frozenset({LOCAL_V4, LOCAL_V6})
    tallies = FamilyTallies()
    for i in range(3):
        tallies.add((f"198.18.{i}.1", 1), LOCAL_V4, T0)
        tallies.add((f"2001:db{9 + i:x}::1", 1), ("2001:db8:5::5", 30000 + i), T0)
    assert judge(tallies, local, "none", False, T0) == Judgement("unknown", LOCAL_V4, False)
    assert tallies.evidence(local, T0) == (LOCAL_V4, False)


# ---------------------------------------------------------------- 4. LAN beacons


def test_one_lan_host_flooding_beacons_cannot_deafen_discovery() -> None:
    """Before: the budget for all sources (burst 100) was spent before the per-source
    check, so one LAN host sending 101 junk beacons (111 bytes each, any signature) in
    a burst made every other host's beacon ``rate_limited``: nobody on the LAN was found
    while it kept going (50/s). Now a source's own limit comes first: it spends at most
    its burst of 5 of the shared budget (docs/PROTOCOL.md, "13.1")."""
    reader = BeaconReader(Identity.generate().key, T0)
    alice = Identity.generate()
    junk = bytearray(encode_beacon(alice, 7000, T0))
    junk[-1] ^= 1
    for _ in range(1000):
        reader.read(bytes(junk), ("192.168.1.66", 5000), T0)
    assert reader.rejected["bad_signature"] == BEACONS_PER_SOURCE_BURST
    sighting = reader.read(encode_beacon(alice, 7000, T0), ("192.168.1.20", 5000), T0)
    assert sighting == Sighting(alice.key, ("192.168.1.20", 7000))


# ---------------------------------------------------------------- 5. notices from one relay


def test_one_hostile_relay_naming_our_contacts_cannot_spend_our_punch_budget() -> None:
    """Before: a node of our table (an honest peer cannot tell) sent us notices naming
    each of our contacts, whose keys are no secret; each was answered within the
    contact's budget and the node's (burst 32), so 32 notices spent the node's budget
    and our own rounds of introduction asked nobody until it refilled (one a second).
    Now notices from relays of one network have a budget of their own (burst 4) first
    (docs/PROTOCOL.md, "12.6")."""
    me = Punching(Identity.generate().key, T0)
    contacts = [Identity.generate().key for _ in range(40)]
    me.set_contacts(contacts)
    hostile = Identity.generate().key
    answered = 0
    for key in contacts[1:]:
        try:
            answered += len(me.on_notice(hostile, ("203.0.113.9", 7000), key, T0))
        except Rejected as refused:
            assert refused.reason == "punch_rate"
    assert answered == NOTICES_PER_NETWORK_BURST
    ours = address_of(contacts[0])
    me.want(ours, T0)
    relays = [(Identity.generate().key, (f"198.18.{i}.1", 7000)) for i in range(3)]
    asks = me.ask_relays(ours, relays, T0, spend=True)
    assert [s.endpoint for s in asks] == [e for _, e in relays]


# ---------------------------------------------------------------- 6. deferred requests


def test_fresh_keys_from_one_host_cannot_push_out_a_first_contacts_request() -> None:
    """Before: requests waiting for their pair's validation were kept for 256 pairs, the
    oldest forgotten first, one pair per key. 256 FindNodes from fresh keys of one host
    (each one datagram; keys are free) pushed an honest first contact's FindNode out
    before its pong came back: it got no answer and had to wait for its retry (2 s).
    Now a network of origin holds at most ``DEFERRED_PER_NETWORK`` waiting pairs, and
    past the bound in all the network holding the most loses its oldest."""
    relay = node(1)
    honest = Codec(Identity.generate())
    now = T0
    # A GetRecord, held until the address is proven (a FindNode is answered at once when
    # its answer fits the pair's credit: docs/PROTOCOL.md, "5.1", "First contact").
    find = pb.Frame(get_record=pb.GetRecord(query_id=b"q" * CHALLENGE_BYTES, address=bytes(20)))
    relay.receive_datagram(honest.encode_frame(relay.identity.key, find, now), HONEST, now)
    challenges = [
        f.ping.challenge
        for f in frames_to(honest, relay.datagrams_to_send(), HONEST)
        if f.HasField("ping")
    ]
    for port in range(1, 301):  # one host
        fresh = Codec(Identity.generate())
        data = fresh.encode_frame(relay.identity.key, find, now)
        relay.receive_datagram(data, (ATTACKER_HOST, port), now)
    relay.datagrams_to_send()
    assert len(relay._deferred) == DEFERRED_PER_NETWORK + 1
    for i in range(20 * DEFERRED_PER_NETWORK):  # 20 networks: past the bound in all
        fresh = Codec(Identity.generate())
        data = fresh.encode_frame(relay.identity.key, find, now)
        relay.receive_datagram(data, (f"203.0.{i % 20}.7", 4000 + i), now)
    relay.datagrams_to_send()
    pong = pb.Frame(pong=pb.Pong(challenge=challenges[0]))
    relay.receive_datagram(honest.encode_frame(relay.identity.key, pong, now), HONEST, now)
    answers = frames_to(honest, relay.datagrams_to_send(), HONEST)
    assert [f.record.query_id for f in answers if f.HasField("record")] == [b"q" * CHALLENGE_BYTES]
    assert len(relay._deferred) <= DEFERRED_PAIRS_MAX
