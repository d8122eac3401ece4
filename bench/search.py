"""Search over a big history: the FTS5 index against scanning every row.

Fills a real profile database (``Database``, as the app writes it: one transaction per
batch of received texts, the index kept in step by its triggers) with N messages over
50 conversations, from a vocabulary of 5,000 words with a Zipf-like spread, then times
``Database.search`` for queries of rare, common and two words, against the same
queries as ``LIKE '%word%'`` scans of the messages table: what a user of a client
without search does by hand (SimpleX's CLI guide suggests it). The scan is the baseline,
and its time is what reading every row costs, measured in the same run.

    python bench/search.py              # 100,000 messages
    python bench/search.py --quick      # 5,000 messages (the smoke test)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from comm_tui.crypto.identity import Identity
from comm_tui.store.db import Database

CONVERSATIONS = 50
VOCABULARY = 5_000
WORDS_PER_TEXT = (3, 30)
BATCH = 500
REPEATS = 20


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(VOCABULARY * 2)}
    return sorted(words)[:VOCABULARY]


def fill(db: Database, count: int, rng: random.Random) -> tuple[float, list[str]]:
    """Write ``count`` received texts; (seconds taken, vocabulary by frequency rank)."""
    vocabulary = _vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    peers = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(CONVERSATIONS)]
    # Contacts: a history this long is one with people the user knows (a stranger's
    # message request keeps few texts, docs/PROTOCOL.md, "7.1", "Message requests").
    for i, peer in enumerate(peers):
        db.add_contact(f"peer{i}", peer.key, peer.address, 0.0)
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        with db.transaction():
            for i in range(start, min(start + BATCH, count)):
                who = peers[i % CONVERSATIONS]
                words = rng.choices(vocabulary, weights, k=rng.randint(*WORDS_PER_TEXT))
                db.add_incoming(os.urandom(16), who.key, who.address, " ".join(words), i, i)
    return time.perf_counter() - started, vocabulary


def timed(run: object) -> tuple[float, float, int]:
    """(p50 ms, max ms, result count) of ``run()`` over REPEATS calls."""
    times, found = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        found = len(run())  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 messages")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    count = 5_000 if args.quick else args.messages
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, Database.open(Path(tmp) / "bench.db") as db:
        took, vocabulary = fill(db, count, rng)
        size = os.path.getsize(Path(tmp) / "bench.db")
        print(f"messages: {count:,} in {CONVERSATIONS} conversations")
        print(f"writing them, index included: {took:.2f} s ({count / took:,.0f} texts/s)")
        print(f"database size: {size / 1e6:.1f} MB")
        queries = {
            "rare word": vocabulary[-1],
            "common word": vocabulary[0],
            "two words": f"{vocabulary[1]} {vocabulary[50]}",
            "prefix": vocabulary[100][:3],
        }
        print(
            f"{'query':<12} {'fts p50 ms':>11} {'fts max ms':>11} {'scan p50 ms':>12} "
            f"{'ratio':>7} {'results':>8}"
        )
        for label, text in queries.items():
            fts_p50, fts_max, found = timed(lambda text=text: db.search(text, limit=200))

            def scan(text: str = text) -> list[object]:
                where = " AND ".join("text LIKE ?" for _ in text.split())
                params = [f"%{word}%" for word in text.split()]
                return db._all(  # the baseline is the raw scan, on purpose
                    f"SELECT id FROM messages WHERE {where} ORDER BY id DESC LIMIT 200", *params
                )

            scan_p50, _, _ = timed(scan)
            print(
                f"{label:<12} {fts_p50:>11.2f} {fts_max:>11.2f} {scan_p50:>12.2f} "
                f"{scan_p50 / fts_p50:>6.1f}x {found:>8}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
