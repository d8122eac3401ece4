"""The app with names in cards (docs/PROTOCOL.md, "13.2.1"), real nodes and SQLite.

The add dialog fills the name field from a card's name (shown literally, markup and
all), what the user types instead is their name for the contact, the card's name is
kept as the claim and shown beside it; our own card carries our display name and
changes when it does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, Input, Static

from comm_tui.app import app_session
from comm_tui.app.screens.contact_dialogs import AddContactScreen
from comm_tui.app.screens.first_run import NicknameScreen
from comm_tui.app.screens.identity_dialogs import CardScreen
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView
from comm_tui.app.widgets.status_panel import StatusPanel
from comm_tui.crypto.card import encode_card, encode_named_card, read_card
from comm_tui.crypto.identity import Identity
from tests.app_helpers import SIZE, make_profile, wait_until
from tests.test_app_hostile_text import screen_text
from tests.test_card_names import signed_card

pytestmark = pytest.mark.timeout(90)

MARKUP_NAME = "[b]Dave[/] [red]x"


async def test_the_add_dialog_fills_the_name_from_the_card_and_keeps_what_the_user_types(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    dave = Identity.generate()
    card = encode_named_card(dave, MARKUP_NAME, 3, [], 0)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("ctrl+n")
            assert isinstance(app.screen, AddContactScreen)
            dialog = app.screen
            name = dialog.query_one("#name", Input)
            await pilot.press("tab")
            dialog.query_one("#card", Input).value = card
            await wait_until(pilot, lambda: name.value == MARKUP_NAME, "the name from the card")
            # The claim is drawn as the peer's literal words: brackets show, nothing is red.
            status = dialog.query_one("#card-status", Static)
            await wait_until(
                pilot,
                lambda: (
                    f"they call themselves \u2018{MARKUP_NAME}\u2019" in screen_text(app, status)
                ),
                "the claim shown literally",
            )
            assert not dialog.query_one("#add", Button).disabled
            # Cleared, the field stays cleared (only a new card fills it): Add waits for a name.
            name.value = ""
            await pilot.pause()
            assert name.value == "" and dialog.query_one("#add", Button).disabled
            name.focus()
            await pilot.press(*"Dave", "enter", "enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, AddContactScreen), "added")
            contact = app.profile.db.contact_by_name("Dave")
            assert contact is not None and contact.key == dave.key
            assert app.profile.db.claimed_name(dave.key) == MARKUP_NAME
            entry = app.query_one(ContactList).entry(dave.address)
            assert entry is not None and entry.title == "Dave"
            assert entry.also_called == MARKUP_NAME
            title = app.query_one(ConversationView).query_one("#conversation-title")
            await wait_until(
                pilot,
                lambda: f"Dave — calls themselves {MARKUP_NAME}" in screen_text(app, title),
                "the claim beside the user's name",
            )


async def test_a_card_fills_the_name_it_put_there_but_never_one_the_user_typed(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    first = encode_named_card(Identity.generate(), "Erin", 1, [], 0)
    second = encode_named_card(Identity.generate(), "Frank", 1, [], 0)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+n")
            dialog = app.screen
            name, card = dialog.query_one("#name", Input), dialog.query_one("#card", Input)
            card.value = first
            await wait_until(pilot, lambda: name.value == "Erin", "the first card's name")
            card.value = second  # another card replaces a name a card put there
            await wait_until(pilot, lambda: name.value == "Frank", "the second card's name")
            name.value = "my friend"
            card.value = first
            await pilot.pause()
            assert name.value == "my friend"
            card.value = encode_card(Identity.generate().public)  # no name: nothing changes
            await pilot.pause()
            assert name.value == "my friend"
            assert str(dialog.query_one("#card-status", Static).render()) == "✓ valid card"


async def test_our_card_carries_the_name_chosen_at_first_run(tmp_path: Path) -> None:
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, NicknameScreen)
            assert read_card(app.card).name is None
            await pilot.press(*"Ada", "enter")
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await wait_until(pilot, lambda: read_card(app.card).name == "Ada", "a named card")
            panel = app.query_one(StatusPanel)
            await wait_until(
                pilot,
                lambda: panel.snapshot is not None and panel.snapshot.card == app.card,
                "the status panel to show the named card",
            )
            await pilot.press("ctrl+g")
            assert isinstance(app.screen, CardScreen) and app.screen.card == app.card
            await pilot.press("escape")
            # A rename (the same path as the first-run dialog) changes the card as soon as
            # the node thread has committed it.
            app._named("Ada L")
            await wait_until(
                pilot,
                lambda: (
                    (read_card(app.card).name, read_card(app.card).name_version) == ("Ada L", 2)
                ),
                "the renamed card",
            )


async def test_a_card_with_a_hostile_name_is_refused_in_the_dialog(tmp_path: Path) -> None:
    make_profile(tmp_path)
    eve = Identity.generate()
    name = "Eve\u202egnp.exe".encode()
    card = signed_card(eve, name)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+n")
            dialog = app.screen
            dialog.query_one("#card", Input).value = card
            status = dialog.query_one("#card-status", Static)
            # The message wraps in the dialog: read it whole from what the widget draws.
            await wait_until(
                pilot, lambda: "ask for a new card" in str(status.render()), "the refusal"
            )
            assert dialog.query_one("#name", Input).value == ""
            assert dialog.query_one("#add", Button).disabled
            assert "\u202e" not in screen_text(app, dialog)
