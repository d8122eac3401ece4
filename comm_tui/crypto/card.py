"""Contact cards: the text a user shares so that others can add them as a contact.

A card carries the Ed25519 public key and a 4-byte checksum, so a card that was
mistyped or cut short on its way between people is rejected with a message that
says what is wrong, instead of silently adding a contact nobody holds the key of.
The layout is documented, with test vectors, in ``keys/README.md``:

    "comm1" + base32(version 0x01 || 32-byte public key || 4-byte checksum)

in lowercase RFC 4648 base32 without padding (60 characters, 65 with the prefix).
The base32 alphabet has no 0, 1, 8 or 9, so the digits that look like letters
cannot be mistyped into a card that still decodes.
"""

from __future__ import annotations

import base64

from nacl.encoding import RawEncoder
from nacl.hash import blake2b

from comm_tui.crypto.identity import PUBLIC_KEY_BYTES, PublicIdentity
from comm_tui.errors import CardError

CARD_PREFIX = "comm1"
CARD_VERSION = 1
CHECKSUM_BYTES = 4
_CHECKSUM_DOMAIN = b"comm-tui card\x00"
_PAYLOAD_BYTES = 1 + PUBLIC_KEY_BYTES + CHECKSUM_BYTES
# 37 bytes are 296 bits: 59 full base32 characters and one carrying a single bit.
_BODY_CHARS = (_PAYLOAD_BYTES * 8 + 4) // 5
CARD_CHARS = len(CARD_PREFIX) + _BODY_CHARS
_BASE32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _checksum(version: int, key: bytes) -> bytes:
    return blake2b(
        _CHECKSUM_DOMAIN + bytes([version]) + key,
        digest_size=CHECKSUM_BYTES,
        encoder=RawEncoder,
    )


def _encode_body(payload: bytes) -> str:
    return base64.b32encode(payload).decode("ascii").rstrip("=").lower()


def _normalize(text: str) -> str:
    """Fold case and drop whitespace and hyphens, which people add to split a long card."""
    return "".join(text.split()).replace("-", "").lower()


def _show_char(char: str) -> str:
    return repr(char) if char.isprintable() else f"U+{ord(char):04X}"


def encode_card(identity: PublicIdentity) -> str:
    """The card text for a public identity, 65 lowercase characters."""
    payload = bytes([CARD_VERSION]) + identity.key + _checksum(CARD_VERSION, identity.key)
    return CARD_PREFIX + _encode_body(payload)


def looks_like_card(text: str) -> bool:
    """Whether ``text`` was meant as a card rather than a contact name.

    Only the prefix is checked, so a damaged card still counts as a card and
    gets :func:`decode_card`'s explanation instead of "no such contact".
    """
    return _normalize(text).startswith(CARD_PREFIX)


def decode_card(text: str) -> PublicIdentity:
    """The public identity in a card, or :class:`CardError` saying what is wrong with it."""
    card = _normalize(text)
    if not card.startswith(CARD_PREFIX):
        raise CardError(f"not a comm-tui card: it should start with '{CARD_PREFIX}'")
    body = card[len(CARD_PREFIX) :]
    for char in body:
        if char not in _BASE32_ALPHABET:
            raise CardError(
                f"card contains {_show_char(char)}, which cannot appear in a card"
                " (cards use only the letters a-z and the digits 2-7)"
            )
    if len(card) != CARD_CHARS:
        raise CardError(f"card is {len(card)} characters, expected {CARD_CHARS}")
    # Length and alphabet are checked, so this cannot fail.
    payload = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    version = payload[0]
    if version != CARD_VERSION:
        raise CardError(
            f"card version {version} is not supported by this comm-tui (it reads version"
            f" {CARD_VERSION}): check the card for typos, or update comm-tui"
        )
    key = payload[1 : 1 + PUBLIC_KEY_BYTES]
    checksum = payload[1 + PUBLIC_KEY_BYTES :]
    # The last character carries one bit and four unused ones; base32 decoders
    # ignore the unused bits, so a typo there is caught by re-encoding.
    if checksum != _checksum(version, key) or _encode_body(payload) != body:
        raise CardError("card checksum does not match: check it for typos")
    identity = PublicIdentity(key)
    try:
        _ = identity.box_key  # the X25519 conversion rejects points that are no key
    except ValueError as exc:
        raise CardError("card holds a key that is not a valid public key") from exc
    return identity
