"""Prekeys: what a recipient publishes so that others can open a session while it is offline.

An identity publishes a **prekey bundle** (X3DH, Signal's specification section 2.5): a
medium-term *signed prekey*, rotated, and a stock of *one-time prekeys*. The public half
is what travels (as a signed record stored at the owner's neighbourhood,
docs/PROTOCOL.md, "Records"); the private half never leaves the profile.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

PREKEY_BYTES = 32


@dataclass(frozen=True)
class PublicBundle:
    """The public half of a prekey bundle, as a sender uses it for X3DH.

    Ids are positive 32-bit integers chosen by the owner; the sender names the prekeys it
    used by id in its first letters, so the owner knows which private keys to use.
    """

    identity_key: bytes  # the owner's Ed25519 public key (its hash is the owner's address)
    signed_prekey_id: int
    signed_prekey: bytes  # X25519 public key
    one_time_prekeys: tuple[tuple[int, bytes], ...]  # (id, X25519 public key)


# docs/PROTOCOL.md, "Prekeys": the signed prekey is rotated this often; a retired one is
# kept until no letter sealed to it can still arrive (the longest TTL plus clock skew).
SIGNED_PREKEY_ROTATE_S = 7 * 24 * 3600.0
SIGNED_PREKEY_RETAIN_S = 7 * 24 * 3600.0 + 600.0
RETIRED_SIGNED_PREKEYS_MAX = 4
# One-time prekeys: refilled to ONE_TIME_PREKEYS when fewer than ONE_TIME_REFILL_BELOW
# remain. The whole stock is published, so it is what a record may carry (records.py).
ONE_TIME_PREKEYS = 16
ONE_TIME_REFILL_BELOW = 8
PREKEY_STATE_VERSION = 1
# Id 0 names no signed prekey: the fallback seal uses the identity key in its place.
FALLBACK_PREKEY_ID = 0
_MAX_PREKEY_ID = 2**32 - 1


class PrekeyError(Exception):
    """Serialized prekey state that does not parse."""


@dataclass
class _SignedPrekey:
    id: int
    private: bytes
    since: float  # created, or (for a retired one) retired at


class PrekeyStore:
    """The private half of our prekey bundle (X3DH section 2.5, docs/PROTOCOL.md "Prekeys").

    ``dirty`` is set whenever the private state changed (the node persists it, then clears
    it); ``bundle_version`` grows whenever ``public_bundle()`` changed, so whoever publishes
    the bundle as a network record knows to publish again.
    """

    def __init__(self, identity_key: bytes, now: float) -> None:
        self.identity_key = identity_key
        self._next_id = 1
        self.signed = _SignedPrekey(self._new_id(), _private(), now)
        self.retired: list[_SignedPrekey] = []
        self.one_time: dict[int, bytes] = {}
        self.dirty = True
        self.bundle_version = 1
        self._refill()

    def _new_id(self) -> int:
        new = self._next_id
        self._next_id = self._next_id % _MAX_PREKEY_ID + 1
        return new

    def _refill(self) -> None:
        if len(self.one_time) >= ONE_TIME_REFILL_BELOW:
            return
        while len(self.one_time) < ONE_TIME_PREKEYS:
            self.one_time[self._new_id()] = _private()
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        self.bundle_version += 1

    def public_bundle(self) -> PublicBundle:
        return PublicBundle(
            self.identity_key,
            self.signed.id,
            _public(self.signed.private),
            tuple((pid, _public(private)) for pid, private in self.one_time.items()),
        )

    def maintain(self, now: float) -> None:
        """Rotate the signed prekey when due; forget retired ones no letter can still use."""
        if now - self.signed.since >= SIGNED_PREKEY_ROTATE_S:
            self.signed.since = now
            self.retired.append(self.signed)
            self.signed = _SignedPrekey(self._new_id(), _private(), now)
            self._changed()
        kept = [p for p in self.retired if now - p.since < SIGNED_PREKEY_RETAIN_S]
        kept = kept[-RETIRED_SIGNED_PREKEYS_MAX:]
        if len(kept) != len(self.retired):
            self.retired = kept
            self.dirty = True

    def signed_private(self, prekey_id: int) -> bytes | None:
        """The private signed prekey with this id, current or retired, or None."""
        for prekey in (self.signed, *self.retired):
            if prekey.id == prekey_id:
                return prekey.private
        return None

    def one_time_private(self, prekey_id: int) -> bytes | None:
        return self.one_time.get(prekey_id)

    def consume_one_time(self, prekey_id: int) -> None:
        """A session that used this one-time prekey is committed: forget it, for good."""
        if self.one_time.pop(prekey_id, None) is not None:
            self._changed()
            self._refill()

    def serialize(self) -> bytes:
        """version u8 | next id u32 | signed: id u32, private 32, since ms u64 | retired
        count u8, each as signed | one-time count u16, each: id u32, private 32."""
        out = bytearray([PREKEY_STATE_VERSION])
        out += struct.pack(">I", self._next_id)
        out += _signed_bytes(self.signed)
        out += struct.pack(">B", len(self.retired))
        for prekey in self.retired:
            out += _signed_bytes(prekey)
        out += struct.pack(">H", len(self.one_time))
        for pid, private in self.one_time.items():
            out += struct.pack(">I", pid) + private
        return bytes(out)

    @classmethod
    def deserialize(cls, identity_key: bytes, data: bytes, now: float) -> PrekeyStore:
        store = cls.__new__(cls)
        store.identity_key = identity_key
        store.dirty = False
        store.bundle_version = 1
        view = memoryview(data)
        try:
            if view[0] != PREKEY_STATE_VERSION:
                raise PrekeyError("unknown prekey state version")
            (store._next_id,) = struct.unpack_from(">I", view, 1)
            pos = 5
            store.signed, pos = _read_signed(view, pos)
            (retired,) = struct.unpack_from(">B", view, pos)
            pos += 1
            store.retired = []
            for _ in range(retired):
                prekey, pos = _read_signed(view, pos)
                store.retired.append(prekey)
            (count,) = struct.unpack_from(">H", view, pos)
            pos += 2
            store.one_time = {}
            for _ in range(count):
                (pid,) = struct.unpack_from(">I", view, pos)
                store.one_time[pid] = bytes(view[pos + 4 : pos + 36])
                if len(store.one_time[pid]) != PREKEY_BYTES:
                    raise PrekeyError("truncated prekey state")
                pos += 36
        except (IndexError, struct.error) as exc:
            raise PrekeyError("truncated prekey state") from exc
        if pos != len(data):
            raise PrekeyError("trailing bytes in prekey state")
        store._refill()
        store.maintain(now)
        return store


def _private() -> bytes:
    return os.urandom(PREKEY_BYTES)


def _public(private: bytes) -> bytes:
    return bytes(crypto_scalarmult_base(private))


def _signed_bytes(prekey: _SignedPrekey) -> bytes:
    return (
        struct.pack(">I", prekey.id) + prekey.private + struct.pack(">Q", int(prekey.since * 1000))
    )


def _read_signed(view: memoryview, pos: int) -> tuple[_SignedPrekey, int]:
    (pid,) = struct.unpack_from(">I", view, pos)
    private = bytes(view[pos + 4 : pos + 36])
    (since_ms,) = struct.unpack_from(">Q", view, pos + 36)
    return _SignedPrekey(pid, private, since_ms / 1000), pos + 44
