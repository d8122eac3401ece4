"""The profile database: schema, atomic writes, the outbox rules, history paging, concurrency."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import comm_tui
from comm_tui.errors import StorageError, UserError
from comm_tui.store.db import (
    _MIGRATIONS,
    MAX_SAVED_PEERS,
    SCHEMA_VERSION,
    SESSION_RESET_NOTICE,
    WAL_AUTOCHECKPOINT_PAGES,
    Contact,
    Conversation,
    Database,
    OutgoingState,
)

ALICE_KEY, ALICE_ADDR = b"A" * 32, b"a" * 20
BOB_KEY, BOB_ADDR = b"B" * 32, b"b" * 20
CAROL_KEY, CAROL_ADDR = b"C" * 32, b"c" * 20


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "comm.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    with Database.open(db_path) as database:
        yield database


def text_id(n: int) -> bytes:
    return n.to_bytes(32, "big")


# opening


def test_open_creates_a_private_wal_database_at_the_current_schema(db_path: Path) -> None:
    Database.open(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()
    with Database.open(db_path) as db:  # reopening keeps the data and migrates nothing
        assert db.contacts() == []


def test_the_wal_starts_again_after_its_first_pages_so_commits_overwrite_it(
    db_path: Path,
) -> None:
    """``WAL_AUTOCHECKPOINT_PAGES``: once the log holds that many pages a commit
    checkpoints them and the log starts again from its beginning, so commits overwrite old
    frames instead of growing the file (each growth costs the fsync a journalled new size).
    SQLite's default, 1000 pages, let these 300 relay-store commits grow it to 4.1 MB."""
    wal = db_path.with_name(db_path.name + "-wal")
    sizes = []
    with Database.open(db_path) as db:
        page = int(db._all("PRAGMA page_size")[0][0])
        for n in range(300):
            gone = [(n - 40).to_bytes(8, "big")] if n >= 40 else []
            db.apply_store_changes({n.to_bytes(8, "big"): (os.urandom(900), 2**40)}, gone)
            sizes.append(wal.stat().st_size)
        frame = page + 24  # a WAL frame: its header and one page
        assert max(sizes) <= 32 + (WAL_AUTOCHECKPOINT_PAGES + 10) * frame
        assert sizes[-1] == sizes[150]  # the log's file no longer grows
        assert [bytes(row[0]) for row in db._all("SELECT key FROM relay_items ORDER BY key")] == [
            n.to_bytes(8, "big") for n in range(260, 300)
        ]


@pytest.mark.parametrize(
    "content",
    [b"\x00garbage\xff" * 300, b"SQLite format 3\x00" + b"\xab" * 4080],
    ids=["garbage", "bad-header"],
)
def test_damaged_file_is_reported_and_left_untouched(db_path: Path, content: bytes) -> None:
    db_path.write_bytes(content)
    with pytest.raises(StorageError) as info:
        Database.open(db_path)
    message = str(info.value)
    assert message.startswith(f"database {db_path} is damaged: ")
    assert "; it was not modified" in message
    assert "comm-tui repair" in message
    assert "\n" not in message
    assert db_path.read_bytes() == content


def test_newer_schema_is_refused(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StorageError, match="written by a newer comm-tui"):
        Database.open(db_path)


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open database"):
        Database.open(tmp_path / "missing" / "comm.db")


# contacts


def test_contacts_are_saved_and_found(db: Database) -> None:
    bob = db.add_contact("bob", BOB_KEY, BOB_ADDR, 1.0)
    alice = db.add_contact("  Alice ", ALICE_KEY, ALICE_ADDR, 2.0)
    assert alice == Contact("Alice", ALICE_KEY, ALICE_ADDR, 2.0)
    assert db.contacts() == [alice, bob]
    assert db.contact_by_name("ALICE") == alice
    assert db.contact_by_name("nobody") is None
    assert db.contact_by_name("\n") is None
    assert db.contact_by_address(BOB_ADDR) == bob
    assert db.contact_by_address(CAROL_ADDR) is None


def test_contact_names_are_unique_regardless_of_case(db: Database) -> None:
    db.add_contact("Élodie", ALICE_KEY, ALICE_ADDR, 1.0)
    with pytest.raises(UserError, match=r"^a contact named 'Élodie' already exists$"):
        db.add_contact("éLODIE", BOB_KEY, BOB_ADDR, 2.0)
    assert len(db.contacts()) == 1


def test_a_key_is_saved_under_one_name_only(db: Database) -> None:
    db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
    with pytest.raises(UserError, match=r"^this key is already saved as contact 'alice'$"):
        db.add_contact("alice2", ALICE_KEY, ALICE_ADDR, 2.0)


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\nb", "tab\there", "a\u2028b"])
def test_bad_contact_names_are_refused(db: Database, name: str) -> None:
    with pytest.raises(UserError, match="contact name must be 1 to 64 characters"):
        db.add_contact(name, ALICE_KEY, ALICE_ADDR, 1.0)


def test_remove_contact(db: Database) -> None:
    db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
    db.remove_contact("ALICE")
    assert db.contacts() == []
    with pytest.raises(UserError, match=r"^no contact named 'alice'$"):
        db.remove_contact("alice")
    with pytest.raises(UserError, match=r"^no contact named 'a\\nb'$"):
        db.remove_contact("a\nb")  # the message stays on one line


def test_rename_contact(db: Database) -> None:
    db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
    db.add_contact("bob", BOB_KEY, BOB_ADDR, 2.0)
    assert db.rename_contact("alice", "Alice") == Contact("Alice", ALICE_KEY, ALICE_ADDR, 1.0)
    assert db.rename_contact("Alice", "ally").name == "ally"
    assert db.contact_by_name("alice") is None
    with pytest.raises(UserError, match=r"^a contact named 'bob' already exists$"):
        db.rename_contact("ally", "BOB")
    with pytest.raises(UserError, match=r"^no contact named 'zed'$"):
        db.rename_contact("zed", "zz")
    assert [c.name for c in db.contacts()] == ["ally", "bob"]


# messages


def test_outgoing_state_only_moves_forwards(db: Database) -> None:
    row = db.add_outgoing(text_id(1), BOB_KEY, BOB_ADDR, "hi", 10.0)
    assert (row.direction, row.state, row.read, row.sent_ms) == ("out", "queued", True, 10_000)
    sent = db.set_outgoing_state(text_id(1), "sent", 11.0)
    assert sent is not None
    assert (sent.state, sent.updated_at, sent.created_at) == ("sent", 11.0, 10.0)
    assert db.set_outgoing_state(text_id(1), "sent", 12.0) is None
    delivered = db.set_outgoing_state(text_id(1), "delivered", 13.0)
    assert delivered is not None and delivered.state == "delivered"
    # delivered is final
    assert db.set_outgoing_state(text_id(1), "expired", 14.0) is None
    assert db.set_outgoing_state(text_id(1), "sent", 14.0) is None
    assert db.history(BOB_ADDR)[0].state == "delivered"
    assert db.history(BOB_ADDR)[0].updated_at == 13.0


def test_expired_follows_queued_or_sent_and_ends_there(db: Database) -> None:
    db.add_outgoing(text_id(1), BOB_KEY, BOB_ADDR, "one", 1.0)
    db.add_outgoing(text_id(2), BOB_KEY, BOB_ADDR, "two", 1.0, state="sent")
    assert db.set_outgoing_state(text_id(1), "expired", 2.0) is not None
    assert db.set_outgoing_state(text_id(2), "expired", 2.0) is not None
    assert db.set_outgoing_state(text_id(1), "sent", 3.0) is None
    # Expired is final, like delivered: ``delivered`` only follows ``queued`` or ``sent``
    # (set_outgoing_state's docstring), so a late acknowledgement changes nothing.
    assert db.set_outgoing_state(text_id(2), "delivered", 3.0) is None
    assert [r.state for r in db.history(BOB_ADDR)] == ["expired", "expired"]


def test_set_state_of_an_unknown_or_incoming_message_changes_nothing(db: Database) -> None:
    db.add_incoming(text_id(1), BOB_KEY, BOB_ADDR, "hello", 5, 1.0)
    assert db.set_outgoing_state(text_id(1), "delivered", 2.0) is None
    assert db.set_outgoing_state(text_id(9), "sent", 2.0) is None
    assert db.history(BOB_ADDR)[0].state == "received"


def test_outgoing_cannot_be_moved_back_to_queued(db: Database) -> None:
    db.add_outgoing(text_id(1), BOB_KEY, BOB_ADDR, "hi", 1.0)
    with pytest.raises(ValueError, match="cannot be moved to 'queued'"):
        db.set_outgoing_state(text_id(1), "queued", 2.0)


def test_duplicate_incoming_messages_are_ignored(db: Database) -> None:
    first = db.add_incoming(text_id(1), BOB_KEY, BOB_ADDR, "hello", 1234, 1.0)
    assert first is not None
    assert (first.direction, first.state, first.read, first.sent_ms) == (
        "in",
        "received",
        False,
        1234,
    )
    assert db.add_incoming(text_id(1), BOB_KEY, BOB_ADDR, "hello", 1234, 2.0) is None
    # The same id from another peer, or our own outgoing one, is a different message.
    assert db.add_incoming(text_id(1), CAROL_KEY, CAROL_ADDR, "hello", 1234, 2.0) is not None
    db.add_outgoing(text_id(1), BOB_KEY, BOB_ADDR, "hello", 3.0)
    assert db.history_count(BOB_ADDR) == 2
    assert db.history_count(CAROL_ADDR) == 1


def test_outgoing_in_states_is_the_outbox(db: Database) -> None:
    states: tuple[OutgoingState, ...] = ("queued", "sent", "delivered", "expired", "sent")
    for n, state in enumerate(states):
        db.add_outgoing(text_id(n), BOB_KEY, BOB_ADDR, f"m{n}", float(n), state=state)
    db.add_incoming(text_id(9), BOB_KEY, BOB_ADDR, "in", 1, 9.0)
    assert [r.text for r in db.outgoing_in_states(["queued", "sent"])] == ["m0", "m1", "m4"]
    assert [r.text for r in db.outgoing_in_states(["delivered"])] == ["m2"]


def test_history_pages_backwards_oldest_first(db: Database) -> None:
    for n in range(7):
        db.add_incoming(text_id(n), BOB_KEY, BOB_ADDR, f"b{n}", n, float(n))
        db.add_outgoing(text_id(100 + n), CAROL_KEY, CAROL_ADDR, f"c{n}", float(n))
    page = db.history(BOB_ADDR, limit=3)
    assert [r.text for r in page] == ["b4", "b5", "b6"]
    page = db.history(BOB_ADDR, limit=3, before_id=page[0].id)
    assert [r.text for r in page] == ["b1", "b2", "b3"]
    page = db.history(BOB_ADDR, limit=3, before_id=page[0].id)
    assert [r.text for r in page] == ["b0"]
    assert db.history(BOB_ADDR, limit=3, before_id=page[0].id) == []
    assert db.history(ALICE_ADDR) == []


def test_history_of_100000_messages_pages_by_index(db_path: Path) -> None:
    row_count, page_size = 100_000, 100
    Database.open(db_path).close()
    raw = sqlite3.connect(db_path, isolation_level=None)
    try:
        raw.execute("BEGIN")
        raw.executemany(
            "INSERT INTO messages (id, text_id, peer_address, peer_key, direction, text, state,"
            " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, ?, 'in', ?, 'received',"
            " 0, ?, ?, 0)",
            (
                (n, text_id(n), (BOB_ADDR, CAROL_ADDR)[n % 2], BOB_KEY, f"m{n}", float(n), float(n))
                for n in range(1, row_count + 1)
            ),
        )
        raw.execute("COMMIT")
    finally:
        raw.close()

    with Database.open(db_path) as db:
        # The plan of the statements history() itself runs (traced with their values bound).
        for before_id in (None, 500):
            statements: list[str] = []
            db._conn.set_trace_callback(statements.append)
            try:
                db.history(BOB_ADDR, limit=page_size, before_id=before_id)
            finally:
                db._conn.set_trace_callback(None)
            selects = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
            assert len(selects) == 1, statements
            plan = db._conn.execute(f"EXPLAIN QUERY PLAN {selects[0]}").fetchall()
            details = [detail for _id, _parent, _unused, detail in plan]
            on_messages = [d for d in details if " messages " in f"{d} "]
            assert len(on_messages) == 1, details
            assert on_messages[0].startswith("SEARCH messages USING INDEX messages_by_peer ("), (
                details
            )
            # The only sort is the outer one, of at most ``limit`` rows: the index gives the order.
            sorts = [(parent, d) for _id, parent, _unused, d in plan if "TEMP B-TREE" in d]
            assert all(parent == 0 for parent, _d in sorts), plan
        assert db.history_count(BOB_ADDR) == row_count // 2
        newest = db.history(CAROL_ADDR, limit=page_size)
        assert [r.id for r in newest] == list(range(row_count - 2 * page_size + 1, row_count, 2))
        before_id, pages = None, 0
        while page := db.history(BOB_ADDR, limit=page_size * 10, before_id=before_id):
            assert [r.id for r in page] == sorted(r.id for r in page)
            assert {r.peer_address for r in page} == {BOB_ADDR}
            before_id, pages = page[0].id, pages + 1
        assert (before_id, pages) == (2, row_count // 2 // (page_size * 10))
        middle = db.history(BOB_ADDR, limit=3, before_id=50_001)
        assert [r.text for r in middle] == ["m49996", "m49998", "m50000"]
        conversations = db.conversations()
        assert [(c.peer_address, c.unread) for c in conversations] == [
            (BOB_ADDR, row_count // 2),
            (CAROL_ADDR, row_count // 2),
        ]


def test_conversations_list_contacts_and_unknown_senders(db: Database) -> None:
    db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)  # no messages yet
    db.add_contact("bob", BOB_KEY, BOB_ADDR, 2.0)
    db.add_outgoing(text_id(1), BOB_KEY, BOB_ADDR, "hi bob", 3.0)
    db.add_incoming(text_id(2), BOB_KEY, BOB_ADDR, "hi", 1, 4.0)
    db.add_incoming(text_id(3), BOB_KEY, BOB_ADDR, "there?", 2, 5.0)
    db.add_incoming(text_id(4), CAROL_KEY, CAROL_ADDR, "who am I", 3, 6.0)  # not a contact

    assert db.conversations() == [
        Conversation(CAROL_ADDR, CAROL_KEY, None, "who am I", 6.0, 1),
        Conversation(BOB_ADDR, BOB_KEY, "bob", "there?", 5.0, 2),
        Conversation(ALICE_ADDR, ALICE_KEY, "alice", None, None, 0),
    ]
    db.mark_read(BOB_ADDR)
    assert [(c.name, c.unread) for c in db.conversations()] == [(None, 1), ("bob", 0), ("alice", 0)]
    db.add_outgoing(text_id(5), ALICE_KEY, ALICE_ADDR, "hello alice", 7.0)
    assert [c.name for c in db.conversations()] == ["alice", None, "bob"]
    db.remove_contact("bob")  # the history stays, listed by address
    assert db.conversations()[2] == Conversation(BOB_ADDR, BOB_KEY, None, "there?", 5.0, 0)


# transactions


def test_exception_in_a_transaction_leaves_nothing_written(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.transaction():
        db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
        db.add_outgoing(text_id(1), ALICE_KEY, ALICE_ADDR, "hi", 1.0)
        db.set_meta("k", "v")
        raise RuntimeError("boom")
    assert db.contacts() == []
    assert db.history_count(ALICE_ADDR) == 0
    assert db.get_meta("k") is None
    db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)  # the database is usable afterwards
    assert len(db.contacts()) == 1


def test_a_failed_write_inside_a_transaction_is_undone_alone(db: Database) -> None:
    with db.transaction():
        db.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
        with pytest.raises(UserError):
            db.add_contact("ALICE", BOB_KEY, BOB_ADDR, 2.0)
        with pytest.raises(RuntimeError), db.transaction():
            db.set_meta("inner", "x")
            raise RuntimeError
        db.set_meta("outer", "y")
    assert [c.name for c in db.contacts()] == ["alice"]
    assert (db.get_meta("inner"), db.get_meta("outer")) == (None, "y")


def test_storage_failure_is_one_line_and_writes_nothing(db: Database) -> None:
    page_count = db._conn.execute("PRAGMA page_count").fetchone()[0]
    db._conn.execute(f"PRAGMA max_page_count = {page_count}")  # the disk is now "full"
    with pytest.raises(StorageError) as info:
        db.apply_store_changes({text_id(n): (b"x" * 4000, 10**15) for n in range(50)}, [])
    message = str(info.value)
    assert message.startswith(f"cannot use database {db.path}: ")
    assert "full" in message
    assert "\n" not in message
    assert db.relay_item_count() == 0


def test_reads_work_while_another_connection_writes(db_path: Path) -> None:
    with Database.open(db_path) as writer, Database.open(db_path) as reader:
        writer.add_contact("alice", ALICE_KEY, ALICE_ADDR, 1.0)
        with writer.transaction():
            writer.add_contact("bob", BOB_KEY, BOB_ADDR, 2.0)
            # The reader sees the last commit, without waiting for the writer.
            assert [c.name for c in reader.contacts()] == ["alice"]
            assert _contact_names_in_another_process(db_path) == "alice"
        assert [c.name for c in reader.contacts()] == ["alice", "bob"]


def _contact_names_in_another_process(db_path: Path) -> str:
    package_root = Path(comm_tui.__file__).resolve().parents[1]
    script = (
        "import sys; from pathlib import Path; from comm_tui.store.db import Database\n"
        "with Database.open(Path(sys.argv[1])) as db:\n"
        "    print(','.join(c.name for c in db.contacts()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(package_root)},
        check=True,
    )
    return result.stdout.strip()


# relay store, peers, meta


def test_relay_store_changes_and_expiry(db: Database) -> None:
    db.apply_store_changes({b"k1": (b"one", 100), b"k2": (b"two", 200), b"k3": (b"x", 300)}, [])
    db.apply_store_changes({b"k1": (b"uno", 150), b"k4": (b"gone", 400)}, [b"k3", b"k4", b"nope"])
    assert db.relay_item_count() == 2
    assert db.load_relay_items(now_ms=99) == [(b"k1", b"uno"), (b"k2", b"two")]
    assert db.load_relay_items(now_ms=150) == [(b"k2", b"two")]
    assert db.relay_item_count() == 1


def test_relay_store_changes_are_all_or_nothing(db: Database) -> None:
    db.apply_store_changes({b"keep": (b"v", 100)}, [])

    def deletions() -> Iterator[bytes]:
        yield b"keep"
        raise RuntimeError("core failed midway")

    with pytest.raises(RuntimeError):
        db.apply_store_changes({b"new": (b"v", 100)}, deletions())
    assert db.load_relay_items(now_ms=0) == [(b"keep", b"v")]


def test_peers_are_upserted_and_capped(db: Database) -> None:
    db.save_peers([(b"p1", "192.0.2.1", 7000, 1.0), (b"p2", "192.0.2.2", 7000, 2.0)])
    db.save_peers([(b"p1", "192.0.2.9", 7001, 3.0)])
    assert db.load_peers() == [(b"p1", "192.0.2.9", 7001, 3.0), (b"p2", "192.0.2.2", 7000, 2.0)]
    db.save_peers([(n.to_bytes(4, "big"), "198.51.100.1", n, 10.0 + n) for n in range(300)])
    assert len(db.load_peers(limit=1000)) == MAX_SAVED_PEERS
    newest = db.load_peers(limit=2)
    assert [port for _, _, port, _ in newest] == [299, 298]


def test_meta(db: Database) -> None:
    assert db.get_meta("version") is None
    db.set_meta("version", "1")
    db.set_meta("version", "2")
    assert db.get_meta("version") == "2"


# sessions, prekeys and notices (schema 2)


def test_schema_1_database_migrates_keeping_history_and_becomes_private(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    for statement in _MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute(
        "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
        " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'in', 'old', 'received',"
        " 1, 2.0, 2.0, 0)",
        (text_id(1), b"a" * 20, b"k" * 32),
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    db_path.chmod(0o644)
    with Database.open(db_path) as db:
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        [old] = db.history(b"a" * 20)
        assert (old.text, old.direction, old.read) == ("old", "in", False)
        notice = db.add_notice(b"k" * 32, b"a" * 20, SESSION_RESET_NOTICE, 3.0)
        assert notice is not None
        assert (notice.direction, notice.state, notice.read) == ("notice", "notice", True)
        assert [r.direction for r in db.history(b"a" * 20)] == ["in", "notice"]
        assert db.conversations()[0].unread == 1  # a notice is never unread


def test_session_and_prekey_state_round_trips(db: Database) -> None:
    assert db.load_prekeys() is None and db.load_sessions() == []
    with db.transaction():
        db.apply_session_changes({b"p" * 32: b"one", b"q" * 32: b"two"}, b"prekeys")
    assert db.load_prekeys() == b"prekeys"
    assert sorted(db.load_sessions()) == [(b"p" * 32, b"one"), (b"q" * 32, b"two")]
    with db.transaction():
        db.apply_session_changes({b"p" * 32: None, b"q" * 32: b"three"}, None)
    assert db.load_sessions() == [(b"q" * 32, b"three")] and db.load_prekeys() == b"prekeys"


# The schema of a profile written before the relay items lost their expiry index.
EXPIRY_INDEX_SCHEMA = 5


def test_a_profile_with_the_expiry_index_upgrades_keeping_everything(db_path: Path) -> None:
    """A profile from before schema 6 (relay items indexed by expiry) opens with its
    contacts, history and relay entries, the expired entries still dropped at the start,
    and without the index every relay-store write paid a page for."""
    raw = sqlite3.connect(db_path)
    for migration in _MIGRATIONS[:EXPIRY_INDEX_SCHEMA]:
        for statement in migration:
            raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {EXPIRY_INDEX_SCHEMA}")
    raw.execute(
        "INSERT INTO contacts (name, folded, key, address, added_at) VALUES"
        " ('bob', 'bob', ?, ?, 1.0)",
        (b"k" * 32, b"a" * 20),
    )
    raw.execute(
        "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
        " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'in', 'kept', 'received',"
        " 1, 2.0, 2.0, 0)",
        (text_id(1), b"a" * 20, b"k" * 32),
    )
    raw.executemany(
        "INSERT INTO relay_items (key, blob, expires_ms) VALUES (?, ?, ?)",
        [(b"live", b"entry", 10**15), (b"old", b"expired", 5)],
    )
    raw.commit()
    raw.close()
    with Database.open(db_path) as db:
        assert [c.name for c in db.contacts()] == ["bob"]
        assert [r.text for r in db.history(b"a" * 20)] == ["kept"]
        assert db.load_relay_items(now_ms=10) == [(b"live", b"entry")]
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indices = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "relay_items_by_expiry" not in indices
    finally:
        raw.close()
