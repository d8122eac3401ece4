"""Sealed-sender letters: only the recipient opens them, and they name their exact author."""

from __future__ import annotations

import pytest
from nacl.public import SealedBox

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.seal import Sealer, SealError
from comm_tui.protocol import wire_pb2 as pb


def test_recipient_opens_and_learns_the_author() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    sealed = Sealer(alice).seal(bob.public, b"letter")
    author, letter = Sealer(bob).open(sealed)
    assert (author.key, letter) == (alice.key, b"letter")


def test_nobody_else_opens_it() -> None:
    alice, bob, eve = Identity.generate(), Identity.generate(), Identity.generate()
    sealed = Sealer(alice).seal(bob.public, b"letter")
    with pytest.raises(SealError):
        Sealer(eve).open(sealed)


def test_author_key_with_its_sign_bit_flipped_is_refused() -> None:
    """A key and its negation share an X25519 key; the letter must still name the exact one."""
    alice, bob = Identity.generate(), Identity.generate()
    sealed = Sealer(alice).seal(bob.public, b"letter")
    inner = pb.Sealed.FromString(SealedBox(bob.box_key).decrypt(sealed))
    flipped = bytearray(inner.sender_key)
    flipped[31] ^= 0x80
    alias = PublicIdentity(bytes(flipped))
    assert bytes(alias.box_key) == bytes(alice.public.box_key)  # the alias is real
    inner.sender_key = bytes(flipped)
    forged = bytes(SealedBox(bob.public.box_key).encrypt(inner.SerializeToString()))
    with pytest.raises(SealError):
        Sealer(bob).open(forged)
