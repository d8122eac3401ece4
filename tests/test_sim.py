"""The simulator itself: determinism, link loss, churn, adversaries and the bench scripts."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.events import TextReceived, TextStateChanged
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import common_prefix_length, distance
from comm_tui.sim.adversary import (
    DropAdversary,
    EclipseAdversary,
    ForgeAckAdversary,
    identities_near,
)
from comm_tui.sim.network import LinkModel, SimNetwork, SimNode
from comm_tui.sim.scenario import Scenario, run
from comm_tui.sim.topology import warm_start
from tests.wire import peer_addresses

ROOT = Path(__file__).resolve().parent.parent


def _know(net: SimNetwork, sim: SimNode, *others: SimNode) -> None:
    for other in others:
        sim.node._table.observe(
            other.node.identity.key, other.node.address, other.endpoint, net.now
        )
    sim.node.joined = True


def _received(sim: SimNode) -> list[TextReceived]:
    return [e for e in sim.events if isinstance(e, TextReceived)]


def test_same_seed_same_figures() -> None:
    scenario = Scenario(nodes=40, messages=8, seed=3, adversaries=0.1, offline=0.25)
    first, second = run(scenario).figures(), run(scenario).figures()
    del first["wall_s"], second["wall_s"]
    assert first == second
    assert first["delivered_ratio"] == 1.0


def test_lossy_link_loses_its_share() -> None:
    net = SimNetwork(5, link=LinkModel(loss=0.3))
    a, b = net.add_node(), net.add_node()
    sent = 2000
    for _ in range(sent):
        net.send_raw(b"not a packet", a.endpoint, b.endpoint)
    net.run_for(5)
    assert 0.25 * sent < net.datagrams_lost < 0.35 * sent
    assert b.node.stats.datagrams_in == sent - net.datagrams_lost


def test_offline_node_neither_sends_nor_receives() -> None:
    net = SimNetwork(2)
    a, b = net.add_node(), net.add_node()
    net.set_online(b, False)
    net.send_raw(b"x", a.endpoint, b.endpoint)
    net.send_raw(b"x", b.endpoint, a.endpoint)
    net.run_for(5)
    assert b.node.stats.datagrams_in == 0 and a.node.stats.datagrams_in == 0
    assert net.datagrams_undelivered == 1


def test_drop_adversary_takes_messages_and_the_sender_routes_around_it() -> None:
    net = SimNetwork(7)
    sender, dropper, recipient = net.add_node(), net.add_node(), net.add_node()
    adversary = DropAdversary(net, dropper, seed=1)
    _know(net, sender, dropper)
    _know(net, dropper, sender, recipient)
    _know(net, recipient, dropper)
    net.do(sender, lambda n: n.send_text(recipient.node.identity.public, "hi", net.now))
    net.run_for(120)
    assert adversary.swallowed >= 1
    # It took no message on (the prekey records every node publishes it does store).
    assert not any(e.kind is Kind.MESSAGE for e in dropper.node._store)
    assert dropper.node.stats.messages_relayed == 0
    # It looked honest (a receipt), so the text counted as sent; but no ack came, so the
    # sender looked the recipient up (the dropper answers lookups honestly) and wrote to
    # it directly.
    states = [e.state for e in sender.events if isinstance(e, TextStateChanged)]
    assert states == ["sent", "delivered"]
    assert [e.text for e in _received(recipient)] == ["hi"]


def test_forged_acks_do_not_stop_delivery() -> None:
    net = SimNetwork(8)
    sender, forger, recipient = net.add_node(), net.add_node(), net.add_node()
    adversary = ForgeAckAdversary(net, forger, seed=1)
    _know(net, sender, forger)
    _know(net, forger, sender, recipient)
    _know(net, recipient, forger)
    net.do(sender, lambda n: n.send_text(recipient.node.identity.public, "hi", net.now))
    net.run_for(30)
    assert adversary.forged >= 1
    assert sender.node.stats.rejected["forged_ack"] >= 1
    assert [e.text for e in _received(recipient)] == ["hi"]
    states = [e.state for e in sender.events if isinstance(e, TextStateChanged)]
    assert states[-1] == "delivered"


def test_identities_near_share_the_prefix() -> None:
    target = Identity.from_seed(bytes(32)).address
    for identity in identities_near(target, 3, 8, random.Random(1)):
        assert common_prefix_length(identity.address, target) >= 8


def test_eclipse_nodes_name_only_each_other() -> None:
    net = SimNetwork(9)
    honest = [net.add_node() for _ in range(12)]
    target = honest[1].node.address
    group = [net.add_node(identity) for identity in identities_near(target, 3, 6, random.Random(2))]
    for sim in group:
        EclipseAdversary(net, sim, group, target, seed=3)
    warm_start(net, honest[2:] + group, random.Random(4))
    asker = honest[0]
    _know(net, asker, group[0])
    net.do(asker, lambda n: n.lookup(target, net.now))
    net.run_for(10)
    known = {entry.address for entry in asker.node.peers()}
    assert known <= {sim.node.address for sim in group}
    assert len(known) == len(group)


def test_warm_start_knows_the_nearest_nodes() -> None:
    net = SimNetwork(10)
    nodes = [net.add_node() for _ in range(60)]
    warm_start(net, nodes, random.Random(1))
    for sim in nodes:
        others = [o for o in nodes if o is not sim]
        nearest = min(others, key=lambda o: distance(o.node.address, sim.node.address))
        assert nearest.node.address in peer_addresses(sim.node)
        assert sim.node.joined


def test_offline_recipients_get_their_mail_after_rejoining() -> None:
    results = run(Scenario(nodes=40, messages=6, seed=2, offline=0.5, churn_per_min=0.1))
    assert results.delivered_ratio == 1.0
    assert len(results.rejoin_delays_s) == 3


def test_simulate_script_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "simulate.py"),
            "--nodes",
            "20",
            "--messages",
            "3",
            "--seed",
            "1",
            "--adversaries",
            "0.1",
            "--offline",
            "0.3",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    figures = json.loads(out.stdout)
    for name in (
        "delivered_ratio",
        "latency_p50_ms",
        "latency_p99_ms",
        "datagrams_per_message",
        "rejoin_delivery_p50_s",
        "rejoin_delivery_p99_s",
        "stored_bytes_per_node_p99",
        "wall_s",
    ):
        assert name in figures
    assert figures["messages"] == 3


def test_ceiling_script_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ceiling.py"),
            "--iterations",
            "40",
            "--relay",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    figures = json.loads(out.stdout)
    assert figures["relay_messages_per_s"] > 0
    assert figures["box_open_1200b_per_s"] > 0
