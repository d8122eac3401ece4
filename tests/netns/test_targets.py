"""Issue 10's targets, CI-sized, on emulated internets with real processes.

Each test is a smaller version of a ``bench/nat.py`` item (45 s of idle past a 20 s /
30 s NAT instead of 5 minutes, 10 texts instead of 100) that asserts the issue's bound.
Tests of a feature this build lacks are expected failures that do not run (``run=False``:
they would only burn CI time); on a build with the feature they are ordinary tests. The
port-mapping target is tests/netns/test_portmap_netns.py (h-portmap's).
"""

from __future__ import annotations

import time

import pytest

from tests.netns import features
from tests.netns.harness import Internet
from tests.netns.scenarios import burst_latencies, introduce, summary, text_latency, two_homes

# The quiet is past both conntrack timeouts (20 s unanswered, 30 s answered). With 9 relays
# every routing table is full (k = 8), so no node keeps looking itself up after joining:
# on a network of 5 those lookups go on for minutes and keep the mappings open by chance.
# Without keep-alives every mapping is gone ~48 s after the last text, and the next text
# waited 52 s (bench/RESULTS.md, "Issue 10").
RELAYS = 9
IDLE_S = 60.0
TEXTS = 10
INTERVAL_S = 0.3
IDLE_BYTES_PER_S = 200.0
IDLE_COST_S = 30.0

needs_reach = pytest.mark.xfail(
    not features.has_reachability(), reason="needs h-reach (keep-alives)", run=False
)
needs_lan = pytest.mark.xfail(
    not features.has_lan_discovery(), reason="needs h-lan (LAN discovery)", run=False
)
needs_hints = pytest.mark.xfail(
    not features.has_card_hints(), reason="needs h-lan (card hints)", run=False
)


@needs_reach
@pytest.mark.timeout(150)
def test_texts_arrive_at_once_after_idle_past_nat_timeouts(net: Internet) -> None:
    """Targets: p99 <= 1 s after idle across two restricted NATs; idle cost < 200 B/s.

    CI-sized: 60 s of quiet and 10 texts (the bench: 5 minutes and 100). The idle cost is
    counted over the quiet's last 30 s, when the joins' own lookups are over.
    """
    world = two_homes(
        net, "restricted", "restricted", relays=RELAYS, udp_timeout=20, stream_timeout=30
    )
    assert text_latency(world.alice, world.bob, "before the quiet", 30.0) is not None
    world.alice_host.count_udp()
    # The quiet itself: both routers forget every mapping nothing refreshes.
    time.sleep(IDLE_S - IDLE_COST_S)
    before = world.alice_host.udp_counters()
    started = time.monotonic()
    time.sleep(IDLE_COST_S)
    after = world.alice_host.udp_counters()
    idle_bytes_per_s = (
        after["out_bytes"] + after["in_bytes"] - before["out_bytes"] - before["in_bytes"]
    ) / (time.monotonic() - started)
    latencies = burst_latencies(
        world.alice, world.bob, TEXTS, interval_s=INTERVAL_S, timeout_s=30.0
    )
    figures = summary(latencies)
    assert figures["delivered"] == TEXTS, figures
    assert figures["p99_s"] is not None and figures["p99_s"] <= 1.0, figures
    assert idle_bytes_per_s < IDLE_BYTES_PER_S, idle_bytes_per_s


@pytest.mark.timeout(90)
def test_every_text_crosses_a_symmetric_nat(net: Internet) -> None:
    """Target: across a symmetric NAT every text is delivered, p99 <= 2 s."""
    world = two_homes(net, "symmetric", "restricted")
    latencies = burst_latencies(
        world.alice, world.bob, TEXTS, interval_s=INTERVAL_S, timeout_s=30.0
    )
    figures = summary(latencies)
    assert figures["delivered"] == TEXTS, figures
    assert figures["p99_s"] is not None and figures["p99_s"] <= 2.0, figures
    # And back, from behind the restricted NAT to the symmetric one.
    back = burst_latencies(world.bob, world.alice, 3, interval_s=INTERVAL_S, timeout_s=30.0)
    assert summary(back)["delivered"] == 3


@pytest.mark.timeout(90)
def test_recipient_back_from_offline_gets_what_waited(net: Internet) -> None:
    """Target: a recipient behind NAT who comes back gets what waited within 2 s."""
    world = two_homes(net, "restricted", "restricted")
    world.bob.quit()
    sent = world.alice.send(world.bob.card, "while you were away")
    world.alice.state(str(sent["text_id"]), "sent", 30.0)
    bob = world.bob_host.agent(bootstrap=world.relays.endpoints[:1])
    got = bob.received(str(sent["text_id"]), 30.0)
    assert float(got["t"]) - float(bob.info["t"]) <= 2.0


@needs_lan
@pytest.mark.timeout(60)
def test_lan_hosts_without_internet_exchange_a_text(net: Internet) -> None:
    """Target: two hosts on one LAN, no internet, no bootstrap: a text within 5 s of start."""
    lan = net.lan("office", hosts=2)
    start = time.time()
    a, b = (host.agent() for host in lan.hosts)
    introduce(a, b)
    sent = a.send(b.card, "hello over the LAN")
    got = b.received(str(sent["text_id"]), 30.0)
    assert float(got["t"]) - start <= 5.0


@needs_hints
@pytest.mark.timeout(60)
def test_fresh_node_joins_through_a_card_with_hints(net: Internet) -> None:
    """Target: a fresh node with only a card carrying hints delivers a text within 5 s."""
    relays = [net.public_host(f"r{i}") for i in (1, 2)]
    relays[0].node()
    relays[1].node(bootstrap=[relays[0].endpoint()])
    bob_host = net.public_host("bob")
    # On its public address (not 0.0.0.0), which its card then names as a hint.
    bob = bob_host.agent(bootstrap=[relays[0].endpoint()], listen_ip=bob_host.ip)
    bob.wait_peers(1, 30.0)
    card = features.card_with_hints(bob)
    fresh_host = net.nat_router("home").host("fresh")
    start = time.time()
    fresh = fresh_host.agent()
    fresh.add_contact("bob", card)
    sent = fresh.send(card, "found you")
    fresh.state(str(sent["text_id"]), "delivered", 30.0)
    assert time.time() - start <= 5.0
