"""Sessions between real node cores (tests/wire.py): forward secrecy and post-compromise
security against a recorded conversation, no key-compromise impersonation, letters in any
order, hostile envelopes, simultaneous starts and lost sessions.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import SealedBox

from comm_tui.crypto import ratchet as ratchet_module
from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.prekeys import PrekeyStore
from comm_tui.crypto.ratchet import (
    MAX_SKIP,
    RatchetState,
    aead_encrypt,
    generate_dh,
    hkdf_sha256,
    x25519,
)
from comm_tui.crypto.x3dh import X3DH_INFO, F, sign_init
from comm_tui.protocol import sessions as sessions_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec, Rejected
from comm_tui.protocol.directory import ONE_TIME_PREKEYS_FRESH_S
from comm_tui.protocol.events import NameClaimed, SessionReset, SessionsChanged
from comm_tui.protocol.letters import CHUNK_BYTES, LETTER_BYTES, decode_letter, encode_letter
from comm_tui.protocol.node import (
    HANDSHAKE_BURST,
    HANDSHAKE_INTERVAL_S,
    Node,
)
from comm_tui.protocol.routing import Endpoint
from comm_tui.protocol.sessions import (
    ENVELOPE_BYTES,
    SEALED_BYTES,
    SESSIONS_PER_PEER,
    SKIP_KEYS_PER_KEY_BURST,
    SKIP_KEYS_PER_NETWORK_BURST,
    SKIP_KEYS_PER_NETWORK_PER_S,
    SKIP_KEYS_PER_WIDE_NETWORK_BURST,
    SessionBook,
    SessionError,
    serialize_sessions,
)
from tests.wire import T0, Wire

Recorded = list[tuple[bytes, Endpoint, float]]
# The network of origin of the hop that hands a book its letters in these tests.
NET = "198.51.100.0/24"


def recording(wire: Wire) -> Recorded:
    """Every datagram that crosses the wire, with its destination and time."""
    seen: Recorded = []
    clock = {"now": T0}

    def tap(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        seen.append((data, dest, clock["now"]))
        return False

    wire.drop = tap
    wire.clock = clock  # type: ignore[attr-defined]
    return seen


def at(wire: Wire, now: float) -> float:
    wire.clock["now"] = now  # type: ignore[attr-defined]
    return now


def letters_for(victim: Identity, seen: Recorded, endpoint: Endpoint) -> list[bytes]:
    """The sealed payloads of every message frame sent to ``victim``, as an eavesdropper
    holding the victim's seed decodes them from the recorded datagrams."""
    codec = Codec(victim)
    out = []
    for data, dest, when in seen:
        if dest != endpoint:
            continue
        try:
            decoded = codec.decode(data, when)
        except Rejected:
            continue
        frame = decoded.frame
        if (
            frame is not None
            and frame.WhichOneof("body") == "message"
            and frame.message.recipient == victim.address
        ):
            out.append(frame.message.sealed)
    return list(dict.fromkeys(out))


def thief_of(node: Node, now: float) -> SessionBook:
    """Everything ``node`` holds at ``now``: identity seed, prekeys and session state."""
    identity = Identity.from_seed(node.identity.seed)
    prekeys = PrekeyStore.deserialize(identity.key, node._prekeys.serialize(), now)
    book = SessionBook(identity, prekeys)
    for key, sessions in node._sessions.peers.items():
        book.restore(key, serialize_sessions(sessions))
    return book


def opens(book: SessionBook, sealed: bytes, now: float) -> bool:
    try:
        book.open(sealed, now, NET)
    except SessionError:
        return False
    return True


def texts_of(wire: Wire, node: Node) -> list[str]:
    return [t.text for t in wire.texts(node)]


def test_forward_secrecy_and_post_compromise_security_against_a_recorded_conversation() -> None:
    wire = Wire()
    seen = recording(wire)
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a._directory.known_bundles[b.address] = b._prekeys.public_bundle()  # fetched from the network
    b_end = wire.endpoint(b)
    now = T0
    for i in range(6):  # a conversation, both ways, with multi-part texts
        now = at(wire, now + 10)
        a.send_text(b.identity.public, f"a{i} " + "x" * (CHUNK_BYTES * (i % 3)), now)
        a.send_text(b.identity.public, f"a{i}'", now)
        wire.pump(now)
        now = at(wire, now + 10)
        b.send_text(a.identity.public, f"b{i}", now)
        wire.pump(now)
    assert len(texts_of(wire, b)) == 12 and len(texts_of(wire, a)) == 6
    # Time T: the attacker takes b's seed, prekeys and sessions.
    before = letters_for(b.identity, seen, b_end)
    assert len(before) >= 12
    thief = thief_of(b, now)
    assert not [s for s in before if opens(thief, s, now)]
    # The owner still opens nothing twice either (keys are deleted once used).
    assert not [s for s in before if opens(b._sessions, s, now)]

    # One round trip after T: a -> b (a's new ratchet key meets b's stolen one, so the
    # thief still reads it; b moves to a fresh key), then b -> a (b's fresh key).
    now = at(wire, now + 10)
    a.send_text(b.identity.public, "right after T", now)
    wire.pump(now)
    after_t = letters_for(b.identity, seen, b_end)[len(before) :]
    assert after_t and all(opens(thief, s, now) for s in after_t)  # the thief is still in
    for sealed in after_t:  # and follows the conversation passively
        opened = thief.open(sealed, now, NET)
        thief.commit(opened.author, [opened.token], now, sent_ms=0, handshake=False)
    now = at(wire, now + 10)
    b.send_text(a.identity.public, "reply", now)
    wire.pump(now)
    # Healed: what a sends now does not open with the stolen state.
    now = at(wire, now + 10)
    a.send_text(b.identity.public, "after the round trip", now)
    a.send_text(b.identity.public, "and another", now)
    wire.pump(now)
    healed = letters_for(b.identity, seen, b_end)[len(before) + len(after_t) :]
    assert len(healed) == 2
    assert not [s for s in healed if opens(thief, s, now)]
    assert texts_of(wire, b)[-2:] == ["after the round trip", "and another"]


def test_the_fallback_seal_has_no_recipient_side_secrecy_until_the_reply() -> None:
    """Without a bundle, a's first letter is sealed to b's identity key: b's seed opens it
    (documented). Once b has replied, a's letters no longer open with b's seed alone."""
    wire = Wire()
    seen = recording(wire)
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.send_text(b.identity.public, "first", at(wire, T0 + 1))
    wire.pump(T0 + 1)
    b.send_text(a.identity.public, "reply", at(wire, T0 + 2))
    wire.pump(T0 + 2)
    a.send_text(b.identity.public, "second", at(wire, T0 + 3))
    wire.pump(T0 + 3)
    first, second = letters_for(b.identity, seen, wire.endpoint(b))
    seed_only = SessionBook(Identity.from_seed(b.identity.seed), PrekeyStore(b.identity.key, T0))
    assert opens(seed_only, first, T0 + 3)
    assert not opens(seed_only, second, T0 + 3)


# ---------------------------------------------------------------- impersonation


def forged_init(victim: Identity, claimed: PublicIdentity, signer: Identity) -> bytes:
    """A letter "from" ``claimed`` built by someone holding the victim's secrets.

    X3DH alone lets them: with the victim's identity key they compute the same secret as
    ``claimed`` would (DH1 = DH(victim, claimed) and so on), so the ratchet and the AEAD
    check out. Only the Ed25519 signature over the init needs ``claimed``'s key.
    """
    ek_private, ek_public = generate_dh()
    ik_victim = bytes(victim.public.box_key)
    dhs = [
        x25519(bytes(victim.box_key), bytes(claimed.box_key)),  # DH1: needs the victim's key
        x25519(ek_private, ik_victim),  # DH2, DH3 (fallback: the identity is the prekey)
        x25519(ek_private, ik_victim),
    ]
    sk = hkdf_sha256(bytes(32), F + b"".join(dhs), X3DH_INFO, 32)
    state = RatchetState.initiator(sk, ik_victim)
    header, mk = state.encrypt_step()
    letter = encode_letter(b"f" * 16, 0, 1, int(T0 * 1000), b"send the money")
    head = (
        bytes([2, 0x01])
        + claimed.key
        + ek_public
        + struct.pack(">II", 0, 0)
        + header.encode()
        + struct.pack(">H", 0)
    )
    ad = b"comm-tui letter v2\x00" + victim.key + head
    body = head + aead_encrypt(mk, 0, letter, ad)
    envelope = body + sign_init(signer, victim.key, body)
    assert len(envelope) == ENVELOPE_BYTES
    return bytes(SealedBox(victim.public.box_key).encrypt(envelope))


def test_key_compromise_impersonation_is_refused() -> None:
    """With b's seed, a letter forged as from a is rejected; signed by a, the same opens."""
    alice, bob = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    mallory = Identity.from_seed(b"\x03" * 32)
    book = SessionBook(bob, PrekeyStore(bob.key, T0))
    with pytest.raises(SessionError) as refused:
        book.open(forged_init(bob, alice.public, mallory), T0, NET)
    assert refused.value.reason == "bad_signature"
    # The same construction with alice's signature opens: the signature is what stops it.
    opened = book.open(forged_init(bob, alice.public, alice), T0, NET)
    assert decode_letter(opened.letter).chunk == b"send the money"


def test_kci_forgery_is_counted_and_never_shown_by_the_node() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    mallory = Identity.from_seed(b"\x09" * 32)
    sealed = forged_init(b.identity, a.identity.public, mallory)
    msg = pb.Message(recipient=b.address, expires_ms=int((T0 + 3600) * 1000), sealed=sealed)
    data = a._codec.encode_frame(b.identity.key, pb.Frame(message=msg), T0)
    b.receive_datagram(data, wire.endpoint(a), T0)
    wire.pump(T0)
    assert b.stats.rejected["bad_signature"] == 1
    assert texts_of(wire, b) == []


# ---------------------------------------------------------------- order, duplicates


def test_a_thousand_letters_in_random_order_and_duplicates() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    sender = SessionBook(alice, PrekeyStore(alice.key, T0))
    receiver = SessionBook(bob, PrekeyStore(bob.key, T0))
    sealed = [
        sender.seal_text(bob.public, [encode_letter(bytes(16), 0, 1, i, b"%d" % i)], None, T0)[0]
        for i in range(1000)
    ]
    order = list(range(1000))
    random.Random(9).shuffle(order)
    got = []
    for i in order:
        opened = receiver.open(sealed[i], T0, NET)
        again = receiver.open(sealed[i], T0, NET)  # a duplicate before commit opens the same
        assert again.letter == opened.letter
        receiver.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
        with pytest.raises(SessionError):  # after commit, its key is gone
            receiver.open(sealed[i], T0, NET)
        got.append(int(decode_letter(opened.letter).chunk))
    assert sorted(got) == list(range(1000))
    # Both ways afterwards.
    (reply,) = receiver.seal_text(
        alice.public, [encode_letter(bytes(16), 0, 1, 0, b"ok")], None, T0
    )
    assert decode_letter(sender.open(reply, T0, NET).letter).chunk == b"ok"


def test_parts_out_of_order_interleaved_with_other_texts_complete() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    texts = ["one " * 600, "two " * 400, "three"]
    for text in texts:
        a.send_text(b.identity.public, text, T0)
    out = [d for d, e in a.datagrams_to_send() if e == wire.endpoint(b)]
    random.Random(4).shuffle(out)
    for data in out + out[:5]:  # and some duplicates
        b.receive_datagram(data, wire.endpoint(a), T0)
    wire.pump(T0)
    assert sorted(texts_of(wire, b)) == sorted(texts)
    assert b._sessions.peek_hits > 0  # the parts of a text share one peeked key
    b.send_text(a.identity.public, "got them", T0 + 1)
    wire.pump(T0 + 1)
    assert texts_of(wire, a) == ["got them"]


# ---------------------------------------------------------------- hostile envelopes


def reseal(to: Identity, envelope: bytes) -> bytes:
    return bytes(SealedBox(to.public.box_key).encrypt(envelope))


def test_hostile_envelopes_are_counted_never_raised_and_grow_nothing() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.send_text(b.identity.public, "hello", T0)
    wire.pump(T0)
    b.send_text(a.identity.public, "hello back", T0)
    wire.pump(T0)
    a.send_text(b.identity.public, "real", T0)
    genuine = next(e.wire.sealed for e in a._store if e.own_text_id and hasattr(e.wire, "sealed"))
    envelope = SealedBox(b.identity.box_key).decrypt(genuine)
    wire.pump(T0)
    rng = random.Random(3)
    hostile: list[bytes] = [
        reseal(b.identity, rng.randbytes(ENVELOPE_BYTES)),  # garbage
        reseal(b.identity, envelope[:-1]),  # wrong size
        reseal(b.identity, bytes([3]) + envelope[1:]),  # unknown version
        reseal(b.identity, envelope[:1] + b"\x80" + envelope[2:]),  # unknown flag
        reseal(b.identity, envelope[:1] + b"\x01" + envelope[2:]),  # init, unsigned
        reseal(b.identity, envelope[:2] + b.identity.key + envelope[34:]),  # from b itself
        reseal(b.identity, envelope[:2] + bytes(32) + envelope[34:]),  # invalid key
        reseal(b.identity, envelope[:34] + rng.randbytes(32) + envelope[66:]),  # unknown sid
        reseal(b.identity, envelope[:66] + b"\xff" * 8 + envelope[74:]),  # ids, no init
        # A huge counter and a huge PN in the genuine session: refused before any work.
        reseal(b.identity, envelope[:106] + struct.pack(">II", 0, 2**32 - 1) + envelope[114:]),
        reseal(b.identity, envelope[:106] + struct.pack(">II", 2**32 - 1, 0) + envelope[114:]),
        reseal(b.identity, envelope[:74] + bytes(32) + envelope[106:]),  # low-order key
        reseal(b.identity, envelope[:114] + b"\xff\xff" + envelope[116:]),  # other part
        rng.randbytes(SEALED_BYTES),  # not even for us
    ]
    (genuine_session,) = b._sessions.peers[a.identity.key]
    skipped_before = genuine_session.state.serialize()
    rejected_before = sum(b.stats.rejected.values())
    for i, sealed in enumerate(hostile * 50):
        msg = pb.Message(recipient=b.address, expires_ms=int((T0 + 3600) * 1000), sealed=sealed)
        data = a._codec.encode_frame(b.identity.key, pb.Frame(message=msg), T0 + i * 0.001)
        b.receive_datagram(data, wire.endpoint(a), T0 + i * 0.001)
    assert b.stats.rejected["internal_error"] == 0
    assert sum(b.stats.rejected.values()) - rejected_before == len(hostile) * 50
    assert b.stats.rejected["no_session"] > 0 and b.stats.rejected["bad_envelope"] > 0
    assert genuine_session.state.serialize() == skipped_before
    # Claims of a lost session cost one handshake (a new session) per named peer per
    # interval, and nothing else.
    assert b.stats.handshakes_sent == 1
    assert list(b._sessions.peers) == [a.identity.key]
    assert len(b._sessions.peers[a.identity.key]) == 2
    wire.pump(T0 + 1)
    assert texts_of(wire, b) == ["hello", "real"]


def test_handshakes_are_bounded_per_peer_and_per_node() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    rng = random.Random(8)
    for i in range(200):
        claimed = Identity.from_seed(bytes([7]) * 31 + bytes([i % 50]))
        envelope = bytearray(rng.randbytes(ENVELOPE_BYTES))
        envelope[0:2] = b"\x02\x00"
        envelope[2:34] = claimed.key
        envelope[66:74] = bytes(8)
        envelope[-64:] = bytes(64)
        with pytest.raises(SessionError) as lost:
            b._sessions.open(reseal(b.identity, bytes(envelope)), T0, NET)
        assert lost.value.lost_with == claimed.public
        b._session_lost(claimed.public, T0 + i * 0.01)
    assert b.stats.handshakes_sent == HANDSHAKE_BURST
    assert len(b._sessions.peers) <= HANDSHAKE_BURST + 1


def test_sessions_per_peer_are_bounded() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    book = SessionBook(alice, PrekeyStore(alice.key, T0))
    for i in range(SESSIONS_PER_PEER + 3):
        book.start_session(bob.public, None, T0 + i)
    assert len(book.peers[bob.key]) == SESSIONS_PER_PEER
    newest = book.active(bob.key)
    assert newest is not None and newest.active_at == T0 + SESSIONS_PER_PEER + 2


# ---------------------------------------------------------------- starts and resets


def test_simultaneous_starts_both_deliver_and_raise_no_notice() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "from a", T0)
    a.datagrams_to_send()
    wire.offline.clear()
    from_a = [e.wire for e in a._store if e.own_text_id]
    b.send_text(a.identity.public, "from b", T0 + 1)  # b has no session yet either
    wire.pump(T0 + 1)
    for msg in from_a:  # a's letter arrives late
        data = a._codec.encode_frame(b.identity.key, pb.Frame(message=msg), T0 + 2)
        b.receive_datagram(data, wire.endpoint(a), T0 + 2)
    wire.pump(T0 + 2)
    for i in range(3):
        a.send_text(b.identity.public, f"a{i}", T0 + 3 + i)
        b.send_text(a.identity.public, f"b{i}", T0 + 3 + i)
        wire.pump(T0 + 3 + i)
    assert texts_of(wire, a) == ["from b", "b0", "b1", "b2"]
    assert texts_of(wire, b) == ["from a", "a0", "a1", "a2"]
    assert not wire.of(a, SessionReset) and not wire.of(b, SessionReset)


def restored(wire: Wire, old: Node, seed: int, blobs: dict[bytes, bytes], prekeys: bytes) -> Node:
    """``old``'s identity, on a new core whose sessions are a backup's."""
    fresh = Node(old.identity, T0, config=old.config, rng=random.Random(seed))
    fresh.restore_sessions(prekeys, blobs.items(), T0)
    endpoint = wire.endpoint(old)
    wire.nodes[endpoint] = fresh
    return fresh


def session_blobs(wire: Wire, node: Node) -> tuple[dict[bytes, bytes], bytes]:
    """What the node persisted so far, as its database would hold it."""
    blobs: dict[bytes, bytes] = {}
    prekeys = b""
    for event in wire.of(node, SessionsChanged):
        assert isinstance(event, SessionsChanged)
        for key, blob in event.put.items():
            if blob is None:
                blobs.pop(key, None)
            else:
                blobs[key] = blob
        if event.prekeys is not None:
            prekeys = event.prekeys
    return blobs, prekeys


def test_a_lost_session_is_detected_reset_with_a_notice_and_needs_no_help() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    now = T0
    for i in range(2):
        now += 10
        a.send_text(b.identity.public, f"a{i}", now)
        wire.pump(now)
        b.send_text(a.identity.public, f"b{i}", now)
        wire.pump(now)
    backup = session_blobs(wire, b)
    for i in range(2, 4):  # the conversation moves on past the backup
        now += 10
        a.send_text(b.identity.public, f"a{i}", now)
        wire.pump(now)
        b.send_text(a.identity.public, f"b{i}", now)
        wire.pump(now)
    b2 = restored(wire, b, 2, *backup)  # b's disk is restored from the backup
    now += 10
    lost_id = a.send_text(b.identity.public, "after the restore", now)
    wire.pump(now)
    assert b2.stats.rejected["no_session"] >= 1 and b2.stats.handshakes_sent == 1
    resets = wire.of(a, SessionReset)
    assert [r.peer_key for r in resets] == [b.identity.key]  # type: ignore[attr-defined]
    # The driver re-sends what was not acknowledged (net/service.py does this from history).
    a.send_text(b.identity.public, "after the restore", now, text_id=lost_id)
    wire.pump(now)
    assert texts_of(wire, b2)[-1:] == ["after the restore"]
    assert wire.states(a, lost_id)[-1] == "delivered"
    # And the conversation goes on both ways without another reset.
    now += 10
    b2.send_text(a.identity.public, "back", now)
    a.send_text(b.identity.public, "welcome back", now)
    wire.pump(now)
    assert texts_of(wire, a)[-1] == "back" and texts_of(wire, b2)[-1] == "welcome back"
    assert len(wire.of(a, SessionReset)) == 1


def test_a_name_claim_from_a_peer_that_lost_its_sessions_is_a_reset() -> None:
    """docs/PROTOCOL.md, "Session reset": a new session whose first letter was written
    after we had confirmed one with its author re-establishes a lost session, whatever
    the letter carries; a profile letter (a name claim, "7.1.1") too. That needs the
    time it was written on the profile letter: mutation testing found a profile letter
    sent with none unnoticed (bench/MUTATION.md)."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    now = T0
    for i in range(2):
        now += 10
        a.send_text(b.identity.public, f"a{i}", now)
        b.send_text(a.identity.public, f"b{i}", now)
        wire.pump(now)
    assert not wire.of(b, SessionReset)
    a2 = Node(a.identity, T0, config=a.config, rng=random.Random(5))  # a lost its sessions
    wire.nodes[wire.endpoint(a)] = a2
    now += 10
    wire.connect(a2, b, now)
    a2.send_profile(b.identity.public, "Alice", 1, now)
    wire.pump(now)
    assert [(e.sender.key, e.name) for e in wire.of(b, NameClaimed)] == [  # type: ignore[attr-defined]
        (a.identity.key, "Alice")
    ]
    assert [e.peer_key for e in wire.of(b, SessionReset)] == [a.identity.key]  # type: ignore[attr-defined]


def test_one_time_prekeys_are_used_once_and_consumed_on_commit() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    bundle = b._prekeys.public_bundle()
    a._directory.known_bundles[b.address] = bundle
    a.send_text(b.identity.public, "with a bundle", T0)
    session = a._sessions.active(b.identity.key)
    assert session is not None and session.pending_init is not None
    opk_id = session.pending_init[1]
    assert opk_id in dict(bundle.one_time_prekeys)
    wire.pump(T0)
    assert texts_of(wire, b) == ["with a bundle"]
    assert b._prekeys.one_time_private(opk_id) is None
    # The consumption was reported for persistence in the same batch as the text.
    changes = [e for e in wire.of(b, SessionsChanged) if e.prekeys is not None]  # type: ignore[attr-defined]
    assert changes


def test_letters_are_one_size_whatever_they_carry() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    book = SessionBook(alice, PrekeyStore(alice.key, T0))
    sizes = {
        len(s)
        for chunk in (b"", b"x" * CHUNK_BYTES)
        for handshake in (False, True)
        for s in book.seal_text(
            bob.public, [encode_letter(bytes(16), 0, 1, 0, chunk)], None, T0, handshake=handshake
        )
    }
    assert sizes == {SEALED_BYTES}
    assert ENVELOPE_BYTES == 116 + LETTER_BYTES + 16 + 64
    assert MAX_SKIP >= 1000 and HANDSHAKE_INTERVAL_S > 0


def test_skipped_keys_are_bounded_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "SKIPPED_KEYS_MAX", 150)
    receiver_id = Identity.generate()
    receiver = SessionBook(receiver_id, PrekeyStore(receiver_id.key, T0))
    for _ in range(3):  # three peers, each skipping 99 keys
        author = Identity.generate()
        book = SessionBook(author, PrekeyStore(author.key, T0))
        letters = [
            book.seal_text(receiver_id.public, [bytes(LETTER_BYTES)], None, T0)[0]
            for _ in range(100)
        ]
        opened = receiver.open(letters[-1], T0, NET)
        receiver.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    total = sum(len(s.state.skipped) for v in receiver.peers.values() for s in v)
    # Past the bound, keys go down to a slack below it (1/64 of it: 2 here).
    assert total == 150 - 150 // sessions_module.SKIPPED_KEYS_SLACK_DIVISOR


def test_peers_with_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "SESSION_PEERS_MAX", 5)
    me = Identity.generate()
    book = SessionBook(me, PrekeyStore(me.key, T0))
    peers = [Identity.generate().public for _ in range(8)]
    for i, peer in enumerate(peers):
        book.seal_text(peer, [bytes(LETTER_BYTES)], None, T0 + i)
    assert list(book.peers) == [p.key for p in peers[3:]]
    changes = book.take_changes()
    assert all(changes[p.key] is None for p in peers[:3])


def test_an_author_key_with_its_sign_bit_flipped_does_not_open() -> None:
    """A key and its negation share an X25519 key; the letter must name the exact one."""
    alice, bob = Identity.generate(), Identity.generate()
    book = SessionBook(alice, PrekeyStore(alice.key, T0))
    receiver = SessionBook(bob, PrekeyStore(bob.key, T0))
    (sealed,) = book.seal_text(bob.public, [bytes(LETTER_BYTES)], None, T0)
    envelope = bytearray(SealedBox(bob.box_key).decrypt(sealed))
    envelope[33] ^= 0x80  # the sign bit of the author key
    alias = PublicIdentity(bytes(envelope[2:34]))
    assert bytes(alias.box_key) == bytes(alice.public.box_key)  # the alias is real
    with pytest.raises(SessionError):
        receiver.open(reseal(bob, bytes(envelope)), T0, NET)
    assert receiver.open(sealed, T0, NET).author == alice.public


def test_damaged_state_is_skipped_and_counted_at_restore() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    a.send_text(b.identity.public, "hi", T0)
    wire.pump(T0)
    blobs, prekeys = session_blobs(wire, b)
    fresh = Node(b.identity, T0)
    damaged = {k: v[:-1] for k, v in blobs.items()}
    assert fresh.restore_sessions(prekeys[:-1], damaged.items(), T0) == 2
    assert not fresh._sessions.peers


def test_a_flood_of_fresh_keys_does_not_evict_the_peers_we_write_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions_module, "SESSION_PEERS_MAX", 4)
    me = Identity.generate()
    book = SessionBook(me, PrekeyStore(me.key, T0))
    friend = Identity.generate().public
    book.seal_text(friend, [bytes(LETTER_BYTES)], None, T0)
    for i in range(10):  # strangers, each with one text to us
        stranger = Identity.generate()
        theirs = SessionBook(stranger, PrekeyStore(stranger.key, T0))
        (sealed,) = theirs.seal_text(me.public, [bytes(LETTER_BYTES)], None, T0 + i)
        opened = book.open(sealed, T0 + i, NET)
        book.commit(opened.author, [opened.token], T0 + i, sent_ms=0, handshake=False)
    assert friend.key in book.peers and len(book.peers) == 4


def test_a_flood_of_fresh_keys_does_not_evict_a_contact_who_only_writes_to_us(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "7.1", "Sessions per peer": a contact's session is the last to
    go, even one we never wrote in (it wrote to us first and we have not answered); a
    stranger we wrote to goes before it once only strangers and contacts are left."""
    monkeypatch.setattr(sessions_module, "SESSION_PEERS_MAX", 4)
    me = Identity.generate()
    book = SessionBook(me, PrekeyStore(me.key, T0))
    contact = Identity.generate()
    book.contacts = frozenset({contact.key})
    theirs = SessionBook(contact, PrekeyStore(contact.key, T0))
    (sealed,) = theirs.seal_text(me.public, [bytes(LETTER_BYTES)], None, T0)
    opened = book.open(sealed, T0, NET)
    book.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    written = Identity.generate().public  # a stranger we wrote to
    book.seal_text(written, [bytes(LETTER_BYTES)], None, T0)
    for i in range(10):  # strangers, each with one text to us
        stranger = Identity.generate()
        strangers = SessionBook(stranger, PrekeyStore(stranger.key, T0))
        (sealed,) = strangers.seal_text(me.public, [bytes(LETTER_BYTES)], None, T0 + 1 + i)
        opened = book.open(sealed, T0 + 1 + i, NET)
        book.commit(opened.author, [opened.token], T0 + 1 + i, sent_ms=0, handshake=False)
    assert contact.key in book.peers and written.key in book.peers and len(book.peers) == 4
    book.contacts = frozenset()  # no longer a contact: it goes first now
    book.seal_text(Identity.generate().public, [bytes(LETTER_BYTES)], None, T0 + 20)
    assert contact.key not in book.peers and written.key in book.peers


_GENUINE: dict[str, object] = {}


def _genuine() -> tuple[SessionBook, Identity, bytes, bytes]:
    """A receiver with a session, and a genuine init envelope and a later one in it."""
    if not _GENUINE:
        alice, bob = Identity.from_seed(b"\x31" * 32), Identity.from_seed(b"\x32" * 32)
        sender = SessionBook(alice, PrekeyStore(alice.key, T0))
        receiver = SessionBook(bob, PrekeyStore(bob.key, T0))
        (first,) = sender.seal_text(bob.public, [encode_letter(bytes(16), 0, 1, 0, b"1")], None, T0)
        opened = receiver.open(first, T0, NET)
        receiver.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
        (reply,) = receiver.seal_text(alice.public, [bytes(LETTER_BYTES)], None, T0)
        opened = sender.open(reply, T0, NET)
        sender.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
        (later,) = sender.seal_text(bob.public, [bytes(LETTER_BYTES)], None, T0)
        _GENUINE.update(
            receiver=receiver,
            bob=bob,
            init=SealedBox(bob.box_key).decrypt(first),
            later=SealedBox(bob.box_key).decrypt(later),
        )
    return (
        _GENUINE["receiver"],  # type: ignore[return-value]
        _GENUINE["bob"],
        _GENUINE["init"],
        _GENUINE["later"],
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_envelopes_only_ever_raise_session_error_and_change_nothing(
    data: st.DataObject,
) -> None:
    receiver, bob, init, later = _genuine()
    envelope = bytearray(data.draw(st.sampled_from([init, later])))
    for _ in range(data.draw(st.integers(1, 6))):
        at_ = data.draw(st.integers(0, ENVELOPE_BYTES - 1))
        envelope[at_] = data.draw(st.integers(0, 255))
    if bytes(envelope) in (init, later):
        return
    before = {k: serialize_sessions(v) for k, v in receiver.peers.items()}
    prekeys_before = receiver.prekeys.serialize()
    with pytest.raises(SessionError):
        receiver.open(reseal(bob, bytes(envelope)), T0, NET)
    assert {k: serialize_sessions(v) for k, v in receiver.peers.items()} == before
    assert receiver.prekeys.serialize() == prekeys_before


def test_one_time_prekeys_are_drawn_at_random_and_only_from_a_fresh_bundle() -> None:
    """Senders of one record rarely pick the same one-time prekey; an old record's are not
    used at all (its owner may have used them since: a reset), only its signed prekey."""
    wire = Wire()
    b = wire.add(2)
    bundle = b._prekeys.public_bundle()
    picked = set()
    for seed in range(3, 23):
        a = wire.add(seed)
        a._directory.known_bundles[b.address] = bundle
        a.send_text(b.identity.public, "hi", T0)
        session = a._sessions.active(b.identity.key)
        assert session is not None and session.pending_init is not None
        picked.add(session.pending_init[1])
    assert len(picked) > 1
    # A bundle learned from a record long ago: the signed prekey alone.
    late = wire.add(40)
    late._directory.known_bundles[b.address] = bundle
    late._directory.known_bundle_times[b.address] = (0, 2**62, T0)
    late.send_text(b.identity.public, "hi", T0 + ONE_TIME_PREKEYS_FRESH_S + 1)
    session = late._sessions.active(b.identity.key)
    assert session is not None
    assert session.pending_init == (bundle.signed_prekey_id, 0)


# ---------------------------------------------------------------- mutation round 3 (B)


def _book(identity: Identity) -> SessionBook:
    return SessionBook(identity, PrekeyStore(identity.key, T0))


def _envelope(recipient: Identity, sealed: bytes) -> bytes:
    """The envelope inside a sealed letter, as its recipient reads it."""
    return bytes(SealedBox(recipient.box_key).decrypt(sealed))


def test_the_node_wide_skipped_key_bound_takes_from_the_session_holding_the_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "Letters and sealing": past SKIPPED_KEYS_MAX the session holding
    the most skipped keys gives up its oldest, so one peer that skips many cannot take
    the late letters of another (here the thin session's peer key sorts last)."""
    monkeypatch.setattr(sessions_module, "SKIPPED_KEYS_MAX", 100)
    receiver_id = Identity.generate()
    receiver = _book(receiver_id)
    fat_id, thin_id = sorted((Identity.generate(), Identity.generate()), key=lambda i: i.key)
    late: dict[bytes, list[bytes]] = {}
    for author, count in ((fat_id, 101), (thin_id, 11)):
        book = _book(author)
        letters = [
            book.seal_text(receiver_id.public, [bytes(LETTER_BYTES)], None, T0)[0]
            for _ in range(count)
        ]
        opened = receiver.open(letters[-1], T0, NET)
        receiver.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
        late[author.key] = letters[:-1]
    # 100 + 10 skipped: the fat session gave up its 10 oldest and the slack below the
    # bound (1/64 of it: 1), the thin one nothing.
    given_up = 10 + 100 // sessions_module.SKIPPED_KEYS_SLACK_DIVISOR
    for letter in late[thin_id.key]:
        assert receiver.open(letter, T0, NET).author.key == thin_id.key
    for letter in late[fat_id.key][:given_up]:
        with pytest.raises(SessionError):
            receiver.open(letter, T0, NET)
    assert receiver.open(late[fat_id.key][given_up], T0, NET).author.key == fat_id.key
    # The running count the bound reads is every session's, recounted.
    held = sum(len(s.state.skipped) for v in receiver.peers.values() for s in v)
    assert receiver._skipped_total == held == 110 - given_up


def test_the_skipped_key_count_follows_commits_expiry_eviction_and_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node-wide count of skipped keys is kept as sessions change, not summed at
    every commit (O(sessions) a text received): after skipping, a peer evicted, a restore
    and an expiry it is still every session's, recounted."""
    monkeypatch.setattr(sessions_module, "SESSION_PEERS_MAX", 2)
    receiver_id = Identity.generate()
    receiver = _book(receiver_id)

    def recount() -> int:
        return sum(len(s.state.skipped) for v in receiver.peers.values() for s in v)

    authors = [Identity.generate() for _ in range(3)]
    for i, author in enumerate(authors):
        book = _book(author)
        letters = [
            book.seal_text(receiver_id.public, [bytes(LETTER_BYTES)], None, T0)[0]
            for _ in range(5 + i)
        ]
        opened = receiver.open(letters[-1], T0 + i, NET)
        receiver.commit(opened.author, [opened.token], T0 + i, sent_ms=0, handshake=False)
        assert receiver._skipped_total == recount()
    assert len(receiver.peers) == 2 and receiver._skipped_total == 5 + 6  # the first went
    blob = sessions_module.serialize_sessions(receiver.peers[authors[1].key])
    receiver.restore(authors[1].key, blob)
    assert receiver._skipped_total == recount() == 11
    receiver.expire(T0 + 400 * 86400)  # long past every skipped key's life
    assert receiver._skipped_total == recount() == 0


def test_a_commit_skips_a_header_that_no_longer_applies_and_commits_the_rest() -> None:
    """``SessionBook.commit``: a token that no longer applies is skipped, and the other
    tokens of the same call are still committed (their letters are then replays, which
    no longer open). Two ways a token stops applying: its message key was used by an
    earlier commit, or its session went and the one-time prekey that made it is spent."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    bob_prekeys = PrekeyStore(bob_id.key, T0)
    alice, bob = _book(alice_id), SessionBook(bob_id, bob_prekeys)
    letter = [bytes(LETTER_BYTES)]

    def commit(tokens: list[sessions_module.CommitToken], now: float) -> None:
        bob.commit(alice_id.public, tokens, now, sent_ms=0, handshake=False)

    first = alice.seal_text(bob_id.public, letter, bob_prekeys.public_bundle(), T0)[0]
    opened_first = bob.open(first, T0, NET)
    assert opened_first.token[3] != 0  # it used a one-time prekey
    commit([opened_first.token], T0)
    second = alice.seal_text(bob_id.public, letter, None, T0)[0]
    opened_second = bob.open(second, T0, NET)
    commit([opened_first.token, opened_second.token], T0)  # the first key is used
    with pytest.raises(SessionError):
        bob.open(second, T0, NET)

    # Alice starts SESSIONS_PER_PEER new sessions: Bob forgets the first one.
    for i in range(1, SESSIONS_PER_PEER + 1):
        start = alice.seal_text(bob_id.public, letter, None, T0 + i, handshake=True)[0]
        commit([bob.open(start, T0 + i, NET).token], T0 + i)
    last = alice.seal_text(bob_id.public, letter, None, T0 + 10)[0]
    opened_last = bob.open(last, T0 + 10, NET)
    commit([opened_first.token, opened_last.token], T0 + 10)  # no session, prekey spent
    with pytest.raises(SessionError):
        bob.open(last, T0 + 10, NET)


def test_a_restored_session_keeps_whether_its_letters_repeat_the_init_fields() -> None:
    """A session persisted and restored (``Session.serialize`` flags bit 0) still sends
    the init fields while the peer has not answered in it, and no longer once it has: a
    confirmed session's letters carry no INIT flag, prekey ids or signature."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice, bob = _book(alice_id), _book(bob_id)
    hello = alice.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0)[0]

    def restored(book: SessionBook, identity: Identity) -> SessionBook:
        blob = book.take_changes()[bob_id.key]
        assert blob is not None
        again = _book(identity)
        again.restore(bob_id.key, blob)
        return again

    pending = restored(alice, alice_id).seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0)
    envelope = _envelope(bob_id, pending[0])
    assert envelope[1] & sessions_module.FLAG_INIT and any(envelope[-64:])

    opened = bob.open(hello, T0, NET)
    bob.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    reply = bob.seal_text(alice_id.public, [bytes(LETTER_BYTES)], None, T0 + 1)[0]
    answer = alice.open(reply, T0 + 1, NET)
    alice.commit(answer.author, [answer.token], T0 + 1, sent_ms=0, handshake=False)
    confirmed = restored(alice, alice_id)
    sealed = confirmed.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0 + 2)[0]
    envelope = _envelope(bob_id, sealed)
    assert envelope[1] == 0
    assert envelope[66:74] == bytes(8) and envelope[-64:] == bytes(64)
    assert bob.open(sealed, T0 + 2, NET).author.key == alice_id.key


def test_one_commit_skipping_more_than_twice_the_bound_keeps_the_newest_keys_up_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound on skipped keys gives up exactly what is over it: a single text that
    skips 30 keys past a bound of 10 leaves the 10 newest, so the latest late letters
    still open and the older ones do not."""
    monkeypatch.setattr(sessions_module, "SKIPPED_KEYS_MAX", 10)
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice, bob = _book(alice_id), _book(bob_id)
    letters = [
        alice.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0)[0] for _ in range(31)
    ]
    opened = bob.open(letters[-1], T0, NET)
    bob.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    for letter in letters[:20]:
        with pytest.raises(SessionError):
            bob.open(letter, T0, NET)
    for letter in letters[20:30]:
        assert bob.open(letter, T0, NET).author.key == alice_id.key


def test_a_letter_whose_message_key_is_spent_opens_in_no_session_of_its_author() -> None:
    """docs/PROTOCOL.md, "Session reset": a letter naming a valid author that opens in
    no session (here its text was committed: its key is spent) is ``no_session``, and
    the refusal names the author, whom the node may then send a handshake."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice, bob = _book(alice_id), _book(bob_id)
    (sealed,) = alice.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0)
    opened = bob.open(sealed, T0, NET)
    bob.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    with pytest.raises(SessionError) as refused:
        bob.open(sealed, T0, NET)
    assert refused.value.reason == "no_session"
    assert refused.value.lost_with is not None and refused.value.lost_with.key == alice_id.key


def test_each_malformed_envelope_is_a_bad_envelope_naming_nobody() -> None:
    """docs/PROTOCOL.md, "Letters and sealing", refusals: the wrong size, an unknown
    version or flag, our own or an invalid author key, prekey ids without INIT are each
    ``bad_envelope`` (counted under that reason), and name no author to reset with."""
    receiver, bob, _, later = _genuine()
    malformed = (
        later[:-1],
        later + b"\x00",
        bytes(ENVELOPE_BYTES - 100),
        bytes([3]) + later[1:],  # unknown version
        later[:1] + b"\x80" + later[2:],  # unknown flag
        later[:2] + bob.key + later[34:],  # from ourselves
        later[:2] + bytes(32) + later[34:],  # no curve point
        later[:66] + b"\xff" * 8 + later[74:],  # prekey ids without INIT
    )
    for envelope in malformed:
        with pytest.raises(SessionError) as refused:
            receiver.open(reseal(bob, envelope), T0, NET)
        assert refused.value.reason == "bad_envelope" and refused.value.lost_with is None


def test_an_envelope_naming_any_part_index_up_to_65535_is_refused_only_as_no_session() -> None:
    """The part index is a u16 (the AEAD nonce): one from 32768 up, which the AD covers,
    fails decryption like any other index but the sealed one; nothing else is raised."""
    receiver, bob, _, later = _genuine()
    for part in (1, 0x7FFF, 0x8000, 0xFFFF):
        envelope = later[:114] + struct.pack(">H", part) + later[116:]
        with pytest.raises(SessionError) as refused:
            receiver.open(reseal(bob, envelope), T0, NET)
        assert refused.value.reason == "no_session"
    assert receiver.open(reseal(bob, later), T0, NET).author.key != bob.key


def test_a_letter_in_a_session_we_do_not_have_is_no_session_naming_its_author() -> None:
    """docs/PROTOCOL.md, "Session reset": an unknown session id without INIT (we lost
    the session, or never had it) is ``no_session``, naming the envelope's author."""
    receiver, bob, _, later = _genuine()
    envelope = later[:34] + bytes(range(32)) + later[66:]
    with pytest.raises(SessionError) as refused:
        receiver.open(reseal(bob, envelope), T0, NET)
    assert refused.value.reason == "no_session"
    assert refused.value.lost_with is not None and refused.value.lost_with.key == later[2:34]


def test_a_first_letter_naming_a_spent_one_time_prekey_is_no_session_naming_its_author() -> None:
    """docs/PROTOCOL.md, "Session reset": an INIT letter whose one-time prekey is spent
    (its session was committed, then forgotten: evicted, or lost with a crash) opens in
    no session, and the refusal names its author, so a handshake can start a new one."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    bob_prekeys = PrekeyStore(bob_id.key, T0)
    bundle = bob_prekeys.public_bundle()
    (sealed,) = _book(alice_id).seal_text(bob_id.public, [bytes(LETTER_BYTES)], bundle, T0)
    bob = SessionBook(bob_id, bob_prekeys)
    opened = bob.open(sealed, T0, NET)
    assert opened.token[3] != 0  # it used a one-time prekey
    bob.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
    with pytest.raises(SessionError) as refused:
        SessionBook(bob_id, bob_prekeys).open(sealed, T0, NET)  # the same prekeys, no sessions
    assert refused.value.reason == "no_session"
    assert refused.value.lost_with is not None and refused.value.lost_with.key == alice_id.key


def test_a_signed_first_letter_skipping_too_many_keys_is_no_session_never_raised() -> None:
    """A hostile author may sign an INIT letter whose header asks the new session to skip
    more than MAX_SKIP keys: it is refused as ``no_session`` (naming that author) before
    any key is derived, and nothing but SessionError is raised."""
    alice = Identity.from_seed(b"\x31" * 32)  # the author of _genuine()'s letters
    _, bob, init, _ = _genuine()
    body = init[:110] + struct.pack(">I", MAX_SKIP + 1) + init[114:-64]
    envelope = body + sign_init(alice, bob.key, body)
    with pytest.raises(SessionError) as refused:
        _book(bob).open(reseal(bob, envelope), T0, NET)  # no session yet: a new one
    assert refused.value.reason == "no_session"
    assert refused.value.lost_with is not None and refused.value.lost_with.key == alice.key


def test_an_opened_letter_says_whether_it_is_a_handshake() -> None:
    """A handshake letter (docs/PROTOCOL.md, "Session reset") is opened as one, so the
    node never shows it and treats its session as a reset; any other letter is not."""
    alice_id, bob_id = Identity.generate(), Identity.generate()
    alice, bob = _book(alice_id), _book(bob_id)
    (plain,) = alice.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0)
    (handshake,) = alice.seal_text(bob_id.public, [bytes(LETTER_BYTES)], None, T0, handshake=True)
    assert bob.open(plain, T0, NET).handshake is False
    assert bob.open(handshake, T0, NET).handshake is True


# ---------------------------------------------------------------- skip budgets


def _first_letter_skipping(author: Identity, recipient: Identity, n: int) -> bytes:
    """A first letter (INIT, signed by ``author``, as anyone can write with a fresh key)
    whose header names N = ``n``: opening it derives n + 1 keys, then its AEAD fails (it
    covers the header it was sealed with)."""
    (sealed,) = _book(author).seal_text(recipient.public, [bytes(LETTER_BYTES)], None, T0)
    init = _envelope(recipient, sealed)
    body = init[:110] + struct.pack(">I", n) + init[114:-64]
    return reseal(recipient, body + sign_init(author, recipient.key, body))


def _counting_derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every chain-key derivation (KDF_CK) from now on."""
    count = [0]
    kdf_ck = ratchet_module.kdf_ck

    def counting(ck: bytes) -> tuple[bytes, bytes]:
        count[0] += 1
        return kdf_ck(ck)

    monkeypatch.setattr(ratchet_module, "kdf_ck", counting)
    return count


def _refusal(book: SessionBook, sealed: bytes, now: float, origin: str) -> str:
    """The reason ``book`` refuses ``sealed``; a ``skip_rate`` names nobody (no session
    is lost: no handshake answers it)."""
    with pytest.raises(SessionError) as refused:
        book.open(sealed, now, origin)
    if refused.value.reason == "skip_rate":
        assert refused.value.lost_with is None
    return refused.value.reason


def test_the_keys_letters_skip_are_charged_per_network_of_origin_before_any_derivation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "Letters and sealing" (red5 finding 1): fresh keys are free, so
    first letters from fresh keys, each asking to skip MAX_SKIP keys, are charged to the
    network of origin of the hop that handed them over: past its burst, ``skip_rate``
    before any key is derived, and its rate admits more as time passes."""
    bob = Identity.generate()
    book = _book(bob)
    letters = [_first_letter_skipping(Identity.generate(), bob, MAX_SKIP) for _ in range(6)]
    derived = _counting_derivations(monkeypatch)
    admitted = SKIP_KEYS_PER_NETWORK_BURST // MAX_SKIP
    reasons = [_refusal(book, sealed, T0, NET) for sealed in letters[: admitted + 1]]
    assert reasons == ["no_session"] * admitted + ["skip_rate"]
    assert derived[0] == admitted * (MAX_SKIP + 1)  # nothing for the refused one
    later = T0 + MAX_SKIP / SKIP_KEYS_PER_NETWORK_PER_S
    assert _refusal(book, letters[admitted + 1], later, NET) == "no_session"


def test_the_networks_of_one_wide_network_share_a_skip_budget() -> None:
    """/48s are not scarce (a /32 holds 65,536): the networks of one wide network share a
    second budget, and other wide networks keep theirs."""
    bob = Identity.generate()
    book = _book(bob)
    admitted = SKIP_KEYS_PER_WIDE_NETWORK_BURST // MAX_SKIP
    letters = [
        _first_letter_skipping(Identity.generate(), bob, MAX_SKIP) for _ in range(admitted + 2)
    ]
    reasons = [
        _refusal(book, sealed, T0, f"198.18.{i}.0/24") for i, sealed in enumerate(letters[:-1])
    ]
    assert reasons == ["no_session"] * admitted + ["skip_rate"]
    assert _refusal(book, letters[-1], T0, "192.0.2.0/24") == "no_session"


def test_one_author_key_spends_its_own_skip_budget_from_any_network() -> None:
    """An author key has a budget of its own, whatever hops its letters come through:
    one header's worst (the rest of our chain and a new chain, 2 x MAX_SKIP) at once."""
    alice, bob = Identity.generate(), Identity.generate()
    book = _book(bob)
    admitted = SKIP_KEYS_PER_KEY_BURST // MAX_SKIP
    letters = [_first_letter_skipping(alice, bob, MAX_SKIP) for _ in range(admitted + 1)]
    reasons = [_refusal(book, sealed, T0, f"192.0.{i}.0/24") for i, sealed in enumerate(letters)]
    assert reasons == ["no_session"] * admitted + ["skip_rate"]
    assert _refusal(book, _first_letter_skipping(Identity.generate(), bob, 1), T0, NET) == (
        "no_session"
    )


def test_honest_skipping_opens_while_another_network_spends_its_skip_budget() -> None:
    """Lost and overtaken texts still open: while a flood from one network is refused
    ``skip_rate``, a peer elsewhere whose first four texts are late has its fifth open
    (four keys skipped and charged), then the four late ones (stored keys, no charge)."""
    alice, bob = Identity.generate(), Identity.generate()
    book = _book(bob)
    flood = "203.0.113.0/24"
    reasons = [
        _refusal(book, _first_letter_skipping(Identity.generate(), bob, MAX_SKIP), T0, flood)
        for _ in range(SKIP_KEYS_PER_NETWORK_BURST // MAX_SKIP + 1)
    ]
    assert reasons[-1] == "skip_rate"
    author = _book(alice)
    texts = [
        author.seal_text(bob.public, [encode_letter(bytes(16), 0, 1, 0, b"%d" % i)], None, T0)[0]
        for i in range(5)
    ]
    for sealed in texts[4:] + texts[:4]:
        opened = book.open(sealed, T0, NET)
        book.commit(opened.author, [opened.token], T0, sent_ms=0, handshake=False)
        assert opened.author.key == alice.key
