"""Renaming yourself in the real app (issue 12): alt+n or "Rename yourself" in ctrl+p.

Real nodes, real SQLite files, the real app through Pilot. The dialog is pre-filled with
the current name and checks the rule the node applies (docs/PROTOCOL.md, "7.1.1"); a new
name is written to config.toml, signed into the card the app shows ("13.2.1") and queued
as a name letter to the contacts that had the old one, on the node thread.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from comm_tui.app import app_session
from comm_tui.app.app import CommApp
from comm_tui.app.screens.first_run import NAME_RULE, NicknameScreen, OwnNameScreen
from comm_tui.app.screens.help import HelpScreen
from comm_tui.app.screens.identity_dialogs import CardScreen
from comm_tui.app.widgets.status_panel import StatusPanel
from comm_tui.crypto.card import read_card
from comm_tui.crypto.identity import Identity
from comm_tui.store.config import load_config
from comm_tui.store.paths import profile_paths
from tests.app_helpers import SIZE, make_profile, profile_db, wait_on_node, wait_until
from tests.test_app_errors import UNBINDABLE
from tests.test_app_hostile_text import screen_text

pytestmark = pytest.mark.timeout(90)


def _with_bob_who_had_our_name(data_dir: Path) -> Identity:
    """A contact that was sent our name "ada" (version 1), so a rename goes to it at once."""
    bob = Identity.generate()
    with profile_db(data_dir) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
        db.add_outgoing(b"o" * 16, bob.key, bob.address, "hi", time.time())
        assert db.set_own_display_name("ada") == 1
        db.set_name_sent(bob.address, 1, None)
    return bob


def _saved_nickname(data_dir: Path) -> str | None:
    return load_config(profile_paths("default", data_dir).config_file).nickname


def _error(app: CommApp) -> str:
    return str(app.screen.query_one("#error", Static).render())


async def test_rename_yourself_is_a_key_in_the_help_and_a_command_in_the_palette(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path, nickname="ada")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Rename yourself" in titles
            await pilot.press("f1")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            rows = [str(row.render()) for row in app.screen.query(".help-row")]
            assert any("alt+n" in row and "Rename yourself" in row for row in rows)
            await pilot.press("escape", "alt+n")
            await wait_until(pilot, lambda: isinstance(app.screen, OwnNameScreen), "the dialog")
            assert app.screen.query_one(Input).value == "ada"  # pre-filled


async def test_renaming_yourself_signs_the_card_and_sends_the_name_to_contacts(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path, nickname="ada")
    bob = _with_bob_who_had_our_name(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            assert read_card(app.card).name == "ada"
            await pilot.press("alt+n")
            await wait_until(pilot, lambda: isinstance(app.screen, OwnNameScreen), "the dialog")
            name = app.screen.query_one(Input)
            name.value = "  Ada   Lovelace "  # normalized as the node would
            await pilot.press("enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, OwnNameScreen), "closed")
            await wait_until(
                pilot,
                lambda: (
                    (read_card(app.card).name, read_card(app.card).name_version)
                    == ("Ada Lovelace", 2)
                ),
                "the card signed with the new name",
            )
            # The name letter to bob, queued by the node thread.
            await wait_on_node(
                pilot, app, lambda s: s.db.name_sent(bob.address) == 2, "the name letter to bob"
            )
            assert _saved_nickname(tmp_path) == "Ada Lovelace"
            assert app.profile.config.nickname == "Ada Lovelace"
            assert app.sub_title.startswith("Ada Lovelace · ")
            panel = app.query_one(StatusPanel)
            await wait_until(
                pilot,
                lambda: panel.snapshot is not None and panel.snapshot.card == app.card,
                "the status panel to show the renamed card",
            )
            # The card dialog shows it too.
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: isinstance(app.screen, CardScreen), "the card dialog")
            assert isinstance(app.screen, CardScreen) and app.screen.card == app.card


async def test_a_name_the_node_would_refuse_keeps_the_dialog_open_with_one_line(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path, nickname="ada")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("alt+n")
            await wait_until(pilot, lambda: isinstance(app.screen, OwnNameScreen), "the dialog")
            dialog = app.screen
            name = dialog.query_one(Input)
            for refused in ("Eve\u202egnp.exe", "a\u200db", "é" * 33):
                name.value = refused
                await pilot.press("enter")
                await wait_until(pilot, lambda: _error(app) == NAME_RULE, f"refusing {refused!r}")
                assert app.screen is dialog and name.value == refused  # open, text kept
                assert "\n" not in screen_text(app, dialog.query_one("#error", Static)).strip()
            name.value = "   "
            await pilot.press("enter")
            await wait_until(pilot, lambda: _error(app) == "Type a name.", "an empty name")
            await pilot.press("a")  # typing clears the complaint
            await wait_until(pilot, lambda: _error(app) == "", "the complaint cleared")
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen is not dialog, "cancelled")
            assert _saved_nickname(tmp_path) == "ada"
            assert read_card(app.card).name in (None, "ada")  # never a refused one


async def test_renaming_yourself_while_the_node_is_down_is_kept_for_its_start(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path, nickname="ada")
    with app_session(data_dir=tmp_path, listen=UNBINDABLE) as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: any("did not start" in n.message for n in app._notifications),
                "the start error",
            )
            await pilot.press("alt+n")
            await wait_until(pilot, lambda: isinstance(app.screen, OwnNameScreen), "the dialog")
            app.screen.query_one(Input).value = "Ada L"
            await pilot.press("enter")
            await wait_until(pilot, lambda: read_card(app.card).name == "Ada L", "the card")
            assert _saved_nickname(tmp_path) == "Ada L"
            assert app.sub_title.startswith("Ada L · ")


async def test_the_first_run_dialog_applies_the_same_rule(tmp_path: Path) -> None:
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, NicknameScreen)
            dialog = app.screen
            dialog.query_one(Input).value = "a\u202eb"
            await pilot.press("enter")
            await wait_until(pilot, lambda: _error(app) == NAME_RULE, "the refusal")
            assert app.screen is dialog and _saved_nickname(tmp_path) is None
            dialog.query_one(Input).value = "Ada"
            await pilot.press("enter")
            await wait_until(pilot, lambda: _saved_nickname(tmp_path) == "Ada", "the name saved")
