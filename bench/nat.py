"""Issue 10's targets, measured on emulated internets in network namespaces.

Real processes in real namespaces (``tests/netns/harness.py``): three public relays
(``comm-tui node``), end hosts running ``tests/netns/agent.py`` behind nftables NAT
routers whose conntrack UDP timeouts are 20 s unanswered / 30 s answered. Needs root,
``ip`` and ``nft``. Items (run all, or pick with ``--only a,c``):

a. Online to online across two address-and-port-restricted NATs: a first text, then
   ``--idle-minutes`` of quiet, then ``--texts`` texts one every ``--interval`` s; the
   first text after the quiet, p50 and p99 (target p99 <= 1 s).
b. Alice behind a symmetric NAT, Bob behind a restricted one: ``--texts`` texts; every
   one delivered, p99 (target <= 2 s).
c. Bob behind NAT goes offline, Alice sends, Bob comes back: time from his start to
   receiving what waited (target <= 2 s).
d. Idle cost over ``--idle-cost-s`` seconds of a node behind NAT and of a public relay:
   UDP datagrams and bytes per second counted by nftables in the host's namespace, and
   datagrams per binding per keep-alive interval where the node reports one (target
   < 200 B/s, at most one keep-alive per binding per interval).
e. Two hosts on one LAN with no internet and no bootstrap: time from starting both to a
   text received (target <= 5 s). Needs LAN discovery (h-lan).
f. Port mapping: a NAT-PMP responder in the router; time from start to the router's
   mapping, and whether it is gone after a clean exit (target <= 5 s). Needs port
   mapping (h-portmap).
g. A fresh node with only a card carrying endpoint hints: time from start to its first
   text delivered (target <= 5 s). Needs card hints (h-lan).

Items whose feature this build lacks print "not available on this build". ``--quick``
shrinks every item (a smoke run, well under a minute per item). Example, the full run:

    sudo python bench/nat.py --json bench/nat.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import features  # noqa: E402
from tests.netns.harness import Internet, netns_unavailable  # noqa: E402
from tests.netns.scenarios import (  # noqa: E402
    burst_latencies,
    introduce,
    start_relays,
    summary,
    text_latency,
    two_homes,
)

NOT_AVAILABLE = "not available on this build"
TEXT_TIMEOUT_S = 90.0
ITEMS = "abcdefg"

Result = dict[str, Any]


def item_a(args: argparse.Namespace) -> Result:
    """Two restricted NATs, a first text, quiet, then a burst; the issue's 23 s case."""
    with Internet() as net:
        world = two_homes(net, "restricted", "restricted", relays=args.relays)
        first = text_latency(world.alice, world.bob, "first", TEXT_TIMEOUT_S)
        if first is None:
            return {"error": "the first text did not arrive", "timeout_s": TEXT_TIMEOUT_S}
        idle_s = args.idle_minutes * 60
        time.sleep(idle_s)
        latencies = burst_latencies(
            world.alice,
            world.bob,
            args.texts,
            interval_s=args.interval,
            timeout_s=TEXT_TIMEOUT_S,
        )
        return {
            "first_text_s": round(first, 3),
            "idle_s": idle_s,
            "first_after_idle_s": None if latencies[0] is None else round(latencies[0], 3),
            **summary(latencies),
            "target_p99_s": 1.0,
        }


def item_b(args: argparse.Namespace) -> Result:
    """Alice behind a symmetric NAT: texts to Bob behind a restricted one."""
    with Internet() as net:
        world = two_homes(net, "symmetric", "restricted")
        latencies = burst_latencies(
            world.alice, world.bob, args.texts, interval_s=args.interval, timeout_s=30.0
        )
        return {**summary(latencies), "target_p99_s": 2.0, "target_delivered": args.texts}


def item_c(args: argparse.Namespace) -> Result:
    """Bob offline while Alice sends; his time from start to receiving what waited."""
    with Internet() as net:
        world = two_homes(net, "restricted", "restricted")
        boot = world.relays.endpoints[:1]
        world.bob.quit()
        sent = world.alice.send(world.bob.card, "while you were away")
        world.alice.state(str(sent["text_id"]), "sent", 30.0)
        time.sleep(args.offline_s)
        start = time.time()
        bob = world.bob_host.agent(bootstrap=boot)
        try:
            got = bob.received(str(sent["text_id"]), 60.0)
        except AssertionError:
            return {"offline_s": args.offline_s, "received": False, "timeout_s": 60.0}
        return {
            "offline_s": args.offline_s,
            "received": True,
            "from_start_s": round(float(got["t"]) - start, 3),
            "target_s": 2.0,
        }


def _rate(before: dict[str, int], after: dict[str, int], seconds: float) -> Result:
    return {
        "datagrams_out_per_s": round((after["out_packets"] - before["out_packets"]) / seconds, 3),
        "datagrams_in_per_s": round((after["in_packets"] - before["in_packets"]) / seconds, 3),
        "bytes_out_per_s": round((after["out_bytes"] - before["out_bytes"]) / seconds, 1),
        "bytes_in_per_s": round((after["in_bytes"] - before["in_bytes"]) / seconds, 1),
        "bytes_per_s": round(
            (after["out_bytes"] + after["in_bytes"] - before["out_bytes"] - before["in_bytes"])
            / seconds,
            1,
        ),
    }


def item_d(args: argparse.Namespace) -> Result:
    """Idle traffic of a node behind NAT and of a public relay, counted by nftables."""
    with Internet() as net:
        world = two_homes(net, "restricted", "restricted", relays=args.relays)
        text_latency(world.alice, world.bob, "warm up", TEXT_TIMEOUT_S)
        # Settle first: the joins' lookups are not idle traffic.
        time.sleep(args.settle_s)
        relay = world.relays.hosts[1]
        for host in (world.alice_host, relay):
            host.count_udp()
        before = {h.name: h.udp_counters() for h in (world.alice_host, relay)}
        kinds_before = world.alice.status()["stats"]["sent_by_kind"]
        time.sleep(args.idle_cost_s)
        after = {h.name: h.udp_counters() for h in (world.alice_host, relay)}
        status = world.alice.status()
        kinds = {
            kind: count - kinds_before.get(kind, 0)
            for kind, count in status["stats"]["sent_by_kind"].items()
            if count != kinds_before.get(kind, 0)
        }
        # The mappings Alice's router holds open for her node's socket now: her bindings.
        flows = world.home_a.exec_ns(["conntrack", "-L", "-p", "udp"], check=False).stdout
        mine = f"src={world.alice_host.ip} "
        port = f"sport={world.alice.info['bound'][1]} "
        bindings = sum(1 for line in flows.splitlines() if mine in line and port in line)
        result: Result = {
            "seconds": args.idle_cost_s,
            "relays": args.relays,
            "behind_nat": _rate(before["alice"], after["alice"], args.idle_cost_s),
            "behind_nat_sent_by_kind": kinds,
            "behind_nat_bindings_open": bindings,
            "public_relay": _rate(before[relay.name], after[relay.name], args.idle_cost_s),
            "reachability": status.get("reachability") or NOT_AVAILABLE,
            "client_mode": status.get("client_mode"),
            "target_bytes_per_s": 200,
        }
        interval = status.get("keepalive_interval")
        if interval and bindings:
            result["keepalive_interval_s"] = interval
            out = after["alice"]["out_packets"] - before["alice"]["out_packets"]
            intervals = args.idle_cost_s / float(interval)
            result["datagrams_out_per_binding_per_interval"] = round(out / bindings / intervals, 2)
            # The keep-alives alone (docs/PROTOCOL.md, "12.5": Attach), the rest is lookups.
            result["keepalives_per_binding_per_interval"] = round(
                kinds.get("attach", 0) / bindings / intervals, 2
            )
        return result


def item_e(args: argparse.Namespace) -> Result:
    """Two hosts on a router-less LAN, no bootstrap: start both, one text."""
    if not features.has_lan_discovery():
        return {"result": NOT_AVAILABLE, "needs": "LAN discovery (h-lan)"}
    with Internet() as net:
        lan = net.lan("office", hosts=2)
        one, two = lan.hosts
        start = time.time()
        a, b = one.agent(), two.agent()
        introduce(a, b)
        deadline = start + 30.0
        latency = None
        sent = a.send(b.card, "hello over the LAN")
        try:
            got = b.received(str(sent["text_id"]), max(0.0, deadline - time.time()))
            latency = float(got["t"]) - start
        except AssertionError:
            pass
        return {
            "from_start_s": None if latency is None else round(latency, 3),
            "received": latency is not None,
            "target_s": 5.0,
        }


def item_f(args: argparse.Namespace) -> Result:
    """A NAT-PMP responder in the router: mapping made after start, removed on exit."""
    if not features.has_port_mapping():
        return {"result": NOT_AVAILABLE, "needs": "port mapping (h-portmap)"}
    with Internet() as net:
        relays = start_relays(net, 1)
        home = net.nat_router("home", "restricted")
        host = home.host("alice")
        responder = features.start_pmp_responder(home)
        start = time.time()
        agent = host.agent(bootstrap=relays.endpoints)
        mapped_at = features.wait_mapping(home, responder, present=True, timeout_s=30.0)
        agent.quit()
        removed = features.wait_mapping(home, responder, present=False, timeout_s=10.0)
        return {
            "mapped": mapped_at is not None,
            "mapped_after_s": None if mapped_at is None else round(mapped_at - start, 3),
            "removed_on_exit": removed is not None,
            "target_s": 5.0,
        }


def item_g(args: argparse.Namespace) -> Result:
    """A fresh node given only Bob's card with hints joins and delivers a text."""
    if not features.has_card_hints():
        return {"result": NOT_AVAILABLE, "needs": "endpoint hints in cards (h-lan)"}
    with Internet() as net:
        relays = start_relays(net, 3)
        bob_host = net.public_host("bob")
        # A server's node listens on its public address, which its card names.
        bob = bob_host.agent(bootstrap=relays.endpoints[:1], listen_ip=bob_host.ip)
        bob.wait_peers(1, 30.0)
        card = features.card_with_hints(bob)
        home = net.nat_router("home", "restricted")
        fresh_host = home.host("fresh")
        start = time.time()
        fresh = fresh_host.agent()
        fresh.add_contact("bob", card)
        sent = fresh.send(card, "found you")
        try:
            fresh.state(str(sent["text_id"]), "delivered", 30.0)
            delivered = time.time() - start
        except AssertionError:
            return {"delivered": False, "timeout_s": 30.0}
        return {"delivered": True, "from_start_s": round(delivered, 3), "target_s": 5.0}


RUNNERS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "a": item_a,
    "b": item_b,
    "c": item_c,
    "d": item_d,
    "e": item_e,
    "f": item_f,
    "g": item_g,
}


def machine() -> Result:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=ITEMS, help="items to run, e.g. 'a,c' (default all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--idle-minutes", type=float, default=5.0)
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument(
        "--relays", type=int, default=3, help="public relays in items a and d (the issue had 3)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between texts")
    parser.add_argument("--offline-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=30.0)
    parser.add_argument("--idle-cost-s", type=float, default=120.0)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.idle_minutes, args.texts, args.interval = 0.0, 3, 0.2
        args.offline_s, args.settle_s, args.idle_cost_s = 1.0, 1.0, 3.0
    wanted = [c for c in args.only if c in ITEMS]
    # SIGTERM unwinds like Ctrl-C, so every Internet is closed (processes and namespaces).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if why := netns_unavailable():
        print(f"nat.py: {why}", file=sys.stderr)
        return 2
    results: Result = {"machine": machine(), "args": vars(args) | {"json": str(args.json)}}
    for item in wanted:
        began = time.monotonic()
        figures = RUNNERS[item](args)
        figures["wall_s"] = round(time.monotonic() - began, 1)
        results[item] = figures
        print(f"{item}: {json.dumps(figures)}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
