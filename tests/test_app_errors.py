"""The app's error paths, in the real app: nothing the user typed is lost, and they are told.

A node that cannot start (its listen address is not on this machine) leaves the app
running, says why, and a text sent meanwhile goes back into the composer; a disk that
fills up while sending stops the node (the "Offline" notice), the text goes back, and a
second try is refused the same way instead of being queued by a stopped node.
"""

from __future__ import annotations

import concurrent.futures
import gc
import time
import warnings
from pathlib import Path

from comm_tui.app import app_session
from comm_tui.app.app import CommApp
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.conversation import MessageRow
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import NodeService
from tests.app_helpers import (
    SIZE,
    keep_notifications,
    make_profile,
    on_node,
    profile_db,
    wait_until,
)

TEXT = "written down, or not shown as sent. " * 49 + "The end."
# TEST-NET-1 (RFC 5737): no interface of this machine has it, so binding to it fails.
UNBINDABLE = "192.0.2.1:0"


def _with_bob(data_dir: Path) -> Identity:
    make_profile(data_dir)
    bob = Identity.generate()
    with profile_db(data_dir) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
    return bob


def _fill_the_disk(service: NodeService) -> None:
    """The node's database can grow no more: no free pages, and no new ones."""
    assert service.journal is not None
    service.journal.commit_now(lambda: (None, []))  # nothing pending: VACUUM needs no batch
    db = service.db
    db._conn.execute("VACUUM")
    pages = db._conn.execute("PRAGMA page_count").fetchone()[0]
    db._conn.execute(f"PRAGMA max_page_count = {pages}")


def _notified(app: CommApp, words: str) -> bool:
    return any(words in n.message for n in app._notifications)


async def test_a_node_that_cannot_start_says_why_and_keeps_a_text_sent_meanwhile(
    tmp_path: Path,
) -> None:
    bob = _with_bob(tmp_path)
    with app_session(data_dir=tmp_path, listen=UNBINDABLE) as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot, lambda: _notified(app, "The node did not start"), "the start error"
            )
            assert app.is_running and app.node_bound is None
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            await pilot.press(*"still here?", "enter")
            await wait_until(pilot, lambda: _notified(app, "still starting"), "the refusal")
            await wait_until(pilot, lambda: composer.text == "still here?", "the text back")
            assert not list(app.query(MessageRow))
            assert app.profile.db.history(bob.address) == []


async def test_a_full_disk_while_sending_stops_the_node_and_gives_the_text_back(
    tmp_path: Path,
) -> None:
    bob = _with_bob(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        # Counted as raised: the first refusal's toast may be gone (5 s) before the second.
        raised = keep_notifications(app)

        def refusals() -> int:
            return sum(title == "Not sent" for title, _ in raised)

        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            await on_node(app, _fill_the_disk)  # the node's own connection, on its thread
            composer.load_text(TEXT)
            await pilot.press("enter")
            await wait_until(
                pilot,
                lambda: _notified(app, "Free some space and restart comm-tui"),
                "the node to say it is offline",
            )
            await wait_until(
                pilot,
                lambda: composer.text == TEXT,
                "the text back",
            )
            assert not list(app.query(MessageRow))
            # The stopped node refuses again (it queues nothing it cannot write down).
            assert refusals() == 1
            await pilot.press("enter")
            await wait_until(pilot, lambda: refusals() == 2, "the second refusal")
            assert composer.text == TEXT
            assert not list(app.query(MessageRow))
            assert app.is_running
    with profile_db(tmp_path) as db:
        assert db.history(bob.address) == []


async def test_a_command_whose_worker_is_cancelled_before_it_runs_leaves_no_coroutine(
    tmp_path: Path,
) -> None:
    """At close, the app's workers are cancelled, some before they ever ran (a status
    tick's): a worker handed a coroutine left it never awaited (a RuntimeWarning at
    exit). ``_after`` hands its worker the coroutine function."""
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                future: concurrent.futures.Future[int] = concurrent.futures.Future()
                app._after(future, lambda _: None)
                worker = list(app.workers)[-1]  # the newest: ``_after``'s
                worker.cancel()  # before the loop ever ran it
                await pilot.pause()
                del worker
                gc.collect()
            never = [w for w in caught if "never awaited" in str(w.message)]
            assert never == []
