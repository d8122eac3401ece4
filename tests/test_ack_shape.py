"""An ack's shape is checked field by field before any signature work (docs/PROTOCOL.md,
"7.3 Acks"): a wrong length in any one of message id, recipient key or signature makes it
malformed. Mutation testing (bench/MUTATION.md) found that the node tests let "and" become
"or" between these checks, since each such ack failed later anyway, at a higher cost."""

from __future__ import annotations

import struct

import pytest

from comm_tui.crypto.ack import SIGNATURE_BYTES, ack_is_well_formed, sign_ack, verify_ack
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.seal import MESSAGE_ID_BYTES

RECIPIENT = Identity.from_seed(b"\x05" * 32)
EXPIRES_MS = 1_800_003_600_000


def test_a_signed_ack_is_well_formed_and_verifies() -> None:
    ack = sign_ack(RECIPIENT, b"m" * MESSAGE_ID_BYTES, EXPIRES_MS)
    assert (len(ack.message_id), len(ack.signature)) == (MESSAGE_ID_BYTES, SIGNATURE_BYTES)
    assert ack_is_well_formed(ack)
    assert verify_ack(ack)


@pytest.mark.parametrize("field", ["message_id", "recipient_key", "signature"])
@pytest.mark.parametrize("change", [-1, 1])
def test_one_field_of_the_wrong_length_makes_an_ack_malformed(field: str, change: int) -> None:
    ack = sign_ack(RECIPIENT, b"m" * MESSAGE_ID_BYTES, EXPIRES_MS)
    value = getattr(ack, field)
    setattr(ack, field, value[:-1] if change < 0 else value + b"\x00")
    assert not ack_is_well_formed(ack)
    assert not verify_ack(ack)


def test_the_signature_covers_the_layout_the_spec_gives() -> None:
    """docs/PROTOCOL.md, "7.3 Acks": the recipient signs "comm-tui ack v2\\0" || message_id
    || expires_ms (8 bytes, big-endian); another implementation builds the same bytes."""
    message_id = bytes(range(MESSAGE_ID_BYTES))
    signed = b"comm-tui ack v2\x00" + message_id + struct.pack(">Q", EXPIRES_MS)
    ack = sign_ack(RECIPIENT, message_id, EXPIRES_MS)
    RECIPIENT.public.verify_key.verify(signed, ack.signature)  # raises if it differs


def test_an_ack_signed_by_another_key_or_for_another_expiry_does_not_verify() -> None:
    message_id = b"m" * MESSAGE_ID_BYTES
    forged = sign_ack(Identity.from_seed(b"\x06" * 32), message_id, EXPIRES_MS)
    forged.recipient_key = RECIPIENT.key  # well formed, signed by someone else
    assert ack_is_well_formed(forged)
    assert not verify_ack(forged)
    stretched = sign_ack(RECIPIENT, message_id, EXPIRES_MS)
    stretched.expires_ms += 3_600_000  # a relay extending the ack's life
    assert not verify_ack(stretched)
