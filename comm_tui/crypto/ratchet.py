"""The Double Ratchet (Signal's specification, revision 4), with pure peek and later commit.

docs/PROTOCOL.md, "Letters and sealing" describes how letters use it; this module is the
algorithm alone: KDF_RK, KDF_CK, the DH ratchet, skipped message keys, and a compact,
versioned serialization of the state.

Why our own implementation, not a package (evaluated 2026-11, issue 9): Syndace's
``doubleratchet`` 1.3.0 and ``x3dh`` 1.3.0 (used by the OMEMO clients) are maintained and
tested, but (1) their whole API is ``async`` while our protocol core is sans-IO and
synchronous; (2) they pull in ``pydantic``, ``cryptography`` and ``XEdDSA`` where we have
PyNaCl only; (3) decryption mutates the state, while we need a *pure* peek (a text's parts
are opened one by one and the state may change only when the whole text is on disk) and a
commit later; (4) they ratchet once per message, we once per text; (5) skipped keys are
bounded by count only, we must also forget them by age (no letter can use them after
MAX_TTL + skew). So we implement the specification on libsodium (X25519 via
``crypto_scalarmult``, XChaCha20-Poly1305 IETF) and HMAC/HKDF-SHA256 from the standard
library; tests/test_ratchet.py checks it against an independent implementation of the
same specification on the ``cryptography`` package and hand-derived vectors.

Peek/commit: ``peek`` returns the message key the specification's RatchetDecrypt would
use, without changing or copying the state: it derives only the chain the header names
(for a new ratchet key, one agreement and KDF_RK), never the keys a commit stores as
skipped. ``commit`` runs RatchetDecrypt on the real state. Both are deterministic, so two
texts peeked from the same state commit in any order (the second one finds its key among
the skipped keys the first one stored). ``skip_work`` says, before any derivation, how
many keys a header would make us skip, so callers can charge a budget for them first
(an unauthenticated letter pays for its derivations before the AEAD can fail).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

from comm_tui.protocol.codec import MAX_CLOCK_SKEW_S

KEY_BYTES = 32
HEADER_BYTES = 40  # dh (32) || pn (u32) || n (u32)
AEAD_TAG_BYTES = 16
NONCE_BYTES = 24
# Signal's MAX_SKIP: a header may ask us to skip at most this many keys in one chain.
MAX_SKIP = 1000
# Skipped keys kept per session (oldest forgotten first): two full chains' worth.
MAX_SKIPPED_PER_SESSION = 2 * MAX_SKIP
# A skipped key is forgotten once no letter can still need it: letters live at most
# MAX_TTL_S (7 days), plus the clock skew a relay tolerates (docs/PROTOCOL.md, "Constants").
SKIPPED_KEY_TTL_S = 7 * 24 * 3600.0 + MAX_CLOCK_SKEW_S
STATE_VERSION = 1

_RK_INFO = b"comm-tui ratchet root v2"
_CK_MESSAGE = b"\x01"
_CK_CHAIN = b"\x02"


class RatchetError(Exception):
    """A header or ciphertext that this state cannot open (never a reason to change it)."""


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-256."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """KDF_RK: HKDF with the root key as salt; returns (new root key, chain key)."""
    out = hkdf_sha256(rk, dh_out, _RK_INFO, 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """KDF_CK (the specification's recommendation): returns (next chain key, message key)."""
    return (
        hmac.new(ck, _CK_CHAIN, hashlib.sha256).digest(),
        hmac.new(ck, _CK_MESSAGE, hashlib.sha256).digest(),
    )


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519; raises RatchetError for a low-order point (an all-zero shared secret)."""
    try:
        out = crypto_scalarmult(private, public)
    except (CryptoError, RuntimeError, ValueError, TypeError) as exc:
        raise RatchetError("bad public key") from exc
    if not any(out):
        raise RatchetError("low-order public key")
    return bytes(out)


def generate_dh() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (private, public)."""
    private = os.urandom(KEY_BYTES)
    return private, bytes(crypto_scalarmult_base(private))


def part_nonce(part: int) -> bytes:
    """Every part of a text is encrypted under the text's message key with its own nonce."""
    return part.to_bytes(NONCE_BYTES, "big")


def aead_encrypt(key: bytes, part: int, plaintext: bytes, ad: bytes) -> bytes:
    return bytes(crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, part_nonce(part), key))


def aead_decrypt(key: bytes, part: int, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return bytes(
            crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, part_nonce(part), key)
        )
    except (CryptoError, ValueError, TypeError) as exc:
        raise RatchetError("ciphertext does not open") from exc


@dataclass(frozen=True)
class Header:
    """The ratchet header of a text: the sender's ratchet key, PN and N."""

    dh: bytes
    pn: int
    n: int

    def encode(self) -> bytes:
        return self.dh + struct.pack(">II", self.pn, self.n)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) != HEADER_BYTES:
            raise RatchetError("header has the wrong size")
        pn, n = struct.unpack(">II", data[32:])
        return cls(data[:32], pn, n)


@dataclass
class RatchetState:
    """The specification's state variables, plus when each skipped key was stored."""

    dhs_private: bytes
    dhs_public: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int = 0
    nr: int = 0
    pn: int = 0
    # (ratchet public key, n) -> (message key, stored at), oldest first.
    skipped: OrderedDict[tuple[bytes, int], tuple[bytes, float]] = field(
        default_factory=OrderedDict
    )

    # -------------------------------------------------------------- initialisation

    @classmethod
    def initiator(cls, sk: bytes, their_ratchet_key: bytes) -> RatchetState:
        """RatchetInitAlice: the peer's signed prekey is its first ratchet key."""
        private, public = generate_dh()
        rk, cks = kdf_rk(sk, x25519(private, their_ratchet_key))
        return cls(private, public, their_ratchet_key, rk, cks, None)

    @classmethod
    def responder(cls, sk: bytes, our_ratchet_pair: tuple[bytes, bytes]) -> RatchetState:
        """RatchetInitBob: our signed prekey pair is our first ratchet key pair."""
        private, public = our_ratchet_pair
        return cls(private, public, None, sk, None, None)

    # -------------------------------------------------------------- sending

    def encrypt_step(self) -> tuple[Header, bytes]:
        """RatchetEncrypt's state change: the next header and message key (mutates)."""
        if self.cks is None:
            raise RatchetError("this side cannot send before it has received")
        self.cks, mk = kdf_ck(self.cks)
        header = Header(self.dhs_public, self.pn, self.ns)
        self.ns += 1
        return header, mk

    # -------------------------------------------------------------- receiving

    def peek(self, header: Header, now: float) -> bytes:
        """The message key for ``header`` without changing this state (RatchetError if none).

        Nothing is copied and only what the key depends on is derived: the chain the
        header names (from our receiving chain key, or for a new ratchet key from one
        agreement and KDF_RK) up to N. The keys of our current chain up to PN, which a
        commit stores as skipped, and our next sending chain do not bear on it.
        """
        found = self.skipped.get((header.dh, header.n))
        if found is not None:
            return found[0]
        self._check(header)
        if header.dh != self.dhr:
            ckr, steps = kdf_rk(self.rk, x25519(self.dhs_private, header.dh))[1], header.n
        else:
            assert self.ckr is not None  # _check refuses our ratchet key without a chain
            ckr, steps = self.ckr, header.n - self.nr
        for _ in range(steps):
            ckr = kdf_ck(ckr)[0]
        return kdf_ck(ckr)[1]

    def skip_work(self, header: Header) -> int:
        """How many keys opening and committing ``header`` would skip (derive and store),
        besides its own message key: 0 when its key is among the skipped ones.

        A new ratchet key skips the rest of our receiving chain up to PN and its own chain
        up to N; our ratchet key skips up to N. Raises RatchetError, as ``peek`` and
        ``commit`` would, for a header no state can open (past MAX_SKIP, a used key).
        Computed from counters alone, before any derivation, so a caller can charge it
        first (``protocol/sessions.py``, the skip budgets).
        """
        if (header.dh, header.n) in self.skipped:
            return 0
        self._check(header)
        if header.dh == self.dhr:
            return header.n - self.nr
        rest_of_chain = header.pn - self.nr if self.ckr is not None else 0
        return max(rest_of_chain, 0) + header.n

    def commit(self, header: Header, now: float) -> bytes:
        """RatchetDecrypt's state change for ``header`` (mutates); returns the message key.

        Nothing is changed if it raises: every check comes before the first assignment.
        """
        found = self.skipped.pop((header.dh, header.n), None)
        if found is not None:
            return found[0]
        self._check(header)
        if header.dh != self.dhr:
            private, public = generate_dh()
            # Compute everything before assigning, so a bad key changes nothing.
            rk1, ckr = kdf_rk(self.rk, x25519(self.dhs_private, header.dh))
            rk2, cks = kdf_rk(rk1, x25519(private, header.dh))
            self._skip(header.pn, now)
            self.pn, self.ns, self.nr = self.ns, 0, 0
            self.dhr, self.rk, self.ckr, self.cks = header.dh, rk2, ckr, cks
            self.dhs_private, self.dhs_public = private, public
        assert self.ckr is not None  # set with dhr, which now is the header's key
        self._skip(header.n, now)
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        return mk

    def _check(self, header: Header) -> None:
        """RatchetDecrypt's refusals of a header whose key is not among the skipped ones,
        from counters alone (before any key is derived): more than MAX_SKIP keys to skip
        in a chain, or a key of our receiving chain already used."""
        if header.dh != self.dhr:
            if header.pn > self.nr + MAX_SKIP or header.n > MAX_SKIP:
                raise RatchetError("too many skipped keys")
        elif self.ckr is None:
            raise RatchetError("no receiving chain")
        elif header.n < self.nr:
            raise RatchetError("message key already used")
        elif header.n > self.nr + MAX_SKIP:
            raise RatchetError("too many skipped keys")

    def _skip(self, until: int, now: float) -> None:
        if self.ckr is None:
            return
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            assert self.dhr is not None
            self.skipped[(self.dhr, self.nr)] = (mk, now)
            self.nr += 1
        while len(self.skipped) > MAX_SKIPPED_PER_SESSION:
            self.skipped.popitem(last=False)

    def expire(self, now: float) -> bool:
        """Forget skipped keys no letter can still use; True if any went."""
        gone = False
        while self.skipped:
            key, (_, stored) = next(iter(self.skipped.items()))
            if now - stored < SKIPPED_KEY_TTL_S:
                break
            del self.skipped[key]
            gone = True
        return gone

    def drop_oldest_skipped(self) -> None:
        """Give up one skipped key (the node-wide bound, sessions.py)."""
        if self.skipped:
            self.skipped.popitem(last=False)

    # -------------------------------------------------------------- serialization

    def serialize(self) -> bytes:
        """version u8 | flags u8 | dhs priv, dhs pub, rk [, dhr][, cks][, ckr] | ns, nr, pn
        u32 | skipped count u32 | per key: dh 32, n u32, mk 32, stored_ms u64."""
        flags = (self.dhr is not None) | (self.cks is not None) << 1 | (self.ckr is not None) << 2
        parts = [bytes([STATE_VERSION, flags]), self.dhs_private, self.dhs_public, self.rk]
        parts += [k for k in (self.dhr, self.cks, self.ckr) if k is not None]
        parts.append(struct.pack(">IIII", self.ns, self.nr, self.pn, len(self.skipped)))
        for (dh, n), (mk, stored) in self.skipped.items():
            parts.append(dh + struct.pack(">I", n) + mk + struct.pack(">Q", int(stored * 1000)))
        return b"".join(parts)

    @classmethod
    def deserialize(cls, data: bytes) -> RatchetState:
        try:
            if data[0] != STATE_VERSION:
                raise RatchetError("unknown ratchet state version")
            flags, pos = data[1], 2

            def take(size: int) -> bytes:
                nonlocal pos
                if pos + size > len(data):
                    raise RatchetError("truncated ratchet state")
                chunk = data[pos : pos + size]
                pos += size
                return chunk

            dhs_private, dhs_public, rk = take(32), take(32), take(32)
            dhr = take(32) if flags & 1 else None
            cks = take(32) if flags & 2 else None
            ckr = take(32) if flags & 4 else None
            ns, nr, pn, count = struct.unpack(">IIII", take(16))
            skipped: OrderedDict[tuple[bytes, int], tuple[bytes, float]] = OrderedDict()
            for _ in range(count):
                dh, (n,), mk = take(32), struct.unpack(">I", take(4)), take(32)
                (stored_ms,) = struct.unpack(">Q", take(8))
                skipped[(dh, n)] = (mk, stored_ms / 1000)
            if pos != len(data):
                raise RatchetError("trailing bytes in ratchet state")
        except IndexError as exc:
            raise RatchetError("truncated ratchet state") from exc
        return cls(dhs_private, dhs_public, dhr, rk, cks, ckr, ns, nr, pn, skipped)
