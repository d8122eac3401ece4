"""Reachability (docs/PROTOCOL.md, "12"): observed endpoints, dial-back probes, the
classification and client mode, attach with pushes, keep-alive interval learning.

The pure rules are tested on ``comm_tui.protocol.reachability`` directly; the node's
behaviour on ``tests/natwire.py``, real ``Node`` cores behind modelled NAT routers on a
fake clock, so minutes of idling take milliseconds and every run is the same.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from comm_tui.cli import _stats_line
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import NodeService, local_endpoints
from comm_tui.protocol import reachability as reach
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import HELLO_MIN_PADDING_BYTES, Codec
from comm_tui.protocol.node import SEALED_BYTES, Node
from comm_tui.protocol.reachability import (
    ATTACH_MAX,
    ATTACH_PER_NETWORK,
    ATTACH_PER_WIDE_NETWORK,
    KEEPALIVE_CEILING_S,
    KEEPALIVE_FLOOR_S,
    KEEPALIVE_START_S,
    OBSERVATION_NETWORKS_MAX,
    OBSERVATION_QUORUM,
    OBSERVATION_TTL_S,
    PROBE_REQUEST_BURST,
    AttachTable,
    ClientBindings,
    IntervalLearner,
    ObservationTally,
    Prober,
    classify,
    probe_target_allowed,
    solicitation_key,
)
from comm_tui.protocol.reachability_agent import ReachabilityAgent, parse_seen, seen_endpoint
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database
from tests.natwire import NatKind, NatWire
from tests.wire import T0, peer_addresses

LOCAL: frozenset[Endpoint] = frozenset({("10.0.0.2", 4000)})
PUBLIC_AT: Endpoint = ("198.19.0.1", 4000)


def tally_of(*seen: tuple[str, Endpoint], now: float = T0) -> ObservationTally:
    tally = ObservationTally()
    for network, endpoint in seen:
        tally.add(network, endpoint, now)
    return tally


# ---------------------------------------------------------------- 12.1 observations


def test_an_endpoint_needs_a_quorum_of_networks() -> None:
    two = tally_of(("198.18.1.0/24", PUBLIC_AT), ("198.18.2.0/24", PUBLIC_AT))
    assert two.agreed(T0) is None
    three = tally_of(*[(f"198.18.{i}.0/24", PUBLIC_AT) for i in range(OBSERVATION_QUORUM)])
    assert three.agreed(T0) == PUBLIC_AT


def test_one_network_counts_once_however_many_peers_it_has() -> None:
    """Keys are free: 50 hostile peers of one /24 are one vote, the latest one."""
    tally = tally_of(*[(f"198.18.{i}.0/24", PUBLIC_AT) for i in range(3)])
    for port in range(50):
        tally.add("203.0.113.0/24", ("203.0.113.9", 1000 + port), T0)
    assert tally.agreed(T0) == PUBLIC_AT
    assert len(tally.recent(T0)) == 4


def test_a_hostile_minority_of_networks_cannot_set_our_endpoint() -> None:
    honest = [(f"198.18.{i}.0/24", PUBLIC_AT) for i in range(3)]
    liars = [(f"203.0.{i}.0/24", ("203.0.113.9", 666)) for i in range(2)]
    assert tally_of(*honest, *liars).agreed(T0) == PUBLIC_AT
    # As many liars as honest networks: nobody has a majority, nothing is agreed.
    liars.append(("203.0.9.0/24", ("203.0.113.9", 666)))
    assert tally_of(*honest, *liars).agreed(T0) is None


def test_observations_are_bounded_and_age_out() -> None:
    tally = ObservationTally()
    for i in range(OBSERVATION_NETWORKS_MAX):
        assert tally.add(f"net{i}", PUBLIC_AT, T0 + i)
    # Full: newcomers cannot push out live observations (an attacker's many networks
    # would flush the honest ones), while those already counted refresh their slots.
    for i in range(10):
        assert not tally.add(f"new{i}", ("203.0.113.9", 666), T0 + 100)
    assert tally.add("net0", PUBLIC_AT, T0 + 100)
    assert len(tally) == OBSERVATION_NETWORKS_MAX
    assert not any(n.startswith("new") for n in tally.recent(T0 + 100))
    # Once the least recently heard has expired, a newcomer takes its slot.
    later = T0 + 1 + OBSERVATION_TTL_S + 1
    assert tally.add("new0", ("203.0.113.9", 666), later)
    assert "net1" not in tally.recent(later) and "new0" in tally.recent(later)
    old = tally_of(*[(f"n{i}", PUBLIC_AT) for i in range(3)])
    assert old.agreed(T0 + OBSERVATION_TTL_S) == PUBLIC_AT
    assert old.agreed(T0 + OBSERVATION_TTL_S + 1) is None


def test_a_nat_is_suspected_when_most_networks_see_us_elsewhere() -> None:
    away = tally_of(("a", PUBLIC_AT), ("b", PUBLIC_AT), ("c", next(iter(LOCAL))))
    assert away.nat_suspected(LOCAL, T0)
    home = tally_of(("a", PUBLIC_AT), ("b", next(iter(LOCAL))), ("c", next(iter(LOCAL))))
    assert not home.nat_suspected(LOCAL, T0)
    # A tie is no majority: one liar cannot outweigh one honest network.
    tie = tally_of(("a", PUBLIC_AT), ("b", next(iter(LOCAL))))
    assert not tie.nat_suspected(LOCAL, T0)
    # Not knowing where we are bound, we suspect nothing (the simulator, loopback tests).
    assert not away.nat_suspected(frozenset(), T0)


def test_a_mapping_per_destination_is_symmetric_a_lying_minority_is_not() -> None:
    ports = tally_of(*[(f"n{i}", ("198.19.0.1", 30000 + i)) for i in range(3)])
    assert ports.mapping_varies(T0)
    one_liar = tally_of(("a", PUBLIC_AT), ("b", PUBLIC_AT), ("c", ("198.19.0.1", 666)))
    assert not one_liar.mapping_varies(T0)
    assert not tally_of(("a", PUBLIC_AT)).mapping_varies(T0)
    # Two networks, two ports: nobody holds a majority (a small network's two relays).
    two = tally_of(("a", PUBLIC_AT), ("b", ("198.19.0.1", 30001)))
    assert two.mapping_varies(T0)


def test_pong_observed_round_trips_ipv4_ipv6_and_mapped() -> None:
    for endpoint in (("198.18.0.7", 4000), ("2001:2::7", 65535)):
        seen = seen_endpoint(endpoint)
        assert seen is not None and parse_seen(seen) == endpoint
    assert parse_seen(seen_endpoint(("::ffff:198.18.0.7", 9)) or pb.SeenEndpoint()) == (
        "198.18.0.7",
        9,
    )
    assert parse_seen(pb.SeenEndpoint(ip=b"\x01" * 5, port=1)) is None
    assert parse_seen(pb.SeenEndpoint(ip=b"\x01" * 4, port=0)) is None
    assert parse_seen(pb.SeenEndpoint(ip=b"\x01" * 4, port=65536)) is None


def test_a_pong_answering_a_hello_carries_what_fits() -> None:
    """A hello padded today gets our observation (even IPv6); an old minimally padded one
    gets a Pong without it, so the answer is never larger than the hello (3.3)."""
    node = Node(Identity.from_seed(b"\x01" * 32), T0, rng=random.Random(1))
    asker = Codec(Identity.from_seed(b"\x02" * 32))
    for source in (("198.18.5.5", 4000), ("2001:2::5", 4000)):
        hello = asker.encode_hello(b"c" * CHALLENGE_BYTES)
        node.receive_datagram(hello, source, T0)
        ((pong, _),) = node.datagrams_to_send()
        assert len(pong) <= len(hello)
        frame = asker.decode(pong, T0).frame
        assert frame is not None and parse_seen(frame.pong.observed) == source
    short = pb.Packet.FromString(asker.encode_hello(b"d" * CHALLENGE_BYTES))
    short.hello.padding = bytes(HELLO_MIN_PADDING_BYTES)
    data = short.SerializeToString()
    node.receive_datagram(data, ("198.18.5.6", 4000), T0)
    ((pong, _),) = node.datagrams_to_send()
    frame = asker.decode(pong, T0).frame
    assert len(pong) <= len(data)
    assert frame is not None and not frame.pong.HasField("observed")


# ---------------------------------------------------------------- 12.2 probes


def test_probe_targets_are_unicast_and_loopback_only_for_loopback() -> None:
    far: Endpoint = ("198.18.0.9", 4000)
    assert probe_target_allowed(("198.19.0.1", 4000), far)
    assert not probe_target_allowed(("127.0.0.1", 22), far)
    assert probe_target_allowed(("127.0.0.1", 4001), ("127.0.0.1", 4000))
    assert not probe_target_allowed(("224.0.0.251", 5353), far)
    assert not probe_target_allowed(("0.0.0.0", 4000), far)
    assert not probe_target_allowed(("255.255.255.255", 4000), far)
    assert not probe_target_allowed(("198.19.0.1", 0), far)


def test_solicitation_is_by_ip_except_on_loopback() -> None:
    assert solicitation_key(("198.18.0.1", 1)) == solicitation_key(("198.18.0.1", 2))
    assert solicitation_key(("127.0.0.1", 1)) != solicitation_key(("127.0.0.1", 2))


def test_prober_fails_only_after_every_round_and_declines_prove_nothing() -> None:
    prober = Prober()
    for round_ in range(reach.PROBE_ROUNDS):
        prober.asked(b"a%d" % round_, b"k", T0)
        prober.expire(T0 + reach.PROBE_TIMEOUT_S)
        expected = "failed" if round_ == reach.PROBE_ROUNDS - 1 else "none"
        assert prober.outcome == expected
    declined = Prober()
    declined.asked(b"x", b"k", T0)
    declined.from_helper(b"x", T0 + 1)
    assert declined.outcome == "none" and declined.next_at == T0 + 1 + reach.PROBE_RETRY_S
    solicited = Prober()
    solicited.asked(b"y", b"k", T0)
    assert solicited.arrived(b"y", True, T0 + 1)
    assert solicited.outcome == "none"
    arrived = Prober()
    arrived.asked(b"z", b"k", T0)
    assert not arrived.arrived(b"other", False, T0 + 1)
    assert arrived.arrived(b"z", False, T0 + 1) and arrived.outcome == "arrived"
    mapped = Prober()
    for round_ in range(reach.PROBE_ROUNDS):
        mapped.asked(b"m%d" % round_, b"k", T0, mapping=True)
        mapped.expire(T0 + reach.PROBE_TIMEOUT_S)
    assert mapped.outcome == "none" and not mapped.mapping_ok  # a mapping's loss is no failure


@pytest.mark.parametrize(
    ("seen", "local", "probe", "mapped", "kind"),
    [
        ([("a", PUBLIC_AT)], LOCAL, "none", True, "public"),
        (
            [(f"n{i}", ("198.19.0.1", 30000 + i)) for i in range(3)],
            LOCAL,
            "arrived",
            False,
            "symmetric",
        ),
        ([], LOCAL, "arrived", False, "unknown"),
        ([("a", PUBLIC_AT)], LOCAL, "arrived", False, "cone"),
        ([("a", next(iter(LOCAL)))], LOCAL, "arrived", False, "public"),
        ([("a", PUBLIC_AT)], LOCAL, "failed", False, "cone"),
        ([("a", next(iter(LOCAL)))], LOCAL, "failed", False, "firewalled"),
        ([("a", PUBLIC_AT)], frozenset(), "failed", False, "unknown"),
        ([("a", PUBLIC_AT)], LOCAL, "none", False, "unknown"),
    ],
)
def test_classification(
    seen: list[tuple[str, Endpoint]],
    local: frozenset[Endpoint],
    probe: reach.ProbeOutcome,
    mapped: bool,
    kind: str,
) -> None:
    assert classify(tally_of(*seen), local, probe, mapped, T0) == kind


# ---------------------------------------------------------------- 12.5 interval learning


def converge(timeout_s: float) -> IntervalLearner:
    """Run echo tests against a NAT that forgets idle mappings after ``timeout_s``."""
    learner = IntervalLearner()
    now = T0
    while (delay := learner.next_delay(now)) is not None:
        if delay < timeout_s:
            learner.succeeded(delay, now)
        else:
            learner.lost(delay, now)
        now += 60
    return learner


@pytest.mark.parametrize("timeout_s", [15.0, 30.0, 65.0, 100.0])
def test_the_interval_converges_below_the_nat_timeout(timeout_s: float) -> None:
    learner = converge(timeout_s)
    assert learner.interval < timeout_s
    assert learner.interval >= min(timeout_s * 0.6, KEEPALIVE_CEILING_S)


def test_the_interval_keeps_to_floor_and_ceiling() -> None:
    assert converge(1.0).interval == KEEPALIVE_FLOOR_S
    assert converge(10_000.0).interval == KEEPALIVE_CEILING_S


def test_a_loss_at_the_interval_in_use_shrinks_it_at_once() -> None:
    learner = IntervalLearner()
    learner.lost(KEEPALIVE_START_S, T0)
    assert learner.interval == KEEPALIVE_START_S * reach.ECHO_SHRINK
    grown = IntervalLearner()
    grown.succeeded(60.0, T0)
    grown.lost(40.0, T0 + 1)  # the NAT changed: 60 s no longer holds
    assert grown.good == 0.0 and grown.interval == 40.0 * reach.ECHO_SHRINK


def test_a_converged_interval_is_tested_upward_again_later() -> None:
    learner = converge(30.0)
    done_at = learner.converged_at
    assert done_at is not None and learner.next_delay(done_at + 1) is None
    assert learner.next_delay(done_at + reach.ECHO_RETEST_S) is not None


# ---------------------------------------------------------------- 12.4 attach table


def test_attach_table_keeps_one_entry_per_key_and_expires_it() -> None:
    table = AttachTable()
    assert table.attach(b"a" * 20, b"k", ("198.19.0.1", 1), "n", 20, T0)
    assert not table.attach(b"a" * 20, b"k", ("198.19.0.1", 1), "n", 20, T0 + 1)
    assert table.attach(b"a" * 20, b"k", ("198.19.0.1", 2), "n", 20, T0 + 2)  # moved
    assert len(table) == 1
    life = reach.ATTACH_LIFETIME_INTERVALS * 20
    assert table.get(b"a" * 20, T0 + 2 + life - 1) is not None
    assert table.get(b"a" * 20, T0 + 2 + life) is None
    table.expire(T0 + 2 + life)
    assert len(table) == 0
    # Intervals out of bounds are clamped: nobody is kept for a day.
    table.attach(b"b" * 20, b"k", ("198.19.0.1", 1), "n", 86_400, T0)
    assert table.get(b"b" * 20, T0 + 3 * KEEPALIVE_CEILING_S) is None


def test_attach_table_bounds_each_network_and_the_whole() -> None:
    table = AttachTable()
    for i in range(ATTACH_PER_NETWORK + 5):
        table.attach(i.to_bytes(20, "big"), b"k", ("203.0.113.9", i + 1), "hostile", 20, T0 + i)
    assert table.per_network("hostile") == ATTACH_PER_NETWORK
    assert table.evicted == 5
    assert table.get((0).to_bytes(20, "big"), T0 + 30) is None  # its oldest went first
    honest = b"\xff" * 20
    table.attach(honest, b"h", ("198.19.0.1", 1), "honest", 20, T0)
    for i in range(ATTACH_MAX):  # 64 networks of 64 wide networks
        at = (f"10.{i % 64}.0.1", i + 1)
        table.attach((1000 + i).to_bytes(20, "big"), b"k", at, f"n{i % 64}", 20, T0)
    assert len(table) == ATTACH_MAX
    assert table.get(honest, T0 + 1) is not None  # the fullest networks gave way


def test_attach_table_bounds_each_wide_network_and_evicts_from_its_fullest() -> None:
    """docs/PROTOCOL.md, "12.4" (red5, finding 5): a wide network holds at most
    ``ATTACH_PER_WIDE_NETWORK`` clients, past it the least recent of its fullest network
    gives way; past the bound in all, the fullest network of the fullest wide network
    does, so the /48s of one /32 (each holding fewer clients than an honest household)
    evict only their own."""
    table = AttachTable()
    household = [bytes([0xF0 + i]) * 20 for i in range(2)]
    for i, address in enumerate(household):
        table.attach(address, b"h", ("198.19.0.1", i + 1), "198.19.0.0/24", 20, T0)
    others = [bytes([0xE0 + i]) * 20 for i in range(12)]
    for i, address in enumerate(others):  # one each of 12 networks of 12 wide networks
        table.attach(address, b"o", (f"10.{i}.0.1", 1), f"10.{i}.0.0/24", 20, T0)
    for i in range(ATTACH_PER_WIDE_NETWORK + 1):  # the /48s of one /32
        at = (f"2001:db8:{i:x}::1", 4000)
        table.attach(i.to_bytes(20, "big"), b"k", at, f"2001:db8:{i:x}::/48", 20, T0)
    assert len(table) == 2 + 12 + ATTACH_PER_WIDE_NETWORK
    assert table.get((0).to_bytes(20, "big"), T0 + 1) is None  # the oldest of the /32 went
    for i in range(ATTACH_MAX):  # 16 wide networks, each holding 64 /24s of one client
        at = (f"100.{64 + i % 16}.{i // 16}.1", 4000)
        network = f"100.{64 + i % 16}.{i // 16}.0/24"
        table.attach((5000 + i).to_bytes(20, "big"), b"k", at, network, 20, T0)
    assert len(table) == ATTACH_MAX
    assert all(table.get(a, T0 + 1) is not None for a in household + others)


def test_delayed_echoes_come_due_once() -> None:
    table = AttachTable()
    table.attach(b"a" * 20, b"k", ("198.19.0.1", 1), "n", 20, T0)
    table.owe_echo(b"a" * 20, b"c" * 16, T0 + 30)
    assert table.next_echo() == T0 + 30
    assert table.echoes_due(T0 + 29) == []
    assert table.echoes_due(T0 + 30) == [(b"k", ("198.19.0.1", 1), b"c" * 16)]
    assert table.echoes_due(T0 + 31) == [] and table.next_echo() is None
    assert table.get(b"a" * 20, T0 + 30) is not None  # kept while its echo was owed


# ---------------------------------------------------------------- on emulated NATs


def nat_network(
    relays: int, clients: dict[str, NatKind], *, seed: int = 1
) -> tuple[NatWire, list[Node], dict[str, Node]]:
    """``relays`` public nodes joined to each other, then ``clients`` behind NATs."""
    wire = NatWire()
    publics = [wire.add_public(seed + i) for i in range(relays)]
    for relay in publics[1:]:
        relay.bootstrap(wire.endpoint(publics[0]), T0)
    wire.pump(T0)
    wire.run(T0, T0 + 20)
    behind = {
        name: wire.add_behind(100 + i, kind) if kind != "public" else wire.add_public(100 + i)
        for i, (name, kind) in enumerate(clients.items())
    }
    for client in behind.values():
        client.bootstrap(wire.endpoint(publics[0]), T0 + 21)
    wire.pump(T0 + 21)
    return wire, publics, behind


class Clock:
    """Steps a ``NatWire`` in small fake-time steps, checking a rule at every one."""

    def __init__(self, wire: NatWire, now: float, step: float = 0.1) -> None:
        self.wire, self.now, self.step = wire, now, step
        self.checks: list[Callable[[], None]] = []

    def run_until(self, end: float) -> None:
        while self.now < end:
            self.now = round(self.now + self.step, 3)
            self.wire.tick(self.now)
            for check in self.checks:
                check()

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def wait_for(self, done: Callable[[], bool], limit_s: float) -> float:
        """Fake seconds until ``done()``; ``limit_s`` if it never is."""
        start = self.now
        while not done() and self.now - start < limit_s:
            self.run_for(self.step)
        return self.now - start


def never_in_a_table(relays: list[Node], clients: list[Node]) -> Callable[[], None]:
    def check() -> None:
        for relay in relays:
            for client in clients:
                assert client.address not in peer_addresses(relay)

    return check


def test_each_nat_kind_is_classified_and_clients_never_enter_a_table() -> None:
    kinds: dict[str, NatKind] = {
        "restricted": "restricted",
        "symmetric": "symmetric",
        "full_cone": "full_cone",
        "firewall": "firewall",
    }
    wire, relays, nodes = nat_network(24, {**kinds, "public": "public"})  # type: ignore[dict-item]
    clock = Clock(wire, T0 + 21, step=1.0)
    natted = [nodes[name] for name in ("restricted", "symmetric", "full_cone")]
    clock.checks.append(never_in_a_table([*relays, nodes["public"]], natted))
    clock.run_for(1300)
    got = {name: node.reachability.kind for name, node in nodes.items()}
    assert got == {
        "restricted": "cone",
        "symmetric": "symmetric",
        "full_cone": "cone",
        "firewall": "firewalled",
        "public": "public",
    }
    assert [n.client_mode for n in nodes.values()] == [True, True, True, True, False]
    assert nodes["restricted"].reachability.public_endpoint == wire.public_endpoint_of(
        nodes["restricted"]
    )
    assert nodes["public"].reachability.public_endpoint == wire.endpoint(nodes["public"])
    # The firewalled host was not known to be unreachable at first (its address is its
    # own); once it is, it leaves the table of every relay it speaks to.
    firewalled = nodes["firewall"]
    bound = [r for r in relays if r.address in firewalled._reachability.bindings.bindings]
    assert bound and all(firewalled.address not in peer_addresses(r) for r in bound)


def idle_then_send(
    wire: NatWire, clock: Clock, alice: Node, bob: Node, texts: int, idle_s: float
) -> list[float]:
    latencies = []
    for i in range(texts):
        clock.run_for(idle_s if i == 0 else 37.0)
        before = len(wire.texts(bob))
        alice.send_text(bob.identity.public, f"text {i}", clock.now)
        wire.pump(clock.now)
        latencies.append(clock.wait_for(lambda b=before: len(wire.texts(bob)) > b, 60.0))
    return latencies


def test_after_idling_past_the_nat_timeout_a_text_is_pushed_at_once() -> None:
    """Both behind address-and-port-restricted NATs (20 s / 30 s), 5 minutes idle: every
    text arrives within 1 s of fake time (it took 23 s after 45 s idle before)."""
    wire, relays, nodes = nat_network(12, {"alice": "restricted", "bob": "restricted"})
    alice, bob = nodes["alice"], nodes["bob"]
    clock = Clock(wire, T0 + 21)
    clock.checks.append(never_in_a_table(relays, [alice, bob]))
    clock.run_for(60)
    assert bob.client_mode and alice.client_mode
    latencies = idle_then_send(wire, clock, alice, bob, 20, idle_s=300.0)
    assert max(latencies) <= 1.0, latencies
    assert sum(r.stats.pushed_to_clients for r in relays) > 0


def test_without_keepalives_the_same_text_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: clients that never send a keep-alive miss the push after idling, so
    the test above is one that can fail."""
    monkeypatch.setattr(
        ReachabilityAgent, "_send_attach", lambda self, address, binding, delay, now: None
    )
    wire, _, nodes = nat_network(12, {"alice": "restricted", "bob": "restricted"})
    clock = Clock(wire, T0 + 21)
    latencies = idle_then_send(wire, clock, nodes["alice"], nodes["bob"], 3, idle_s=300.0)
    assert max(latencies) > 1.0, latencies


def test_a_returning_client_gets_what_waited_within_two_seconds() -> None:
    """Bob's machine sleeps 10 minutes (his NAT forgets every mapping); Alice writes
    meanwhile. Waking, Bob attaches again at once and the relays push the text."""
    wire, _, nodes = nat_network(12, {"alice": "restricted", "bob": "restricted"})
    alice, bob = nodes["alice"], nodes["bob"]
    clock = Clock(wire, T0 + 21)
    clock.run_for(120)
    wire.offline.add(wire.endpoint(bob))
    clock.run_for(60)
    alice.send_text(bob.identity.public, "while you were away", clock.now)
    wire.pump(clock.now)
    clock.run_for(540)
    assert wire.texts(bob) == []
    wire.offline.discard(wire.endpoint(bob))
    waited = clock.wait_for(lambda: len(wire.texts(bob)) == 1, 10.0)
    assert waited <= 2.0
    assert [t.text for t in wire.texts(bob)] == ["while you were away"]


def test_keepalives_cost_one_datagram_per_binding_per_interval() -> None:
    """Once the interval is learned (NAT: 20 s unanswered, 30 s established), an idle
    client sends one Attach per binding per interval, under 200 B/s in all."""
    wire, _, nodes = nat_network(12, {"bob": "restricted"})
    bob = nodes["bob"]
    clock = Clock(wire, T0 + 21, step=0.5)
    clock.run_for(900)
    interval = bob.keepalive_interval
    assert interval is not None and KEEPALIVE_START_S <= interval < 30.0
    bindings = len(bob._reachability.bindings.bindings)
    attaches, bytes_ = bob.stats.sent_by_kind["attach"], bob.stats.bytes_in + bob.stats.bytes_out
    window = 1200.0
    clock.run_for(window)
    sent = bob.stats.sent_by_kind["attach"] - attaches
    assert sent <= bindings * (window / interval + 1)
    rate = (bob.stats.bytes_in + bob.stats.bytes_out - bytes_) / window
    assert rate < 200.0, rate


def test_the_interval_is_learned_from_the_nat() -> None:
    """A NAT keeping idle mappings 90 s: the client's interval grows past the start."""
    wire = NatWire()
    relays = [wire.add_public(1 + i) for i in range(8)]
    for relay in relays[1:]:
        relay.bootstrap(wire.endpoint(relays[0]), T0)
    wire.pump(T0)
    bob = wire.add_behind(90, "restricted", unanswered_s=90.0, established_s=90.0)
    bob.bootstrap(wire.endpoint(relays[0]), T0 + 1)
    wire.pump(T0 + 1)
    Clock(wire, T0 + 1, step=1.0).run_for(1800)
    interval = bob.keepalive_interval
    assert interval is not None and 60.0 <= interval < 90.0


def test_a_new_public_endpoint_makes_the_client_attach_again_at_once() -> None:
    """Bob's router reboots with another public IP: at the first keep-alive answer that
    shows it, Bob attaches again to every relay, and texts reach him at once again."""
    wire, relays, nodes = nat_network(12, {"alice": "restricted", "bob": "restricted"})
    alice, bob = nodes["alice"], nodes["bob"]
    clock = Clock(wire, T0 + 21)
    clock.run_for(300)
    attached = [r for r in relays if r.attached_client(bob.address)]
    assert len(attached) == reach.ATTACH_RELAYS
    wire.reboot(bob, "198.19.222.1")
    clock.wait_for(lambda: bob.stats.reannounced > 0, 60.0)
    assert bob.stats.reannounced == 1
    waited = clock.wait_for(
        lambda: all(
            (r.attached_client(bob.address) or (b"", ("", 0)))[1][0] == "198.19.222.1"
            for r in attached
        ),
        2.0,
    )
    assert waited < 2.0
    assert idle_then_send(wire, clock, alice, bob, 3, idle_s=60.0) == [0.0, 0.0, 0.0]


def test_across_a_symmetric_nat_every_text_arrives_through_relays() -> None:
    wire, relays, nodes = nat_network(12, {"alice": "restricted", "bob": "symmetric"})
    clock = Clock(wire, T0 + 21)
    clock.checks.append(never_in_a_table(relays, list(nodes.values())))
    latencies = idle_then_send(wire, clock, nodes["alice"], nodes["bob"], 10, idle_s=300.0)
    assert max(latencies) <= 2.0, latencies


# ---------------------------------------------------------------- bounds, on the node


def relay_node(seed: int = 1) -> Node:
    return Node(Identity.from_seed(bytes([seed]) * 32), T0, rng=random.Random(seed))


def validated_send(
    codec: Codec, to: Node, frame: pb.Frame, source: Endpoint, now: float
) -> list[pb.Frame]:
    """Deliver ``frame`` from ``source``, answer the validation ping it draws, and return
    the frames ``to`` sent back to ``source``."""
    to.receive_datagram(codec.encode_frame(to.identity.key, frame, now), source, now)
    out: list[pb.Frame] = []
    for data, dest in to.datagrams_to_send():
        if dest != source:
            continue
        got = codec.decode(data, now).frame
        assert got is not None
        if got.WhichOneof("body") == "ping":
            pong = pb.Frame(pong=pb.Pong(challenge=got.ping.challenge), client=True)
            to.receive_datagram(codec.encode_frame(to.identity.key, pong, now), source, now)
            for data2, dest2 in to.datagrams_to_send():
                if dest2 == source:
                    answer = codec.decode(data2, now).frame
                    assert answer is not None
                    out.append(answer)
        else:
            out.append(got)
    return out


def attach(challenge: bytes = b"c" * 16, echo_after_s: int = 0) -> pb.Frame:
    return pb.Frame(
        attach=pb.Attach(challenge=challenge, interval_s=20, echo_after_s=echo_after_s),
        client=True,
    )


def test_an_attach_is_answered_only_once_the_address_is_validated() -> None:
    relay = relay_node()
    client = Codec(Identity.from_seed(b"\x09" * 32))
    source: Endpoint = ("198.19.9.1", 4000)
    relay.receive_datagram(client.encode_frame(relay.identity.key, attach(), T0), source, T0)
    frames = [client.decode(d, T0).frame for d, _ in relay.datagrams_to_send()]
    assert [f.WhichOneof("body") for f in frames if f is not None] == ["ping"]
    assert relay.attached_client(client.identity.address) is None
    ping = frames[0]
    assert ping is not None
    pong = pb.Frame(pong=pb.Pong(challenge=ping.ping.challenge), client=True)
    relay.receive_datagram(client.encode_frame(relay.identity.key, pong, T0), source, T0)
    answers = [client.decode(d, T0).frame for d, e in relay.datagrams_to_send() if e == source]
    assert [(a.WhichOneof("body"), a.pong.challenge) for a in answers if a] == [("pong", b"c" * 16)]
    assert answers[0] is not None and parse_seen(answers[0].pong.observed) == source
    assert relay.attached_client(client.identity.address) == (client.identity.key, source)
    assert client.identity.address not in peer_addresses(relay)  # a client never enters it


def test_attached_clients_are_bounded_per_network_and_counted() -> None:
    relay = relay_node()
    for i in range(ATTACH_PER_NETWORK + 3):
        client = Codec(Identity.from_seed(bytes([10 + i]) * 32))
        validated_send(client, relay, attach(), ("203.0.113.7", 5000 + i), T0 + i * 0.01)
    assert relay.stats.attach_evicted == 3
    assert relay._reachability.attached.per_network("203.0.113.0/24") == ATTACH_PER_NETWORK


def test_a_delayed_echo_is_clamped_and_sent_when_due() -> None:
    relay = relay_node()
    client = Codec(Identity.from_seed(b"\x09" * 32))
    source: Endpoint = ("198.19.9.1", 4000)
    validated_send(client, relay, attach(), source, T0)
    answers = validated_send(client, relay, attach(b"e" * 16, echo_after_s=100_000), source, T0)
    assert answers == []
    due = T0 + reach.ECHO_MAX_DELAY_S
    assert relay.get_timer() <= due
    relay.handle_timer(due - 1)
    assert [d for d, e in relay.datagrams_to_send() if e == source] == []
    relay.handle_timer(due)
    echoes = [client.decode(d, due).frame for d, e in relay.datagrams_to_send() if e == source]
    assert [f.pong.challenge for f in echoes if f is not None] == [b"e" * 16]


def test_a_client_serves_no_attach_and_no_probe_request() -> None:
    wire, _, nodes = nat_network(4, {"bob": "restricted"})
    Clock(wire, T0 + 21, step=1.0).run_for(5)
    bob = nodes["bob"]
    assert bob.client_mode
    asker = Codec(Identity.from_seed(b"\x33" * 32))
    before = bob.stats.rejected["not_relay"]
    validated_send(asker, bob, attach(), ("198.18.77.1", 4000), T0 + 26)
    validated_send(
        asker,
        bob,
        pb.Frame(probe_request=pb.ProbeRequest(nonce=b"n" * 16)),
        ("198.18.77.1", 4000),
        T0 + 26,
    )
    assert bob.stats.rejected["not_relay"] == before + 2


def test_probe_requests_are_rate_limited_per_network() -> None:
    _, relays, _ = nat_network(6, {})
    relay = relays[0]
    requests = int(PROBE_REQUEST_BURST) + 4
    dial_backs = relay.stats.sent_by_kind["dial_back"]
    for i in range(requests):
        asker = Codec(Identity.from_seed(bytes([60 + i]) * 32))
        frame = pb.Frame(probe_request=pb.ProbeRequest(nonce=bytes([i]) * 16))
        validated_send(asker, relay, frame, ("203.0.113.7", 6000 + i), T0 + 21)
    assert relay.stats.rejected["probe_rate"] == requests - int(PROBE_REQUEST_BURST)
    assert relay.stats.sent_by_kind["dial_back"] - dial_backs == int(PROBE_REQUEST_BURST)


def test_a_probe_request_is_declined_smaller_when_nobody_can_send_it() -> None:
    relay = relay_node()
    asker = Codec(Identity.from_seed(b"\x44" * 32))
    frame = pb.Frame(probe_request=pb.ProbeRequest(nonce=b"n" * 16))
    request = len(asker.encode_frame(relay.identity.key, frame, T0))
    answers = validated_send(asker, relay, frame, ("198.19.4.1", 4000), T0)
    assert [a.probe.nonce for a in answers] == [b"n" * 16]
    declined = relay._codec.encode_frame(asker.identity.key, answers[0], T0)
    assert len(declined) <= request


def test_a_dial_back_sends_a_smaller_probe_and_never_to_loopback_or_broadcast() -> None:
    prober = relay_node(2)
    asker = Codec(Identity.from_seed(b"\x55" * 32))
    victim = Identity.from_seed(b"\x66" * 32)
    source: Endpoint = ("198.18.55.1", 4000)

    def dial(target: Endpoint, nonce: bytes) -> pb.Frame:
        seen = seen_endpoint(target)
        assert seen is not None
        return pb.Frame(dial_back=pb.DialBack(key=victim.key, target=seen, nonce=nonce))

    validated_send(asker, prober, dial(("198.19.66.1", 4000), b"a" * 16), source, T0)
    frame = dial(("198.19.66.2", 4000), b"b" * 16)
    request = len(asker.encode_frame(prober.identity.key, frame, T0))
    prober.receive_datagram(asker.encode_frame(prober.identity.key, frame, T0), source, T0)
    ((probe, dest),) = [(d, e) for d, e in prober.datagrams_to_send() if e != source]
    assert dest == ("198.19.66.2", 4000) and len(probe) < request
    opened = Codec(victim).decode(probe, T0).frame
    assert opened is not None and opened.probe.nonce == b"b" * 16
    for target in (("127.0.0.1", 22), ("255.255.255.255", 9), ("224.0.0.1", 9)):
        validated_send(asker, prober, dial(target, b"c" * 16), source, T0)
    assert prober.stats.rejected["bad_target"] == 3
    assert prober.stats.sent_by_kind["probe"] == 2


def test_dial_backs_are_rate_limited_per_network() -> None:
    prober = relay_node(2)
    victim = Identity.from_seed(b"\x66" * 32)
    seen = seen_endpoint(("198.19.66.1", 4000))
    assert seen is not None
    sends = int(reach.DIAL_BACK_BURST) + 5
    for i in range(sends):
        asker = Codec(Identity.from_seed(bytes([70 + i]) * 32))
        frame = pb.Frame(dial_back=pb.DialBack(key=victim.key, target=seen, nonce=bytes([i]) * 16))
        validated_send(asker, prober, frame, ("203.0.113.8", 7000 + i), T0)
    assert prober.stats.sent_by_kind["probe"] == int(reach.DIAL_BACK_BURST)
    assert prober.stats.rejected["probe_rate"] == sends - int(reach.DIAL_BACK_BURST)


def test_hostile_peers_of_few_networks_cannot_move_a_client() -> None:
    """Two hostile relays (two networks) tell Bob he is elsewhere in every Pong: his
    public endpoint stays the one the honest networks agree on."""
    wire, relays, nodes = nat_network(8, {"bob": "restricted"})
    bob = nodes["bob"]
    lie = seen_endpoint(("203.0.113.66", 666))
    for liar in relays[:2]:
        liar._pong = lambda challenge, addr: pb.Frame(  # type: ignore[method-assign]
            pong=pb.Pong(challenge=challenge, observed=lie)
        )
    Clock(wire, T0 + 21, step=1.0).run_for(300)
    assert bob.reachability.public_endpoint == wire.public_endpoint_of(bob)
    assert bob._reachability.tally.recent(T0 + 321)["198.18.1.0/24"] == ("203.0.113.66", 666)


def test_only_an_undisturbed_echo_teaches_the_interval() -> None:
    bindings = ClientBindings()
    relays = [(bytes([i]) * 20, bytes([i]) * 32, (f"198.18.{i}.1", 4000)) for i in (1, 2)]
    bindings.choose(relays, T0)
    due = bindings.due(T0)
    ((tested, _, delay),) = [d for d in due if d[2]]
    assert delay == KEEPALIVE_START_S * reach.ECHO_GROW
    assert bindings.test is not None
    bindings.test.challenge = b"c" * 16
    bindings.traffic(bindings.bindings[tested].endpoint)  # a push came meanwhile
    assert bindings.echo_answered(b"c" * 16, T0 + delay)
    assert bindings.learner.good == 0.0  # spoiled: learned nothing
    alone = ClientBindings()
    alone.choose(relays[:1], T0)
    assert [d[2] for d in alone.due(T0)] == [0.0]  # one binding: never left idle to test


def test_an_overdue_echo_is_a_loss_and_the_relay_is_attached_again() -> None:
    bindings = ClientBindings()
    relays = [(bytes([i]) * 20, bytes([i]) * 32, (f"198.18.{i}.1", 4000)) for i in (1, 2)]
    bindings.choose(relays, T0)
    ((tested, _, delay),) = [d for d in bindings.due(T0) if d[2]]
    assert bindings.test is not None
    bindings.test.challenge = b"c" * 16
    assert not bindings.expire(T0 + delay + reach.ECHO_GRACE_S - 0.1)
    assert bindings.expire(T0 + delay + reach.ECHO_GRACE_S)
    assert bindings.learner.bad == delay
    assert tested in [d[0] for d in bindings.due(T0 + delay + reach.ECHO_GRACE_S)]


def test_keepalives_leave_a_margin_below_the_longest_echo_survived() -> None:
    learner = IntervalLearner()
    learner.succeeded(60.0, T0)
    assert learner.interval == 60.0 * reach.ECHO_MARGIN


def test_a_loss_near_the_floor_ends_the_search_and_one_above_bisects_from_the_floor() -> None:
    """docs/PROTOCOL.md, "12.5": the gap is measured from the 10 s floor, so a loss at
    15 s ends the search (nothing under the floor is tried) and one at 16 s does not."""
    near = IntervalLearner()
    near.lost(KEEPALIVE_FLOOR_S + reach.ECHO_RESOLUTION_S, T0)
    assert near.converged_at == T0 and near.next_delay(T0 + 1) is None
    above = IntervalLearner()
    lost_at = KEEPALIVE_FLOOR_S + reach.ECHO_RESOLUTION_S + 1
    above.lost(lost_at, T0)
    assert above.converged_at is None
    assert above.next_delay(T0 + 1) == (KEEPALIVE_FLOOR_S + lost_at) / 2


def test_probes_are_asked_of_our_neighbourhood_and_sent_from_far_from_us() -> None:
    """A asks the nodes nearest its address (it talks to them anyway); each picks the
    node that sends the probe among those farthest from A's address (A talks least to
    them), so that the probe is seldom from someone A sent to lately."""
    wire, relays, nodes = nat_network(24, {"bob": "restricted"})
    bob = nodes["bob"]
    Clock(wire, T0 + 21, step=1.0).run_for(30)
    nearest = {e.address for e in bob.closest_peers(bob.address, reach.ATTACH_RELAYS)}
    dial_backs: list[tuple[Node, Endpoint]] = []
    real = wire.deliver

    def tap(source: Endpoint, dest: Endpoint, data: bytes, now: float) -> None:
        sender = wire.nodes.get(source)
        if sender in relays and dest in wire.nodes and sender is not None:
            frame = Codec(wire.nodes[dest].identity).decode(data, now).frame
            if frame is not None and frame.WhichOneof("body") == "dial_back":
                dial_backs.append((sender, dest))
        real(source, dest, data, now)

    wire.deliver = tap  # type: ignore[method-assign]
    for round_ in range(3):  # a few rounds, so luck cannot pass the test
        bob._reachability.prober.reset(T0 + 51 + round_)
        Clock(wire, T0 + 51 + round_, step=1.0).run_for(1)
    assert len(dial_backs) >= 5
    for server, dest in dial_backs:
        assert server.address in nearest
        order = [n.address for n in server.closest_peers(bob.address, server.peer_count)]
        assert wire.nodes[dest].address in order[len(order) // 2 :]


def test_a_probe_from_an_endpoint_we_sent_to_lately_proves_nothing() -> None:
    node = relay_node(3)
    node.set_local_endpoints([("198.18.3.1", 4000)], T0)
    helper, prober = (
        Codec(Identity.from_seed(b"\x77" * 32)),
        Codec(Identity.from_seed(b"\x78" * 32)),
    )
    known: Endpoint = ("198.18.78.1", 4000)
    node.add_known_peer(prober.identity.key, known, T0)  # we send to it: a mapping opens
    node.datagrams_to_send()
    node._reachability.prober.asked(b"s" * 16, helper.identity.key, T0)
    probe = pb.Frame(probe=pb.Probe(nonce=b"s" * 16))
    node.receive_datagram(prober.encode_frame(node.identity.key, probe, T0 + 1), known, T0 + 1)
    assert node._reachability.prober.outcome == "none"
    node._reachability.prober.asked(b"t" * 16, helper.identity.key, T0 + 1)
    later = T0 + 1 + reach.PROBE_SOLICITED_S
    probe = pb.Frame(probe=pb.Probe(nonce=b"t" * 16))
    node.receive_datagram(prober.encode_frame(node.identity.key, probe, later), known, later)
    assert node._reachability.prober.outcome == "arrived"


def test_a_new_attachment_is_handed_what_waits_for_it() -> None:
    relay = relay_node(4)
    sender = Codec(Identity.from_seed(b"\x79" * 32))
    client = Codec(Identity.from_seed(b"\x7a" * 32))
    expires_ms = (int(T0 * 1000) + 24 * 3600 * 1000) // 3_600_000 * 3_600_000
    message = pb.Message(
        recipient=client.identity.address, expires_ms=expires_ms, sealed=bytes(SEALED_BYTES)
    )
    validated_send(sender, relay, pb.Frame(message=message), ("198.18.79.1", 4000), T0)
    assert relay.status().stored_items == 1
    answers = validated_send(client, relay, attach(), ("198.19.122.1", 4000), T0 + 1)
    assert [a.message.sealed for a in answers if a.WhichOneof("body") == "message"] == [
        bytes(SEALED_BYTES)
    ]


# ---------------------------------------------------------------- on real loopback UDP


def test_local_endpoints_are_the_bound_one_or_the_routes_source() -> None:
    assert local_endpoints(("127.0.0.1", 4000), []) == {("127.0.0.1", 4000)}
    assert local_endpoints(("0.0.0.0", 4000), [("127.0.0.1", 9)]) == {("127.0.0.1", 4000)}
    # Names are never looked up here, and an IPv6 peer says nothing of an IPv4 socket;
    # a dual-stack socket (bound to ::) sends to both.
    assert local_endpoints(("0.0.0.0", 4000), [("localhost", 9), ("::1", 9)]) == set()
    assert local_endpoints(("::", 4000), [("127.0.0.1", 9)]) == {("127.0.0.1", 4000)}


async def test_nodes_on_loopback_are_relays_from_the_start(tmp_path: Path) -> None:
    """Told where they are bound, loopback nodes see that peers see them there: no NAT
    is suspected, none is a client, and they fill each other's tables as before."""
    services: list[NodeService] = []
    try:
        first: list[Endpoint] = []
        for i in range(4):
            db = Database.open(tmp_path / f"n{i}.db")
            service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0), bootstrap=first)
            await service.start()
            services.append(service)
            first = first or [service.bound or ("", 0)]
        deadline = asyncio.get_running_loop().time() + 10
        while any(s.node.peer_count < 3 for s in services):
            assert asyncio.get_running_loop().time() < deadline, "the nodes never met"
            await asyncio.sleep(0.02)
        for service in services:
            assert not service.node.client_mode
            assert service.node.reachability.kind in ("unknown", "public")
            assert service.node.reachability.public_endpoint in (None, service.bound)
            line = _stats_line(service)
            assert " client=no" in line and " reachability=" in line
    finally:
        for service in services:
            await service.stop()
            service.db.close()


def test_a_client_answering_a_hello_counts_its_flag_in_the_size() -> None:
    node = Node(Identity.from_seed(b"\x05" * 32), T0, rng=random.Random(5))
    node._reachability.client = True  # as after its first Pong showed a NAT
    asker = Codec(Identity.from_seed(b"\x06" * 32))
    hello = asker.encode_hello(b"c" * CHALLENGE_BYTES)
    node.receive_datagram(hello, ("2001:2::6", 4000), T0)
    ((pong, _),) = node.datagrams_to_send()
    assert len(pong) <= len(hello)
    frame = asker.decode(pong, T0).frame
    assert frame is not None and frame.client


def test_a_port_mapping_a_probe_reaches_makes_the_node_public() -> None:
    """Bob's router maps its port 4000 to him (as UPnP or NAT-PMP would): told of it, Bob
    has a probe sent there, is public by it, and leaves client mode; when the mapping
    goes, he is a client again."""
    wire, _, nodes = nat_network(12, {"bob": "restricted"})
    bob = nodes["bob"]
    clock = Clock(wire, T0 + 21, step=1.0)
    clock.wait_for(lambda: bob.reachability.kind == "cone", 600.0)
    assert bob.client_mode and bob.reachability.kind == "cone"
    public = wire.public_endpoint_of(bob)
    nat = wire.nat_of[wire.endpoint(bob)]
    bob.note_port_mapping(("203.0.113.1", 4000), clock.now)  # an IP nobody sees us at
    clock.run_for(30)
    assert bob.reachability.kind != "public"
    nat.forwards[public[1]] = wire.endpoint(bob)
    bob.note_port_mapping(public, clock.now)
    clock.run_for(30)
    assert bob.reachability.kind == "public" and bob.reachability.public_endpoint == public
    assert not bob.client_mode
    del nat.forwards[public[1]]
    bob.note_port_mapping(None, clock.now)
    clock.run_for(30)
    assert bob.client_mode and bob.reachability.kind == "cone"


def one_peer_behind_a_restricted_nat() -> tuple[NatWire, Node, Node]:
    """Bob behind an address-and-port-restricted NAT whose one peer is a public relay:
    nobody else to send a dial-back probe (docs/PROTOCOL.md, "12.2")."""
    wire = NatWire()
    relay = wire.add_public(1)
    bob = wire.add_behind(100, "restricted")
    bob.bootstrap(wire.endpoint(relay), T0)
    wire.pump(T0)
    return wire, relay, bob


@pytest.mark.parametrize("forwarded", [True, False])
def test_one_peer_probes_a_mapped_port_other_than_the_one_it_sees(forwarded: bool) -> None:
    """Bob's only peer sees him at his NAT's port 4000; his router maps port 5000 to him.
    The peer probes 5000 itself (its probe cannot come in through the mapping Bob's
    datagrams to it opened, which is on 4000): if the router forwards it, Bob is public
    at the mapping and a relay in the peer's table; if not, he stays a client."""
    wire, relay, bob = one_peer_behind_a_restricted_nat()
    clock = Clock(wire, T0, step=1.0)
    clock.wait_for(lambda: bob.client_mode, 30.0)
    assert bob.client_mode and bob.reachability.kind == "unknown"  # no one to dial back
    nat = wire.nat_of[wire.endpoint(bob)]
    mapping = (nat.public_ip, 5000)
    if forwarded:
        nat.forwards[5000] = wire.endpoint(bob)
    dropped = nat.dropped
    bob.note_port_mapping(mapping, clock.now)
    clock.run_for(30)
    if forwarded:
        assert bob.reachability.kind == "public" and bob.reachability.public_endpoint == mapping
        assert not bob.client_mode and bob.address in relay._table
        # The router drops the mapping without a word: the next check finds it out.
        del nat.forwards[5000]
        clock.run_for(reach.PROBE_RECHECK_S + reach.PROBE_TIMEOUT_S)
        assert bob.client_mode and bob.reachability.kind == "unknown"
    else:
        assert bob.client_mode and bob.reachability.kind == "unknown"
        assert bob.address not in relay._table
        assert nat.dropped > dropped  # the peer's probe of port 5000, kept out


@pytest.mark.parametrize("stranger_first", [True, False])
def test_a_mapping_at_the_endpoint_peers_see_is_confirmed_by_a_stranger_arriving(
    stranger_first: bool,
) -> None:
    """Bob's router maps port 4000, the port its NAT also gives his datagrams, so his one
    peer's probe would come in either way and proves nothing. A stranger reaching him
    there first does (it got in where the router keeps the port open for him): Bob is
    public. Had Bob spoken first, nothing shows the mapping works: he stays a client."""
    wire = NatWire()
    relay = wire.add_public(1)
    bob = wire.add_behind(100, "restricted")
    nat = wire.nat_of[wire.endpoint(bob)]
    mapping = wire.public_endpoint_of(bob)
    nat.forwards[mapping[1]] = wire.endpoint(bob)
    bob.note_port_mapping(mapping, T0)
    if stranger_first:
        relay.bootstrap(mapping, T0)
    else:
        bob.bootstrap(wire.endpoint(relay), T0)
    wire.pump(T0)
    clock = Clock(wire, T0, step=1.0)
    clock.run_for(60)
    if stranger_first:
        assert bob.reachability.kind == "public" and bob.reachability.public_endpoint == mapping
        assert not bob.client_mode and bob.address in relay._table
    else:
        assert bob.client_mode and bob.address not in relay._table


def test_the_tally_view_follows_new_observations_and_their_age() -> None:
    """The counted view is reused between changes, never past them: an observation
    added after a look, or one aging out after it, changes the answer at once."""
    tally = ObservationTally()
    for i in range(3):
        tally.add(f"net{i}", PUBLIC_AT, T0 + i)
    local = frozenset({PUBLIC_AT})
    assert tally.agreed(T0 + 2) == PUBLIC_AT
    assert not tally.mapping_varies(T0 + 2)
    assert not tally.nat_suspected(local, T0 + 2)
    # Three more networks see other ports of another IP: no majority for anything now.
    for port in (1, 2, 3):
        tally.add(f"other{port}", ("198.51.100.7", port), T0 + 3)
    assert tally.agreed(T0 + 3) is None
    assert not tally.mapping_varies(T0 + 3)
    assert not tally.nat_suspected(local, T0 + 3)  # three away, three here: a tie
    # The first three age out: the three left see one IP at ports that all differ.
    later = T0 + 2 + OBSERVATION_TTL_S + 1
    assert len(tally.recent(later)) == 3
    assert tally.mapping_varies(later)
    assert tally.agreed(later) is None
    assert tally.nat_suspected(local, later)
    # And once all have aged out, nothing is counted.
    assert not tally.recent(T0 + 3 + OBSERVATION_TTL_S + 1)
    assert not tally.mapping_varies(T0 + 3 + OBSERVATION_TTL_S + 1)


def test_a_network_seeing_us_elsewhere_changes_the_tally_view_at_once() -> None:
    """A refresh of the same endpoint keeps the view; a network whose observation moved,
    or came back after aging out, changes it at once."""
    tally = ObservationTally()
    for i in range(3):
        tally.add(f"net{i}", PUBLIC_AT, T0)
    assert tally.agreed(T0) == PUBLIC_AT
    tally.add("net0", PUBLIC_AT, T0 + 1)  # the same, refreshed
    assert tally.agreed(T0 + 1) == PUBLIC_AT
    moved = ("198.19.0.1", 5000)
    tally.add("net0", moved, T0 + 2)
    assert tally.agreed(T0 + 2) is None  # two of three: below the quorum
    assert tally.recent(T0 + 2)["net0"] == moved
    # net3 ages out; seen again at the same endpoint, it counts again at once.
    tally.add("net3", PUBLIC_AT, T0 + 3)
    assert tally.agreed(T0 + 3) == PUBLIC_AT
    gone = T0 + 3 + OBSERVATION_TTL_S + 1
    for i in (1, 2):
        tally.add(f"net{i}", PUBLIC_AT, gone - 1)
    assert tally.agreed(gone) is None  # net0 (moved) and net3 aged out: two left
    tally.add("net3", PUBLIC_AT, gone)
    assert tally.agreed(gone) == PUBLIC_AT


# ---------------------------------------------------------------- mutation round 3 (B)

RELAYS = [(bytes([i]) * 20, bytes([i]) * 32, (f"198.18.{i}.1", 4000)) for i in (1, 2, 3)]


def test_an_address_family_is_that_of_the_host_a_mapped_ipv6_one_ipv4() -> None:
    assert reach.family_of("198.51.100.7") == 4
    assert reach.family_of("2001:db8::7") == 6
    assert reach.family_of("::ffff:198.51.100.7") == 4
    tallies = reach.FamilyTallies()
    for i in range(3):  # three IPv6 networks (/32) see us: the IPv6 tally, not IPv4's
        assert tallies.add((f"2001:{0xDB8 + i:x}::1", 4000), ("2001:db8:ff::1", 4000), T0)
    assert len(tallies.family(6)) == 3 and len(tallies.family(4)) == 0
    assert not tallies.add(("2001:db8:9::1", 4000), ("198.51.100.7", 4000), T0)  # other family


def _tallies_seeing(observed: Endpoint) -> reach.FamilyTallies:
    tallies = reach.FamilyTallies()
    for i in range(OBSERVATION_QUORUM):
        tallies.add((f"198.18.{i}.1", 4000), observed, T0)
    return tallies


def test_judge_passes_the_probe_outcome_and_the_mapping_to_each_familys_verdict() -> None:
    """docs/PROTOCOL.md, "12.3": with networks seeing us where we are bound, a probe
    that arrived makes us public and rounds that all failed firewalled; a port mapping a
    probe reached makes us public whatever the tally says."""
    at_home = _tallies_seeing(next(iter(LOCAL)))
    assert reach.judge(at_home, LOCAL, "arrived", False, T0).kind == "public"
    assert reach.judge(at_home, LOCAL, "failed", False, T0).kind == "firewalled"
    assert reach.judge(at_home, LOCAL, "none", False, T0).kind == "unknown"
    elsewhere = _tallies_seeing(PUBLIC_AT)
    assert reach.judge(elsewhere, LOCAL, "none", True, T0).kind == "public"
    assert reach.judge(elsewhere, LOCAL, "none", False, T0).kind == "unknown"


def test_the_evidence_says_whether_the_deciding_family_suspects_a_nat() -> None:
    """The evidence whose change starts a new probe round (12.2): the agreed endpoint and
    the NAT suspicion of the deciding family, against our local endpoints of it."""
    assert _tallies_seeing(PUBLIC_AT).evidence(LOCAL, T0) == (PUBLIC_AT, True)
    home = next(iter(LOCAL))
    assert _tallies_seeing(home).evidence(LOCAL, T0) == (home, False)


def test_a_probe_target_may_be_any_port_from_1_to_65535() -> None:
    asker: Endpoint = ("198.51.100.9", 5000)
    for port, allowed in ((0, False), (1, True), (65535, True), (65536, False)):
        assert probe_target_allowed(("198.51.100.7", port), asker) is allowed


def test_an_echo_once_sent_is_forgotten_even_when_the_client_attaches_again() -> None:
    """A delayed echo goes out once (docs/PROTOCOL.md, "12.4"): a client attaching again
    after it owes nothing more, and no later rebuild of the echo queue brings it back."""
    table = AttachTable()
    a, b = b"a" * 20, b"b" * 20
    table.attach(a, b"ka", ("198.19.0.1", 1), "n", 20, T0)
    table.attach(b, b"kb", ("198.19.0.2", 1), "n", 20, T0)
    table.owe_echo(a, b"c" * 16, T0 + 5)
    assert table.echoes_due(T0 + 5) == [(b"ka", ("198.19.0.1", 1), b"c" * 16)]
    table.attach(a, b"ka", ("198.19.0.1", 1), "n", 20, T0 + 6)
    replaced = 2 * len(table) + 17  # b's echo replaced this often: the queue is rebuilt
    for i in range(replaced):
        table.owe_echo(b, bytes([i]) * 16, T0 + 100)
    assert table.echoes_due(T0 + 10) == []
    assert table.echoes_due(T0 + 100) == [(b"kb", ("198.19.0.2", 1), bytes([replaced - 1]) * 16)]


def test_choosing_relays_again_drops_those_that_left_and_keeps_those_that_stay() -> None:
    bindings = ClientBindings()
    bindings.choose(RELAYS[:2], T0)
    assert sorted(d[0] for d in bindings.due(T0)) == [RELAYS[0][0], RELAYS[1][0]]
    bindings.choose(RELAYS[1:], T0 + 1)
    assert set(bindings.bindings) == {RELAYS[1][0], RELAYS[2][0]}
    # The one that stays keeps its schedule; only the new one is due at once.
    assert [d[0] for d in bindings.due(T0 + 1)] == [RELAYS[2][0]]


def test_an_echo_that_settles_the_interval_stops_the_tests_until_the_retest() -> None:
    """docs/PROTOCOL.md, "12.5": once success and loss are within the resolution, the
    interval is settled when the echo came back, and no binding is left idle to test
    again before ECHO_RETEST_S."""
    bindings = ClientBindings()
    bindings.learner.lost(20.0, T0)  # an earlier loss at 20 s: the next test bisects
    bindings.choose(RELAYS[:2], T0)
    ((_, _, delay),) = [d for d in bindings.due(T0) if d[2]]
    assert delay == 15.0
    assert bindings.test is not None
    bindings.test.challenge = b"c" * 16
    assert bindings.echo_answered(b"c" * 16, T0 + delay)
    assert bindings.learner.converged_at == T0 + delay
    for now in (T0 + 40, T0 + 80, T0 + reach.ECHO_RETEST_S):
        assert all(d[2] == 0.0 for d in bindings.due(now))


@pytest.mark.parametrize("evidence", ["probe", "inbound"])
def test_after_evidence_of_reachability_it_takes_every_round_failing_to_call_it_failed(
    evidence: str,
) -> None:
    """docs/PROTOCOL.md, "12.2": once a probe arrived (or a stranger's datagram reached
    us), the outcome turns "failed" only after PROBE_ROUNDS rounds in a row got no probe,
    not after one."""
    prober = Prober()
    if evidence == "probe":
        prober.asked(b"first", b"k", T0)
        assert prober.arrived(b"first", False, T0)
    else:
        assert prober.inbound(T0)
    assert prober.outcome == "arrived"
    now = T0 + reach.PROBE_RECHECK_S
    for round_ in range(reach.PROBE_ROUNDS):
        prober.asked(b"r%d" % round_, b"k", now)
        now += reach.PROBE_TIMEOUT_S
        prober.expire(now)
        last = round_ == reach.PROBE_ROUNDS - 1
        assert prober.outcome == ("failed" if last else "arrived")


def test_each_recheck_after_a_failure_runs_every_round_again() -> None:
    """docs/PROTOCOL.md, "12.2": a recheck PROBE_RECHECK_S after "failed" asks again for
    PROBE_ROUNDS rounds, the next one at once after a round that got no probe; one
    failing round does not end the recheck."""
    prober = Prober()
    now = T0
    for check in range(2):
        for round_ in range(reach.PROBE_ROUNDS):
            assert prober.due(now)
            prober.asked(b"%d-%d" % (check, round_), b"k", now)
            now += reach.PROBE_TIMEOUT_S
            prober.expire(now)
            if round_ < reach.PROBE_ROUNDS - 1:
                assert prober.next_at == now  # the next round at once
        assert prober.outcome == "failed"
        assert prober.next_at == now + reach.PROBE_RECHECK_S
        now = prober.next_at
