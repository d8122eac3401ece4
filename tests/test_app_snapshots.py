"""Snapshot tests of every view at 80x24, 100x30 and 160x45: one per layout.

Made deterministic: fixed-seed identities, fixed message times (in 2024, shown in
UTC), no peers, and the status panel fed a fixed snapshot instead of the node's
live one (its port and counters change on every run).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static, TextArea

from comm_tui.app import CommApp, app_session
from comm_tui.app import app as app_module
from comm_tui.app.demo import demo_identity
from comm_tui.app.screens.custody import CustodyScreen
from comm_tui.app.screens.first_run import NicknameScreen, OwnNameScreen
from comm_tui.app.screens.help import HelpScreen
from comm_tui.app.status import PeerLine, StatusSnapshot
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.conversation import MessageLog
from comm_tui.app.widgets.status_panel import StatusPanel
from comm_tui.crypto.card import encode_card
from comm_tui.protocol.relay_store import RelayUsage
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.app_helpers import make_profile, wait_until

SENT_AT = 1_709_650_800.0  # 2024-03-05 15:00 UTC
# The three layouts: one pane at a time is below 80, so 80x24 is the medium one at
# its narrowest; 100x30 medium; 160x45 wide (see CommApp.HORIZONTAL_BREAKPOINTS).
SIZES = [(80, 24), (100, 30), (160, 45)]


def _fixed_snapshot() -> StatusSnapshot:
    me = demo_identity("you")
    return StatusSnapshot(
        now=SENT_AT,
        address=me.address,
        card=encode_card(me.public),
        listen="127.0.0.1:47000",
        state="online",
        table_size=2,
        bucket_fill=((159, 1), (158, 0), (157, 1)),
        peers=(
            PeerLine(demo_identity("bob").address, "127.0.0.1:47001", SENT_AT - 3),
            PeerLine(demo_identity("carol").address, "127.0.0.1:47002", SENT_AT - 65),
        ),
        stored_now=1,
        stored_bytes=412,
        stored_total=3,
        relayed=5,
        acks_seen=4,
        expired=0,
        rejected=1,
        rejected_by_reason=(("malformed", 1),),
        datagrams_in=120,
        datagrams_out=98,
        bytes_in=31_000,
        bytes_out=27_500,
        outbox=0,
        relay_usage=RelayUsage(
            relaying=True,
            bytes_held=3_300_000,
            bytes_cap=64 * 1024 * 1024,
            items_held=2_480,
            items_cap=50_000,
            days_cap=7.0,
            sent_bytes=0,
            bandwidth_cap=256 * 1024,
            deferred=2,
            origins=(("198.18.3.0/24", 1_320_000), ("198.18.7.0/24", 990_000)),
            refused=(("bytes", 0), ("items", 0), ("days", 1), ("relay off", 0)),
        ),
    )


@contextlib.contextmanager
def _open_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, ascii: bool = False
) -> Iterator[CommApp]:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setattr(app_module, "take_snapshot", lambda service, now: _fixed_snapshot())
    time.tzset()
    make_profile(tmp_path, demo_identity("you"), nickname="ada")
    bob, carol, stranger = (demo_identity(n) for n in ("bob", "carol", "stranger"))
    with Database.open(profile_paths("default", tmp_path).database) as db:
        db.add_contact("bob", bob.key, bob.address, SENT_AT)
        db.add_contact("carol", carol.key, carol.address, SENT_AT - 60)
        db.add_incoming(b"1" * 16, bob.key, bob.address, "Are we still on for Friday?", 1, SENT_AT)
        out = db.add_outgoing(b"2" * 16, bob.key, bob.address, "Yes! 7pm.", SENT_AT + 60)
        db.set_outgoing_state(out.text_id, "delivered", SENT_AT + 61)
        long = "A long message that wraps over several lines of the conversation pane. " * 3
        db.add_incoming(
            b"3" * 16, bob.key, bob.address, long + "\nAnd a second line.", 2, SENT_AT + 120
        )
        db.add_incoming(b"4" * 16, stranger.key, stranger.address, "hello?", 3, SENT_AT - 30)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as opened:
        opened.ascii = ascii  # not detected: the snapshots must not depend on the locale
        yield opened
    time.tzset()


@pytest.fixture
def comm_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CommApp]:
    with _open_app(tmp_path, monkeypatch) as opened:
        yield opened


async def _settled(pilot: Pilot[Any]) -> CommApp:
    comm = pilot.app
    assert isinstance(comm, CommApp)
    await wait_until(pilot, lambda: comm.node_bound is not None, "the node")
    # The node thread takes the (fixed) snapshot; the panel shows it once it is back.
    await wait_until(pilot, lambda: comm.status is not None, "the status snapshot")
    await pilot.pause()
    return comm


async def _main(pilot: Pilot[Any]) -> None:
    await _settled(pilot)


async def _open_first_conversation(pilot: Pilot[Any], comm: CommApp) -> None:
    await pilot.press("enter")
    message_input = comm.query_one(Composer)
    # Enter mounts the conversation's rows, then moves the focus to its input.
    await wait_until(pilot, lambda: comm.focused is message_input, "the conversation to open")


async def _conversation(pilot: Pilot[Any]) -> None:
    comm = await _settled(pilot)
    await _open_first_conversation(pilot, comm)


async def _status(pilot: Pilot[Any]) -> None:
    comm = await _settled(pilot)
    await _open_first_conversation(pilot, comm)
    panel = comm.query_one(StatusPanel)
    if not panel.display:
        await pilot.press("ctrl+s")
    node = panel.query_one("#status-node", Static)
    await wait_until(
        pilot,
        lambda: panel.display and "nodes" in str(node.render()),
        "the status panel to show its figures",
    )


async def _add_contact(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("ctrl+n", *"Grace", "tab")
    card = "comm1ahjwy2cjkyord43j7nsvwk5fbva7jotnoyrvulkgdfsbcocjhg3ubimio2dq"
    pilot.app.screen.query_one("#card", Input).value = card[:30] + "x" + card[31:]
    await pilot.pause()


async def _rename(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("f2")
    await pilot.pause()


async def _rename_yourself(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("alt+n")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, OwnNameScreen), "the dialog")


async def _remove(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("delete")
    await pilot.pause()


async def _card(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("ctrl+g")
    await pilot.pause()


async def _export(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("ctrl+o")
    await pilot.pause()
    pilot.app.screen.query_one("#path", Input).value = "~/comm-tui-ada.key"
    await pilot.pause()


async def _import(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("ctrl+l")
    await pilot.pause()


async def _first_run(pilot: Pilot[Any]) -> None:
    comm = await _settled(pilot)
    comm.push_screen(NicknameScreen(demo_identity("you").address.hex()))
    await pilot.pause()


async def _help(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("f1")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help")


async def _search(pilot: Pilot[Any]) -> None:
    await _settled(pilot)
    await pilot.press("ctrl+f", *"friday")
    results = pilot.app.screen.query_one("#search-results", OptionList)
    await wait_until(pilot, lambda: results.option_count == 1, "the result")


async def _custody(pilot: Pilot[Any]) -> None:
    comm = await _settled(pilot)
    await _open_first_conversation(pilot, comm)
    comm.query_one(MessageLog).focus()
    await pilot.press("up", "up", "enter")  # "Yes! 7pm.", delivered
    await wait_until(pilot, lambda: isinstance(comm.screen, CustodyScreen), "the custody")


VIEWS: dict[str, Callable[[Pilot[Any]], Awaitable[None]]] = {
    "main": _main,
    "conversation": _conversation,
    "status": _status,
    "add-contact": _add_contact,
    "rename": _rename,
    "rename-yourself": _rename_yourself,
    "remove": _remove,
    "card": _card,
    "export": _export,
    "import": _import,
    "first-run": _first_run,
    "help": _help,
    "search": _search,
    "custody": _custody,
}


def _steady(view: Callable[[Pilot[Any]], Awaitable[None]]) -> Callable[[Pilot[Any]], Any]:
    """``view``, then every input's cursor held still (the composer's too): its blink would
    show in half the runs."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await view(pilot)
        for screen in pilot.app.screen_stack:
            for text_input in screen.query(Input):
                text_input.cursor_blink = False
            for text_area in screen.query(TextArea):
                text_area.cursor_blink = False
        # No condition to wait on here: one pause lets the screen render the state reached.
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("view", list(VIEWS))
def test_view(comm_app: CommApp, snap_compare: Any, view: str, size: tuple[int, int]) -> None:
    assert snap_compare(comm_app, terminal_size=size, run_before=_steady(VIEWS[view]))


def test_conversation_without_colour_or_unicode_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snap_compare: Any
) -> None:
    """NO_COLOR and an ASCII-only terminal: focus, marks and requests still legible."""
    monkeypatch.setenv("NO_COLOR", "1")
    with _open_app(tmp_path, monkeypatch, ascii=True) as opened:
        assert opened.no_color
        assert snap_compare(opened, terminal_size=(80, 24), run_before=_steady(_conversation))
