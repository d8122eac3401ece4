"""The Double Ratchet and X3DH: published vectors, an independent implementation, and the
properties letters rely on (out-of-order, duplicates, bounds, peek purity, persistence).

The independent implementation below follows Signal's specifications on the
``cryptography`` package (X25519, HKDF, HMAC), sharing no code with ``comm_tui.crypto``;
the key pairs both sides generate are made the same by seeding ``generate_dh``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from comm_tui.crypto import ratchet as ratchet_module
from comm_tui.crypto import x3dh as x3dh_module
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import (
    ONE_TIME_PREKEYS,
    ONE_TIME_REFILL_BELOW,
    SIGNED_PREKEY_RETAIN_S,
    SIGNED_PREKEY_ROTATE_S,
    PrekeyError,
    PrekeyStore,
)
from comm_tui.crypto.ratchet import (
    HEADER_BYTES,
    MAX_SKIP,
    MAX_SKIPPED_PER_SESSION,
    SKIPPED_KEY_TTL_S,
    Header,
    RatchetError,
    RatchetState,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
)
from comm_tui.crypto.records import bundle_of, record_problem, sign_record, verify_record
from comm_tui.crypto.x3dh import initiate, respond

NOW = 1_800_000_000.0


# ---------------------------------------------------------------- published vectors


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_sha256(salt, ikm, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_matches_rfc5869_test_case_3_empty_salt_and_info() -> None:
    okm = hkdf_sha256(bytes(32), bytes.fromhex("0b" * 22), b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


# ---------------------------------------------------------------- independent implementation


def _pub(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = c_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


class RefRatchet:
    """Signal's Double Ratchet, section 3, written from the specification's pseudocode."""

    INFO = b"comm-tui ratchet root v2"

    def __init__(self, keys: Iterator[bytes]) -> None:
        self.keys = keys
        self.dhs = b""
        self.dhr: bytes | None = None
        self.rk = b""
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = self.nr = self.pn = 0
        self.skipped: dict[tuple[bytes, int], bytes] = {}

    def kdf_rk(self, rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
        out = _hkdf(rk, dh_out, self.INFO, 64)
        return out[:32], out[32:]

    @staticmethod
    def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
        return _hmac(ck, b"\x02"), _hmac(ck, b"\x01")

    def init_alice(self, sk: bytes, bob_public: bytes) -> None:
        self.dhs = next(self.keys)
        self.dhr = bob_public
        self.rk, self.cks = self.kdf_rk(sk, _dh(self.dhs, bob_public))

    def init_bob(self, sk: bytes, bob_private: bytes) -> None:
        self.dhs, self.rk = bob_private, sk

    def encrypt(self) -> tuple[tuple[bytes, int, int], bytes]:
        assert self.cks is not None
        self.cks, mk = self.kdf_ck(self.cks)
        header = (_pub(self.dhs), self.pn, self.ns)
        self.ns += 1
        return header, mk

    def decrypt(self, header: tuple[bytes, int, int]) -> bytes:
        dh, pn, n = header
        if (dh, n) in self.skipped:
            return self.skipped.pop((dh, n))
        if dh != self.dhr:
            self.skip(pn)
            self.pn, self.ns, self.nr, self.dhr = self.ns, 0, 0, dh
            self.rk, self.ckr = self.kdf_rk(self.rk, _dh(self.dhs, dh))
            self.dhs = next(self.keys)
            self.rk, self.cks = self.kdf_rk(self.rk, _dh(self.dhs, dh))
        self.skip(n)
        assert self.ckr is not None
        self.ckr, mk = self.kdf_ck(self.ckr)
        self.nr += 1
        return mk

    def skip(self, until: int) -> None:
        if self.ckr is not None:
            while self.nr < until:
                self.ckr, mk = self.kdf_ck(self.ckr)
                assert self.dhr is not None
                self.skipped[(self.dhr, self.nr)] = mk
                self.nr += 1


def _key_stream(seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    while True:
        yield rng.randbytes(32)


@pytest.fixture
def seeded_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our ratchet draws its key pairs from the same stream the reference draws from."""
    streams: dict[str, Iterator[bytes]] = {}

    def generate() -> tuple[bytes, bytes]:
        private = next(streams["ours"])
        return private, _pub(private)

    streams["ours"] = _key_stream(7)
    monkeypatch.setattr(ratchet_module, "generate_dh", generate)
    monkeypatch.setattr(x3dh_module, "generate_dh", generate)


def test_ratchet_matches_an_independent_implementation(seeded_keys: None) -> None:
    """A conversation with both directions, skips and out-of-order letters: every header
    and message key equals the reference's."""
    sk = bytes(range(32))
    bob_spk = random.Random(3).randbytes(32)
    ours_a = RatchetState.initiator(sk, _pub(bob_spk))
    ours_b = RatchetState.responder(sk, (bob_spk, _pub(bob_spk)))
    # The reference draws its keys in the same order from a stream with the same seed.
    ref_keys = _key_stream(7)
    ref_a, ref_b = RefRatchet(ref_keys), RefRatchet(ref_keys)
    ref_a.init_alice(sk, _pub(bob_spk))
    ref_b.init_bob(sk, bob_spk)
    script = [("a", 3), ("b", 2), ("a", 1), ("b", 4), ("a", 5), ("b", 1)]
    for who, count in script:
        ours_send, ours_recv = (ours_a, ours_b) if who == "a" else (ours_b, ours_a)
        ref_send, ref_recv = (ref_a, ref_b) if who == "a" else (ref_b, ref_a)
        sent = []
        for _ in range(count):
            header, mk = ours_send.encrypt_step()
            ref_header, ref_mk = ref_send.encrypt()
            assert (header.dh, header.pn, header.n) == ref_header
            assert mk == ref_mk
            sent.append((header, mk))
        for header, mk in reversed(sent):  # received in reverse: skipped keys at work
            assert ours_recv.commit(header, NOW) == mk
            assert ref_recv.decrypt((header.dh, header.pn, header.n)) == mk


def test_x3dh_matches_an_independent_computation(seeded_keys: None) -> None:
    alice, bob = Identity.from_seed(b"\x0a" * 32), Identity.from_seed(b"\x0b" * 32)
    prekeys = PrekeyStore(bob.key, NOW)
    bundle = prekeys.public_bundle()
    start = initiate(alice, bob.public, bundle)
    ek = next(_key_stream(7))
    assert start.ephemeral_public == _pub(ek)
    opk_id = start.one_time_prekey_id  # drawn at random among the bundle's
    opk_pub = dict(bundle.one_time_prekeys)[opk_id]
    ik_a, ik_b_pub = bytes(alice.box_key), bytes(bob.public.box_key)
    expected = _hkdf(
        bytes(32),
        b"\xff" * 32
        + _dh(ik_a, bundle.signed_prekey)
        + _dh(ek, ik_b_pub)
        + _dh(ek, bundle.signed_prekey)
        + _dh(ek, opk_pub),
        b"comm-tui x3dh v2",
        32,
    )
    assert start.sk == expected
    assert (start.signed_prekey_id, start.one_time_prekey_id) == (bundle.signed_prekey_id, opk_id)
    sk, pair = respond(bob, prekeys, alice.public, start.ephemeral_public, *_ids(start))
    assert sk == expected and pair[1] == bundle.signed_prekey


def _ids(start: x3dh_module.Initiation) -> tuple[int, int]:
    return start.signed_prekey_id, start.one_time_prekey_id


def test_x3dh_fallback_uses_the_identity_key_and_no_one_time_prekey() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    start = initiate(alice, bob.public, None)
    assert (start.signed_prekey_id, start.one_time_prekey_id) == (0, 0)
    assert start.their_ratchet_key == bytes(bob.public.box_key)
    sk, _ = respond(bob, PrekeyStore(bob.key, NOW), alice.public, start.ephemeral_public, 0, 0)
    assert sk == start.sk


def test_x3dh_refuses_unknown_prekey_ids() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    prekeys = PrekeyStore(bob.key, NOW)
    start = initiate(alice, bob.public, prekeys.public_bundle())
    prekeys.consume_one_time(start.one_time_prekey_id)
    with pytest.raises(x3dh_module.X3DHError):
        respond(bob, prekeys, alice.public, start.ephemeral_public, *_ids(start))
    with pytest.raises(x3dh_module.X3DHError):
        respond(bob, prekeys, alice.public, start.ephemeral_public, 999_999, 0)


# ---------------------------------------------------------------- properties


def pair() -> tuple[RatchetState, RatchetState]:
    sk = bytes(32)
    private, public = ratchet_module.generate_dh()
    return RatchetState.initiator(sk, public), RatchetState.responder(sk, (private, public))


def test_a_thousand_letters_in_random_order_all_open_and_duplicates_change_nothing() -> None:
    alice, bob = pair()
    sent = [alice.encrypt_step() for _ in range(1000)]
    order = list(range(1000))
    random.Random(1).shuffle(order)
    for i in order:
        header, mk = sent[i]
        assert bob.peek(header, NOW) == mk
        assert bob.commit(header, NOW) == mk
        # A duplicate of a committed letter no longer opens, and changes nothing.
        before = bob.serialize()
        with pytest.raises(RatchetError):
            bob.commit(header, NOW)
        assert bob.serialize() == before
    assert not bob.skipped
    # The conversation goes on both ways.
    header, mk = bob.encrypt_step()
    assert alice.commit(header, NOW) == mk


def test_peek_is_pure_and_commits_apply_in_any_order() -> None:
    alice, bob = pair()
    h0, k0 = alice.encrypt_step()
    h1, k1 = alice.encrypt_step()
    before = bob.serialize()
    assert bob.peek(h1, NOW) == k1 and bob.peek(h0, NOW) == k0
    assert bob.serialize() == before
    assert bob.commit(h1, NOW) == k1  # the later text completes first
    assert bob.commit(h0, NOW) == k0


def _no_copy(state: object) -> object:
    raise AssertionError("a peek copies nothing")


def _counting_derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every chain-key derivation (KDF_CK) the ratchet makes from now on."""
    count = [0]
    kdf_ck = ratchet_module.kdf_ck

    def counting(ck: bytes) -> tuple[bytes, bytes]:
        count[0] += 1
        return kdf_ck(ck)

    monkeypatch.setattr(ratchet_module, "kdf_ck", counting)
    return count


def test_peek_derives_only_the_chain_the_header_names_and_copies_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """red5 finding 1: a peek ran RatchetDecrypt on a deep copy of the state (its up to
    2,000 skipped keys too), deriving the keys a commit stores as skipped. Now a peek of
    a new ratchet key derives its chain up to N alone: the rest of our chain up to PN is
    the commit's work (``skip_work`` counts both, for the budgets charged before)."""
    alice, bob = pair()
    texts = [alice.encrypt_step() for _ in range(3)]
    bob.commit(texts[0][0], NOW)  # bob's chain: 1 received, 2 still to come
    reply, _ = bob.encrypt_step()
    alice.commit(reply, NOW)
    later = [alice.encrypt_step() for _ in range(5)]  # a new ratchet key, PN = 3
    header, mk = later[4]
    assert (header.pn, header.n) == (3, 4)
    monkeypatch.setattr(copy, "deepcopy", _no_copy)
    derived = _counting_derivations(monkeypatch)
    before = bob.serialize()
    assert bob.skip_work(header) == 2 + 4  # texts 1, 2 of the old chain; 0-3 of the new
    assert derived[0] == 0  # counted from the counters alone
    assert bob.peek(header, NOW) == mk
    assert derived[0] == 4 + 1  # the new chain up to N, and the key itself
    assert bob.serialize() == before
    derived[0] = 0
    assert bob.commit(header, NOW) == mk
    assert derived[0] == 6 + 1  # what skip_work said, and the key itself
    assert bob.skip_work(texts[1][0]) == 0  # a skipped key is stored: nothing to derive
    with pytest.raises(RatchetError):
        bob.skip_work(header)  # its key is used


def test_skip_work_is_what_each_commit_derives_besides_the_message_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four chains, each half committed in a random order as it comes (its first commit
    may skip the rest of the chain before), the other half late among the next chains:
    before each commit ``skip_work`` says how many keys it derives besides the text's
    own, and none for a key stored as skipped. What a budget is charged is what the
    letter costs."""
    alice, bob = pair()
    derived = _counting_derivations(monkeypatch)
    rng = random.Random(5)

    def commit(header: Header, mk: bytes) -> None:
        stored = (header.dh, header.n) in bob.skipped
        expected = 0 if stored else bob.skip_work(header) + 1
        derived[0] = 0
        assert bob.commit(header, NOW) == mk
        assert derived[0] == expected

    late: list[tuple[Header, bytes]] = []
    for _ in range(4):
        chain = [alice.encrypt_step() for _ in range(40)]
        rng.shuffle(chain)
        for header, mk in chain[:20]:
            commit(header, mk)
        late += chain[20:]
        rng.shuffle(late)
        for _ in range(10):
            commit(*late.pop())
        reply, _ = bob.encrypt_step()
        alice.commit(reply, NOW)
    for header, mk in late:
        commit(header, mk)
    assert not bob.skipped


def test_skips_past_max_skip_are_refused_without_change() -> None:
    alice, bob = pair()
    h0, _ = alice.encrypt_step()
    bob.commit(h0, NOW)
    before = bob.serialize()
    far = Header(h0.dh, 0, 1 + MAX_SKIP + 1)
    with pytest.raises(RatchetError):
        bob.peek(far, NOW)
    with pytest.raises(RatchetError):
        bob.commit(far, NOW)
    new_chain = Header(ratchet_module.generate_dh()[1], 2**32 - 1, 0)
    with pytest.raises(RatchetError):
        bob.commit(new_chain, NOW)
    assert bob.serialize() == before
    # Exactly MAX_SKIP is still fine.
    ok = Header(h0.dh, 0, 1 + MAX_SKIP)
    bob.commit(ok, NOW)
    assert len(bob.skipped) == MAX_SKIP


def test_skipped_keys_are_bounded_per_session() -> None:
    alice, bob = pair()
    for _ in range(3):  # three chains, each skipping MAX_SKIP
        for _ in range(MAX_SKIP):
            alice.encrypt_step()
        header, _ = alice.encrypt_step()
        bob.commit(header, NOW)
        reply, _ = bob.encrypt_step()
        alice.commit(reply, NOW)
    assert len(bob.skipped) == MAX_SKIPPED_PER_SESSION


def test_past_the_per_session_bound_the_oldest_skipped_keys_go_first() -> None:
    """docs/PROTOCOL.md, "7.1": past MAX_SKIPPED_PER_SESSION the oldest skipped keys are
    forgotten, the ones whose letters are least likely still to come."""
    alice, bob = pair()
    chains = []
    for _ in range(3):  # three chains, each skipping MAX_SKIP
        chains.append([alice.encrypt_step() for _ in range(MAX_SKIP)])
        bob.commit(alice.encrypt_step()[0], NOW)
        alice.commit(bob.encrypt_step()[0], NOW)
    # The first chain's newest key went: its header now reads as a new ratchet step,
    # whose key opens nothing. The later chains' oldest keys stayed.
    header, mk = chains[0][-1]
    assert bob.peek(header, NOW) != mk
    for chain in chains[1:]:
        header, mk = chain[0]
        assert bob.peek(header, NOW) == mk


def test_skipped_keys_are_forgotten_when_no_letter_can_use_them() -> None:
    alice, bob = pair()
    h0, _ = alice.encrypt_step()
    h1, k1 = alice.encrypt_step()
    bob.commit(h1, NOW)
    assert not bob.expire(NOW + SKIPPED_KEY_TTL_S - 1)
    assert bob.peek(h0, NOW) is not None
    assert bob.expire(NOW + SKIPPED_KEY_TTL_S)
    with pytest.raises(RatchetError):
        bob.peek(h0, NOW)
    assert k1


def test_header_counters_are_unsigned_32_bit_on_the_wire() -> None:
    """docs/PROTOCOL.md, "7.1 Letters and sealing": a header is the ratchet key (32), PN
    and N (u32 each, big-endian). Read as signed, a PN of 2^31 or more would pass the
    skip bound as a negative number (a new chain that skips nothing) instead of being
    refused."""
    dh = ratchet_module.generate_dh()[1]
    wire = Header(dh, 2**32 - 1, 2**31).encode()
    assert len(wire) == HEADER_BYTES and wire[32:] == bytes.fromhex("ffffffff80000000")
    assert Header.decode(wire) == Header(dh, 2**32 - 1, 2**31)
    alice, bob = pair()
    bob.commit(alice.encrypt_step()[0], NOW)
    before = bob.serialize()
    with pytest.raises(RatchetError):
        bob.commit(Header.decode(Header(dh, 2**31, 0).encode()), NOW)
    assert bob.serialize() == before
    for size in (HEADER_BYTES - 1, HEADER_BYTES + 1):
        with pytest.raises(RatchetError):
            Header.decode(bytes(size))


def test_low_order_ratchet_key_is_refused() -> None:
    _, bob = pair()
    with pytest.raises(RatchetError):
        bob.commit(Header(bytes(32), 0, 0), NOW)


def test_state_round_trips_and_damage_is_refused() -> None:
    alice, bob = pair()
    for _ in range(3):
        alice.encrypt_step()
    header, mk = alice.encrypt_step()
    bob.commit(header, NOW)
    blob = bob.serialize()
    again = RatchetState.deserialize(blob)
    assert again.serialize() == blob and len(again.skipped) == 3
    for bad in (blob[:-1], blob + b"\x00", b"\x09" + blob[1:], b""):
        with pytest.raises(RatchetError):
            RatchetState.deserialize(bad)
    reply, rmk = again.encrypt_step()
    assert alice.commit(reply, NOW) == rmk
    assert mk


def test_aead_binds_key_part_and_associated_data() -> None:
    key = bytes(range(32))
    sealed = aead_encrypt(key, 3, b"part three", b"ad")
    assert aead_decrypt(key, 3, sealed, b"ad") == b"part three"
    for args in ((key, 4, sealed, b"ad"), (key, 3, sealed, b"AD"), (bytes(32), 3, sealed, b"ad")):
        with pytest.raises(RatchetError):
            aead_decrypt(*args)


# ---------------------------------------------------------------- prekeys


def test_prekeys_rotate_retain_refill_and_round_trip() -> None:
    store = PrekeyStore(b"k" * 32, NOW)
    first = store.public_bundle()
    assert len(first.one_time_prekeys) == ONE_TIME_PREKEYS
    old_id = first.signed_prekey_id
    version = store.bundle_version
    store.maintain(NOW + SIGNED_PREKEY_ROTATE_S - 1)
    assert store.public_bundle().signed_prekey_id == old_id
    store.maintain(NOW + SIGNED_PREKEY_ROTATE_S)
    assert store.public_bundle().signed_prekey_id != old_id
    assert store.bundle_version > version
    # The retired one still opens letters sealed to it until none can still arrive.
    rotated = NOW + SIGNED_PREKEY_ROTATE_S
    store.maintain(rotated + SIGNED_PREKEY_RETAIN_S - 1)
    assert store.signed_private(old_id) is not None
    store.maintain(rotated + SIGNED_PREKEY_RETAIN_S)
    assert store.signed_private(old_id) is None
    # One-time prekeys are used once, and the stock is refilled.
    ids = [pid for pid, _ in store.public_bundle().one_time_prekeys]
    for pid in ids[: ONE_TIME_PREKEYS - ONE_TIME_REFILL_BELOW + 1]:
        store.consume_one_time(pid)
        assert store.one_time_private(pid) is None
    assert len(store.one_time) == ONE_TIME_PREKEYS
    blob = store.serialize()
    again = PrekeyStore.deserialize(b"k" * 32, blob, rotated + SIGNED_PREKEY_RETAIN_S)
    assert again.serialize() == blob and again.public_bundle() == store.public_bundle()
    for bad in (blob[:-1], blob + b"\x00", b"\x07" + blob[1:]):
        with pytest.raises(PrekeyError):
            PrekeyStore.deserialize(b"k" * 32, bad, NOW)


def test_the_public_bundle_is_a_valid_network_record() -> None:
    """What records.py signs and relays accept: the whole stock of one-time prekeys fits."""
    owner = Identity.generate()
    store = PrekeyStore(owner.key, NOW)
    record = sign_record(owner, store.public_bundle(), int(NOW * 1000), int(NOW * 1000) + 1000)
    assert record_problem(record) is None and verify_record(record)
    assert bundle_of(record) == store.public_bundle()
