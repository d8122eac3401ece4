"""Acknowledgements signed by the recipient.

Only the holder of the recipient's key can stop a message: a relay accepts an ack
when the key it carries hashes to the recipient address of the message it holds under
that id and the signature over (message id, expiry) verifies. The ack names no sender:
it travels back the way the message came (docs/PROTOCOL.md, "7.3 Acks").
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.seal import MESSAGE_ID_BYTES
from comm_tui.protocol import wire_pb2 as pb

_ACK_DOMAIN = b"comm-tui ack v2\x00"
SIGNATURE_BYTES = 64


def ack_signing_bytes(message_id: bytes, expires_ms: int) -> bytes:
    return _ACK_DOMAIN + message_id + expires_ms.to_bytes(8, "big")


def sign_ack(identity: Identity, message_id: bytes, expires_ms: int) -> pb.Ack:
    return pb.Ack(
        message_id=message_id,
        recipient_key=identity.key,
        expires_ms=expires_ms,
        signature=identity.sign(ack_signing_bytes(message_id, expires_ms)),
    )


def ack_is_well_formed(ack: pb.Ack) -> bool:
    """Cheap shape check, done before any signature work."""
    return (
        len(ack.message_id) == MESSAGE_ID_BYTES
        and len(ack.recipient_key) == 32
        and len(ack.signature) == SIGNATURE_BYTES
    )


def verify_ack(ack: pb.Ack) -> bool:
    """True when the ack is signed by the key it carries (the ~55 µs Ed25519 verify)."""
    if not ack_is_well_formed(ack):
        return False
    try:
        PublicIdentity(ack.recipient_key).verify_key.verify(
            ack_signing_bytes(ack.message_id, ack.expires_ms), ack.signature
        )
    except (BadSignatureError, ValueError):
        return False
    return True
