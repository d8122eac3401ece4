"""Where the slow texts of ``bench/loopback.py`` waited: a timeline per text, and causes.

Runs the same benchmark (one process) with every node wrapped, in this script only, at
three places of the core: each relay attempt of a message (``_relay``), each copy sent
(``_send_item``) and each copy taken in (the ``message`` frame handler), plus the core's
``TextReceived``, the process's full collections and the sockets' receive queues
(``/proc/net/udp``, every 50 ms). The wrappers reach into the node's internals on
purpose: this is a diagnosis, not a figure, and costs CPU and memory of its own (the
lists it keeps make collections slower), so its latencies read a little worse than
``loopback.py``'s.

For each text slower than ``--slow-ms`` it follows the first copy that reached the
recipient back to the sender, hop by hop, and names what it waited for, in this order:

- ``not received`` within the bound;
- ``retry at the sender`` / ``retry at a relay``: a hop of that copy was a retry
  (attempt >= 1: the earlier attempts reached nobody who got it further in time); with
  ``(its stem came back to the sender)`` when, before that retry, the sender got its own
  text back in the stem;
- ``full collection``: a generation-2 collection (every node of the process stopped)
  covers at least 40 % of its latency;
- ``commit``: with ``--store sqlite``, the text reached the recipient's core but waited
  at least half of its latency for the batch that writes it;
- ``queued``: none of these; by the hop that took longest, from the send to the next
  node's handling of it (socket queue, the loop's backlog, and with sqlite the sender's
  commit before the copy left): under 0.1 s, 0.1-0.5 s, 0.5-2 s, 2 s or more.

With ``--store sqlite`` it also times every group commit (``comm_tui/net/commit.py``)
that datagrams wait for, in four parts: ``gather``, from the batch's first write that
datagrams wait for to its commit's start on the loop (the end of the loop's turn, or the
node's previous commit still running); ``writer_queue``, from there to a writer thread
taking it (the process's writers busy with other nodes' commits); ``commit``, the
``COMMIT`` itself (the fsync); ``return``, from its end to the loop handling its return
(the loop busy). It reports each part's percentiles over the phase, and on every hop of
a slow text the commit its copy waited for at the relay that sent it (``waited_for``):
whether a slow hop was the fsync itself or work queued around it.

    python bench/loopback_trace.py --nodes 100 --messages 300 --store memory --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loopback

from comm_tui.crypto.identity import address_of
from comm_tui.crypto.seal import message_id
from comm_tui.net.service import NodeService
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.events import Event, TextReceived
from comm_tui.protocol.node import Node
from comm_tui.protocol.relay_store import Kind, entry_key

QUEUE_SAMPLE_S = 0.05
FULL_GC_SHARE = 0.4
COMMIT_SHARE = 0.5
QUEUED_BOUNDS_MS = (100, 500, 2000)
COMMIT_PARTS = ("gather", "writer_queue", "commit", "return")


class Trace:
    """What every node did with message copies, in wall-clock time."""

    def __init__(self) -> None:
        # (time, what, node, item key, other node, attempt, detail)
        self.log: list[tuple[float, str, int, bytes, int, int, Any]] = []
        self.core_received: dict[int, float] = {}
        self.index_of: dict[bytes, int] = {}
        self.full_gc: list[tuple[float, float]] = []
        self.queues: list[tuple[float, int, int]] = []  # (time, bytes queued, sockets)
        # node -> its commits: (first write, flushed, writer took it, written, returned)
        self.commits: defaultdict[int, list[list[float]]] = defaultdict(list)
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_started = time.time()
        else:
            self.full_gc.append((self._gc_started, time.time()))

    def attach(self, index: int, node: Node) -> None:
        log, index_of = self.log, self.index_of
        relay, send_item = node._relay, node._send_item
        on_message = node._handlers["message"]
        drain = node.drain_events

        def traced_relay(entry: Any, now: float, *, stem: bool = False) -> None:
            relay(entry, now, stem=stem)
            if entry.kind is Kind.MESSAGE:
                log.append((time.time(), "relay", index, entry.key, -1, entry.attempts - 1, stem))

        def traced_send(entry: Any, key: bytes, endpoint: Any, now: float, **kw: Any) -> None:
            held = node.stats.resends_held
            send_item(entry, key, endpoint, now, **kw)
            if entry.kind is Kind.MESSAGE and node.stats.resends_held == held:
                other = index_of.get(address_of(key), -1)
                log.append((time.time(), "send", index, entry.key, other, entry.attempts, None))

        def traced_message(sender: Any, msg: Any, addr: Any, now: float) -> None:
            key = entry_key(Kind.MESSAGE, message_id(msg.recipient, msg.expires_ms, msg.sealed))
            other = index_of.get(sender.address, -1)
            log.append((time.time(), "arrive", index, key, other, -1, msg.stem))
            try:
                on_message(sender, msg, addr, now)
            except Rejected as exc:
                log.append((time.time(), "reject", index, key, other, -1, exc.reason))
                raise

        def traced_drain() -> list[Event]:
            events = drain()
            for event in events:
                if isinstance(event, TextReceived) and event.text.startswith(loopback.TEXT_PREFIX):
                    number = int(event.text[len(loopback.TEXT_PREFIX) :])
                    self.core_received.setdefault(number, time.time())
            return events

        node._relay = traced_relay  # type: ignore[method-assign]
        node._send_item = traced_send  # type: ignore[method-assign]
        node._handlers["message"] = traced_message
        node.drain_events = traced_drain  # type: ignore[method-assign]

    def attach_commits(self, index: int, service: NodeService) -> None:
        """Time each of the node's group commits (see the module docstring)."""
        journal, db = service.journal, service.db
        assert journal is not None
        commits = self.commits[index]
        add, flush, committed = journal.add, journal._flush, journal._committed
        commit_and_release = db._commit_and_release
        first_write = [0.0]
        # The commit that runs (one per node at a time), filled in by the loop and the
        # writer thread; set before the hand-off, which may start it at once.
        running: list[list[float]] = [[0.0] * 5]

        def traced_add(
            events: list[Event], datagrams: list[Any], receipts: list[Any] | None = None
        ) -> None:
            now, waited = time.time(), journal._urgent or journal._relay
            add(events, datagrams, receipts)
            # The batch's first write datagrams or receipts wait for.
            if (journal._urgent or journal._relay) and not waited:
                first_write[0] = now

        def traced_flush() -> None:
            before = journal.commits
            record = [first_write[0], time.time(), 0.0, 0.0, 0.0]
            if not journal.committing:
                running[0] = record
            flush()
            # Only a batch datagrams or receipts wait for (a batch of bookkeeping alone
            # gathers for up to a second, holding nothing back).
            waited = journal._inflight_urgent or journal._inflight_relay
            if journal.commits > before and journal.committing and waited:
                commits.append(record)

        def traced_commit_and_release() -> None:  # on a writer thread
            record = running[0]
            record[2] = time.time()
            try:
                commit_and_release()
            finally:
                record[3] = time.time()

        def traced_committed(future: Any) -> None:
            if future is journal._inflight:
                running[0][4] = time.time()
            committed(future)

        journal.add = traced_add  # type: ignore[method-assign]
        journal._flush = traced_flush  # type: ignore[method-assign]
        journal._committed = traced_committed  # type: ignore[method-assign]
        db._commit_and_release = traced_commit_and_release  # type: ignore[method-assign]

    def commit_parts(self, record: list[float]) -> dict[str, float]:
        """A finished commit's four parts, in ms."""
        first, flushed, taken, written, returned = record
        parts = (flushed - first, taken - flushed, written - taken, returned - written)
        return {name: round(ms * 1000, 2) for name, ms in zip(COMMIT_PARTS, parts, strict=True)}

    def commit_summary(self, since: float) -> dict[str, Any]:
        """Each part's p50, p99 and max over the commits that started after ``since``."""
        done = [
            self.commit_parts(r)
            for records in self.commits.values()
            for r in records
            if r[4] and r[1] >= since
        ]
        summary: dict[str, Any] = {"commits": len(done)}
        for name in COMMIT_PARTS:
            values = sorted(d[name] for d in done)
            summary[name] = {
                "p50_ms": loopback.percentile(values, 0.5),
                "p99_ms": loopback.percentile(values, 0.99),
                "max_ms": values[-1] if values else None,
            }
        return summary

    def waited_for(self, node: int, queued: float, arrived: float) -> dict[str, float] | None:
        """The commit a copy waited for at ``node``: the first one started after the core
        queued the copy (``queued``: that pump's writes are in it), if it returned before
        the copy ``arrived`` at the next node (else the copy did not wait for it)."""
        later = [r for r in self.commits.get(node, ()) if r[1] >= queued]
        first = min(later, key=lambda r: r[1], default=None)
        if first is None or not first[4] or first[4] > arrived:
            return None
        return self.commit_parts(first)

    async def sample_queues(self, ports: set[int], until: list[bool]) -> None:
        while not until[0]:
            queued = sockets = 0
            with open("/proc/net/udp") as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if int(fields[1].split(":")[1], 16) in ports:
                        rx = int(fields[4].split(":")[1], 16)
                        queued += rx
                        sockets += rx > 0
            self.queues.append((time.time(), queued, sockets))
            await asyncio.sleep(QUEUE_SAMPLE_S)


def install(trace: Trace) -> list[loopback.Shard]:
    """Wrap ``loopback.Shard`` so that every node is traced from the join on."""
    shards: list[loopback.Shard] = []
    start, send_all = loopback.Shard.start, loopback.Shard.send_all
    stop = [False]

    async def traced_start(self: loopback.Shard, bootstrap: Any) -> Any:
        first = await start(self, bootstrap)
        shards.append(self)
        for host in self.hosts.values():
            trace.index_of[host.node.address] = host.index
        for host in self.hosts.values():
            trace.attach(host.index, host.node)
            if host.service is not None:
                trace.attach_commits(host.index, host.service)
        return first

    async def traced_send_all(self: loopback.Shard, start_at: float) -> None:
        ports = set()
        for host in self.hosts.values():
            assert host.protocol is not None and host.protocol.transport is not None
            ports.add(host.protocol.transport.get_extra_info("sockname")[1])
        sampler = asyncio.create_task(trace.sample_queues(ports, stop))
        try:
            await send_all(self, start_at)
            await loopback.wait_until(self.expected_done, loopback.GRACE_BOUND_S)
        finally:
            stop[0] = True
            await sampler

    loopback.Shard.start = traced_start  # type: ignore[method-assign]
    loopback.Shard.send_all = traced_send_all  # type: ignore[method-assign]
    return shards


def causes(plan: loopback.Plan, shard: loopback.Shard, trace: Trace, slow_ms: float) -> Any:
    """Each slow text's cause, and the copy's path (see the module docstring)."""
    by_key: dict[bytes, list[tuple[float, str, int, bytes, int, int, Any]]] = defaultdict(list)
    for record in trace.log:
        by_key[record[3]].append(record)
    received = shard.results()["received"]
    counted: Counter[str] = Counter()
    slow: list[dict[str, Any]] = []
    for number, (sender, recipient) in enumerate(plan.pairs()):
        sent = shard.sent_at.get(number)
        if sent is None:
            continue
        latency_ms = (received[number] - sent) * 1000 if number in received else None
        if latency_ms is not None and latency_ms <= slow_ms:
            continue
        # The text's item: the sender's first own relay right after sending it.
        first = next(
            (
                r
                for r in trace.log
                if r[1] == "relay" and r[2] == sender and r[5] == 0 and 0 <= r[0] - sent < 1.0
            ),
            None,
        )
        hops = [] if first is None else path(by_key[first[3]], sender, recipient, sent, trace)
        cause = classify(number, sender, sent, latency_ms, hops, by_key, first, trace)
        counted[cause] += 1
        slow.append({"text": number, "latency_ms": latency_ms, "cause": cause, "path": hops})
    return counted, slow


def path(
    records: list[tuple[float, str, int, bytes, int, int, Any]],
    sender: int,
    recipient: int,
    sent: float,
    trace: Trace,
) -> list[dict[str, Any]]:
    """The first copy to reach ``recipient``, back to ``sender``: each hop's send and
    arrival (ms after sending), the attempt it was, and with sqlite the commit the copy
    waited for at the node that sent it (None: it waited for none)."""
    arrived: dict[int, tuple[float, int]] = {}
    for t, what, node, _, other, _, _ in records:
        if what == "arrive" and node not in arrived:
            arrived[node] = (t, other)
    hops: list[dict[str, Any]] = []
    node, seen = recipient, set()
    while node != sender and node in arrived and node not in seen:
        seen.add(node)
        at, source = arrived[node]
        sends = [
            r for r in records if r[1] == "send" and r[2] == source and r[4] == node and r[0] <= at
        ]
        hop: dict[str, Any] = {
            "from": source,
            "to": node,
            "attempt": sends[-1][5] if sends else None,
            "sent_ms": round((sends[-1][0] - sent) * 1000, 1) if sends else None,
            "arrived_ms": round((at - sent) * 1000, 1),
        }
        if trace.commits and sends and source != sender:
            # The sender's own copy leaves after send_text's commit, which is not a batch.
            hop["waited_for"] = trace.waited_for(source, sends[-1][0], at)
        hops.append(hop)
        node = source
    hops.reverse()
    return hops


def classify(
    number: int,
    sender: int,
    sent: float,
    latency_ms: float | None,
    hops: list[dict[str, Any]],
    by_key: dict[bytes, list[tuple[float, str, int, bytes, int, int, Any]]],
    first: tuple[float, str, int, bytes, int, int, Any] | None,
    trace: Trace,
) -> str:
    if latency_ms is None:
        return "not received"
    retry = next((hop for hop in hops if hop["attempt"]), None)
    if retry is not None:
        if retry["from"] != sender:
            return "retry at a relay"
        assert first is not None
        came_back = any(
            r[1] == "arrive" and r[2] == sender and r[6] and r[0] - sent < retry["sent_ms"] / 1000
            for r in by_key[first[3]]
        )
        return "retry at the sender" + (" (its stem came back to the sender)" if came_back else "")
    end = sent + latency_ms / 1000
    paused = sum(max(0.0, min(b, end) - max(a, sent)) for a, b in trace.full_gc)
    if paused * 1000 >= FULL_GC_SHARE * latency_ms:
        return "full collection"
    core = trace.core_received.get(number)
    if core is not None and (end - core) * 1000 >= COMMIT_SHARE * latency_ms:
        return "commit"
    worst = max(
        (hop["arrived_ms"] - hop["sent_ms"] for hop in hops if hop["sent_ms"] is not None),
        default=0.0,
    )
    bound = next((b for b in QUEUED_BOUNDS_MS if worst < b), None)
    return f"queued: slowest hop under {bound} ms" if bound else "queued: slowest hop 2 s or more"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=loopback.DEFAULT_NODES)
    parser.add_argument("--messages", type=int, default=loopback.DEFAULT_MESSAGES)
    parser.add_argument("--rate", type=float, default=loopback.DEFAULT_RATE_PER_S)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--send-at-once", action="store_true")
    parser.add_argument("--no-freeze", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    plan = loopback.Plan(
        args.nodes,
        args.messages,
        1,
        args.rate,
        args.seed,
        args.store,
        wait_quiet=not args.send_at_once,
        freeze_heap=not args.no_freeze,
    )
    trace = Trace()
    shards = install(trace)
    figures = asyncio.run(loopback.run(plan))
    counted, slow = causes(plan, shards[0], trace, args.slow_ms)
    first_sent = min(shards[0].sent_at.values())
    busiest = max(trace.queues, key=lambda q: q[1], default=(first_sent, 0, 0))
    out = {
        "figures": {k: figures[k] for k in ("latency_p50_ms", "latency_p99_ms", "cpu_utilisation")},
        "slow_ms": args.slow_ms,
        "slow_texts": len(slow),
        "causes": dict(counted.most_common()),
        "full_collections_ms": [round((b - a) * 1000, 1) for a, b in trace.full_gc],
        "group_commits": trace.commit_summary(first_sent) if trace.commits else None,
        "largest_socket_backlog": {
            "at_s_after_first_text": round(busiest[0] - first_sent, 2),
            "bytes": busiest[1],
            "sockets": busiest[2],
        },
        "slow": slow,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for name, value in out.items():
            if name != "slow":
                print(f"{name}: {value}")
        for text in slow:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
