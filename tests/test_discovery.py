"""Same-machine discovery: two nodes with no bootstrap address find each other and talk."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from comm_tui.crypto.identity import Identity
from comm_tui.net.discovery import LocalDirectory
from comm_tui.net.service import IncomingText, NodeService, ServiceEvent
from comm_tui.store.db import Database
from tests.wire import peer_addresses

WAIT_S = 10.0


async def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_two_nodes_find_each_other_through_the_runtime_directory(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    services: list[NodeService] = []
    received: list[ServiceEvent] = []
    try:
        for name in ("alice", "bob"):
            db = Database.open(tmp_path / f"{name}.db")
            service = NodeService(
                Identity.generate(), db, listen=("127.0.0.1", 0), discovery=LocalDirectory(runtime)
            )
            await service.start()
            services.append(service)
        alice, bob = services
        bob.subscribe(received.append)
        await _until(
            lambda: (
                alice.identity.address in peer_addresses(bob.node)
                and bob.identity.address in peer_addresses(alice.node)
            ),
            "the two nodes to know each other",
        )
        alice.send_text(bob.identity.public, "found you")
        await _until(
            lambda: any(isinstance(e, IncomingText) for e in received), "the text to arrive"
        )
        assert [e.row.text for e in received if isinstance(e, IncomingText)] == ["found you"]
    finally:
        for service in services:
            await service.stop()
            service.db.close()
    assert list((runtime / "nodes").glob("*.peer")) == []  # each node removed its file


def test_files_of_dead_processes_are_ignored_and_removed(tmp_path: Path) -> None:
    directory = LocalDirectory(tmp_path)
    (tmp_path / "nodes").mkdir()
    dead_pid = 2**22 + 1  # above the default pid_max: no such process
    stale = tmp_path / "nodes" / f"{'ab' * 32}.peer"
    stale.write_text(f"{'ab' * 32} 127.0.0.1 4000 {dead_pid}\n")
    live = tmp_path / "nodes" / f"{'cd' * 32}.peer"
    live.write_text(f"{'cd' * 32} 127.0.0.1 4001 {os.getpid()}\n")
    (tmp_path / "nodes" / "garbage.peer").write_text("not a peer file")
    assert directory.peers(own_key=b"\0" * 32) == [(bytes.fromhex("cd" * 32), ("127.0.0.1", 4001))]
    assert not stale.exists()
