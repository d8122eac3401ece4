"""NodeService's own rules, on a real socket and a real SQLite file.

What the service adds to the core: nothing goes out before what it depends on is on
disk (a disk error while sending stops the node and transmits nothing), and texts the
outbox shows as pending but whose parts the store no longer holds are settled as
expired at start, never left "queued" forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import StorageError
from comm_tui.net.service import NodeFailed, NodeService, ServiceEvent
from comm_tui.store.db import Database


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
