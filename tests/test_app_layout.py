"""The layout at every width (issue #13): resizing loses nothing, narrow terminals work.

Below 80 columns one pane is shown at a time; below 140 the status panel opens over
the conversation; from 140 it sits beside it, as the user last chose.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from textual.geometry import Region

from comm_tui.app import CommApp, app_session
from comm_tui.app.app import WIDE_FROM
from comm_tui.app.format import ascii_only
from comm_tui.app.status import offline_snapshot
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageLog, MessageRow
from comm_tui.app.widgets.status_panel import StatusPanel, reachability_rows
from comm_tui.crypto.card import encode_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import FAST_KDF_ENV
from tests.app_helpers import make_profile, profile_db, wait_until

pytestmark = pytest.mark.timeout(90)
MIN_CONVERSATION_COLUMNS = 40


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")


def _profile_with_bob(data_dir: Path, messages: int = 5) -> Identity:
    make_profile(data_dir)
    bob = Identity.generate()
    with profile_db(data_dir) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
        for i in range(messages):
            db.add_incoming(i.to_bytes(16, "big"), bob.key, bob.address, f"m{i}", i, time.time())
    return bob


def _shown(app: CommApp, widget_id: str) -> Region | None:
    widget = app.query_one(widget_id)
    return widget.region if widget.display and widget.region.area else None


def _assert_no_overlap(regions: list[Region]) -> None:
    for i, first in enumerate(regions):
        for second in regions[i + 1 :]:
            assert not first.overlaps(second), (first, second)


async def test_resizing_with_a_conversation_open_loses_and_overlaps_nothing(
    tmp_path: Path,
) -> None:
    _profile_with_bob(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.press("enter", *"half a thought")
            conversation = app.query_one(ConversationView)
            message_input = conversation.query_one(Composer)
            await wait_until(pilot, lambda: len(conversation.query(MessageRow)) == 5, "history")
            for width, height in [(160, 45), (100, 30), (80, 24), (60, 20), (120, 40), (160, 45)]:
                await pilot.resize_terminal(width, height)
                screen = Region(0, 0, width, height)
                log = conversation.query_one(MessageLog)

                def laid_out(screen: Region = screen, log: MessageLog = log) -> bool:
                    """The new size reached the layout: the composer and newest row in view,
                    the panes this width shows laid out (the list comes back a refresh after
                    the conversation widens, from 60 columns to 120)."""
                    rows = list(conversation.query(MessageRow))
                    width = screen.width
                    return (
                        tuple(app.size) == screen.size
                        and screen.contains_region(message_input.region)
                        and bool(rows)
                        and log.content_region.contains_region(rows[-1].region)
                        and (_shown(app, "#contacts") is not None) == (width >= 80)
                        and (_shown(app, "#status") is not None) == (width >= WIDE_FROM)
                    )

                # The layout follows a resize over a few refreshes: wait for it, bounded.
                await wait_until(pilot, laid_out, f"the layout at {width}x{height}")
                assert message_input.text == "half a thought"
                assert app.focused is message_input
                assert screen.contains_region(message_input.region)
                assert len(conversation.query(MessageRow)) == 5
                last = list(conversation.query(MessageRow))[-1]
                assert log.content_region.contains_region(last.region), "newest not in view"
                assert conversation.region.width >= MIN_CONVERSATION_COLUMNS
                panes = [_shown(app, i) for i in ("#contacts", "#conversation", "#status")]
                assert (panes[2] is not None) == (width >= WIDE_FROM)
                assert (panes[0] is not None) == (width >= 80)
                _assert_no_overlap([p for p in panes if p is not None])
                inner = [_shown(app, i) for i in ("#conversation-title", "#message-log")]
                _assert_no_overlap([r for r in [*inner, message_input.region] if r is not None])


async def test_a_60_column_terminal_shows_one_pane_at_a_time(tmp_path: Path) -> None:
    bob = _profile_with_bob(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=(60, 20)) as pilot:
            contacts = app.query_one(ContactList)
            assert contacts.region.width == 60 and not app.query_one(ConversationView).display
            await pilot.click(ContactList, offset=(3, 1))  # the mouse picks bob
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: conversation.peer_address == bob.address, "open")
            await pilot.pause()
            assert not contacts.display and conversation.region.width == 60
            await pilot.press(*"hi", "ctrl+s")
            panel = app.query_one(StatusPanel)
            assert panel.display and panel.region.width == 60 and app.focused is panel
            await pilot.press("escape")  # closes the panel first, back to the text
            assert not panel.display
            assert conversation.query_one(Composer).text == "hi"
            await pilot.press("escape")
            await pilot.pause()
            assert contacts.display and not conversation.display
            assert app.focused is contacts


async def test_status_panel_choice_in_a_wide_terminal_is_remembered(tmp_path: Path) -> None:
    make_profile(tmp_path)
    for size, shown_at_start, press in [((160, 45), True, True), ((160, 45), False, False)]:
        with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
            async with app.run_test(size=size) as pilot:
                panel = app.query_one(StatusPanel)
                assert panel.display == shown_at_start
                if press:
                    await pilot.press("ctrl+s")
                    assert not panel.display
                await pilot.resize_terminal(100, 30)  # narrower: it starts hidden anyway
                await pilot.pause()
                assert not panel.display


async def test_ascii_terminal_gets_ascii_marks_and_qr_code(tmp_path: Path) -> None:
    bob = _profile_with_bob(tmp_path, messages=0)
    with profile_db(tmp_path) as db:
        out = db.add_outgoing(b"o" * 16, bob.key, bob.address, "sent ok", time.time())
        db.set_outgoing_state(out.text_id, "delivered", time.time())
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        app.ascii = True
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: conversation.query(MessageRow), "the message")
            meta = str(conversation.query(MessageRow).first().query_one(".meta").render())
            assert meta.endswith(" vv")
            await pilot.press("ctrl+g")
            await pilot.pause()
            qr = str(app.screen.query_one("#card-qr").render())
            assert "##" in qr and qr.isascii()


def test_ascii_is_chosen_by_env_or_detected() -> None:
    assert not ascii_only({}, "utf-8")
    assert ascii_only({}, "ascii") and ascii_only({}, "latin-1") and ascii_only({}, "nonsense")
    assert ascii_only({"TERM": "linux"}, "UTF-8")
    assert ascii_only({"COMM_TUI_ASCII": "1"}, "utf-8")
    assert not ascii_only({"COMM_TUI_ASCII": "0", "TERM": "linux"}, "ascii")
    # The profile's setting, between the environment and detection.
    assert ascii_only({}, "utf-8", configured=True)
    assert not ascii_only({"TERM": "linux"}, "ascii", configured=False)
    assert not ascii_only({"COMM_TUI_ASCII": "0"}, "utf-8", configured=True)


def test_the_status_panel_says_how_others_reach_us() -> None:
    identity = Identity.generate()
    base = offline_snapshot(identity, encode_card(identity.public), 0.0)
    rows = dict(reachability_rows(base))
    assert rows == {
        "reachable": "checking…",
        "seen as": "unknown",
        "mode": "relay for others",
        "port mapping": "none",
    }
    natted = replace(
        base,
        reachability="cone",
        public_endpoint="198.18.0.9:40000",
        client_mode=True,
        keepalive_s=22.5,
        port_mapping="udp 198.18.0.9:7400 via PCP, 7200 s",
        punched=2,
    )
    rows = dict(reachability_rows(natted))
    assert rows["reachable"] == "behind a NAT that keeps mappings"
    assert rows["mode"] == "client: keep-alive every 22 s"
    assert rows["seen as"] == "198.18.0.9:40000"
    assert rows["port mapping"] == "udp 198.18.0.9:7400 via PCP, 7200 s"
    assert rows["direct"] == "2 contacts through a punched hole"
    local = dict(reachability_rows(replace(base, listen="127.0.0.1:7400")))
    assert local["reachable"] == "from this machine only (loopback)"
