"""FIND_NODE lookups on a loopback network: our node against the ``kademlia`` package.

Both sides run ``--nodes`` nodes over real UDP on 127.0.0.1 in one asyncio loop of one
process, built the same way (each node bootstraps to a random node started before
it), with the same k (8) and alpha (3). Then ``--lookups`` iterative lookups of random
20-byte targets run one after the other from random nodes, so each lookup's latency is
its own and not a queue's. Before the lookups, each network settles the same way:
``--settle`` seconds (and, ours, past its nodes' first rebootstrap tick, when their
prekey records go out), then until it carries at most QUIET_DATAGRAMS_PER_NODE_S
datagrams per node per second over a QUIET_WINDOW_S window (bounded by SETTLE_BOUND_S;
``{side}_settled`` says whether it got there, ``{side}_settle_s`` how long it took). For
each side it reports latency p50/p99 (wall clock from the start of a lookup to its end),
CPU seconds per lookup (``time.process_time`` of the whole process over the lookup
phase, so it includes answering the queries too), the same net of the network's idle
background (CPU per second over a BACKGROUND_S span of the settled network just before
the lookups, same clocks, times the phase's length), per lookup and per query,
FIND_NODE queries per lookup, and how many of the true k closest nodes the lookup
found; then the ratios ours/kademlia for latency and CPU (per lookup, and per query:
gross, which counts our idle background against us, and net of it).

Which ratio is fair: per query, because our lookups ask about 1.6x as many nodes by
design (two disjoint paths, S/Kademlia; ``--paths 1`` shows what the second one costs
and buys). Both networks are idle-settled before the background span: measured 2 s after
the joins (before this rule), our span fell in the burst of prekey records and receipts
that follows a join (~0.06-0.2 CPU-s/s, gone ~10 s after the joins; bench/RESULTS.md,
"Issue 11, fourth session"), which may or may not go on into the lookup phase, so "net"
subtracted a cost the lookups did not have. Settled, both backgrounds are ~0 and net
and gross agree. The background span starts with a full garbage collection, both sides
alike (``background_cpu_s_per_s``): one left due by the joins fell into the lookup phase
in some runs and not others (~100 ms, 15 % of our phase). ``{side}_gc_s`` and
``{side}_gc_full`` report the collections inside the phase (their CPU is counted).

Why: a lookup is the base of joining and of routing; we claim ours costs about what a
plain Kademlia costs despite authenticating and encrypting every datagram (the
``kademlia`` package sends plain msgpack) and running two disjoint paths (S/Kademlia).

How our lookups are timed: ``Node.lookup`` does not hand back its ``Lookup``, so
``start_lookup`` below builds one exactly as ``Node.lookup`` does and starts it with
``Node._advance_lookup``; the node's ``_lookup_finished`` hook is wrapped on each
instance to note the moment the lookup is done (no polling delay). The ``kademlia``
side awaits ``NodeSpiderCrawl.find()``, as its ``Server.set`` does. Both stop by
themselves: every wait is bounded.

``--interleave BLOCK`` runs both networks at once in one loop and alternates their
lookups in blocks of BLOCK (ours, kademlia, kademlia, ours, ...), each block's CPU
counted to its side: on a shared machine, one side's phase after the other's met
different loads, and one run's ratio moved 0.9-1.6 for the same code (bench/RESULTS.md,
"Issue 11, fifth session"). The idle background is then that of both networks idling
together (~0 once settled), reported for both sides: read the gross per-query ratio.

    python bench/vs_kademlia.py --nodes 100 --lookups 200 --json
    python bench/vs_kademlia.py --nodes 100 --lookups 200 --interleave 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from comm_tui.crypto.identity import Identity
from comm_tui.net.udp import NodeProtocol, open_udp
from comm_tui.protocol.events import Event
from comm_tui.protocol.lookup import Candidate, Lookup
from comm_tui.protocol.node import REBOOTSTRAP_INTERVAL_S, Node, NodeConfig

LOOPBACK = "127.0.0.1"
DEFAULT_NODES = 100
DEFAULT_LOOKUPS = 200
K = 8
ALPHA = 3
# Our disjoint lookup paths (S/Kademlia; docs/PROTOCOL.md, "6.2"): 2 in the protocol.
# ``--paths 1`` measures what the second path costs in queries and buys in closest found.
PATHS = NodeConfig().lookup_paths
JOIN_BOUND_S = 60.0
# The least each network idles after its last join (``--settle``), before the quiet rule.
SETTLE_S = 2.0
# Settled: at most this many datagrams per node per second over a QUIET_WINDOW_S window
# (our nodes are silent once their records are placed; the kademlia ones after joining).
QUIET_DATAGRAMS_PER_NODE_S = 0.1
QUIET_WINDOW_S = 2.0
SETTLE_BOUND_S = 30.0
LOOKUP_BOUND_S = 15.0
# An idle span just before the lookups, whose CPU is the network's background cost
# (record republishing, keep-alives, refreshes): subtracted from the lookup phase's.
BACKGROUND_S = 3.0
POLL_S = 0.02
TARGET_BYTES = 20


@dataclass
class Side:
    """One implementation's figures."""

    latencies_ms: list[float]
    cpu_s: float
    queries: int
    found_closest: int
    lookups: int
    timeouts: int
    join_s: float
    background_cpu_s_per_s: float  # CPU the idle network costs, measured just before
    phase_wall_s: float  # wall time of the lookup phase
    settled: bool  # the network was quiet before the background span (see settle)
    settle_s: float  # from the last join to the start of the background span
    gc: GcMeter  # the garbage collections inside the lookup phase (counted in cpu_s)

    @property
    def net_cpu_s(self) -> float:
        """The lookup phase's CPU less what the network costs idle over as long a span:
        what the lookups themselves cost (with answering their queries)."""
        return max(0.0, self.cpu_s - self.background_cpu_s_per_s * self.phase_wall_s)

    def figures(self, prefix: str) -> dict[str, float | int | None]:
        done = max(1, self.lookups - self.timeouts)
        return {
            f"{prefix}_latency_p50_ms": _round(percentile(self.latencies_ms, 0.5)),
            f"{prefix}_latency_p99_ms": _round(percentile(self.latencies_ms, 0.99)),
            f"{prefix}_cpu_s_per_lookup": _round(self.cpu_s / max(1, self.lookups), 6),
            f"{prefix}_cpu_s_per_query": _round(self.cpu_s / max(1, self.queries), 7),
            f"{prefix}_background_cpu_s_per_s": _round(self.background_cpu_s_per_s, 4),
            f"{prefix}_net_cpu_s_per_lookup": _round(self.net_cpu_s / max(1, self.lookups), 6),
            f"{prefix}_net_cpu_s_per_query": _round(self.net_cpu_s / max(1, self.queries), 7),
            f"{prefix}_queries_per_lookup": round(self.queries / done, 2),
            f"{prefix}_closest_found_ratio": round(self.found_closest / (done * K), 4),
            f"{prefix}_timeouts": self.timeouts,
            f"{prefix}_join_s": round(self.join_s, 3),
            f"{prefix}_settled": self.settled,
            f"{prefix}_settle_s": round(self.settle_s, 3),
            f"{prefix}_gc_s": round(self.gc.cpu_s, 4),
            f"{prefix}_gc_full": self.gc.full,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def closest_found(outcomes: list[tuple[bytes, bytes, set[bytes]]], addresses: list[bytes]) -> int:
    """How many of the true K closest each lookup found, summed over the lookups."""
    return sum(
        len(found & true_closest(target, addresses, K, querier))
        for target, querier, found in outcomes
    )


def true_closest(target: bytes, addresses: list[bytes], count: int, querier: bytes) -> set[bytes]:
    """The ``count`` nodes nearest ``target``, the querier left out: no lookup returns itself."""
    value = int.from_bytes(target, "big")
    others = [a for a in addresses if a != querier]
    return set(sorted(others, key=lambda a: int.from_bytes(a, "big") ^ value)[:count])


class GcMeter:
    """The garbage collections inside a span, and the CPU they took (part of the span's).

    A full (generation 2) collection walks every tracked object of the process: 85-105
    ms for our 100-node network's heap, 30-36 us per query of a 200-lookup phase, so
    one falling into the phase or not moved a run's ratio by 15 % (bench/RESULTS.md,
    "Issue 11, fourth session: lookups, second round"). Reported, not subtracted.
    """

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.full = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.cpu_s += time.process_time() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> GcMeter:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def background_cpu_s_per_s() -> float:
    """CPU seconds per second this process spends while the network idles.

    It starts with a full collection, on both sides alike: the objects the joins left
    to the next full collection are the joins' cost (as their prekey burst is, see
    ``settle``), and whether that collection came due inside the lookup phase or not
    was chance. Collections the lookups cause themselves still fall into the phase."""
    gc.collect()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    await asyncio.sleep(BACKGROUND_S)
    return (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)


async def settle(datagrams: Callable[[], int], nodes: int, least_s: float) -> tuple[bool, float]:
    """Wait ``least_s``, then until the network is quiet (QUIET_DATAGRAMS_PER_NODE_S over
    a QUIET_WINDOW_S window of ``datagrams()``, a running count), bounded by
    SETTLE_BOUND_S. Returns (quiet, seconds waited)."""
    began = time.monotonic()
    await asyncio.sleep(max(0.0, least_s))
    limit = QUIET_DATAGRAMS_PER_NODE_S * nodes * QUIET_WINDOW_S
    while True:
        before = datagrams()
        await asyncio.sleep(QUIET_WINDOW_S)
        quiet = datagrams() - before <= limit
        if quiet or time.monotonic() - began >= SETTLE_BOUND_S:
            return quiet, time.monotonic() - began


async def wait_until(condition: Callable[[], bool], bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(POLL_S)
    return condition()


# ---------------------------------------------------------------------- ours


class OurHost:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.protocol: NodeProtocol | None = None
        self.waiting: dict[int, tuple[Lookup, asyncio.Future[float]]] = {}
        original = node._lookup_finished

        def finished(lookup: Lookup, now: float) -> None:
            # Timed before the node's own follow-up work, as the kademlia side is.
            entry = self.waiting.pop(id(lookup), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(time.perf_counter())
            original(lookup, now)

        node._lookup_finished = finished  # type: ignore[method-assign]

    def on_events(self, events: list[Event]) -> None:
        pass  # lookups report nothing as events; the wrapped hook above times them

    def start_lookup(self, target: bytes) -> tuple[Lookup, asyncio.Future[float]]:
        """Start a lookup the way ``Node.lookup`` does, keeping hold of it."""
        node = self.node
        now = time.time()
        seeds = [
            Candidate(n.key, n.address, n.endpoint)
            for n in node.closest_peers(target, node.config.k)
        ]
        lookup = Lookup(
            target, seeds, k=node.config.k, alpha=node.config.alpha, paths=node.config.lookup_paths
        )
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[id(lookup)] = (lookup, future)
        node._advance_lookup(lookup, now)
        assert self.protocol is not None
        self.protocol.pump()
        return lookup, future


class OurNetwork:
    """``nodes`` of our nodes on loopback, joined and settled (``start``), that run one
    lookup at a time (``lookup``)."""

    def __init__(self, seed: int, paths: int) -> None:
        self.rng = random.Random(seed)
        self.config = NodeConfig(k=K, alpha=ALPHA, lookup_paths=paths)
        self.hosts: list[OurHost] = []
        self.join_s = self.settle_s = 0.0
        self.settled = False

    async def start(self, nodes: int, settle_s: float) -> None:
        rng, hosts = self.rng, self.hosts
        endpoints = []
        join_start = time.perf_counter()
        started_at = time.monotonic()
        for _ in range(nodes):
            started_at = time.monotonic()
            host = OurHost(
                Node(Identity.from_seed(rng.randbytes(32)), time.time(), config=self.config)
            )
            host.protocol, bound = await open_udp(host.node, (LOOPBACK, 0), host.on_events)
            hosts.append(host)
            endpoints.append(bound)
        for index, host in enumerate(hosts[1:], start=1):
            host.node.bootstrap(endpoints[rng.randrange(index)], time.time())
            assert host.protocol is not None
            host.protocol.pump()
        await wait_until(lambda: all(h.node.joined for h in hosts), JOIN_BOUND_S)
        self.join_s = time.perf_counter() - join_start
        # Past the last node's first rebootstrap tick: its prekey record goes out then.
        tick_s = started_at + REBOOTSTRAP_INTERVAL_S - time.monotonic()
        self.settled, self.settle_s = await settle(
            lambda: sum(h.node.stats.datagrams_out for h in hosts), nodes, max(settle_s, tick_s)
        )

    async def lookup(self) -> tuple[float | None, int, tuple[bytes, bytes, set[bytes]]]:
        """One lookup of a random target from a random node: (latency in ms, None on a
        timeout; queries sent; what it found, for the scoring after the phase)."""
        host = self.rng.choice(self.hosts)
        target = self.rng.randbytes(TARGET_BYTES)
        start = time.perf_counter()
        lookup, future = host.start_lookup(target)
        try:
            end = await asyncio.wait_for(future, LOOKUP_BOUND_S)
        except TimeoutError:
            return None, 0, (target, host.node.address, set())
        found = {c.address for c in lookup.result()}
        return (end - start) * 1000, lookup.queries_sent, (target, host.node.address, found)

    @property
    def addresses(self) -> list[bytes]:
        return [h.node.address for h in self.hosts]

    def close(self) -> None:
        for host in self.hosts:
            if host.protocol is not None:
                host.protocol.close()


class KademliaNetwork:
    """The same for the ``kademlia`` package: ``nodes`` servers, joined and settled."""

    def __init__(self, seed: int) -> None:
        logging.getLogger("kademlia").setLevel(logging.CRITICAL)
        logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
        self.rng = random.Random(seed)
        self.servers: list[Any] = []
        self.queries = 0  # FIND_NODE requests sent, once counting (after settling)
        self.datagrams_in = 0
        self.join_s = self.settle_s = 0.0
        self.settled = False

    def _count_datagrams(self, protocol: Any) -> None:
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any) -> None:
            self.datagrams_in += 1
            original(data, addr)

        protocol.datagram_received = datagram_received

    def _count_queries(self, protocol: Any) -> None:
        original = protocol.call_find_node

        async def call_find_node(node_to_ask: Any, node_to_find: Any) -> Any:
            self.queries += 1
            return await original(node_to_ask, node_to_find)

        protocol.call_find_node = call_find_node

    async def start(self, nodes: int, settle_s: float) -> None:
        from kademlia.network import Server

        rng, servers = self.rng, self.servers
        ports: list[int] = []
        join_start = time.perf_counter()
        for _ in range(nodes):
            server = Server(ksize=K, alpha=ALPHA, node_id=rng.randbytes(TARGET_BYTES))
            await server.listen(0, interface=LOOPBACK)
            servers.append(server)
            self._count_datagrams(server.protocol)
            ports.append(server.transport.get_extra_info("sockname")[1])
        for index, server in enumerate(servers[1:], start=1):
            await asyncio.wait_for(
                server.bootstrap([(LOOPBACK, ports[rng.randrange(index)])]), JOIN_BOUND_S
            )
        self.join_s = time.perf_counter() - join_start
        self.settled, self.settle_s = await settle(lambda: self.datagrams_in, nodes, settle_s)
        for server in servers:
            self._count_queries(server.protocol)

    async def lookup(self) -> tuple[float | None, int, tuple[bytes, bytes, set[bytes]]]:
        """As ``OurNetwork.lookup``: ``NodeSpiderCrawl.find()``, as ``Server.set`` does."""
        from kademlia.crawling import NodeSpiderCrawl
        from kademlia.node import Node as KNode

        server = self.rng.choice(self.servers)
        target = self.rng.randbytes(TARGET_BYTES)
        node = KNode(target)
        start = time.perf_counter()
        nearest = server.protocol.router.find_neighbors(node)
        spider = NodeSpiderCrawl(server.protocol, node, nearest, server.ksize, server.alpha)
        before = self.queries
        try:
            result = await asyncio.wait_for(spider.find(), LOOKUP_BOUND_S)
        except TimeoutError:
            return None, 0, (target, server.node.id, set())
        latency = (time.perf_counter() - start) * 1000
        return latency, self.queries - before, (target, server.node.id, {n.id for n in result})

    @property
    def addresses(self) -> list[bytes]:
        return [server.node.id for server in self.servers]

    def close(self) -> None:
        for server in self.servers:
            server.stop()


Network = OurNetwork | KademliaNetwork


class Phase:
    """One side's lookups, measured in one span (``run_side``) or in blocks alternating
    with the other side's (``run_interleaved``)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.latencies: list[float] = []
        self.outcomes: list[tuple[bytes, bytes, set[bytes]]] = []  # scored after the phase
        self.queries = self.timeouts = self.lookups = 0
        self.cpu_s = self.wall_s = 0.0
        self.gc = GcMeter()

    async def run(self, lookups: int) -> None:
        """``lookups`` lookups one after the other; their CPU (the whole process's: it
        answers the queries too) and wall time are added to the phase's."""
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        with self.gc:
            for _ in range(lookups):
                latency, queries, outcome = await self.network.lookup()
                self.lookups += 1
                if latency is None:
                    self.timeouts += 1
                    continue
                self.latencies.append(latency)
                self.queries += queries
                self.outcomes.append(outcome)
        self.cpu_s += time.process_time() - cpu_start
        self.wall_s += time.perf_counter() - wall_start

    def side(self, background: float) -> Side:
        network = self.network
        return Side(
            self.latencies,
            self.cpu_s,
            self.queries,
            closest_found(self.outcomes, network.addresses),
            self.lookups,
            self.timeouts,
            network.join_s,
            background,
            self.wall_s,
            network.settled,
            network.settle_s,
            self.gc,
        )


async def run_side(network: Network, nodes: int, lookups: int, settle_s: float) -> Side:
    """Start ``network``, measure its idle background, then its lookup phase."""
    try:
        await network.start(nodes, settle_s)
        background = await background_cpu_s_per_s()
        phase = Phase(network)
        await phase.run(lookups)
        return phase.side(background)
    finally:
        network.close()


async def run_ours(
    nodes: int, lookups: int, seed: int, settle_s: float = SETTLE_S, paths: int = PATHS
) -> Side:
    return await run_side(OurNetwork(seed, paths), nodes, lookups, settle_s)


async def run_kademlia(nodes: int, lookups: int, seed: int, settle_s: float = SETTLE_S) -> Side:
    return await run_side(KademliaNetwork(seed), nodes, lookups, settle_s)


def block_order(blocks: int) -> list[str]:
    """Which side runs each block: ours, kademlia, kademlia, ours, ... (ABBA), so that a
    load that rises or falls steadily over the run weighs on both sides alike."""
    pairs = [("ours", "kademlia"), ("kademlia", "ours")]
    return [side for i in range(blocks) for side in pairs[i % 2]]


async def run_interleaved(
    nodes: int, lookups: int, seed: int, settle_s: float, paths: int, block: int
) -> tuple[Side, Side]:
    """Both networks up in one loop; their lookups in blocks of ``block``, alternating
    (``block_order``), each block's CPU counted to its side.

    Run one after the other, each side met whatever load the machine had during its
    own ~10 s: on a shared machine one run's ratio moved 0.9-1.6 for the same code
    (bench/RESULTS.md, "Issue 11, fifth session"). Interleaved, both sample the same
    moments. The idle background (``background_cpu_s_per_s``) is measured once, of both
    networks idling together, and reported for both sides; settled, it is ~0.
    """
    ours, theirs = OurNetwork(seed, paths), KademliaNetwork(seed)
    try:
        await ours.start(nodes, settle_s)
        await theirs.start(nodes, settle_s)
        background = await background_cpu_s_per_s()
        phases = {"ours": Phase(ours), "kademlia": Phase(theirs)}
        blocks = max(1, lookups // block)
        for index, name in enumerate(block_order(blocks)):
            # The last block of each side takes what the division left.
            size = block if index < 2 * blocks - 2 else lookups - block * (blocks - 1)
            await phases[name].run(size)
        return phases["ours"].side(background), phases["kademlia"].side(background)
    finally:
        ours.close()
        theirs.close()


def compare(
    nodes: int,
    lookups: int,
    seed: int,
    settle_s: float = SETTLE_S,
    paths: int = PATHS,
    interleave: int = 0,
) -> dict[str, Any]:
    """Both sides' figures and the ratios; ``interleave``: lookups per block of
    ``run_interleaved`` (0: each side's phase in one span, ours first)."""
    if interleave:
        ours, theirs = asyncio.run(
            run_interleaved(nodes, lookups, seed, settle_s, paths, interleave)
        )
    else:
        ours = asyncio.run(run_ours(nodes, lookups, seed, settle_s, paths))
        # Settled the same way (the kademlia nodes are quiet once joined, so it takes them
        # QUIET_WINDOW_S past --settle).
        theirs = asyncio.run(run_kademlia(nodes, lookups, seed, settle_s))
    figures: dict[str, Any] = {
        "nodes": nodes,
        "lookups": lookups,
        "k": K,
        "alpha": ALPHA,
        "settle_s": settle_s,
        "paths": paths,
        "interleave": interleave,
    }
    figures.update(ours.figures("ours"))
    figures.update(theirs.figures("kademlia"))

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else round(a / b, 3)

    figures["latency_p50_ratio"] = ratio(
        figures["ours_latency_p50_ms"], figures["kademlia_latency_p50_ms"]
    )
    figures["latency_p99_ratio"] = ratio(
        figures["ours_latency_p99_ms"], figures["kademlia_latency_p99_ms"]
    )
    figures["cpu_ratio"] = ratio(
        figures["ours_cpu_s_per_lookup"], figures["kademlia_cpu_s_per_lookup"]
    )
    # Per query, gross: the whole process's CPU over the lookup phase, our idle background
    # included (the kademlia nodes have none), so it can only overstate our cost.
    figures["cpu_per_query_ratio"] = ratio(
        figures["ours_cpu_s_per_query"], figures["kademlia_cpu_s_per_query"]
    )
    figures["net_cpu_ratio"] = ratio(
        figures["ours_net_cpu_s_per_lookup"], figures["kademlia_net_cpu_s_per_lookup"]
    )
    figures["net_cpu_per_query_ratio"] = ratio(
        figures["ours_net_cpu_s_per_query"], figures["kademlia_net_cpu_s_per_query"]
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--lookups", type=int, default=DEFAULT_LOOKUPS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_S,
        help="the least time each network idles after its last join before the quiet rule"
        " (default %(default)s)",
    )
    parser.add_argument(
        "--paths",
        type=int,
        default=PATHS,
        help="our side: disjoint lookup paths (default %(default)s, the protocol's)",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="BLOCK",
        help="both networks up at once, their lookups in alternating blocks of BLOCK"
        " (ABBA), so both sides meet the same machine load (default: one phase each)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.lookups < 1 or args.paths < 1 or args.interleave < 0:
        parser.error(
            "--nodes must be at least 2, --lookups and --paths at least 1, --interleave at least 0"
        )
    try:
        import kademlia  # noqa: F401
    except ImportError:
        print("the kademlia package is needed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    figures = compare(args.nodes, args.lookups, args.seed, args.settle, args.paths, args.interleave)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(len(name) for name in figures)
        for name, value in figures.items():
            print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
