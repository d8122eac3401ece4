"""Message requests are bounded (docs/PROTOCOL.md, "7.1", "Message requests"): keys are
free, so a flood of texts from fresh keys, or from one key, must not fill our disk or the
request list; a contact's text in the middle of it is kept and shown."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comm_tui.cli import _stats_line
from comm_tui.store import db as db_module
from comm_tui.store.db import (
    REQUEST_CONVERSATIONS_MAX,
    REQUEST_TEXTS_MAX,
    SESSION_RESET_NOTICE,
    Database,
)
from tests.test_integration import Network, first_hop, net, until

__all__ = ["net"]  # the fixture, used by name

NOW = 1_800_000_000.0
BOB_KEY, BOB = b"B" * 32, b"b" * 20
FLOOD = 10_000


def _key(n: int) -> tuple[bytes, bytes]:
    """A fresh stranger: its key and address (any 32 and 20 distinct bytes will do)."""
    digest = hashlib.sha256(n.to_bytes(4, "big")).digest()
    return digest, digest[:20]


def _text_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _receive(db: Database, n: int, key: bytes, address: bytes) -> bool:
    at = NOW + n
    return db.add_incoming(_text_id(n), key, address, f"t{n}", int(at * 1000), at) is not None


def _incoming_by_peer(db: Database) -> dict[bytes, int]:
    # The bound is on what is on disk: counted in the file itself.
    rows = db._all("SELECT peer_address, count(*) FROM messages WHERE direction = 'in' GROUP BY 1")
    return {address: n for address, n in rows}


def test_flood_from_fresh_keys_keeps_the_bounds_and_a_contacts_text(tmp_path: Path) -> None:
    path = tmp_path / "comm.db"
    with Database.open(path) as db:
        db.add_contact("bob", BOB_KEY, BOB, NOW)
        db.begin_batch()
        for n in range(FLOOD):
            if n == FLOOD // 2:
                assert _receive(db, n, BOB_KEY, BOB)
            else:
                _receive(db, n, *_key(n))
        db.commit_batch()
    with Database.open(path) as db:  # what is on disk, read again
        held = _incoming_by_peer(db)
        assert held.pop(BOB) == 1
        assert len(held) == REQUEST_CONVERSATIONS_MAX
        assert set(held.values()) == {1}
        # The stalest requests went: the newest strangers are those kept.
        assert set(held) == {_key(n)[1] for n in range(FLOOD - REQUEST_CONVERSATIONS_MAX, FLOOD)}
        assert db.requests == {}  # counters are per open
        shown = {c.peer_address: c for c in db.visible_conversations()}
        assert shown[BOB].name == "bob" and shown[BOB].last_text == f"t{FLOOD // 2}"
        assert [r.text for r in db.history(BOB)] == [f"t{FLOOD // 2}"]


def test_flood_from_one_key_keeps_the_newest_texts_and_a_contacts_text(tmp_path: Path) -> None:
    path = tmp_path / "comm.db"
    key, address = _key(-1 & 0xFFFFFFFF)
    with Database.open(path) as db:
        db.add_contact("bob", BOB_KEY, BOB, NOW)
        db.begin_batch()
        for n in range(FLOOD):
            if n == FLOOD // 2:
                assert _receive(db, n, BOB_KEY, BOB)
            else:
                _receive(db, n, key, address)
        db.commit_batch()
        assert db.requests["evicted_text"] == FLOOD - 1 - REQUEST_TEXTS_MAX
    with Database.open(path) as db:
        assert _incoming_by_peer(db) == {BOB: 1, address: REQUEST_TEXTS_MAX}
        kept = [r.text for r in db.history(address)]
        assert kept == [f"t{n}" for n in range(FLOOD - REQUEST_TEXTS_MAX, FLOOD)]
        assert [r.text for r in db.history(BOB)] == [f"t{FLOOD // 2}"]


def test_contacts_are_never_limited(tmp_path: Path) -> None:
    with Database.open(tmp_path / "comm.db") as db:
        db.add_contact("bob", BOB_KEY, BOB, NOW)
        for n in range(REQUEST_TEXTS_MAX * 2):
            assert _receive(db, n, BOB_KEY, BOB)
        assert db.history_count(BOB) == REQUEST_TEXTS_MAX * 2
        assert db.requests == {}


def test_a_stranger_we_wrote_to_is_not_a_request(tmp_path: Path) -> None:
    key, address = _key(1)
    with Database.open(tmp_path / "comm.db") as db:
        db.add_outgoing(b"o" * 16, key, address, "hello", NOW)
        for n in range(REQUEST_TEXTS_MAX + 1):
            assert _receive(db, n, key, address)
        assert _incoming_by_peer(db) == {address: REQUEST_TEXTS_MAX + 1}


def test_read_texts_are_never_removed_the_new_one_is_not_kept(tmp_path: Path) -> None:
    key, address = _key(1)
    with Database.open(tmp_path / "comm.db") as db:
        for n in range(REQUEST_TEXTS_MAX):
            assert _receive(db, n, key, address)
        db.mark_read(address)
        assert not _receive(db, REQUEST_TEXTS_MAX, key, address)
        assert db.requests == {"dropped": 1}
        assert [r.text for r in db.history(address)] == [f"t{n}" for n in range(REQUEST_TEXTS_MAX)]
        # A duplicate of a kept text takes no room and is not a drop.
        assert not _receive(db, 0, key, address)
        assert db.requests == {"dropped": 1}


def test_a_read_request_is_not_forgotten_to_make_room(tmp_path: Path) -> None:
    with Database.open(tmp_path / "comm.db") as db:
        unread = REQUEST_CONVERSATIONS_MAX // 2
        for n in range(REQUEST_CONVERSATIONS_MAX):
            assert _receive(db, n, *_key(n))
            if n != unread:
                db.mark_read(_key(n)[1])
        # The one unread request is the one to go, though not the stalest.
        assert _receive(db, REQUEST_CONVERSATIONS_MAX + 1, *_key(REQUEST_CONVERSATIONS_MAX + 1))
        held = _incoming_by_peer(db)
        assert _key(0)[1] in held and _key(unread)[1] not in held
        assert len(held) == REQUEST_CONVERSATIONS_MAX
        db.mark_read(_key(REQUEST_CONVERSATIONS_MAX + 1)[1])
        assert not _receive(db, REQUEST_CONVERSATIONS_MAX + 2, *_key(REQUEST_CONVERSATIONS_MAX + 2))


def test_stalest_unread_request_goes_and_accepting_keeps_what_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "comm.db"
    first_key, first = _key(0)
    with Database.open(path) as db:
        for n in range(REQUEST_CONVERSATIONS_MAX):
            assert _receive(db, n, *_key(n))
        # The first stranger writes again: it is no longer the stalest.
        for n in range(REQUEST_TEXTS_MAX + 5):
            _receive(db, 1000 + n, first_key, first)
        assert _receive(db, 5000, *_key(5000))
        held = _incoming_by_peer(db)
        assert _key(1)[1] not in held and first in held
        assert db.requests["evicted_conversation"] == 1
        # Accepting the request (saving the contact) keeps what was kept, and lifts the bound.
        kept = [r.text for r in db.history(first)]
        assert len(kept) == REQUEST_TEXTS_MAX
        db.add_contact("first", first_key, first, NOW + 9000)
        for n in range(10):
            assert _receive(db, 6000 + n, first_key, first)
    with Database.open(path) as db:
        texts = [r.text for r in db.history(first)]
        assert texts == kept + [f"t{6000 + n}" for n in range(10)]


# ---------------------------------------------------------------- service, over UDP


async def test_a_text_not_kept_is_acknowledged_and_counted(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender is a stranger to the recipient: past the bound, with every kept text
    read, its next text is not kept, never shown, and still acknowledged (delivered), so
    no relay carries it again."""
    monkeypatch.setattr(db_module, "REQUEST_TEXTS_MAX", 2)
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await net.start(recipient, first_hop(net))
    await until(lambda: recipient.running.node.state == "online", "the recipient to join")
    for text in ("one", "two"):
        text_id = sender.running.send_text(recipient.identity.public, text).text_id
        await until(lambda t=text_id: sender.state_of(t) == "delivered", f"{text} acknowledged")
    await until(lambda: recipient.received() == ["one", "two"], "both texts shown")
    assert recipient.db is not None
    recipient.db.mark_read(sender.identity.address)
    row = sender.running.send_text(recipient.identity.public, "three")
    await until(lambda: sender.state_of(row.text_id) == "delivered", "the third acknowledged")
    assert recipient.received() == ["one", "two"]
    assert [r.text for r in recipient.db.history(sender.identity.address)] == ["one", "two"]
    assert recipient.db.requests == {"dropped": 1}
    assert " requests_dropped=1 requests_evicted=0/0conv" in _stats_line(recipient.running)
    assert "three" not in _stats_line(recipient.running)


def test_an_ignored_request_goes_first_even_when_read(tmp_path: Path) -> None:
    ignored = _key(REQUEST_CONVERSATIONS_MAX - 1)[1]
    with Database.open(tmp_path / "comm.db") as db:
        for n in range(REQUEST_CONVERSATIONS_MAX):
            assert _receive(db, n, *_key(n))
        db.mark_read(ignored)
        db.ignore_request(ignored, NOW + REQUEST_CONVERSATIONS_MAX)
        assert _receive(db, 5000, *_key(5000))
        held = _incoming_by_peer(db)
        # The newest request went, read, since the user ignored it; not the stalest.
        assert ignored not in held and _key(0)[1] in held
        # An ignored request that wrote again is a request like any other.
        db.ignore_request(_key(1)[1], NOW + 1.5)
        assert _receive(db, 5001, *_key(1))
        assert _receive(db, 5002, *_key(5002))
        held = _incoming_by_peer(db)
        assert _key(1)[1] in held and _key(0)[1] not in held


def test_notices_in_a_request_are_one_and_never_a_conversation(tmp_path: Path) -> None:
    """A stranger can start sessions at will: each would be a "session re-established"
    notice (docs/PROTOCOL.md, "Session reset")."""
    key, address = _key(1)
    with Database.open(tmp_path / "comm.db") as db:
        assert db.add_notice(key, address, SESSION_RESET_NOTICE, NOW) is None
        assert db.conversations() == []
        assert _receive(db, 1, key, address)
        for n in range(5):
            assert db.add_notice(key, address, SESSION_RESET_NOTICE, NOW + 10 + n) is not None
        assert [r.direction for r in db.history(address)] == ["in", "notice"]
        db.add_contact("bob", BOB_KEY, BOB, NOW)
        assert _receive(db, 2, BOB_KEY, BOB)
        for n in range(3):
            assert db.add_notice(BOB_KEY, BOB, SESSION_RESET_NOTICE, NOW + 20 + n) is not None
        assert [r.direction for r in db.history(BOB)] == ["in", "notice", "notice", "notice"]
