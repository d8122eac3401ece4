"""Promises wait, forwards do not (docs/PROTOCOL.md, "8.2 Local durability").

A write of an item held for others (a relayed message, the ack that replaced one, a
record: ``Hold.RECEIPTS``) holds back only the Receipts after it: a Receipt is the
promise "I hold it", on which the sender counts us a holder. The forwarded copies and
every other datagram leave at once, unless a strict write (``Hold.ALL``: our texts, a
text received, sessions, peers...) is uncommitted. Such writes commit after
``relay_window_s``, at once when a strict write joins them or ``max_items`` fill. Pinned
on a real SQLite file read through a second connection that sees only committed rows;
through the core (receipts handed out apart, the writes classified); and with real
services over UDP on 127.0.0.1, including a relay that forwarded a copy and crashed
before its commit.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from comm_tui.cli import FAST_KDF_ENV
from comm_tui.crypto.identity import Identity
from comm_tui.net.commit import Datagram, Hold
from comm_tui.net.service import NodeService, holds
from comm_tui.protocol.events import Event, PeerAdded, StoreChanged
from comm_tui.protocol.node import Node
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.node_procs import Proc
from tests.test_crash_safety import POLL_INTERVAL_S, Cluster
from tests.test_group_commit import (
    FAR_S,
    GatedExecutor,
    Harness,
    committed_meta,
    datagram,
    event,
)
from tests.test_integration import FAST, LOOPBACK, Network, Peer, net, until
from tests.test_relay_bookkeeping_restart import _held_messages
from tests.wire import T0, Wire

__all__ = ["net"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)

RELAY_WINDOW_S = 0.3
SEND_WAIT_S = 2
DELIVERY_S = 30.0


def relay_write(n: int) -> PeerAdded:
    """A write of an item held for others, in the harness (it writes a meta row)."""
    return PeerAdded(bytes([n]), ("127.0.0.1", 1))


def receipt(n: int) -> Datagram:
    return (bytes([100 + n]), ("127.0.0.1", 9))


class PromiseHarness(Harness):
    """The group commit harness, with PeerAdded standing for a write held for others.

    Every datagram is recorded with the meta rows committed when it was handed to the
    socket, so a test can tell what it waited for.
    """

    def __init__(self, path: Path, **options: Any) -> None:
        options.setdefault("relay_window_s", RELAY_WINDOW_S)
        options.setdefault("lazy_window_s", FAR_S)
        super().__init__(
            path,
            holds=lambda e: Hold.RECEIPTS if isinstance(e, PeerAdded) else Hold.ALL,
            **options,
        )
        self.on_disk: dict[Datagram, set[str]] = {}
        self.journal._transmit = self.transmit

    def transmit(self, datagrams: list[Datagram]) -> None:
        if datagrams:
            seen = committed_meta(self.path)
            for one in datagrams:
                self.on_disk[one] = seen
        self.transmitted.extend(datagrams)

    def apply(self, events: list[Event]) -> list[str]:
        notices = super().apply(events)
        for relayed in (e for e in events if isinstance(e, PeerAdded)):
            self.db.set_meta(f"relay-{relayed.key.hex()}", "v")
        return notices


async def turns(n: int = 5) -> None:
    """Let the loop run a few turns (callbacks due now, none due later)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_forward_leaves_at_once_and_its_receipt_after_the_commit(tmp_path: Path) -> None:
    disk = GatedExecutor()
    h = PromiseHarness(tmp_path / "db", relay_window_s=0.0, executor=disk)
    try:
        h.journal.add([relay_write(1)], [datagram(1)], [receipt(1)])
        assert h.transmitted == [datagram(1)], "the forward does not wait for the disk"
        assert h.on_disk[datagram(1)] == set()
        await until(lambda: h.journal.committing, "the commit to start")
        assert receipt(1) not in h.transmitted, "the promise waits for its commit"
        disk.gate.set()
        await until(lambda: receipt(1) in h.transmitted, "the receipt")
        assert "relay-01" in h.on_disk[receipt(1)]
        assert h.journal.relay_commits == 1 and h.journal.lazy_commits == 0
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_a_strict_write_holds_every_datagram_and_a_relay_write_only_receipts(
    tmp_path: Path,
) -> None:
    disk = GatedExecutor()
    h = PromiseHarness(tmp_path / "db", relay_window_s=FAR_S, executor=disk)
    try:
        h.journal.add([relay_write(1)], [datagram(1)], [receipt(1)])
        h.journal.add([], [datagram(2)], [receipt(2)])  # a pump with no write
        assert h.transmitted == [datagram(1), datagram(2)]
        h.journal.add([event(3)], [datagram(3)], [receipt(3)])  # a strict write
        h.journal.add([], [datagram(4)], [])
        assert h.transmitted == [datagram(1), datagram(2)], "all wait for the strict write"
        await until(lambda: h.journal.committing, "the strict write's commit")
        # While it commits, a relay write's forward still waits for it: it follows it.
        h.journal.add([relay_write(5)], [datagram(5)], [receipt(5)])
        assert datagram(5) not in h.transmitted
        disk.gate.set()
        await until(lambda: datagram(5) in h.transmitted, "what waited for the strict write")
        for n in (3, 4, 5):
            assert "row-03" in h.on_disk[datagram(n)]
        assert {receipt(1), receipt(2), receipt(3)} <= set(h.transmitted)
        # receipt(5) follows relay_write(5), pending in a batch whose window is far.
        assert receipt(5) not in h.transmitted
        assert "relay-05" not in committed_meta(h.path)
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_a_relay_write_commits_after_the_relay_window(tmp_path: Path) -> None:
    h = PromiseHarness(tmp_path / "db", window_s=0.0)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        h.journal.add([relay_write(1)], [datagram(1)], [receipt(1)])
        h.journal.add([relay_write(2)], [], [receipt(2)])
        await turns()
        assert h.journal.commits == 0, "not at the end of the turn: the window gathers more"
        await until(lambda: receipt(2) in h.transmitted, "the window's commit")
        assert loop.time() - started >= RELAY_WINDOW_S
        assert h.journal.commits == 1 and h.journal.relay_commits == 1
        assert {"relay-01", "relay-02"} <= h.on_disk[receipt(1)]
    finally:
        h.close()


async def test_a_strict_write_brings_the_relay_batch_with_it_at_once(tmp_path: Path) -> None:
    h = PromiseHarness(tmp_path / "db", window_s=0.0, relay_window_s=FAR_S)
    try:
        h.journal.add([relay_write(1)], [datagram(1)], [receipt(1)])
        h.journal.add([event(2)], [datagram(2)], [])
        await until(lambda: receipt(1) in h.transmitted, "one commit for both", timeout_s=5.0)
        assert h.journal.commits == 1 and h.journal.relay_commits == 0
        assert h.on_disk[receipt(1)] >= {"relay-01", "row-02"}
    finally:
        h.close()


async def test_receipts_a_running_commit_held_wait_for_the_relay_writes_pending(
    tmp_path: Path,
) -> None:
    """Receipts wait for every write before them that is not bookkeeping: those that
    waited for a running commit go at its return only when nothing pending is such a
    write; the datagrams go when nothing pending is a strict write."""
    disk = GatedExecutor()
    h = PromiseHarness(tmp_path / "db", window_s=0.0, relay_window_s=1.0, executor=disk)
    try:
        h.journal.add([event(1)], [], [])
        await until(lambda: h.journal.committing, "the strict write's commit")
        h.journal.add([], [datagram(2)], [receipt(2)])  # both wait for the strict write
        h.journal.add([relay_write(3)], [], [])  # pending behind it
        disk.gate.set()
        await until(lambda: datagram(2) in h.transmitted, "the datagram")
        assert receipt(2) not in h.transmitted, "a relay write is pending: the receipt waits"
        await until(lambda: receipt(2) in h.transmitted, "the receipt, after the next commit")
        assert "relay-03" in h.on_disk[receipt(2)]
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()


async def test_receipts_count_toward_a_full_batch(tmp_path: Path) -> None:
    h = PromiseHarness(tmp_path / "db", relay_window_s=FAR_S, max_items=4)
    try:
        h.journal.add([relay_write(1)], [], [receipt(1)])
        assert not h.journal.committing
        h.journal.add([relay_write(2)], [], [receipt(2)])  # 2 events and 2 receipts: full
        assert h.journal.committing, "a full batch commits at once"
        await until(lambda: receipt(2) in h.transmitted, "the receipts")
    finally:
        h.close()


async def test_a_users_command_sends_the_receipts_pending_and_a_failure_drops_them(
    tmp_path: Path,
) -> None:
    h = PromiseHarness(tmp_path / "db", relay_window_s=FAR_S)
    try:
        h.journal.add([relay_write(1)], [], [receipt(1)])
        h.journal.commit_now(lambda: (None, []))
        assert h.transmitted == [receipt(1)] and "relay-01" in h.on_disk[receipt(1)]
        h.journal.add([relay_write(2)], [], [receipt(2)])
        h.journal._fail(OSError("the disk is gone"))
        h.journal.add([], [datagram(3)], [receipt(3)])
        assert h.transmitted == [receipt(1)], "nothing after a failure"
        assert h.journal.pending == 0
    finally:
        h.close()


# ------------------------------------------------------------------------------ the rule


def test_the_rule_classifies_writes_of_items_held_for_others() -> None:
    item = (b"blob", 2**62)
    theirs, ours = b"t", b"o"
    relayed = StoreChanged({theirs: item}, frozenset(), frozenset(), frozenset({theirs}))
    assert holds(relayed) is Hold.RECEIPTS
    # With bookkeeping of our own entries and a deletion: still only the receipts.
    mixed = StoreChanged(
        {theirs: item, ours: item}, frozenset({b"d"}), frozenset({ours}), frozenset({theirs})
    )
    assert holds(mixed) is Hold.RECEIPTS
    # An entry of ours written anew beside it: everything waits.
    strict = StoreChanged({theirs: item, ours: item}, frozenset(), frozenset(), frozenset({theirs}))
    assert holds(strict) is Hold.ALL
    assert holds(StoreChanged({}, frozenset({theirs}))) is Hold.NOTHING


# ------------------------------------------------------------------------------ the core


def test_the_core_hands_receipts_apart_and_marks_what_it_holds_for_others() -> None:
    """A relay made with ``receipts_apart`` gives its receipts by ``receipts_to_send``
    only; the sender counts it a holder on them. A node made without gives none there.
    The relay's copy is a write for others (``Hold.RECEIPTS``), the sender's own part a
    strict one."""
    wire = Wire()
    sender, recipient = wire.add(1), wire.add(3)
    relay = wire.attach(
        Node(Identity.from_seed(bytes([2]) * 32), T0, receipts_apart=True, rng=random.Random(2)),
        2,
    )
    for one in (sender, recipient):  # the sender knows the relay alone
        wire.connect(one, relay)
    wire.offline.add(wire.endpoint(recipient))
    text_id = sender.send_text(recipient.identity.public, "promised once written", T0)
    to_relay = [data for data, dest in sender.datagrams_to_send() if dest == wire.endpoint(relay)]
    assert to_relay  # what went elsewhere is lost on the way
    for data in to_relay:
        wire.deliver(wire.endpoint(sender), wire.endpoint(relay), data, T0)
    receipts_before = relay.stats.sent_by_kind["receipt"]
    events = relay.drain_events()
    forwards = relay.datagrams_to_send()
    receipts = relay.receipts_to_send()
    assert receipts and {dest for _, dest in receipts} == {wire.endpoint(sender)}
    assert relay.stats.sent_by_kind["receipt"] - receipts_before == len(receipts)
    assert forwards, "the copy goes on"
    assert relay.receipts_to_send() == [], "handed out once"
    copies = [e for e in events if isinstance(e, StoreChanged) and e.put]
    assert copies and all(holds(e) is Hold.RECEIPTS for e in copies)
    own = [e for e in sender.drain_events() if isinstance(e, StoreChanged) and e.put]
    assert own and all(holds(e) is Hold.ALL for e in own)

    assert sender.receipts_to_send() == [], "a node made without hands none out apart"
    custody = sender.custody(text_id)
    assert custody is not None and custody.pending[0].holders == 0, "no promise yet"
    for data, dest in receipts:
        wire.deliver(wire.endpoint(relay), dest, data, T0)
    custody = sender.custody(text_id)
    assert custody is not None and custody.pending[0].holders == 1


# ------------------------------------------------------------- real services over UDP


def committed_keys(path: Path) -> set[bytes]:
    """The relay-store keys another connection sees: committed ones only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {bytes(row[0]) for row in conn.execute("SELECT key FROM relay_items")}
    finally:
        conn.close()


def held_for(peer: Peer, recipient: Peer) -> list[Entry]:
    """The messages for ``recipient`` in ``peer``'s store (in memory)."""
    return [
        e
        for e in peer.running.node._store
        if e.kind is Kind.MESSAGE and e.target == recipient.identity.address
    ]


async def crash(peer: Peer) -> None:
    """Stop ``peer`` as a SIGKILL would: what its group commit holds pending is never
    written, nothing more is sent. A commit already running is let finish (the disk may
    have taken it before the kill, or not: either is a crash's outcome)."""
    service = peer.running
    for task in service._tasks:
        task.cancel()
    journal = service.journal
    assert journal is not None and service.protocol is not None
    journal.settle()
    journal._fail(RuntimeError("killed"))  # drops the pending batch, sends nothing more
    service.protocol.close()
    await asyncio.sleep(0)  # the cancelled tasks end
    assert peer.db is not None
    peer.db.close()
    peer.service, peer.db = None, None


async def restart_on(peer: Peer, port: int, bootstrap: list[Endpoint]) -> None:
    """Start ``peer`` again on its profile and its port, as a restarted process would."""
    peer.db = Database.open(peer.db_path)
    peer.events = []
    service = NodeService(
        peer.identity, peer.db, listen=(LOOPBACK, port), bootstrap=bootstrap, config=FAST
    )
    service.subscribe(peer.events.append)
    await service.start()
    peer.service = service


async def test_relays_that_crash_after_forwarding_before_their_commit_lose_no_text(
    net: Network,
) -> None:
    """Every relay's writes of items held for others wait (a far window). A text for an
    offline recipient is taken and forwarded by the relays; none of them promises it
    (every receipt is checked against its file when sent), so the sender counts none as
    a holder. The relays holding an uncommitted copy are killed: their files lack it. Yet
    another node counts each of them a holder (it got their forwarded copy). Restarted,
    the text still reaches the recipient once, and the sender learns it was delivered."""
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    relays = [p for p in net.running() if p.name.startswith("relay")]
    promised: dict[bytes, tuple[Peer, set[bytes]]] = {}
    violations: list[str] = []
    for peer in relays:
        service = peer.running
        journal, protocol = service.journal, service.protocol
        assert journal is not None and protocol is not None and protocol.transport is not None
        journal.settle()
        journal.relay_window_s = FAR_S

        def receipts_to_send(peer: Peer = peer, take: Any = service.node.receipts_to_send) -> Any:
            out = take()
            held = {e.key for e in peer.running.node._store if e.for_others}
            for data, _ in out:
                promised[data] = (peer, held)
            return out

        def sendto(data: bytes, *args: Any, send: Any = protocol.transport.sendto) -> None:
            if data in promised:
                peer, held = promised[data]
                missing = held - committed_keys(peer.db_path)
                violations.extend(f"{peer.name} promised {key.hex()}" for key in missing)
            send(data, *args)

        service.node.receipts_to_send = receipts_to_send  # type: ignore[method-assign]
        protocol.transport.sendto = sendto  # type: ignore[method-assign]

    row = sender.running.send_text(recipient.identity.public, "forwarded, then a crash")
    await until(
        lambda: sum(bool(held_for(p, recipient)) for p in relays) >= 2, "copies on two relays"
    )
    # What the sender counts as holders has committed its copy; the others have not.
    (part,) = [e for e in sender.running.node._store if e.own_text_id == row.text_id]
    unwritten = [
        p
        for p in relays
        if held_for(p, recipient)
        and not {e.key for e in held_for(p, recipient)} <= committed_keys(p.db_path)
    ]
    assert unwritten, "a far window: some relay holds a copy not yet written"
    assert not {p.identity.address for p in unwritten} & part.holders
    assert violations == []

    def counted() -> set[bytes]:
        return {h for p in relays for e in held_for(p, recipient) for h in e.holders}

    # Their copies went on unwritten (a loaded machine may take a moment to say so).
    addresses = {p.identity.address for p in unwritten}
    await until(lambda: bool(counted() & addresses), "another relay counts one as a holder")
    ports = {p.name: p.endpoint[1] for p in unwritten}
    for peer in unwritten:
        await crash(peer)
    # A commit already running when they were looked at lands as they stop (``crash``
    # settles it): under load some may have written their copy after all, not all of them.
    assert [p for p in unwritten if part.key not in committed_keys(p.db_path)], "all wrote it"
    for peer in relays:  # the survivors commit as usual from now on
        if peer.service is not None and peer.running.journal is not None:
            peer.running.journal.relay_window_s = 0.0
            peer.running.journal.commit_now(lambda: (None, []))
    # Under load the copies may reach every relay before the check, all of them unwritten
    # and killed: then the restarted relays and the recipient join through the sender,
    # which holds the text still (it counted no holder).
    survivors = [p for p in relays if p.service is not None]
    join = (survivors[0] if survivors else sender).endpoint
    for peer in unwritten:
        await restart_on(peer, ports[peer.name], [join])

    await net.start(recipient, [join])
    await until(lambda: bool(recipient.received()), "delivery", timeout_s=DELIVERY_S)
    await until(
        lambda: sender.state_of(row.text_id) == "delivered", "the ack", timeout_s=DELIVERY_S
    )
    assert recipient.received() == ["forwarded, then a crash"]
    assert violations == []


# ------------------------------------------------------------------ a real process killed

# ``comm-tui`` whose relay writes wait an hour for their commit: only a strict write
# (none comes in this test) or a stop would write them.
SLOW_RELAY = (
    sys.executable,
    "-c",
    "import sys; from comm_tui.net import commit; commit.COMMIT_RELAY_WINDOW_S = 3600.0;"
    " from comm_tui.cli import main; raise SystemExit(main(sys.argv[1:]))",
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_relay_killed_before_its_commit_promised_nothing_and_the_text_arrives(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """The only relay takes a text for an offline recipient and does not write it yet
    (its window is an hour), so it sends no receipt. SIGKILLed, its file holds no copy,
    and the sender's outbox still counts the text as queued: no holder was promised. The
    relay restarts (as usual now), the sender's node sends the text again from its
    outbox, and the recipient gets it once."""
    env = {**os.environ, FAST_KDF_ENV: "1", "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(tmp_path, env, procs)
    relay = cluster.start("r", command=SLOW_RELAY)
    card = cluster.cli("--profile", "rc", "id").stdout.split("card: ")[1].strip()
    sender = cluster.cli("--profile", "s", "id").stdout.split()[1]
    # The sender meets the relay first, from the port it sends from later: the relay's
    # table takes it then (a strict write, which would commit what waits with it).
    cluster.ports["s"] = free_port()
    cluster.start("s", [relay])
    relay_db = profile_paths("r", tmp_path).database
    deadline = time.monotonic() + DELIVERY_S
    while time.monotonic() < deadline and not _peers_saved(relay_db):
        time.sleep(POLL_INTERVAL_S)
    assert _peers_saved(relay_db), "the relay took the sender in its table"
    # And it publishes its own record (a strict write) REBOOTSTRAP_INTERVAL_S after start.
    while time.monotonic() < deadline and not _records_written(relay_db):
        time.sleep(POLL_INTERVAL_S)
    assert _records_written(relay_db), "the relay wrote its record"
    cluster.sigkill("s")
    text = "taken, not yet written, then a kill"
    listen = f"127.0.0.1:{cluster.ports['s']}"
    sent = cluster.cli(
        "--profile", "s", "send", card, text, "--listen", listen, "--bootstrap", relay,
        "--wait", str(SEND_WAIT_S),
    )  # fmt: skip
    assert sent.returncode == 3, sent.stderr  # the recipient is offline: not delivered
    cluster.sigkill("r")
    # The sender counts the relay a holder (the text is sent) only if the relay wrote its
    # copy before the kill. Mostly it had not (nothing made it commit): nothing promised.
    held = _held_messages(relay_db)
    [state] = [i["state"] for i in cluster.history("s", card)]
    print(f"the relay's file held {held} copies at the kill; the text was {state}")
    assert state == ("sent" if held else "queued")

    cluster.start("r")
    cluster.start("s", [relay])
    cluster.start("rc", [relay])
    deadline = time.monotonic() + DELIVERY_S
    received: list[str] = []
    while time.monotonic() < deadline and not received:
        received = [i["text"] for i in cluster.history("rc", sender) if i["direction"] == "in"]
        time.sleep(POLL_INTERVAL_S)
    assert received == [text]


def free_port() -> int:
    """A UDP port nothing is bound to now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _peers_saved(database: Path) -> int:
    """Peers a profile's node has written, read through a second connection."""
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute("SELECT count(*) FROM peers").fetchone()[0])
    finally:
        conn.close()


def _records_written(database: Path) -> int:
    """Records in a profile's relay store, read through a second connection."""
    conn = sqlite3.connect(database)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM relay_items WHERE substr(key, 1, 1) = ?",
                (bytes([Kind.RECORD]),),
            ).fetchone()[0]
        )
    finally:
        conn.close()
