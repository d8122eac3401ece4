"""Contact cards: round trips, tolerant input, and a clear rejection of every typo."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comm_tui.crypto.card import CARD_CHARS, decode_card, encode_card, looks_like_card
from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.errors import CardError, UserError

SEED = bytes(range(32))
PUBLIC = Identity.from_seed(SEED).public
CARD = encode_card(PUBLIC)
# Characters a typo could plausibly produce; case variants and separators are
# not typos, since decoding ignores them on purpose.
TYPO_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

seeds = st.binary(min_size=32, max_size=32)


def card_with(version: int, key: bytes) -> str:
    """A card with a correct checksum but arbitrary contents, built from the spec."""
    digest = hashlib.blake2b(b"comm-tui card\x00" + bytes([version]) + key, digest_size=4)
    payload = bytes([version]) + key + digest.digest()
    return "comm1" + base64.b32encode(payload).decode().rstrip("=").lower()


def rejection(text: str) -> str:
    with pytest.raises(CardError) as info:
        decode_card(text)
    message = str(info.value)
    assert "\n" not in message
    return message


@given(seeds)
def test_round_trip(seed: bytes) -> None:
    public = Identity.from_seed(seed).public
    card = encode_card(public)
    assert len(card) == CARD_CHARS == 65
    assert card == card.lower()
    assert card.startswith("comm1")
    assert looks_like_card(card)
    assert decode_card(card) == public


@given(seeds, st.integers(min_value=0, max_value=CARD_CHARS - 1), st.sampled_from(TYPO_CHARS))
def test_every_single_character_substitution_is_rejected(
    seed: bytes, index: int, char: str
) -> None:
    card = encode_card(Identity.from_seed(seed).public)
    if char == card[index]:
        char = TYPO_CHARS[(TYPO_CHARS.index(char) + 1) % len(TYPO_CHARS)]
    with pytest.raises(CardError):
        decode_card(card[:index] + char + card[index + 1 :])


def test_card_matches_spec_built_independently() -> None:
    assert card_with(1, PUBLIC.key) == CARD


def test_tolerates_case_whitespace_and_hyphens() -> None:
    spaced = "  " + CARD[:13].upper() + "-" + CARD[13:30] + "\n" + CARD[30:50] + " \t" + CARD[50:]
    assert decode_card(spaced + "\n") == PUBLIC


def test_errors_are_user_errors() -> None:
    with pytest.raises(UserError):
        decode_card("hello")


@pytest.mark.parametrize("text", ["", "alice", "comm", "cmm1" + CARD[4:], "comm2" + CARD[5:]])
def test_wrong_prefix(text: str) -> None:
    assert rejection(text) == "not a comm-tui card: it should start with 'comm1'"


@pytest.mark.parametrize(("bad", "shown"), [("0", "'0'"), ("!", "'!'"), ("é", "'é'")])
def test_bad_character_is_named(bad: str, shown: str) -> None:
    message = rejection(CARD[:20] + bad + CARD[21:])
    assert f"card contains {shown}" in message


def test_first_bad_character_is_named() -> None:
    assert "'8'" in rejection(CARD[:10] + "8" + CARD[11:30] + "9" + CARD[31:])


def test_unprintable_character_is_shown_as_code_point() -> None:
    assert "U+0007" in rejection(CARD[:20] + "\x07" + CARD[21:])


@pytest.mark.parametrize("length", [6, 40, 64, 66, 80])
def test_wrong_length(length: int) -> None:
    text = (CARD + CARD[5:])[:length]
    assert rejection(text) == f"card is {length} characters, expected 65"


def test_unknown_version() -> None:
    message = rejection(card_with(4, PUBLIC.key))
    assert "card version 4 is not supported" in message
    assert "versions 1, 2 and 3" in message


def test_checksum_mismatch() -> None:
    typo = CARD[:40] + ("a" if CARD[40] != "a" else "b") + CARD[41:]
    assert rejection(typo) == "card checksum does not match: check it for typos"


def test_unused_trailing_bits_are_rejected() -> None:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for flip in (1, 2, 4, 8):
        last = alphabet[alphabet.index(CARD[-1]) ^ flip]
        assert "checksum does not match" in rejection(CARD[:-1] + last)


@pytest.mark.parametrize("key", [bytes(32), b"\x01" + bytes(31), b"\xff" * 32])
def test_invalid_curve_point(key: bytes) -> None:
    assert "not a valid public key" in rejection(card_with(1, key))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CARD, True),
        ("  COMM1abc", True),
        ("co-mm1", True),
        ("alice", False),
        ("commander", False),
        ("", False),
    ],
)
def test_looks_like_card(text: str, expected: bool) -> None:
    assert looks_like_card(text) is expected


def test_decoded_key_is_usable() -> None:
    decoded = decode_card(CARD)
    assert isinstance(decoded, PublicIdentity)
    assert decoded.address == Identity.from_seed(SEED).address


def test_every_substitution_in_one_card_is_rejected() -> None:
    for index, original in enumerate(CARD):
        for char in TYPO_CHARS.replace(original, ""):
            with pytest.raises(CardError):
                decode_card(CARD[:index] + char + CARD[index + 1 :])
