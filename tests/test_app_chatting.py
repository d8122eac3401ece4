"""Day-to-day chatting in the real app (issue 12): the composer, calm lists, help, themes.

Incoming texts are stored in the profile's database and announced to the app as the
node service announces them (``NodeEvent(IncomingText(row))``): what is tested here is
the app's handling of an arrival, not the network (tests/test_app.py does both).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual import events

from comm_tui.app import app_session
from comm_tui.app.app import CommApp
from comm_tui.app.messages import NodeEvent
from comm_tui.app.screens.contact_dialogs import ConfirmScreen
from comm_tui.app.screens.help import HelpScreen
from comm_tui.app.widgets.composer import COUNTER_FROM, Composer
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import (
    ConversationView,
    DaySeparator,
    MessageRow,
    UnreadMarker,
)
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import IncomingText
from comm_tui.protocol.letters import MAX_TEXT_BYTES
from comm_tui.store.db import Database
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until

DAY_S = 24 * 3600.0


def _contacts(data_dir: Path, *names: str) -> dict[str, Identity]:
    people = {name: Identity.generate() for name in names}
    with profile_db(data_dir) as db:
        for name, identity in people.items():
            db.add_contact(name, identity.key, identity.address, time.time())
    return people


def _arrive(app: CommApp, db: Database, sender: Identity, text: str, when: float) -> None:
    """A text from ``sender`` stored and announced, as the node service does."""
    row = db.add_incoming(os.urandom(16), sender.key, sender.address, text, int(when * 1000), when)
    assert row is not None
    app.post_message(NodeEvent(IncomingText(row)))


async def _open(pilot: object, app: CommApp, address: bytes) -> None:
    conversation = app.query_one(ConversationView)
    await wait_until(pilot, lambda: conversation.peer_address == address, "the conversation")  # type: ignore[arg-type]


async def test_multi_line_text_is_sent_whole_and_enter_sends(tmp_path: Path) -> None:
    make_profile(tmp_path)
    _contacts(tmp_path, "bob")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            await pilot.press(*"first line", "ctrl+j", *"second line")
            assert composer.text == "first line\nsecond line"
            assert not list(app.query(MessageRow))  # ctrl+j did not send
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: list(conversation.query(MessageRow)), "the sent row")
            assert [r.row.text for r in conversation.query(MessageRow)] == [
                "first line\nsecond line"
            ]
            assert composer.text == ""


async def test_a_pasted_text_keeps_its_lines_and_is_not_sent(tmp_path: Path) -> None:
    make_profile(tmp_path)
    _contacts(tmp_path, "bob")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            pasted = "line one\nline two\n\nline four " + "x" * 5000
            app.post_message(events.Paste(pasted))  # as the terminal delivers a paste
            await wait_until(pilot, lambda: composer.text == pasted, "the pasted text")
            assert not list(app.query(MessageRow))


async def test_up_and_down_on_an_empty_composer_recall_sent_texts(tmp_path: Path) -> None:
    make_profile(tmp_path)
    _contacts(tmp_path, "bob")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            await pilot.press(*"one", "enter", *"two", "enter")
            await pilot.press("up")
            assert composer.text == "two"
            await pilot.press("up")
            assert composer.text == "one"
            await pilot.press("up")  # the oldest stays
            assert composer.text == "one"
            await pilot.press("down", "down")
            assert composer.text == ""
            # An edited recall is a draft: up moves the cursor, it does not replace it.
            await pilot.press("up", "!")
            assert composer.text == "two!"
            await pilot.press("up")
            assert composer.text == "two!"


async def test_the_counter_shows_near_the_limit_and_a_longer_text_is_kept(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    _contacts(tmp_path, "bob")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            below = "é" * int(COUNTER_FROM * MAX_TEXT_BYTES / 2 - 10)  # 2 bytes each
            composer.load_text(below)
            await pilot.pause()
            assert composer.border_subtitle == ""
            over = "é" * (MAX_TEXT_BYTES // 2 + 1)
            composer.load_text(over)
            await wait_until(pilot, lambda: composer.border_subtitle, "the counter")
            assert composer.border_subtitle == f"{MAX_TEXT_BYTES + 2:,} / {MAX_TEXT_BYTES:,} bytes"
            assert composer.has_class("-over-limit")
            await pilot.press("enter")
            await pilot.pause()
            assert composer.text == over  # refused, and nothing lost
            assert not list(app.query(MessageRow))
            assert any("Nothing was sent" in n.message for n in app._notifications)
            composer.load_text("é" * (MAX_TEXT_BYTES // 2))  # exactly the limit
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: list(conversation.query(MessageRow)), "the sent row")


async def test_the_highlighted_row_stays_put_when_a_text_arrives(tmp_path: Path) -> None:
    make_profile(tmp_path)
    now = time.time()
    people = _contacts(tmp_path, "ann", "bob", "cat", "dan")
    with profile_db(tmp_path) as db:
        for i, name in enumerate(("ann", "bob", "cat", "dan")):  # dan is the newest
            who = people[name]
            db.add_incoming(os.urandom(16), who.key, who.address, f"hi {name}", 1, now - 100 + i)
            db.mark_read(who.address)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app, profile_db(tmp_path) as db:
        async with app.run_test(size=SIZE) as pilot:
            contacts = app.query_one(ContactList)
            await pilot.press("down", "down")  # dan, cat, [bob], ann
            highlighted = contacts.highlighted_entry
            assert highlighted is not None and highlighted.name == "bob"
            _arrive(app, db, people["ann"], "news from ann", time.time())
            await wait_until(
                pilot,
                lambda: (e := contacts.entry(people["ann"].address)) is not None and e.unread,
                "ann's unread count",
            )
            assert contacts.highlighted == 2
            assert contacts.highlighted_entry is not None
            assert contacts.highlighted_entry.name == "bob"
            assert app.focused is contacts
            # The others moved around it: ann, the newest, first.
            order = [contacts.get_option_at_index(i).id for i in range(4)]
            assert order[0] == people["ann"].address.hex()
            assert order[2] == people["bob"].address.hex()


async def test_typing_on_the_list_writes_in_the_composer_and_fires_no_binding(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    stranger = Identity.generate()
    bob = _contacts(tmp_path, "bob")["bob"]
    with profile_db(tmp_path) as db:
        db.add_incoming(os.urandom(16), stranger.key, stranger.address, "hello?", 1, time.time())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            contacts = app.query_one(ContactList)
            contacts.select_address(bob.address)
            await pilot.press("enter")
            composer = app.query_one(Composer)
            await wait_until(pilot, lambda: app.focused is composer, "the composer")
            await pilot.press("escape")  # back on the list, bob's conversation still open
            assert app.focused is contacts
            contacts.select_address(stranger.address)  # a request: "a" used to accept it
            await pilot.press(*"are you there", "?")
            assert app.focused is composer
            assert composer.text == "are you there?"
            assert not isinstance(app.screen, (ConfirmScreen, HelpScreen))
            assert contacts.entry(stranger.address) is not None
            assert contacts.entry(stranger.address).is_request  # type: ignore[union-attr]


async def test_next_unread_opens_each_unread_conversation_in_turn(tmp_path: Path) -> None:
    make_profile(tmp_path)
    now = time.time()
    people = _contacts(tmp_path, "ann", "bob", "cat")
    with profile_db(tmp_path) as db:
        for i, name in enumerate(("ann", "cat")):
            who = people[name]
            db.add_incoming(os.urandom(16), who.key, who.address, f"hi {name}", 1, now - 10 + i)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            conversation = app.query_one(ConversationView)
            await pilot.press("alt+u")
            await _open(pilot, app, people["cat"].address)  # the newest first
            await pilot.press("alt+u")
            await _open(pilot, app, people["ann"].address)
            await wait_until(
                pilot,
                lambda: not any(e.unread for e in app.contact_entries()),
                "both read",
            )
            await pilot.press("alt+u")
            await pilot.pause()
            assert conversation.peer_address == people["ann"].address
            assert any("No unread" in n.message for n in app._notifications)


async def test_day_separators_and_the_unread_marker(tmp_path: Path) -> None:
    make_profile(tmp_path)
    people = _contacts(tmp_path, "bob")
    bob = people["bob"]
    # Around noon, local time: no day boundary (or daylight saving change) is near.
    local = time.localtime()
    noon = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 12, 0, 0, 0, 0, -1))
    with profile_db(tmp_path) as db:
        db.add_incoming(os.urandom(16), bob.key, bob.address, "old news", 1, noon - 3 * DAY_S)
        db.mark_read(bob.address)
        db.add_incoming(os.urandom(16), bob.key, bob.address, "yesterday", 1, noon - DAY_S)
        db.add_incoming(os.urandom(16), bob.key, bob.address, "today 1", 1, noon - 5)
        db.add_incoming(os.urandom(16), bob.key, bob.address, "today 2", 1, noon - 4)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            await _open(pilot, app, bob.address)
            log = app.query_one("#message-log")
            await wait_until(pilot, lambda: len(log.query(MessageRow)) == 4, "the history")
            kinds = [
                "day"
                if isinstance(w, DaySeparator)
                else "new"
                if isinstance(w, UnreadMarker)
                else w.row.text  # type: ignore[attr-defined]
                for w in log.children
            ]
            assert kinds == [
                "day",
                "old news",
                "day",
                "new",
                "yesterday",
                "day",
                "today 1",
                "today 2",
            ]
            labels = [str(w.render()) for w in log.query(DaySeparator)]
            assert labels[1:] == ["Yesterday", "Today"]
            assert str(log.query_one(UnreadMarker).render()) == "3 new messages"


async def test_help_lists_every_key_and_the_theme_is_remembered(tmp_path: Path) -> None:
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            shown = " ".join(str(w.render()) for w in app.screen.query(".help-row"))
            for binding in [*CommApp.BINDINGS, *ContactList.BINDINGS, *Composer.BINDINGS]:
                assert getattr(binding, "description", "")
                first_key = binding.key.split(",")[0]  # type: ignore[union-attr]
                assert first_key in shown, first_key
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("question_mark")  # on the list, ? is help too
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            app.theme = "nord"
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE):
            assert app.theme == "nord"


async def test_a_text_arriving_while_a_dialog_is_open_reaches_the_conversation(
    tmp_path: Path,
) -> None:
    """The panes live on the main screen, under any dialog: the app's queries reach them
    there (Textual's App queries its default screen, not the active one), so a text that
    arrives while a dialog is open is in the conversation at once."""
    make_profile(tmp_path)
    bob = _contacts(tmp_path, "bob")["bob"]
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            await _open(pilot, app, bob.address)
            conversation = app.query_one(ConversationView)
            app.action_help()
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            with profile_db(tmp_path) as db:
                _arrive(app, db, bob, "while the help was open", time.time())
            await wait_until(
                pilot,
                lambda: (
                    [r.row.text for r in conversation.query(MessageRow)]
                    == ["while the help was open"]
                ),
                "the row, under the dialog",
            )
            assert isinstance(app.screen, HelpScreen)
