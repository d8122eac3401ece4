"""Desktop notifications and the bell (issue 12, item 7): which, when, and never an injection."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from comm_tui.app import app_session
from comm_tui.app.app import CommApp
from comm_tui.app.messages import NodeEvent
from comm_tui.app.notify import notification_kind, notification_sequence, safe_name
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageRow
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import IncomingText
from comm_tui.store.config import Config, load_config, save_config
from comm_tui.store.paths import profile_paths
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until


@pytest.mark.parametrize(
    ("mode", "environ", "kind"),
    [
        ("auto", {"TERM_PROGRAM": "iTerm.app", "TERM": "xterm-256color"}, "osc9"),
        ("auto", {"TERM": "xterm-kitty"}, "osc9"),
        ("auto", {"TERM": "xterm-256color", "WT_SESSION": "x"}, "osc9"),
        ("auto", {"TERM": "rxvt-unicode-256color"}, "osc777"),
        ("auto", {"TERM": "xterm-256color"}, "bell"),  # unknown: do not risk junk
        ("auto", {"TERM_PROGRAM": "iTerm.app", "TMUX": "/tmp/x"}, "bell"),  # tmux eats it
        ("auto", {"TERM": "screen-256color"}, "bell"),
        ("desktop", {"TERM": "xterm-256color"}, "osc9"),  # asked for: the user knows
        ("bell", {"TERM": "xterm-kitty"}, "bell"),
        ("off", {"TERM": "xterm-kitty"}, "off"),
    ],
)
def test_the_notification_kind_follows_the_terminal(
    mode: str, environ: dict[str, str], kind: str
) -> None:
    assert notification_kind(mode, environ) == kind


def test_a_name_cannot_end_the_sequence_or_start_another() -> None:
    hostile = "Eve\x07\x1b]52;c;cm0gLXJmIH4=\x07\x9c;x\u2028" + "a" * 100
    name = safe_name(hostile)
    assert all(c.isprintable() and c != ";" for c in name) and len(name) <= 64
    sequence = notification_sequence("osc9", hostile)
    assert sequence.count("\x1b") == 1 and sequence.count("\x07") == 1
    assert sequence.endswith("\x07")
    sequence = notification_sequence("osc777", hostile)
    assert sequence.count("\x1b") == 2 and sequence.count(";") == 3
    assert notification_sequence("bell", "x") == notification_sequence("off", "x") == ""
    assert safe_name("\x1b\x07;") == "someone"


def test_the_setting_is_checked_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_config(path, Config(notifications="bell"))
    assert load_config(path).notifications == "bell"
    path.write_text('notifications = "loud"\n')
    with pytest.raises(Exception, match="'notifications' must be one of auto, desktop"):
        load_config(path)


async def test_a_text_in_a_closed_conversation_rings_once_and_names_no_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
    paths = profile_paths("default", tmp_path)
    config = load_config(paths.config_file)
    config.notifications = "desktop"
    save_config(paths.config_file, config)
    written: list[str] = []
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app, profile_db(tmp_path) as db:
        async with app.run_test(size=SIZE) as pilot:
            assert app._driver is not None
            monkeypatch.setattr(app._driver, "write", written.append)
            row = db.add_incoming(os.urandom(16), bob.key, bob.address, "secret plans", 1, 5.0)
            assert row is not None
            app.post_message(NodeEvent(IncomingText(row)))
            await wait_until(pilot, lambda: any("]9;" in w for w in written), "the notification")
            [sequence] = [w for w in written if "]9;" in w]
            assert "bob" in sequence and "secret" not in sequence
            # With the conversation open, no notification.
            await pilot.press("enter")
            await wait_until(
                pilot,
                lambda: app.query_one(ConversationView).peer_address == bob.address,
                "the conversation",
            )
            written.clear()
            row = db.add_incoming(os.urandom(16), bob.key, bob.address, "more", 2, 6.0)
            assert row is not None
            app.post_message(NodeEvent(IncomingText(row)))
            conversation = app.query_one(ConversationView)
            await wait_until(
                pilot,
                lambda: any(r.row.text == "more" for r in conversation.query(MessageRow)),
                "the text in the open conversation",
            )
            assert not any("]9;" in w for w in written)


def test_bell_mode_rings_the_bell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """_alert in bell mode calls App.bell, not the driver (no sequence to write)."""
    rung: list[bool] = []
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        app.profile.config.notifications = "bell"
        monkeypatch.setattr(CommApp, "bell", lambda self: rung.append(True))
        app._alert("bob")
    assert rung == [True]


async def test_a_muted_contact_brings_no_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
    alerts: list[str] = []
    monkeypatch.setattr(CommApp, "_alert", lambda self, sender: alerts.append(sender))
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app, profile_db(tmp_path) as db:
        async with app.run_test(size=SIZE) as pilot:
            contacts = app.query_one(ContactList)
            await pilot.press("alt+m")
            await wait_until(pilot, lambda: contacts.entry(bob.address).muted, "muted")  # type: ignore[union-attr]
            assert "(muted)" in str(contacts.get_option_at_index(0).prompt)
            row = db.add_incoming(os.urandom(16), bob.key, bob.address, "psst", 1, 5.0)
            assert row is not None
            app.post_message(NodeEvent(IncomingText(row)))
            await wait_until(pilot, lambda: contacts.entry(bob.address).unread, "the unread text")  # type: ignore[union-attr]
            assert alerts == []
            await pilot.press("alt+m")  # unmuted: the next one alerts
            row = db.add_incoming(os.urandom(16), bob.key, bob.address, "again", 2, 6.0)
            assert row is not None
            app.post_message(NodeEvent(IncomingText(row)))
            await wait_until(pilot, lambda: alerts == ["bob"], "the alert")
    with profile_db(tmp_path) as db:
        contact = db.contact_by_name("bob")
        assert contact is not None and not contact.muted
