"""Prekey records: an identity's public prekey bundle, signed, as the network stores it.

A record is what lets a sender open a session (X3DH) with a recipient who is offline:
the owner signs its ``PublicBundle`` with its Ed25519 identity and publishes it to its
own neighbourhood, where relays keep it like any relayed item (docs/PROTOCOL.md,
"8a. Records"). Relays and fetchers check, in this order and before any signature work,
that the record is well formed (``record_problem``), then the signature
(``verify_record``). The signature covers a canonical byte string
(``record_signing_bytes``), never protobuf bytes: two encoders of one record may
produce different protobuf bytes, and a relay discards unknown fields.
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError

from comm_tui.crypto.ack import SIGNATURE_BYTES
from comm_tui.crypto.identity import Identity, PublicIdentity, is_valid_public_key
from comm_tui.crypto.prekeys import PREKEY_BYTES, PublicBundle
from comm_tui.protocol import wire_pb2 as pb

RECORD_DOMAIN = b"comm-tui prekey record v1\x00"
# One-time prekeys a record carries at most: the worst-case record (every varint at its
# largest) answering a GetRecord, with a cookie, is then 955 bytes of the 1,200-byte
# datagram (21 would fit; the margin is for fields a later version adds).
MAX_ONE_TIME_PREKEYS = 16
# A record lives at most this long after it was issued (relays refuse longer ones, so an
# owner's record cannot outlive the texts it would serve).
MAX_RECORD_LIFETIME_S = 7 * 24 * 3600
# What an owner asks for, and how often it issues a fresh record (well before expiry,
# so neighbours that joined or lost it since get it again).
RECORD_LIFETIME_S = 2 * 24 * 3600
RECORD_REFRESH_S = 12 * 3600
_MAX_ID = 2**32 - 1


def record_signing_bytes(
    owner_key: bytes,
    signed_prekey_id: int,
    signed_prekey: bytes,
    one_time_prekeys: tuple[tuple[int, bytes], ...],
    issued_ms: int,
    expires_ms: int,
) -> bytes:
    """The canonical bytes an owner signs (docs/PROTOCOL.md, "8a. Records").

    ``domain || owner_key || u32(spk_id) || spk || u8(n) || n x (u32(id) || key) ||
    u64(issued_ms) || u64(expires_ms)``, integers big-endian. Every field has a fixed
    size or a count before it, so no two records share their signing bytes.
    """
    parts = [
        RECORD_DOMAIN,
        owner_key,
        signed_prekey_id.to_bytes(4, "big"),
        signed_prekey,
        len(one_time_prekeys).to_bytes(1, "big"),
    ]
    for prekey_id, key in one_time_prekeys:
        parts += [prekey_id.to_bytes(4, "big"), key]
    parts += [issued_ms.to_bytes(8, "big"), expires_ms.to_bytes(8, "big")]
    return b"".join(parts)


def _prekeys_of(record: pb.PrekeyBundle) -> tuple[tuple[int, bytes], ...]:
    return tuple((p.id, p.key) for p in record.one_time_prekeys)


def record_problem(record: pb.PrekeyBundle) -> str | None:
    """The reason a record is out of shape (a ``stats.reject`` reason), or None.

    Cheap checks only, done before any signature work: sizes, counts, distinct nonzero
    ids (id 0 names "no prekey" in a session init), a valid owner key, and a lifetime
    within ``MAX_RECORD_LIFETIME_S`` (``record_too_long``). Whether the record is still
    alive depends on the clock and is the caller's to check.
    """
    if (
        len(record.owner_key) != 32
        or len(record.signed_prekey) != PREKEY_BYTES
        or len(record.signature) != SIGNATURE_BYTES
        or record.signed_prekey_id == 0
        or len(record.one_time_prekeys) > MAX_ONE_TIME_PREKEYS
    ):
        return "malformed"
    ids = [p.id for p in record.one_time_prekeys]
    if 0 in ids or len(set(ids)) != len(ids):
        return "malformed"
    if any(len(p.key) != PREKEY_BYTES for p in record.one_time_prekeys):
        return "malformed"
    if record.expires_ms <= record.issued_ms:
        return "malformed"
    if record.expires_ms - record.issued_ms > MAX_RECORD_LIFETIME_S * 1000:
        return "record_too_long"
    if not is_valid_public_key(record.owner_key):
        return "bad_key"
    return None


def sign_record(
    identity: Identity, bundle: PublicBundle, issued_ms: int, expires_ms: int
) -> pb.PrekeyBundle:
    """The signed record of our own bundle; ValueError if the bundle cannot be one."""
    if bundle.identity_key != identity.key:
        raise ValueError("a prekey bundle can only be signed by its own identity")
    if not 0 < bundle.signed_prekey_id <= _MAX_ID or any(
        not 0 < i <= _MAX_ID for i, _ in bundle.one_time_prekeys
    ):
        raise ValueError("prekey ids must be 1 .. 2^32-1")
    prekeys = bundle.one_time_prekeys
    signature = identity.sign(
        record_signing_bytes(
            identity.key,
            bundle.signed_prekey_id,
            bundle.signed_prekey,
            prekeys,
            issued_ms,
            expires_ms,
        )
    )
    record = pb.PrekeyBundle(
        owner_key=identity.key,
        signed_prekey_id=bundle.signed_prekey_id,
        signed_prekey=bundle.signed_prekey,
        one_time_prekeys=[pb.OneTimePrekey(id=i, key=k) for i, k in prekeys],
        issued_ms=issued_ms,
        expires_ms=expires_ms,
        signature=signature,
    )
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(f"prekey record would be refused: {problem}")
    return record


def verify_record(record: pb.PrekeyBundle) -> bool:
    """True when the record is well formed and signed by the owner key it carries."""
    if record_problem(record) is not None:
        return False
    signed = record_signing_bytes(
        record.owner_key,
        record.signed_prekey_id,
        record.signed_prekey,
        _prekeys_of(record),
        record.issued_ms,
        record.expires_ms,
    )
    try:
        PublicIdentity(record.owner_key).verify_key.verify(signed, record.signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def bundle_of(record: pb.PrekeyBundle) -> PublicBundle:
    """The public bundle a (verified) record carries, as X3DH uses it."""
    return PublicBundle(
        identity_key=record.owner_key,
        signed_prekey_id=record.signed_prekey_id,
        signed_prekey=record.signed_prekey,
        one_time_prekeys=_prekeys_of(record),
    )
