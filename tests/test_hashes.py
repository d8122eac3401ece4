"""Every hash the protocol names is BLAKE2b as libsodium computes it (docs/PROTOCOL.md, `H`).

The code computes them with ``hashlib.blake2b`` (the relay path's cost), so these tests pin
that the stdlib gives libsodium's bytes for each size and key the protocol uses, and pin
the derived values themselves to fixed vectors, so that a change to either side of any
derivation (a domain string, a digest size, the order of the fields) fails here.
"""

from __future__ import annotations

import hashlib

import pytest
from nacl.encoding import RawEncoder
from nacl.hash import blake2b as sodium_blake2b
from nacl.secret import SecretBox

from comm_tui.crypto.card import encode_card
from comm_tui.crypto.identity import Identity, LinkKey, address_of
from comm_tui.crypto.keyfile import _check_of
from comm_tui.crypto.seal import message_id

INPUTS = [b"", b"a", bytes(range(256)), b"\xff" * 1061]


@pytest.mark.parametrize("size", [4, 16, 20, 32, 64])
@pytest.mark.parametrize("key", [b"", bytes(range(32)), b"k" * 64])
def test_stdlib_blake2b_is_libsodium_generichash(size: int, key: bytes) -> None:
    for data in INPUTS:
        ours = hashlib.blake2b(data, digest_size=size, key=key).digest()
        assert ours == sodium_blake2b(data, digest_size=size, key=key, encoder=RawEncoder)


def test_address_vector() -> None:
    key = Identity.from_seed(bytes(32)).key
    assert address_of(key) == sodium_blake2b(key, digest_size=20, encoder=RawEncoder)
    assert address_of(key).hex() == "86cb6705403b50453c7a7f461133114f56057829"


def test_message_id_vector() -> None:
    recipient, expires_ms, sealed = bytes(range(20)), 1_800_000_000_000, b"s" * 1061
    data = b"comm-tui message id v1\x00" + recipient + expires_ms.to_bytes(8, "big") + sealed
    expected = sodium_blake2b(data, digest_size=32, encoder=RawEncoder)
    assert message_id(recipient, expires_ms, sealed) == expected
    assert expected.hex() == "0b24b62981e35628d66ea10360e4a8a36514358cd7128ef9d08aa6a078e19dc5"


def test_card_and_key_file_checks_keep_their_bytes() -> None:
    identity = Identity.from_seed(bytes(range(32)))
    card = "comm1aeb2cb576phbbpq5odorrz2lycmwpzgwgcn2kdk7dxoimzaskuy3qim2gxta"
    assert encode_card(identity.public) == card
    check = sodium_blake2b(
        b"comm-tui identity check\x00" + identity.seed, digest_size=16, encoder=RawEncoder
    )
    assert _check_of(identity.seed) == check


def test_link_key_is_libsodium_secretbox() -> None:
    key, nonce = bytes(range(32)), bytes(range(24))
    boxed = LinkKey(key).encrypt(b"frame", nonce)
    assert boxed == bytes(SecretBox(key).encrypt(b"frame", nonce))
    assert LinkKey(key).decrypt(boxed) == b"frame"
