"""CPU per group commit through the product's commit path alone: no network, no protocol.

``--nodes`` nodes' ``GroupCommit``s (``comm_tui/net/commit.py``) on one asyncio loop, on
``Database`` files as ``comm_tui/store/db.py`` opens them, each given one batch per round
shaped like a relay's hop in the loopback benchmark: one relay-store entry of 1,300 bytes
written (two in one batch of five), the oldest deleted in two batches of five, and one
datagram waiting for the commit. A round ends when every batch of it is on disk, so each
batch is exactly one commit whatever the disk's speed, and the figures (process CPU and
the loop thread's CPU per commit; the rest is the writer threads') compare two trees'
commit paths without the loopback's run-to-run noise (a starved run groups more).

    python bench/commit_path.py --nodes 50 --rounds 60 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from comm_tui.net.commit import Datagram, GroupCommit
from comm_tui.protocol.events import Event, StoreChanged
from comm_tui.store.db import Database

ENTRY_BYTES = 1_300  # a relay-store entry: a sealed message and its schedule
FAR_EXPIRY_MS = 10**15
DATAGRAM: Datagram = (b"receipt", ("127.0.0.1", 9))  # never sent: transmit counts it
TWO_ENTRIES = 0.2  # share of batches that write two entries (an ack and a copy)
ONE_DELETE = 0.4  # share of batches that delete the oldest entry (an ack replacing it)


def store_writer(db: Database) -> Any:
    """The service's way of writing a batch's relay-store changes, one row per key."""

    def apply(events: list[Event]) -> list[str]:
        put: dict[bytes, tuple[bytes, int]] = {}
        delete: set[bytes] = set()
        for event in events:
            assert isinstance(event, StoreChanged)
            for key in event.put:
                put[key] = event.put[key]
                delete.discard(key)
            for key in event.delete:
                put.pop(key, None)
                delete.add(key)
        db.apply_store_changes(put, delete)
        return []

    return apply


async def run(nodes: int, rounds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    blob = os.urandom(ENTRY_BYTES)
    sent = [0]
    with tempfile.TemporaryDirectory(prefix="comm-tui-commit-path-") as tmp:
        dbs = [Database.open(Path(tmp) / f"node{i}.db") for i in range(nodes)]

        def transmit(datagrams: list[Datagram]) -> None:
            sent[0] += len(datagrams)

        journals = [
            GroupCommit[str](
                db,
                apply=store_writer(db),
                notify=lambda notices: None,
                transmit=transmit,
                on_failure=lambda exc: None,
                wake=lambda: None,
            )
            for db in dbs
        ]
        held: list[list[bytes]] = [[] for _ in dbs]
        cpu_before, loop_before = time.process_time(), time.thread_time()
        for done_rounds in range(1, rounds + 1):
            for journal, keys in zip(journals, held, strict=True):
                put = {}
                for _ in range(2 if rng.random() < TWO_ENTRIES else 1):
                    key = os.urandom(33)
                    put[key] = (blob, FAR_EXPIRY_MS)
                    keys.append(key)
                delete = frozenset()
                if rng.random() < ONE_DELETE and len(keys) > 2:
                    delete = frozenset([keys.pop(0)])
                journal.add([StoreChanged(put=put, delete=delete)], [DATAGRAM])
            while sent[0] < done_rounds * nodes:  # every batch of the round is on disk
                await asyncio.sleep(0.001)
        cpu_s = time.process_time() - cpu_before
        loop_s = time.thread_time() - loop_before
        commits = sum(journal.commits for journal in journals)
        for journal in journals:
            journal.close()
        for db in dbs:
            db.close()
    return {
        "nodes": nodes,
        "rounds": rounds,
        "commits": commits,
        "cpu_us_per_commit": round(cpu_s / commits * 1e6, 1),
        "loop_thread_us_per_commit": round(loop_s / commits * 1e6, 1),
        "writer_threads_us_per_commit": round((cpu_s - loop_s) / commits * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.nodes, args.rounds, args.seed))
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
