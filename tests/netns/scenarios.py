"""Topologies and measurements shared by the namespace tests and ``bench/nat.py``.

Each builder makes its hosts in a given :class:`~tests.netns.harness.Internet` and
starts real processes there: relays are ``comm-tui node`` processes on public hosts,
end hosts are ``tests/netns/agent.py`` nodes. Latency of a text is the recipient's
``received`` stamp minus the sender's ``sent`` stamp (one machine, one clock).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.netns.harness import Agent, Host, Internet, NsProcess, Router, wait_listening

RELAY_PORT = 7400
JOIN_TIMEOUT_S = 30.0


@dataclass
class Relays:
    hosts: list[Host]
    procs: list[NsProcess]

    @property
    def endpoints(self) -> list[str]:
        return [host.endpoint(RELAY_PORT) for host in self.hosts]


def start_relays(net: Internet, count: int = 3) -> Relays:
    """``count`` public ``comm-tui node`` relays; each after the first bootstraps to r1."""
    hosts = [net.public_host(f"r{i}") for i in range(1, count + 1)]
    procs = [hosts[0].node(port=RELAY_PORT)]
    first = [hosts[0].endpoint(RELAY_PORT)]
    procs += [host.node(port=RELAY_PORT, bootstrap=first, wait=False) for host in hosts[1:]]
    for proc in procs[1:]:
        wait_listening(proc, JOIN_TIMEOUT_S)
    return Relays(hosts, procs)


@dataclass
class TwoHomes:
    """Alice and Bob, each behind a NAT router of their own, contacts of each other."""

    relays: Relays
    home_a: Router
    home_b: Router
    alice_host: Host
    bob_host: Host
    alice: Agent
    bob: Agent
    extra: dict[str, Agent] = field(default_factory=dict)


def introduce(a: Agent, b: Agent) -> None:
    """Make two agents contacts of each other (each adds the other's card)."""
    a.add_contact(b.name, b.card)
    b.add_contact(a.name, a.card)


def two_homes(
    net: Internet,
    kind_a: str = "restricted",
    kind_b: str = "restricted",
    *,
    relays: int = 3,
    udp_timeout: int = 20,
    stream_timeout: int = 30,
    bootstrap_all: bool = False,
) -> TwoHomes:
    """The issue's topology: public relays, Alice and Bob behind NATs, joined and introduced.

    Each end host bootstraps to r1 only (as a user given one address would), unless
    ``bootstrap_all``. Returns once both have a peer and know each other's card.
    """
    r = start_relays(net, relays)
    boot = r.endpoints if bootstrap_all else r.endpoints[:1]
    home_a = net.nat_router(
        "home-a", kind_a, udp_timeout=udp_timeout, stream_timeout=stream_timeout
    )
    home_b = net.nat_router(
        "home-b", kind_b, udp_timeout=udp_timeout, stream_timeout=stream_timeout
    )
    alice_host, bob_host = home_a.host("alice"), home_b.host("bob")
    alice = alice_host.agent(bootstrap=boot)
    bob = bob_host.agent(bootstrap=boot)
    introduce(alice, bob)
    alice.wait_peers(1, JOIN_TIMEOUT_S)
    bob.wait_peers(1, JOIN_TIMEOUT_S)
    return TwoHomes(r, home_a, home_b, alice_host, bob_host, alice, bob)


def text_latency(sender: Agent, recipient: Agent, text: str, timeout_s: float) -> float | None:
    """Send one text and wait for it: seconds from send to receipt, None if not in time."""
    sent = sender.send(recipient.card, text)
    try:
        received = recipient.received(str(sent["text_id"]), timeout_s)
    except AssertionError:
        return None
    return float(received["t"]) - float(sent["stamp"])


def burst_latencies(
    sender: Agent,
    recipient: Agent,
    count: int,
    *,
    interval_s: float,
    timeout_s: float,
) -> list[float | None]:
    """``count`` texts, one every ``interval_s`` (not waiting for each), then their latencies.

    Each text is waited for up to ``timeout_s`` after it was sent; None marks a text that
    did not arrive in time.
    """
    sent: list[dict[str, object]] = []
    for number in range(count):
        sent.append(sender.send(recipient.card, f"burst text {number}"))
        time.sleep(interval_s)
    latencies: list[float | None] = []
    for event in sent:
        stamp = float(str(event["stamp"]))
        remaining = max(0.0, stamp + timeout_s - time.time())
        try:
            got = recipient.received(str(event["text_id"]), remaining)
        except AssertionError:
            latencies.append(None)
            continue
        latencies.append(float(got["t"]) - stamp)
    return latencies


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    if len(ordered) == 1:
        return ordered[0]
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(latencies: Sequence[float | None]) -> dict[str, float | int | None]:
    """Delivered count, p50, p99 and max of the delivered texts' latencies (seconds)."""
    got = [x for x in latencies if x is not None]
    return {
        "texts": len(latencies),
        "delivered": len(got),
        "p50_s": round(percentile(got, 0.5), 3) if got else None,
        "p99_s": round(percentile(got, 0.99), 3) if got else None,
        "max_s": round(max(got), 3) if got else None,
        "mean_s": round(statistics.fmean(got), 3) if got else None,
    }
