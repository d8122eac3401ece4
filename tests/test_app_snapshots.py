"""Snapshot tests of the main screen and the dialogs, made deterministic.

Fixed-seed identities, fixed message times (in 2024, shown in UTC), no peers and the
status panel hidden: its port and traffic counters are live, so it has no snapshot
here (the screenshot script shows it instead).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from comm_tui.app import CommApp, app_session
from comm_tui.app.demo import demo_identity
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.app_helpers import SIZE, make_profile, wait_until

SENT_AT = 1_709_650_800.0  # 2024-03-05 15:00 UTC


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CommApp]:
    monkeypatch.setenv("TZ", "UTC")
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
        yield opened
    time.tzset()


async def _settled(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CommApp)
    await wait_until(pilot, lambda: app.service is not None, "the node")
    app.action_toggle_status()
    app._tick()
    await pilot.pause()


def test_main_screen(app: CommApp, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_add_contact_dialog_with_a_typo(app: CommApp, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("ctrl+n", *"Grace", "tab")
        card = "comm1ahjwy2cjkyord43j7nsvwk5fbva7jotnoyrvulkgdfsbcocjhg3ubimio2dq"
        pilot.app.screen.query_one("#card", Input).value = card[:30] + "x" + card[31:]
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_export_dialog(app: CommApp, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        pilot.app.screen.query_one("#path", Input).value = "~/comm-tui-ada.key"
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_card_dialog_with_qr_code(app: CommApp, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("ctrl+g")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
