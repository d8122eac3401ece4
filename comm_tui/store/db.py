"""The profile's SQLite database: contacts, history and outbox, relay store, known peers.

This is the only module that opens SQLite. The database runs in WAL mode so that read-only
commands can read while a node writes, with ``synchronous=FULL`` so that a message shown as
sent or received survives a power cut. Transactions are explicit (``isolation_level=None``):
every public write method runs in :meth:`Database.transaction`, and one called inside an open
transaction joins it through a savepoint, so it is atomic on its own and as part of a larger
change. SQLite's errors leave this module as :class:`StorageError` with one line for the user.

A node's group commit (``comm_tui/net/commit.py``) opens a batch with :meth:`Database.begin_batch`
and hands its ``COMMIT`` (the fsync) to a writer thread with :meth:`Database.commit_batch_in`:
one thread owns a ``Database``, and while a batch commits elsewhere that thread's next use of
the connection waits for the commit to return.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from comm_tui.errors import StorageError, UserError
from comm_tui.protocol import outbox
from comm_tui.protocol.letters import is_display_name

BUSY_TIMEOUT_MS = 5000
# WAL pages after which a commit checkpoints them into the database file and the log
# starts again from its beginning (SQLite's default is 1000). A commit that appends past
# the log's end grows the file, and ext4 then journals the new size with the fsync: a
# dearer fsync than one over the log's old frames. A log of 100 pages is overwritten
# after its first 100, not its first 1000; its more frequent checkpoints included, it
# cost 126-148 us of CPU a commit in a micro-benchmark against 225-230 us (but saved
# under 10 % of the writer threads' CPU in the loopback benchmark: bench/RESULTS.md,
# "Issue 11, eighth session").
WAL_AUTOCHECKPOINT_PAGES = 100
DATABASE_FILE_MODE = 0o600
CONTACT_NAME_MAX_CHARS = 64
MAX_SAVED_PEERS = 200
DEFAULT_HISTORY_PAGE = 100
DEFAULT_LOADED_PEERS = 64

REPAIR_HINT = "'comm-tui repair' sets it aside and salvages what it can read"


class DatabaseDamaged(StorageError):
    """The database file is not a readable SQLite database (any more)."""


OutgoingState = Literal["queued", "sent", "delivered", "expired"]
INCOMING_STATE = "received"

# The states each outgoing state may be reached from, as the outbox's one transition
# table says (comm_tui/protocol/outbox.py): the outbox only moves forwards.
_FORWARD_FROM: dict[str, tuple[str, ...]] = {
    state.value: tuple(source.value for source in outbox.sources(state))
    for state in outbox.OutboxState
    if outbox.sources(state)
}
# Characters that would break a name shown on one line.
_FORBIDDEN_NAME_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_HISTORY_COLUMNS_V1 = (
    "id, text_id, peer_address, peer_key, direction, text, state, sent_ms, "
    "created_at, updated_at, read"
)
NOTICE_STATE = "notice"
# Where ignored message requests are kept (``ignore_request``): the app's old meta key.
_IGNORED_REQUESTS_KEY = "app.ignored_requests"
# The line shown when a peer's session was lost and started again (docs/PROTOCOL.md,
# "Session reset"); never silent.
SESSION_RESET_NOTICE = "session re-established; unacknowledged texts sent again"
_PREKEYS_ROW = "prekeys"
_SESSION_ROW = "session:"

# Each entry brings the schema from version i to i + 1 (PRAGMA user_version); append only.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE contacts (
            name TEXT PRIMARY KEY COLLATE NOCASE,
            folded TEXT NOT NULL UNIQUE,
            key BLOB NOT NULL UNIQUE CHECK (length(key) = 32),
            address BLOB NOT NULL UNIQUE CHECK (length(address) = 20),
            added_at REAL NOT NULL
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            text_id BLOB NOT NULL,
            peer_address BLOB NOT NULL,
            peer_key BLOB,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            text TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'sent', 'delivered', 'expired', 'received')),
            sent_ms INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            read INTEGER NOT NULL DEFAULT 0,
            UNIQUE (direction, peer_address, text_id)
        )""",
        "CREATE INDEX messages_by_peer ON messages (peer_address, id)",
        "CREATE INDEX messages_by_text_id ON messages (text_id)",
        """CREATE INDEX messages_unread ON messages (peer_address)
            WHERE direction = 'in' AND read = 0""",
        """CREATE TABLE relay_items (
            key BLOB PRIMARY KEY,
            blob BLOB NOT NULL,
            expires_ms INTEGER NOT NULL
        )""",
        "CREATE INDEX relay_items_by_expiry ON relay_items (expires_ms)",
        """CREATE TABLE peers (
            key BLOB PRIMARY KEY,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            last_seen REAL NOT NULL
        )""",
        "CREATE INDEX peers_by_last_seen ON peers (last_seen)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # Session and prekey secrets (docs/PROTOCOL.md, "Letters and sealing"): 'prekeys',
        # and one 'session:' row per peer key. The file is 0600 (DATABASE_FILE_MODE).
        "CREATE TABLE crypto_state (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        # Notices ("session re-established") are history rows of their own direction;
        # SQLite cannot change a CHECK, so the table is rebuilt.
        """CREATE TABLE messages_v2 (
            id INTEGER PRIMARY KEY,
            text_id BLOB NOT NULL,
            peer_address BLOB NOT NULL,
            peer_key BLOB,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'notice')),
            text TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'sent', 'delivered', 'expired', 'received', 'notice')),
            sent_ms INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            read INTEGER NOT NULL DEFAULT 0,
            UNIQUE (direction, peer_address, text_id)
        )""",
        f"INSERT INTO messages_v2 SELECT {_HISTORY_COLUMNS_V1} FROM messages",
        "DROP TABLE messages",
        "ALTER TABLE messages_v2 RENAME TO messages",
        "CREATE INDEX messages_by_peer ON messages (peer_address, id)",
        "CREATE INDEX messages_by_text_id ON messages (text_id)",
        """CREATE INDEX messages_unread ON messages (peer_address)
            WHERE direction = 'in' AND read = 0""",
    ),
    (
        # Endpoint hints from contacts' cards (docs/PROTOCOL.md, "13.2 Endpoint hints in
        # cards"): where to find a contact's node when nothing else is known. At most
        # MAX_CARD_HINTS rows per key, those of the newest card (``issued``, Unix seconds).
        """CREATE TABLE card_hints (
            key BLOB NOT NULL CHECK (length(key) = 32),
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            issued INTEGER NOT NULL,
            PRIMARY KEY (key, host, port)
        )""",
    ),
    (
        # Full-text search over history (``search``). An external-content FTS5 index:
        # the text is stored once, in ``messages``; the triggers keep the index in step
        # inside the same transactions as the rows, so a crash leaves both or neither.
        # unicode61 folds case and (remove_diacritics 2) accents: "cafe" finds "Café".
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text)
                VALUES ('delete', old.id, old.text);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text)
                VALUES ('delete', old.id, old.text);
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
        # Per-contact mute: no desktop notification or bell for their texts.
        "ALTER TABLE contacts ADD COLUMN muted INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # docs/PROTOCOL.md, "7.1.1 Display names and read receipts". Read receipts are
        # sent to a contact only when the user turned them on for it; ``name_sent`` is
        # the version of our display name queued to it (0: none yet), ``name_text_id``
        # the id of the control letter that carries it (if it expires, it is sent again).
        "ALTER TABLE contacts ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE contacts ADD COLUMN name_sent INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE contacts ADD COLUMN name_text_id BLOB",
        # When the recipient said it read one of our texts (only its own receipts count).
        "ALTER TABLE messages ADD COLUMN read_at REAL",
        # The display name each peer key claims, newest version only: a claim, shown as
        # secondary to the user's own name for a contact, never in its place.
        """CREATE TABLE claimed_names (
            key BLOB PRIMARY KEY CHECK (length(key) = 32),
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            received_at REAL NOT NULL
        )""",
    ),
    (
        # docs/PROTOCOL.md, "8.2 Local durability": nothing on a write's path reads the
        # relay items by expiry; only a start does (``load_relay_items``), once, over a
        # table the relay store's caps bound. The index cost every relay-store write a
        # page in the commit (5.7 -> 4.75 WAL frames per commit in the loopback, ~12 us
        # of CPU a page: bench/RESULTS.md, "Issue 11, fifth session: the SQLite path").
        "DROP INDEX relay_items_by_expiry",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_HISTORY_COLUMNS = (
    "id, text_id, peer_address, peer_key, direction, text, state, sent_ms, "
    "created_at, updated_at, read, read_at"
)
# Claimed names kept at most: keys are free, so a flood of strangers' claims only
# evicts strangers' claims (the oldest first); a contact's claim is never evicted.
CLAIMED_NAMES_MAX = 4096
# docs/PROTOCOL.md, "7.1 Letters and sealing", "Message requests": keys are free, so the
# texts of senders who are not contacts (and whom we never wrote to) are bounded: at most
# REQUEST_TEXTS_MAX kept per sender, REQUEST_CONVERSATIONS_MAX such senders in all (at
# most 2,000 texts, 128 MiB of 64 KiB texts). Contacts are never limited.
REQUEST_TEXTS_MAX = 20
REQUEST_CONVERSATIONS_MAX = 100
# Every request conversation: its peer, its latest row id, whether the user read any of
# its texts. Peers are walked one index seek each (``messages_by_peer``), so a fresh key's
# first text costs in the number of peers, not in the size of the history.
_REQUEST_CONVERSATIONS = """
    WITH RECURSIVE peers (a) AS (
        SELECT (SELECT min(peer_address) FROM messages)
        UNION ALL
        SELECT (SELECT min(peer_address) FROM messages WHERE peer_address > a)
        FROM peers WHERE a IS NOT NULL
    )
    SELECT a, (SELECT max(id) FROM messages WHERE peer_address = a),
        (SELECT max(created_at) FROM messages WHERE peer_address = a),
        EXISTS (SELECT 1 FROM messages WHERE peer_address = a AND direction = 'in' AND read)
    FROM peers
    WHERE a IS NOT NULL AND a NOT IN (SELECT address FROM contacts)
        AND NOT EXISTS (SELECT 1 FROM messages WHERE peer_address = a AND direction = 'out')
"""
# What ``add_incoming`` did with a request's text beyond keeping it (``Database.requests``).
RequestOutcome = Literal["dropped", "evicted_text", "evicted_conversation"]
META_DISPLAY_NAME = "display_name"  # our own: {"name": ..., "version": n} (JSON)


@dataclass(frozen=True)
class SearchHit:
    """A message that matched a search, with the name it is filed under (None: a request)."""

    row: HistoryRow
    contact_name: str | None


SEARCH_LIMIT = 200
# Words longer than this are not words: a query is cut there rather than refused.
_SEARCH_TERMS_MAX = 16


_CONTACT_COLUMNS = "name, key, address, added_at, muted, receipts"


def _contact(row: tuple[Any, ...]) -> Contact:
    name, key, address, added_at, muted, receipts = row
    return Contact(name, key, address, added_at, bool(muted), bool(receipts))


def fts_query(text: str) -> str | None:
    """The user's words as an FTS5 query that cannot be a syntax error or an operator.

    Each word becomes a quoted string (quotes doubled) taken as the start of a word, all
    of them required, so "meet tom" finds "Meeting Tomorrow", as chat searches do. FTS5's
    own syntax (AND, NEAR, column filters, ``*``) is not offered: peers' words are never
    parsed as anything but words, and users get what a search box does. None if the
    text has no word at all.
    """
    words = [w for w in text.split() if any(c.isalnum() for c in w)][:_SEARCH_TERMS_MAX]
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '" *' for word in words)


@dataclass(frozen=True)
class Contact:
    name: str
    key: bytes
    address: bytes
    added_at: float
    muted: bool = False  # no desktop notification or bell for their texts
    receipts: bool = False  # we send them read receipts (docs/PROTOCOL.md, "7.1.1")


@dataclass(frozen=True)
class HistoryRow:
    """One message in a conversation; ``direction`` is ``"in"`` or ``"out"``."""

    id: int
    text_id: bytes
    peer_address: bytes
    peer_key: bytes | None
    direction: str
    text: str
    state: str
    sent_ms: int | None
    created_at: float
    updated_at: float
    read: bool
    read_at: float | None = None  # ours: when the recipient said it read it


@dataclass(frozen=True)
class Conversation:
    """A peer in the conversation list; ``name`` is None for a sender who is not a contact."""

    peer_address: bytes
    peer_key: bytes | None
    name: str | None
    last_text: str | None
    last_time: float | None
    unread: int
    muted: bool = False
    claimed_name: str | None = None  # the name the peer gives itself (a claim)
    receipts: bool = False


class Database:
    """An open profile database; use :meth:`open`, and close it (or use ``with``)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._raw = connection
        # Texts of message requests not kept or removed since open, by what happened
        # (docs/PROTOCOL.md, "7.1", "Message requests"); shown in the node's stats line.
        self.requests: Counter[RequestOutcome] = Counter()
        self._depth = 0
        # In a group commit's batch opened without savepoints: a failed write in it
        # (``_poisoned``) means the whole batch must be undone, never committed.
        self._flat = False
        self._poisoned = False
        # Held from the hand-off of a batch's COMMIT until the writer thread finished it.
        self._committing = threading.Lock()

    @property
    def _conn(self) -> sqlite3.Connection:
        """The connection, once a commit running on the writer thread has returned.

        Every use of the connection goes through here, so the owner thread never runs a
        statement in the middle of a batch's COMMIT (it waits for the fsync instead).
        """
        if self._committing.locked():
            with self._committing:
                pass
        return self._raw

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open or create the database at ``path`` and bring its schema up to date.

        A file that is not a readable SQLite database is reported and left as it was: it is
        only read before the first write.
        """
        try:
            _make_private(path)
            # A batch's COMMIT runs on a writer thread (commit_batch_in); the owner thread
            # never uses the connection meanwhile (the ``_conn`` property waits).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise StorageError(f"cannot open database {path}: {_reason(err)}") from err
        try:
            version = _probe(path, conn)
            db = cls(path, conn)
            with _mapped_errors(path):
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StorageError(f"database {path} cannot use write-ahead logging")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
                conn.execute("PRAGMA foreign_keys = ON")
            db._migrate(version)
        except BaseException:
            conn.close()
            raise
        return db

    def close(self) -> None:
        self._conn.close()

    def begin_batch(self, *, savepoints: bool = True) -> None:
        """Open a transaction that stays open when this returns, for a group commit.

        Write methods called until :meth:`commit_batch_in` or :meth:`rollback_batch` join it
        (as savepoints), exactly as inside :meth:`transaction`. With ``savepoints=False``
        they join it without one (two statements fewer each, for a batch that is all or
        nothing): a write that fails then makes the batch impossible to commit.
        """
        if self._depth != 0:
            raise RuntimeError("a batch cannot start inside a transaction")
        with _mapped_errors(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self._flat = not savepoints
        self._poisoned = False

    def rollback_batch(self) -> None:
        """Undo the open batch (a write in it failed); a failed rollback says less than that."""
        self._depth = 0
        self._flat = False
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    def commit_batch(self) -> None:
        """Commit the open batch on this thread; :class:`StorageError` if it was undone."""
        self._close_batch()
        self._commit()

    def commit_batch_in(self, executor: Executor) -> Future[None]:
        """Commit the open batch on ``executor``'s thread; the future says when it is durable.

        Its result is None, or the :class:`StorageError` that undid the batch (rolled back).
        Until it is done, this thread's next use of the connection waits for it.
        """
        self._close_batch()
        self._committing.acquire()
        try:
            return executor.submit(self._commit_and_release)
        except BaseException:
            self._committing.release()
            raise

    def _close_batch(self) -> None:
        if self._depth != 1:
            raise RuntimeError("no batch is open")
        if self._poisoned:
            self.rollback_batch()
            raise StorageError(f"cannot use database {self.path}: a write in the batch failed")
        self._depth = 0
        self._flat = False

    def _commit_and_release(self) -> None:
        """The writer thread's part (sqlite3 lets go of the GIL for the fsync)."""
        try:
            self._commit()
        finally:
            self._committing.release()

    def _commit(self) -> None:
        with _mapped_errors(self.path):
            try:
                self._raw.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._raw.execute("ROLLBACK")
                raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block atomically: all its writes are committed, or none on an exception.

        Nested use joins the outer transaction; the inner block is rolled back alone (to a
        savepoint) if it raises, and its writes are committed with the outer one.
        """
        rollback: tuple[str, ...]
        if self._flat:
            # Inside a batch without savepoints: all of it is committed, or none.
            with _mapped_errors(self.path):
                try:
                    yield
                except BaseException:
                    self._poisoned = True
                    raise
            return
        with _mapped_errors(self.path):
            if self._depth == 0:
                begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)
            else:
                savepoint = f"nested_{self._depth}"
                begin, commit = f"SAVEPOINT {savepoint}", f"RELEASE {savepoint}"
                rollback = (f"ROLLBACK TO {savepoint}", f"RELEASE {savepoint}")
            self._conn.execute(begin)
            self._depth += 1
            try:
                yield
                self._conn.execute(commit)
            except BaseException:
                # The original error says more than a failed rollback would.
                with contextlib.suppress(sqlite3.Error):
                    for statement in rollback:
                        self._conn.execute(statement)
                raise
            finally:
                self._depth -= 1

    # contacts

    def add_contact(self, name: str, key: bytes, address: bytes, now: float) -> Contact:
        """Save a contact; :class:`UserError` if the name or the key is already saved."""
        name = _contact_name(name)
        with self.transaction():
            self._check_name_free(name)
            row = self._one("SELECT name FROM contacts WHERE key = ? OR address = ?", key, address)
            if row is not None:
                raise UserError(f"this key is already saved as contact '{row[0]}'")
            self._conn.execute(
                "INSERT INTO contacts (name, folded, key, address, added_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, name.casefold(), key, address, now),
            )
        return Contact(name, key, address, now)

    def remove_contact(self, name: str) -> None:
        """Forget a contact (its history stays); :class:`UserError` if there is none."""
        with self.transaction():
            contact = self.contact_by_name(name)
            if contact is None:
                raise UserError(f"no contact named {name!r}")
            self._conn.execute("DELETE FROM contacts WHERE key = ?", (contact.key,))

    def rename_contact(self, old: str, new: str) -> Contact:
        """Give a contact another name (a change of case alone is allowed)."""
        new = _contact_name(new)
        with self.transaction():
            contact = self.contact_by_name(old)
            if contact is None:
                raise UserError(f"no contact named {old!r}")
            if new.casefold() != contact.name.casefold():
                self._check_name_free(new)
            self._conn.execute(
                "UPDATE contacts SET name = ?, folded = ? WHERE key = ?",
                (new, new.casefold(), contact.key),
            )
        return replace(contact, name=new)

    def contacts(self) -> list[Contact]:
        """All contacts, sorted by name regardless of case."""
        rows = self._all(f"SELECT {_CONTACT_COLUMNS} FROM contacts ORDER BY folded")
        return [_contact(row) for row in rows]

    def contact_by_name(self, name: str) -> Contact | None:
        try:
            folded = _contact_name(name).casefold()
        except UserError:
            return None  # no contact can have a name that is not allowed
        row = self._one(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE folded = ?", folded)
        return None if row is None else _contact(row)

    def contact_by_address(self, address: bytes) -> Contact | None:
        row = self._one(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE address = ?", address)
        return None if row is None else _contact(row)

    def _check_name_free(self, name: str) -> None:
        row = self._one("SELECT name FROM contacts WHERE folded = ?", name.casefold())
        if row is not None:
            raise UserError(f"a contact named '{row[0]}' already exists")

    # messages

    def add_outgoing(
        self,
        text_id: bytes,
        peer_key: bytes,
        peer_address: bytes,
        text: str,
        now: float,
        state: OutgoingState = "queued",
    ) -> HistoryRow:
        """Record a message the user sent; ``sent_ms`` is ``now`` in milliseconds."""
        with self.transaction():
            row = self._one(
                "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
                " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'out', ?, ?, ?, ?, ?, 1)"
                f" RETURNING {_HISTORY_COLUMNS}",
                text_id,
                peer_address,
                peer_key,
                text,
                state,
                round(now * 1000),
                now,
                now,
            )
        assert row is not None  # RETURNING of a successful insert
        return _history_row(row)

    def set_outgoing_state(
        self, text_id: bytes, state: OutgoingState | outbox.OutboxState, now: float
    ) -> HistoryRow | None:
        """Move an outgoing message forwards to ``state``.

        Returns the updated row, or None if there is no such message or the move would go
        backwards (``delivered`` is final; ``expired`` only follows ``queued`` or ``sent``;
        ``sent`` only follows ``queued``), so None means nothing changed.
        """
        sources = _FORWARD_FROM.get(state)
        if sources is None:
            raise ValueError(f"an outgoing message cannot be moved to {state!r}")
        marks = ", ".join("?" * len(sources))
        with self.transaction():
            row = self._one(
                "UPDATE messages SET state = ?, updated_at = ?"
                f" WHERE direction = 'out' AND text_id = ? AND state IN ({marks})"
                f" RETURNING {_HISTORY_COLUMNS}",
                state,
                now,
                text_id,
                *sources,
            )
        return None if row is None else _history_row(row)

    def add_incoming(
        self,
        text_id: bytes,
        sender_key: bytes,
        sender_address: bytes,
        text: str,
        sent_ms: int,
        now: float,
    ) -> HistoryRow | None:
        """Record a received message, or return None if it was already recorded or not
        kept: a text from a sender who is not a contact and whom we never wrote to (a
        message request) is kept within the request bounds (``_make_room_for_request``).

        The caller acknowledges the text either way (docs/PROTOCOL.md, "7.1", "Message
        requests"): a text never acknowledged is relayed again for days.
        """
        with self.transaction():
            if self._is_request(sender_address) and not self._make_room_for_request(
                text_id, sender_address
            ):
                self.requests["dropped"] += 1
                return None
            row = self._one(
                "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
                " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'in', ?, ?, ?, ?, ?, 0)"
                f" ON CONFLICT DO NOTHING RETURNING {_HISTORY_COLUMNS}",
                text_id,
                sender_address,
                sender_key,
                text,
                INCOMING_STATE,
                sent_ms,
                now,
                now,
            )
        return None if row is None else _history_row(row)

    def _is_request(self, address: bytes) -> bool:
        """A conversation is a request while its peer is not a contact and we never wrote
        to it (docs/PROTOCOL.md, "7.1", "Message requests")."""
        known = self._one(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE address = ?)"
            " OR EXISTS (SELECT 1 FROM messages WHERE peer_address = ? AND direction = 'out')",
            address,
            address,
        )[0]
        return not known

    def _make_room_for_request(self, text_id: bytes, address: bytes) -> bool:
        """Make room for one more text of the request from ``address``; False when it
        cannot be kept (docs/PROTOCOL.md, "7.1", "Message requests").

        Only texts the user has not read are ever removed (a text read stays until the
        user deletes it): past REQUEST_TEXTS_MAX texts of one sender, its oldest unread
        text goes; past REQUEST_CONVERSATIONS_MAX request conversations, one is forgotten
        whole: one the user ignored (``ignore_request``, hidden: read or not, the user
        said they do not want it) first, else one that holds no read text; the stalest
        first. When nothing can go, the new text is not kept. A duplicate takes no room.
        """
        if self._one(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE direction = 'in'"
            " AND peer_address = ? AND text_id = ?)",
            address,
            text_id,
        )[0]:
            return True
        held = self._one(
            "SELECT count(*) FROM messages WHERE peer_address = ? AND direction = 'in'", address
        )[0]
        if held >= REQUEST_TEXTS_MAX:
            oldest = self._one(
                "SELECT id FROM messages WHERE peer_address = ? AND direction = 'in'"
                " AND read = 0 ORDER BY id LIMIT 1",
                address,
            )
            if oldest is None:
                return False
            self._conn.execute("DELETE FROM messages WHERE id = ?", (oldest[0],))
            self.requests["evicted_text"] += 1
            return True
        if held > 0:
            return True
        requests = self._all(_REQUEST_CONVERSATIONS)
        if len(requests) < REQUEST_CONVERSATIONS_MAX:
            return True
        ignored = self._ignored_requests()
        victims = sorted(
            (not hidden, last_id, peer)
            for peer, last_id, last_at, read in requests
            if (hidden := last_at <= ignored.get(peer.hex(), -1.0)) or not read
        )
        if not victims:
            return False
        self._conn.execute("DELETE FROM messages WHERE peer_address = ?", (victims[0][2],))
        self.requests["evicted_conversation"] += 1
        return True

    def history(
        self, peer_address: bytes, limit: int = DEFAULT_HISTORY_PAGE, before_id: int | None = None
    ) -> list[HistoryRow]:
        """The newest ``limit`` messages with a peer older than ``before_id``, oldest first.

        Pass the first row's id as ``before_id`` to load the page before it.
        """
        params: tuple[bytes | int, ...]
        if before_id is None:
            where, params = "peer_address = ?", (peer_address, limit)
        else:
            where, params = "peer_address = ? AND id < ?", (peer_address, before_id, limit)
        # Newest first through the (peer_address, id) index, then turned round for display.
        rows = self._all(
            f"SELECT * FROM (SELECT {_HISTORY_COLUMNS} FROM messages"
            f" WHERE {where} ORDER BY id DESC LIMIT ?) ORDER BY id",
            *params,
        )
        return [_history_row(row) for row in rows]

    def history_count(self, peer_address: bytes) -> int:
        return int(
            self._one("SELECT count(*) FROM messages WHERE peer_address = ?", peer_address)[0]
        )

    def conversations(self) -> list[Conversation]:
        """Every peer with messages or a contact entry, most recent activity first.

        A contact without messages is placed by when it was added.
        """
        rows = self._all(
            """WITH latest AS (
                SELECT peer_address, max(id) AS last_id FROM messages GROUP BY peer_address
            ), unread AS (
                SELECT peer_address, count(*) AS n FROM messages
                WHERE direction = 'in' AND read = 0 GROUP BY peer_address
            ), peers AS (
                SELECT peer_address FROM latest UNION SELECT address FROM contacts
            )
            SELECT p.peer_address, coalesce(c.key, m.peer_key), c.name, m.text, m.created_at,
                coalesce(u.n, 0), coalesce(c.muted, 0), n.name, coalesce(c.receipts, 0)
            FROM peers AS p
            LEFT JOIN latest AS l ON l.peer_address = p.peer_address
            LEFT JOIN messages AS m ON m.id = l.last_id
            LEFT JOIN contacts AS c ON c.address = p.peer_address
            LEFT JOIN unread AS u ON u.peer_address = p.peer_address
            LEFT JOIN claimed_names AS n ON n.key = coalesce(c.key, m.peer_key)
            ORDER BY coalesce(m.created_at, c.added_at) DESC, p.peer_address"""
        )
        return [
            Conversation(address, key, name, text, when, unread, bool(muted), claimed, bool(rr))
            for address, key, name, text, when, unread, muted, claimed, rr in rows
        ]

    def mark_read(self, peer_address: bytes) -> list[bytes]:
        """Mark a conversation read; returns the ids of the texts newly read, oldest first
        (what a read receipt names, docs/PROTOCOL.md, "7.1.1")."""
        with self.transaction():
            rows = self._all(
                "UPDATE messages SET read = 1"
                " WHERE peer_address = ? AND direction = 'in' AND read = 0 RETURNING id, text_id",
                peer_address,
            )
        return [text_id for _, text_id in sorted(rows)]

    def texts_read(
        self, peer_address: bytes, text_ids: Iterable[bytes], now: float
    ) -> list[HistoryRow]:
        """A peer's read receipt: only our own texts *to that peer*, not yet marked, change.

        docs/PROTOCOL.md, "7.1.1": a receipt from anyone else, or for ids we never sent to
        them, changes nothing. Returns the rows that changed.
        """
        wanted = list(dict.fromkeys(text_ids))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self.transaction():
            rows = self._all(
                # ``updated_at`` stays when the outbox state last moved (the custody view).
                "UPDATE messages SET read_at = ?"
                " WHERE direction = 'out' AND peer_address = ? AND read_at IS NULL"
                f" AND text_id IN ({marks}) RETURNING {_HISTORY_COLUMNS}",
                now,
                peer_address,
                *wanted,
            )
        return sorted((_history_row(row) for row in rows), key=lambda r: r.id)

    def set_receipts(self, address: bytes, on: bool) -> bool:
        """Send read receipts to this contact or not; False if it is not a contact."""
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE contacts SET receipts = ? WHERE address = ?", (int(on), address)
            )
        return cursor.rowcount == 1

    def claim_name(self, key: bytes, name: str, version: int, now: float) -> bool:
        """Keep a peer's claimed display name if ``version`` is newer than the one held.

        A replayed or older claim changes nothing (False). Past CLAIMED_NAMES_MAX claims,
        the oldest claim of a key that is not a contact goes.
        """
        with self.transaction():
            row = self._one("SELECT version FROM claimed_names WHERE key = ?", key)
            if row is not None and row[0] >= version:
                return False
            self._conn.execute(
                "INSERT INTO claimed_names (key, name, version, received_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET name = excluded.name,"
                " version = excluded.version, received_at = excluded.received_at",
                (key, name, version, now),
            )
            excess = self._one("SELECT count(*) FROM claimed_names")[0] - CLAIMED_NAMES_MAX
            if excess > 0:
                self._conn.execute(
                    "DELETE FROM claimed_names WHERE key IN (SELECT key FROM claimed_names"
                    " WHERE key NOT IN (SELECT key FROM contacts)"
                    " ORDER BY received_at LIMIT ?)",
                    (excess,),
                )
        return True

    def claimed_name(self, key: bytes) -> str | None:
        row = self._one("SELECT name FROM claimed_names WHERE key = ?", key)
        return None if row is None else str(row[0])

    def own_display_name(self) -> tuple[str, int] | None:
        """Our display name and its version, as last sent (None: never set, or a name
        recorded before docs/PROTOCOL.md, "7.1.1" refused it, a blank one say: it is
        neither sent nor put in a card, and the next name set takes the next version)."""
        own = self._own_display_name_record()
        return own if own is not None and is_display_name(own[0]) else None

    def _own_display_name_record(self) -> tuple[str, int] | None:
        value = self.get_meta(META_DISPLAY_NAME)
        if value is None:
            return None
        stored = json.loads(value)
        return str(stored["name"]), int(stored["version"])

    def set_own_display_name(self, name: str) -> int | None:
        """Record our display name; returns its new version, or None if it did not change."""
        with self.transaction():
            current = self._own_display_name_record()
            if current is not None and current[0] == name:
                return None
            version = 1 if current is None else current[1] + 1
            self.set_meta(META_DISPLAY_NAME, json.dumps({"name": name, "version": version}))
        return version

    def name_sent(self, address: bytes) -> int:
        """The version of our display name queued to this contact (0: none, or not a contact)."""
        row = self._one("SELECT name_sent FROM contacts WHERE address = ?", address)
        return 0 if row is None else int(row[0])

    def set_name_sent(self, address: bytes, version: int, text_id: bytes | None) -> None:
        """Record that our name's ``version`` was queued to a contact in ``text_id``."""
        with self.transaction():
            self._conn.execute(
                "UPDATE contacts SET name_sent = ?, name_text_id = ? WHERE address = ?",
                (version, text_id, address),
            )

    def name_lost(self, text_id: bytes) -> bool:
        """The control letter ``text_id`` carrying our name expired undelivered: the
        contact gets the name again with the next text. False if it carried none."""
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE contacts SET name_sent = 0, name_text_id = NULL WHERE name_text_id = ?",
                (text_id,),
            )
        return cursor.rowcount > 0

    def outgoing_in_states(self, states: Iterable[OutgoingState]) -> list[HistoryRow]:
        """Outgoing messages in any of ``states``, oldest first (the outbox on startup)."""
        wanted = tuple(states)
        marks = ", ".join("?" * len(wanted))
        rows = self._all(
            f"SELECT {_HISTORY_COLUMNS} FROM messages"
            f" WHERE direction = 'out' AND state IN ({marks}) ORDER BY id",
            *wanted,
        )
        return [_history_row(row) for row in rows]

    def add_notice(
        self, peer_key: bytes, peer_address: bytes, text: str, now: float
    ) -> HistoryRow | None:
        """Record a notice in a conversation (our own words, never a peer's).

        In a message request (docs/PROTOCOL.md, "7.1", "Message requests") a stranger can
        start sessions at will, so a notice there replaces the one before it, and none is
        added to a request holding no text (None): no conversation comes from notices.
        """
        with self.transaction():
            if self._is_request(peer_address):
                has_text = self._one(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE peer_address = ?"
                    " AND direction = 'in')",
                    peer_address,
                )[0]
                if not has_text:
                    return None
                self._conn.execute(
                    "DELETE FROM messages WHERE peer_address = ? AND direction = 'notice'",
                    (peer_address,),
                )
            row = self._one(
                "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
                " sent_ms, created_at, updated_at, read)"
                " VALUES (randomblob(16), ?, ?, 'notice', ?, ?, NULL, ?, ?, 1)"
                f" RETURNING {_HISTORY_COLUMNS}",
                peer_address,
                peer_key,
                text,
                NOTICE_STATE,
                now,
                now,
            )
        assert row is not None  # RETURNING of a successful insert
        return _history_row(row)

    # sessions and prekeys

    def apply_session_changes(self, put: dict[bytes, bytes | None], prekeys: bytes | None) -> None:
        """Write session (None: forget the peer's) and prekey state, in the caller's transaction."""
        with self.transaction():
            for peer_key, blob in put.items():
                name = _SESSION_ROW + peer_key.hex()
                if blob is None:
                    self._conn.execute("DELETE FROM crypto_state WHERE name = ?", (name,))
                else:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO crypto_state (name, value) VALUES (?, ?)",
                        (name, blob),
                    )
            if prekeys is not None:
                self._conn.execute(
                    "INSERT OR REPLACE INTO crypto_state (name, value) VALUES (?, ?)",
                    (_PREKEYS_ROW, prekeys),
                )

    def load_prekeys(self) -> bytes | None:
        row = self._one("SELECT value FROM crypto_state WHERE name = ?", _PREKEYS_ROW)
        return None if row is None else bytes(row[0])

    def load_sessions(self) -> list[tuple[bytes, bytes]]:
        """Every peer's sessions as (peer key, blob); rows with a damaged name are skipped."""
        out = []
        for name, value in self._all(
            "SELECT name, value FROM crypto_state WHERE name LIKE 'session:%'"
        ):
            try:
                key = bytes.fromhex(name[len(_SESSION_ROW) :])
            except ValueError:
                continue
            if len(key) == 32:
                out.append((key, bytes(value)))
        return out

    # relay store

    def apply_store_changes(
        self, put: dict[bytes, tuple[bytes, int]], delete: Iterable[bytes]
    ) -> None:
        """Persist the relay store's changes in one transaction; a key in both is deleted."""
        delete = list(delete)
        with self.transaction():
            if put:
                self._conn.executemany(
                    "INSERT INTO relay_items (key, blob, expires_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET blob = excluded.blob,"
                    " expires_ms = excluded.expires_ms",
                    ((key, blob, expires_ms) for key, (blob, expires_ms) in put.items()),
                )
            if delete:
                self._conn.executemany(
                    "DELETE FROM relay_items WHERE key = ?", ((key,) for key in delete)
                )

    def load_relay_items(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """Drop the expired relay items, then return the rest as ``(key, blob)``."""
        with self.transaction():
            self._conn.execute("DELETE FROM relay_items WHERE expires_ms <= ?", (now_ms,))
            rows = self._all("SELECT key, blob FROM relay_items ORDER BY key")
        return [(key, blob) for key, blob in rows]

    def set_muted(self, address: bytes, muted: bool) -> bool:
        """Mute or unmute a contact; False if there is no such contact."""
        with self.transaction():
            row = self._one(
                "UPDATE contacts SET muted = ? WHERE address = ? RETURNING name",
                int(muted),
                address,
            )
        return row is not None

    def search(
        self, text: str, *, peer_address: bytes | None = None, limit: int = SEARCH_LIMIT
    ) -> list[SearchHit]:
        """Messages with a word starting with each word of ``text``, newest first, as chat
        searches list them (FTS5 walks its index in rowid order and stops at ``limit``;
        ranking by bm25 would score every match first: 89 ms for a common word in 100,000
        messages against under 1 ms, see bench/RESULTS.md); notices are not searched."""
        query = fts_query(text)
        if query is None:
            return []
        where = "messages_fts MATCH ? AND m.direction != 'notice'"
        params: list[object] = [query]
        if peer_address is not None:
            where += " AND m.peer_address = ?"
            params.append(peer_address)
        columns = ", ".join(f"m.{c.strip()}" for c in _HISTORY_COLUMNS.split(","))
        rows = self._all(
            f"SELECT {columns}, c.name FROM messages_fts"
            " JOIN messages AS m ON m.id = messages_fts.rowid"
            " LEFT JOIN contacts AS c ON c.address = m.peer_address"
            f" WHERE {where} ORDER BY messages_fts.rowid DESC LIMIT ?",
            *params,
            limit,
        )
        return [SearchHit(_history_row(row[:-1]), row[-1]) for row in rows]

    def history_around(
        self, peer_address: bytes, row_id: int, limit: int = DEFAULT_HISTORY_PAGE
    ) -> list[HistoryRow]:
        """A page of history with ``row_id`` in its middle (a search result in context),
        oldest first."""
        before = self.history(peer_address, limit // 2, before_id=row_id + 1)
        return before + self.history_after(peer_address, row_id, limit - len(before))

    def history_after(
        self, peer_address: bytes, after_id: int, limit: int = DEFAULT_HISTORY_PAGE
    ) -> list[HistoryRow]:
        """The oldest ``limit`` messages with a peer newer than ``after_id``, oldest first."""
        rows = self._all(
            f"SELECT {_HISTORY_COLUMNS} FROM messages WHERE peer_address = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            peer_address,
            after_id,
            limit,
        )
        return [_history_row(row) for row in rows]

    def relay_blobs(self, now_ms: int) -> list[bytes]:
        """The unexpired relay items, read only (for views; the node loads with the above)."""
        rows = self._all("SELECT blob FROM relay_items WHERE expires_ms > ?", now_ms)
        return [bytes(blob) for (blob,) in rows]

    def relay_item_count(self) -> int:
        return int(self._one("SELECT count(*) FROM relay_items")[0])

    # known peers

    def save_peers(self, peers: Iterable[tuple[bytes, str, int, float]]) -> None:
        """Remember peers as ``(key, host, port, last_seen)``, keeping the most recent ones."""
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO peers (key, host, port, last_seen) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET host = excluded.host, port = excluded.port,"
                " last_seen = excluded.last_seen",
                peers,
            )
            self._conn.execute(
                "DELETE FROM peers WHERE key NOT IN"
                " (SELECT key FROM peers ORDER BY last_seen DESC LIMIT ?)",
                (MAX_SAVED_PEERS,),
            )

    def load_peers(self, limit: int = DEFAULT_LOADED_PEERS) -> list[tuple[bytes, str, int, float]]:
        """The most recently seen peers, newest first."""
        rows = self._all(
            "SELECT key, host, port, last_seen FROM peers ORDER BY last_seen DESC LIMIT ?", limit
        )
        return [(key, host, port, last_seen) for key, host, port, last_seen in rows]

    # endpoint hints from cards

    def save_card_hints(self, key: bytes, hints: Iterable[tuple[str, int]], issued: int) -> bool:
        """Keep a card's hints for ``key`` unless hints of a newer card are kept already.

        True if they were stored. A card's hints replace an older card's as a whole: the
        issuer's endpoints move together (a new router, a new network).
        """
        with self.transaction():
            row = self._one("SELECT max(issued) FROM card_hints WHERE key = ?", key)
            if row[0] is not None and row[0] > issued:
                return False
            self._conn.execute("DELETE FROM card_hints WHERE key = ?", (key,))
            self._conn.executemany(
                "INSERT OR IGNORE INTO card_hints (key, host, port, issued) VALUES (?, ?, ?, ?)",
                [(key, host, port, issued) for host, port in hints],
            )
        return True

    def contact_hints(self) -> list[tuple[bytes, str, int]]:
        """Hints of those who are contacts (a removed contact's are not used), newest first."""
        rows = self._all(
            "SELECT h.key, h.host, h.port FROM card_hints AS h"
            " JOIN contacts AS c ON c.key = h.key ORDER BY h.issued DESC, h.rowid"
        )
        return [(key, host, port) for key, host, port in rows]

    # meta

    def ignore_request(self, peer_address: bytes, now: float) -> None:
        """Hide the message request of ``peer_address`` (not a contact) until it writes
        again: ``visible_conversations`` leaves it out while nothing newer than ``now``
        came from it. Kept in ``meta`` under the key the app used, so old profiles keep
        what they ignored."""
        ignored = self._ignored_requests()
        ignored[peer_address.hex()] = now
        self.set_meta(_IGNORED_REQUESTS_KEY, json.dumps(ignored))

    def visible_conversations(self) -> list[Conversation]:
        """``conversations()`` without the requests the user ignored (one rule for the app
        and ``comm-tui conversations``): an ignored request comes back with a newer
        message, and a contact is never hidden."""
        ignored = self._ignored_requests()
        return [
            c
            for c in self.conversations()
            if c.name is not None
            or (when := ignored.get(c.peer_address.hex())) is None
            or (c.last_time or 0) > when
        ]

    def _ignored_requests(self) -> dict[str, float]:
        """Ignored requests by hex address; a damaged value counts as none ignored."""
        raw = self.get_meta(_IGNORED_REQUESTS_KEY)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        if not isinstance(value, dict):
            return {}
        return {k: float(v) for k, v in value.items() if isinstance(v, int | float)}

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", key)
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # plumbing

    def is_intact(self) -> bool:
        """SQLite's own consistency check of every page (``PRAGMA quick_check``)."""
        try:
            return bool(self._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok")
        except sqlite3.DatabaseError:
            return False

    def salvage_from(
        self, damaged: Path, tables: Iterable[str]
    ) -> tuple[dict[str, int], list[str]]:
        """Copy every readable row of ``tables`` from a damaged database file into this one.

        The damaged file is opened read-only; rows are copied one at a time, so an
        unreadable page ends that table's copy but keeps what came before it.
        Returns the rows copied per table and the tables that could not be read to the end.
        A table the damaged file does not have (an older schema) copies nothing and is
        not unreadable; a row this database refuses (a duplicate, a value its checks or
        column types reject) is not copied and not counted, so the counts are what the
        user now has.
        """
        copied: dict[str, int] = {}
        unreadable: list[str] = []
        try:
            source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        except sqlite3.Error:
            return copied, list(tables)
        with contextlib.closing(source):
            for table in tables:
                columns = [row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")]
                try:
                    present = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
                    wanted = [c for c in columns if c in present]
                    if not wanted:
                        copied[table] = 0
                        continue
                    rows = source.execute(f"SELECT {', '.join(wanted)} FROM {table}")
                except sqlite3.DatabaseError:
                    unreadable.append(table)
                    continue
                insert = (
                    f"INSERT OR IGNORE INTO {table} ({', '.join(wanted)}) "
                    f"VALUES ({', '.join('?' for _ in wanted)})"
                )
                count = 0
                with self.transaction():
                    while True:
                        try:
                            row = next(rows, None)
                        except sqlite3.DatabaseError:
                            unreadable.append(table)
                            break
                        if row is None:
                            break
                        try:
                            # 0 when OR IGNORE skipped it (a duplicate, a failed CHECK).
                            count += self._conn.execute(insert, row).rowcount
                        except sqlite3.DatabaseError:
                            continue  # a row that breaks a constraint stays in the damaged copy
                copied[table] = count
        return copied, unreadable

    def _one(self, sql: str, *params: Any) -> Any:
        # fetchall, not fetchone: a statement left half-stepped would hold up COMMIT.
        rows = self._all(sql, *params)
        return rows[0] if rows else None

    def _all(self, sql: str, *params: Any) -> list[Any]:
        with _mapped_errors(self.path):
            return self._conn.execute(sql, params).fetchall()

    def _migrate(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} was written by a newer comm-tui "
                f"(schema {version}, this version knows {SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # Another process may have migrated while this one waited for the lock.
                if self._one("PRAGMA user_version")[0] >= target:
                    continue
                for statement in _MIGRATIONS[target - 1]:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {target}")


def _make_private(path: Path) -> None:
    """Create the database file private, or make an existing one private (it holds session
    secrets); SQLite gives its -wal and -shm files the same mode.

    An existing file is changed by path, never by opening and closing it: closing any
    descriptor of a file drops every POSIX lock this process holds on it, so a second
    connection opened in a process that already had one (the node's, on its own thread,
    beside the app's) silently dropped the first one's locks; another process closing
    its connection then took itself for the last one and deleted the WAL that the node
    was still writing to, and with it everything committed since.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_FILE_MODE)
    except FileExistsError:
        os.chmod(path, DATABASE_FILE_MODE)
        return
    try:
        os.fchmod(fd, DATABASE_FILE_MODE)  # whatever the umask took away
    finally:
        os.close(fd)  # a new file: no connection of ours has it open yet


def _probe(path: Path, conn: sqlite3.Connection) -> int:
    """Read the schema version, touching nothing; a damaged file fails here."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as err:
        raise StorageError(f"cannot open database {path}: {err}") from err
    except sqlite3.DatabaseError as err:
        raise DatabaseDamaged(
            f"database {path} is damaged: {err}; it was not modified ({REPAIR_HINT})"
        ) from err
    return version


@contextlib.contextmanager
def _mapped_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's failures into one line for the user; let programming errors through."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.OperationalError as err:
        raise StorageError(f"cannot use database {path}: {err}") from err
    except sqlite3.DatabaseError as err:
        raise DatabaseDamaged(f"database {path} is damaged: {err} ({REPAIR_HINT})") from err


def _reason(err: OSError | sqlite3.Error) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)


def _contact_name(name: str) -> str:
    """Normalize a contact name, or raise :class:`UserError` if it is not allowed."""
    name = unicodedata.normalize("NFC", name.strip())
    if not 1 <= len(name) <= CONTACT_NAME_MAX_CHARS or any(
        unicodedata.category(char) in _FORBIDDEN_NAME_CATEGORIES for char in name
    ):
        raise UserError(
            f"a contact name must be 1 to {CONTACT_NAME_MAX_CHARS} characters on one line"
        )
    return name


def _history_row(row: tuple[Any, ...]) -> HistoryRow:
    (
        id_,
        text_id,
        peer_address,
        peer_key,
        direction,
        text,
        state,
        sent_ms,
        created,
        updated,
        read,
        read_at,
    ) = row
    return HistoryRow(
        id_,
        text_id,
        peer_address,
        peer_key,
        direction,
        text,
        state,
        sent_ms,
        created,
        updated,
        bool(read),
        read_at,
    )
