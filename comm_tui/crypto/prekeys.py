"""Prekeys: what a recipient publishes so that others can open a session while it is offline.

An identity publishes a **prekey bundle** (X3DH, Signal's specification section 2.5): a
medium-term *signed prekey*, rotated, and a stock of *one-time prekeys*. The public half
is what travels (as a signed record stored at the owner's neighbourhood,
docs/PROTOCOL.md, "Records"); the private half never leaves the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

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
