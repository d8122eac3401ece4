"""NodeService's own rules, on a real socket and a real SQLite file.

What the service adds to the core: nothing goes out before what it depends on is on
disk (a disk error while sending stops the node and transmits nothing), and texts the
outbox shows as pending but whose parts the store no longer holds are settled as
expired at start, never left "queued" forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import StorageError
from comm_tui.net.service import NodeFailed, NodeService, PeersChanged, ServiceEvent
from comm_tui.protocol.node import NodeConfig
from comm_tui.store.db import Database
from tests.wire import peer_addresses


def _service(tmp_path: Path, name: str, identity: Identity | None = None) -> NodeService:
    db = Database.open(tmp_path / f"{name}.db")
    return NodeService(identity or Identity.generate(), db, listen=("127.0.0.1", 0))


async def test_a_disk_error_while_sending_stops_the_node_and_transmits_nothing(
    tmp_path: Path,
) -> None:
    relay = _service(tmp_path, "relay")
    relay_endpoint = await relay.start()
    sender = NodeService(
        Identity.generate(),
        Database.open(tmp_path / "sender.db"),
        listen=("127.0.0.1", 0),
        bootstrap=[relay_endpoint],
    )
    events: list[ServiceEvent] = []
    sender.subscribe(events.append)
    await sender.start()
    try:
        protocol = sender.protocol
        assert protocol is not None and protocol.transport is not None
        transmitted: list[bytes] = []
        sendto = protocol.transport.sendto

        def recording_sendto(data: bytes, *args: object) -> None:
            transmitted.append(bytes(data))
            sendto(data, *args)  # type: ignore[arg-type]

        protocol.transport.sendto = recording_sendto  # type: ignore[method-assign]
        db = sender.db
        db._conn.execute("VACUUM")
        pages = db._conn.execute("PRAGMA page_count").fetchone()[0]
        db._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"
        recipient = Identity.generate().public
        with pytest.raises(StorageError):
            sender.send_text(recipient, "must not leave unwritten " * 100)
        assert protocol.failure is not None
        assert any(isinstance(e, NodeFailed) for e in events)
        assert transmitted == []  # not one datagram after the failed write
        assert db.history(recipient.address) == []  # and nothing half-written
        with pytest.raises(StorageError):  # the stopped node refuses, it does not queue
            sender.send_text(recipient, "later")
    finally:
        await sender.stop()
        await relay.stop()
        sender.db.close()
        relay.db.close()


async def test_pending_texts_whose_parts_are_gone_are_settled_as_expired(tmp_path: Path) -> None:
    identity = Identity.generate()
    recipient = Identity.generate().public
    first = _service(tmp_path, "me", identity)
    await first.start()
    kept = first.send_text(recipient, "still in the outbox")
    await first.stop()
    first.db.close()
    with Database.open(tmp_path / "me.db") as db:
        lost = db.add_outgoing(b"l" * 16, recipient.key, recipient.address, "lost parts", 1.0)
        assert db.relay_item_count() >= 1
    again = _service(tmp_path, "me", identity)
    await again.start()
    try:
        states = {r.text_id: r.state for r in again.db.history(recipient.address)}
        assert states[lost.text_id] == "expired"
        assert states[kept.text_id] == "queued"
    finally:
        await again.stop()
        again.db.close()


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.02)


def _in_far_bucket_of(address: bytes) -> Identity:
    """An identity whose address differs from ``address`` in the first bit (the far bucket)."""
    while True:
        identity = Identity.generate()
        if (identity.address[0] ^ address[0]) & 0x80:
            return identity


async def test_a_peer_that_goes_silent_is_evicted_and_peers_changed_is_reported(
    tmp_path: Path,
) -> None:
    """docs/PROTOCOL.md, "Receipts": a text relayed to a peer that has gone silent gets no
    receipt (nor any answer); at the routing table's failure limit the peer is replaced by
    the one waiting in its bucket's replacement cache, and the service reports the table's
    new size (PeersChanged). tests/test_rules.py pins that a missed receipt alone counts."""
    me = Identity.generate()
    # Buckets of 2: two peers fill the far bucket, a third waits to replace one of them.
    config = NodeConfig(k=2, backoff_base_s=0.2, backoff_max_s=0.5)
    a = NodeService(me, Database.open(tmp_path / "a.db"), listen=("127.0.0.1", 0), config=config)
    events: list[ServiceEvent] = []
    a.subscribe(events.append)
    a_endpoint = await a.start()
    silent, kept, waiting = (_in_far_bucket_of(me.address) for _ in range(3))
    peers = {
        identity.address: NodeService(
            identity,
            Database.open(tmp_path / f"{identity.address.hex()}.db"),
            listen=("127.0.0.1", 0),
            bootstrap=[a_endpoint],
        )
        for identity in (silent, kept, waiting)
    }
    try:
        for identity in (silent, kept):
            await peers[identity.address].start()
            await _until(
                lambda i=identity: i.address in peer_addresses(a.node), "a peer in the table"
            )
        await peers[waiting.address].start()
        await _until(
            lambda: me.address in peer_addresses(peers[waiting.address].node), "the third peer"
        )
        assert waiting.address not in peer_addresses(a.node)  # the far bucket is full: it waits

        # The peer goes silent (its socket closes; the table does not know yet).
        await peers[silent.address].stop()
        seen = len(events)
        a.send_text(Identity.generate().public, "who holds this?")
        await _until(
            lambda: silent.address not in peer_addresses(a.node), "the silent peer's eviction"
        )
        assert kept.address in peer_addresses(a.node) and waiting.address in peer_addresses(a.node)
        # Told once the eviction is committed (a group commit's batch, docs 8.2).
        await _until(
            lambda: any(isinstance(e, PeersChanged) for e in events[seen:]),
            "PeersChanged after the eviction",
        )
        assert [e.count for e in events[seen:] if isinstance(e, PeersChanged)][-1] == (
            a.node.peer_count
        )
    finally:
        for peer in [a, *peers.values()]:
            await peer.stop()
            peer.db.close()
