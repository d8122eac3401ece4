"""The published test vectors in keys/vectors.json hold for the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comm_tui.crypto.card import decode_card, encode_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import is_passphrase_protected, read_identity_file
from comm_tui.errors import CardError, KeyFileError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "keys" / "vectors.json").read_text()
)


def _ids(section: str, key: str) -> list[str]:
    return [str(vector[key]) for vector in VECTORS[section]]


def _secret(passphrase: str | None) -> bytes | None:
    return None if passphrase is None else passphrase.encode()


def test_sections_are_populated() -> None:
    assert len(VECTORS["identities"]) >= 3
    assert len(VECTORS["invalid_cards"]) >= 5
    assert {vector["passphrase"] is None for vector in VECTORS["key_files"]} == {True, False}


@pytest.mark.parametrize("vector", VECTORS["identities"], ids=_ids("identities", "name"))
def test_identity(vector: dict[str, str]) -> None:
    identity = Identity.from_seed(bytes.fromhex(vector["seed_hex"]))
    assert identity.key.hex() == vector["public_key_hex"]
    assert identity.address.hex() == vector["address_hex"]
    assert encode_card(identity.public) == vector["card"]
    assert decode_card(vector["card"]) == identity.public


@pytest.mark.parametrize(
    "vector", VECTORS["card_variants"], ids=_ids("card_variants", "description")
)
def test_card_variant(vector: dict[str, str]) -> None:
    assert decode_card(vector["card"]).key.hex() == vector["public_key_hex"]


@pytest.mark.parametrize(
    "vector", VECTORS["invalid_cards"], ids=_ids("invalid_cards", "description")
)
def test_invalid_card(vector: dict[str, str]) -> None:
    with pytest.raises(CardError) as info:
        decode_card(vector["card"])
    assert vector["error"] in str(info.value)


@pytest.mark.parametrize("vector", VECTORS["key_files"], ids=_ids("key_files", "description"))
def test_key_file(tmp_path: Path, vector: dict[str, Any]) -> None:
    path = tmp_path / "identity.key"
    path.write_text(json.dumps(vector["file"]))
    identity = read_identity_file(path, _secret(vector["passphrase"]))
    assert identity.seed.hex() == vector["seed_hex"]
    assert identity.address.hex() == vector["address_hex"]
    assert is_passphrase_protected(path) is (vector["passphrase"] is not None)


@pytest.mark.parametrize(
    "vector", VECTORS["invalid_key_files"], ids=_ids("invalid_key_files", "description")
)
def test_invalid_key_file(tmp_path: Path, vector: dict[str, Any]) -> None:
    path = tmp_path / "identity.key"
    path.write_text(json.dumps(vector["file"]))
    with pytest.raises(KeyFileError) as info:
        read_identity_file(path, _secret(vector["passphrase"]))
    assert vector["error"] in str(info.value)
