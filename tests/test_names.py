"""Display names that travel and read receipts (docs/PROTOCOL.md, "7.1.1").

Core (sans-IO, ``tests/wire.py``): a name arrives attributed to the session's author,
bounded and validated; a malformed control letter is refused and counted; receipts name
their author. Store: newest claim wins, a replay changes nothing, receipts change only our
own texts to the peer that sent them, the migration keeps data. Service: a name travels
with the first text to a contact and again after a rename; receipts go only to contacts
with receipts on, over real UDP and SQLite.
"""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.net.service import RENAME_PUSH_MAX, NameChanged, NodeService, OutgoingUpdated
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.events import NameClaimed, TextReceived, TextsRead, TextStateChanged
from comm_tui.protocol.letters import (
    COMBINING_MARKS_MAX,
    DISPLAY_NAME_MAX_BYTES,
    LETTER_BYTES,
    READ_IDS_MAX,
    decode_letter,
    display_name,
    encode_profile_letter,
    encode_read_letter,
    is_display_name,
)
from comm_tui.protocol.node import Node
from comm_tui.store.db import _MIGRATIONS, CLAIMED_NAMES_MAX, Database
from tests.test_integration import FAST, LOOPBACK, Network, Peer, first_hop, net, until
from tests.wire import T0, Wire

__all__ = ["net"]  # the fixture, used by name


def pair() -> tuple[Wire, Node, Node]:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    return wire, a, b


def relayed() -> tuple[Wire, Node, Node]:
    """A and B that only meet through relay R: the node handing B a letter is not its author."""
    wire = Wire()
    a, r, b = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(a, r)
    wire.connect(b, r)
    ends = {wire.endpoint(a), wire.endpoint(b)}
    wire.drop = lambda source, dest, data: {source, dest} == ends
    return wire, a, b


def padded(letter: pb.Letter) -> bytes:
    body = letter.SerializeToString()
    return len(body).to_bytes(2, "big") + body + bytes(LETTER_BYTES - 2 - len(body))


def send_raw(a: Node, b: Node, letter: pb.Letter, now: float = T0) -> None:
    """Seal any letter, valid or not, in a's session to b (what a hostile peer can do)."""
    a._send_letters(b.identity.public, letter.text_id, [padded(letter)], now, handshake=False)


# ---------------------------------------------------------------- names: bounds


def test_a_display_name_is_at_most_64_bytes_on_one_line() -> None:
    assert is_display_name("é" * (DISPLAY_NAME_MAX_BYTES // 2))  # 64 bytes
    assert not is_display_name("é" * (DISPLAY_NAME_MAX_BYTES // 2) + "x")  # 65 bytes
    assert not is_display_name("")
    for bad in ("a\nb", "a\u2028b", "\u202eevil", "a\u2066b", "a\x1bb", "a\u200db"):
        assert not is_display_name(bad), repr(bad)
    assert not is_display_name("e\u0301")  # not NFC: one name, one encoding
    assert not is_display_name(" Alice")
    assert display_name("  Alice   Smith ") == "Alice Smith"
    assert display_name("e\u0301") == "\u00e9"
    assert display_name("\u202e") is None


BLANK_NAMES = {
    "braille blank": "\u2800",
    "hangul filler": "\u3164",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "halfwidth hangul filler": "\uffa0",
    "khitan filler": "\U00016fe4",
    "null notehead": "\U0001d159",
    "fillers with a space": "\u3164 \u3164",
    "a lone mark": "\u0301",
    "marks after a space": "a \u0301\u0301",
    "grapheme joiner": "Alice\u034f",
    "khmer inherent vowel": "Bob\u17b4",
    "mongolian free variation selector": "Bob\u180b",
    "blank beside a name": "Alice\u2800",
    "five stacked marks": "x" + "\u0301\u0302\u0303\u0304\u0305",
    "zalgo": "x\u0336\u0353\u0317\u0359\u0320q\u0336\u0353\u0317\u0359\u0320l",
}


@pytest.mark.parametrize("name", BLANK_NAMES.values(), ids=BLANK_NAMES.keys())
def test_a_name_that_looks_blank_or_garbled_is_refused(name: str) -> None:
    """docs/PROTOCOL.md, "7.1.1": no blank code point, a visible character, at most
    COMBINING_MARKS_MAX marks stacked on one base (each name is NFC and trimmed, so only
    that rule can refuse it)."""
    assert name == unicodedata.normalize("NFC", " ".join(name.split()))
    assert not is_display_name(name)
    assert display_name(name) is None
    with pytest.raises(ValueError):
        encode_profile_letter(os.urandom(16), 1, name, 1)


def test_names_with_marks_and_emoji_within_bounds_are_names() -> None:
    four = "x" + "\u0301\u0302\u0303\u0304"
    assert is_display_name(four)  # COMBINING_MARKS_MAX on one base
    assert is_display_name(four + "q" + "\u0301\u0302\u0303\u0304")  # each base its own
    assert is_display_name("\u2764\ufe0f")  # a heart with its emoji selector (Mn)
    assert is_display_name("1\ufe0f\u20e3")  # a keycap: a selector and an enclosing mark
    assert is_display_name("\u0915\u094d\u0937\u093f")  # Devanagari with a virama
    assert is_display_name("\ud55c\uad6d")  # Hangul syllables, not fillers
    assert is_display_name("\u2801")  # a braille pattern with a dot
    assert is_display_name("a b")
    assert len(four) == 1 + COMBINING_MARKS_MAX and unicodedata.is_normalized("NFC", four)


SELECTORS_THAT_SELECT_NOTHING = {
    "VS16 after a letter": "bob\ufe0f",
    "VS15 after a letter": "bob\ufe0e",
    "VS16 inside a name": "b\ufe0fob",
    "VS1 after an emoji base": "\u2764\ufe00",
    "VS16 twice": "\u2764\ufe0f\ufe0f",
    "VS16 after a mark": "\u2764\u0301\ufe0f",
    "VS16 after an accented letter": "\u00e9\ufe0f",
    "VS16 after a digit, no keycap": "1\ufe0f",
    "VS15 in a keycap": "1\ufe0e\u20e3",
    "VS16 after a letter, then a keycap mark": "a\ufe0f\u20e3",
    "VS1 after an ideograph": "\u6f22\ufe00",
    "VS17 after an ideograph": "\u845b\U000e0100",
    "VS256 after a letter": "Alice\U000e01ef",
    "VS16 after a space": "Al \ufe0f",
}


@pytest.mark.parametrize(
    "name", SELECTORS_THAT_SELECT_NOTHING.values(), ids=SELECTORS_THAT_SELECT_NOTHING.keys()
)
def test_a_variation_selector_that_selects_nothing_is_refused(name: str) -> None:
    """docs/PROTOCOL.md, "7.1.1": after a character without a variation sequence a
    selector shows nothing, so "bob" and "bob" + U+FE0F would look the same. Only VS15
    or VS16 right after an emoji base, or VS16 in a keycap, stands in a name."""
    assert name == unicodedata.normalize("NFC", " ".join(name.split()))
    assert not is_display_name(name)
    assert display_name(name) is None


def test_emoji_style_selectors_after_emoji_bases_are_names() -> None:
    for name in (
        "\u2764\ufe0f",  # red heart, emoji style
        "\u2764\ufe0e",  # red heart, text style
        "Al \u2764\ufe0f",
        "\u00a9\ufe0f",  # the first base of the table
        "\u2139\ufe0f",  # a base of category Ll
        "\U0001f6f3\ufe0f",  # the last base of the table
        "\u203c\ufe0f",  # a base of category Po
        "1\ufe0f\u20e3 #\ufe0f\u20e3 *\ufe0f\u20e3",  # keycaps
    ):
        assert is_display_name(name), repr(name)
    assert not is_display_name("\U0001f6f4\ufe0f")  # past the table's last base
    assert not is_display_name("\u00a8\ufe0f")  # before its first


def test_the_largest_control_letters_fit_one_letter() -> None:
    name = "\U0001f600" * (DISPLAY_NAME_MAX_BYTES // 4)
    assert len(encode_profile_letter(os.urandom(16), 2**64 - 1, name, 2**64 - 1)) == LETTER_BYTES
    ids = [os.urandom(16) for _ in range(READ_IDS_MAX)]
    letter = encode_read_letter(os.urandom(16), 2**64 - 1, ids)
    assert list(decode_letter(letter).read.text_ids) == ids
    with pytest.raises(ValueError):
        encode_read_letter(os.urandom(16), 0, [*ids, os.urandom(16)])


# ---------------------------------------------------------------- names: core


def test_a_claimed_name_arrives_from_the_sessions_author_and_is_acknowledged() -> None:
    wire, a, b = relayed()
    control_id = a.send_profile(b.identity.public, "Alice", 3, T0)
    wire.pump(T0)
    [claim] = wire.of(b, NameClaimed)
    assert isinstance(claim, NameClaimed)
    assert (claim.sender.key, claim.name, claim.version) == (a.identity.key, "Alice", 3)
    assert wire.texts(b) == []  # never shown as a text
    assert wire.states(a, control_id)[-1] == "delivered"


@pytest.mark.parametrize(
    "profile",
    [
        pb.Profile(name="x" * (DISPLAY_NAME_MAX_BYTES + 1), version=1),
        pb.Profile(name="\u202eecila", version=1),
        pb.Profile(name="Alice\nBob: hi", version=1),
        pb.Profile(name="", version=1),
        pb.Profile(name="Alice", version=0),
        pb.Profile(name="\u2800", version=1),
        pb.Profile(name="e" + "\u0301" * 5, version=1),
    ],
    ids=["oversized", "bidi", "newline", "empty", "version-0", "blank", "zalgo"],
)
def test_a_malformed_name_is_refused_and_counted(profile: pb.Profile) -> None:
    wire, a, b = pair()
    send_raw(a, b, pb.Letter(text_id=os.urandom(16), part=0, parts=1, sent_ms=1, profile=profile))
    wire.pump(T0)
    assert wire.of(b, NameClaimed) == []
    assert b.stats.rejected["bad_control"] >= 1
    assert b.stats.rejected["internal_error"] == 0


def test_a_control_letter_carrying_text_is_refused() -> None:
    wire, a, b = pair()
    letter = pb.Letter(
        text_id=os.urandom(16),
        part=0,
        parts=1,
        sent_ms=1,
        chunk=b"hidden text",
        profile=pb.Profile(name="Alice", version=1),
    )
    send_raw(a, b, letter)
    wire.pump(T0)
    assert wire.of(b, NameClaimed) == [] and wire.texts(b) == []
    assert b.stats.rejected["bad_control"] >= 1


# ---------------------------------------------------------------- receipts: core


def test_a_read_receipt_arrives_from_the_sessions_author() -> None:
    wire, a, b = relayed()
    text_id = a.send_text(b.identity.public, "read me", T0)
    wire.pump(T0)
    b.send_read(a.identity.public, [text_id], T0 + 1)
    wire.pump(T0 + 1)
    [read] = wire.of(a, TextsRead)
    assert isinstance(read, TextsRead)
    assert read.sender.key == b.identity.key and read.text_ids == (text_id,)
    assert [t.text for t in wire.texts(a)] == []


@pytest.mark.parametrize(
    "ids",
    [[], [b"x" * 15], [b"y" * 16, b"y" * 16], [os.urandom(16) for _ in range(READ_IDS_MAX + 1)]],
    ids=["empty", "short-id", "duplicate", "too-many"],
)
def test_a_malformed_read_receipt_is_refused_and_counted(ids: list[bytes]) -> None:
    wire, a, b = pair()
    read = pb.ReadReceipt(text_ids=ids)
    send_raw(b, a, pb.Letter(text_id=os.urandom(16), part=0, parts=1, sent_ms=1, read=read))
    wire.pump(T0)
    assert wire.of(a, TextsRead) == []
    assert a.stats.rejected["bad_control"] >= 1


# ---------------------------------------------------------------- store


def test_the_newest_claim_wins_and_a_replay_changes_nothing(tmp_path: Path) -> None:
    key = Identity.generate().key
    with Database.open(tmp_path / "p.db") as db:
        assert db.claim_name(key, "Robert", 2, 1.0)
        assert not db.claim_name(key, "Bob", 1, 2.0)  # an older version, replayed
        assert not db.claim_name(key, "Bobby", 2, 3.0)  # the same version again
        assert db.claimed_name(key) == "Robert"
        assert db.claim_name(key, "Rob", 3, 4.0)
        assert db.claimed_name(key) == "Rob"


def test_a_claim_never_replaces_the_users_name_for_a_contact(tmp_path: Path) -> None:
    bob = Identity.generate()
    with Database.open(tmp_path / "p.db") as db:
        db.add_contact("bob", bob.key, bob.address, 1.0)
        db.claim_name(bob.key, "Robert", 1, 2.0)
        [conversation] = db.conversations()
        assert (conversation.name, conversation.claimed_name) == ("bob", "Robert")
        assert db.contact_by_address(bob.address).name == "bob"  # type: ignore[union-attr]


def test_strangers_claims_are_bounded_and_never_evict_a_contacts(tmp_path: Path) -> None:
    bob = Identity.generate()
    with Database.open(tmp_path / "p.db") as db:
        db.add_contact("bob", bob.key, bob.address, 0.0)
        db.claim_name(bob.key, "Robert", 1, 0.0)  # the oldest claim of all
        with db.transaction():
            for i in range(CLAIMED_NAMES_MAX + 5):
                db.claim_name(i.to_bytes(32, "big"), f"stranger {i}", 1, 1.0 + i)
        count = db._conn.execute("SELECT count(*) FROM claimed_names").fetchone()[0]
        assert count == CLAIMED_NAMES_MAX
        assert db.claimed_name(bob.key) == "Robert"
        assert db.claimed_name((0).to_bytes(32, "big")) is None  # oldest stranger went


def test_a_receipt_changes_only_our_texts_to_the_peer_that_sent_it(tmp_path: Path) -> None:
    bob, carol = Identity.generate(), Identity.generate()
    to_bob, to_carol, from_bob = os.urandom(16), os.urandom(16), os.urandom(16)
    with Database.open(tmp_path / "p.db") as db:
        db.add_outgoing(to_bob, bob.key, bob.address, "for bob", 1.0, "delivered")
        db.add_outgoing(to_carol, carol.key, carol.address, "for carol", 1.0, "delivered")
        db.add_incoming(from_bob, bob.key, bob.address, "bob's own", 1, 1.0)
        # Carol names bob's text and her own; bob names carol's and one of his own texts.
        assert [r.text_id for r in db.texts_read(carol.address, [to_bob, to_carol], 5.0)] == [
            to_carol
        ]
        assert db.texts_read(bob.address, [to_carol, from_bob, os.urandom(16)], 6.0) == []
        [row] = db.texts_read(bob.address, [to_bob], 7.0)
        assert (row.read_at, row.state) == (7.0, "delivered")
        assert db.texts_read(bob.address, [to_bob], 8.0) == []  # once


def test_mark_read_returns_the_texts_newly_read(tmp_path: Path) -> None:
    bob = Identity.generate()
    first, second = os.urandom(16), os.urandom(16)
    with Database.open(tmp_path / "p.db") as db:
        db.add_incoming(first, bob.key, bob.address, "one", 1, 1.0)
        db.add_incoming(second, bob.key, bob.address, "two", 2, 2.0)
        assert db.mark_read(bob.address) == [first, second]
        assert db.mark_read(bob.address) == []


# The schema version that added display names and read receipts (the upgrade tested here).
NAMES_SCHEMA = 5


def test_upgrading_keeps_contacts_and_history(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    bob = Identity.generate()
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[: NAMES_SCHEMA - 1]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {NAMES_SCHEMA - 1}")
    conn.execute(
        "INSERT INTO contacts (name, folded, key, address, added_at, muted)"
        " VALUES ('bob', 'bob', ?, ?, 1.0, 1)",
        (bob.key, bob.address),
    )
    conn.execute(
        "INSERT INTO messages (text_id, peer_address, peer_key, direction, text, state,"
        " sent_ms, created_at, updated_at, read) VALUES (?, ?, ?, 'out', 'old', 'delivered',"
        " 1, 1, 1, 1)",
        (b"t" * 16, bob.address, bob.key),
    )
    conn.commit()
    conn.close()
    with Database.open(path) as db:
        [contact] = db.contacts()
        assert (contact.name, contact.muted, contact.receipts) == ("bob", True, False)
        [row] = db.history(bob.address)
        assert (row.text, row.state, row.read_at) == ("old", "delivered", None)
        assert db.name_sent(bob.address) == 0
        assert [r.text_id for r in db.texts_read(bob.address, [b"t" * 16], 2.0)] == [b"t" * 16]


# ---------------------------------------------------------------- service, over UDP


async def befriend(net: Network, a: Peer, b: Peer) -> None:
    """``a`` and ``b`` running and each other's contacts."""
    for peer in (a, b):
        if peer.service is None:
            await net.start(peer, first_hop(net))
    assert a.db is not None and b.db is not None
    a.db.add_contact(b.name, b.identity.key, b.identity.address, 1.0)
    b.db.add_contact(a.name, a.identity.key, a.identity.address, 1.0)


def claimed(peer: Peer) -> list[str]:
    return [e.name for e in peer.events if isinstance(e, NameChanged)]


async def test_a_name_travels_with_the_first_text_and_again_after_a_rename(net: Network) -> None:
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await befriend(net, sender, recipient)
    assert sender.running.set_display_name("Alice")
    recipient_id = PublicIdentity(recipient.identity.key)
    sender.running.send_text(recipient_id, "hi")
    await until(lambda: claimed(recipient) == ["Alice"], "the name to arrive")
    sender.running.send_text(recipient_id, "again")
    await until(lambda: len(recipient.received()) == 2, "the second text")
    assert claimed(recipient) == ["Alice"]  # sent once per version
    # A rename goes at once to a contact that had the older name, without a text.
    assert sender.running.set_display_name("Alice B.")
    await until(lambda: claimed(recipient) == ["Alice", "Alice B."], "the rename to arrive")
    assert recipient.db is not None
    assert recipient.db.claimed_name(sender.identity.key) == "Alice B."
    [conversation] = [c for c in recipient.db.conversations() if c.name == "sender"]
    assert conversation.claimed_name == "Alice B."
    assert not sender.running.set_display_name("\u202e")


async def test_a_rename_made_while_no_node_ran_reaches_contacts_at_start(net: Network) -> None:
    """``comm-tui id`` records a new nickname in the profile while the node is stopped;
    the node, started with that nickname, sends it at once, not with the next text."""
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await befriend(net, sender, recipient)
    assert sender.running.set_display_name("Alice")
    sender.running.send_text(PublicIdentity(recipient.identity.key), "hi")
    await until(lambda: claimed(recipient) == ["Alice"], "the name to arrive")
    await net.stop(sender)
    with Database.open(sender.db_path) as db:  # what `comm-tui id` does with the config's name
        assert db.set_own_display_name("Alice B.") == 2
    # Started as the app and `comm-tui node` start it: with the config's nickname.
    sender.db = Database.open(sender.db_path)
    sender.service = NodeService(
        sender.identity,
        sender.db,
        listen=(LOOPBACK, 0),
        bootstrap=first_hop(net),
        config=FAST,
        display_name="Alice B.",
    )
    sender.service.subscribe(sender.events.append)
    await sender.service.start()
    await until(lambda: claimed(recipient) == ["Alice", "Alice B."], "the rename to arrive")
    assert recipient.received() == ["hi"]  # no text carried it


async def test_receipts_go_only_to_contacts_with_receipts_on(net: Network) -> None:
    sender, recipient = net.peers["sender"], net.peers["recipient"]
    await befriend(net, sender, recipient)
    assert sender.db is not None and recipient.db is not None
    recipient_id = PublicIdentity(recipient.identity.key)
    off = sender.running.send_text(recipient_id, "receipts off")
    await until(lambda: len(recipient.received()) == 1, "the first text")
    recipient.running.conversation_read(sender.identity.address)
    on = sender.running.send_text(recipient_id, "receipts on")
    await until(lambda: len(recipient.received()) == 2, "the second text")
    assert recipient.db.set_receipts(sender.identity.address, True)
    recipient.running.conversation_read(sender.identity.address)

    def read_ids() -> list[bytes]:
        return [
            e.row.text_id
            for e in sender.events
            if isinstance(e, OutgoingUpdated) and e.row.read_at is not None
        ]

    await until(lambda: read_ids() == [on.text_id], "the read receipt")
    [row_off, row_on] = sender.db.history(recipient.identity.address)
    assert row_off.text_id == off.text_id and row_off.read_at is None
    assert row_on.read_at is not None


def test_received_texts_are_not_control_letters() -> None:
    wire, a, b = pair()
    a.send_text(b.identity.public, "plain", T0)
    wire.pump(T0)
    assert [e.text for e in wire.texts(b) if isinstance(e, TextReceived)] == ["plain"]
    assert wire.of(b, NameClaimed) == [] and wire.of(b, TextsRead) == []


# ---------------------------------------------------------------- names that get lost


def offline_service(tmp_path: Path) -> tuple[NodeService, Database, Identity]:
    """A service that is not started (nothing transmits), with ``bob`` as a contact."""
    db = Database.open(tmp_path / "me.db")
    bob = Identity.generate()
    db.add_contact("bob", bob.key, bob.address, 1.0)
    service = NodeService(
        Identity.generate(), db, listen=("127.0.0.1", 0), clock=lambda: T0, display_name="Al"
    )
    assert service.set_display_name("Alice")
    return service, db, bob


def test_a_name_whose_letter_expired_goes_again_with_the_next_text(tmp_path: Path) -> None:
    service, db, bob = offline_service(tmp_path)
    service.send_text(PublicIdentity(bob.key), "hi")
    assert db.name_sent(bob.address) == 1
    [control] = service.node.outgoing_text_ids() - {r.text_id for r in db.history(bob.address)}
    with db.transaction():
        service._persist([TextStateChanged(os.urandom(16), bob.address, "expired")])
    assert db.name_sent(bob.address) == 1  # another letter's expiry: nothing
    with db.transaction():
        service._persist([TextStateChanged(control, bob.address, "expired")])
    assert db.name_sent(bob.address) == 0
    service.send_text(PublicIdentity(bob.key), "again")
    assert db.name_sent(bob.address) == 1
    db.close()


def test_a_reset_session_gets_the_name_again(tmp_path: Path) -> None:
    service, db, bob = offline_service(tmp_path)
    service.send_text(PublicIdentity(bob.key), "hi")
    before = service.node.outgoing_text_ids()
    with db.transaction():
        service._session_reset(bob.key, T0)
    new = service.node.outgoing_text_ids() - before
    assert len(new) == 1 and db.name_sent(bob.address) == 1  # a new control letter
    db.close()


def test_a_name_goes_once_per_version(tmp_path: Path) -> None:
    service, db, bob = offline_service(tmp_path)
    service.send_text(PublicIdentity(bob.key), "one")
    service.send_text(PublicIdentity(bob.key), "two")
    texts = {r.text_id for r in db.history(bob.address)}
    assert len(service.node.outgoing_text_ids() - texts) == 1
    db.close()


def test_a_rename_goes_at_once_to_a_bounded_number_of_contacts(tmp_path: Path) -> None:
    service, db, _ = offline_service(tmp_path)
    friends = [Identity.generate() for _ in range(RENAME_PUSH_MAX + 2)]
    for i, friend in enumerate(friends):
        db.add_contact(f"friend {i}", friend.key, friend.address, 2.0)
        db.set_name_sent(friend.address, 1, None)
    before = service.node.outgoing_text_ids()
    assert service.set_display_name("Alice Cooper")
    assert len(service.node.outgoing_text_ids() - before) == RENAME_PUSH_MAX
    after = service.node.outgoing_text_ids()
    assert service.set_display_name("Alice Cooper")  # no change: nothing sent
    assert service.node.outgoing_text_ids() == after
    db.close()


def test_a_name_recorded_while_no_node_ran_goes_once_at_start(tmp_path: Path) -> None:
    service, db, bob = offline_service(tmp_path)
    service.send_text(PublicIdentity(bob.key), "hi")
    assert db.name_sent(bob.address) == 1
    assert db.set_own_display_name("Alice B.") == 2  # `comm-tui id`, no node running
    before = service.node.outgoing_text_ids()
    assert service.set_display_name("Alice B.")  # the start, with the config's nickname
    assert len(service.node.outgoing_text_ids() - before) == 1
    assert db.name_sent(bob.address) == 2
    after = service.node.outgoing_text_ids()
    assert service.set_display_name("Alice B.")  # the next start: nothing more
    assert service.node.outgoing_text_ids() == after
    db.close()


def test_an_own_name_recorded_before_the_rule_is_not_sent_and_the_next_takes_a_version(
    tmp_path: Path,
) -> None:
    """A blank name saved by an older version (docs/PROTOCOL.md, "7.1.1") would make
    every first text to a contact fail to encode its name letter: it is no name now."""
    with Database.open(tmp_path / "comm.db") as db:
        db.set_meta("display_name", '{"name": "\\u2800", "version": 3}')
        assert db.own_display_name() is None
        assert db.set_own_display_name("Alice") == 4
        assert db.own_display_name() == ("Alice", 4)
