"""The app with display names and read receipts (docs/PROTOCOL.md, "7.1.1"), real nodes.

A request shows the name its sender claims, literally (markup stays text); accepting
pre-fills it; a contact named otherwise shows it as "calls themselves"; alt+e turns
read receipts on for a contact; our text read by a peer with receipts on shows the third
mark. And the CLI: ``contacts receipts`` and ``claimed_name`` in the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from comm_tui.app import CommApp, app_session
from comm_tui.app.demo import demo_identity
from comm_tui.app.format import ASCII_STATE_MARKS, STATE_HELP, STATE_MARKS, shown_state
from comm_tui.app.screens.contact_dialogs import AddContactScreen
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageRow
from comm_tui.cli import main
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import NodeService
from comm_tui.store.db import Database
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until
from tests.test_app_hostile_text import screen_text
from tests.test_app_snapshots import (
    SENT_AT,
    _open_app,
    _open_first_conversation,
    _settled,
    _steady,
)

pytestmark = pytest.mark.timeout(90)

MARKUP_NAME = "[b]markup[/] Eve"


async def test_a_request_shows_its_claimed_name_literally_and_accept_prefills_it(
    tmp_path: Path,
) -> None:
    me = make_profile(tmp_path / "me")
    stranger = Identity.generate()
    with app_session(data_dir=tmp_path / "me", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            assert app.node_bound is not None
            db = Database.open(tmp_path / "stranger.db")
            db.add_contact("me", me.key, me.address, 1.0)
            other = NodeService(
                stranger,
                db,
                listen=("127.0.0.1", 0),
                bootstrap=[app.node_bound],
                display_name=MARKUP_NAME,
            )
            await other.start()
            try:
                await wait_until(pilot, lambda: other.node.state == "online", "stranger joins")
                other.send_text(me.public, "hi, remember me?")
                contacts = app.query_one(ContactList)

                def claimed() -> str | None:
                    entry = contacts.entry(stranger.address)
                    return None if entry is None else entry.claimed_name

                await wait_until(pilot, lambda: claimed() == MARKUP_NAME, "the claimed name")
                expected = f"request from ‘{MARKUP_NAME}’ ({stranger.address.hex()[:8]})"  # noqa: RUF001
                entry = contacts.entry(stranger.address)
                assert entry is not None and entry.title == expected
                index = next(
                    i
                    for i in range(contacts.option_count)
                    if contacts.get_option_at_index(i).id == stranger.address.hex()
                )
                # Drawn as the sender's literal words: the brackets show, nothing is bold.
                assert expected in str(contacts.get_option_at_index(index).prompt)
                contacts.select_address(stranger.address)
                await pilot.press("enter")
                conversation = app.query_one(ConversationView)
                await wait_until(pilot, lambda: conversation.peer is not None, "it opens")
                title = conversation.query_one("#conversation-title")
                await wait_until(
                    pilot, lambda: "[b]markup[/]" in screen_text(app, title), "literal title"
                )
                await pilot.click("#accept")
                await wait_until(pilot, lambda: isinstance(app.screen, AddContactScreen), "accept")
                name_input = app.screen.query_one("#name", Input)
                assert name_input.value == MARKUP_NAME
                name_input.value = "Sam"
                await pilot.press("enter", "enter")
                await wait_until(
                    pilot, lambda: app.profile.db.contact_by_name("Sam") is not None, "saved"
                )
                await wait_until(
                    pilot,
                    lambda: f"Sam — calls themselves {MARKUP_NAME}" in screen_text(app, title),
                    "the claimed name as secondary in the title",
                )
            finally:
                await other.stop()
                db.close()


async def test_receipts_toggle_and_the_read_mark(tmp_path: Path) -> None:
    make_profile(tmp_path / "me")
    bob = Identity.generate()
    bob_db = Database.open(tmp_path / "bob.db")
    with app_session(data_dir=tmp_path / "me", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            assert app.node_bound is not None
            me = app.profile.identity
            app.profile.db.add_contact("bob", bob.key, bob.address, 1.0)
            bob_db.add_contact("me", me.key, me.address, 1.0)
            other = NodeService(bob, bob_db, listen=("127.0.0.1", 0), bootstrap=[app.node_bound])
            await other.start()
            try:
                await wait_until(pilot, lambda: other.node.state == "online", "bob joins")
                app.refresh_contacts()
                contacts = app.query_one(ContactList)
                contacts.select_address(bob.address)
                contacts.focus()
                await pilot.press("alt+e")
                assert app.profile.db.contact_by_name("bob").receipts  # type: ignore[union-attr]
                await pilot.press("alt+e")
                assert not app.profile.db.contact_by_name("bob").receipts  # type: ignore[union-attr]
                await pilot.press("enter")
                conversation = app.query_one(ConversationView)
                await wait_until(pilot, lambda: conversation.peer is not None, "it opens")
                await pilot.press(*"read me", "enter")
                await wait_until(
                    pilot, lambda: bob_db.history(me.address), "bob to receive the text"
                )
                assert bob_db.set_receipts(me.address, True)
                other.conversation_read(me.address)

                def marks() -> list[str]:
                    return [r.state for r in conversation.query(MessageRow)]

                await wait_until(pilot, lambda: marks() == ["read"], "the read mark")
                [row] = conversation.query(MessageRow)
                assert STATE_MARKS["read"] in screen_text(app, row.query_one(".meta"))
            finally:
                await other.stop()
                bob_db.close()


def test_cli_receipts_and_claimed_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, 1.0)
        db.add_incoming(b"t" * 16, bob.key, bob.address, "hello", 1, 2.0)
        db.claim_name(bob.key, "Robert", 1, 2.0)
    base = ["--data-dir", str(tmp_path)]
    assert main([*base, "contacts", "receipts", "bob", "on"]) == 0
    with profile_db(tmp_path) as db:
        assert db.contact_by_name("bob").receipts  # type: ignore[union-attr]
    assert main([*base, "contacts", "receipts", "bob", "off"]) == 0
    with profile_db(tmp_path) as db:
        assert not db.contact_by_name("bob").receipts  # type: ignore[union-attr]
    assert main([*base, "contacts", "receipts", "nobody", "on"]) != 0
    capsys.readouterr()
    assert main([*base, "conversations", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["name"], item["claimed_name"]) == ("bob", "Robert")
    assert main([*base, "conversations"]) == 0
    assert "bob (calls themselves Robert)" in capsys.readouterr().out
    assert main([*base, "history", "bob", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["claimed_name"], row["read_time"]) == ("Robert", None)


@pytest.fixture
def names_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CommApp]:
    with _open_app(tmp_path, monkeypatch) as opened:
        yield opened


async def _names(pilot: Pilot[Any]) -> None:
    """The snapshots' profile, where bob calls himself Robert and read our text, and the
    stranger's request claims a name with markup in it."""
    comm = await _settled(pilot)
    bob, stranger = demo_identity("bob"), demo_identity("stranger")
    comm.profile.db.claim_name(bob.key, "Robert", 1, SENT_AT)
    comm.profile.db.claim_name(stranger.key, "[b]Sam[/]", 1, SENT_AT)
    comm.profile.db.texts_read(bob.address, [b"2" * 16], SENT_AT + 90)
    comm.refresh_contacts()
    await _open_first_conversation(pilot, comm)


def test_names_and_the_read_mark_snapshot(names_app: CommApp, snap_compare: Any) -> None:
    assert snap_compare(names_app, terminal_size=(100, 30), run_before=_steady(_names))


def test_every_mark_has_an_ascii_fallback_and_a_tooltip() -> None:
    assert set(ASCII_STATE_MARKS) == set(STATE_MARKS)
    assert STATE_MARKS["read"] not in (STATE_MARKS["delivered"], STATE_MARKS["sent"])
    assert ASCII_STATE_MARKS["read"] != ASCII_STATE_MARKS["delivered"]
    assert shown_state("delivered", 5.0) == "read" and shown_state("sent", None) == "sent"
    assert all(state in STATE_HELP for state in STATE_MARKS if state != "received")
