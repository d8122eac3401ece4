"""Smoke runs of what the SQLite-path benchmarks report (tiny sizes).

``loopback.py --count-statements`` counts the phase's statements by kind, and
``loopback_trace.py --store sqlite`` times the group commits datagrams wait for: the shape
and sane values only, no timing assertions (bench/RESULTS.md quotes these figures).
"""

from __future__ import annotations

import pytest

from tests.test_bench_loopback import run_json

pytestmark = pytest.mark.timeout(120)


def test_loopback_counts_the_statements_of_the_phase_by_kind() -> None:
    figures = run_json(
        "loopback.py", "--nodes", "12", "--messages", "5", "--allow-small",
        "--store", "sqlite", "--count-statements",
    )  # fmt: skip
    assert figures["received_ratio"] == 1.0
    kinds = figures["statements_per_relayed_message_by_kind"]
    # Every text is written by its sender (send_text commits it) and stored by relays.
    assert kinds["INSERT relay_items"] > 0 and kinds["INSERT messages"] > 0
    # Each transaction is opened and committed once (the full-text index's statements
    # and a trigger's repeat of its statement are not counted).
    assert kinds["BEGIN"] == kinds["COMMIT"] >= figures["commits_per_relayed_message"] > 0
    assert figures["statements_per_relayed_message"] == pytest.approx(sum(kinds.values()), 0.01)
    assert not any(kind.startswith("REPLACE") for kind in kinds)
    # Every commit writes a page or more: the phase's write-ahead log over its commits.
    assert figures["wal_frames_per_commit"] >= 1


def test_loopback_without_the_flag_counts_nothing() -> None:
    figures = run_json(
        "loopback.py", "--nodes", "12", "--messages", "3", "--allow-small", "--store", "sqlite"
    )
    assert figures["statements_per_relayed_message"] is None
    assert figures["statements_per_relayed_message_by_kind"] == {}
    assert figures["wal_frames_per_commit"] is None
    assert figures["commits_per_relayed_message"] > 0


def test_loopback_trace_times_the_commits_a_slow_texts_copies_waited_for() -> None:
    figures = run_json(
        "loopback_trace.py", "--nodes", "12", "--messages", "5", "--slow-ms", "0",
        "--store", "sqlite",
    )  # fmt: skip
    commits = figures["group_commits"]
    assert commits["commits"] > 0
    parts = ("gather", "writer_queue", "commit", "return")
    for part in parts:
        assert 0 <= commits[part]["p50_ms"] <= commits[part]["p99_ms"] <= commits[part]["max_ms"]
    waited = [hop["waited_for"] for text in figures["slow"] for hop in text["path"][1:]]
    for parts_ms in filter(None, waited):
        assert set(parts_ms) == set(parts) and min(parts_ms.values()) >= 0


def test_commit_path_makes_one_commit_per_batch_and_splits_its_cpu() -> None:
    figures = run_json("commit_path.py", "--nodes", "3", "--rounds", "4")
    assert figures["commits"] == 12  # every round waits for its batches: one commit each
    loop, writers = figures["loop_thread_us_per_commit"], figures["writer_threads_us_per_commit"]
    assert loop > 0 and writers > 0
    assert figures["cpu_us_per_commit"] == pytest.approx(loop + writers, abs=0.2)
