"""A message's row in the real app takes a new state at any moment of its mounting.

A sent text's row is mounted without waiting (``ConversationView.add_row``) and its
delivery can be reported before the row is composed (the demo's echo did under load):
that raised NoMatches on the row's mark and closed the app.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from comm_tui.app import app_session
from comm_tui.app.format import STATE_HELP, STATE_MARKS
from comm_tui.app.messages import ConversationOpened, NodeStarted
from comm_tui.app.widgets.conversation import ConversationView
from comm_tui.crypto.identity import Identity
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until


async def test_a_state_reported_before_the_row_is_composed_is_drawn_once_it_is(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            conversation = app.query_one(ConversationView)
            app.post_message(ConversationOpened(bob.address, focus_input=False))
            await wait_until(pilot, lambda: conversation.peer_address == bob.address, "bob")
            row = app.profile.db.add_outgoing(b"t" * 16, bob.key, bob.address, "hello", time.time())
            await conversation.add_row(row)
            widget = conversation.row_widget(row.id)
            assert widget is not None and not widget.query(".meta")  # not composed yet
            conversation.update_row(dataclasses.replace(row, state="delivered"))

            def mark() -> str:
                metas = widget.query(".meta")
                return str(metas.first().render()) if metas else ""

            await wait_until(pilot, lambda: mark().endswith(STATE_MARKS["delivered"]), "✓✓")
            assert widget.query_one(".meta").tooltip == STATE_HELP["delivered"]
            assert app.is_running


async def test_the_node_starting_while_the_panes_are_gone_leaves_the_app_running(
    tmp_path: Path,
) -> None:
    """A node that starts as the app closes (its panes removed, the message still queued)
    must not raise: ``refresh_contacts`` found no ContactList and closed the app
    (tests/test_relay_bandwidth_key.py failed so under load)."""
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node")
            await app.main_screen.query_one("#main").remove()
            app.post_message(NodeStarted(listen="127.0.0.1:1"))
            await pilot.pause()
            await pilot.pause()
            assert app.is_running
