"""X3DH (Signal's specification, revision 1): the shared secret that starts a session.

docs/PROTOCOL.md, "Letters and sealing" (X3DH). Identity keys are our Ed25519 keys in
their X25519 form (``crypto_sign_ed25519_pk_to_curve25519``), so a user keeps one secret.

- With the recipient's bundle: DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B),
  DH3 = DH(EK_A, SPK_B), and DH4 = DH(EK_A, OPK_B) when a one-time prekey was there;
  SK = HKDF(salt = 32 zero bytes, IKM = F || DH1 || DH2 || DH3 [|| DH4], info), F = 0xFF * 32.
- Without one (the **fallback**): the recipient's identity X25519 key stands in for the
  signed prekey (prekey id 0) and there is no one-time prekey. Whoever steals the
  recipient's identity then opens the letters sealed before the recipient's first reply
  (no recipient-side forward secrecy for them); the ratchet gives it from the reply on.

X3DH alone does not stop key-compromise impersonation: with B's secrets, DH1 and DH3 can
be computed for any claimed A. So every letter that carries an init header is also signed
with the author's Ed25519 identity (``sign_init``), which needs A's key.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base
from nacl.exceptions import BadSignatureError

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.prekeys import FALLBACK_PREKEY_ID, PrekeyStore, PublicBundle
from comm_tui.crypto.ratchet import KEY_BYTES, RatchetError, generate_dh, hkdf_sha256, x25519

F = b"\xff" * 32
X3DH_INFO = b"comm-tui x3dh v2"
INIT_SIGNATURE_DOMAIN = b"comm-tui letter init v2\x00"
NO_ONE_TIME_PREKEY = 0


class X3DHError(Exception):
    """An init that names prekeys we do not hold, or keys that are not usable."""


@dataclass(frozen=True)
class Initiation:
    """What the initiator learns from X3DH: the secret, its init header, the first ratchet key."""

    sk: bytes
    ephemeral_public: bytes  # also the session's id
    signed_prekey_id: int
    one_time_prekey_id: int
    their_ratchet_key: bytes  # the signed prekey (or, in the fallback, the identity key)


def _derive(dhs: list[bytes]) -> bytes:
    return hkdf_sha256(bytes(KEY_BYTES), F + b"".join(dhs), X3DH_INFO, KEY_BYTES)


def initiate(identity: Identity, peer: PublicIdentity, bundle: PublicBundle | None) -> Initiation:
    """Start a session to ``peer``, from its bundle if we have one, else the fallback.

    A bundle whose identity is not ``peer``'s is ignored (the fallback is used instead).
    Raises X3DHError if a key in the bundle is not usable.
    """
    ek_private, ek_public = generate_dh()
    ik_b = bytes(peer.box_key)
    if bundle is None or bundle.identity_key != peer.key:
        spk, spk_id, opk, opk_id = ik_b, FALLBACK_PREKEY_ID, None, NO_ONE_TIME_PREKEY
    else:
        spk, spk_id = bundle.signed_prekey, bundle.signed_prekey_id
        # A random one: senders of the same record then rarely pick the same (the owner
        # deletes it once used, and a letter naming a used one opens in no session).
        opk_id, opk = (
            secrets.choice(bundle.one_time_prekeys) if bundle.one_time_prekeys else (0, None)
        )
    try:
        dhs = [
            x25519(bytes(identity.box_key), spk),
            x25519(ek_private, ik_b),
            x25519(ek_private, spk),
        ]
        if opk is not None:
            dhs.append(x25519(ek_private, opk))
    except RatchetError as exc:
        raise X3DHError("unusable prekey") from exc
    return Initiation(_derive(dhs), ek_public, spk_id, opk_id, spk)


def respond(
    identity: Identity,
    prekeys: PrekeyStore,
    sender: PublicIdentity,
    ephemeral: bytes,
    signed_prekey_id: int,
    one_time_prekey_id: int,
) -> tuple[bytes, tuple[bytes, bytes]]:
    """The responder's side: (SK, our first ratchet key pair). Pure: consumes nothing.

    Raises X3DHError for a prekey id we do not hold (rotated out and forgotten, or a
    one-time prekey already used): the session is lost, docs/PROTOCOL.md "Session reset".
    """
    if signed_prekey_id == FALLBACK_PREKEY_ID:
        spk_private = bytes(identity.box_key)
    else:
        found = prekeys.signed_private(signed_prekey_id)
        if found is None:
            raise X3DHError("unknown signed prekey")
        spk_private = found
    opk_private = None
    if one_time_prekey_id != NO_ONE_TIME_PREKEY:
        opk_private = prekeys.one_time_private(one_time_prekey_id)
        if opk_private is None:
            raise X3DHError("unknown one-time prekey")
    try:
        ik_a = bytes(sender.box_key)
        dhs = [
            x25519(spk_private, ik_a),
            x25519(bytes(identity.box_key), ephemeral),
            x25519(spk_private, ephemeral),
        ]
        if opk_private is not None:
            dhs.append(x25519(opk_private, ephemeral))
    except (RatchetError, ValueError) as exc:
        raise X3DHError("unusable key") from exc
    return _derive(dhs), (spk_private, bytes(crypto_scalarmult_base(spk_private)))


def sign_init(identity: Identity, recipient_key: bytes, envelope: bytes) -> bytes:
    """The KCI signature of an init letter: over a domain, the recipient and the envelope."""
    return identity.sign(INIT_SIGNATURE_DOMAIN + recipient_key + envelope)


def verify_init(
    sender: PublicIdentity, recipient_key: bytes, envelope: bytes, signature: bytes
) -> bool:
    try:
        sender.verify_key.verify(INIT_SIGNATURE_DOMAIN + recipient_key + envelope, signature)
    except (BadSignatureError, ValueError):
        return False
    return True
