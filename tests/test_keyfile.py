"""Key files: round trips, permissions, atomic writes, and one clear line for every failure."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import (
    MAX_KEY_FILE_BYTES,
    WRONG_PASSPHRASE,
    KdfStrength,
    PassphraseRequired,
    backup_path,
    is_passphrase_protected,
    load_or_create_identity,
    read_identity_file,
    replace_identity,
    write_identity_file,
)
from comm_tui.errors import KeyFileError, StorageError

SEED = bytes(range(0x80, 0xA0))
IDENTITY = Identity.from_seed(SEED)
PASSPHRASE = b"hunter2 but longer"
FAST = KdfStrength.MIN


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fail(*_args: object, **_kwargs: object) -> NoReturn:
    raise OSError(28, "No space left on device")


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def store(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "identity.key"
    write_identity_file(path, IDENTITY)
    return path


@pytest.fixture
def protected(tmp_path: Path) -> Path:
    path = tmp_path / "export.key"
    write_identity_file(path, IDENTITY, PASSPHRASE, FAST)
    return path


def error_of(path: Path, passphrase: bytes | None = None) -> KeyFileError:
    with pytest.raises(KeyFileError) as info:
        read_identity_file(path, passphrase)
    assert "\n" not in str(info.value)
    return info.value


def test_unprotected_round_trip(plain: Path) -> None:
    assert read_identity_file(plain) == IDENTITY
    assert mode_of(plain) == 0o600
    assert not is_passphrase_protected(plain)
    document = load(plain)
    assert document["format"] == "comm-tui-identity"
    assert document["version"] == 1
    assert document["address"] == IDENTITY.address.hex()
    assert document["kdf"] is None
    assert base64.b64decode(document["key"]) == SEED


def test_protected_round_trip(protected: Path) -> None:
    assert read_identity_file(protected, PASSPHRASE) == IDENTITY
    assert mode_of(protected) == 0o600
    assert is_passphrase_protected(protected)
    document = load(protected)
    assert document["kdf"]["alg"] == "argon2id"
    assert document["kdf"]["opslimit"] == FAST.opslimit
    assert document["kdf"]["memlimit"] == FAST.memlimit_bytes
    assert SEED.hex() not in protected.read_text()
    assert base64.b64encode(SEED).decode() not in protected.read_text()


def test_passphrase_for_unprotected_file_is_ignored(plain: Path) -> None:
    assert read_identity_file(plain, b"anything") == IDENTITY


def test_two_writes_use_different_salts(protected: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    write_identity_file(other, IDENTITY, PASSPHRASE, FAST)
    assert load(other)["kdf"]["salt"] != load(protected)["kdf"]["salt"]
    assert load(other)["key"] != load(protected)["key"]


def test_kdf_strength_presets_are_ordered() -> None:
    assert KdfStrength.MIN.memlimit_bytes < KdfStrength.INTERACTIVE.memlimit_bytes
    assert KdfStrength.INTERACTIVE.memlimit_bytes < KdfStrength.MODERATE.memlimit_bytes
    assert KdfStrength.MIN.opslimit < KdfStrength.MODERATE.opslimit


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="passphrase is empty"):
        write_identity_file(tmp_path / "k", IDENTITY, b"", FAST)
    assert list(tmp_path.iterdir()) == []


def test_passphrase_required(protected: Path) -> None:
    with pytest.raises(PassphraseRequired, match="protected by a passphrase"):
        read_identity_file(protected)


def test_wrong_passphrase(protected: Path) -> None:
    assert str(error_of(protected, b"wrong")) == WRONG_PASSPHRASE


def test_tampered_ciphertext(protected: Path) -> None:
    document = load(protected)
    sealed = bytearray(base64.b64decode(document["key"]))
    sealed[-5] ^= 0x01
    document["key"] = base64.b64encode(bytes(sealed)).decode()
    store(protected, document)
    assert str(error_of(protected, PASSPHRASE)) == WRONG_PASSPHRASE


@pytest.mark.parametrize(
    ("field", "value"),
    [("opslimit", 2), ("memlimit", 16384), ("salt", base64.b64encode(b"\x00" * 16).decode())],
)
def test_tampered_kdf_params(protected: Path, field: str, value: object) -> None:
    document = load(protected)
    document["kdf"][field] = value
    store(protected, document)
    assert str(error_of(protected, PASSPHRASE)) == WRONG_PASSPHRASE


@pytest.mark.parametrize(
    ("kdf", "expected"),
    [
        ({"alg": "scrypt"}, "key derivation this comm-tui does not know"),
        ("argon2id", "key derivation this comm-tui does not know"),
        ({"alg": "argon2id", "opslimit": "1", "memlimit": 8192}, "bad key derivation parameters"),
        ({"alg": "argon2id", "opslimit": True, "memlimit": 8192}, "bad key derivation parameters"),
        ({"alg": "argon2id", "opslimit": 1, "memlimit": 2**40}, "costs out of range"),
        ({"alg": "argon2id", "opslimit": 100, "memlimit": 8192}, "costs out of range"),
        (
            {"alg": "argon2id", "opslimit": 1, "memlimit": 8192, "salt": "AAAA"},
            "bad key derivation salt",
        ),
    ],
)
def test_bad_kdf_fields(protected: Path, kdf: object, expected: str) -> None:
    document = load(protected)
    document["kdf"] = kdf
    store(protected, document)
    assert expected in str(error_of(protected, PASSPHRASE))


def test_tampered_address_protected(protected: Path) -> None:
    document = load(protected)
    document["address"] = Identity.from_seed(b"\x01" * 32).address.hex()
    store(protected, document)
    assert "address does not match its key" in str(error_of(protected, PASSPHRASE))


def test_tampered_check_protected(protected: Path) -> None:
    document = load(protected)
    document["check"] = base64.b64encode(b"\x00" * 16).decode()
    store(protected, document)
    assert "checksum does not match" in str(error_of(protected, PASSPHRASE))


def test_corrupted_seed_is_detected(plain: Path) -> None:
    document = load(plain)
    seed = bytearray(SEED)
    seed[0] ^= 0x80
    document["key"] = base64.b64encode(bytes(seed)).decode()
    store(plain, document)
    assert "checksum does not match: the file is damaged" in str(error_of(plain))


def test_short_seed_is_detected(plain: Path) -> None:
    document = load(plain)
    document["key"] = base64.b64encode(SEED[:31]).decode()
    store(plain, document)
    assert "checksum does not match" in str(error_of(plain))


def test_address_mismatch(plain: Path) -> None:
    document = load(plain)
    document["address"] = "00" * 20
    store(plain, document)
    assert "address does not match its key" in str(error_of(plain))


@pytest.mark.parametrize("address", [None, 7, "zz" * 20, "00" * 19])
def test_bad_address_field(plain: Path, address: object) -> None:
    document = load(plain)
    document["address"] = address
    store(plain, document)
    assert "damaged: bad address" in str(error_of(plain))


@pytest.mark.parametrize("field", ["key", "check"])
def test_bad_base64(plain: Path, field: str) -> None:
    document = load(plain)
    document[field] = "not*base64!"
    store(plain, document)
    assert f"'{field}' is not valid base64" in str(error_of(plain))


@pytest.mark.parametrize("field", ["key", "check"])
def test_missing_field(plain: Path, field: str) -> None:
    document = load(plain)
    del document[field]
    store(plain, document)
    assert f"'{field}' is missing" in str(error_of(plain))


def test_future_version(plain: Path) -> None:
    document = load(plain)
    document["version"] = 2
    store(plain, document)
    assert str(error_of(plain)) == "key file format version 2 is newer than this comm-tui supports"


@pytest.mark.parametrize(("version", "expected"), [(0, "unknown format"), ("1", "no format")])
def test_bad_version(plain: Path, version: object, expected: str) -> None:
    document = load(plain)
    document["version"] = version
    store(plain, document)
    assert expected in str(error_of(plain))


@pytest.mark.parametrize("keep", [0, 1, 20, 100, -2])
def test_truncated_file(plain: Path, keep: int) -> None:
    plain.write_bytes(plain.read_bytes()[:keep])
    assert "not valid JSON" in str(error_of(plain))


@pytest.mark.parametrize(
    "content", ["[]", '"comm-tui-identity"', '{"format": "something-else"}', "{}"]
)
def test_wrong_format(plain: Path, content: str) -> None:
    plain.write_text(content)
    assert "is not a comm-tui key file" in str(error_of(plain))


def test_not_utf8(plain: Path) -> None:
    plain.write_bytes(b"\xff\xfe{}")
    assert "not valid JSON" in str(error_of(plain))


def test_deeply_nested_json(plain: Path) -> None:
    plain.write_text("[" * 50_000)
    assert "not valid JSON" in str(error_of(plain))


def test_oversized_file(plain: Path) -> None:
    plain.write_bytes(b" " * (MAX_KEY_FILE_BYTES + 1))
    assert "larger than" in str(error_of(plain))


def test_missing_file(tmp_path: Path) -> None:
    error = error_of(tmp_path / "nope.key")
    assert str(error) == f"no key file at {tmp_path / 'nope.key'}"
    with pytest.raises(KeyFileError):
        is_passphrase_protected(tmp_path / "nope.key")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "cannot read key file" in str(error_of(tmp_path))


SECRET_MUTATIONS: list[Callable[[dict[str, Any]], None]] = [
    lambda d: d.update(version=2),
    lambda d: d.update(address="00" * 20),
    lambda d: d.update(check=base64.b64encode(bytes(16)).decode()),
    lambda d: d.update(key=d["key"][:-4] + "AAA="),
    lambda d: d.update(key=d["key"] + "*"),
    lambda d: d.update(kdf={"alg": "argon2id", "opslimit": 1, "memlimit": 1}),
    lambda d: d.update(format="x"),
]


@pytest.mark.parametrize("mutate", SECRET_MUTATIONS)
@pytest.mark.parametrize("passphrase", [None, PASSPHRASE, b"wrong"])
def test_errors_never_contain_key_material(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], passphrase: bytes | None
) -> None:
    secrets = [SEED.hex(), base64.b64encode(SEED).decode(), SEED.hex().upper()]
    for key_passphrase in (None, PASSPHRASE):
        path = tmp_path / f"k{key_passphrase is None}"
        write_identity_file(path, IDENTITY, key_passphrase, FAST)
        document = load(path)
        secrets.append(document["key"])
        mutate(document)
        store(path, document)
        with pytest.raises(KeyFileError) as info:
            read_identity_file(path, passphrase)
        shown = [str(info.value), repr(info.value)]
        for secret in secrets:
            assert all(secret not in text for text in shown)


def test_identity_repr_has_no_seed() -> None:
    assert SEED.hex() not in repr(IDENTITY)


def test_failed_replace_keeps_old_file(plain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = plain.read_bytes()
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyFileError, match="cannot write key file") as info:
        write_identity_file(plain, Identity.generate())
    assert "No space left on device" in str(info.value)
    assert plain.read_bytes() == before
    assert list(plain.parent.iterdir()) == [plain]


def test_failed_fsync_keeps_old_file(plain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = plain.read_bytes()
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(KeyFileError):
        write_identity_file(plain, Identity.generate())
    assert plain.read_bytes() == before
    assert list(plain.parent.iterdir()) == [plain]


def test_overwrite_keeps_mode(plain: Path) -> None:
    other = Identity.generate()
    write_identity_file(plain, other)
    assert read_identity_file(plain) == other
    assert mode_of(plain) == 0o600
    assert list(plain.parent.iterdir()) == [plain]


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot write key file"):
        write_identity_file(tmp_path / "no" / "such" / "k", IDENTITY)


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "profile" / "nested" / "identity.key"
    identity, created = load_or_create_identity(path)
    assert created
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    again, created_again = load_or_create_identity(path)
    assert not created_again
    assert again == identity


def test_load_or_create_reports_damage(plain: Path) -> None:
    plain.write_text("{")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        load_or_create_identity(plain)


def test_load_or_create_unwritable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_args: object, **_kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StorageError, match="is not writable: Permission denied") as info:
        load_or_create_identity(tmp_path / "identity.key")
    assert "\n" not in str(info.value)


def test_load_or_create_directory_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "profile"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot create data directory"):
        load_or_create_identity(blocker / "identity.key")


def test_backup_path_avoids_existing_names(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    first = backup_path(path, now)
    assert first.name == "identity.key.bak-20240506070809"
    first.write_text("")
    second = backup_path(path, now)
    assert second.name == "identity.key.bak-20240506070809-1"
    second.write_text("")
    assert backup_path(path, now).name == "identity.key.bak-20240506070809-2"


def test_backup_path_defaults_to_now(tmp_path: Path) -> None:
    name = backup_path(tmp_path / "identity.key").name
    assert name.startswith("identity.key.bak-20")
    assert len(name) == len("identity.key.bak-YYYYmmddHHMMSS")


def test_replace_identity_keeps_backup(plain: Path) -> None:
    before = plain.read_bytes()
    new = Identity.generate()
    backup = replace_identity(plain, new)
    assert backup is not None
    assert backup.parent == plain.parent
    assert backup.read_bytes() == before
    assert mode_of(backup) == 0o600
    assert read_identity_file(backup) == IDENTITY
    assert read_identity_file(plain) == new
    assert os.stat(backup).st_ino != os.stat(plain).st_ino


def test_replace_identity_twice_keeps_both(plain: Path) -> None:
    first = replace_identity(plain, Identity.generate())
    second = replace_identity(plain, Identity.generate())
    assert first is not None and second is not None
    assert first != second
    assert first.exists() and second.exists()


def test_replace_identity_without_old_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    assert replace_identity(path, IDENTITY) is None
    assert read_identity_file(path) == IDENTITY


def test_replace_identity_failed_backup_keeps_old(
    plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = plain.read_bytes()
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(KeyFileError, match="cannot back up key file"):
        replace_identity(plain, Identity.generate())
    assert plain.read_bytes() == before
    assert list(plain.parent.iterdir()) == [plain]
