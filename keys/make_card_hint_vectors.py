"""Regenerate ``keys/card_hint_vectors.json``: version 2 cards, which carry endpoint hints.

The cards are packed here from the layout in ``keys/README.md`` ("Cards with endpoint
hints") with ``struct``, ``base64`` and PyNaCl's Ed25519 directly, not with
``comm_tui.crypto.card``, so the vectors check the code against the documented format.
Ed25519 signatures are deterministic: the file is the same on every run.

Run from the repository root: ``python -m keys.make_card_hint_vectors``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from comm_tui.crypto.card import read_card
from comm_tui.errors import CardError

VECTORS_PATH = Path(__file__).with_name("card_hint_vectors.json")
DOMAIN = b"comm-tui card hints\x00"
SEED = bytes(range(32))
ISSUED = 1_800_000_000  # 2027-01-15T08:00:00Z


def pack_hint(host: str, port: int, family: int | None = None) -> bytes:
    ip = ipaddress.ip_address(host)
    return bytes([family or ip.version]) + ip.packed + struct.pack(">H", port)


def signed_part(key: bytes, issued: int, hints: list[bytes], count: int | None = None) -> bytes:
    n = len(hints) if count is None else count
    return bytes([2]) + key + struct.pack(">IB", issued, n) + b"".join(hints)


def text(payload: bytes) -> str:
    return "comm1" + base64.b32encode(payload).decode("ascii").rstrip("=").lower()


def card(signing: SigningKey, signed: bytes) -> str:
    return text(signed + signing.sign(DOMAIN + signed).signature)


def error_of(card_text: str) -> str:
    try:
        read_card(card_text)
    except CardError as exc:
        return str(exc)
    raise AssertionError(f"card was accepted: {card_text}")


def main() -> None:
    signing = SigningKey(SEED)
    key = bytes(signing.verify_key)
    valid_cases: list[tuple[str, list[tuple[str, int]]]] = [
        ("one IPv4 hint", [("198.18.0.5", 7000)]),
        ("IPv4 and IPv6", [("198.18.0.5", 7000), ("2001:2::5", 7001)]),
        (
            "four hints, the most a card carries",
            [("198.18.0.5", 7000), ("198.19.1.2", 65535), ("2001:2::5", 1), ("2001:2:0:1::9", 7)],
        ),
    ]
    valid = []
    for description, hints in valid_cases:
        packed = [pack_hint(host, port) for host, port in hints]
        valid.append(
            {
                "description": description,
                "card": card(signing, signed_part(key, ISSUED, packed)),
                "public_key_hex": key.hex(),
                "issued": ISSUED,
                "hints": [[host, port] for host, port in hints],
            }
        )
    one = [pack_hint("198.18.0.5", 7000)]
    good = valid[0]["card"]
    other = SigningKey(bytes(32))
    signed = signed_part(key, ISSUED, one)
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
            "a hint changed after signing",
            text(signed_part(key, ISSUED, [pack_hint("198.18.0.6", 7000)]) + sig),
            "card signature does not match",
        ),
        ("truncated", good[:-3], "card is 177 characters, expected 180"),
        ("one character too many", good + "a", "card is 181 characters, expected 180"),
        ("no hints", card(signing, signed_part(key, ISSUED, [])), "card names 0 endpoint hints"),
        (
            "five hints",
            card(signing, signed_part(key, ISSUED, one * 5)),
            "card names 5 endpoint hints",
        ),
        (
            "address family 5",
            card(signing, signed_part(key, ISSUED, [pack_hint("198.18.0.5", 7000, 5)])),
            "address family 5",
        ),
        (
            "port 0",
            card(signing, signed_part(key, ISSUED, [pack_hint("198.18.0.5", 0)])),
            "which no node can be reached at",
        ),
        (
            "unspecified address",
            card(signing, signed_part(key, ISSUED, [pack_hint("0.0.0.0", 7000)])),
            "which no node can be reached at",
        ),
        (
            "multicast address",
            card(signing, signed_part(key, ISSUED, [pack_hint("ff02::1", 7000)])),
            "which no node can be reached at",
        ),
        (
            "IPv4-mapped IPv6 address",
            card(signing, signed_part(key, ISSUED, [pack_hint("::ffff:198.18.0.5", 7000)])),
            "which no node can be reached at",
        ),
        ("too short for the header", good[:40], "too short for a card with endpoint hints"),
    ]
    invalid: list[dict[str, Any]] = []
    for description, card_text, expected in invalid_cases:
        message = error_of(card_text)
        assert expected in message, (description, message)
        invalid.append({"description": description, "card": card_text, "error": expected})
    vectors = {
        "description": "Test vectors for version 2 contact cards (endpoint hints); see README.md.",
        "seed_hex": SEED.hex(),
        "domain_hex": DOMAIN.hex(),
        "cards": valid,
        "invalid_cards": invalid,
    }
    VECTORS_PATH.write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
