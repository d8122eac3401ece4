"""What one durable commit costs in CPU, and what handing it to a writer thread adds.

Answers two questions of issue 11's SQLite loopback work with the product's settings
(WAL, ``synchronous=FULL``, one file per node, as ``comm_tui/store/db.py`` opens them):

- ``statements``: process CPU of ``BEGIN IMMEDIATE``, one relay-store upsert of an
  entry's size and ``COMMIT``, each measured alone, with ``synchronous`` FULL and OFF
  (OFF: no fsync; the difference is the fsync's CPU, which the kernel charges to us);
- ``handoff``: CPU and wall time per commit of ``--files`` files written round after
  round by an asyncio loop, each commit run (a) on the loop itself, (b) on a writer
  pool, one hand-off (``submit`` + ``call_soon_threadsafe``) per commit, as
  ``comm_tui/net/commit.py`` does, and (c) on the pool with the commits of several
  files in one hand-off (what a process-wide writer could do).

Wall times are the disk's and the machine's; compare CPU. ``--json`` prints one object.

    python bench/commit_cost.py --files 100 --rounds 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ENTRY_BYTES = 1_300  # a relay-store entry: a sealed message and its schedule
WRITERS = 4  # as comm_tui/net/commit.py's COMMIT_WRITERS


def open_files(directory: Path, count: int, synchronous: str) -> list[sqlite3.Connection]:
    conns = []
    for n in range(count):
        conn = sqlite3.connect(directory / f"{n}.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS relay_items (key BLOB PRIMARY KEY, blob BLOB)")
        conns.append(conn)
    return conns


def write(conn: sqlite3.Connection) -> None:
    """Open a batch and write one entry, as a group commit's batch of one event does."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO relay_items (key, blob) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET blob = excluded.blob",
        (os.urandom(21), os.urandom(ENTRY_BYTES)),
    )


def commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def statements(files: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU microseconds of each statement of a one-entry commit, by synchronous mode."""
    out: dict[str, dict[str, float]] = {}
    for mode in ("FULL", "OFF"):
        with tempfile.TemporaryDirectory(prefix="comm-tui-commit-cost-") as tmp:
            conns = open_files(Path(tmp), files, mode)
            spent = {"begin": 0.0, "upsert": 0.0, "commit": 0.0}
            for _ in range(rounds):
                for conn in conns:
                    t0 = time.process_time()
                    conn.execute("BEGIN IMMEDIATE")
                    t1 = time.process_time()
                    conn.execute(
                        "INSERT INTO relay_items (key, blob) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET blob = excluded.blob",
                        (os.urandom(21), os.urandom(ENTRY_BYTES)),
                    )
                    t2 = time.process_time()
                    conn.execute("COMMIT")
                    t3 = time.process_time()
                    spent["begin"] += t1 - t0
                    spent["upsert"] += t2 - t1
                    spent["commit"] += t3 - t2
            for conn in conns:
                conn.close()
        out[mode] = {k: round(v * 1e6 / (files * rounds), 1) for k, v in spent.items()}
    return out


async def on_loop(conns: list[sqlite3.Connection], rounds: int) -> None:
    for _ in range(rounds):
        for conn in conns:
            write(conn)
            commit(conn)
        await asyncio.sleep(0)


async def handed_off(
    conns: list[sqlite3.Connection], rounds: int, pool: ThreadPoolExecutor, per_handoff: int
) -> None:
    """Each round: write every file, then hand the commits over ``per_handoff`` at a time."""
    for _ in range(rounds):
        for conn in conns:
            write(conn)
        await commit_in(
            pool, [conns[i : i + per_handoff] for i in range(0, len(conns), per_handoff)]
        )


async def commit_in(pool: ThreadPoolExecutor, groups: list[list[sqlite3.Connection]]) -> None:
    """Commit each group on a writer thread; each group's return wakes the loop once."""
    loop = asyncio.get_running_loop()
    left = len(groups)
    done = asyncio.Event()

    def returned() -> None:
        nonlocal left
        left -= 1
        if not left:
            done.set()

    def commit_all(group: list[sqlite3.Connection]) -> None:
        for conn in group:
            commit(conn)
        loop.call_soon_threadsafe(returned)

    for group in groups:
        pool.submit(commit_all, group)
    await done.wait()


def handoff(files: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU and wall microseconds per commit for each way of running the commits."""
    per_group = max(1, files // WRITERS)
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        ways: dict[str, Callable[[list[sqlite3.Connection]], Awaitable[None]]] = {
            "on_the_loop": lambda conns: on_loop(conns, rounds),
            "one_handoff_per_commit": lambda conns: handed_off(conns, rounds, pool, 1),
            f"one_handoff_per_{per_group}_commits": lambda conns: handed_off(
                conns, rounds, pool, per_group
            ),
        }
        out: dict[str, dict[str, float]] = {}
        for name, way in ways.items():
            with tempfile.TemporaryDirectory(prefix="comm-tui-commit-cost-") as tmp:
                conns = open_files(Path(tmp), files, "FULL")
                cpu, wall = time.process_time(), time.perf_counter()
                asyncio.run(way(conns))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                for conn in conns:
                    conn.close()
            commits = files * rounds
            out[name] = {
                "cpu_us_per_commit": round(cpu * 1e6 / commits, 1),
                "wall_us_per_commit": round(wall * 1e6 / commits, 1),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100, help="database files (nodes)")
    parser.add_argument("--rounds", type=int, default=20, help="commits per file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.files < 1 or args.rounds < 1:
        parser.error("--files and --rounds must be positive")
    load = os.getloadavg()[0]
    figures: dict[str, Any] = {
        "files": args.files,
        "rounds": args.rounds,
        "load_average_1m": round(load, 2),
        "statements_cpu_us": statements(args.files, args.rounds),
        "handoff": handoff(args.files, args.rounds),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:<18}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
