"""Tests for the datagram codec: round trips, and strict rejection of anything else.

Covers boxed frames and hellos, wrong version, oversized and truncated datagrams,
every single-bit flip of a real datagram, a wrong key, replays, stale timestamps
and a datagram claiming our own key. Decoding must only ever raise ``Rejected``.
"""

from __future__ import annotations

import random

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES, COOKIE_BYTES
from comm_tui.protocol.codec import (
    BOX_CACHE_PEERS,
    MAX_CLOCK_SKEW_S,
    MAX_DATAGRAM_BYTES,
    NONCE_BYTES,
    PIN_ATTACHED,
    PROTOCOL_VERSION,
    REPLAY_MAX_NONCES,
    REPLAY_MAX_WINDOWS,
    REPLAY_TOTAL_NONCES,
    REPLAY_WINDOW_S,
    Codec,
    Rejected,
    ReplayGuard,
)

NOW = 1_800_000_000.0


def codec(seed: int) -> Codec:
    return Codec(Identity.from_seed(bytes([seed]) * 32))


@pytest.fixture
def alice() -> Codec:
    return codec(1)


@pytest.fixture
def bob() -> Codec:
    return codec(2)


def ping_frame(challenge: bytes = b"c" * CHALLENGE_BYTES) -> pb.Frame:
    return pb.Frame(ping=pb.Ping(challenge=challenge))


def reason(decoder: Codec, data: bytes, now: float = NOW) -> str:
    with pytest.raises(Rejected) as info:
        decoder.decode(data, now)
    return info.value.reason


def test_boxed_frame_round_trip(alice: Codec, bob: Codec) -> None:
    frame = pb.Frame(find_node=pb.FindNode(query_id=b"q" * 16, target=b"t" * 20))
    data = alice.encode_frame(bob.identity.key, frame, NOW)
    decoded = bob.decode(data, NOW)
    assert decoded.sender.key == alice.identity.key
    assert decoded.hello is None
    assert decoded.frame == frame


def test_boxed_frame_hides_its_content(alice: Codec, bob: Codec) -> None:
    frame = pb.Frame(find_node=pb.FindNode(query_id=b"q" * 16, target=b"SECRET-TARGET-ADDR!!"))
    data = alice.encode_frame(bob.identity.key, frame, NOW)
    assert b"SECRET-TARGET-ADDR!!" not in data


def test_hello_round_trip(alice: Codec, bob: Codec) -> None:
    challenge = bytes(range(CHALLENGE_BYTES))
    data = alice.encode_hello(challenge)
    decoded = bob.decode(data, NOW)
    assert decoded.sender.key == alice.identity.key
    assert decoded.frame is None
    assert decoded.hello is not None
    assert decoded.hello.challenge == challenge


def test_hello_with_wrong_challenge_size_is_malformed(alice: Codec, bob: Codec) -> None:
    assert reason(bob, alice.encode_hello(b"short")) == "malformed"


def test_the_pong_answering_a_hello_is_no_larger_than_the_hello(alice: Codec, bob: Codec) -> None:
    """A spoofed hello must not make us send more bytes to its victim than it cost."""
    hello = alice.encode_hello(b"c" * CHALLENGE_BYTES)
    pong = bob.encode_frame(
        alice.identity.key, pb.Frame(pong=pb.Pong(challenge=b"c" * CHALLENGE_BYTES)), NOW
    )
    assert len(pong) <= len(hello)


def test_an_unpadded_hello_is_refused(alice: Codec, bob: Codec) -> None:
    packet = pb.Packet.FromString(alice.encode_hello(b"c" * CHALLENGE_BYTES))
    packet.hello.padding = b""
    assert reason(bob, packet.SerializeToString()) == "malformed"


def test_many_frames_from_one_peer_all_accepted(alice: Codec, bob: Codec) -> None:
    for i in range(200):
        data = alice.encode_frame(bob.identity.key, ping_frame(), NOW + i * 0.01)
        assert bob.decode(data, NOW + i * 0.01).frame is not None


def test_wrong_version_is_rejected(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    packet = pb.Packet.FromString(data)
    packet.version = PROTOCOL_VERSION + 1
    assert reason(bob, packet.SerializeToString()) == "wrong_version"
    packet.version = 0
    assert reason(bob, packet.SerializeToString()) == "wrong_version"


def test_oversized_datagram_is_rejected_before_parsing(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    packet = pb.Packet.FromString(data)
    packet.hello.padding = bytes(MAX_DATAGRAM_BYTES)
    assert reason(bob, packet.SerializeToString()) == "oversized"
    assert reason(bob, bytes(MAX_DATAGRAM_BYTES + 1)) == "oversized"


def test_encoder_refuses_to_build_an_oversized_datagram(alice: Codec, bob: Codec) -> None:
    frame = pb.Frame(receipt=pb.Receipt(ids=[bytes(33)] * 40))
    with pytest.raises(ValueError, match="exceeds"):
        alice.encode_frame(bob.identity.key, frame, NOW)


def test_every_truncation_is_rejected(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    for cut in range(len(data)):
        with pytest.raises(Rejected):
            bob.decode(data[:cut], NOW)


def test_every_bit_flip_of_a_boxed_datagram_is_rejected(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    reasons: set[str] = set()
    for position in range(len(data)):
        for bit in (0, 7):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            with pytest.raises(Rejected) as info:
                bob.decode(bytes(flipped), NOW)
            reasons.add(info.value.reason)
    # The untouched original still decodes: no flip poisoned the replay window.
    assert bob.decode(data, NOW).frame is not None
    assert reasons <= {"malformed", "wrong_version", "bad_key", "bad_auth", "stale", "own_key"}


def test_every_byte_flip_of_a_hello_is_rejected_or_still_a_hello(alice: Codec, bob: Codec) -> None:
    # A hello authenticates nothing, so a flip in its padding may still parse; what
    # matters is that nothing but Rejected ever comes out.
    data = alice.encode_hello(b"c" * CHALLENGE_BYTES)
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        try:
            decoded = bob.decode(bytes(flipped), NOW)
        except Rejected:
            continue
        assert decoded.hello is not None and decoded.frame is None


def test_frame_boxed_for_someone_else_fails_authentication(alice: Codec, bob: Codec) -> None:
    carol = codec(3)
    data = alice.encode_frame(carol.identity.key, ping_frame(), NOW)
    assert reason(bob, data) == "bad_auth"


def test_sender_key_swapped_for_another_fails_authentication(alice: Codec, bob: Codec) -> None:
    carol = codec(3)
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    packet.sender_key = carol.identity.key
    assert reason(bob, packet.SerializeToString()) == "bad_auth"


def test_sender_key_that_is_not_a_curve_point_is_bad_key(alice: Codec, bob: Codec) -> None:
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    for bad in (bytes(32), b"\x01" + bytes(31)):  # the identity point has small order
        packet.sender_key = bad
        assert reason(bob, packet.SerializeToString()) == "bad_key"


def test_sender_key_of_wrong_length_is_malformed(alice: Codec, bob: Codec) -> None:
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    packet.sender_key = packet.sender_key[:31]
    assert reason(bob, packet.SerializeToString()) == "malformed"


def test_packet_without_body_is_malformed(alice: Codec, bob: Codec) -> None:
    packet = pb.Packet(version=PROTOCOL_VERSION, sender_key=alice.identity.key)
    assert reason(bob, packet.SerializeToString()) == "malformed"


def test_empty_frame_is_malformed(alice: Codec, bob: Codec) -> None:
    assert reason(bob, alice.encode_frame(bob.identity.key, pb.Frame(), NOW)) == "malformed"


def test_replay_of_the_same_datagram_is_rejected(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    bob.decode(data, NOW)
    assert reason(bob, data, NOW + 1) == "replay"
    assert reason(bob, data, NOW + 1) == "replay"


def test_replay_is_rejected_after_many_newer_datagrams(alice: Codec, bob: Codec) -> None:
    first = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    bob.decode(first, NOW)
    for i in range(1, 100):  # enough to trigger pruning of the nonce set
        bob.decode(alice.encode_frame(bob.identity.key, ping_frame(), NOW + i), NOW + i)
    assert reason(bob, first, NOW + 100) == "replay"


def test_datagram_older_than_the_replay_window_is_rejected(alice: Codec, bob: Codec) -> None:
    old = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    newer = alice.encode_frame(bob.identity.key, ping_frame(), NOW + REPLAY_WINDOW_S + 1)
    bob.decode(newer, NOW + REPLAY_WINDOW_S + 1)
    # Never seen, within the clock skew, but too far behind the newest from that peer.
    assert reason(bob, old, NOW + REPLAY_WINDOW_S + 1) == "replay"


def test_reordered_datagrams_within_the_window_are_accepted(alice: Codec, bob: Codec) -> None:
    early = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    late = alice.encode_frame(bob.identity.key, ping_frame(), NOW + 5)
    bob.decode(late, NOW + 5)
    assert bob.decode(early, NOW + 5).frame is not None


def test_a_failed_datagram_does_not_spend_its_nonce(alice: Codec, bob: Codec) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW)
    assert reason(bob, data, NOW + MAX_CLOCK_SKEW_S + 1) == "stale"
    assert bob.decode(data, NOW).frame is not None


@pytest.mark.parametrize("offset_s", [MAX_CLOCK_SKEW_S + 1, -(MAX_CLOCK_SKEW_S + 1), 1e6])
def test_stale_or_future_timestamps_are_rejected(alice: Codec, bob: Codec, offset_s: float) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW + offset_s)
    assert reason(bob, data, NOW) == "stale"


@pytest.mark.parametrize("offset_s", [MAX_CLOCK_SKEW_S - 1, -(MAX_CLOCK_SKEW_S - 1)])
def test_timestamps_within_the_skew_are_accepted(alice: Codec, bob: Codec, offset_s: float) -> None:
    data = alice.encode_frame(bob.identity.key, ping_frame(), NOW + offset_s)
    assert bob.decode(data, NOW).frame is not None


def test_datagram_claiming_our_own_key_is_rejected(alice: Codec, bob: Codec) -> None:
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    packet.sender_key = bob.identity.key
    assert reason(bob, packet.SerializeToString()) == "own_key"
    assert reason(bob, bob.encode_hello(b"c" * CHALLENGE_BYTES)) == "own_key"


def test_random_garbage_is_rejected() -> None:
    bob = codec(2)
    rng = random.Random(5)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, MAX_DATAGRAM_BYTES + 50))
        with pytest.raises(Rejected):
            bob.decode(data, NOW)


def test_sender_key_with_its_sign_bit_flipped_is_not_accepted(alice: Codec, bob: Codec) -> None:
    # An Ed25519 key and its negation share one X25519 key; a codec that only used the
    # X25519 Box accepted this datagram as coming from a key nobody holds (regression).
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    negated = bytearray(packet.sender_key)
    negated[31] ^= 0x80
    packet.sender_key = bytes(negated)
    assert reason(bob, packet.SerializeToString()) in {"bad_auth", "bad_key"}


def test_replay_memory_is_bounded_even_with_a_frozen_sender_clock(bob: Codec) -> None:
    """The sender picks the timestamps: one that never moves its clock cannot grow our set."""
    mallory = Codec(Identity.from_seed(b"\x07" * 32))
    frame = pb.Frame(ping=pb.Ping(challenge=b"p" * CHALLENGE_BYTES))

    def outcome(data: bytes) -> str | None:
        try:
            bob.decode(data, NOW)
        except Rejected as rejected:
            return rejected.reason
        return None

    reasons = [
        outcome(mallory.encode_frame(bob.identity.key, frame, NOW))
        for _ in range(REPLAY_MAX_NONCES + 500)
    ]
    window = bob.replay._windows[mallory.identity.key]
    assert len(window.seen) == len(window.order) <= REPLAY_MAX_NONCES
    # Past the cap, that frozen timestamp is refused; a later one is still fine.
    assert reasons[: REPLAY_MAX_NONCES + 1] == [None] * (REPLAY_MAX_NONCES + 1)
    assert set(reasons[REPLAY_MAX_NONCES + 1 :]) == {"replay"}
    assert outcome(mallory.encode_frame(bob.identity.key, frame, NOW + 0.01)) is None


def test_a_cookie_reply_decodes_to_a_refusal_not_an_error(bob: Codec) -> None:
    reply = Codec.encode_cookie_reply(b"c" * 16, b"e" * 16)
    with pytest.raises(Rejected, match="cookie_reply"):
        bob.decode(reply, NOW)


# ---------------------------------------------------------------- third mutation round
# Rules bench/MUTATION.md ("Third round (A)") found no test for.


def test_frames_and_hellos_carry_the_cookie_they_were_given(alice: Codec, bob: Codec) -> None:
    """The cookie echoed on a retry is what lets a first contact past the new-key budget
    (docs/PROTOCOL.md, "5.3 Cookies under load"): it must reach the wire on both kinds
    of packet."""
    cookie = bytes(range(COOKIE_BYTES))
    boxed = alice.encode_frame(bob.identity.key, ping_frame(), NOW, cookie=cookie)
    assert bob.parse(boxed).cookie == cookie
    assert bob.decode(boxed, NOW).frame == ping_frame()
    hello = alice.encode_hello(b"c" * CHALLENGE_BYTES, cookie=cookie)
    assert bob.parse(hello).cookie == cookie
    assert bob.decode(hello, NOW).hello is not None


def test_a_pinned_peers_boxes_outlast_a_flood_of_new_keys(alice: Codec, bob: Codec) -> None:
    """A table peer's boxes are never evicted by newcomers (else a flood of fresh keys
    would make it pay the new-key budget again; docs/PROTOCOL.md, "5.3 Cookies under
    load"); unpinned, it is a newcomer again."""
    carol = codec(3)
    for peer in (alice, carol):
        bob.decode(peer.encode_frame(bob.identity.key, ping_frame(), NOW), NOW)
    bob.pin(alice.identity.key)

    flood = [Identity.from_seed(i.to_bytes(32, "big")).key for i in range(BOX_CACHE_PEERS)]
    for key in flood:
        bob.box(key)
    assert bob.peer(alice.identity.key) is not None
    assert bob.peer(carol.identity.key) is None  # the cache's bound, oldest out first
    bob.unpin(alice.identity.key, NOW)
    assert bob.peer(alice.identity.key) is not None
    assert bob.peer(flood[0]) is None  # back in a full cache: its oldest gave way (the bound)
    frame = alice.encode_frame(bob.identity.key, ping_frame(), NOW + 1)
    assert bob.decode(frame, NOW + 1).sender.key == alice.identity.key
    # Unpinned, it is one of the cache: once the least recently used, the next new key
    # evicts it (the flood's boxes are cached: using them again costs no agreement).
    for key in flood[1:]:
        bob.box(key)
    bob.box(codec(4).identity.key)
    assert bob.peer(alice.identity.key) is None
    assert all(bob.peer(key) is not None for key in flood[1:])


def test_a_peer_pinned_by_the_table_and_as_an_attached_client_stays_pinned_until_both_let_go(
    alice: Codec, bob: Codec
) -> None:
    """Two holders pin boxes (docs/PROTOCOL.md, "5.3"): the routing table and a relay's
    attached clients. A client that was a table peer attaches (pinned as a client), then
    leaves the table (its client flag): its boxes stay pinned until it leaves the attach
    table too; each holder's pin and unpin count once, however often they are called."""
    bob.decode(alice.encode_frame(bob.identity.key, ping_frame(), NOW), NOW)
    key = alice.identity.key
    bob.pin(key)
    bob.pin(key, PIN_ATTACHED)
    bob.pin(key, PIN_ATTACHED)
    bob.unpin(key, NOW)  # it left the table
    bob.unpin(key, NOW)
    for i in range(BOX_CACHE_PEERS):
        bob.box(Identity.from_seed(i.to_bytes(32, "big")).key)
    assert bob.peer(key) is not None
    bob.unpin(key, NOW, PIN_ATTACHED)  # and its attachment ended
    bob.box(Identity.from_seed(b"n" * 32).key)
    assert bob.peer(key) is not None  # the most recently used of the cache
    for i in range(BOX_CACHE_PEERS):
        bob.box(Identity.from_seed(b"m" + i.to_bytes(31, "big")).key)
    assert bob.peer(key) is None


def test_pinned_replay_windows_are_outside_the_global_bound_and_rejoin_it_unpinned() -> None:
    """docs/PROTOCOL.md, "3.2": pinned peers' windows are bounded by the table, the rest
    by REPLAY_MAX_WINDOWS and a nonce total; a forgotten window leaves a floor, so a
    forgotten peer's late datagram is refused, never replayed."""
    guard = ReplayGuard()
    now_ms = int(NOW * 1000)
    a, b = b"a" * 32, b"b" * 32
    for i in range(300):
        assert guard.accept(a, b"a%d" % i, now_ms, now_ms)
    for i in range(700):
        assert guard.accept(b, b"b%d" % i, now_ms, now_ms)
    assert guard.nonces == 1000 and len(guard) == 2
    guard.pin(a)
    assert guard.nonces == 700 and len(guard) == 2
    guard.unpin(a, now_ms)
    assert guard.nonces == 1000
    guard.pin(a)
    for i in range(REPLAY_MAX_WINDOWS + 1):  # one datagram each from fresh keys
        guard.accept(i.to_bytes(32, "big"), b"x", now_ms, now_ms)
    assert len(guard) == REPLAY_MAX_WINDOWS + 1  # theirs at the bound, plus a's
    # a's window was kept: a reordered datagram is accepted, a replay is not.
    assert guard.accept(a, b"late", now_ms - 1000, now_ms)
    assert not guard.accept(a, b"a0", now_ms, now_ms)
    guard.unpin(a, now_ms)
    assert len(guard) == REPLAY_MAX_WINDOWS  # at the bound again at once: the oldest went
    for i in range(REPLAY_MAX_WINDOWS):
        guard.accept((i + 10_000).to_bytes(32, "big"), b"x", now_ms, now_ms)
    assert len(guard) == REPLAY_MAX_WINDOWS  # a's window went with the oldest
    # Forgotten, a starts above its floor: nothing it sent before is accepted again.
    assert not guard.accept(a, b"a0", now_ms, now_ms)
    assert not guard.accept(a, b"later", now_ms - 500, now_ms)
    assert guard.accept(a, b"new", now_ms + 1, now_ms)


def test_the_replay_state_holds_exactly_its_global_bound_of_nonces() -> None:
    """REPLAY_TOTAL_NONCES nonces of peers outside the table are all kept; one more
    forgets the least recently heard peer's whole window (docs/PROTOCOL.md, "3.2")."""
    guard = ReplayGuard()
    now_ms = int(NOW * 1000)
    peers = [bytes([i]) * 32 for i in range(REPLAY_TOTAL_NONCES // REPLAY_MAX_NONCES)]
    for peer in peers:
        for i in range(REPLAY_MAX_NONCES):
            assert guard.accept(peer, b"%d" % i, now_ms, now_ms)
    assert guard.nonces == REPLAY_TOTAL_NONCES and len(guard) == len(peers)
    newcomer = b"n" * 32
    assert guard.accept(newcomer, b"one more", now_ms, now_ms)
    assert len(guard) == len(peers)  # the first peer's window went, the newcomer's came
    assert guard.nonces == REPLAY_TOTAL_NONCES - REPLAY_MAX_NONCES + 1
    # The forgotten peer's nonces are refused by its floor, not accepted again.
    assert not guard.accept(peers[0], b"0", now_ms, now_ms)


def test_a_boxed_body_shorter_than_a_nonce_and_a_tag_is_malformed(alice: Codec, bob: Codec) -> None:
    """docs/PROTOCOL.md, "3.2": a boxed body is a 24-byte nonce, then the box with its
    16-byte tag; anything shorter is malformed before any key agreement."""
    packet = pb.Packet.FromString(alice.encode_frame(bob.identity.key, ping_frame(), NOW))
    stamp = int(NOW * 1000).to_bytes(8, "big")
    packet.boxed = stamp + bytes(NONCE_BYTES + 16 - 1 - 8)
    assert reason(bob, packet.SerializeToString()) == "malformed"
    packet.boxed = stamp + bytes(NONCE_BYTES + 16 - 8)  # long enough: then it fails to open
    assert reason(bob, packet.SerializeToString()) == "bad_auth"


def test_a_hello_from_a_key_that_is_no_curve_point_is_bad_key(alice: Codec, bob: Codec) -> None:
    """A hello is answered with a Pong boxed to its key, so the key is checked first
    (docs/PROTOCOL.md, "3.3 Hello"); refused as `bad_key`, the counter that says so."""
    packet = pb.Packet.FromString(alice.encode_hello(b"c" * CHALLENGE_BYTES))
    for bad in (bytes(32), b"\x01" + bytes(31)):  # the identity point has small order
        packet.sender_key = bad
        assert reason(bob, packet.SerializeToString()) == "bad_key"


def test_a_cookie_reply_of_another_shape_is_malformed(alice: Codec, bob: Codec) -> None:
    """docs/PROTOCOL.md, "5.3": a cookie reply is a 16-byte cookie and a 16-byte echo,
    with no sender key; any other shape is `malformed`, before anything is looked up."""
    good = pb.Packet.FromString(Codec.encode_cookie_reply(b"c" * 16, b"e" * 16))
    assert bob.parse(good.SerializeToString()).cookie_reply.cookie == b"c" * 16
    for field, value in (("cookie", b"c" * 15), ("cookie", b"c" * 17), ("echo", b"e" * 15)):
        packet = pb.Packet()
        packet.CopyFrom(good)
        setattr(packet.cookie_reply, field, value)
        assert reason(bob, packet.SerializeToString()) == "malformed", (field, value)
    packet = pb.Packet()
    packet.CopyFrom(good)
    packet.sender_key = alice.identity.key
    assert reason(bob, packet.SerializeToString()) == "malformed"


def test_unpinning_a_peer_never_pinned_changes_nothing() -> None:
    """The node unpins every peer that leaves its table; a peer whose replay window was
    never pinned (none yet, or forgotten) is no error, and windows stay as they were."""
    guard = ReplayGuard()
    now_ms = int(NOW * 1000)
    a, b = b"a" * 32, b"b" * 32
    assert guard.accept(a, b"a0", now_ms, now_ms)
    guard.unpin(a, now_ms)  # a window, never pinned
    guard.unpin(b, now_ms)  # no window at all
    assert guard.nonces == 1 and len(guard) == 1
    assert not guard.accept(a, b"a0", now_ms, now_ms)
    c = codec(1)
    c.unpin(b, NOW)  # the codec's face: no box pinned, no window
    assert c.replay.nonces == 0


def test_an_unpinned_window_rejoins_the_bounds_exactly() -> None:
    """A peer that leaves the table brings its window back among the others, whose
    bounds (REPLAY_MAX_WINDOWS windows, REPLAY_TOTAL_NONCES nonces) hold again at once,
    not one window or one peer's nonces over until the next datagram: the least recently
    heard are forgotten (a floor left for each), the unpinned peer's window is kept
    (docs/PROTOCOL.md, "3.2")."""
    now_ms = int(NOW * 1000)
    a = b"a" * 32
    guard = ReplayGuard()
    assert guard.accept(a, b"a0", now_ms, now_ms)
    guard.pin(a)
    strangers = [i.to_bytes(32, "big") for i in range(REPLAY_MAX_WINDOWS)]
    for key in strangers:
        assert guard.accept(key, b"x", now_ms, now_ms)
    assert len(guard) == REPLAY_MAX_WINDOWS + 1  # the strangers at their bound, and a
    guard.unpin(a, now_ms)
    assert len(guard) == REPLAY_MAX_WINDOWS and guard.nonces == REPLAY_MAX_WINDOWS
    # The least recently heard stranger went, leaving its floor; a's window stayed.
    assert not guard.accept(strangers[0], b"y", now_ms, now_ms)
    assert not guard.accept(a, b"a0", now_ms, now_ms)  # a replay, refused by the window
    assert guard.accept(a, b"late", now_ms - 1000, now_ms)  # reordered, no floor: kept

    # The nonce bound: the strangers hold exactly REPLAY_TOTAL_NONCES between them.
    guard = ReplayGuard()
    for i in range(3):
        assert guard.accept(a, b"a%d" % i, now_ms, now_ms)
    guard.pin(a)
    peers = [bytes([i]) * 32 for i in range(REPLAY_TOTAL_NONCES // REPLAY_MAX_NONCES)]
    for peer in peers:
        for i in range(REPLAY_MAX_NONCES):
            assert guard.accept(peer, b"%d" % i, now_ms, now_ms)
    assert guard.nonces == REPLAY_TOTAL_NONCES
    guard.unpin(a, now_ms)
    assert guard.nonces == REPLAY_TOTAL_NONCES - REPLAY_MAX_NONCES + 3
    assert len(guard) == len(peers)  # the first peer's window gave way to a's
    assert not guard.accept(peers[0], b"new", now_ms, now_ms)  # its floor


def test_a_peer_stamping_ahead_leaves_a_floor_at_our_clock_once_forgotten(
    alice: Codec, bob: Codec
) -> None:
    """docs/PROTOCOL.md, "3.2": a forgotten window leaves its peer's newest time as a
    floor, capped at our own clock for the keys sharing its slot, so a peer cannot push
    a floor into the future for them; and uncapped for its own key, so what it stamped
    ahead is not taken again (as its kept window would refuse it). The cap is the
    receiver's clock in milliseconds, as ``decode`` converts it: a clock read wrong there
    (in seconds, or scaled) would let a peer stamping ahead by up to MAX_CLOCK_SKEW_S
    refuse the honest datagrams of every key sharing its floor slot for as long."""
    ahead_s = MAX_CLOCK_SKEW_S - 100
    assert bob.decode(alice.encode_frame(bob.identity.key, ping_frame(), NOW + ahead_s), NOW)
    now_ms = int(NOW * 1000)
    for i in range(REPLAY_MAX_WINDOWS - 1):  # strangers fill the windows to the bound
        assert bob.replay.accept(i.to_bytes(32, "big"), b"x", now_ms, now_ms)
    carol = codec(3)
    # One more window through the codec: alice's, the least recently heard, is forgotten.
    assert bob.decode(carol.encode_frame(bob.identity.key, ping_frame(), NOW), NOW)
    assert len(bob.replay) == REPLAY_MAX_WINDOWS
    later = NOW + 1
    # A key sharing alice's floor slot starts above our clock, not above her time.
    alice_slot = bob.replay._slot(alice.identity.key)[0]
    neighbour = next(
        key
        for key in (i.to_bytes(32, "big") for i in range(10**6, 10**7))
        if bob.replay._slot(key)[0] == alice_slot
    )
    later_ms = int(later * 1000)
    assert bob.replay.accept(neighbour, b"n1", later_ms, later_ms)
    assert not bob.replay.accept(neighbour, b"n0", now_ms, later_ms)  # below the floor
    # alice herself stays where her window was: what she stamped up to her newest time
    # is refused, as her kept window would have refused it.
    assert reason(bob, alice.encode_frame(bob.identity.key, ping_frame(), later), later) == (
        "replay"
    )
    beyond = NOW + ahead_s + 1
    assert bob.decode(alice.encode_frame(bob.identity.key, ping_frame(), beyond), later).frame
