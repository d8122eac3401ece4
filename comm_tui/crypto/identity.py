"""Identities: one Ed25519 key pair per user, and the 160-bit address derived from it.

The address is BLAKE2b-160 of the Ed25519 public key, so nobody can pick an
address without holding a key that hashes to it. The X25519 form of the same key
pair is used for every encryption, so a user has exactly one secret to protect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from nacl._sodium import ffi, lib  # type: ignore[import-not-found]
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from comm_tui.errors import KeyFileError

ADDRESS_BYTES = 20
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
ADDRESS_CACHE_KEYS = 65536
VALID_KEY_CACHE_KEYS = 16384


@lru_cache(maxsize=ADDRESS_CACHE_KEYS)
def address_of(public_key: bytes) -> bytes:
    """The 20-byte network address of an Ed25519 public key.

    Cached: a relay derives the same few thousand peers' addresses on every datagram.
    BLAKE2b-160 from the stdlib: the same bytes as libsodium's generic hash
    (tests/test_hashes.py), without PyNaCl's per-call argument checking.
    """
    return hashlib.blake2b(public_key, digest_size=ADDRESS_BYTES).digest()


@lru_cache(maxsize=VALID_KEY_CACHE_KEYS)
def curve_public_key(key: bytes) -> bytes | None:
    """The X25519 public key of the Ed25519 public key ``key``, None when ``key`` is no
    valid curve point (or not 32 bytes).

    Cached: the conversion decompresses the point (about 50 us), and each peer key needs
    it at least twice, once when it is checked (a Nodes answer, a packet from a new key)
    and once for the key agreement that follows (``PublicIdentity.box_key``); the same
    few thousand keys also come back in every Nodes answer.
    """
    if len(key) != PUBLIC_KEY_BYTES:
        return None
    try:
        converted: bytes = crypto_sign_ed25519_pk_to_curve25519(key)
    except (CryptoError, RuntimeError):
        return None
    return converted


def is_valid_public_key(key: bytes) -> bool:
    """Is ``key`` an Ed25519 public key we can encrypt to (a valid curve point)?"""
    return curve_public_key(key) is not None


def address_hex(address: bytes) -> str:
    """Addresses are shown as 40 lowercase hex characters, as in the seed."""
    return address.hex()


@dataclass(frozen=True)
class PublicIdentity:
    """Someone else's identity as we know it: their Ed25519 public key."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != PUBLIC_KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @cached_property
    def address(self) -> bytes:
        return address_of(self.key)

    @cached_property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.key)

    @cached_property
    def box_key(self) -> PublicKey:
        """The X25519 public key used to encrypt to this identity.

        Raises ValueError for bytes that are not a valid curve point, which is
        how a forged or random key from the network is rejected.
        """
        converted = curve_public_key(self.key)
        if converted is None:
            raise ValueError("not a valid Ed25519 public key")
        return PublicKey(converted)


SECRETBOX_KEY_BYTES = 32
SECRETBOX_NONCE_BYTES = 24
SECRETBOX_MAC_BYTES = 16
# cffi buffers that are not zeroed first: for outputs libsodium writes whole.
_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


class LinkKey:
    """One direction's XSalsa20-Poly1305 secret box (libsodium's ``crypto_secretbox``).

    libsodium's functions called through PyNaCl's own cffi module rather than through
    ``nacl.secret.SecretBox`` or even ``nacl.bindings``: the relay path seals and opens a
    box per datagram, and the wrappers' argument checks, ``ensure`` calls and result
    objects cost as much as the cipher (1.0 us of 3.5 us per 1,200-byte open, measured in
    bench/RESULTS.md, "Issue 11, third session"). The checks they make are made here once:
    the key is 32 bytes (constructor), the nonce 24 (``encrypt``; ``decrypt`` slices it
    from a box at least nonce plus MAC long). The bytes are the same: nonce, MAC,
    ciphertext (tests/test_relay_path.py compares them with ``nacl.bindings``).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != SECRETBOX_KEY_BYTES:
            raise ValueError("a secret box key is 32 bytes")
        self._key = key

    def encrypt(self, plaintext: bytes, nonce: bytes) -> bytes:
        """``nonce`` (24 bytes) followed by the boxed ``plaintext``."""
        if len(nonce) != SECRETBOX_NONCE_BYTES:
            raise ValueError("a secret box nonce is 24 bytes")
        size = len(plaintext) + SECRETBOX_MAC_BYTES
        out = _uncleared("unsigned char[]", size)  # every byte is written below
        if lib.crypto_secretbox_easy(out, plaintext, len(plaintext), nonce, self._key) != 0:
            raise CryptoError("encryption failed")
        boxed: bytes = ffi.buffer(out, size)[:]
        return nonce + boxed

    def decrypt(self, boxed: bytes) -> bytes:
        """The plaintext of ``nonce + box``; raises ``CryptoError`` if it is not authentic
        and ``ValueError`` for a box too short to hold a nonce and MAC.

        The nonce is read in place (libsodium reads the 24 bytes its pointer starts at:
        ``boxed`` itself), and the output buffer is not zeroed: libsodium writes every
        byte of it when the box is authentic, and nothing of it is read when it is not
        (0.3 us of a 1,200-byte open; tests/test_relay_fast.py compares the bytes).
        """
        size = len(boxed) - SECRETBOX_NONCE_BYTES - SECRETBOX_MAC_BYTES
        if size < 0:
            raise ValueError("a secret box holds at least a nonce and a MAC")
        out = _uncleared("unsigned char[]", size or 1)
        if (
            lib.crypto_secretbox_open_easy(
                out, boxed[SECRETBOX_NONCE_BYTES:], size + SECRETBOX_MAC_BYTES, boxed, self._key
            )
            != 0
        ):
            raise CryptoError("the box is not authentic")
        plaintext: bytes = ffi.buffer(out, size)[:]
        return plaintext


@dataclass(frozen=True)
class LinkBoxes:
    """One identity's two directional secret boxes with one peer (see ``directional_boxes``)."""

    send: LinkKey
    receive: LinkKey
    peer: PublicIdentity


@dataclass(frozen=True)
class Identity:
    """Our own key pair. Never logged, never printed: ``repr`` shows the address only."""

    signing_key: SigningKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != SEED_BYTES:
            raise KeyFileError("identity seed must be 32 bytes")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @cached_property
    def public(self) -> PublicIdentity:
        return PublicIdentity(bytes(self.signing_key.verify_key))

    @property
    def key(self) -> bytes:
        return self.public.key

    @property
    def address(self) -> bytes:
        return self.public.address

    @cached_property
    def box_key(self) -> PrivateKey:
        return self.signing_key.to_curve25519_private_key()

    def directional_boxes(self, peer: PublicIdentity, domain: bytes) -> LinkBoxes:
        """The two secret boxes with ``peer``: one for what we send, one for what we receive.

        Each key hashes the X25519 shared secret with both exact Ed25519 keys *in the
        order sender, receiver* (and a per-use domain):

        - the Ed25519 -> X25519 map is two-to-one (a key and its negation share an X25519
          key), so a bare X25519 box would accept a sender key with its sign bit
          flipped, a key nobody holds; hashing the exact keys authenticates the key;
        - with one key for both directions, a frame A sent to B, with its sender key
          rewritten to B, would open at A as if B had sent it (a reflection: A then
          believes B answered a challenge or holds a message). With one key per
          direction nothing is ever accepted by its own author or in reverse.
        """
        shared = Box(self.box_key, peer.box_key).shared_key()
        outgoing = hashlib.blake2b(domain + self.key + peer.key, key=shared, digest_size=32)
        incoming = hashlib.blake2b(domain + peer.key + self.key, key=shared, digest_size=32)
        return LinkBoxes(LinkKey(outgoing.digest()), LinkKey(incoming.digest()), peer)

    def sign(self, data: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature."""
        return self.signing_key.sign(data).signature

    def __repr__(self) -> str:
        return f"Identity(address={self.address.hex()})"
