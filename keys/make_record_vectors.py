"""Regenerate ``keys/record_vectors.json``, the test vectors for prekey records.

Everything here is computed from the layouts in ``docs/PROTOCOL.md`` ("8a. Records")
with the standard library and PyNaCl's Ed25519, not with ``comm_tui``: the signing
bytes are packed with ``struct``, and the record's protobuf bytes are encoded by hand
(field numbers and wire types of ``PrekeyBundle`` in ``wire.proto``), so the vectors
check the code against the documented format rather than against itself. Ed25519
signatures are deterministic (RFC 8032), so the file is the same on every run.

Run from the repository root: ``python -m keys.make_record_vectors``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

VECTORS_PATH = Path(__file__).with_name("record_vectors.json")
DOMAIN = b"comm-tui prekey record v1\x00"
ISSUED_MS = 1_800_000_000_000
DAY_MS = 24 * 3600 * 1000


def signing_bytes(
    owner: bytes, spk_id: int, spk: bytes, prekeys: list[tuple[int, bytes]], issued: int, exp: int
) -> bytes:
    out = DOMAIN + owner + struct.pack(">I", spk_id) + spk + struct.pack(">B", len(prekeys))
    for prekey_id, key in prekeys:
        out += struct.pack(">I", prekey_id) + key
    return out + struct.pack(">QQ", issued, exp)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def length_delimited(number: int, data: bytes) -> bytes:
    return field(number, 2, varint(len(data)) + data)


def encode_record(
    owner: bytes,
    spk_id: int,
    spk: bytes,
    prekeys: list[tuple[int, bytes]],
    issued: int,
    exp: int,
    signature: bytes,
) -> bytes:
    """``PrekeyBundle`` as protobuf encodes it: fields in number order, zeros omitted."""
    out = length_delimited(1, owner)
    out += field(2, 0, varint(spk_id)) if spk_id else b""
    out += length_delimited(3, spk)
    for prekey_id, key in prekeys:
        body = (field(1, 0, varint(prekey_id)) if prekey_id else b"") + length_delimited(2, key)
        out += length_delimited(4, body)
    out += field(5, 0, varint(issued)) if issued else b""
    out += field(6, 0, varint(exp)) if exp else b""
    return out + length_delimited(7, signature)


def prekey(label: bytes, index: int) -> bytes:
    """A fixed 32-byte stand-in for an X25519 public key (any 32 bytes are one)."""
    return hashlib.blake2b(label + bytes([index]), digest_size=32).digest()


def record_vector(
    description: str,
    seed: bytes,
    spk_id: int,
    prekey_ids: list[int],
    issued: int,
    exp: int,
    *,
    tamper: bool = False,
) -> dict[str, Any]:
    signer = SigningKey(seed)
    owner = bytes(signer.verify_key)
    spk = prekey(b"signed prekey", spk_id & 0xFF)
    prekeys = [(i, prekey(b"one-time prekey", n)) for n, i in enumerate(prekey_ids)]
    signed = signing_bytes(owner, spk_id, spk, prekeys, issued, exp)
    signature = signer.sign(signed).signature
    if tamper:
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    return {
        "description": description,
        "seed_hex": seed.hex(),
        "owner_key_hex": owner.hex(),
        "owner_address_hex": hashlib.blake2b(owner, digest_size=20).hexdigest(),
        "signed_prekey_id": spk_id,
        "signed_prekey_hex": spk.hex(),
        "one_time_prekeys": [{"id": i, "key_hex": k.hex()} for i, k in prekeys],
        "issued_ms": issued,
        "expires_ms": exp,
        "signing_bytes_hex": signed.hex(),
        "signature_hex": signature.hex(),
        "record_hex": encode_record(owner, spk_id, spk, prekeys, issued, exp, signature).hex(),
    }


def main() -> None:
    seed = bytes(range(32))
    valid = [
        record_vector("two one-time prekeys", seed, 7, [1, 2], ISSUED_MS, ISSUED_MS + 2 * DAY_MS),
        record_vector("no one-time prekey", b"\x42" * 32, 1, [], ISSUED_MS, ISSUED_MS + DAY_MS),
        record_vector(
            "sixteen one-time prekeys (the most), largest ids, longest lifetime",
            seed,
            2**32 - 1,
            [2**32 - 1 - i for i in range(16)],
            ISSUED_MS,
            ISSUED_MS + 7 * DAY_MS,
        ),
    ]
    invalid = [
        {
            **record_vector(
                "signature of other bytes", seed, 7, [1], ISSUED_MS, ISSUED_MS + 1, tamper=True
            ),
            "reason": "bad_record",
        },
        {
            **record_vector(
                "lifetime of 7 days + 1 ms", seed, 7, [1], ISSUED_MS, ISSUED_MS + 7 * DAY_MS + 1
            ),
            "reason": "record_too_long",
        },
        {
            **record_vector(
                "one-time prekey ids repeat", seed, 7, [5, 5], ISSUED_MS, ISSUED_MS + 1
            ),
            "reason": "malformed",
        },
        {
            **record_vector(
                "seventeen one-time prekeys", seed, 7, list(range(1, 18)), ISSUED_MS, ISSUED_MS + 1
            ),
            "reason": "malformed",
        },
        {
            **record_vector("signed prekey id 0", seed, 0, [1], ISSUED_MS, ISSUED_MS + 1),
            "reason": "malformed",
        },
        {
            **record_vector("expires when issued", seed, 7, [1], ISSUED_MS, ISSUED_MS),
            "reason": "malformed",
        },
    ]
    vectors = {
        "description": "Test vectors for comm-tui prekey records; see docs/PROTOCOL.md, 8a.",
        "domain_hex": DOMAIN.hex(),
        "records": valid,
        "invalid_records": invalid,
    }
    VECTORS_PATH.write_text(json.dumps(vectors, indent=2) + "\n")


if __name__ == "__main__":
    main()
