"""Real-UDP loopback benchmark: latency, delivery and CPU cost of relaying texts.

``bench/simulate.py`` runs the protocol cores under a virtual clock; this script runs
the same cores over real UDP sockets on 127.0.0.1 with asyncio, so the figures include
what the simulator leaves out: the kernel, the event loop, the crypto and protobuf work
on every datagram. ``--nodes`` nodes (50 to 200) join one network, split across
``--processes`` OS processes (1 up to one per node) that each run their own event loop;
every other process bootstraps to a node of the first. One node per process is how users
run it (the app, ``comm-tui node``): each node with its own loop, writer thread and
caches; many nodes in one process share them, which costs every node more. Once every
node has joined and the network's start-up traffic has passed (see QUIET_PER_NODE_S),
and with the start-up heap frozen out of full collections (see FullCollections),
``--messages`` texts go between random pairs at ``--rate`` texts per second. It reports:

- latency p50/p99 from ``send_text`` to the recipient's ``TextReceived``, and to the
  sender's ``delivered`` (the recipient's signed ack came back), in wall-clock ms;
- the delivered ratio (texts received and acknowledged before the bound);
- relayed messages per second per core (message copies forwarded by relays, over the
  wall time of the sending phase, divided by the cores used), CPU seconds per relayed
  message (``time.process_time`` of every process over the same phase, so it also pays
  for acks, receipts and routing upkeep), and message datagrams per CPU second, the
  figure to read against ``bench/ceiling.py``'s ``relay_ceiling_per_s``;
- datagrams per message: message, ack and receipt datagrams sent during the phase,
  divided by the texts sent (``all_datagrams_per_message`` counts every kind).
- with ``--store sqlite``, the group commits of the phase (``comm_tui/net/commit.py``),
  how many of them held bookkeeping alone (``lazy_commits``) or no strict write, only
  items held for others (``relay_commits``), and the events each wrote on average;
  with ``--count-statements`` also the SQL statements the nodes ran, per relayed
  message and by kind (a trace callback on every connection: it costs CPU, so read the
  CPU figures from runs without it), and the pages each commit wrote
  (``wal_frames_per_commit``: every write-ahead log is emptied before the phase and
  measured after it).

``--store memory`` (default) drives ``comm_tui.protocol.node.Node`` directly through
``comm_tui.net.udp.open_udp``, which isolates the network and protocol cost;
``--store sqlite`` runs full ``NodeService``s, each with its own SQLite database in a
temporary directory, so the cost of durable writes is included. Everything is bounded
and stops by itself:

    python bench/loopback.py --nodes 100 --messages 300 --processes 2 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.net.service import IncomingText, NodeService, OutgoingUpdated, ServiceEvent
from comm_tui.net.udp import NodeProtocol, open_udp
from comm_tui.protocol.events import Event, TextReceived, TextStateChanged
from comm_tui.protocol.node import REBOOTSTRAP_INTERVAL_S, Node, NodeConfig
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database

LOOPBACK = "127.0.0.1"
MIN_NODES = 50
MAX_NODES = 200
DEFAULT_NODES = 100
DEFAULT_MESSAGES = 300
DEFAULT_RATE_PER_S = 50.0
JOIN_BOUND_S = 60.0
# After every node says it joined, let the first-join bucket refreshes finish.
SETTLE_S = 2.0
# Then wait for the network's start-up to pass (unless --send-at-once): nodes started in
# the same second publish their prekey records together at their first rebootstrap tick
# (REBOOTSTRAP_INTERVAL_S after they started; docs/PROTOCOL.md, "8a. Records") and
# retry them 2 and 6 s later, while their reachability probes and bucket refreshes run:
# at 100 nodes up to ~3,300 datagrams/s for ~8 s, then nearly none. Texts sent in it
# waited in the sockets' queues behind it for up to a second: the start of a whole
# network in one process (bench/RESULTS.md, "the loopback tail"), not the relay path.
# Quiet: fewer than QUIET_PER_NODE_S datagrams per node per second in each of
# QUIET_WINDOWS windows of QUIET_WINDOW_S in a row, a whole rebootstrap interval: the
# records go out at a rebootstrap tick, not always the first, so one quiet window could
# fall in a lull before them (a memory run once waited 2.1 s instead of ~5 and measured
# the burst: 94.8 datagrams per text against 83, bench/RESULTS.md, "fifth session after
# the merge").
QUIET_PER_NODE_S = 2.0
QUIET_WINDOW_S = 1.0
QUIET_WINDOWS = 5
QUIET_BOUND_S = 30.0
# Full (generation 2) collections walk every object of the process, here the tables,
# keys and sessions of all its nodes at once: 0.3 to 0.6 s at 100 nodes under load,
# during which no node reads a datagram, and the backlog took a second more to drain. A
# node's own process holds a hundredth of that. So, once the network has settled, what
# it built is frozen out of the collector's walk (``gc.freeze``, as long-running servers
# do); what the sending phase allocates is collected as usual, and every full collection
# of the phase is reported (``gc_full_collections``, ``gc_full_pause_max_ms``).
START_DELAY_S = 0.5
GRACE_BOUND_S = 30.0
POLL_S = 0.02
MESSAGE_KINDS = ("message", "ack", "receipt")
TEXT_PREFIX = "bench-"
# Bytes of a write-ahead-log frame's header, before its page (sqlite.org/fileformat2.html).
WAL_FRAME_HEADER = 24
# Counters summed over the nodes that are not datagram kinds.
COUNTERS_NOT_DATAGRAMS = (
    "datagrams_out",
    "messages_relayed",
    "commits",
    "lazy_commits",
    "relay_commits",
    "committed_events",
    "wal_frames",
    "gc_full",
    "gc_full_pause_us",
    "loop_thread_cpu_us",
)
# Statement counters (``--count-statements``) are named with this prefix.
SQL_PREFIX = "sql_"
# What a statement is counted as: its verb, and for a write the table it writes.
_STATEMENT_KIND = re.compile(
    r"\s*(?:(INSERT)(?:\s+OR\s+\w+)?\s+INTO|(DELETE)\s+FROM|(UPDATE))\s+(\w+)|\s*(\w+)",
    re.IGNORECASE,
)


@dataclass
class Plan:
    """What every process needs to know, identical in all of them."""

    nodes: int
    messages: int
    processes: int
    rate_per_s: float
    seed: int
    store: str
    # Wait for the network's start-up traffic to pass before sending (see QUIET_PER_NODE_S).
    wait_quiet: bool = True
    # Freeze the start-up heap out of full collections before sending (FullCollections).
    freeze_heap: bool = True
    # Count the SQL statements of the phase (StatementCount).
    count_statements: bool = False
    # The group commit's window for writes of items held for others (None: the default,
    # ``COMMIT_RELAY_WINDOW_S``), to measure the choice.
    relay_window_s: float | None = None

    def seeds(self) -> list[bytes]:
        rng = random.Random(self.seed)
        return [rng.randbytes(32) for _ in range(self.nodes)]

    def pairs(self) -> list[tuple[int, int]]:
        """(sender, recipient) of each text, by its number."""
        rng = random.Random(self.seed + 1)
        out: list[tuple[int, int]] = []
        for _ in range(self.messages):
            sender, recipient = rng.sample(range(self.nodes), 2)
            out.append((sender, recipient))
        return out

    def cores(self) -> int:
        """The cores the processes share, for the per-core figures."""
        return min(self.processes, os.cpu_count() or 1)

    def shard_of(self, index: int) -> int:
        return index * self.processes // self.nodes


@dataclass
class Host:
    """One node in this process, and what it saw."""

    index: int
    node: Node
    protocol: NodeProtocol | None = None
    service: NodeService | None = None
    db: Database | None = None
    received_at: dict[int, float] = field(default_factory=dict)
    delivered_at: dict[int, float] = field(default_factory=dict)
    text_ids: dict[bytes, int] = field(default_factory=dict)
    # Set when a text is received or delivered here (``wait_until``'s wake).
    progress: asyncio.Event | None = None

    def on_core_events(self, events: list[Event]) -> None:
        now = time.time()
        for event in events:
            if isinstance(event, TextReceived) and event.text.startswith(TEXT_PREFIX):
                self._received(int(event.text[len(TEXT_PREFIX) :]), now)
            elif isinstance(event, TextStateChanged) and event.state == "delivered":
                self._delivered(event.text_id, now)

    def on_service_event(self, event: ServiceEvent) -> None:
        now = time.time()
        if isinstance(event, IncomingText) and event.row.text.startswith(TEXT_PREFIX):
            self._received(int(event.row.text[len(TEXT_PREFIX) :]), now)
        elif isinstance(event, OutgoingUpdated) and event.row.state == "delivered":
            self._delivered(event.row.text_id, now)

    def _received(self, number: int, now: float) -> None:
        self.received_at.setdefault(number, now)
        if self.progress is not None:
            self.progress.set()

    def _delivered(self, text_id: bytes, now: float) -> None:
        number = self.text_ids.get(text_id)
        if number is not None:
            self.delivered_at.setdefault(number, now)
            if self.progress is not None:
                self.progress.set()


class StatementCount:
    """Counts the SQL statements of every connection opened while it is installed.

    ``Database.open`` calls ``sqlite3.connect``; each connection it returns meanwhile gets
    a trace callback. What SQLite runs on behalf of a statement is not counted: it is part
    of the statement that caused it. The trace reports it as a statement text starting
    with ``--`` (a trigger's), one naming the schema (``'main'.``: the full-text index's
    own statements), or the causing statement's text again when a trigger fires (the
    same text twice in a row on one connection; a read we issue twice in a row with the
    same values counts once, a write, a BEGIN or a COMMIT never repeats so).

    The writer threads trace concurrently, and the phase's figures are read while
    transactions run: a transaction's statements are gathered on its connection and
    added to ``counts`` together, under a lock, when it ends, so a phase counts each
    transaction wholly or not at all (a BEGIN counted without its COMMIT made the two
    differ in a loaded run).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = self._connect(*args, **kwargs)
            last = [""]  # this connection's last statement counted
            open_transaction: Counter[str] = Counter()  # its statements since BEGIN

            def count(sql: str) -> None:
                if sql.startswith("--") or "'main'." in sql or sql == last[0]:
                    return
                last[0] = sql
                match = _STATEMENT_KIND.match(sql)
                if match is None:
                    return
                verb = next(filter(None, match.group(1, 2, 3, 5))).upper()
                table = match.group(4)
                open_transaction[f"{SQL_PREFIX}{verb}{' ' + table if table else ''}"] += 1
                if verb == "BEGIN":
                    return
                if verb in ("COMMIT", "ROLLBACK", "END") or not conn.in_transaction:
                    with self._lock:
                        self.counts.update(open_transaction)
                    open_transaction.clear()

            conn.set_trace_callback(count)
            return conn

        sqlite3.connect = traced  # type: ignore[assignment]

    def snapshot(self) -> Counter[str]:
        """The statements of every transaction ended so far (and those outside one)."""
        with self._lock:
            return Counter(self.counts)

    def close(self) -> None:
        sqlite3.connect = self._connect


class Shard:
    """The nodes one process runs, on one event loop."""

    def __init__(self, plan: Plan, shard: int, workdir: Path) -> None:
        self.plan = plan
        self.shard = shard
        self.workdir = workdir
        self.publics: list[PublicIdentity] = []
        self.hosts: dict[int, Host] = {}
        self.sent_at: dict[int, float] = {}
        self.config = NodeConfig()
        self.started_at = 0.0  # when the last node was made (its timers count from then)
        self.statements = (
            StatementCount() if plan.count_statements and plan.store == "sqlite" else None
        )
        self.page_size = 4096  # of the nodes' databases (``restart_wals``)
        # (text number, where its host notes it) still awaited (``expected_done``).
        self.progress = asyncio.Event()
        self._outstanding: list[tuple[int, dict[int, float]]] | None = None

    async def start(self, bootstrap: Endpoint | None) -> Endpoint:
        identities = [Identity.from_seed(seed) for seed in self.plan.seeds()]
        self.publics = [identity.public for identity in identities]
        now = time.time()
        endpoints: list[Endpoint] = []
        for index, identity in enumerate(identities):
            if self.plan.shard_of(index) != self.shard:
                continue
            if self.plan.store == "sqlite":
                db = Database.open(self.workdir / f"node{index}.db")
                service = NodeService(identity, db, listen=(LOOPBACK, 0), config=self.config)
                host = Host(index, service.node, service=service, db=db, progress=self.progress)
                service.subscribe(host.on_service_event)
                endpoints.append(await service.start())
                host.protocol = service.protocol
                if self.plan.relay_window_s is not None and service.journal is not None:
                    service.journal.relay_window_s = self.plan.relay_window_s
            else:
                host = Host(index, Node(identity, now, config=self.config), progress=self.progress)
                host.protocol, bound = await open_udp(host.node, (LOOPBACK, 0), host.on_core_events)
                # As NodeService does: a node that knows where it is bound can tell a
                # direct link from a NAT, so both stores classify themselves alike.
                host.node.set_local_endpoints({bound}, now)
                endpoints.append(bound)
            self.hosts[index] = host
        self.started_at = time.time()
        # The first node of the first shard bootstraps nobody; every other node
        # bootstraps to a random node started before it (or to the first shard's).
        rng = random.Random(self.plan.seed + 2 + self.shard)
        for position, host in enumerate(self.hosts.values()):
            if position == 0 and bootstrap is None:
                continue
            if position == 0 or (bootstrap is not None and rng.random() < 0.5):
                assert bootstrap is not None
                target = bootstrap
            else:
                target = endpoints[rng.randrange(position)]
            host.node.bootstrap(target, time.time())
            assert host.protocol is not None
            host.protocol.pump()
        return endpoints[0]

    async def settle(self) -> tuple[bool, float]:
        """Wait out the start-up burst (see QUIET_PER_NODE_S): past every node's first
        rebootstrap tick, then until the nodes send little. Returns (quiet, seconds)."""
        if not self.plan.wait_quiet:
            return False, 0.0
        began = time.monotonic()
        await asyncio.sleep(max(0.0, self.started_at + REBOOTSTRAP_INTERVAL_S - time.time()))
        limit = QUIET_PER_NODE_S * len(self.hosts) * QUIET_WINDOW_S
        quiet_windows = 0
        while quiet_windows < QUIET_WINDOWS and time.monotonic() - began < QUIET_BOUND_S:
            before = self.datagrams_out()
            await asyncio.sleep(QUIET_WINDOW_S)
            quiet_windows = quiet_windows + 1 if self.datagrams_out() - before < limit else 0
        return quiet_windows >= QUIET_WINDOWS, time.monotonic() - began

    def datagrams_out(self) -> int:
        return sum(host.node.stats.datagrams_out for host in self.hosts.values())

    def joined(self) -> bool:
        return all(host.node.joined for host in self.hosts.values())

    def counters(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for host in self.hosts.values():
            total.update(host.node.stats.sent_by_kind)
            total["datagrams_out"] += host.node.stats.datagrams_out
            total["messages_relayed"] += host.node.stats.messages_relayed
            for reason, count in host.node.stats.rejected.items():
                total[f"rejected_{reason}"] += count
            if host.service is not None and host.service.journal is not None:
                total["commits"] += host.service.journal.commits
                total["lazy_commits"] += host.service.journal.lazy_commits
                total["relay_commits"] += host.service.journal.relay_commits
                total["committed_events"] += host.service.journal.committed_events
        if self.statements is not None:
            total.update(self.statements.snapshot())
            for host in self.hosts.values():
                if host.db is not None:
                    wal = host.db.path.with_name(host.db.path.name + "-wal")
                    with contextlib.suppress(FileNotFoundError):
                        total["wal_frames"] += wal.stat().st_size // (
                            self.page_size + WAL_FRAME_HEADER
                        )
        return total

    def restart_wals(self) -> None:
        """Empty every node's write-ahead log, so the phase's frames can be counted."""
        for host in self.hosts.values():
            if host.db is not None and host.service is not None:
                assert host.service.journal is not None
                host.service.journal.settle()  # no commit runs while another connection
                conn = sqlite3.connect(host.db.path)  # checkpoints the whole log
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    self.page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                finally:
                    conn.close()

    async def send_all(self, start_at: float) -> None:
        """Send this shard's texts on the shared schedule (wall clock, all processes)."""
        interval_s = 1.0 / self.plan.rate_per_s
        for number, (sender, recipient) in enumerate(self.plan.pairs()):
            host = self.hosts.get(sender)
            if host is None:
                continue
            due = start_at + number * interval_s
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"{TEXT_PREFIX}{number}"
            self.sent_at[number] = time.time()
            if host.service is not None:
                row = host.service.send_text(self.publics[recipient], text)
                host.text_ids[row.text_id] = number
            else:
                text_id = host.node.send_text(self.publics[recipient], text, time.time())
                host.text_ids[text_id] = number
                assert host.protocol is not None
                host.protocol.pump()

    def expected_done(self) -> bool:
        """Every text this shard sent was delivered, every one it should receive arrived.

        Asked again at each text received or delivered (``progress``): it looks only at
        what was still outstanding (drawing the pairs and walking them all, every POLL_S,
        cost ~0.3 ms a poll, 1.5 % of a one-process run's CPU)."""
        if self._outstanding is None:
            self._outstanding = [
                (number, host.delivered_at if host.index == sender else host.received_at)
                for number, (sender, recipient) in enumerate(self.plan.pairs())
                for host in (self.hosts.get(sender), self.hosts.get(recipient))
                if host is not None
            ]
        self._outstanding = [(n, seen) for n, seen in self._outstanding if n not in seen]
        return not self._outstanding

    async def stop(self) -> None:
        for host in self.hosts.values():
            if host.service is not None:
                await host.service.stop()
                assert host.db is not None
                host.db.close()
            elif host.protocol is not None:
                host.protocol.close()
        if self.statements is not None:
            self.statements.close()

    def results(self) -> dict[str, Any]:
        received: dict[int, float] = {}
        delivered: dict[int, float] = {}
        for host in self.hosts.values():
            received.update(host.received_at)
            delivered.update(host.delivered_at)
        tables = [host.node.peer_count for host in self.hosts.values()]
        return {
            "sent": self.sent_at,
            "received": received,
            "delivered": delivered,
            "table_nodes_mean": statistics.fmean(tables) if tables else 0.0,
        }


class FullCollections:
    """Counts the process's full collections (generation 2) and their longest pause."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - self._started)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)
        gc.unfreeze()  # a no-op unless frozen; a test running several benchmarks frees it


def freeze_heap(plan: Plan) -> None:
    """Keep what the start built out of the collector's walk (see FullCollections)."""
    if plan.freeze_heap:
        gc.collect()
        gc.freeze()


async def wait_until(condition: Any, bound_s: float, wake: asyncio.Event | None = None) -> bool:
    """Whether ``condition()`` came to hold within ``bound_s``. It is asked every POLL_S,
    or with ``wake`` only when that is set (by whatever can change it): in the measured
    phase, each process polling 50 times a second would be CPU charged to the nodes, and
    with a process per node it was a fifth of a run's."""
    deadline = time.monotonic() + bound_s
    while True:
        if wake is not None:
            wake.clear()  # before asking: a set after this is not lost
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if wake is None:
            await asyncio.sleep(min(POLL_S, remaining))
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)


async def poll_conn(conn: Connection, bound_s: float) -> Any:
    """The next object from another process, without blocking the event loop (woken by
    the pipe, not polled, for the reason ``wait_until`` gives)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    try:
        await asyncio.wait_for(ready.wait(), bound_s)
    except TimeoutError:
        raise TimeoutError("another process did not answer in time") from None
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def run_worker_shard(plan: Plan, shard_index: int, conn: Connection) -> None:
    """Shard ``shard_index`` (a process of its own): the same steps as shard 0, told
    when by shard 0."""
    with tempfile.TemporaryDirectory(prefix="comm-tui-loopback-") as tmp:
        shard = Shard(plan, shard_index, Path(tmp))
        try:
            bootstrap = await poll_conn(conn, JOIN_BOUND_S)
            await shard.start(tuple(bootstrap))
            joined = await wait_until(shard.joined, JOIN_BOUND_S)
            await asyncio.sleep(SETTLE_S)
            quiet, _ = await shard.settle()
            freeze_heap(plan)
            full_gc = FullCollections()
            conn.send(("joined", joined, quiet))
            start_at, bound_s = await poll_conn(conn, JOIN_BOUND_S * 2 + SETTLE_S + QUIET_BOUND_S)
            if shard.statements is not None:
                shard.restart_wals()
            before = shard.counters()
            cpu_before, loop_before = time.process_time(), time.thread_time()
            await shard.send_all(start_at)
            await wait_until(
                shard.expected_done, max(0.0, start_at + bound_s - time.time()), shard.progress
            )
            conn.send(("done", None))
            await poll_conn(conn, bound_s + GRACE_BOUND_S)  # "stop": the others are done
            cpu_s = time.process_time() - cpu_before
            after = shard.counters()
            after["loop_thread_cpu_us"] = round((time.thread_time() - loop_before) * 1e6)
            after.subtract(before)
            after["gc_full"] = full_gc.count
            after["gc_full_pause_us"] = round(full_gc.longest_s * 1e6)
            full_gc.close()
            conn.send(("results", shard.results(), dict(after), cpu_s))
        finally:
            await shard.stop()


def worker_main(plan: Plan, shard_index: int, conn: Connection) -> None:
    asyncio.run(run_worker_shard(plan, shard_index, conn))


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(plan: Plan) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    workers: list[Any] = []
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="comm-tui-loopback-") as tmp:
        shard = Shard(plan, 0, Path(tmp))
        try:
            for shard_index in range(1, plan.processes):
                conn, child_conn = context.Pipe()
                worker = context.Process(target=worker_main, args=(plan, shard_index, child_conn))
                worker.start()
                conns.append(conn)
                workers.append(worker)
            first = await shard.start(None)
            for conn in conns:
                conn.send(first)
            joined = await wait_until(shard.joined, JOIN_BOUND_S)
            await asyncio.sleep(SETTLE_S)
            join_s = time.perf_counter() - wall_start  # as before: joined, plus SETTLE_S
            quiet, quiet_s = await shard.settle()
            for conn in conns:
                _, other_joined, other_quiet = await poll_conn(
                    conn, JOIN_BOUND_S * 2 + SETTLE_S + QUIET_BOUND_S
                )
                joined, quiet = joined and other_joined, quiet and other_quiet
            freeze_heap(plan)
            full_gc = FullCollections()
            send_span_s = plan.messages / plan.rate_per_s
            bound_s = send_span_s + GRACE_BOUND_S
            start_at = time.time() + START_DELAY_S
            for conn in conns:
                conn.send((start_at, bound_s))
            if shard.statements is not None:
                shard.restart_wals()
            before = shard.counters()
            cpu_before, loop_before = time.process_time(), time.thread_time()
            await shard.send_all(start_at)
            await wait_until(
                shard.expected_done, max(0.0, start_at + bound_s - time.time()), shard.progress
            )
            for conn in conns:
                await poll_conn(conn, max(1.0, start_at + bound_s - time.time()) + 5.0)
            phase_wall_s = time.time() - start_at
            cpu_s = [time.process_time() - cpu_before]
            counters = shard.counters()
            counters.subtract(before)
            counters["loop_thread_cpu_us"] = round((time.thread_time() - loop_before) * 1e6)
            counters["gc_full"] = full_gc.count
            counters["gc_full_pause_us"] = round(full_gc.longest_s * 1e6)
            full_gc.close()
            results = [shard.results()]
            for conn in conns:
                conn.send("stop")
            for conn in conns:
                _, other, other_counters, other_cpu = await poll_conn(conn, GRACE_BOUND_S)
                results.append(other)
                pause_us = max(counters["gc_full_pause_us"], other_counters.pop("gc_full_pause_us"))
                counters.update(other_counters)
                counters["gc_full_pause_us"] = pause_us
                cpu_s.append(other_cpu)
        finally:
            await shard.stop()
            for worker in workers:
                worker.join(timeout=10.0)
                if worker.is_alive():
                    worker.terminate()
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    delivered: dict[int, float] = {}
    for part in results:
        sent.update(part["sent"])
        received.update(part["received"])
        delivered.update(part["delivered"])
    to_recipient_ms = [(received[n] - sent[n]) * 1000 for n in received if n in sent]
    to_delivered_ms = [(delivered[n] - sent[n]) * 1000 for n in delivered if n in sent]
    total_cpu_s = sum(cpu_s)
    relayed = counters["messages_relayed"]
    message_datagrams = counters["message"]
    caused = sum(counters[kind] for kind in MESSAGE_KINDS)
    texts = max(1, len(sent))
    statements = sum(v for k, v in counters.items() if k.startswith(SQL_PREFIX))

    def rounded(value: float | None, digits: int = 3) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "nodes": plan.nodes,
        "messages": plan.messages,
        "processes": plan.processes,
        "store": plan.store,
        "rate_per_s": plan.rate_per_s,
        "all_joined": joined,
        "join_s": round(join_s, 3),
        "quiet_before_sending": quiet,
        "quiet_wait_s": round(quiet_s, 3),
        "texts_sent": len(sent),
        "received_ratio": round(len(received) / texts, 4),
        "delivered_ratio": round(len(delivered) / texts, 4),
        "latency_p50_ms": rounded(percentile(to_recipient_ms, 0.5)),
        "latency_p99_ms": rounded(percentile(to_recipient_ms, 0.99)),
        "latency_mean_ms": rounded(statistics.fmean(to_recipient_ms) if to_recipient_ms else None),
        "delivered_p50_ms": rounded(percentile(to_delivered_ms, 0.5)),
        "delivered_p99_ms": rounded(percentile(to_delivered_ms, 0.99)),
        "phase_wall_s": round(phase_wall_s, 3),
        "cpu_s": round(total_cpu_s, 4),
        "cpu_utilisation": round(total_cpu_s / (phase_wall_s * plan.cores()), 4),
        "messages_relayed": relayed,
        "message_datagrams": message_datagrams,
        "relayed_per_s_per_core": round(relayed / phase_wall_s / plan.cores(), 2),
        "cpu_s_per_relayed_message": rounded(total_cpu_s / relayed if relayed else None, 7),
        # Of which the event loops' own threads; the rest is the commit writers' (sqlite).
        "loop_thread_cpu_s_per_relayed_message": rounded(
            counters["loop_thread_cpu_us"] / 1e6 / relayed if relayed else None, 7
        ),
        "message_datagrams_per_cpu_s": rounded(
            message_datagrams / total_cpu_s if total_cpu_s else None, 1
        ),
        "datagrams_per_message": round(caused / texts, 2),
        "all_datagrams_per_message": round(counters["datagrams_out"] / texts, 2),
        "group_commits": counters["commits"],
        "lazy_commits": counters["lazy_commits"],
        "relay_commits": counters["relay_commits"],
        "events_per_commit": round(counters["committed_events"] / counters["commits"], 2)
        if counters["commits"]
        else None,
        "datagrams_by_kind": {
            k: v
            for k, v in sorted(counters.items())
            if k not in COUNTERS_NOT_DATAGRAMS and not k.startswith(("rejected_", SQL_PREFIX))
        },
        "rejected": {
            k[len("rejected_") :]: v for k, v in counters.items() if k.startswith("rejected_") and v
        },
        "commits_per_relayed_message": rounded(counters["commits"] / relayed if relayed else None),
        "statements_per_relayed_message": rounded(statements / relayed)
        if statements and relayed
        else None,
        "wal_frames_per_commit": round(counters["wal_frames"] / counters["commits"], 2)
        if counters["wal_frames"] and counters["commits"]
        else None,
        "statements_per_relayed_message_by_kind": {
            k[len(SQL_PREFIX) :]: round(v / relayed, 3)
            for k, v in counters.most_common()
            if k.startswith(SQL_PREFIX) and v > 0 and relayed
        },
        "gc_full_collections": counters["gc_full"],
        "gc_full_pause_max_ms": round(counters["gc_full_pause_us"] / 1000, 1),
        "table_nodes_mean_by_process": [round(part["table_nodes_mean"], 1) for part in results],
        "not_received": sorted(n for n in sent if n not in received)[:20],
        "wall_s": round(time.perf_counter() - wall_start, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="OS processes the nodes are split across, each with its own event loop "
        "(1 up to one per node)",
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_S, help="texts per second")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the start-up heap in the collector's full walks (as before)",
    )
    parser.add_argument(
        "--send-at-once",
        action="store_true",
        help="send SETTLE_S after the join, in the network's start-up traffic (as before)",
    )
    parser.add_argument(
        "--count-statements",
        action="store_true",
        help="count the SQL statements of the phase by kind (sqlite; costs CPU)",
    )
    parser.add_argument(
        "--relay-window",
        type=float,
        default=None,
        help="the group commit's window for items held for others, s (sqlite)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--allow-small", action="store_true", help=argparse.SUPPRESS
    )  # smoke tests run fewer than 50 nodes
    args = parser.parse_args(argv)
    low = 2 * args.processes if args.allow_small else MIN_NODES
    if not low <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be between {MIN_NODES} and {MAX_NODES}")
    if not 1 <= args.processes <= args.nodes:
        parser.error("--processes must be between 1 and --nodes")
    if args.messages < 1 or args.rate <= 0:
        parser.error("--messages and --rate must be positive")
    plan = Plan(
        args.nodes,
        args.messages,
        args.processes,
        args.rate,
        args.seed,
        args.store,
        wait_quiet=not args.send_at_once,
        freeze_heap=not args.no_freeze,
        count_statements=args.count_statements,
        relay_window_s=args.relay_window,
    )
    figures = asyncio.run(run(plan))
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(len(name) for name in figures)
        for name, value in figures.items():
            print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
