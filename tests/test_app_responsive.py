"""The app stays responsive while its node waits on a slow disk (issue 11, item 1).

The node runs on its own thread (comm_tui/net/runner.py). Here every commit the node
thread makes takes SLOW_COMMIT_S longer, inside the transaction, as a slow fsync would;
the app's own thread is not slowed. While the node works through a queue of such commits,
key presses in the composer must still show at once, and a text sent then appears in the
conversation only once it is committed, never before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from comm_tui.app import app_session
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.conversation import ConversationView, MessageRow
from comm_tui.crypto.identity import Identity
from comm_tui.store.db import Database
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until

pytestmark = pytest.mark.timeout(90)

SLOW_COMMIT_S = 0.3
BUSY_COMMITS = 12  # 3.6 s of node work queued before the keys are pressed
KEYS = "hello"


@pytest.fixture
def slow_node_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every outermost transaction and group-commit batch of the node sleeps before its commit."""
    original = Database.transaction

    @contextlib.contextmanager
    def slow(self: Database) -> Iterator[None]:
        with original(self):
            yield
            if self._depth == 1 and threading.current_thread().name.startswith("comm-tui"):
                time.sleep(SLOW_COMMIT_S)

    monkeypatch.setattr(Database, "transaction", slow)
    original_commit = Database._commit

    def slow_commit(self: Database) -> None:
        # A group commit's batch (comm_tui/net/commit.py) commits here, on a writer thread.
        if threading.current_thread().name.startswith("comm-tui"):
            time.sleep(SLOW_COMMIT_S)
        original_commit(self)

    monkeypatch.setattr(Database, "_commit", slow_commit)


@pytest.mark.usefixtures("slow_node_disk")
async def test_keys_show_at_once_while_the_node_waits_on_a_slow_disk(tmp_path: Path) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            assert app.runner is not None
            # Keep the node thread in slow commits: each is a real command, one transaction.
            busy: list[Future[None]] = [
                app.runner.conversation_read(bob.address) for _ in range(BUSY_COMMITS)
            ]
            await pilot.pause(SLOW_COMMIT_S / 2)  # the first commit is under way
            slowest = 0.0
            for n, key in enumerate(KEYS, start=1):
                started = time.monotonic()
                await pilot.press(key)
                slowest = max(slowest, time.monotonic() - started)
                assert composer.text == KEYS[:n]
            # Each key showed faster than one commit takes, and the node was busy all along.
            assert slowest < SLOW_COMMIT_S, f"a key took {slowest:.3f} s"
            assert not busy[-1].done(), "the node finished its commits before the keys were typed"
            # Sent while the node still has commits to make: the composer is free at once,
            # the row shows only once the node has committed it.
            await pilot.press("enter")
            assert composer.text == ""
            conversation = app.query_one(ConversationView)
            await wait_until(
                pilot, lambda: list(conversation.query(MessageRow)), "the sent row", step_s=0.05
            )
            assert all(f.done() for f in busy)  # queued before it: committed before it
            with profile_db(tmp_path) as reader:
                assert [r.text for r in reader.history(bob.address)] == [KEYS]
