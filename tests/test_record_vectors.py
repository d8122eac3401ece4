"""The published prekey-record vectors in keys/record_vectors.json hold for the code.

The vectors are computed from the documented layouts without ``comm_tui``
(keys/make_record_vectors.py), so these tests check the code against the spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PublicBundle
from comm_tui.crypto.records import (
    RECORD_DOMAIN,
    bundle_of,
    record_problem,
    record_signing_bytes,
    sign_record,
    verify_record,
)
from comm_tui.protocol import wire_pb2 as pb

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "keys" / "record_vectors.json").read_text()
)


def _ids(section: str) -> list[str]:
    return [str(vector["description"]) for vector in VECTORS[section]]


def _bundle(vector: dict[str, Any]) -> PublicBundle:
    return PublicBundle(
        bytes.fromhex(vector["owner_key_hex"]),
        vector["signed_prekey_id"],
        bytes.fromhex(vector["signed_prekey_hex"]),
        tuple((p["id"], bytes.fromhex(p["key_hex"])) for p in vector["one_time_prekeys"]),
    )


def test_sections_are_populated() -> None:
    assert VECTORS["domain_hex"] == RECORD_DOMAIN.hex()
    assert len(VECTORS["records"]) >= 3
    assert {v["reason"] for v in VECTORS["invalid_records"]} >= {
        "bad_record",
        "record_too_long",
        "malformed",
    }


@pytest.mark.parametrize("vector", VECTORS["records"], ids=_ids("records"))
def test_record(vector: dict[str, Any]) -> None:
    identity = Identity.from_seed(bytes.fromhex(vector["seed_hex"]))
    assert identity.key.hex() == vector["owner_key_hex"]
    assert identity.address.hex() == vector["owner_address_hex"]
    bundle = _bundle(vector)
    signed = record_signing_bytes(
        bundle.identity_key,
        bundle.signed_prekey_id,
        bundle.signed_prekey,
        bundle.one_time_prekeys,
        vector["issued_ms"],
        vector["expires_ms"],
    )
    assert signed.hex() == vector["signing_bytes_hex"]
    record = sign_record(identity, bundle, vector["issued_ms"], vector["expires_ms"])
    assert record.signature.hex() == vector["signature_hex"]
    assert record.SerializeToString().hex() == vector["record_hex"]
    decoded = pb.PrekeyBundle.FromString(bytes.fromhex(vector["record_hex"]))
    assert verify_record(decoded)
    assert bundle_of(decoded) == bundle


@pytest.mark.parametrize("vector", VECTORS["invalid_records"], ids=_ids("invalid_records"))
def test_invalid_record(vector: dict[str, Any]) -> None:
    record = pb.PrekeyBundle.FromString(bytes.fromhex(vector["record_hex"]))
    assert not verify_record(record)
    problem = record_problem(record)
    assert (problem or "bad_record") == vector["reason"]
