"""Where is my message? The custody view (issue 12, item 1): core, CLI and app.

The view is computed from the sender's own relay-store entries; these tests check it
against what really happened to a text on a small network (tests/wire.py), in the
database that ``comm-tui history --json`` reads, and on the app's custody screen.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from comm_tui.app import app_session
from comm_tui.app.messages import NodeEvent
from comm_tui.app.screens.custody import CustodyScreen, custody_lines
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.conversation import ConversationView, MessageLog, MessageRow
from comm_tui.cli import main
from comm_tui.crypto.identity import Identity
from comm_tui.net.service import OutgoingUpdated
from comm_tui.protocol.custody import Custody, PartCustody, custody_json, custody_of
from comm_tui.protocol.letters import CHUNK_BYTES
from comm_tui.protocol.node import NodeConfig
from comm_tui.protocol.relay_store import Entry
from comm_tui.store.db import Database, HistoryRow
from comm_tui.store.paths import profile_paths
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until
from tests.wire import T0, Wire


def _trio(wire: Wire) -> tuple[object, ...]:
    config = NodeConfig(backoff_base_s=1.0, backoff_max_s=8.0, max_relay_attempts=6)
    a, r, b = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, r)
    wire.connect(b, r)
    wire.offline.add(wire.endpoint(b))
    return a, r, b


def test_custody_follows_a_text_from_the_outbox_to_delivery() -> None:
    wire = Wire()
    a, r, b = _trio(wire)
    text = "x" * (CHUNK_BYTES + 10)  # two parts
    text_id = a.send_text(b.identity.public, text, T0)  # type: ignore[attr-defined]
    custody = a.custody(text_id)  # type: ignore[attr-defined]
    assert custody is not None and custody.parts == 2 and custody.acknowledged == 0
    assert all(p.holders == 0 and p.held_since is None for p in custody.pending)
    wire.pump(T0 + 1)
    custody = a.custody(text_id)  # type: ignore[attr-defined]
    assert custody is not None
    assert [p.part for p in custody.pending] == [0, 1]
    # R confirmed holding both parts (its receipt), at the time it did.
    assert all(p.holders == 1 and p.held_since == T0 + 1 for p in custody.pending)
    assert all(p.attempts >= 1 for p in custody.pending)
    assert all(p.next_retry is not None and p.next_retry > T0 for p in custody.pending)
    assert custody.expires_at > T0 + 3600
    # B comes online and acknowledges: the text leaves the outbox.
    wire.offline.discard(wire.endpoint(b))
    wire.connect(b, r, now=T0 + 2)
    wire.run(T0 + 2, T0 + 60, step=1.0)
    assert a.custody(text_id) is None  # type: ignore[attr-defined]
    assert a.custody(b"\x00" * 16) is None  # type: ignore[attr-defined]


def test_custody_survives_a_restart_of_the_store() -> None:
    """held_since is saved with the entry (StoreEntry.first_held_at)."""
    wire = Wire()
    a, _, b = _trio(wire)
    text_id = a.send_text(b.identity.public, "hello", T0)  # type: ignore[attr-defined]
    wire.pump(T0 + 5)
    saved = [Entry.deserialize(blob) for blob in wire.persisted[wire.endpoint(a)].values()]
    custody = custody_of(saved, text_id)
    assert custody is not None
    assert custody == a.custody(text_id)  # type: ignore[attr-defined]
    assert custody.pending[0].held_since == T0 + 5


def _row(state: str, direction: str = "out") -> HistoryRow:
    return HistoryRow(1, b"t" * 16, b"p" * 20, None, direction, "hi", state, 1000, T0, T0 + 9, True)


def test_custody_lines_say_where_each_part_is() -> None:
    custody = Custody(
        b"t" * 16,
        parts=3,
        expires_at=T0 + 7200,
        pending=(
            PartCustody(0, holders=3, held_since=T0 - 120, attempts=2, next_retry=T0 + 30),
            PartCustody(2, holders=0, held_since=None, attempts=1, next_retry=None),
        ),
    )
    lines = custody_lines(_row("sent"), custody, T0, node_running=True)
    assert lines[1].startswith("1 of 3 parts acknowledged. The network drops it in 2h")
    assert lines[2] == "Part 1: held by 3 nodes since 2m ago; sent 2 times; next try in 30s."
    assert lines[3] == "Part 3: held by no node yet; sent 1 time; no retry scheduled."
    assert "not running" in custody_lines(_row("queued"), None, T0, node_running=False)[1]
    assert "Delivered" in custody_lines(_row("delivered"), None, T0, node_running=True)[1]
    read = replace(_row("delivered"), read_at=T0 + 20)
    read_lines = custody_lines(read, None, T0, node_running=True)
    assert "read receipt" in read_lines[1] and "Delivered" in read_lines[2]
    assert not any(
        "Read" in line for line in custody_lines(_row("delivered"), None, T0, node_running=True)
    )
    assert "press r" in custody_lines(_row("expired"), None, T0, node_running=True)[1].lower()
    incoming = custody_lines(_row("received", "in"), None, T0, node_running=True)
    assert incoming[0].startswith("Received") and "acknowledgement" in incoming[-1]
    assert custody_json(custody) == {
        "parts": 3,
        "acknowledged_parts": 1,
        "expires_at": T0 + 7200,
        "pending": [
            {"part": 0, "holders": 3, "held_since": T0 - 120, "attempts": 2, "next_retry": T0 + 30},
            {"part": 2, "holders": 0, "held_since": None, "attempts": 1, "next_retry": None},
        ],
    }


def test_history_json_carries_the_custody_of_undelivered_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = Wire()
    a, _, b = _trio(wire)
    text_id = a.send_text(b.identity.public, "where are you", T0)  # type: ignore[attr-defined]
    wire.pump(T0 + 5)
    make_profile(tmp_path)
    now = time.time()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", b.identity.key, b.identity.address, now)  # type: ignore[attr-defined]
        db.add_outgoing(text_id, b.identity.key, b.identity.address, "where are you", now)  # type: ignore[attr-defined]
        db.set_outgoing_state(text_id, "sent", now)
        db.add_outgoing(b"d" * 16, b.identity.key, b.identity.address, "old", now)  # type: ignore[attr-defined]
        db.set_outgoing_state(b"d" * 16, "delivered", now)
        blobs = wire.persisted[wire.endpoint(a)]
        # The store's saved entries, as the service saves them (expiry in ms).
        db.apply_store_changes(
            {key: (blob, Entry.deserialize(blob).expires_ms) for key, blob in blobs.items()}, []
        )
    assert main(["--data-dir", str(tmp_path), "history", "bob", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    by_text = {i["text"]: i for i in items}
    assert by_text["old"]["custody"] is None
    custody = by_text["where are you"]["custody"]
    assert custody["parts"] == 1 and custody["acknowledged_parts"] == 0
    assert custody["pending"][0]["holders"] == 1
    assert custody["pending"][0]["held_since"] == T0 + 5


async def test_the_custody_screen_opens_on_a_message_and_an_expired_text_is_resent(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    now = time.time()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, now)
        db.add_outgoing(b"e" * 16, bob.key, bob.address, "lost in the void", now - 10)
    with (
        app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app,
        Database.open(profile_paths("default", tmp_path).database) as db,
    ):
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(pilot, lambda: conversation.query(MessageRow), "the history")
            log = app.query_one(MessageLog)
            log.focus()
            await pilot.press("up", "enter")
            assert isinstance(app.screen, CustodyScreen)
            shown = str(app.screen.query_one("#custody-lines").render())
            assert "not running" not in shown  # the app's node answers
            await pilot.press("escape")
            # Its parts were never stored, so the service settled it as expired at start;
            # announced as a live expiry is, it brings a warning with the resend key.
            [row] = db.history(bob.address)
            assert row.state == "expired"
            app.post_message(NodeEvent(OutgoingUpdated(row)))
            await wait_until(
                pilot, lambda: any("alt+r" in n.message for n in app._notifications), "the warning"
            )
            await pilot.press("alt+r")
            await wait_until(
                pilot,
                lambda: (
                    [r.row.text for r in conversation.query(MessageRow)].count("lost in the void")
                    == 2
                ),
                "the text sent again",
            )
            assert app.query_one(Composer).text == ""
