"""The display name in our card and in the cards we add (docs/PROTOCOL.md, "13.2.1").

``comm-tui id`` with and without a nickname, a rename changing the card, ``--plain``;
``contacts add [NAME] CARD`` keeping the card's name as the claim (an old card cannot
undo a rename, a later name letter replaces it); hostile cards refused with one line
and exit 2; the node re-signing its published card when the name changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from comm_tui.cli import main
from comm_tui.crypto.card import CARD_CHARS, Card, encode_named_card, issue_card, read_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import read_identity_file
from comm_tui.errors import StorageError
from comm_tui.net.service import NodeService, current_card
from comm_tui.store.config import load_config, save_config
from comm_tui.store.db import Database
from comm_tui.store.paths import ensure_dirs, profile_paths
from tests.test_card_names import signed_card
from tests.test_cli import assert_user_error, card_of, run


def _set_nickname(data: Path, profile: str, nickname: str) -> None:
    paths = profile_paths(profile, data)
    ensure_dirs(paths)
    path = paths.config_file
    config = load_config(path)
    config.nickname = nickname
    save_config(path, config)


def _claimed(data: Path, profile: str, key: bytes) -> str | None:
    db = Database.open(profile_paths(profile, data).database)
    try:
        return db.claimed_name(key)
    finally:
        db.close()


def test_id_puts_the_nickname_in_the_card_and_a_rename_changes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, plain = card_of(capsys, tmp_path, "alice")
    assert len(plain) == CARD_CHARS  # no nickname: the version 1 card, as before
    _set_nickname(tmp_path, "alice", "  Alice   Liddell ")
    code, out, _ = run(capsys, "--data-dir", tmp_path, "--profile", "alice", "id")
    assert code == 0
    card = read_card(re.search(r"^card: (\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    # Normalized as the name letter is: whitespace runs made one space.
    assert (card.name, card.name_version, card.hints, card.issued) == ("Alice Liddell", 1, (), 0)
    assert "name in card: Alice Liddell (your nickname" in out
    assert card_of(capsys, tmp_path, "alice") == card_of(capsys, tmp_path, "alice")  # stable
    _set_nickname(tmp_path, "alice", "Ally")
    renamed = read_card(card_of(capsys, tmp_path, "alice")[1])
    assert (renamed.name, renamed.name_version) == ("Ally", 2)
    code, out, _ = run(capsys, "--data-dir", tmp_path, "--profile", "alice", "id", "--plain")
    assert code == 0 and f"card: {plain}\n" in out and "name in card" not in out


def test_contacts_add_takes_the_cards_name_as_the_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_nickname(tmp_path, "alice", "Alice")
    address, card = card_of(capsys, tmp_path, "alice")
    key = read_card(card).identity.key
    me = ("--data-dir", tmp_path, "--profile", "me", "contacts")
    # Without NAME the contact is called what the card says; the claim is kept and shown.
    code, out, _ = run(capsys, *me, "add", card)
    assert code == 0
    assert out == f"added Alice ({address}), who calls themselves \u2018Alice\u2019\n"
    assert _claimed(tmp_path, "me", key) == "Alice"
    assert run(capsys, *me, "remove", "Alice")[0] == 0
    # A name the user gives is theirs; the card's name stays the claim beside it.
    code, out, _ = run(capsys, *me, "add", "bob", card)
    assert code == 0 and out.startswith("added bob (") and "\u2018Alice\u2019" in out
    assert run(capsys, *me, "list")[1].startswith("bob\t")


def test_an_old_card_cannot_undo_a_rename_and_a_name_letter_replaces_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_nickname(tmp_path, "alice", "Alice")
    _, old = card_of(capsys, tmp_path, "alice")
    _set_nickname(tmp_path, "alice", "Ally")
    _, new = card_of(capsys, tmp_path, "alice")
    key = read_card(new).identity.key
    me = ("--data-dir", tmp_path, "--profile", "me", "contacts")
    assert run(capsys, *me, "add", "a", new)[0] == 0
    assert run(capsys, *me, "remove", "a")[0] == 0
    code, out, _ = run(capsys, *me, "add", "a", old)
    assert code == 0 and "\u2018Ally\u2019" in out  # version 1 does not replace version 2
    assert _claimed(tmp_path, "me", key) == "Ally"
    db = Database.open(profile_paths("me", tmp_path).database)
    try:
        # The name letter's rule (docs/PROTOCOL.md, "7.1.1") orders the card's claim too.
        assert not db.claim_name(key, "Replayed", 2, 1.0)
        assert db.claim_name(key, "Alicia", 3, 1.0)
        assert db.claimed_name(key) == "Alicia"
    finally:
        db.close()


def test_a_card_without_a_name_needs_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, card = card_of(capsys, tmp_path, "bob")
    code, _, err = run(capsys, "--data-dir", tmp_path, "contacts", "add", card)
    assert_user_error(code, err, "this card carries no name: give one")
    assert run(capsys, "--data-dir", tmp_path, "contacts", "list")[1] == ""


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        (b"\x1b]0;owned\x07Eve", "cannot be shown"),
        ("Eve\u202egnp.exe".encode(), "cannot be shown"),
        (b"Eve\nroot", "cannot be shown"),
        (b"Eve\xff", "not UTF-8"),
        (b"x" * 65, "a name of 65 bytes, expected 1 to 64"),
    ],
)
def test_a_hostile_signed_name_is_refused_with_one_line_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: bytes, fragment: str
) -> None:
    eve = Identity.generate()
    card = signed_card(eve, name)
    for argv in (("add", card), ("add", "eve", card)):
        code, _, err = run(capsys, "--data-dir", tmp_path, "contacts", *argv)
        assert_user_error(code, err, fragment)
    assert run(capsys, "--data-dir", tmp_path, "contacts", "list")[1] == ""
    assert _claimed(tmp_path, "default", eve.key) is None


def test_markup_in_a_cards_name_is_kept_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eve = Identity.generate()
    code, out, _ = run(
        capsys,
        "--data-dir",
        tmp_path,
        "contacts",
        "add",
        encode_named_card(eve, "[red]Eve", 1, [], 0),
    )
    assert code == 0 and out.startswith("added [red]Eve (")


def test_the_node_signs_its_card_again_when_the_name_changes(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "a.db")
    identity = Identity.generate()
    try:
        service = NodeService(identity, db, listen=("0.0.0.0", 0), test_networks=True)
        service.bound = ("127.0.0.1", 7000)
        assert read_card(service.publish_card()) == Card(identity.public)
        assert service.set_display_name("Alice")
        assert read_card(service.card) == Card(identity.public, (), 0, "Alice", 1)
        service.bound = ("198.18.0.5", 7000)
        with_hint = read_card(service.publish_card())
        assert (with_hint.name, with_hint.hints) == ("Alice", (("198.18.0.5", 7000),))
        assert service.set_display_name("Ally")
        assert (read_card(service.card).name, read_card(service.card).name_version) == ("Ally", 2)
        assert current_card(identity, db)[0] == service.card  # what id and the app show
        assert not service.set_display_name("\u202e")  # not a name: the card keeps the last
        assert read_card(service.card).name == "Ally"
    finally:
        db.close()


def test_current_card_signs_a_renamed_profiles_card_with_the_published_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "id"]) == 0
    capsys.readouterr()
    paths = profile_paths("default", tmp_path)
    identity = read_identity_file(paths.identity_file)
    db = Database.open(paths.database)
    try:
        service = NodeService(identity, db, listen=("0.0.0.0", 0), test_networks=True)
        service.bound = ("198.18.0.5", 7000)
        published = read_card(service.publish_card())
        db.set_own_display_name("Alice")  # a rename the node has not published yet
        text, card = current_card(identity, db)
        assert text == issue_card(identity, [("198.18.0.5", 7000)], published.issued, ("Alice", 1))
        assert card.hints == published.hints and card.name == "Alice"
    finally:
        db.close()


def test_a_card_the_disk_refused_is_written_at_the_next_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database.open(tmp_path / "a.db")
    try:
        service = NodeService(Identity.generate(), db, listen=("0.0.0.0", 0))
        service.bound = ("127.0.0.1", 7000)
        service.publish_card()
        db.set_own_display_name("Alice")

        def disk_full(key: str, value: str) -> None:
            raise StorageError("disk full")

        with monkeypatch.context() as patch:
            patch.setattr(db, "set_meta", disk_full)
            with pytest.raises(StorageError):
                service.publish_card()
        assert read_card(service.publish_card()).name == "Alice"
    finally:
        db.close()
