"""Ignored message requests are the store's rule: the app and ``comm-tui conversations``
hide the same ones (issue 11: the rule lived in the app alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comm_tui.cli import main
from comm_tui.store.db import Database
from comm_tui.store.paths import ensure_dirs, profile_paths

STRANGER_KEY, STRANGER = b"S" * 32, b"s" * 20
BOB_KEY, BOB = b"B" * 32, b"b" * 20
NOW = 1_800_000_000.0


def _incoming(db: Database, n: int, key: bytes, address: bytes, at: float) -> None:
    db.add_incoming(bytes([n]) * 16, key, address, f"text {n}", int(at * 1000), at)


def test_ignored_request_hidden_until_it_writes_again(tmp_path: Path) -> None:
    with Database.open(tmp_path / "comm.db") as db:
        _incoming(db, 1, STRANGER_KEY, STRANGER, NOW)
        db.ignore_request(STRANGER, NOW + 1)
        assert [c.peer_address for c in db.conversations()] == [STRANGER]
        assert db.visible_conversations() == []
        _incoming(db, 2, STRANGER_KEY, STRANGER, NOW + 2)
        assert [c.peer_address for c in db.visible_conversations()] == [STRANGER]


def test_a_contact_is_never_hidden_and_damage_hides_nothing(tmp_path: Path) -> None:
    with Database.open(tmp_path / "comm.db") as db:
        db.add_contact("bob", BOB_KEY, BOB, NOW)
        _incoming(db, 1, BOB_KEY, BOB, NOW)
        db.ignore_request(BOB, NOW + 1)
        assert [c.peer_address for c in db.visible_conversations()] == [BOB]
        _incoming(db, 2, STRANGER_KEY, STRANGER, NOW)
        db.set_meta("app.ignored_requests", "{not json")
        assert {c.peer_address for c in db.visible_conversations()} == {BOB, STRANGER}


def test_cli_conversations_hides_what_the_app_hides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = profile_paths("default", tmp_path)
    ensure_dirs(paths)
    with Database.open(paths.database) as db:
        _incoming(db, 1, STRANGER_KEY, STRANGER, NOW)
        db.ignore_request(STRANGER, NOW + 1)
    assert main(["--data-dir", str(tmp_path), "conversations", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
