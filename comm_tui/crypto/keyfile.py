"""Identity files and exported key files: one small JSON format for both.

The identity seed is the one secret a user has, so this module is careful in the
ways that matter for it: files are created 0600 and written atomically (a crash
or a full disk never leaves a half-written identity), a replaced identity is kept
as a backup, corruption and tampering are detected, and no key material ever
reaches an exception message or a log. The format is documented in
``keys/README.md``.

An exported key can be protected by a passphrase: Argon2id stretches it into a
SecretBox key that encrypts the seed. The KDF parameters are bound by the
derivation itself (other parameters give another key, which fails to decrypt),
and the address is checked against the decrypted seed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeGuard

import nacl.utils
from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id
from nacl.secret import SecretBox

from comm_tui.crypto.identity import ADDRESS_BYTES, SEED_BYTES, Identity
from comm_tui.errors import KeyFileError, StorageError

KEY_FILE_FORMAT = "comm-tui-identity"
KEY_FILE_VERSION = 1
KDF_ALG = "argon2id"
CHECK_BYTES = 16
_CHECK_DOMAIN = b"comm-tui identity check\x00"
# A key file is a few hundred bytes; refuse to load anything much larger.
MAX_KEY_FILE_BYTES = 64 * 1024
# A file may ask for any cost up to SENSITIVE; more would let a crafted file
# make us allocate gigabytes or spin for minutes.
MAX_KDF_OPSLIMIT = argon2id.OPSLIMIT_SENSITIVE
MAX_KDF_MEMLIMIT_BYTES = argon2id.MEMLIMIT_SENSITIVE
FILE_MODE = 0o600
DIR_MODE = 0o700
_BACKUP_STAMP_FORMAT = "%Y%m%d%H%M%S"

WRONG_PASSPHRASE = "wrong passphrase, or the key file was modified"


class PassphraseRequired(KeyFileError):
    """The key file is passphrase protected and no passphrase was given; prompt and retry."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open the key file (or the sealed key was modified); ask again."""


class KdfStrength(Enum):
    """Argon2id cost presets as (opslimit, memlimit in bytes).

    MODERATE (3 passes, 256 MiB) is the default for files a user keeps;
    INTERACTIVE (2 passes, 64 MiB) suits constrained machines; MIN exists so
    tests run in milliseconds and must not be used for real keys.
    """

    MIN = (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
    INTERACTIVE = (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
    MODERATE = (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)

    @property
    def opslimit(self) -> int:
        return self.value[0]

    @property
    def memlimit_bytes(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class _Kdf:
    opslimit: int
    memlimit_bytes: int
    salt: bytes


@dataclass(frozen=True)
class _KeyFile:
    """A parsed, shape-checked key file; the key is still sealed or unverified."""

    address: bytes
    kdf: _Kdf | None
    key: bytes
    check: bytes


def _check_of(seed: bytes) -> bytes:
    return hashlib.blake2b(_CHECK_DOMAIN + seed, digest_size=CHECK_BYTES).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive_key(passphrase: bytes, kdf: _Kdf) -> bytes:
    try:
        return argon2id.kdf(
            SecretBox.KEY_SIZE,
            passphrase,
            kdf.salt,
            opslimit=kdf.opslimit,
            memlimit=kdf.memlimit_bytes,
        )
    except CryptoError as exc:
        raise KeyFileError(
            "cannot derive the key from the passphrase (not enough memory?)"
        ) from exc


def _encode(identity: Identity, passphrase: bytes | None, strength: KdfStrength) -> bytes:
    seed = identity.seed
    kdf_doc: dict[str, Any] | None = None
    key = seed
    if passphrase is not None:
        if not passphrase:
            raise KeyFileError("the passphrase is empty: give one, or none for no protection")
        kdf = _Kdf(
            strength.opslimit, strength.memlimit_bytes, nacl.utils.random(argon2id.SALTBYTES)
        )
        key = bytes(SecretBox(_derive_key(passphrase, kdf)).encrypt(seed))
        kdf_doc = {
            "alg": KDF_ALG,
            "opslimit": kdf.opslimit,
            "memlimit": kdf.memlimit_bytes,
            "salt": _b64(kdf.salt),
        }
    document = {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "address": identity.address.hex(),
        "kdf": kdf_doc,
        "key": _b64(key),
        "check": _b64(_check_of(seed)),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; POSIX only, Windows cannot open directories."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_private(path: Path, data: bytes) -> None:
    """Write a new file that nobody else can read; fails if ``path`` exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    _create_private(temp, data)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


FAST_KDF_ENV = "COMM_TUI_TEST_FAST_KDF"


def export_strength() -> KdfStrength:
    """MODERATE for every key a person keeps; MIN only when a test sets FAST_KDF_ENV=1."""
    return KdfStrength.MIN if os.environ.get(FAST_KDF_ENV) == "1" else KdfStrength.MODERATE


def write_identity_file(
    path: Path,
    identity: Identity,
    passphrase: bytes | None = None,
    strength: KdfStrength = KdfStrength.MODERATE,
) -> None:
    """Write ``identity`` to ``path`` atomically with mode 0600; encrypted if given a passphrase."""
    data = _encode(identity, passphrase, strength)
    try:
        _write_atomic(path, data)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or exc}") from None


def _not_key_file(path: Path, why: str) -> KeyFileError:
    return KeyFileError(f"{path} is not a comm-tui key file: {why}")


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"no key file at {path}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _not_key_file(path, f"it is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _field_bytes(path: Path, document: dict[str, Any], name: str) -> bytes:
    value = document.get(name)
    if not isinstance(value, str):
        raise _not_key_file(path, f"'{name}' is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        # Say nothing about the value: this field may hold the seed.
        raise KeyFileError(f"key file {path} is damaged: '{name}' is not valid base64") from None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_kdf(path: Path, value: object) -> _Kdf | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("alg") != KDF_ALG:
        raise KeyFileError(f"key file {path} uses a key derivation this comm-tui does not know")
    opslimit, memlimit = value.get("opslimit"), value.get("memlimit")
    if not (_is_int(opslimit) and _is_int(memlimit)):
        raise KeyFileError(f"key file {path} is damaged: bad key derivation parameters")
    if not (argon2id.OPSLIMIT_MIN <= opslimit <= MAX_KDF_OPSLIMIT) or not (
        argon2id.MEMLIMIT_MIN <= memlimit <= MAX_KDF_MEMLIMIT_BYTES
    ):
        raise KeyFileError(f"key file {path} asks for key derivation costs out of range")
    salt = _field_bytes(path, value, "salt")
    if len(salt) != argon2id.SALTBYTES:
        raise KeyFileError(f"key file {path} is damaged: bad key derivation salt")
    return _Kdf(opslimit, memlimit, salt)


def _parse(path: Path) -> _KeyFile:
    try:
        document = json.loads(_read_bytes(path))
    except (ValueError, RecursionError):
        raise _not_key_file(path, "it is not valid JSON (truncated or damaged?)") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise _not_key_file(path, f'it has no "format": "{KEY_FILE_FORMAT}"')
    version = document.get("version")
    if not _is_int(version):
        raise _not_key_file(path, "it has no format version")
    if version > KEY_FILE_VERSION:
        raise KeyFileError(
            f"key file format version {version} is newer than this comm-tui supports"
        )
    if version != KEY_FILE_VERSION:
        raise _not_key_file(path, f"unknown format version {version}")
    address_text = document.get("address")
    try:
        address = bytes.fromhex(address_text) if isinstance(address_text, str) else b""
    except ValueError:
        address = b""
    if len(address) != ADDRESS_BYTES:
        raise KeyFileError(f"key file {path} is damaged: bad address")
    return _KeyFile(
        address=address,
        kdf=_parse_kdf(path, document.get("kdf")),
        key=_field_bytes(path, document, "key"),
        check=_field_bytes(path, document, "check"),
    )


def read_identity_file(path: Path, passphrase: bytes | None = None) -> Identity:
    """The identity in a key file; :class:`KeyFileError` with one line if it cannot be had.

    Raises :class:`PassphraseRequired` for a protected file read without a
    passphrase. A passphrase given for an unprotected file is not needed and
    is ignored.
    """
    parsed = _parse(path)
    if parsed.kdf is None:
        seed = parsed.key
    elif passphrase is None:
        raise PassphraseRequired(f"key file {path} is protected by a passphrase")
    else:
        try:
            seed = bytes(SecretBox(_derive_key(passphrase, parsed.kdf)).decrypt(parsed.key))
        except CryptoError:
            raise WrongPassphrase(WRONG_PASSPHRASE) from None
    if len(seed) != SEED_BYTES or not hmac.compare_digest(_check_of(seed), parsed.check):
        raise KeyFileError(f"key file {path} checksum does not match: the file is damaged")
    identity = Identity.from_seed(seed)
    if not hmac.compare_digest(identity.address, parsed.address):
        raise KeyFileError(f"key file {path} address does not match its key: it was modified")
    return identity


def is_passphrase_protected(path: Path) -> bool:
    """Whether reading ``path`` needs a passphrase; :class:`KeyFileError` if it is no key file."""
    return _parse(path).kdf is not None


def key_file_address(path: Path) -> bytes:
    """The address a key file claims, read without its passphrase (the address is public).

    Not verified against the key: use it to name or compare identities, never to trust one.
    """
    return _parse(path).address


def unprotected_backups(path: Path) -> list[Path]:
    """Backups of ``path`` (``<name>.bak-*``) that hold a key without a passphrase.

    Protecting the identity does not protect these older copies; the CLI names them so
    that the user can delete or protect them. Unreadable files are not listed.
    """
    found = []
    for candidate in sorted(path.parent.glob(f"{path.name}.bak-*")):
        with contextlib.suppress(KeyFileError):
            if not is_passphrase_protected(candidate):
                found.append(candidate)
    return found


def load_or_create_identity(path: Path) -> tuple[Identity, bool]:
    """The profile's identity, generated and saved on first use; the flag says it was created."""
    directory = path.parent
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create data directory {directory}: {exc.strerror or exc}"
        ) from None
    if path.exists():
        return read_identity_file(path), False
    identity = Identity.generate()
    try:
        _write_atomic(path, _encode(identity, None, KdfStrength.MODERATE))
    except OSError as exc:
        raise StorageError(
            f"data directory {directory} is not writable: {exc.strerror or exc}"
        ) from None
    return identity, True


def backup_path(path: Path, now: datetime | None = None) -> Path:
    """A free name beside ``path``: ``<name>.bak-YYYYmmddHHMMSS`` (UTC), then ``-1``, ``-2``…"""
    stamp = (now or datetime.now(UTC)).strftime(_BACKUP_STAMP_FORMAT)
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    counter = 0
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{counter}")
    return candidate


def replace_identity(
    path: Path,
    new: Identity,
    passphrase: bytes | None = None,
    strength: KdfStrength = KdfStrength.MODERATE,
) -> Path | None:
    """Save ``new`` at ``path``, first copying any old file to a 0600 backup; return its path.

    ``passphrase`` protects the new file (see :func:`write_identity_file`); the backup is
    a byte-for-byte copy, so it keeps whatever protection the old file had.
    """
    backup: Path | None = None
    if path.exists():
        backup = backup_path(path)
        try:
            _create_private(backup, path.read_bytes())
        except OSError as exc:
            raise KeyFileError(f"cannot back up key file {path}: {exc.strerror or exc}") from None
    write_identity_file(path, new, passphrase, strength)
    return backup
