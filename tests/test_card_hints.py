"""Version 2 cards: endpoint hints, signed and versioned; version 1 cards read as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comm_tui.crypto.card import (
    MAX_CARD_HINTS,
    Card,
    decode_card,
    encode_card,
    encode_hints_card,
    read_card,
)
from comm_tui.crypto.identity import Identity
from comm_tui.errors import CardError
from comm_tui.net.hints import endpoint_hints, is_public

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "keys" / "card_hint_vectors.json").read_text()
)
SIGNER = Identity.from_seed(bytes.fromhex(VECTORS["seed_hex"]))


@pytest.mark.parametrize("vector", VECTORS["cards"], ids=lambda v: v["description"])
def test_vector_decodes_and_encodes(vector: dict[str, Any]) -> None:
    hints = [(host, port) for host, port in vector["hints"]]
    card = read_card(vector["card"])
    assert card == Card(SIGNER.public, tuple(hints), vector["issued"])
    assert card.identity.key.hex() == vector["public_key_hex"]
    assert encode_hints_card(SIGNER, hints, vector["issued"]) == vector["card"]
    assert decode_card(vector["card"]) == SIGNER.public  # every caller of decode_card reads v2


@pytest.mark.parametrize("vector", VECTORS["invalid_cards"], ids=lambda v: v["description"])
def test_invalid_vector_is_refused_with_one_line(vector: dict[str, str]) -> None:
    with pytest.raises(CardError) as info:
        read_card(vector["card"])
    assert vector["error"] in str(info.value)
    assert "\n" not in str(info.value)


def test_lengths() -> None:
    lengths = [len(v["card"]) for v in VECTORS["cards"]]
    assert lengths == [180, 210, 252]


def test_a_version_1_card_has_no_hints() -> None:
    card = encode_card(SIGNER.public)
    assert read_card(card) == Card(SIGNER.public, (), 0)


hosts = st.one_of(
    st.ip_addresses(v=4).filter(lambda ip: not (ip.is_unspecified or ip.is_multicast)),
    st.ip_addresses(v=6).filter(
        lambda ip: not (ip.is_unspecified or ip.is_multicast or ip.ipv4_mapped is not None)
    ),
)
hint_lists = st.lists(
    st.tuples(hosts.map(str), st.integers(1, 65535)), min_size=1, max_size=MAX_CARD_HINTS
)


@given(st.binary(min_size=32, max_size=32), hint_lists, st.integers(0, 2**32 - 1))
def test_round_trip(seed: bytes, hints: list[tuple[str, int]], issued: int) -> None:
    identity = Identity.from_seed(seed)
    text = encode_hints_card(identity, hints, issued)
    assert read_card(text) == Card(identity.public, tuple(hints), issued)
    # People split long cards; that must not matter.
    assert read_card("-".join(text[i : i + 20] for i in range(0, len(text), 20)).upper())


@given(st.integers(0, 179), st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
def test_every_single_character_substitution_is_refused(index: int, char: str) -> None:
    text = VECTORS["cards"][0]["card"]
    if char == text[index] or index < 5:
        return
    with pytest.raises(CardError):
        read_card(text[:index] + char + text[index + 1 :])


def test_encoder_refuses_what_a_card_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_hints_card(SIGNER, [], 0)
    with pytest.raises(ValueError):
        encode_hints_card(SIGNER, [("198.18.0.5", 7000)] * 5, 0)
    with pytest.raises(ValueError):
        encode_hints_card(SIGNER, [("0.0.0.0", 7000)], 0)
    with pytest.raises(ValueError):
        encode_hints_card(SIGNER, [("198.18.0.5", 0)], 0)


def test_only_public_endpoints_are_hints() -> None:
    assert is_public("8.8.8.8") and is_public("2606:4700::1111")
    for host in (
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.2",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "::",
        "fd00::1",
    ):
        assert not is_public(host), host
    # The benchmarking ranges are "reserved"; a test profile counts them as public.
    assert not is_public("198.18.0.5")
    assert is_public("198.18.0.5", test_networks=True)
    assert is_public("2001:2::5", test_networks=True)
    assert not is_public("10.0.0.1", test_networks=True)
    candidates = [None, ("::ffff:198.18.0.5", 7000), ("198.18.0.5", 7000), ("10.0.0.1", 7000)]
    assert endpoint_hints(candidates, test_networks=True) == [("198.18.0.5", 7000)]
    many = [(f"8.8.8.{i}", 7000) for i in range(1, 9)]
    assert len(endpoint_hints(list(many))) == MAX_CARD_HINTS
