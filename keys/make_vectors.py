"""Regenerate ``keys/vectors.json``, the test vectors for cards and key files.

Cards are computed here from the byte layout in ``keys/README.md`` with the
standard library (hashlib, base64), not with ``comm_tui.crypto.card``, so the
vectors check the code against the documented format rather than against
itself. Key files are written by ``comm_tui.crypto.keyfile``; salts and nonces
are random, so those two entries change on every run.

Run from the repository root: ``python -m keys.make_vectors``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from comm_tui.crypto.card import decode_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import KdfStrength, read_identity_file, write_identity_file
from comm_tui.errors import CardError, KeyFileError

VECTORS_PATH = Path(__file__).with_name("vectors.json")
CARD_DOMAIN = b"comm-tui card\x00"
PASSPHRASE = "correct horse battery staple"
SEEDS = {
    "bytes 0x00..0x1f": bytes(range(32)),
    "32 x 0x42": b"\x42" * 32,
    "bytes 0xff..0xe0": bytes(range(0xFF, 0xDF, -1)),
    "32 x 0x00": bytes(32),
}
# 32 zero bytes decode to a point of small order, which no real key is.
INVALID_POINT = bytes(32)


def card_for(version: int, key: bytes) -> str:
    checksum = hashlib.blake2b(CARD_DOMAIN + bytes([version]) + key, digest_size=4).digest()
    body = base64.b32encode(bytes([version]) + key + checksum).decode("ascii")
    return "comm1" + body.rstrip("=").lower()


def substitute(card: str, index: int, char: str) -> str:
    return card[:index] + char + card[index + 1 :]


def card_error(card: str) -> str:
    try:
        decode_card(card)
    except CardError as exc:
        return str(exc)
    raise AssertionError(f"card was accepted: {card}")


def identity_vectors() -> list[dict[str, str]]:
    vectors = []
    for name, seed in SEEDS.items():
        key = bytes(SigningKey(seed).verify_key)
        vectors.append(
            {
                "name": name,
                "seed_hex": seed.hex(),
                "public_key_hex": key.hex(),
                "address_hex": hashlib.blake2b(key, digest_size=20).hexdigest(),
                "card": card_for(1, key),
            }
        )
    return vectors


def invalid_cards(card: str, key: bytes) -> list[dict[str, str]]:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    typo_at = 30
    typo = alphabet[(alphabet.index(card[typo_at]) + 1) % len(alphabet)]
    # The last character's low four bits are unused; flipping one keeps the bytes.
    last = alphabet[alphabet.index(card[-1]) ^ 1]
    cases = [
        ("one-character typo", substitute(card, typo_at, typo), "card checksum does not match"),
        ("unused bits of the last character set", card[:-1] + last, "card checksum does not match"),
        ("wrong prefix", "comm2" + card[5:], "it should start with 'comm1'"),
        ("empty", "", "it should start with 'comm1'"),
        ("truncated", card[:-4], "card is 61 characters, expected 65"),
        ("one character too many", card + "a", "card is 66 characters, expected 65"),
        ("bad character", substitute(card, 10, "0"), "'0'"),
        ("wrong version", card_for(4, key), "card version 4"),
        ("key not on the curve", card_for(1, INVALID_POINT), "not a valid public key"),
    ]
    vectors = []
    for description, text, expected in cases:
        message = card_error(text)
        assert expected in message, (description, message)
        vectors.append({"description": description, "card": text, "error": expected})
    return vectors


def key_file(path: Path, identity: Identity, passphrase: str | None) -> dict[str, Any]:
    secret = None if passphrase is None else passphrase.encode()
    write_identity_file(path, identity, secret, KdfStrength.MIN)
    assert read_identity_file(path, secret) == identity
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def key_file_error(path: Path, document: dict[str, Any], passphrase: str | None) -> str:
    path.write_text(json.dumps(document))
    try:
        read_identity_file(path, None if passphrase is None else passphrase.encode())
    except KeyFileError as exc:
        return str(exc)
    raise AssertionError("key file was accepted")


def key_file_vectors(seed: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    identity = Identity.from_seed(seed)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "identity.key"
        protected = key_file(path, identity, PASSPHRASE)
        plain = key_file(path, identity, None)
        valid: list[dict[str, Any]] = [
            {
                "description": "passphrase protected, Argon2id MIN limits",
                "passphrase": PASSPHRASE,
                "seed_hex": seed.hex(),
                "address_hex": identity.address.hex(),
                "file": protected,
            },
            {
                "description": "unprotected",
                "passphrase": None,
                "seed_hex": seed.hex(),
                "address_hex": identity.address.hex(),
                "file": plain,
            },
        ]
        cases = [
            ("wrong passphrase", protected, "wrong", "wrong passphrase"),
            ("no passphrase", protected, None, "protected by a passphrase"),
            (
                "tampered opslimit",
                {**protected, "kdf": {**protected["kdf"], "opslimit": 2}},
                PASSPHRASE,
                "wrong passphrase, or the key file was modified",
            ),
            (
                "future version",
                {**plain, "version": 2},
                None,
                "key file format version 2 is newer than this comm-tui supports",
            ),
            (
                "address of another key",
                {**plain, "address": "00" * 20},
                None,
                "address does not match",
            ),
            (
                "seed changed, check not",
                {**plain, "key": base64.b64encode(b"\x43" * 32).decode()},
                None,
                "checksum does not match",
            ),
        ]
        invalid: list[dict[str, Any]] = []
        for description, document, passphrase, expected in cases:
            message = key_file_error(path, document, passphrase)
            assert expected in message, (description, message)
            invalid.append(
                {
                    "description": description,
                    "passphrase": passphrase,
                    "file": document,
                    "error": expected,
                }
            )
    return valid, invalid


def main() -> None:
    identities = identity_vectors()
    first = identities[0]["card"]
    groups = [first.upper()[i : i + 13] for i in range(0, len(first), 13)]
    valid_files, invalid_files = key_file_vectors(SEEDS["32 x 0x42"])
    vectors = {
        "description": "Test vectors for comm-tui contact cards and key files; see README.md.",
        "identities": identities,
        "card_variants": [
            {
                "description": "upper case, split into groups by hyphens and a newline",
                "card": "-".join(groups[:3]) + "\n" + "-".join(groups[3:]),
                "public_key_hex": identities[0]["public_key_hex"],
            },
            {
                "description": "surrounding whitespace and inner spaces",
                "card": "  " + first[:20] + " " + first[20:40] + "\t" + first[40:] + "\n",
                "public_key_hex": identities[0]["public_key_hex"],
            },
        ],
        "invalid_cards": invalid_cards(first, bytes.fromhex(identities[0]["public_key_hex"])),
        "key_files": valid_files,
        "invalid_key_files": invalid_files,
    }
    VECTORS_PATH.write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
