"""Hole punching figures on the sans-IO NAT model (docs/PROTOCOL.md, "12.6").

For every pair of NAT kinds (restricted, full cone, symmetric): five public relays,
Alice and Bob behind their routers (20 s / 30 s mappings), contacts of each other.
Alice sends one text (it goes through relays and starts the introduction), then
``--texts`` more; the figures are whether the pair got punched, the fake time from the
first text to the punched pair, how many of the later texts a relay took a copy of, and
the datagrams and bytes the introduction and pings cost. Then the keep-alive cost of an
idle punched pair.

    python -m bench.punch            # the matrix and the keep-alive cost
    python -m bench.punch --json     # the same, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product

from comm_tui.crypto.identity import PublicIdentity
from comm_tui.protocol.node import Node
from comm_tui.protocol.punch import PUNCH_KEEPALIVE_S
from tests.natwire import NatKind, NatWire
from tests.wire import T0

KINDS: tuple[NatKind, ...] = ("restricted", "full_cone", "symmetric")
STEP_S = 0.05
PUNCH_FRAMES = ("introduce", "introduced", "ping", "pong")


def network(kind_a: NatKind, kind_b: NatKind) -> tuple[NatWire, list[Node], Node, Node]:
    wire = NatWire()
    relays = [wire.add_public(seed) for seed in range(1, 6)]
    for relay in relays[1:]:
        wire.connect(relay, relays[0])
    for relay in relays:
        relay.lookup(relay.address, T0)
    wire.pump(T0)
    alice, bob = wire.add_behind(40, kind_a), wire.add_behind(41, kind_b)
    alice.bootstrap(wire.endpoint(relays[0]), T0)
    bob.bootstrap(wire.endpoint(relays[1]), T0)
    wire.run(T0, T0 + 10)
    alice.set_contacts([bob.identity.key], T0 + 10)
    bob.set_contacts([alice.identity.key], T0 + 10)
    return wire, relays, alice, bob


def punch_frames(nodes: list[Node]) -> int:
    return sum(n.stats.sent_by_kind[k] for n in nodes for k in PUNCH_FRAMES)


def one_pair(kind_a: NatKind, kind_b: NatKind, texts: int) -> dict[str, object]:
    wire, relays, alice, bob = network(kind_a, kind_b)
    everyone = [alice, bob, *relays]
    now = T0 + 11
    frames_before = punch_frames(everyone)
    bytes_before = sum(n.stats.bytes_out for n in everyone)
    alice.send_text(PublicIdentity(bob.identity.key), "first", now)
    wire.pump(now)
    punched_after = None
    start = now
    while now < start + 10:
        now += STEP_S
        wire.tick(now)
        if punched_after is None and bob.address in alice.punched_peers():
            punched_after = round(now - start, 2)
    stored = sum(r.stats.stored for r in relays)
    sent = [alice.send_text(PublicIdentity(bob.identity.key), f"t{i}", now) for i in range(texts)]
    wire.pump(now)
    wire.run(now, now + 30, 0.5)
    delivered = sum(wire.states(alice, t)[-1:] == ["delivered"] for t in sent)
    return {
        "alice": kind_a,
        "bob": kind_b,
        "punched": bob.address in alice.punched_peers(),
        "punched_after_s": punched_after,
        "texts": texts,
        "delivered": delivered,
        "relay_copies": sum(r.stats.stored for r in relays) - stored,
        "punch_frames": punch_frames(everyone) - frames_before,
        "all_bytes_first_10_s": sum(n.stats.bytes_out for n in everyone) - bytes_before,
    }


def keepalive_cost(minutes: float) -> dict[str, object]:
    """Bytes/s both ends spend on an idle punched pair (lingering after the last text)."""
    wire, _, alice, bob = network("restricted", "restricted")
    now = T0 + 11
    alice.send_text(PublicIdentity(bob.identity.key), "first", now)
    wire.pump(now)
    wire.run(now, now + 10, 0.5)
    assert bob.address in alice.punched_peers()
    now += 10.5
    pings = [n.stats.sent_by_kind["ping"] + n.stats.sent_by_kind["pong"] for n in (alice, bob)]
    watched: list[int] = []
    hosts = {wire.endpoint(alice), wire.endpoint(bob)}
    routers = {wire.public_endpoint_of(n)[0] for n in (alice, bob)}

    def watch(source: tuple[str, int], dest: tuple[str, int], data: bytes) -> bool:
        if source in hosts and dest[0] in routers:
            watched.append(len(data))
        return False

    wire.drop = watch
    wire.run(now, now + minutes * 60, 1.0)
    after = [n.stats.sent_by_kind["ping"] + n.stats.sent_by_kind["pong"] for n in (alice, bob)]
    seconds = minutes * 60
    return {
        "idle_s": seconds,
        "keepalive_interval_s": PUNCH_KEEPALIVE_S,
        "datagrams_between_them": len(watched),
        "bytes_per_s_between_them": round(sum(watched) / seconds, 2),
        "pings_and_pongs_sent": [b - a for a, b in zip(pings, after, strict=True)],
        "still_punched": bob.address in alice.punched_peers(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=20)
    parser.add_argument("--idle-minutes", type=float, default=4.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    matrix = [one_pair(a, b, args.texts) for a, b in product(KINDS, KINDS)]
    idle = keepalive_cost(args.idle_minutes)
    if args.json:
        json.dump({"matrix": matrix, "keepalive": idle}, sys.stdout, indent=2)
        print()
        return 0
    print("alice       bob         punched  after_s  delivered  relay_copies  punch_frames")
    for row in matrix:
        print(
            f"{row['alice']:<11} {row['bob']:<11} {row['punched']!s:<8} "
            f"{row['punched_after_s']!s:<8} {row['delivered']}/{row['texts']:<7} "
            f"{row['relay_copies']:<13} {row['punch_frames']}"
        )
    print("idle punched pair:", idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
