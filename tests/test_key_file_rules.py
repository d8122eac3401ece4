"""Rules of the key file that mutation testing found unpinned (bench/MUTATION.md).

A replaced identity keeps the protection asked for; the limits on a file's size and on
the key derivation costs it may ask for are inclusive, as documented; every refusal
names the file; backups are stamped in UTC whatever the local zone; and the rename that
publishes a key file is made durable by syncing its directory.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import (
    MAX_KDF_MEMLIMIT_BYTES,
    MAX_KDF_OPSLIMIT,
    MAX_KEY_FILE_BYTES,
    KdfStrength,
    PassphraseRequired,
    backup_path,
    is_passphrase_protected,
    read_identity_file,
    replace_identity,
    write_identity_file,
)
from comm_tui.errors import KeyFileError

IDENTITY = Identity.from_seed(bytes(range(32)))
PASSPHRASE = b"correct horse battery staple"


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "identity.key"
    write_identity_file(path, IDENTITY)
    return path


@pytest.fixture
def protected(tmp_path: Path) -> Path:
    path = tmp_path / "export.key"
    write_identity_file(path, IDENTITY, PASSPHRASE, KdfStrength.MIN)
    return path


def edit(path: Path, **fields: object) -> None:
    document = json.loads(path.read_text())
    for name, value in fields.items():
        if isinstance(value, dict):
            document[name].update(value)
        elif value is None:
            del document[name]
        else:
            document[name] = value
    path.write_text(json.dumps(document))


def test_a_replaced_identity_is_protected_as_asked(plain: Path) -> None:
    new = Identity.generate()
    replace_identity(plain, new, PASSPHRASE, KdfStrength.MIN)
    assert is_passphrase_protected(plain)
    with pytest.raises(PassphraseRequired):
        read_identity_file(plain)
    assert read_identity_file(plain, PASSPHRASE) == new
    kdf = json.loads(plain.read_text())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == KdfStrength.MIN.value


def test_the_key_derivation_cost_limits_are_inclusive(protected: Path) -> None:
    """Up to OPSLIMIT_SENSITIVE and MEMLIMIT_SENSITIVE a file is read (to the passphrase
    prompt, before any derivation); one more is refused before any work."""
    assert (MAX_KDF_OPSLIMIT, MAX_KDF_MEMLIMIT_BYTES) == (
        argon2id.OPSLIMIT_SENSITIVE,
        argon2id.MEMLIMIT_SENSITIVE,
    )
    edit(protected, kdf={"opslimit": MAX_KDF_OPSLIMIT, "memlimit": MAX_KDF_MEMLIMIT_BYTES})
    with pytest.raises(PassphraseRequired):
        read_identity_file(protected)
    for over in ({"opslimit": MAX_KDF_OPSLIMIT + 1}, {"memlimit": MAX_KDF_MEMLIMIT_BYTES + 1}):
        edit(protected, kdf=over)
        with pytest.raises(KeyFileError, match="costs out of range"):
            read_identity_file(protected)
        edit(protected, kdf={"opslimit": MAX_KDF_OPSLIMIT, "memlimit": MAX_KDF_MEMLIMIT_BYTES})


def test_a_file_of_exactly_the_size_limit_is_read(plain: Path) -> None:
    content = plain.read_bytes().rstrip()
    plain.write_bytes(content + b" " * (MAX_KEY_FILE_BYTES - len(content)))
    assert plain.stat().st_size == MAX_KEY_FILE_BYTES
    assert read_identity_file(plain) == IDENTITY


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        "no format",
        "no version",
        "version 0",
        "bad address",
        "no key",
        "no check",
        "no salt",
        "oversized",
    ],
)
def test_every_refusal_names_the_file(protected: Path, damage: str) -> None:
    """One line a user can act on: which file, and what is wrong with it."""
    edits: dict[str, dict[str, object]] = {
        "no format": {"format": None},
        "no version": {"version": None},
        "version 0": {"version": 0},
        "bad address": {"address": "00"},
        "no key": {"key": None},
        "no check": {"check": None},
        "no salt": {"kdf": {"salt": 7}},
    }
    if damage == "not json":
        protected.write_text("{")
    elif damage == "oversized":
        protected.write_bytes(b" " * (MAX_KEY_FILE_BYTES + 1))
    else:
        edit(protected, **edits[damage])
    with pytest.raises(KeyFileError) as info:
        read_identity_file(protected)
    assert str(protected) in str(info.value)


@pytest.fixture
def far_east_zone() -> Iterator[None]:
    """The process runs in UTC+14 (Kiribati) for the test, then in its own zone again."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Etc/GMT-14"  # POSIX signs: GMT-14 is fourteen hours ahead
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("far_east_zone")
def test_backups_are_stamped_in_utc_whatever_the_local_zone(tmp_path: Path) -> None:
    stamps = set()
    earlier = datetime.now(UTC)
    name = backup_path(tmp_path / "identity.key").name
    later = datetime.now(UTC)
    for moment in (earlier, later):
        stamps.add("identity.key.bak-" + moment.strftime("%Y%m%d%H%M%S"))
    assert name in stamps


def test_writing_a_key_file_syncs_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename is durable only once the directory is synced (POSIX)."""
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_identity_file(tmp_path / "identity.key", IDENTITY)
    assert synced == [False, True]  # the file's data, then the directory's entry
