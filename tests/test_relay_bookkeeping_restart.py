"""What a relay does not persist, and what its restart does without it.

docs/PROTOCOL.md, "8.2 Local durability": the relay schedule and the holders of an item
held for others (``Entry.for_others``) are never written; the disk keeps the entry as it
was added or last replaced. A restarted relay restores it from that: it waits the
restore's grace, relays it again to the nodes not listed as holders, and those that hold
it answer with a ``Receipt`` again. Our own entries' bookkeeping is still written (the
outbox and the custody view read it after a restart). Pinned here on the store, through
the core with a restart from what it persisted, and with real ``comm-tui node``
processes SIGKILLed while they hold a text whose sender is gone.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from comm_tui.cli import FAST_KDF_ENV
from comm_tui.protocol.node import RESTORE_GRACE_S, Node
from comm_tui.protocol.relay_store import Entry, Kind, RelayStore
from comm_tui.store.paths import profile_paths
from tests.node_procs import Proc
from tests.test_crash_safety import POLL_INTERVAL_S, Cluster
from tests.test_node import fast_config, stored_messages
from tests.test_relay_store import message_entry
from tests.wire import T0, Wire


def test_an_item_for_others_has_its_bookkeeping_kept_in_memory_only() -> None:
    store = RelayStore(bytes(20))
    theirs = message_entry(1, origin=b"o" * 20, net="10.0.0.0/24")
    ours = message_entry(2)  # no origin: ours (an outbox part, say)
    store.add(theirs)
    store.add(ours, enforce_quota=False)
    store.take_changes()
    theirs.attempts += 1
    store.touch(theirs, bookkeeping=True)
    assert not store.dirty, "an item for others' schedule is not persisted"
    store.touch(ours, bookkeeping=True)
    assert store.dirty == {ours.key} and store.take_changes().bookkeeping == {ours.key}
    store.touch(theirs)  # a change of its content is written
    changes = store.take_changes()
    assert set(changes.put) == {theirs.key} and changes.bookkeeping == frozenset()
    assert changes.for_others == {theirs.key}


def _persisted_message(wire: Wire, node: Node) -> Entry:
    (entry,) = [
        e
        for e in map(Entry.deserialize, wire.persisted[wire.endpoint(node)].values())
        if e.kind is Kind.MESSAGE
    ]
    return entry


def test_a_relay_restarted_from_its_first_write_relays_again_and_delivers() -> None:
    """R holds A's text for offline B; its retries and S's receipt are not written. After
    a restart from what it wrote, R waits the grace, hands S the copy again (S answers
    with a receipt, a holder again), and B gets the text once it is online."""
    wire = Wire()
    config = fast_config()
    a, r, s, b = (wire.add(seed, config) for seed in (1, 2, 4, 3))
    for one, other in ((a, r), (s, r), (b, r)):
        wire.connect(one, other)
    wire.offline.add(wire.endpoint(b))
    text_id = a.send_text(b.identity.public, "held across a crash", T0)
    wire.pump(T0)
    wire.run(T0 + 1, T0 + 6)
    (live,) = stored_messages(r)
    written = _persisted_message(wire, r)
    assert written.item_id == live.item_id
    # Retried while B is away, and told by a receipt who else holds it: none of it written.
    learned = live.holders - written.holders
    assert written.attempts < live.attempts and learned
    # Our own part's holders are written: A's outbox shows the text as sent after a restart.
    assert r.address in _persisted_message(wire, a).holders

    restart_at = T0 + 7
    restarted = Node(r.identity, restart_at, config=config, rng=random.Random(99))
    assert restarted.restore(wire.persisted[wire.endpoint(r)].values(), restart_at) == 0
    wire.attach(restarted, 2)  # same endpoint: replaces the old R
    (entry,) = stored_messages(restarted)
    assert entry.holders == written.holders and entry.attempts == written.attempts
    assert entry.next_at >= restart_at + RESTORE_GRACE_S
    wire.run(restart_at, restart_at + RESTORE_GRACE_S - 1)
    assert entry.attempts == written.attempts, "nothing relayed within the grace"
    wire.run(restart_at + RESTORE_GRACE_S, restart_at + RESTORE_GRACE_S + 2)
    assert learned <= entry.holders, "their receipts made them holders again"

    wire.offline.clear()
    now = restart_at + RESTORE_GRACE_S + 3
    b.lookup(b.address, now)
    wire.pump(now)
    wire.run(now + 1, now + 30)
    assert [t.text for t in wire.texts(b)] == ["held across a crash"]
    assert wire.states(a, text_id) == ["sent", "delivered"]


LISTENING = r"listening 127\.0\.0\.1:(\d+) address ([0-9a-f]{40})"
HELD_BOUND_S = 20.0
DELIVERY_BOUND_S = 30.0


def _held_messages(database: Path) -> int:
    """Messages in a profile's relay store, read through a second connection."""
    conn = sqlite3.connect(database)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM relay_items WHERE substr(key, 1, 1) = ?",
                (bytes([Kind.MESSAGE]),),
            ).fetchone()[0]
        )
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkilled_relays_deliver_a_text_whose_sender_is_gone(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """Two relays hold a text for an offline recipient and are SIGKILLed; the sender never
    runs again. Restarted, they deliver it from what they wrote when they took it."""
    env = {**os.environ, FAST_KDF_ENV: "1", "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(tmp_path, env, procs)
    first = cluster.start("r1")
    cluster.start("r2", [first])
    card = cluster.cli("--profile", "rc", "id").stdout.split("card: ")[1].strip()
    sender = cluster.cli("--profile", "s", "id").stdout.split()[1]
    text = "kept by the relays alone"
    sent = cluster.cli(
        "--profile", "s", "send", card, text, "--listen", "127.0.0.1:0", "--bootstrap", first
    )
    assert sent.returncode == 0, sent.stderr  # a relay holds it (its receipt came back)

    databases = [profile_paths(name, tmp_path).database for name in ("r1", "r2")]
    deadline = time.monotonic() + HELD_BOUND_S
    while time.monotonic() < deadline and not all(_held_messages(d) for d in databases):
        time.sleep(POLL_INTERVAL_S)
    assert all(_held_messages(d) for d in databases), "both relays wrote their copy"
    for name in ("r1", "r2"):
        cluster.sigkill(name)

    cluster.start("r1")
    cluster.start("r2")
    cluster.start("rc", [first])
    deadline = time.monotonic() + DELIVERY_BOUND_S
    received: list[str] = []
    while time.monotonic() < deadline:
        received = [i["text"] for i in cluster.history("rc", sender) if i["direction"] == "in"]
        if received:
            break
        time.sleep(POLL_INTERVAL_S)
    assert received == [text]
