"""Full-text search over history (issue 12, item 2): the index, the CLI and the app.

The index is SQLite FTS5 over ``messages``, kept in step by triggers inside the same
transactions; queries are the user's words only (never FTS5 syntax).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from comm_tui.app import app_session
from comm_tui.app.screens.search import SearchScreen, marked
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageLog, MessageRow
from comm_tui.cli import main
from comm_tui.crypto.identity import Identity
from comm_tui.store.db import _MIGRATIONS, DEFAULT_HISTORY_PAGE, Database, fts_query
from tests.app_helpers import SIZE, make_profile, profile_db, wait_until


def _db(tmp_path: Path) -> Database:
    return Database.open(tmp_path / "search.db")


def _incoming(db: Database, who: Identity, text: str, when: float = 1.0) -> int:
    row = db.add_incoming(os.urandom(16), who.key, who.address, text, 1, when)
    assert row is not None
    return row.id


def test_the_query_is_words_only() -> None:
    assert fts_query("meet tom") == '"meet" * "tom" *'
    assert fts_query('say "hi"') == '"say" * """hi""" *'
    assert fts_query("   ") is None and fts_query("-- ** ()") is None
    many = " ".join(str(i) for i in range(40))
    assert fts_query(many) == " ".join(f'"{i}" *' for i in range(16))


def test_search_finds_every_word_across_conversations(tmp_path: Path) -> None:
    bob, carol = Identity.generate(), Identity.generate()
    with _db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, 1.0)
        _incoming(db, bob, "Meeting tomorrow at the Café", 1.0)
        _incoming(db, carol, "meeting moved; café closed", 2.0)
        db.add_outgoing(b"o" * 16, bob.key, bob.address, "see you at the cafe", 3.0)
        _incoming(db, bob, "nothing to see here", 4.0)
        db.add_notice(bob.key, bob.address, "session re-established cafe", 5.0)
        hits = db.search("CAFE")  # case and accents folded; notices left out; newest first
        assert [h.row.text for h in hits] == [
            "see you at the cafe",
            "meeting moved; café closed",
            "Meeting tomorrow at the Café",
        ]
        assert {h.contact_name for h in hits} == {"bob", None}
        assert [h.row.text for h in db.search("meet tom")] == ["Meeting tomorrow at the Café"]
        assert [h.row.text for h in db.search("cafe", peer_address=carol.address)] == [
            "meeting moved; café closed"
        ]
        assert db.search("café zebra") == []
        assert len(db.search("cafe", limit=1)) == 1


@pytest.mark.parametrize(
    "hostile",
    ['"', "NEAR(a b)", "text:cafe", "a AND", "OR", "*", "^cafe", "-cafe", "(", "cafe'", "\x00"],
)
def test_fts_syntax_in_a_query_is_a_word_not_an_error(tmp_path: Path, hostile: str) -> None:
    who = Identity.generate()
    with _db(tmp_path) as db:
        _incoming(db, who, "cafe and AND OR text")
        db.search(hostile)  # never raises
    assert [h.row.text for h in Database.open(tmp_path / "search.db").search("and or")] == [
        "cafe and AND OR text"
    ]


def test_the_index_is_written_in_the_same_transaction_as_the_row(tmp_path: Path) -> None:
    who = Identity.generate()
    with _db(tmp_path) as db:
        with pytest.raises(RuntimeError), db.transaction():
            db.add_incoming(os.urandom(16), who.key, who.address, "rolled back", 1, 1.0)
            raise RuntimeError("crash before commit")
        assert db.search("rolled") == []
        _incoming(db, who, "kept")
        integrity = db._conn.execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
        )
        assert integrity is not None  # raises if the index disagrees with the table
        assert [h.row.text for h in db.search("kept")] == ["kept"]


def test_upgrading_an_older_database_indexes_its_history(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:3]:  # up to card_hints, before search
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    who = Identity.generate()
    conn.execute(
        "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
        " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'in', ?, 'received', 1, 1, 1, 0)",
        (os.urandom(16), who.address, who.key, "written before search existed"),
    )
    conn.commit()
    conn.close()
    with Database.open(path) as db:
        assert [h.row.text for h in db.search("before search")] == ["written before search existed"]


def test_search_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_profile(tmp_path)
    bob, stranger = Identity.generate(), Identity.generate()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, 1.0)
        _incoming(db, bob, "the keys are under the mat", time.time())
        _incoming(db, stranger, "keys for sale", time.time())
    base = ["--data-dir", str(tmp_path), "search"]
    assert main([*base, "keys"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert any("from bob: the keys are under the mat" in line for line in out)
    assert any(f"from request {stranger.address.hex()}: keys for sale" in line for line in out)
    assert main([*base, "keys", "--with", "bob", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert (item["text"], item["from"], item["direction"]) == (
        "the keys are under the mat",
        "bob",
        "in",
    )
    assert main([*base, "zebra"]) == 1
    assert "no message has all of: zebra" in capsys.readouterr().err
    assert main([*base, "--", "-- **"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_marking_is_literal_and_case_folded() -> None:
    content = marked("Meet [b]me[/b] at MEETING point", ["meet"])
    assert content.plain == "Meet [b]me[/b] at MEETING point"
    bold = [content.plain[s.start : s.end] for s in content.spans]
    assert bold == ["Meet", "MEET"]


async def test_search_in_the_app_opens_the_result_in_its_conversation(tmp_path: Path) -> None:
    make_profile(tmp_path)
    bob = Identity.generate()
    now = time.time()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, 1.0)
        for i in range(3 * DEFAULT_HISTORY_PAGE):  # the match is far back in history
            text = "the needle" if i == DEFAULT_HISTORY_PAGE else f"hay {i}"
            _incoming(db, bob, text, now - 3 * DEFAULT_HISTORY_PAGE + i)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+f")
            assert isinstance(app.screen, SearchScreen)
            await pilot.press(*"need")
            results = app.screen.query_one("#search-results")
            await wait_until(pilot, lambda: results.option_count == 1, "one result")
            await pilot.press("enter")
            conversation = app.query_one(ConversationView)
            await wait_until(
                pilot, lambda: conversation.peer_address == bob.address, "the conversation"
            )
            log = app.query_one(MessageLog)
            await wait_until(
                pilot,
                lambda: log.selected is not None and log.selected.row.text == "the needle",
                "the result selected",
            )
            texts = [w.row.text for w in conversation.query(MessageRow)]
            assert "the needle" in texts and f"hay {3 * DEFAULT_HISTORY_PAGE - 1}" not in texts
            # Scrolling to the bottom loads the newer messages, up to the newest.
            newest = f"hay {3 * DEFAULT_HISTORY_PAGE - 1}"

            def newest_loaded() -> bool:
                """Each look scrolls to the end again: a page loads per arrival there."""
                log.scroll_end(animate=False, immediate=True)
                return newest in [w.row.text for w in conversation.query(MessageRow)]

            await wait_until(pilot, newest_loaded, "the newer pages to load", step_s=0.05)
            texts = [w.row.text for w in conversation.query(MessageRow)]
            assert texts[-1] == f"hay {3 * DEFAULT_HISTORY_PAGE - 1}"
            ids = [w.row.id for w in conversation.query(MessageRow)]
            assert ids == sorted(set(ids))  # in order, nothing twice


async def test_a_result_opened_from_an_empty_conversation_is_in_view(tmp_path: Path) -> None:
    """An empty (or short) conversation is drawn at the bottom of its view while it follows
    the newest message; the search result opened from there must not inherit that offset
    (it did: the result was mounted below the view, an empty pane)."""
    make_profile(tmp_path)
    bob, carol = Identity.generate(), Identity.generate()
    now = time.time()
    with profile_db(tmp_path) as db:
        db.add_contact("bob", bob.key, bob.address, now - 100)
        db.add_contact("carol", carol.key, carol.address, now - 50)  # first, no messages
        _incoming(db, bob, "the needle", now - 10)
        db.mark_read(bob.address)
    with app_session(data_dir=tmp_path) as app:
        async with app.run_test(size=(80, 24)) as pilot:
            conversation = app.query_one(ConversationView)
            log = app.query_one(MessageLog)
            app.query_one(ContactList).select_address(carol.address)
            await pilot.press("enter")
            await wait_until(pilot, lambda: conversation.peer_address == carol.address, "carol")
            await wait_until(pilot, lambda: log.scroll_y < 0, "carol's empty view, anchored")
            await pilot.press("ctrl+f", *"needle")
            results = app.screen.query_one("#search-results")
            await wait_until(pilot, lambda: results.option_count == 1, "one result")
            await pilot.press("enter")
            await wait_until(pilot, lambda: log.selected is not None, "the result selected")
            assert log.selected is not None
            row = log.selected

            def in_view() -> bool:
                return bool(row.region) and log.content_region.contains_region(row.region)

            await wait_until(pilot, in_view, "the result in view")
            assert 0 <= log.scroll_y <= log.max_scroll_y
