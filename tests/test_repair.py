"""A damaged database: one clear line, then `comm-tui repair` keeps it and salvages rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from comm_tui.cli import main
from comm_tui.crypto.card import encode_card
from comm_tui.crypto.identity import Identity
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths

MESSAGES = 3000


def _fill(data_dir: Path) -> tuple[Path, Identity]:
    assert main(["--data-dir", str(data_dir), "id"]) == 0
    bob = Identity.from_seed(bytes(range(32)))
    assert (
        main(["--data-dir", str(data_dir), "contacts", "add", "bob", encode_card(bob.public)]) == 0
    )
    path = profile_paths("default", data_dir).database
    with Database.open(path) as db, db.transaction():
        for i in range(MESSAGES):
            db.add_incoming(i.to_bytes(16, "big"), bob.key, bob.address, f"text {i} " * 20, 0, 0.0)
    return path, bob


def _damage_middle(path: Path) -> None:
    """Overwrite a few pages in the middle of the file with garbage."""
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + 3 * page] = b"\xa5" * (3 * page)
    path.write_bytes(bytes(data))


def test_damaged_database_is_reported_and_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _fill(tmp_path)
    _damage_middle(path)
    damaged_bytes = path.read_bytes()
    capsys.readouterr()

    assert main(["--data-dir", str(tmp_path), "history", "bob", "--limit", "5000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "damaged" in err and "comm-tui repair" in err
    assert path.read_bytes() == damaged_bytes  # reading did not change it

    assert main(["--data-dir", str(tmp_path), "repair"]) == 0
    out = capsys.readouterr().out
    [kept] = [
        p for p in path.parent.glob("comm.db.damaged-*") if p.name[-4:] not in ("-wal", "-shm")
    ]
    assert kept.name in out
    assert kept.read_bytes() == damaged_bytes  # nothing deleted, nothing changed
    with Database.open(path) as db:
        assert db.is_intact()
        assert [c.name for c in db.contacts()] == ["bob"]
        salvaged = db.history_count(db.contacts()[0].address)
    assert 0 < salvaged < MESSAGES
    assert main(["--data-dir", str(tmp_path), "history", "bob"]) == 0


def test_repair_leaves_an_intact_database_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _fill(tmp_path)
    assert main(["--data-dir", str(tmp_path), "repair"]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert not list(path.parent.glob("comm.db.damaged-*"))
    with Database.open(path) as db:
        assert db.history_count(db.contacts()[0].address) == MESSAGES
