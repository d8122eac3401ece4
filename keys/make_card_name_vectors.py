"""Regenerate ``keys/card_name_vectors.json``: version 3 cards, which carry a display name.

The cards are packed here from the layout in ``keys/README.md`` ("Cards with a name")
with ``struct``, ``base64`` and PyNaCl's Ed25519 directly, not with
``comm_tui.crypto.card``, so the vectors check the code against the documented format.
Ed25519 signatures are deterministic: the file is the same on every run.

Run from the repository root: ``python -m keys.make_card_name_vectors``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

# The version 2 generator's packing, not the product's: both stay independent of
# comm_tui.crypto.card, which the vectors check.
from keys.make_card_hint_vectors import ISSUED, SEED, error_of, pack_hint, text

VECTORS_PATH = Path(__file__).with_name("card_name_vectors.json")
DOMAIN = b"comm-tui named card\x00"


def signed_part(
    key: bytes,
    issued: int,
    name: bytes,
    name_version: int,
    hints: list[bytes],
    *,
    name_length: int | None = None,
    count: int | None = None,
) -> bytes:
    length = len(name) if name_length is None else name_length
    n = len(hints) if count is None else count
    return (
        bytes([3])
        + key
        + struct.pack(">IIB", issued, name_version, length)
        + name
        + bytes([n])
        + b"".join(hints)
    )


def card(signing: SigningKey, signed: bytes) -> str:
    return text(signed + signing.sign(DOMAIN + signed).signature)


def main() -> None:
    signing = SigningKey(SEED)
    key = bytes(signing.verify_key)
    valid_cases: list[tuple[str, str, int, int, list[tuple[str, int]]]] = [
        ("a name, no hints (issued 0)", "Alice", 1, 0, []),
        ("a name and one IPv4 hint", "Alice", 3, ISSUED, [("198.18.0.5", 7000)]),
        ("a one-byte name", "A", 1, 0, []),
        ("a name that is not ASCII", "Zoë 李", 2, 0, []),
        (
            "the longest name and four hints, the largest card",
            "x" * 64,
            2**32 - 1,
            ISSUED,
            [("2001:2::5", 1), ("2001:2::6", 2), ("2001:2::7", 3), ("2001:2::8", 4)],
        ),
    ]
    valid = []
    for description, name, version, issued, hints in valid_cases:
        packed = [pack_hint(host, port) for host, port in hints]
        raw = name.encode("utf-8")
        valid.append(
            {
                "description": description,
                "card": card(signing, signed_part(key, issued, raw, version, packed)),
                "public_key_hex": key.hex(),
                "issued": issued,
                "name": name,
                "name_version": version,
                "hints": [[host, port] for host, port in hints],
            }
        )
    good = valid[0]["card"]
    other = SigningKey(bytes(32))
    signed = signed_part(key, 0, b"Alice", 1, [])
    sig = signing.sign(DOMAIN + signed).signature
    invalid_cases = [
        (
            "one-character typo",
            good[:60] + ("a" if good[60] != "a" else "b") + good[61:],
            "card signature does not match",
        ),
        (
            "signed by another key",
            text(signed + other.sign(DOMAIN + signed).signature),
            "card signature does not match",
        ),
        (
            "the name changed after signing",
            text(signed_part(key, 0, b"Alicf", 1, []) + sig),
            "card signature does not match",
        ),
        (
            "the name version changed after signing",
            text(signed_part(key, 0, b"Alice", 2, []) + sig),
            "card signature does not match",
        ),
        (
            "signed with the domain of version 2",
            text(signed + signing.sign(b"comm-tui card hints\x00" + signed).signature),
            "card signature does not match",
        ),
        ("truncated", good[:-3], "card is 182 characters, expected 185"),
        ("one character too many", good + "a", "card is 186 characters, expected 185"),
        ("too short for the header", good[:60], "too short for a card with a name"),
        ("empty name", card(signing, signed_part(key, 0, b"", 1, [])), "a name of 0 bytes"),
        (
            "a name of 65 bytes",
            card(signing, signed_part(key, 0, b"x" * 65, 1, [])),
            "a name of 65 bytes",
        ),
        (
            "five hints",
            card(signing, signed_part(key, 0, b"Alice", 1, [pack_hint("198.18.0.5", 1)] * 5)),
            "card names 5 endpoint hints",
        ),
        (
            "a hint on port 0",
            card(signing, signed_part(key, 0, b"Alice", 1, [pack_hint("198.18.0.5", 0)])),
            "which no node can be reached at",
        ),
        (
            "name version 0",
            card(signing, signed_part(key, 0, b"Alice", 0, [])),
            "version 0",
        ),
        (
            "a name that is not UTF-8",
            card(signing, signed_part(key, 0, b"Al\xffce", 1, [])),
            "not UTF-8",
        ),
        (
            "a name with an escape character",
            card(signing, signed_part(key, 0, b"\x1b[31mAlice", 1, [])),
            "cannot be shown",
        ),
        (
            "a name with a right-to-left override",
            card(signing, signed_part(key, 0, "Alice\u202eevil".encode(), 1, [])),
            "cannot be shown",
        ),
        (
            "a name on two lines",
            card(signing, signed_part(key, 0, b"Alice\nBob", 1, [])),
            "cannot be shown",
        ),
        (
            "a name with a leading space",
            card(signing, signed_part(key, 0, b" Alice", 1, [])),
            "cannot be shown",
        ),
        (
            "a name not in NFC",
            card(signing, signed_part(key, 0, "Zoe\u0308".encode(), 1, [])),
            "cannot be shown",
        ),
    ]
    invalid: list[dict[str, Any]] = []
    for description, card_text, expected in invalid_cases:
        message = error_of(card_text)
        assert expected in message, (description, message)
        invalid.append({"description": description, "card": card_text, "error": expected})
    vectors = {
        "description": "Test vectors for version 3 contact cards (a display name); see README.md.",
        "seed_hex": SEED.hex(),
        "domain_hex": DOMAIN.hex(),
        "cards": valid,
        "invalid_cards": invalid,
    }
    VECTORS_PATH.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
