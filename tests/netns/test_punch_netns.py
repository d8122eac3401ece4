"""Hole punching on emulated internets (docs/PROTOCOL.md, "12.6 Hole punching").

Real processes behind real nftables NAT routers: two address-and-port-restricted NATs
punch through and their texts then go directly (no relay receives a copy, the routers
hold a direct flow between the homes); behind a symmetric NAT punching fails and every
text still arrives through the relays.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.netns import features
from tests.netns.harness import Agent, Host, Internet
from tests.netns.scenarios import burst_latencies, summary, text_latency, two_homes

pytestmark = pytest.mark.xfail(
    not features.has_punching(), reason="needs h-punch (hole punching)", run=False
)

TEXTS = 10
PUNCH_TEXTS_MAX = 10
INTERVAL_S = 0.3
# UDP length above which a datagram carries a text: a sealed payload alone is 1,061 bytes
# (docs/PROTOCOL.md, "7.1"), and nothing else a node sends comes near 1,100.
TEXT_DATAGRAM_UDP_LENGTH = 1100


def count_texts_in(host: Host, sources: list[str]) -> None:
    """Count the datagrams carrying a text that reach ``host`` from ``sources`` (IPv4
    addresses) from now on. (Relays also pass older texts between themselves.)"""
    host.nft(
        "table inet ctn_texts {\n counter texts_in {}\n"
        " chain count { type filter hook input priority 0; meta l4proto udp"
        f" ip saddr {{ {', '.join(sources)} }}"
        f' udp length > {TEXT_DATAGRAM_UDP_LENGTH} counter name "texts_in"; }}\n'
        "}\n"
    )


def texts_in(host: Host) -> int:
    data = json.loads(host.exec_ns(["nft", "-j", "list", "counters"]).stdout)
    for item in data.get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == "ctn_texts":
            return int(counter["packets"])
    raise AssertionError(f"{host.name}: count_texts_in() first")


def punched(agent: Agent, peer: Agent) -> bool:
    return peer.address in agent.status()["punched"]


def wait_clients(agents: tuple[Agent, ...], timeout_s: float) -> None:
    """Until every agent knows it sits behind a NAT (client mode, docs/PROTOCOL.md,
    "12.3"): then it attaches to its relays, where an introduction can find it."""
    deadline = time.monotonic() + timeout_s
    while not all(agent.status()["client"] for agent in agents):
        assert time.monotonic() < deadline, "not in client mode in time"
        time.sleep(0.2)
    time.sleep(1.0)  # its Attach reaches its relays


def wait_punched(a: Agent, b: Agent, timeout_s: float) -> bool:
    """Until each holds a punched pair with the other; False if not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if punched(a, b) and punched(b, a):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(120)
def test_two_restricted_nats_punch_and_texts_then_go_directly(net: Internet) -> None:
    world = two_homes(net, "restricted", "restricted")
    alice, bob = world.alice, world.bob
    wait_clients((alice, bob), 30.0)
    # A text goes through the relays and starts the introduction. Bob must be attached
    # to a relay by then; a client's first Attach can wait for its next keep-alive, so
    # Alice writes again (as a conversation would) until the pair is punched.
    for number in range(PUNCH_TEXTS_MAX):
        assert text_latency(alice, bob, f"through the relays {number}", 30.0) is not None
        if wait_punched(alice, bob, 3.0):
            break
    assert punched(alice, bob) and punched(bob, alice)
    homes = [world.home_a.wan_ip, world.home_b.wan_ip]
    for host in world.relays.hosts:
        count_texts_in(host, homes)
    figures = summary(burst_latencies(alice, bob, TEXTS, interval_s=INTERVAL_S, timeout_s=10.0))
    assert figures["delivered"] == TEXTS, figures
    assert figures["p99_s"] is not None and figures["p99_s"] <= 1.0, figures
    back = summary(burst_latencies(bob, alice, 3, interval_s=INTERVAL_S, timeout_s=10.0))
    assert back["delivered"] == 3, back
    # Neither home handed a relay a copy of any of them ...
    assert [texts_in(host) for host in world.relays.hosts] == [0] * len(world.relays.hosts)
    # ... and Alice's router holds an answered flow straight to Bob's router.
    flows = world.home_a.exec_ns(["conntrack", "-L", "-p", "udp"]).stdout.splitlines()
    direct = [f for f in flows if f"dst={world.home_b.wan_ip} " in f]
    assert direct and all("ASSURED" in f for f in direct), direct


@pytest.mark.timeout(120)
def test_a_symmetric_nat_keeps_texts_on_the_relays_and_all_arrive(net: Internet) -> None:
    world = two_homes(net, "symmetric", "restricted")
    alice, bob = world.alice, world.bob
    wait_clients((alice, bob), 30.0)
    assert text_latency(alice, bob, "through the relays", 30.0) is not None
    # The introduction happens, the pings cross nowhere (Alice's router gives Bob a new
    # port, Bob's lets in only the one the relay saw), and the attempt gives up.
    time.sleep(8.0)
    assert not punched(alice, bob) and not punched(bob, alice)
    assert alice.status()["stats"]["sent_by_kind"].get("introduce", 0) >= 1
    for host in world.relays.hosts:
        count_texts_in(host, [world.home_a.wan_ip, world.home_b.wan_ip])
    figures = summary(burst_latencies(alice, bob, TEXTS, interval_s=INTERVAL_S, timeout_s=30.0))
    assert figures["delivered"] == TEXTS, figures
    assert figures["p99_s"] is not None and figures["p99_s"] <= 2.0, figures
    assert sum(texts_in(host) for host in world.relays.hosts) >= TEXTS
