"""Smoke runs of the loopback benchmarks: tiny sizes, JSON shape and sane values only.

No timing assertions: these only prove the scripts run, stop by themselves and report
every figure RESULTS.md quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.mark.parametrize("processes", ["1", "2"])
def test_loopback_smoke(processes: str) -> None:
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
        "datagrams_per_message",
    ):
        assert key in figures
    assert figures["processes"] == int(processes)
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


def test_loopback_refuses_sizes_out_of_range() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "loopback.py"), "--nodes", "12"],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
        check=False,
    )
    assert done.returncode == 2
    assert "--nodes" in done.stderr


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
        assert 0 <= figures[f"{side}_net_cpu_s_per_lookup"] <= figures[f"{side}_cpu_s_per_lookup"]
        per_query = figures[f"{side}_cpu_s_per_lookup"] / figures[f"{side}_queries_per_lookup"]
        assert figures[f"{side}_cpu_s_per_query"] == pytest.approx(per_query, rel=0.05)
    for key in ("latency_p50_ratio", "latency_p99_ratio", "cpu_ratio", "cpu_per_query_ratio"):
        assert figures[key] > 0
    assert figures["paths"] == 2
