"""Content-bound message ids.

Letters themselves are sealed in sessions (``protocol/sessions.py``, docs/PROTOCOL.md,
"Letters and sealing"); relays see a recipient address, an expiry and an opaque blob of
fixed size, and name it by this id.
"""

from __future__ import annotations

import hashlib

MESSAGE_ID_BYTES = 32
_MESSAGE_ID_DOMAIN = b"comm-tui message id v1\x00"
_LETTER_KEY_DOMAIN = b"comm-tui letter key v2\x00"
# BLAKE2b-256 with the message id's domain already absorbed: each id copies it.
_MESSAGE_ID_HASHER = hashlib.blake2b(_MESSAGE_ID_DOMAIN, digest_size=MESSAGE_ID_BYTES)


def message_id(recipient: bytes, expires_ms: int, sealed: bytes) -> bytes:
    """The id of a stored message: a hash over everything a relay stores.

    Binding recipient and expiry into the id means no relay can re-target or
    extend a message, and nobody can poison de-duplication with other content
    under a known id. BLAKE2b-256, unkeyed (docs/PROTOCOL.md, "7.2", and its `H`): the stdlib's,
    which gives libsodium's bytes at a twentieth of PyNaCl's per-call cost (every
    relayed message computes one; tests/test_hashes.py holds the two equal).
    """
    hasher = _MESSAGE_ID_HASHER.copy()  # the domain hashed once, not the 1 KB copied
    hasher.update(recipient + expires_ms.to_bytes(8, "big"))
    hasher.update(sealed)
    return hasher.digest()
