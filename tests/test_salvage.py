"""``Database.salvage_from``'s error branches, on real SQLite files made to fail each way.

``comm-tui repair`` (tests/test_repair.py) runs it end to end on one damaged profile;
here each way a damaged copy can fail is made on purpose and what is copied, counted
and reported is pinned: a file that cannot be opened, one that is not a database, a
table the file lacks, a page that breaks a table's scan half-way, and rows this
database refuses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from comm_tui.store.db import Database
from comm_tui.store.repair import SALVAGED_TABLES

PAGE = 4096
PEER_ROWS = 2000


def _source(path: Path, script: str) -> Path:
    """A plain SQLite file made by ``script``: the damaged copy salvage reads."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA page_size = {PAGE}")
        conn.executescript(script)
    conn.close()
    return path


def test_a_file_that_cannot_be_opened_salvages_nothing(tmp_path: Path) -> None:
    with Database.open(tmp_path / "fresh.db") as fresh:
        copied, unreadable = fresh.salvage_from(tmp_path / "gone.db", SALVAGED_TABLES)
        assert (copied, unreadable) == ({}, list(SALVAGED_TABLES))
        assert fresh.contacts() == []


def test_a_file_that_is_not_a_database_has_every_table_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\xa5" * (4 * PAGE))
    with Database.open(tmp_path / "fresh.db") as fresh:
        copied, unreadable = fresh.salvage_from(garbage, ("contacts", "meta"))
    assert (copied, unreadable) == ({}, ["contacts", "meta"])
    assert garbage.read_bytes() == b"\xa5" * (4 * PAGE)  # opened read-only


def test_a_table_the_file_lacks_copies_nothing_and_is_not_unreadable(tmp_path: Path) -> None:
    """An older schema: meta's rows come over, a later table is simply absent."""
    older = _source(
        tmp_path / "older.db",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('a', '1'), ('b', '2');",
    )
    with Database.open(tmp_path / "fresh.db") as fresh:
        copied, unreadable = fresh.salvage_from(older, ("claimed_names", "meta"))
        assert (copied, unreadable) == ({"claimed_names": 0, "meta": 2}, [])
        assert (fresh.get_meta("a"), fresh.get_meta("b")) == ("1", "2")


def test_a_bad_page_ends_one_table_keeping_its_rows_before_it_and_the_next_tables(
    tmp_path: Path,
) -> None:
    """The scan stops at the garbage page; what came before it and the next table stay."""
    # meta first, in its own root page; then peers (no index, so every page after the
    # first few is one of its leaves, in the order they were filled).
    rows = ",".join(f"(x'{i:064x}', '{'h' * 300}{i}', {i}, {i}.5)" for i in range(PEER_ROWS))
    path = _source(
        tmp_path / "damaged.db",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('kept', 'yes');"
        "CREATE TABLE peers (key BLOB, host TEXT, port INTEGER, last_seen REAL);"
        f"INSERT INTO peers VALUES {rows};",
    )
    data = bytearray(path.read_bytes())
    middle = (len(data) // PAGE // 2) * PAGE
    data[middle : middle + PAGE] = b"\xa5" * PAGE
    path.write_bytes(bytes(data))

    with Database.open(tmp_path / "fresh.db") as fresh:
        copied, unreadable = fresh.salvage_from(path, ("peers", "meta"))
        assert unreadable == ["peers"]
        assert 0 < copied["peers"] < PEER_ROWS
        assert copied["meta"] == 1 and fresh.get_meta("kept") == "yes"
        peers = fresh.load_peers(limit=PEER_ROWS)
    # The rows before the bad page, each whole, and the count says how many.
    assert len(peers) == copied["peers"]
    for key, host, port, last_seen in peers:
        i = int.from_bytes(key, "big")
        assert (host, port, last_seen) == ("h" * 300 + str(i), i, i + 0.5)


def test_rows_this_database_refuses_are_neither_copied_nor_counted(tmp_path: Path) -> None:
    """A duplicate and a failed CHECK (skipped by OR IGNORE), a non-integer id (an error)."""
    path = _source(
        tmp_path / "damaged.db",
        "CREATE TABLE contacts (name TEXT, folded TEXT, key BLOB, address BLOB, added_at REAL);"
        f"INSERT INTO contacts VALUES ('bob', 'bob', x'{'11' * 32}', x'{'22' * 20}', 1.0),"
        # the same name again, a key of the wrong length, and then a good row
        f" ('Bob', 'bob', x'{'33' * 32}', x'{'44' * 20}', 2.0),"
        f" ('eve', 'eve', x'{'55' * 31}', x'{'66' * 20}', 3.0),"
        f" ('carol', 'carol', x'{'77' * 32}', x'{'88' * 20}', 4.0);"
        "CREATE TABLE meta (key, value);"
        "INSERT INTO meta VALUES ('a', '1'), ('b', NULL), ('c', '3');"
        "CREATE TABLE messages (id, text_id, peer_address, direction, text, state,"
        " created_at, updated_at);"
        f"INSERT INTO messages VALUES ('not a number', x'01', x'{'22' * 20}', 'in', 'lost',"
        " 'received', 1.0, 1.0),"
        f" (7, x'02', x'{'22' * 20}', 'in', 'kept', 'received', 2.0, 2.0);",
    )
    with Database.open(tmp_path / "fresh.db") as fresh:
        copied, unreadable = fresh.salvage_from(path, ("contacts", "meta", "messages"))
        assert unreadable == []
        assert copied == {"contacts": 2, "meta": 2, "messages": 1}
        assert sorted(c.name for c in fresh.contacts()) == ["bob", "carol"]
        assert (fresh.get_meta("a"), fresh.get_meta("b"), fresh.get_meta("c")) == ("1", None, "3")
        [kept] = fresh.history(b"\x22" * 20)
        assert kept.text == "kept"
