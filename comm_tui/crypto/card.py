"""Contact cards: the text a user shares so that others can add them as a contact.

A card carries the Ed25519 public key and a 4-byte checksum, so a card that was
mistyped or cut short on its way between people is rejected with a message that
says what is wrong, instead of silently adding a contact nobody holds the key of.
The layout is documented, with test vectors, in ``keys/README.md``:

    "comm1" + base32(version 0x01 || 32-byte public key || 4-byte checksum)

in lowercase RFC 4648 base32 without padding (60 characters, 65 with the prefix).
The base32 alphabet has no 0, 1, 8 or 9, so the digits that look like letters
cannot be mistyped into a card that still decodes.

A version 2 card also carries the issuer's endpoint hints (where its node could be
reached when the card was made), signed by the identity key, so that a new user
who has nothing but the card can join the network through them
(docs/PROTOCOL.md, "13.2 Endpoint hints in cards"):

    "comm1" + base32(0x02 || key || issued (u32) || count (u8) || hints || signature)

A version 3 card carries the issuer's display name as well, with the name's version
and 0 to 4 endpoint hints, signed by the identity key (docs/PROTOCOL.md, "13.2.1 Names
in cards"):

    "comm1" + base32(0x03 || key || issued (u32) || name version (u32) || name length (u8)
                     || name || count (u8) || hints || signature)

A version 1 card reads exactly as before; :func:`read_card` reads all three, and
:func:`issue_card` picks the smallest version that says what is to be said.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError

from comm_tui.crypto.identity import PUBLIC_KEY_BYTES, Identity, PublicIdentity
from comm_tui.errors import CardError
from comm_tui.protocol.letters import DISPLAY_NAME_MAX_BYTES, is_display_name
from comm_tui.protocol.routing import Endpoint

CARD_PREFIX = "comm1"
CARD_VERSION = 1
CHECKSUM_BYTES = 4
_CHECKSUM_DOMAIN = b"comm-tui card\x00"
_PAYLOAD_BYTES = 1 + PUBLIC_KEY_BYTES + CHECKSUM_BYTES
# 37 bytes are 296 bits: 59 full base32 characters and one carrying a single bit.
_BODY_CHARS = (_PAYLOAD_BYTES * 8 + 4) // 5
CARD_CHARS = len(CARD_PREFIX) + _BODY_CHARS
_BASE32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")

# Version 2: docs/PROTOCOL.md, "13.2 Endpoint hints in cards".
HINTS_CARD_VERSION = 2
MAX_CARD_HINTS = 4
_HINTS_DOMAIN = b"comm-tui card hints\x00"
_HINTS_HEADER_BYTES = 1 + PUBLIC_KEY_BYTES + 4 + 1  # version, key, issued, count
_SIGNATURE_BYTES = 64
_FAMILY_IP_BYTES = {4: 4, 6: 16}

# Version 3: docs/PROTOCOL.md, "13.2.1 Names in cards".
NAMED_CARD_VERSION = 3
MAX_NAME_VERSION = 2**32 - 1  # the name's version travels as a u32 in a card
_NAMED_DOMAIN = b"comm-tui named card\x00"
# version, key, issued, name version, name length
_NAMED_HEADER_BYTES = 1 + PUBLIC_KEY_BYTES + 4 + 4 + 1


@dataclass(frozen=True)
class Card:
    """What a card says: whose it is, from version 2 where its node was reachable, and
    from version 3 what its holder calls themselves.

    ``issued`` (Unix seconds) orders two cards of one identity: the newer one's hints
    replace the older one's. ``name`` is a claim, like the name letter it stands for
    (docs/PROTOCOL.md, "7.1.1"): ``name_version`` orders it against the name letters
    of the same author, so an old card cannot undo a rename.
    """

    identity: PublicIdentity
    hints: tuple[Endpoint, ...] = ()
    issued: int = 0
    name: str | None = None
    name_version: int = 0


def _chars(payload_bytes: int) -> int:
    return len(CARD_PREFIX) + (payload_bytes * 8 + 4) // 5


def _checksum(version: int, key: bytes) -> bytes:
    return hashlib.blake2b(
        _CHECKSUM_DOMAIN + bytes([version]) + key, digest_size=CHECKSUM_BYTES
    ).digest()


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


def _pack_hint(endpoint: Endpoint) -> bytes:
    """family (4 or 6) || IP (4 or 16 bytes) || port (u16, big-endian)."""
    host, port = endpoint
    ip = ipaddress.ip_address(host)
    if not 0 < port < 65536 or ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{host}:{port} cannot be an endpoint hint")
    return bytes([ip.version]) + ip.packed + struct.pack(">H", port)


def encode_hints_card(identity: Identity, hints: list[Endpoint], issued: int) -> str:
    """A version 2 card naming ``hints`` (1 to 4 endpoints), signed by ``identity``.

    ``issued`` is the Unix time in seconds. Raises ValueError for hints that cannot be
    put in a card (none, too many, not IP addresses, port 0, unspecified or multicast).
    """
    if not 1 <= len(hints) <= MAX_CARD_HINTS:
        raise ValueError(f"a card carries 1 to {MAX_CARD_HINTS} endpoint hints")
    signed = (
        bytes([HINTS_CARD_VERSION])
        + identity.key
        + struct.pack(">IB", issued, len(hints))
        + b"".join(_pack_hint(hint) for hint in hints)
    )
    return CARD_PREFIX + _encode_body(signed + identity.sign(_HINTS_DOMAIN + signed))


def encode_named_card(
    identity: Identity, name: str, name_version: int, hints: list[Endpoint], issued: int
) -> str:
    """A version 3 card: ``name`` (a display name as it travels, docs/PROTOCOL.md,
    "7.1.1") at ``name_version``, and 0 to 4 ``hints``, signed by ``identity``.

    Raises ValueError for a name that is not a display name, a version outside 1 to
    2^32 - 1, or hints that cannot be put in a card.
    """
    if not is_display_name(name):
        raise ValueError("not a display name")
    if not 1 <= name_version <= MAX_NAME_VERSION:
        raise ValueError(f"a card carries name versions 1 to {MAX_NAME_VERSION}")
    if len(hints) > MAX_CARD_HINTS:
        raise ValueError(f"a card carries 0 to {MAX_CARD_HINTS} endpoint hints")
    raw = name.encode("utf-8")
    signed = (
        bytes([NAMED_CARD_VERSION])
        + identity.key
        + struct.pack(">IIB", issued, name_version, len(raw))
        + raw
        + bytes([len(hints)])
        + b"".join(_pack_hint(hint) for hint in hints)
    )
    return CARD_PREFIX + _encode_body(signed + identity.sign(_NAMED_DOMAIN + signed))


def issue_card(
    identity: Identity,
    hints: list[Endpoint],
    issued: int,
    name: tuple[str, int] | None = None,
) -> str:
    """Our card with what there is to say, in the shortest version that says it.

    ``name`` is our display name and its version (docs/PROTOCOL.md, "7.1.1"), or None.
    A card without hints has ``issued`` 0: it says nothing about where we are, so it
    replaces no hints a contact kept, and the same name gives the same card every time.
    """
    if name is not None:
        return encode_named_card(identity, name[0], name[1], hints, issued if hints else 0)
    if hints:
        return encode_hints_card(identity, hints, issued)
    return encode_card(identity.public)


def decode_card(text: str) -> PublicIdentity:
    """The public identity in a card, or :class:`CardError` saying what is wrong with it."""
    return read_card(text).identity


def read_card(text: str) -> Card:
    """Everything a card (version 1, 2 or 3) says, or :class:`CardError` saying what is wrong."""
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
    first = _decode_body(body[:8])[0] if len(body) >= 2 else None
    if first == HINTS_CARD_VERSION:
        return _read_hints_card(card, body)
    if first == NAMED_CARD_VERSION:
        return _read_named_card(card, body)
    if len(card) != CARD_CHARS:
        raise CardError(f"card is {len(card)} characters, expected {CARD_CHARS}")
    payload = _decode_body(body)
    version = payload[0]
    if version != CARD_VERSION:
        raise CardError(
            f"card version {version} is not supported by this comm-tui (it reads versions"
            f" {CARD_VERSION}, {HINTS_CARD_VERSION} and {NAMED_CARD_VERSION}): check the card"
            " for typos, or update comm-tui"
        )
    key = payload[1 : 1 + PUBLIC_KEY_BYTES]
    checksum = payload[1 + PUBLIC_KEY_BYTES :]
    # The last character carries one bit and four unused ones; base32 decoders
    # ignore the unused bits, so a typo there is caught by re-encoding.
    if checksum != _checksum(version, key) or _encode_body(payload) != body:
        raise CardError("card checksum does not match: check it for typos")
    return Card(_valid_identity(key))


def _decode_body(body: str) -> bytes:
    """The bytes of a base32 body whose alphabet is checked (so this cannot fail)."""
    # Unpadded base32 ends in 0, 2, 4, 5 or 7 characters of a group; a cut-off body is
    # read up to its last whole byte (the length check then says what is wrong).
    usable = body[: len(body) - {1: 1, 3: 1, 6: 1}.get(len(body) % 8, 0)]
    return base64.b32decode(usable.upper() + "=" * (-len(usable) % 8))


def _valid_identity(key: bytes) -> PublicIdentity:
    identity = PublicIdentity(key)
    try:
        _ = identity.box_key  # the X25519 conversion rejects points that are no key
    except ValueError as exc:
        raise CardError("card holds a key that is not a valid public key") from exc
    return identity


def _read_hints_card(card: str, body: str) -> Card:
    """A version 2 card; docs/PROTOCOL.md, "13.2 Endpoint hints in cards", in check order."""
    payload = _decode_body(body)
    if len(payload) < _HINTS_HEADER_BYTES:
        raise CardError(
            f"card is {len(card)} characters, too short for a card with endpoint hints"
            f" (at least {_chars(_HINTS_HEADER_BYTES + 7 + _SIGNATURE_BYTES)})"
        )
    issued, count = struct.unpack_from(">IB", payload, 1 + PUBLIC_KEY_BYTES)
    if not 1 <= count <= MAX_CARD_HINTS:
        raise CardError(
            f"card names {count} endpoint hints, expected 1 to {MAX_CARD_HINTS}: check it for typos"
        )
    hints, identity = _signed_hints(
        card, body, payload, _HINTS_HEADER_BYTES, count, "with", _HINTS_DOMAIN
    )
    return Card(identity, hints, issued)


def _read_named_card(card: str, body: str) -> Card:
    """A version 3 card; docs/PROTOCOL.md, "13.2.1 Names in cards", in check order.

    The name is judged after the signature: a typo anywhere is then reported as a typo,
    and what remains is a name its issuer signed, which is refused as the name letter
    would be (docs/PROTOCOL.md, "7.1.1"), never cleaned up into something it did not say.
    """
    payload = _decode_body(body)
    smallest = _chars(_NAMED_HEADER_BYTES + 1 + 1 + _SIGNATURE_BYTES)
    if len(payload) < _NAMED_HEADER_BYTES:
        raise CardError(
            f"card is {len(card)} characters, too short for a card with a name"
            f" (at least {smallest})"
        )
    issued, name_version, name_bytes = struct.unpack_from(">IIB", payload, 1 + PUBLIC_KEY_BYTES)
    if not 1 <= name_bytes <= DISPLAY_NAME_MAX_BYTES:
        raise CardError(
            f"card carries a name of {name_bytes} bytes, expected 1 to"
            f" {DISPLAY_NAME_MAX_BYTES}: check it for typos"
        )
    count_at = _NAMED_HEADER_BYTES + name_bytes
    if len(payload) <= count_at:
        raise CardError(
            f"card is {len(card)} characters, too short for a card with a name"
            f" of {name_bytes} bytes (at least {_chars(count_at + 1 + _SIGNATURE_BYTES)})"
        )
    count = payload[count_at]
    if count > MAX_CARD_HINTS:
        raise CardError(
            f"card names {count} endpoint hints, expected 0 to {MAX_CARD_HINTS}: check it for typos"
        )
    hints, identity = _signed_hints(
        card,
        body,
        payload,
        count_at + 1,
        count,
        f"with a name of {name_bytes} bytes and",
        _NAMED_DOMAIN,
    )
    raw = payload[_NAMED_HEADER_BYTES:count_at]
    return Card(identity, hints, issued, _card_name(raw, name_version), name_version)


def _card_name(raw: bytes, version: int) -> str:
    """The signed name of a version 3 card, if it is a display name exactly as a name
    letter must carry it (docs/PROTOCOL.md, "7.1.1"), else :class:`CardError`."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError("card carries a name that is not UTF-8 text: ask for a new card") from None
    if version == 0:
        raise CardError("card carries a name of version 0, which no name has: ask for a new card")
    if not is_display_name(name):
        raise CardError(
            "card carries a name that cannot be shown (a control, format or unassigned"
            " character, or spaces not as a name has them): ask for a new card"
        )
    return name


def _signed_hints(
    card: str, body: str, payload: bytes, at: int, count: int, described: str, domain: bytes
) -> tuple[tuple[Endpoint, ...], PublicIdentity]:
    """The ``count`` hints from ``at``, the length they imply, and the signature after them
    (versions 2 and 3 end alike; ``described`` names the kind of card in the length error)."""
    hints, offset = _read_hints(payload, at, count)
    expected = _chars(offset + _SIGNATURE_BYTES)
    if len(card) != expected:
        raise CardError(
            f"card is {len(card)} characters, expected {expected} for a card {described}"
            f" {count} endpoint hint{'s' if count != 1 else ''}"
        )
    return hints, _verified(payload, offset, body, domain)


def _read_hints(payload: bytes, offset: int, count: int) -> tuple[tuple[Endpoint, ...], int]:
    """``count`` hints from ``offset`` on, and where they end (docs/PROTOCOL.md, "13.2").

    A hint cut short by the end of the payload is not read, only measured: the length
    check that follows then says what is wrong.
    """
    hints: list[Endpoint] = []
    for _ in range(count):
        family = payload[offset] if offset < len(payload) else 4
        ip_bytes = _FAMILY_IP_BYTES.get(family)
        if ip_bytes is None:
            raise CardError(
                f"card names an endpoint of address family {family} (expected 4 or 6):"
                " check it for typos"
            )
        end = offset + 1 + ip_bytes + 2
        if end <= len(payload):
            raw_ip = payload[offset + 1 : offset + 1 + ip_bytes]
            (port,) = struct.unpack_from(">H", payload, offset + 1 + ip_bytes)
            ip = ipaddress.ip_address(raw_ip)
            if (
                port == 0
                or ip.is_unspecified
                or ip.is_multicast
                or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)
            ):
                raise CardError(
                    f"card names {ip} port {port}, which no node can be reached at:"
                    " check it for typos"
                )
            hints.append((str(ip), port))
        offset = end
    return tuple(hints), offset


def _verified(payload: bytes, signed_bytes: int, body: str, domain: bytes) -> PublicIdentity:
    """The issuer of a signed card whose first ``signed_bytes`` bytes the rest signs."""
    signed, signature = payload[:signed_bytes], payload[signed_bytes:]
    identity = PublicIdentity(payload[1 : 1 + PUBLIC_KEY_BYTES])
    try:
        # A typo in the key makes it no key at all as often as a wrong one: both are typos.
        _ = identity.box_key
        identity.verify_key.verify(domain + signed, signature)
    except (BadSignatureError, ValueError):
        raise CardError("card signature does not match: check it for typos") from None
    if _encode_body(payload) != body:
        raise CardError("card signature does not match: check it for typos")
    return identity
