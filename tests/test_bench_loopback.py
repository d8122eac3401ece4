"""Smoke runs of the loopback benchmarks: tiny sizes, JSON shape and sane values only.

No timing assertions: these only prove the scripts run, stop by themselves and report
every figure RESULTS.md quotes.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from comm_tui.crypto.identity import Identity

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
RUN_BOUND_S = 60.0


def run_json(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert isinstance(figures, dict)
    return figures


@pytest.mark.parametrize("processes", ["1", "3"])
def test_loopback_smoke(processes: str) -> None:
    """One process, and several (each of the workers told by the first when to start,
    each sending its own texts and reporting its own figures)."""
    figures = run_json(
        "loopback.py", "--nodes", "12", "--messages", "5", "--processes", processes, "--allow-small"
    )
    for key in (
        "latency_p50_ms",
        "latency_p99_ms",
        "delivered_p50_ms",
        "delivered_p99_ms",
        "delivered_ratio",
        "relayed_per_s_per_core",
        "cpu_s_per_relayed_message",
        "loop_thread_cpu_s_per_relayed_message",
        "datagrams_per_message",
    ):
        assert key in figures
    assert figures["processes"] == int(processes)
    assert len(figures["table_nodes_mean_by_process"]) == int(processes)
    assert figures["texts_sent"] == 5
    # No adversary and no loss on loopback, and the run waits (bounded) for the stragglers:
    # every text arrives and its ack comes back.
    assert figures["all_joined"] is True
    assert (figures["received_ratio"], figures["delivered_ratio"]) == (1.0, 1.0)
    assert figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    assert figures["messages_relayed"] > 0  # the texts are stored with relays, not only sent
    assert figures["message_datagrams"] > 0
    assert figures["datagrams_per_message"] > 0
    assert figures["cpu_s"] > 0
    # The loops' own threads are part of the process (the rest: sqlite's commit writers).
    loop_share = figures["loop_thread_cpu_s_per_relayed_message"]
    assert 0 < loop_share <= figures["cpu_s_per_relayed_message"] * 1.01


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--nodes", "12"], "--nodes"),
        (["--nodes", "50", "--processes", "0"], "--processes"),
        (["--nodes", "50", "--processes", "51"], "--processes"),
    ],
)
def test_loopback_refuses_sizes_out_of_range(args: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "loopback.py"), *args],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
        check=False,
    )
    assert done.returncode == 2
    assert named in done.stderr


def test_vs_kademlia_smoke() -> None:
    pytest.importorskip("kademlia")
    figures = run_json("vs_kademlia.py", "--nodes", "12", "--lookups", "5")
    for side in ("ours", "kademlia"):
        assert figures[f"{side}_latency_p50_ms"] > 0
        assert figures[f"{side}_latency_p50_ms"] <= figures[f"{side}_latency_p99_ms"]
        assert figures[f"{side}_cpu_s_per_lookup"] > 0
        assert figures[f"{side}_queries_per_lookup"] > 0
        # 12 nodes, k = 8: every lookup of either side must find every one of the true 8
        # closest (the querier left out), or the comparison measures a broken lookup.
        assert figures[f"{side}_closest_found_ratio"] == 1.0
        assert figures[f"{side}_background_cpu_s_per_s"] >= 0
        # Both networks settle the same way before the background span (bounded: on a
        # loaded machine the answer may be False, and then it says so).
        assert isinstance(figures[f"{side}_settled"], bool)
        assert figures[f"{side}_settle_s"] >= figures["settle_s"]
        assert 0 <= figures[f"{side}_net_cpu_s_per_lookup"] <= figures[f"{side}_cpu_s_per_lookup"]
        per_query = figures[f"{side}_cpu_s_per_lookup"] / figures[f"{side}_queries_per_lookup"]
        assert figures[f"{side}_cpu_s_per_query"] == pytest.approx(per_query, rel=0.05)
    for key in ("latency_p50_ratio", "latency_p99_ratio", "cpu_ratio", "cpu_per_query_ratio"):
        assert figures[key] > 0
    assert figures["paths"] == 2


def test_vs_kademlia_interleaved_smoke() -> None:
    """``--interleave``: both real networks up at once, lookups in alternating blocks."""
    pytest.importorskip("kademlia")
    figures = run_json("vs_kademlia.py", "--nodes", "12", "--lookups", "4", "--interleave", "2")
    assert figures["interleave"] == 2
    for side in ("ours", "kademlia"):
        assert figures[f"{side}_closest_found_ratio"] == 1.0
        assert figures[f"{side}_queries_per_lookup"] > 0 and figures[f"{side}_timeouts"] == 0
    assert figures["cpu_per_query_ratio"] > 0


def bench_module(name: str) -> Any:
    """A bench script imported as a module (bench/ is scripts, not a package), for tests
    of its own rules (when it starts measuring, what it counts)."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_loopback_sends_only_once_the_start_up_traffic_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The texts wait past every node's first rebootstrap tick (their records go out then)
    and until the nodes send fewer than QUIET_PER_NODE_S datagrams per second for
    QUIET_WINDOWS windows in a row (a lull before a later tick's burst is not quiet),
    bounded."""
    loopback = bench_module("loopback")
    monkeypatch.setattr(loopback, "REBOOTSTRAP_INTERVAL_S", 0.3)
    monkeypatch.setattr(loopback, "QUIET_WINDOW_S", 0.1)
    monkeypatch.setattr(loopback, "QUIET_BOUND_S", 5.0)
    plan = loopback.Plan(2, 1, 1, 1.0, 1, "memory")
    shard = loopback.Shard(plan, 0, Path("."))
    nodes = [loopback.Node(Identity.from_seed(bytes([i]) * 32), 0.0) for i in (1, 2)]
    shard.hosts = {i: loopback.Host(i, node) for i, node in enumerate(nodes)}

    async def settle_while_busy(busy_s: float, lull_s: float = 0.0) -> tuple[bool, float]:
        """Busy for ``busy_s`` after a lull of ``lull_s`` (quiet, past the tick)."""
        shard.started_at = time.time()
        start_at = time.monotonic() + lull_s
        stop_at = start_at + busy_s

        async def traffic() -> None:  # 2 nodes x 2/s x 0.1 s: a window holds < 0.4 quiet
            await asyncio.sleep(lull_s)
            while time.monotonic() < stop_at:
                nodes[0].stats.datagrams_out += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(traffic())
        result: tuple[bool, float] = await shard.settle()
        await task
        return result

    windows = loopback.QUIET_WINDOWS
    quiet, waited = asyncio.run(settle_while_busy(0.0))
    assert quiet and 0.3 + windows * 0.1 <= waited < 1.3  # the tick, then quiet windows
    quiet, waited = asyncio.run(settle_while_busy(1.0))
    assert quiet and waited >= 1.0 + windows * 0.1  # as long as the nodes were busy
    quiet, waited = asyncio.run(settle_while_busy(0.4, lull_s=0.45))  # a lull, a burst
    assert quiet and waited >= 0.85 + windows * 0.1
    monkeypatch.setattr(loopback, "QUIET_BOUND_S", 0.6)
    quiet, waited = asyncio.run(settle_while_busy(2.0))
    assert not quiet and waited < 1.5  # bounded: sends anyway, and says so
    shard.plan = loopback.Plan(2, 1, 1, 1.0, 1, "memory", wait_quiet=False)
    assert asyncio.run(settle_while_busy(1.0))[0] is False  # --send-at-once


def test_loopback_counts_full_collections_and_freezes_the_start_up_heap() -> None:
    loopback = bench_module("loopback")
    plan = loopback.Plan(2, 1, 1, 1.0, 1, "memory")
    try:
        loopback.freeze_heap(plan)
        assert gc.get_freeze_count() > 0
        full = loopback.FullCollections()
        gc.collect(1)
        assert full.count == 0  # a young collection is not a full one
        gc.collect()
        assert full.count == 1 and full.longest_s > 0
    finally:
        full.close()
    assert gc.get_freeze_count() == 0
    loopback.freeze_heap(loopback.Plan(2, 1, 1, 1.0, 1, "memory", freeze_heap=False))
    assert gc.get_freeze_count() == 0


def test_loopback_trace_names_a_cause_and_a_path_for_every_slow_text() -> None:
    """With --slow-ms 0 every text is slow: each gets a cause, and its copy's path leads
    from its sender to its recipient, hop after hop, each hop sent before it arrived."""
    figures = run_json("loopback_trace.py", "--nodes", "12", "--messages", "5", "--slow-ms", "0")
    assert figures["slow_texts"] == 5 == sum(figures["causes"].values())
    for text in figures["slow"]:
        assert text["cause"] != "not received"
        hops = text["path"]
        assert hops and all(h["sent_ms"] <= h["arrived_ms"] for h in hops)
        assert all(a["to"] == b["from"] for a, b in itertools.pairwise(hops))
