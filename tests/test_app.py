"""Pilot tests of the app: every flow, over real SQLite and real loopback nodes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import Button, Checkbox, Input

from comm_tui.app import app_session
from comm_tui.app.messages import NodeEvent
from comm_tui.app.screens.contact_dialogs import AddContactScreen, ConfirmScreen
from comm_tui.app.screens.first_run import NicknameScreen
from comm_tui.app.screens.identity_dialogs import ExportScreen, ImportScreen
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageLog, MessageRow
from comm_tui.app.widgets.status_panel import StatusPanel
from comm_tui.crypto.card import encode_card, encode_hints_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import FAST_KDF_ENV, read_identity_file
from comm_tui.net.service import IncomingText, NodeService
from comm_tui.store.config import load_config
from comm_tui.store.db import SESSION_RESET_NOTICE, Database
from comm_tui.store.paths import profile_paths
from tests.app_helpers import (
    SIZE,
    keep_notifications,
    make_profile,
    on_node,
    profile_db,
    wait_on_node,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")


def _add_contact(data_dir: Path, name: str, identity: Identity) -> None:
    with profile_db(data_dir) as db:
        db.add_contact(name, identity.key, identity.address, time.time())


async def test_first_run_asks_for_a_display_name(tmp_path: Path) -> None:
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, NicknameScreen)
            await pilot.press(*"Ada", "enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, NicknameScreen), "dialog")
            assert "Ada" in app.sub_title
            # Alone on the network: the status panel says how to get out of that.
            panel = app.query_one(StatusPanel)
            await wait_until(
                pilot,
                lambda: panel.snapshot is not None and panel.snapshot.state == "no peers",
                "the node to start alone",
            )
            await wait_until(
                pilot,
                lambda: "--bootstrap" in str(panel.query_one("#status-node").render()),
                "the panel to say how to find peers",
            )
    assert load_config(profile_paths("default", tmp_path).config_file).nickname == "Ada"


async def test_focus_starts_on_contacts_and_enter_opens_conversation(tmp_path: Path) -> None:
    make_profile(tmp_path)
    bob, carol = Identity.generate(), Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    _add_contact(tmp_path, "carol", carol)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.focused, ContactList)
            first = app.query_one(ContactList).highlighted_entry
            assert first is not None
            await pilot.press("down", "enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: conversation.peer is not None, "open conversation")
            assert conversation.peer is not None and conversation.peer.name != first.name
            assert app.focused is app.query_one(Composer)
            await pilot.press("escape")
            assert isinstance(app.focused, ContactList)


async def test_add_contact_with_a_valid_card(tmp_path: Path) -> None:
    make_profile(tmp_path)
    dave = Identity.generate()
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+n")
            assert isinstance(app.screen, AddContactScreen)
            await pilot.press(*"Dave", "tab")
            app.screen.query_one("#card", Input).value = encode_card(dave.public)
            await pilot.pause()
            assert "valid card" in str(app.screen.query_one("#card-status").render())
            assert not app.screen.query_one("#add", Button).disabled
            await pilot.press("enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, AddContactScreen), "close")
            contact = app.profile.db.contact_by_name("Dave")
            assert contact is not None and contact.key == dave.key
            assert app.query_one(ContactList).entry(dave.address) is not None
            # The new contact's conversation opens, ready to type in.
            await wait_until(
                pilot,
                lambda: app.query_one(ConversationView).peer_address == dave.address,
                "conversation with the new contact",
            )
            # Its prekey bundle is wanted at once, so a first text can open with X3DH.
            await wait_on_node(
                pilot,
                app,
                lambda s: (
                    dave.address in s.node._directory.wanted
                    and dave.address in s.node._punch.contacts
                ),
                "the node to want dave's bundle and know dave as a contact",
            )


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ("hello there", "should start with 'comm1'"),
        ("comm1abc", "expected 65"),
        ("typo", "checksum does not match"),
        ("comm1" + "0" * 60, "cannot appear in a card"),
    ],
)
async def test_add_contact_rejects_bad_cards_as_typed(
    tmp_path: Path, card: str, message: str
) -> None:
    make_profile(tmp_path)
    if card == "typo":
        good = encode_card(Identity.generate().public)
        swapped = "b" if good[20] != "b" else "c"
        card = good[:20] + swapped + good[21:]
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+n")
            await pilot.press(*"Eve", "tab")
            await pilot.press(*card)
            await pilot.pause()
            status = str(app.screen.query_one("#card-status").render())
            assert message in status
            assert app.screen.query_one("#add", Button).disabled
            await pilot.press("enter")  # Enter on the card field does not add a bad card
            await pilot.pause()
            assert app.profile.db.contacts() == []


async def test_duplicate_contact_name_is_reported_in_the_dialog(tmp_path: Path) -> None:
    make_profile(tmp_path)
    _add_contact(tmp_path, "bob", Identity.generate())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+n", *"Bob", "tab")
            app.screen.query_one("#card", Input).value = encode_card(Identity.generate().public)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, AddContactScreen)
            assert "already exists" in str(app.screen.query_one("#error").render())


async def test_two_apps_exchange_a_message_and_see_it_delivered(tmp_path: Path) -> None:
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    alice, bob = make_profile(dir_a, nickname="alice"), make_profile(dir_b, nickname="bob")
    _add_contact(dir_a, "bob", bob)
    _add_contact(dir_b, "alice", alice)
    with app_session(data_dir=dir_a, listen="127.0.0.1:0") as app_a:
        async with app_a.run_test(size=SIZE) as pilot_a:
            await wait_until(pilot_a, lambda: app_a.node_bound is not None, "node A to start")
            assert app_a.node_bound is not None
            port = app_a.node_bound[1]
            with app_session(
                data_dir=dir_b, listen="127.0.0.1:0", bootstrap=[f"127.0.0.1:{port}"]
            ) as app_b:
                # Kept as raised: B's toast (5 s) may be gone by the time A sees the ack.
                raised_b = keep_notifications(app_b)
                async with app_b.run_test(size=SIZE) as pilot_b:
                    await wait_until(
                        pilot_b,
                        lambda: app_b.status is not None and app_b.status.state == "online",
                        "node B to join A",
                    )
                    await pilot_a.press("enter")
                    await wait_until(
                        pilot_a,
                        lambda: app_a.query_one(ConversationView).peer_address == bob.address,
                        "A's conversation with bob",
                    )
                    await pilot_a.press(*"hello bob", "enter")
                    conversation = app_a.query_one(ConversationView)

                    def delivered() -> bool:
                        rows = list(conversation.query(MessageRow))
                        return bool(rows) and rows[-1].row.state == "delivered"

                    await wait_until(pilot_a, delivered, "the delivered mark in A")
                    last = list(conversation.query(MessageRow))[-1]
                    assert last.row.text == "hello bob"
                    assert "✓✓" in str(last.query_one(".meta").render())
                    # B got it: unread in the list, and a notification.
                    entry = app_b.query_one(ContactList).entry(alice.address)
                    assert entry is not None and entry.unread == 1
                    assert any("hello bob" in message for _, message in raised_b)
                    # B answers; A, whose conversation is open, shows it at once.
                    await pilot_b.press("enter")
                    await pilot_b.press(*"hi alice", "enter")
                    await wait_until(
                        pilot_a,
                        lambda: any(
                            r.row.text == "hi alice" for r in conversation.query(MessageRow)
                        ),
                        "B's answer in A's open conversation",
                    )


async def test_unknown_sender_is_shown_as_a_request_and_can_be_accepted(tmp_path: Path) -> None:
    me = make_profile(tmp_path / "me")
    stranger = Identity.generate()
    with app_session(data_dir=tmp_path / "me", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            assert app.node_bound is not None
            db = Database.open(tmp_path / "stranger.db")
            other = NodeService(stranger, db, listen=("127.0.0.1", 0), bootstrap=[app.node_bound])
            await other.start()
            try:
                await wait_until(pilot, lambda: other.node.state == "online", "stranger joins")
                other.send_text(me.public, "hi, remember me?")
                contacts = app.query_one(ContactList)
                await wait_until(pilot, lambda: contacts.entry(stranger.address), "the request")
                entry = contacts.entry(stranger.address)
                assert entry is not None and entry.is_request and entry.unread == 1
                assert any(n.title == "Message request" for n in app._notifications)
                contacts.select_address(stranger.address)
                await pilot.press("enter")
                conversation = app.query_one(ConversationView)
                await wait_until(pilot, lambda: conversation.peer is not None, "the request opens")
                assert conversation.query_one("#request-bar").display
                assert conversation.query_one(Composer).disabled
                await pilot.click("#accept")
                await wait_until(pilot, lambda: isinstance(app.screen, AddContactScreen), "accept")
                assert app.screen.query_one("#card", Input).value == encode_card(stranger.public)
                await pilot.press(*"Sam", "enter", "enter")
                await wait_until(
                    pilot, lambda: app.profile.db.contact_by_name("Sam") is not None, "saved"
                )
                entry = contacts.entry(stranger.address)
                assert entry is not None and not entry.is_request
            finally:
                await other.stop()
                db.close()


async def test_ignored_request_is_hidden(tmp_path: Path) -> None:
    make_profile(tmp_path)
    stranger = Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_incoming(b"x" * 16, stranger.key, stranger.address, "buy now", 1, time.time() - 5)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            contacts = app.query_one(ContactList)
            assert contacts.entry(stranger.address) is not None
            await pilot.press("alt+i")
            await pilot.pause()
            assert contacts.entry(stranger.address) is None


async def test_rename_and_remove_with_confirmation(tmp_path: Path) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            # Only contacts may make the node punch a hole (docs/PROTOCOL.md, "12.6").
            await wait_until(pilot, lambda: app.node_bound is not None, "the node started")
            assert await on_node(app, lambda s: bob.address in s.node._punch.contacts)
            await pilot.press("f2")
            await pilot.pause()
            app.screen.query_one("#new-name", Input).value = "Robert"
            await pilot.press("enter")
            await pilot.pause()
            assert app.profile.db.contact_by_name("Robert") is not None
            assert app.query_one(ContactList).entry(bob.address).title == "Robert"  # type: ignore[union-attr]
            await pilot.press("delete")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("enter")  # "No" has the focus
            await pilot.pause()
            assert app.profile.db.contact_by_name("Robert") is not None
            await pilot.press("delete", "y")
            await pilot.pause()
            assert app.profile.db.contacts() == []
            assert app.query_one(ContactList).entry(bob.address) is None
            await wait_on_node(
                pilot, app, lambda s: bob.address not in s.node._punch.contacts, "bob removed"
            )


async def test_status_panel_figures_change(tmp_path: Path) -> None:
    make_profile(tmp_path / "me")
    db = Database.open(tmp_path / "peer.db")
    peer = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0))
    await peer.start()
    assert peer.bound is not None
    try:
        with app_session(
            data_dir=tmp_path / "me", listen="127.0.0.1:0", bootstrap=[f"127.0.0.1:{peer.bound[1]}"]
        ) as app:
            async with app.run_test(size=SIZE) as pilot:
                panel = app.query_one(StatusPanel)
                assert panel.snapshot is not None
                assert panel.snapshot.datagrams_in == 0 and panel.snapshot.table_size == 0
                await wait_until(
                    pilot,
                    lambda: (
                        panel.snapshot is not None
                        and panel.snapshot.table_size >= 1
                        and panel.snapshot.datagrams_in > 0
                    ),
                    "the panel to show the peer and traffic",
                )
                node_text = str(panel.query_one("#status-node").render())
                assert "1 nodes" in node_text and "127.0.0.1:" in node_text
                peers_text = str(panel.query_one("#status-peers").render())
                assert peer.identity.address.hex()[:8] in peers_text
                # With the peer in its table the node ends online; the title follows on a tick.
                await wait_until(
                    pilot, lambda: "online, 1 peer" in app.sub_title, "the title to say online"
                )
                before = panel.snapshot.datagrams_in
                peer.send_text(app.profile.identity.public, "traffic")
                await wait_until(
                    pilot,
                    lambda: panel.snapshot is not None and panel.snapshot.datagrams_in > before,
                    "more datagrams in",
                )
                assert max(panel._rates) > 0
                # A malformed datagram is dropped, and the panel says why.
                assert app.node_bound is not None
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                    raw.sendto(b"\x08\x01garbage", ("127.0.0.1", app.node_bound[1]))
                await wait_until(
                    pilot,
                    lambda: panel.snapshot is not None and panel.snapshot.rejected >= 1,
                    "the rejection to be counted",
                )
                relay = panel.query_one("#status-relay")
                await wait_until(
                    pilot, lambda: "malformed" in str(relay.render()), "the reason to be shown"
                )
                await pilot.press("ctrl+s")
                assert not panel.display
                await pilot.press("ctrl+s")
                assert panel.display
    finally:
        await peer.stop()
        db.close()


async def test_history_of_100k_messages_loads_lazily(tmp_path: Path) -> None:
    """A 100,000-message conversation opens with one page and grows a page per scroll."""
    total = 100_000
    make_profile(tmp_path)
    bob = Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    with profile_db(tmp_path) as db, db.transaction():
        for i in range(total):
            db.add_incoming(i.to_bytes(16, "big"), bob.key, bob.address, f"m{i}", i, 1000.0 + i)
    last = total - 1
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: len(conversation.query(MessageRow)) == 100, "page 1")
            rows = list(conversation.query(MessageRow))
            assert rows[-1].row.text == f"m{last}" and rows[0].row.text == f"m{last - 99}"
            log = conversation.query_one(MessageLog)
            await pilot.pause()
            assert log.scroll_y == log.max_scroll_y > 0
            log.scroll_home(animate=False)
            await wait_until(pilot, lambda: len(conversation.query(MessageRow)) == 200, "page 2")
            assert conversation.query(MessageRow).first().row.text == f"m{last - 199}"
            await pilot.pause()
            assert log.scroll_y > 0  # the place is kept, not jumped to the new top
            log.scroll_home(animate=False)
            await wait_until(pilot, lambda: len(conversation.query(MessageRow)) == 300, "page 3")
            assert app.query_one(ContactList).entry(bob.address).unread == 0  # type: ignore[union-attr]


async def test_a_page_loading_while_another_conversation_opens_is_not_mixed_in(
    tmp_path: Path,
) -> None:
    """Opening a conversation waits for a page of the previous one still loading (the
    two ran at once on two loops: bob's older page was mounted into carol's view)."""
    make_profile(tmp_path)
    bob, carol = Identity.generate(), Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    _add_contact(tmp_path, "carol", carol)
    with profile_db(tmp_path) as db, db.transaction():
        for i in range(300):
            db.add_incoming(i.to_bytes(16, "big"), bob.key, bob.address, f"b{i}", i, 1000.0 + i)
        db.add_incoming(b"c" * 16, carol.key, carol.address, "c0", 1, 900.0)
    with app_session(data_dir=tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            conversation = app.query_one(ConversationView)
            contacts = app.query_one(ContactList)
            contacts.select_address(bob.address)
            await pilot.press("enter")
            await wait_until(pilot, lambda: len(conversation.query(MessageRow)) == 100, "bob")
            carol_entry = contacts.entry(carol.address)
            assert carol_entry is not None
            await asyncio.gather(
                conversation._load_older(MessageLog.NearTop()), conversation.open(carol_entry)
            )
            await pilot.pause()
            assert [w.row.text for w in conversation.query(MessageRow)] == ["c0"]
            assert [w.row.text for w in conversation._rows.values()] == ["c0"]


async def test_a_text_arriving_while_its_conversation_opens_is_drawn_once_below_the_page(
    tmp_path: Path,
) -> None:
    """A text that arrives while its conversation's page loads waits for the page (the
    lock of the changes of rows): it was mounted while the previous rows were being
    removed, so it was drawn above the page and a second time in it, and its row was
    left out of the view's rows (its later states never drawn)."""
    make_profile(tmp_path)
    bob, carol = Identity.generate(), Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    _add_contact(tmp_path, "carol", carol)
    with profile_db(tmp_path) as db, db.transaction():
        db.add_incoming(b"b" * 16, bob.key, bob.address, "b0", 1, 900.0)
        for i in range(150):
            db.add_incoming(i.to_bytes(16, "big"), carol.key, carol.address, f"c{i}", i, 1000.0 + i)
    with app_session(data_dir=tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            conversation = app.query_one(ConversationView)
            contacts = app.query_one(ContactList)
            contacts.select_address(bob.address)
            await pilot.press("enter")
            await wait_until(pilot, lambda: conversation.peer_address == bob.address, "bob")
            carol_entry = contacts.entry(carol.address)
            assert carol_entry is not None
            with profile_db(tmp_path) as db:
                row = db.add_incoming(b"n" * 16, carol.key, carol.address, "new", 999, 2000.0)
            assert row is not None
            # The page is read at once; the text is announced while its rows are swapped.
            await asyncio.gather(
                conversation.open(carol_entry), app._node_event(NodeEvent(IncomingText(row)))
            )
            expected = [f"c{i}" for i in range(51, 150)] + ["new"]
            await wait_until(
                pilot,
                lambda: [w.row.text for w in conversation.query(MessageRow)] == expected,
                "carol's newest page, the new text last and once",
            )
            assert list(conversation._rows) == [w.row.id for w in conversation.query(MessageRow)]


async def _export(pilot, app, path: Path, first: str, second: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen), "export dialog")
    app.screen.query_one("#path", Input).value = str(path)
    app.screen.query_one("#passphrase", Input).value = first
    app.screen.query_one("#passphrase2", Input).value = second
    await pilot.click("#export")


async def _open_import(pilot, app, path: Path, passphrase: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("ctrl+l")
    await wait_until(pilot, lambda: isinstance(app.screen, ImportScreen), "import dialog")
    app.screen.query_one("#path", Input).value = str(path)
    app.screen.query_one("#passphrase", Input).value = passphrase


async def test_export_then_import_round_trip(tmp_path: Path) -> None:
    alice = make_profile(tmp_path / "a")
    other = make_profile(tmp_path / "b")
    key_file = tmp_path / "alice.key"
    with app_session(data_dir=tmp_path / "a", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await _export(pilot, app, key_file, "correct horse", "correct horse battery")
            await pilot.pause()
            assert "differ" in str(app.screen.query_one("#error").render())
            app.screen.query_one("#passphrase2", Input).value = "correct horse"
            # A button ignores clicks during its press effect (while it has the -active class).
            export = app.screen.query_one("#export", Button)
            await wait_until(pilot, lambda: not export.has_class("-active"), "the press effect")
            await pilot.click("#export")
            await wait_until(pilot, lambda: not isinstance(app.screen, ExportScreen), "export")
            assert key_file.exists()
            # The dialog's result reaches the app's callback after the dialog is gone.
            await wait_until(
                pilot,
                lambda: any(str(key_file) in n.message for n in app._notifications),
                "the exported notice",
            )
    assert read_identity_file(key_file, b"correct horse").address == alice.address

    identity_file = profile_paths("default", tmp_path / "b").identity_file
    with app_session(data_dir=tmp_path / "b", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await _open_import(pilot, app, key_file, "correct horse")
            await pilot.click("#import")
            await pilot.pause()
            assert "tick the box" in str(app.screen.query_one("#error").render())
            app.screen.query_one("#confirm", Checkbox).value = True
            # A button ignores clicks during its press effect (while it has the -active class).
            button = app.screen.query_one("#import", Button)
            await wait_until(pilot, lambda: not button.has_class("-active"), "the press effect")
            await pilot.click("#import")
            await wait_until(pilot, lambda: not isinstance(app.screen, ImportScreen), "import")
            await wait_until(
                pilot,
                lambda: any("Restart" in (n.title or "") for n in app._notifications),
                "the imported notice",
            )
            assert any("stays protected" in n.message for n in app._notifications)
    # The file was protected, so the imported identity keeps its passphrase.
    assert read_identity_file(identity_file, b"correct horse").address == alice.address
    backups = list(identity_file.parent.glob(identity_file.name + ".bak-*"))
    assert len(backups) == 1 and read_identity_file(backups[0]).address == other.address


async def test_import_with_a_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    make_profile(tmp_path / "a")
    mine = make_profile(tmp_path / "b")
    key_file = tmp_path / "alice.key"
    with app_session(data_dir=tmp_path / "a", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await _export(pilot, app, key_file, "correct horse", "correct horse")
            await wait_until(pilot, key_file.exists, "export")
    identity_file = profile_paths("default", tmp_path / "b").identity_file
    with app_session(data_dir=tmp_path / "b", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await _open_import(pilot, app, key_file, "wrong horse")
            app.screen.query_one("#confirm", Checkbox).value = True
            await pilot.click("#import")
            error = app.screen.query_one("#error")
            await wait_until(pilot, lambda: "wrong passphrase" in str(error.render()), "error")
            assert isinstance(app.screen, ImportScreen)
    assert read_identity_file(identity_file).address == mine.address
    assert not list(identity_file.parent.glob(identity_file.name + ".bak-*"))


async def test_every_action_is_in_the_command_palette(tmp_path: Path) -> None:
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE):
            commands = list(app.get_system_commands(app.screen))
            assert all(c.title and c.help for c in commands)
            # Every action the app declares: its own action_ methods, its key bindings and the
            # contact list's bindings that call app actions.
            declared = {
                name[len("action_") :] for name in vars(type(app)) if name.startswith("action_")
            }
            for binding in app.BINDINGS:
                assert isinstance(binding, Binding) and binding.description
                declared.add(binding.action)
            for binding in ContactList.BINDINGS:
                assert isinstance(binding, Binding)
                if binding.action.startswith("app."):
                    declared.add(binding.action.removeprefix("app."))
            # Escape only moves the focus (or closes the panel): navigation, not a command.
            declared.discard("focus_contacts")
            assert {"add_contact", "import_identity", "quit", "remove_contact"} <= declared
            for action in sorted(declared):
                method = getattr(app, f"action_{action}")
                assert any(c.callback == method for c in commands), f"{action} not in the palette"


async def test_demo_echo_answers(tmp_path: Path) -> None:
    with app_session(demo=True, data_dir=tmp_path) as app:
        async with app.run_test(size=SIZE) as pilot:
            echo = app.profile.db.contact_by_name("echo")
            assert echo is not None
            contacts = app.query_one(ContactList)
            await wait_until(
                pilot, lambda: (e := contacts.entry(echo.address)) and e.last_time, "greeting"
            )
            contacts.select_address(echo.address)
            await pilot.press("enter")
            await pilot.press(*"ping", "enter")
            await wait_until(
                pilot,
                lambda: any(r.text == "echo: ping" for r in app.profile.db.history(echo.address)),
                "the echo",
            )
            assert all(h[0] == "127.0.0.1" for s in app.demo_network.services if (h := s.bound))  # type: ignore[union-attr]


async def test_a_session_reset_notice_is_shown_in_the_conversation(tmp_path: Path) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    _add_contact(tmp_path, "bob", bob)
    with profile_db(tmp_path) as db:
        db.add_outgoing(b"t" * 16, bob.key, bob.address, "before", time.time())
        db.add_notice(bob.key, bob.address, SESSION_RESET_NOTICE, time.time())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: len(app.query(MessageRow)) == 2, "the history")
            rows = list(app.query(MessageRow))
            assert [r.has_class("-notice") for r in rows] == [False, True]
            assert rows[1].row.text == SESSION_RESET_NOTICE
            assert conversation.peer is not None and conversation.peer.name == "bob"


async def test_add_contact_from_a_card_with_hints_joins_through_them(tmp_path: Path) -> None:
    """A node that knows nobody is in the network once a contact's card names their node."""
    make_profile(tmp_path)
    dave = NodeService(
        Identity.generate(), Database.open(tmp_path / "dave.db"), listen=("127.0.0.1", 0)
    )
    try:
        bound = await dave.start()
        card = encode_hints_card(dave.identity, [bound], int(time.time()))
        with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("ctrl+n", *"Dave", "tab")
                app.screen.query_one("#card", Input).value = card
                await pilot.pause()
                assert "valid card" in str(app.screen.query_one("#card-status").render())
                await pilot.press("enter")
                await wait_until(
                    pilot, lambda: not isinstance(app.screen, AddContactScreen), "close"
                )
                assert app.profile.db.contact_hints() == [
                    (dave.identity.key, "127.0.0.1", bound[1])
                ]
                await wait_on_node(
                    pilot,
                    app,
                    lambda s: dave.identity.address in {p.address for p in s.node.peers()},
                    "the join",
                )
    finally:
        await dave.stop()
        dave.db.close()
