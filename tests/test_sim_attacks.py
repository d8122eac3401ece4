"""The issue-8 adversaries do their attack: what they send, from where, at what rate.

These test the attackers, not the protocol's resistance: each assertion holds whether
the core under attack is vulnerable or fixed.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from comm_tui.crypto.identity import PublicIdentity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.routing import Endpoint, distance
from comm_tui.sim import internals
from comm_tui.sim.adversary import (
    FillAdversary,
    HelloFloodAdversary,
    SybilAdversary,
    TamperAdversary,
    fetch_amplification,
)
from comm_tui.sim.network import SimNetwork, SimNode
from comm_tui.sim.scenario import Scenario, _Run, run

Sent = list[tuple[bytes, Endpoint, Endpoint]]


def _know(net: SimNetwork, sim: SimNode, *others: SimNode) -> None:
    for other in others:
        sim.node._table.observe(
            other.node.identity.key, other.node.address, other.endpoint, net.now
        )
    sim.node.joined = True


def _tap(net: SimNetwork) -> Sent:
    sent: Sent = []
    net.tap = lambda data, source, dest: sent.append((data, source, dest))
    return sent


def _frames(sent: Sent, sims: list[SimNode], source: Endpoint | None = None) -> list[pb.Frame]:
    """Boxed frames among ``sent`` that a node in ``sims`` can open (from ``source``)."""
    codecs = {s.endpoint: internals.make_codec(s.node.identity) for s in sims}
    out = []
    for data, src, dest in sent:
        if dest not in codecs or (source is not None and src != source):
            continue
        try:
            decoded = codecs[dest].decode(data, 0.0 + _now[0])
        except internals.Rejected:
            continue
        if decoded.frame is not None:
            out.append(decoded.frame)
    return out


_now = [0.0]


def test_tamper_flips_the_stem_flag_and_races_poisoned_copies() -> None:
    net = SimNetwork(11)
    recipient, *rest = (net.add_node() for _ in range(4))
    # The tamperer nearest the recipient, the sender farthest: the tamperer relays.
    tamperer, near, sender = sorted(
        rest, key=lambda s: distance(s.node.address, recipient.node.address)
    )
    adversary = TamperAdversary(net, tamperer, seed=1)
    _know(net, sender, tamperer)
    _know(net, tamperer, sender, recipient, near)
    _know(net, recipient, tamperer)
    _know(net, near, tamperer)
    sent = _tap(net)
    net.do(sender, lambda n: n.send_text(recipient.node.identity.public, "hi", net.now))
    net.run_for(1)
    _now[0] = net.now
    from_tamperer = _frames(sent, [recipient, near], tamperer.endpoint)
    messages = [f.message for f in from_tamperer if f.WhichOneof("body") == "message"]
    assert messages, "the tamperer sent no message on"
    assert adversary.rewritten["message_stem"] >= 1
    assert any(m.stem for m in messages)  # the poisoned copy races in the stem
    # Its own copies: to the node near the target, never to the target itself.
    assert adversary.raced >= 1
    assert adversary.injected == adversary.raced
    assert adversary.injected_bytes > 1000 * adversary.injected // 2


def test_tamper_moves_every_endpoint_in_nodes_answers() -> None:
    net = SimNetwork(12)
    asker, tamperer, *others = (net.add_node() for _ in range(5))
    adversary = TamperAdversary(net, tamperer, seed=2)
    _know(net, asker, tamperer)
    _know(net, tamperer, *others)
    sent = _tap(net)
    net.do(asker, lambda n: n.lookup(others[0].node.address, net.now))
    net.run_for(0.5)
    _now[0] = net.now
    answers = [
        f.nodes
        for f in _frames(sent, [asker], tamperer.endpoint)
        if f.WhichOneof("body") == "nodes"
    ]
    assert answers and answers[0].nodes
    real_ports = {o.endpoint[1] for o in others}
    assert all(info.port not in real_ports for a in answers for info in a.nodes)
    assert adversary.rewritten["nodes_endpoints"] >= len(answers[0].nodes)


def test_fill_floods_at_its_rate_from_fresh_keys_to_random_recipients() -> None:
    net = SimNetwork(13)
    honest = [net.add_node() for _ in range(4)]
    flooder = net.add_node()
    crawl = [(h.node.identity.key, h.endpoint) for h in honest]
    adversary = FillAdversary(net, flooder, crawl, seed=3, rate_per_s=200, per_key=5)
    sent = _tap(net)
    adversary.start(net.now + 1.0)
    net.run_for(0.5)
    _now[0] = net.now
    net.run_for(1.0)
    assert 200 <= adversary.junk_sent <= 210  # one tick of slack
    assert adversary.keys_used >= adversary.junk_sent // 5
    assert adversary.injected_bytes >= adversary.junk_sent * internals.SEALED_BYTES
    mine = [(d, s, t) for d, s, t in sent if s == flooder.endpoint]
    messages = [f.message for f in _frames(mine, honest) if f.WhichOneof("body") == "message"]
    assert len(messages) >= 0.9 * adversary.junk_sent * 0.5  # those sent by _now
    assert len({m.recipient for m in messages}) == len(messages)
    assert all(len(m.sealed) == internals.SEALED_BYTES for m in messages)
    assert {dest for _, _, dest in mine} == {h.endpoint for h in honest}
    keys = {pb.Packet.FromString(d).sender_key for d, _, _ in mine}
    assert len(keys) == adversary.keys_used
    assert sum(h.node.stats.datagrams_in for h in honest) >= adversary.junk_sent


def test_sybils_ping_from_forged_unreachable_addresses_and_refresh() -> None:
    net = SimNetwork(14)
    honest = [net.add_node() for _ in range(5)]
    attacker = net.add_node()
    victims = [(h.node.identity.key, h.node.address, h.endpoint) for h in honest]
    adversary = SybilAdversary(net, attacker, victims, seed=4, pool=128, per_victim=4, refresh_s=10)
    sent = _tap(net)
    adversary.start(net.now + 25)
    net.run_for(30)
    assert adversary.rounds == 3
    assert adversary.injected == 3 * len(honest) * 4
    from_sybils = [(d, s, t) for d, s, t in sent if s not in net.nodes]
    sources = {s for d, s, t in from_sybils if pb.Packet.FromString(d).sender_key}
    keys = {pb.Packet.FromString(d).sender_key for d, _, _ in from_sybils}
    assert keys <= adversary.sybil_keys and len(keys) == len(adversary.sybil_keys)
    networks = {ipaddress.ip_network(f"{host}/24", strict=False) for host, _ in sources}
    assert len(networks) == len(sources) == len(keys)  # one /24 per Sybil
    assert all(ipaddress.ip_address(h) in ipaddress.ip_network("100.64.0.0/10") for h, _ in sources)
    _now[0] = net.now
    pings = _frames([x for x in from_sybils if x[2] == honest[0].endpoint], honest)
    assert pings and all(f.WhichOneof("body") == "ping" for f in pings)


def test_hello_flood_sends_hellos_at_its_rate_from_valid_keys_and_spoofed_sources() -> None:
    net = SimNetwork(15)
    victim, attacker = net.add_node(), net.add_node()
    adversary = HelloFloodAdversary(net, attacker, victim.endpoint, seed=5, pool=2048)
    sent = _tap(net)
    adversary.start(net.now + 1.0)
    net.run_for(1.5)
    assert 5000 <= adversary.hellos <= 5050  # one tick of slack
    hellos = [(pb.Packet.FromString(d), s) for d, s, t in sent if t == victim.endpoint]
    assert len(hellos) == adversary.hellos
    assert all(p.WhichOneof("body") == "hello" for p, _ in hellos)
    assert len({s for _, s in hellos}) > 0.9 * len(hellos)
    assert not {s for _, s in hellos} & set(net.nodes)
    sample = random.Random(1).sample([p.sender_key for p, _ in hellos], 50)
    for key in sample:
        PublicIdentity(key).box_key  # noqa: B018 - a valid point, or this raises
    assert victim.node.stats.datagrams_in == adversary.hellos


def test_fetch_amplification_measurement_counts_both_sides() -> None:
    figures = fetch_amplification(items=40, fetches=2, seed=3)
    assert figures["attacker_datagrams"] == 42
    assert 0 < figures["fetch_bytes"] < 2 * 200
    assert figures["attacker_bytes"] > 40 * internals.SEALED_BYTES
    assert figures["amplification"] >= 0


@pytest.mark.parametrize("kind", ["tamper", "fill", "sybil", "hello-flood"])
def test_scenarios_run_every_new_adversary(kind: str) -> None:
    results = run(
        Scenario(
            nodes=30,
            messages=4,
            seed=2,
            adversary=kind,  # type: ignore[arg-type]
            adversaries=0.1,
            store_scale=1024,
            fill_rate_per_s=50,
            hello_rate_per_s=1000,
            attack_lead_s=1,
            attack_tail_s=1,
            sybil_pool=128,
            sybil_per_victim=2,
        )
    )
    assert results.attacker_datagrams > 0 and results.attacker_bytes > results.attacker_datagrams
    assert results.messages == 4
    assert 0.0 <= results.delivered_ratio <= 1.0
    assert "honest_store_bytes_max" in results.attack


def test_the_honest_refusals_are_every_reason_the_stats_counted() -> None:
    """The figures name every reason the honest nodes' stats counted, with its count:
    the stats are the one list of reasons (a list kept in the scenario named reasons
    no longer counted and missed new ones, such as ``net_quota``)."""
    scenario = _Run(
        Scenario(
            nodes=30,
            messages=4,
            seed=2,
            adversary="fill",
            adversaries=0.1,
            store_scale=1024,
            fill_rate_per_s=50,
            attack_lead_s=1,
            attack_tail_s=1,
        )
    )
    scenario.run()
    counted: dict[str, float] = {}
    for sim in scenario.honest:
        for reason, count in internals.rejections(sim.node).items():
            counted[f"honest_rejected_{reason}"] = (
                counted.get(f"honest_rejected_{reason}", 0) + count
            )
    figures = scenario.attack_figures()
    shown = {k: v for k, v in figures.items() if k.startswith("honest_rejected_")}
    assert shown == counted and counted
