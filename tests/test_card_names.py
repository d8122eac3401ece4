"""Version 3 cards: the display name, signed with the rest (docs/PROTOCOL.md, "13.2.1").

Vectors packed independently of card.py, round trips with and without a name and with
hints, the signature over the name (every byte flipped is refused), hostile names a
hostile issuer signed (refused with one line, never cleaned up), old cards, and a fuzz
of the parser: any text gives a Card or a CardError, nothing else.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comm_tui.crypto.card import (
    MAX_CARD_HINTS,
    Card,
    encode_card,
    encode_hints_card,
    encode_named_card,
    issue_card,
    read_card,
)
from comm_tui.crypto.identity import Identity
from comm_tui.errors import CardError
from comm_tui.protocol.letters import DISPLAY_NAME_MAX_BYTES, display_name, is_display_name

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "keys" / "card_name_vectors.json").read_text()
)
SIGNER = Identity.from_seed(bytes.fromhex(VECTORS["seed_hex"]))
DOMAIN = bytes.fromhex(VECTORS["domain_hex"])


def card_text(payload: bytes) -> str:
    return "comm1" + base64.b32encode(payload).decode("ascii").rstrip("=").lower()


def _payload(card: str) -> bytes:
    body = card[5:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))


def signed_card(identity: Identity, name: bytes, version: int = 1) -> str:
    """A card a hostile issuer signed with any name bytes, as the layout says."""
    signed = bytes([3]) + identity.key + struct.pack(">IIB", 0, version, len(name)) + name + b"\0"
    return card_text(signed + identity.sign(DOMAIN + signed))


def _refusal(text: str) -> str:
    with pytest.raises(CardError) as info:
        read_card(text)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("vector", VECTORS["cards"], ids=lambda v: v["description"])
def test_vector_decodes_and_encodes(vector: dict[str, Any]) -> None:
    hints = [(host, port) for host, port in vector["hints"]]
    card = read_card(vector["card"])
    expected = Card(
        SIGNER.public, tuple(hints), vector["issued"], vector["name"], vector["name_version"]
    )
    assert card == expected
    assert card.identity.key.hex() == vector["public_key_hex"]
    encoded = encode_named_card(
        SIGNER, vector["name"], vector["name_version"], hints, vector["issued"]
    )
    assert encoded == vector["card"]


@pytest.mark.parametrize("vector", VECTORS["invalid_cards"], ids=lambda v: v["description"])
def test_invalid_vector_is_refused_with_one_line(vector: dict[str, str]) -> None:
    assert vector["error"] in _refusal(vector["card"])


def test_lengths() -> None:
    """The size budget of docs/PROTOCOL.md, "13.2.1": 185 characters for "Alice"."""
    assert [len(v["card"]) for v in VECTORS["cards"]] == [185, 196, 178, 189, 401]


def test_issue_card_picks_the_shortest_version() -> None:
    hints = [("198.18.0.5", 7000)]
    assert issue_card(SIGNER, [], 5) == encode_card(SIGNER.public)
    assert issue_card(SIGNER, hints, 5) == encode_hints_card(SIGNER, hints, 5)
    named = issue_card(SIGNER, [], 5, ("Alice", 2))
    # Without hints a card says nothing about where we are: issued 0, the same every time.
    assert read_card(named) == Card(SIGNER.public, (), 0, "Alice", 2)
    assert named == issue_card(SIGNER, [], 99, ("Alice", 2))
    assert read_card(issue_card(SIGNER, hints, 5, ("Alice", 2))) == Card(
        SIGNER.public, tuple(hints), 5, "Alice", 2
    )


def test_old_cards_read_as_before_without_a_name() -> None:
    assert read_card(encode_card(SIGNER.public)) == Card(SIGNER.public)
    v2 = read_card(encode_hints_card(SIGNER, [("198.18.0.5", 7000)], 7))
    assert v2.name is None and v2.name_version == 0 and v2.hints == (("198.18.0.5", 7000),)


def test_every_byte_of_the_name_and_version_is_signed() -> None:
    card = encode_named_card(SIGNER, "Alice", 1, [], 0)
    payload = _payload(card)
    # Each signed byte (version byte aside: it picks the layout) flipped in each bit.
    for index in range(1, len(payload) - 64):
        for bit in range(8):
            flipped = bytearray(payload)
            flipped[index] ^= 1 << bit
            with pytest.raises(CardError):
                read_card(card_text(bytes(flipped)))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x1b]0;owned\x07",  # an OSC sequence retitling the terminal
        "Alice\u202egnp.exe".encode(),  # a right-to-left override
        "Ali\u200dce".encode(),  # a zero-width joiner (category Cf)
        b"Alice\r\nBob",
        b"\xc3\x28",  # invalid UTF-8
        b"\xed\xa0\x80",  # an encoded surrogate
        b"Alice ",
        "\ue000".encode(),  # private use
        b"\x00",
        "\u2800".encode(),  # the braille blank: a name that looks empty
        "\u3164".encode(),  # a Hangul filler
        "Alice\u115f".encode(),  # "Alice" with an invisible tail
        ("e" + "\u0301" * 5).encode(),  # marks stacked past COMBINING_MARKS_MAX
    ],
)
def test_hostile_names_are_refused_even_when_signed(raw: bytes) -> None:
    message = _refusal(signed_card(SIGNER, raw))
    assert "ask for a new card" in message


def test_markup_in_a_name_is_just_text() -> None:
    """Brackets are ordinary characters: the card keeps them, the app draws them literally."""
    card = read_card(encode_named_card(SIGNER, "[red]Eve[/]", 1, [], 0))
    assert card.name == "[red]Eve[/]"


def test_the_encoder_refuses_what_a_card_cannot_carry() -> None:
    for bad in ("", " Alice", "x" * (DISPLAY_NAME_MAX_BYTES + 1), "a\u202eb", "a\nb", "\uffa0"):
        with pytest.raises(ValueError):
            encode_named_card(SIGNER, bad, 1, [], 0)
    for version in (0, 2**32):
        with pytest.raises(ValueError):
            encode_named_card(SIGNER, "Alice", version, [], 0)
    with pytest.raises(ValueError):
        encode_named_card(SIGNER, "Alice", 1, [("198.18.0.5", 1)] * (MAX_CARD_HINTS + 1), 0)


hosts = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: not (ip.is_unspecified or ip.is_multicast)),
    st.ip_addresses(v=6).filter(
        lambda ip: not (ip.is_unspecified or ip.is_multicast or ip.ipv4_mapped is not None)
    ),
)
names = st.text(min_size=1, max_size=70).map(display_name).filter(lambda n: n is not None)


@given(
    st.binary(min_size=32, max_size=32),
    names,
    st.integers(1, 2**32 - 1),
    st.lists(st.tuples(hosts.map(str), st.integers(1, 65535)), max_size=MAX_CARD_HINTS),
    st.integers(0, 2**32 - 1),
)
def test_round_trip(
    seed: bytes, name: str | None, version: int, hints: list[tuple[str, int]], issued: int
) -> None:
    assert name is not None
    identity = Identity.from_seed(seed)
    text = encode_named_card(identity, name, version, hints, issued)
    assert read_card(text) == Card(identity.public, tuple(hints), issued, name, version)
    # People split long cards and change their case; that must not matter.
    assert read_card("-".join(text[i : i + 20] for i in range(0, len(text), 20)).upper())


@given(st.binary(max_size=300))
def test_any_payload_is_a_card_or_one_clear_line(tail: bytes) -> None:
    """The parser on hostile bytes after each version byte: nothing but CardError."""
    for version in (1, 2, 3):
        try:
            card = read_card(card_text(bytes([version]) + tail))
        except CardError as err:
            assert "\n" not in str(err)
        else:
            assert card.name is None or is_display_name(card.name)


@given(st.binary(min_size=1, max_size=DISPLAY_NAME_MAX_BYTES))
def test_any_signed_name_is_a_display_name_or_refused(raw: bytes) -> None:
    """A hostile issuer signs whatever it likes: what passes is a name as letters carry it."""
    try:
        card = read_card(signed_card(SIGNER, raw))
    except CardError as err:
        assert "ask for a new card" in str(err)
    else:
        assert card.name is not None and is_display_name(card.name)
        assert card.name.encode("utf-8") == raw


def test_a_card_cut_inside_its_name_is_refused_before_the_count_is_read() -> None:
    header = bytes([3]) + SIGNER.key + struct.pack(">IIB", 0, 1, 5)
    for cut in (header, header + b"Ali", header + b"Alice"):
        message = _refusal(card_text(cut))
        assert "too short for a card with a name of 5 bytes (at least 185)" in message
