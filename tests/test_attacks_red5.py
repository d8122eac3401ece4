"""The fifth red-team review (red5): network input handling, attack by attack.

Each test replays one attack against the real core (sans-IO ``Node`` objects, datagrams
handed over by hand with the source addresses the attacker writes, a fake clock) and
asserts the property the spec promises. Every test here is marked
``xfail(strict=True)``: it fails on the code as it is (the attack works) and passes once
the finding is fixed. The findings, their cost and the fix suggested are in
``/work/notes/red5.md``.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from nacl.public import SealedBox

from comm_tui.crypto import ratchet
from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import AMPLIFICATION_FACTOR, CREDIT_PAIRS
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import SEALED_BYTES, Node, NodeConfig
from comm_tui.protocol.receipts import RECEIPT_PEERS_MAX, RECEIPT_TIMEOUT_S
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.protocol.sessions import ENVELOPE_BYTES, ENVELOPE_VERSION, SIGNATURE_BYTES
from tests.attack_helpers import expiry as _expiry
from tests.attack_helpers import frames_to as _frames_to
from tests.attack_helpers import node as _node
from tests.wire import T0, Wire


def _sent_to(node: Node, endpoint: Endpoint) -> int:
    return sum(len(data) for data, dest in node.datagrams_to_send() if dest == endpoint)


# ------------------------------------------- 1. the 3x credit is per endpoint, not per pair


def test_a_peers_own_traffic_is_no_credit_for_a_forgers_requests() -> None:
    """Spec 5.1: to an endpoint not validated for the key concerned, a node sends at most
    3x the bytes that arrived from that endpoint (RFC 9000 8.1). The credit is kept per
    endpoint, and every datagram from it counts, however authentic and whichever key
    sent it. An honest peer V that talks to a relay (here: only joining it) leaves
    credit there; the attacker writes V's endpoint as the source of a FindNode boxed
    under a fresh key (no padding: 120 bytes). The relay answers at once with a Nodes
    of 8 entries and a validation ping: 558 bytes to V, 4.65x what the attacker sent,
    paid with V's own credit (up to ``MAX_CREDIT_BYTES``, 192 KiB, per relay V talks
    to). Only what the forger itself sent from there may pay for answers to it."""
    wire = Wire()
    relay = wire.add(1)
    for seed in range(10, 22):
        wire.connect(wire.add(seed), relay)
    victim = wire.endpoint(wire.nodes[("10.10.0.1", 4000)])
    attacker = Codec(Identity.generate())
    now = T0 + 1
    spent = 0
    sent = 0
    for _ in range(3):
        now += 0.01
        find = pb.FindNode(query_id=random.randbytes(16), target=random.randbytes(20))
        data = attacker.encode_frame(relay.identity.key, pb.Frame(find_node=find), now)
        relay.receive_datagram(data, victim, now)
        spent += len(data)
        sent += _sent_to(relay, victim)
    assert sent <= AMPLIFICATION_FACTOR * spent


# ------------------------------------- 2. forged sources flush the receipt waits' memory


def _relay_holding_an_ack(now: float) -> tuple[Node, pb.Message]:
    """A relay (bandwidth cap raised so the flood is not deferred) that holds the ack
    of a message: the attacker's, for a recipient key of its own, acked by that key."""
    config = NodeConfig(relay_bandwidth_bytes_s=10**8)
    relay = _node(1, config)
    recipient = Identity.generate()
    expires = _expiry(now)
    msg = pb.Message(
        recipient=recipient.address, expires_ms=expires, sealed=random.randbytes(SEALED_BYTES)
    )
    mid = message_id(msg.recipient, expires, msg.sealed)
    storer = Codec(Identity.generate())
    source = ("198.18.0.1", 5000)
    for frame in (pb.Frame(message=msg), pb.Frame(ack=sign_ack(recipient, mid, expires))):
        relay.receive_datagram(storer.encode_frame(relay.identity.key, frame, now), source, now)
    relay.datagrams_to_send()
    assert relay.stats.acks_seen == 1
    return relay, msg


def test_forged_copies_cannot_flush_an_honest_peers_receipt_wait_and_late_receipts() -> None:
    """Spec 7.2, "Receipt wait": a peer's wait is its own RFC 6298 timeout, measured from
    its receipts, so a peer whose receipts are merely late is neither counted failing
    nor sent every item again; delays are kept for 4,096 peers, timed-out pairs for
    4,096 (at most 256 per network of origin). A node holding an ack answers every copy
    of its message with the ack and awaits that answer's receipt. The attacker stores
    one message for a key of its own and acks it (2 datagrams), then hands the relay
    4,097 copies of it from fresh keys, each at a forged source in another /24 (17 of
    them): 4,097 answers to strangers that never send a receipt, whose waits run out
    2 s later. Each timeout files a new peer (``ReceiptWaits._peer``) and a timed-out
    pair: the honest slow peer's measured wait (18 s) is forgotten (back to 2 s: its
    late receipts count as failures and its items go again, the retry storm of
    bench/RESULTS.md the wait exists for), and its late receipt no longer counts.
    About 5 MB from one host; nothing needs an answer."""
    now = T0
    relay, msg = _relay_holding_an_ack(now)
    waits = relay._receipt_waits
    slow, late = b"s" * 20, b"l" * 20
    waits.sent(slow, b"k" * 33, now, None, ("192.0.2.7", 4000))
    assert waits.received(slow, b"k" * 33, now + 6.0)  # a 6 s receipt: wait 18 s
    measured = waits.timeout(slow)
    assert measured > RECEIPT_TIMEOUT_S
    waits.sent(late, b"j" * 33, now, None, ("192.0.2.8", 4000))
    assert waits.overdue(now + RECEIPT_TIMEOUT_S) == [late]  # its receipt is late

    now += 10
    for i in range(RECEIPT_PEERS_MAX + 1):
        now += 0.001  # within the new-key budget (2,000 a second)
        forger = Codec(Identity.from_seed(i.to_bytes(32, "big")))
        source = (f"203.0.{i // 256}.{i % 256}", 6000)
        data = forger.encode_frame(relay.identity.key, pb.Frame(message=msg), now)
        relay.receive_datagram(data, source, now)
        if i % 256 == 0:
            relay.datagrams_to_send()
    relay.datagrams_to_send()
    assert relay.stats.acks_answered == RECEIPT_PEERS_MAX + 1
    relay.handle_timer(now + 3 * RECEIPT_TIMEOUT_S)

    assert waits.timeout(slow) == measured
    assert waits.received(late, b"j" * 33, now + 10)


# ------------------------------------------------ 3. the attached clients of one /32


def _attach(peer: Codec, relay: Node, at: Endpoint, now: float) -> None:
    """``peer``, a client at ``at`` (an address it owns), proves its address to the relay
    (a ping, then the pong to the relay's challenge) and attaches (spec 12.4)."""
    ping = pb.Frame(ping=pb.Ping(challenge=b"p" * 16), client=True)
    relay.receive_datagram(peer.encode_frame(relay.identity.key, ping, now), at, now)
    for frame in _frames_to(peer, relay.datagrams_to_send(), at):
        if frame.HasField("ping"):
            pong = pb.Frame(pong=pb.Pong(challenge=frame.ping.challenge), client=True)
            relay.receive_datagram(peer.encode_frame(relay.identity.key, pong, now), at, now)
    attach = pb.Frame(attach=pb.Attach(challenge=b"a" * 16, interval_s=60), client=True)
    relay.receive_datagram(peer.encode_frame(relay.identity.key, attach, now), at, now)
    relay.datagrams_to_send()


def test_the_48s_of_one_32_cannot_evict_every_honest_attached_client() -> None:
    """Spec 12.4: at most 16 attached clients per network of origin and 1,024 in all; past
    either bound the least recently refreshed of the network holding the most is
    forgotten, "so a flood from one network only evicts its own". Spec 5.2: /48s are
    not scarce (a /32 holds 65,536), so tables that many networks could fill together
    need a bound per wide network too; the validated pairs have one (1,024 per /32),
    the attached clients do not. Twelve honest clients of twelve IPv4 /24s attach to a
    relay; then 1,040 keys, each at its own /48 of one /32, prove their address and
    attach (3 datagrams each). Every network then holds one client, the tie goes to the
    oldest network, and every honest client is evicted: the relay stops pushing their
    mail (it waits for their next Attach, up to 120 s, and the flood is repeated)."""
    relay = _node(1)
    now = T0
    honest = []
    for i in range(12):
        peer = Codec(Identity.from_seed(bytes([100 + i]) * 32))
        _attach(peer, relay, (f"198.51.{i}.10", 4000), now)
        honest.append(peer.identity.address)
    assert all(relay.attached_client(address) is not None for address in honest)
    for i in range(1040):
        now += 0.002
        sybil = Codec(Identity.from_seed(b"s" + i.to_bytes(31, "big")))
        _attach(sybil, relay, (f"2001:db8:{i:x}::1", 4000), now)
    kept = [address for address in honest if relay.attached_client(address) is not None]
    assert kept == honest


# ------------------------------------------- 4. a flushed window of a peer dated ahead


def test_flushing_the_replay_state_makes_no_datagram_dated_ahead_acceptable_again() -> None:
    """Spec 3.2, step 4: "flushing our state never makes a peer's old datagrams acceptable
    again (finding 9)". The floor a forgotten window leaves is ``min(newest, now) + 1
    ms``: a datagram dated after our clock (a peer whose clock is ahead, by up to the
    600 s skew allowed) stays above it. An observer on the path copies one: a Ping from
    a peer whose clock is 300 s ahead (a stranger to the node, so its window is among
    the 4,096 others). It sends one datagram from each of 4,097 fresh keys (the window
    is forgotten, least recently heard first), then replays the copy: the node takes it
    again and answers again. Any frame replays so (an Attach, a FindNode, a Message
    whose copy answers with its ack), within the 600 s its date allows."""
    relay = _node(1)
    now = T0
    ahead = Codec(Identity.generate())
    ping = pb.Frame(ping=pb.Ping(challenge=b"c" * 16))
    captured = ahead.encode_frame(relay.identity.key, ping, now + 300)
    peer_at = ("192.0.2.50", 4000)
    relay.receive_datagram(captured, peer_at, now)
    pongs = relay.stats.sent_by_kind["pong"]
    assert pongs == 1
    relay.receive_datagram(captured, peer_at, now)  # replayed at once: refused
    assert relay.stats.rejected["replay"] == 1
    relay.datagrams_to_send()
    for i in range(4097):
        now += 0.001  # within the new-key budget (2,000 a second)
        fresh = Codec(Identity.from_seed(b"f" + i.to_bytes(31, "big")))
        data = fresh.encode_frame(relay.identity.key, pb.Frame(receipt=pb.Receipt()), now)
        relay.receive_datagram(data, (f"203.0.{i // 256}.{i % 256}", 6000), now)
    relay.datagrams_to_send()
    relay.receive_datagram(captured, peer_at, now)
    assert relay.stats.sent_by_kind["pong"] == pongs
    assert relay.stats.rejected["replay"] == 2


# ------------------------------------------ 5. junk addressed to a node makes it "fail"


def _hand_junk_for(victim: Node, relay: Node, now: float) -> None:
    """A fresh key hands ``relay`` three messages for ``victim`` that will never open."""
    attacker = Codec(Identity.generate())
    for _ in range(3):
        junk = pb.Message(
            recipient=victim.address, expires_ms=_expiry(now), sealed=random.randbytes(SEALED_BYTES)
        )
        data = attacker.encode_frame(relay.identity.key, pb.Frame(message=junk), now)
        relay.receive_datagram(data, ("198.18.5.5", 7000), now)


def test_three_junk_messages_addressed_to_a_node_do_not_make_it_bad_at_its_relay() -> None:
    """Spec 1: the protocol must make it hard to deafen anyone; spec 7.2: a receipt wait
    that runs out counts one failure against the peer, three in a row (no datagram from
    it in between) make it bad; spec 8.1: a refused item draws no receipt. Together: a
    node that refuses what it is right to refuse is counted as failing. The attacker
    (a fresh key, any source) hands a relay 3 messages addressed to the victim, whose
    sealed bytes are random (3 datagrams, 3.6 KB; the relay stores them as for anyone).
    The relay knows the victim and sends them to it first; the victim cannot open them
    (``bad_seal``) and sends nothing back; 2 s later the three waits run out together:
    3 failures, and the victim is bad in the relay's table: out of ``closest()`` (no
    Nodes answer names it, no relay attempt uses it as a hop) and replaced at once when
    the bucket's replacement cache holds a node. The relay retries the junk (2 s, 4 s,
    ... for the 7 days it lives), so each retry fails the victim again after any
    datagram of its own reset the count. Done to each of the victim's neighbours (k of
    them, 3 datagrams each), lookups stop finding it."""
    wire = Wire()
    relay = wire.add(1)
    victim = wire.add(2)
    wire.connect(victim, relay)
    for seed in range(10, 22):
        wire.connect(wire.add(seed), relay)
    wire.run(T0, T0 + 5, 0.5)
    now = T0 + 6
    entry = relay._table.get(victim.address)
    assert entry is not None and entry.failures == 0
    _hand_junk_for(victim, relay, now)
    wire.pump(now)
    assert victim.stats.rejected["bad_seal"] >= 3  # from the relay, and the others it told
    for later in (now + 1, now + RECEIPT_TIMEOUT_S + 0.1):
        wire.tick(later)
    nearest = {peer.address for peer in relay.closest_peers(victim.address, 8)}
    assert victim.address in nearest


def test_a_black_hole_that_answers_pings_but_sends_no_receipt_never_holds_an_item() -> None:
    """The other side of the rule above (spec 7.2, "Receipt wait"): a receipt wait that
    runs out no longer counts against the peer, so a black hole (a node that takes
    items, answers pings and never sends a receipt) stays in the relay's table. What
    defends against it is that only a receipt (or a copy of an item we sent it) makes
    a holder: it never counts as holding, so the relay goes on until an honest node
    nearer the target holds the item (its hops widen at every attempt), as if the black
    hole were not there. (One
    that sends receipts and drops the items was never caught by missing receipts; the
    sender's search for the recipient in person answers it, tests/test_sim.py.)"""
    wire = Wire()
    relay = wire.add(1)
    honest = [wire.add(seed) for seed in range(10, 22)]
    for peer in honest:
        wire.connect(peer, relay)
    hole = min(honest, key=lambda n: n.address)
    target = bytes(20)  # the black hole is the relay's nearest node to it
    hole_end, relay_end = wire.endpoint(hole), wire.endpoint(relay)
    reader = Codec(relay.identity)

    def black_hole(source: Endpoint, dest: Endpoint, data: bytes) -> bool:
        if source != hole_end:
            return False
        if dest != relay_end:
            return True
        frame = reader.decode(data, T0 + 10).frame
        return frame is None or frame.WhichOneof("body") != "pong"

    wire.run(T0, T0 + 5, 0.5)
    wire.drop = black_hole
    now = T0 + 10
    msg = pb.Message(recipient=target, expires_ms=_expiry(now), sealed=os.urandom(SEALED_BYTES))
    data = Codec(Identity.generate()).encode_frame(relay.identity.key, pb.Frame(message=msg), now)
    relay.receive_datagram(data, ("198.18.5.5", 7000), now)
    wire.pump(now)
    for later in (now + 1, now + RECEIPT_TIMEOUT_S + 0.1, now + 6.2, now + 14.3):
        wire.tick(later)
    (entry,) = [e for e in relay._store if e.kind is Kind.MESSAGE]
    assert any(e.kind is Kind.MESSAGE for e in hole._store)  # it was sent the item
    assert hole.address not in entry.holders
    assert entry.holders and relay._closer_holder(entry)  # an honest node nearer holds it
    assert hole.address in {p.address for p in relay.closest_peers(target, 8)}  # alive


# ------------------------------------------ 6. a letter that skips 2,000 keys, repeated


def test_a_letter_that_does_not_open_cannot_make_the_node_skip_keys_again_and_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spec 5 and 7.1: a peer may make us do work bounded per datagram and by budgets.
    Any key can hold a session with us (it writes one text first). Its next letters are
    envelopes whose header names a new ratchet key, PN = our N + 1,000 and N = 1,000,
    with a ciphertext of random bytes (no signature needed: not an INIT). Opening one
    (``SessionBook.open``, before any store rate limit: it is addressed to us) deep-copies
    the session state and derives 2,000 chain keys (two HMACs each) and two X25519
    agreements before the AEAD fails (``no_session``); the copy is thrown away, so the
    next such datagram costs the same again. Measured: 7.6 ms a datagram (13.5 ms with
    the session's 2,000 skipped keys filled by two committed texts that skip 999 each)
    against 0.05 ms for a message that does not open at all: one key within the
    500-datagram-a-second allowance asks for 3.8 to 6.7 s of CPU a second, about 90
    datagrams a second (110 KB/s) keep one core busy. Counted here as chain-key
    derivations: 20 such datagrams must not cost 20 times the skip."""
    derived = 0
    kdf_ck = ratchet.kdf_ck

    def counting(ck: bytes) -> tuple[bytes, bytes]:
        nonlocal derived
        derived += 1
        return kdf_ck(ck)

    wire = Wire()
    attacker, victim = wire.add(1), wire.add(2)
    wire.connect(attacker, victim)
    now = T0 + 1
    victim_id = PublicIdentity(victim.identity.key)
    attacker.send_text(victim_id, "hello", now)
    now = wire.settle(now)
    assert len(wire.texts(victim)) == 1  # a session, as anyone can have
    (session,) = victim._sessions.peers[attacker.identity.key]
    monkeypatch.setattr(ratchet, "kdf_ck", counting)
    source = wire.endpoint(attacker)
    for _ in range(20):
        _, new_ratchet_key = ratchet.generate_dh()
        head = (
            bytes([ENVELOPE_VERSION, 0])
            + attacker.identity.key
            + session.session_id
            + bytes(8)
            + new_ratchet_key
            + struct.pack(">II", session.state.nr + ratchet.MAX_SKIP, ratchet.MAX_SKIP)
            + struct.pack(">H", 0)
        )
        body = head + os.urandom(ENVELOPE_BYTES - SIGNATURE_BYTES - len(head))
        sealed = bytes(SealedBox(victim_id.box_key).encrypt(body + bytes(SIGNATURE_BYTES)))
        letter = pb.Message(recipient=victim.address, expires_ms=_expiry(now), sealed=sealed)
        data = attacker._codec.encode_frame(victim.identity.key, pb.Frame(message=letter), now)
        victim.receive_datagram(data, source, now)
    # All refused: a letter within its author's skip budget derives its chain and fails
    # the AEAD (``no_session``); past the budget, ``skip_rate`` before any derivation.
    assert victim.stats.rejected["no_session"] + victim.stats.rejected["skip_rate"] == 20
    assert derived <= 2 * 2 * ratchet.MAX_SKIP  # the skip paid once, not per datagram


# ---------------------------------------- 7. copies of an ack make every key a holder


def test_copies_of_an_ack_from_fresh_keys_do_not_grow_its_entry_without_bound() -> None:
    """Spec 7.3: a relay takes an ack "as a copy of an ack it holds (then it only notes the
    sender as a holder, with a receipt)"; spec 5.2: what peers can make us hold is
    bounded per key and in all. The attacker writes the victim a text (any key can) and
    gets back the victim's signed ack, as every sender does. It then hands the victim
    that ack from fresh keys, one datagram each, at forged sources. Every one is taken
    as a copy: its key joins the ack entry's holders, a set with no bound; the ack is
    the victim's own (not held for others), so every such change is written to disk
    with the whole set (``Entry.serialize``, holders sorted): 88 KB an entry after
    4,000 keys, 2.2 MB after 100,000, rewritten at every commit, and the set is
    walked at each of them (``_ack_owed``). A relay's acks grow the same way in
    memory. The same ack replayed works for any node it passed through."""
    wire = Wire()
    author, victim = wire.add(1), wire.add(2)
    wire.connect(author, victim)
    now = T0 + 1
    author.send_text(PublicIdentity(victim.identity.key), "hello", now)
    now = wire.settle(now)
    (own_ack,) = [e for e in victim._store if e.kind is Kind.ACK]
    assert not own_ack.for_others
    for i in range(300):
        now += 0.001
        forger = Codec(Identity.from_seed(b"z" + i.to_bytes(31, "big")))
        data = forger.encode_frame(victim.identity.key, pb.Frame(ack=own_ack.wire), now)
        victim.receive_datagram(data, (f"203.0.{i // 256}.{i % 256}", 6000), now)
        victim.drain_events()
        victim.datagrams_to_send()
    assert len(own_ack.holders) <= 16
    assert len(own_ack.serialize()) <= 2 * len(own_ack.wire.SerializeToString()) + 200


# --------------------------- 8. an attached client's allowance spent by forged datagrams


def test_forged_datagrams_cannot_spend_an_attached_clients_allowance() -> None:
    """Spec 5.4: "junk forged 'from' a peer must not spend that peer's allowance, which
    is why a known key at its validated endpoint is not limited by its address" (by
    key alone, after authentication). Known, in the code, means its
    box is cached: table peers are pinned, but an attached client (spec 12.4; clients
    never enter tables) lives in the LRU cache of 4,096 boxes. The attacker sends one
    datagram from each of 4,097 fresh keys (2 s of the new-key budget), which pushes the
    client's box out; then well-formed boxed packets under random keys with random
    boxes, written from the client's endpoint: each spends that endpoint's bucket
    before it is refused (``stale``: no cryptography). Past the burst (1,000) the
    client's own Attach is refused ``rate_limited``, before it is opened, so its box
    never comes back by itself: its keep-alives, receipts and Fetches are dropped while
    the junk goes on (500 a second, about 50 KB/s), its attachment expires, and its mail
    is no longer pushed (the relay sending it something caches the box again: the
    attacker repeats the 4,097 keys)."""
    relay = _node(1)
    now = T0
    client = Codec(Identity.from_seed(b"c" * 32))
    at = ("198.51.100.20", 40000)
    _attach(client, relay, at, now)
    assert relay.attached_client(client.identity.address) is not None
    for i in range(4097):
        now += 0.0006
        fresh = Codec(Identity.from_seed(b"f" + i.to_bytes(31, "big")))
        data = fresh.encode_frame(relay.identity.key, pb.Frame(receipt=pb.Receipt()), now)
        relay.receive_datagram(data, (f"203.0.{i // 256}.{i % 256}", 6000), now)
    relay.datagrams_to_send()
    head = bytes([1 << 3, 2, 2 << 3 | 2, 32])  # Packet: version 2, a 32-byte sender key
    for _ in range(1001):
        junk = head + os.urandom(32) + bytes([4 << 3 | 2, 60]) + os.urandom(60)
        relay.receive_datagram(junk, at, now)
    refused = relay.stats.rejected["rate_limited"]
    keepalive = pb.Frame(attach=pb.Attach(challenge=b"k" * 16, interval_s=60), client=True)
    relay.receive_datagram(client.encode_frame(relay.identity.key, keepalive, now), at, now)
    assert relay.stats.rejected["rate_limited"] == refused


def test_fresh_keys_cannot_make_an_attached_client_wait_for_the_new_key_budget() -> None:
    """Finding 6, the other half: trusted by its validated pair, the client's datagrams
    skip its endpoint's bucket, but a box pushed out of the cache by 4,097 fresh keys
    must be agreed again, within the new-key budget the flood spent: past it the
    client's keep-alive got a cookie reply, not its answer. Its boxes are pinned while
    it is attached, as a table peer's are (spec 5.3, 12.4)."""
    relay = _node(1)
    now = T0
    client = Codec(Identity.from_seed(b"c" * 32))
    at = ("198.51.100.20", 40000)
    _attach(client, relay, at, now)
    for i in range(4097):
        now += 0.0006
        fresh = Codec(Identity.from_seed(b"f" + i.to_bytes(31, "big")))
        data = fresh.encode_frame(relay.identity.key, pb.Frame(receipt=pb.Receipt()), now)
        relay.receive_datagram(data, (f"203.0.{i // 256}.{i % 256}", 6000), now)
    relay.datagrams_to_send()
    relay._new_keys.tokens = 0  # the flood goes on: no budget left
    relay._new_keys.rate_per_s = 0
    keepalive = pb.Frame(attach=pb.Attach(challenge=b"k" * 16, interval_s=60), client=True)
    relay.receive_datagram(client.encode_frame(relay.identity.key, keepalive, now), at, now)
    answers = _frames_to(client, relay.datagrams_to_send(), at)
    assert [f.pong.challenge for f in answers if f.HasField("pong")] == [b"k" * 16]


def test_a_validated_pair_whose_box_left_the_cache_is_served_without_the_new_key_budget() -> None:
    """Findings 6 and 8 together, and red6: a validated pair earns no 3x credit (it needs
    none) and is not held to its endpoint's bucket. When fresh keys pushed its box out of
    the cache (and what it earned before its validation out of the credit table) and
    spent the new-key budget, its datagram is still served: a validated pair is
    established, its box costs one key agreement and is cached again, and the new-key
    budget is not charged for it. Charged, forged junk under its key from its endpoint
    (which no endpoint bucket limits) spent the budget at line rate and drew a cookie
    reply to it each."""
    relay = _node(1)
    peer = Codec(Identity.from_seed(b"v" * 32))
    at = ("198.51.100.30", 4000)
    ping = pb.Frame(ping=pb.Ping(challenge=b"p" * 16), client=True)  # a client: no table
    relay.receive_datagram(peer.encode_frame(relay.identity.key, ping, T0), at, T0)
    for frame in _frames_to(peer, relay.datagrams_to_send(), at):
        if frame.HasField("ping"):
            pong = pb.Frame(pong=pb.Pong(challenge=frame.ping.challenge), client=True)
            relay.receive_datagram(peer.encode_frame(relay.identity.key, pong, T0), at, T0)
    relay.datagrams_to_send()
    now = T0
    for i in range(CREDIT_PAIRS + 1):
        now += 0.0006
        fresh = Codec(Identity.from_seed(b"g" + i.to_bytes(31, "big")))
        data = fresh.encode_frame(relay.identity.key, pb.Frame(receipt=pb.Receipt()), now)
        relay.receive_datagram(data, (f"203.0.{i // 256}.{i % 256}", 6000), now)
    relay.datagrams_to_send()
    relay._new_keys.tokens = 3
    relay._new_keys.rate_per_s = 0
    for i in range(10):  # forged junk under the pair's key, from its endpoint
        junk = bytearray(peer.encode_frame(relay.identity.key, ping, now + i / 1000))
        junk[-3] ^= 1
        relay.receive_datagram(bytes(junk), at, now + i / 1000)
    sent = [pb.Packet.FromString(data) for data, dest in relay.datagrams_to_send() if dest == at]
    assert not any(packet.HasField("cookie_reply") for packet in sent)
    assert relay._new_keys.tokens == 3  # the budget is the first contacts'
    relay.receive_datagram(peer.encode_frame(relay.identity.key, ping, now + 1), at, now + 1)
    frames = _frames_to(peer, relay.datagrams_to_send(), at)
    assert [frame.HasField("pong") for frame in frames] == [True]


# ------------------------------------- 9. Nodes entries aimed at our own machine or LAN


def test_a_global_peer_cannot_aim_our_lookups_at_our_own_machine_or_lan() -> None:
    """Spec 12.2: a dial-back target is "of the asker's own scope ... A stranger on the
    internet can thus never aim probes at Q's own machine or LAN"; spec 12.6 holds a
    relay's introductions to the same rule (``probe_target_allowed``). The entries of a
    ``Nodes`` answer are not held to it (spec 4 drops only a bad key, an IP that is not 4
    or 16 bytes, port 0). Any node on the internet that our lookup asks (it joined our
    table; or its keys sit near the targets of items a relay holds, which the relay
    looks up at their 2nd, 4th and 7th attempts) answers with entries at loopback and
    LAN endpoints, and the lookup sends each a padded FindNode (200 bytes): here to a
    memcached, a DNS resolver and an SNMP agent. Up to 16 per answer, 64 per lookup."""
    node = _node(1)
    now = T0
    peer = Codec(Identity.from_seed(b"b" * 32))
    peer_at = ("93.184.216.34", 4000)  # a global address
    node.add_known_peer(peer.identity.key, peer_at, now)
    for frame in _frames_to(peer, node.datagrams_to_send(), peer_at):
        if frame.HasField("ping"):
            pong = pb.Frame(pong=pb.Pong(challenge=frame.ping.challenge))
            node.receive_datagram(peer.encode_frame(node.identity.key, pong, now), peer_at, now)
    assert node.peer_count == 1
    finds = [
        f for f in _frames_to(peer, node.datagrams_to_send(), peer_at) if f.HasField("find_node")
    ]
    assert finds  # joining: a self-lookup
    aimed = [("127.0.0.1", 11211), ("127.0.0.1", 53), ("10.0.0.1", 161), ("192.168.1.1", 1900)]
    infos = [
        pb.NodeInfo(
            key=Identity.from_seed(bytes([50 + i]) * 32).key,
            ip=bytes(int(part) for part in host.split(".")),
            port=port,
        )
        for i, (host, port) in enumerate(aimed)
    ]
    for find in finds:
        answer = pb.Frame(nodes=pb.Nodes(query_id=find.find_node.query_id, nodes=infos))
        node.receive_datagram(peer.encode_frame(node.identity.key, answer, now), peer_at, now)
    sent_to = {dest for _, dest in node.datagrams_to_send()}
    assert not sent_to & set(aimed)


def test_nodes_entries_are_kept_within_the_answerers_scope() -> None:
    """Finding 10, what stays: entries of the answerer's scope or farther out are
    candidates as before (an internet peer names internet peers, a LAN peer LAN and
    internet peers, a loopback one any); nearer to us, or multicast, they are dropped
    (spec 4, Nodes)."""
    node = _node(1)
    named = {
        "loopback": ("127.0.0.1", 4000),
        "lan": ("192.168.1.20", 4000),
        "global": ("93.184.216.40", 4000),
        "multicast": ("224.0.0.251", 5353),
    }
    infos = [
        pb.NodeInfo(
            key=Identity.from_seed(bytes([60 + i]) * 32).key,
            ip=bytes(int(part) for part in host.split(".")),
            port=port,
        )
        for i, (host, port) in enumerate(named.values())
    ]
    answer = pb.Nodes(query_id=b"q" * 16, nodes=infos)
    for answerer, kept in (
        (("127.0.0.1", 5000), ["loopback", "lan", "global"]),
        (("192.168.1.2", 5000), ["lan", "global"]),
        (("93.184.216.34", 4000), ["global"]),
    ):
        found = node._parse_nodes(answer, answerer)
        assert [c.endpoint for c in found] == [named[scope] for scope in kept]


# --------------------------------- 10. the acks a node signs for a stranger's texts


def test_a_strangers_texts_cannot_make_us_store_acks_without_bound() -> None:
    """Spec 5.2: what peers can make us hold is bounded per key and in all; spec 5.4: per
    sending address, 100 new store items a second (burst 300). Spec 8: "the acks it signs
    are stored without quota and count toward no cap", and kept until their expiry,
    to answer later copies. Any key can start a session with us and write us texts,
    each a datagram; each whole text stores one ack entry of ours (and writes it, a
    strict write), with no quota, no cap and no store rate (``_on_message_for_me``
    comes before any). Measured: 0.65 ms and ~2 KB of memory kept per text; one key at
    its 500 datagrams a second holds 1 MB more each second for up to 7 days (the
    expiry is the sender's), 3.6 GB an hour, and as much written to disk. Here 600
    one-part texts in one second from one stranger: 600 acks held, where the store rate
    would allow 400."""
    wire = Wire()
    stranger, victim = wire.add(1), wire.add(2)
    wire.connect(stranger, victim)
    now = T0 + 1
    victim_id = PublicIdentity(victim.identity.key)
    stranger.send_text(victim_id, "hello", now)
    now = wire.settle(now)
    acks_before = sum(1 for e in victim._store if e.kind is Kind.ACK)
    datagrams = []
    for i in range(600):
        stranger.send_text(victim_id, f"spam {i}", now)
        datagrams += [
            d for d, dest in stranger.datagrams_to_send() if dest == wire.endpoint(victim)
        ]
    assert len(datagrams) == 600
    source = wire.endpoint(stranger)
    for data in datagrams:
        now += 1 / 600
        victim.receive_datagram(data, source, now)
        victim.drain_events()
        victim.datagrams_to_send()
    # The store rate's burst and one second of it: the rest refused before being opened.
    assert victim.stats.texts_received <= 1 + 300 + 100
    assert victim.stats.rejected["store_rate"] >= 600 - 300 - 100
    acks = sum(1 for e in victim._store if e.kind is Kind.ACK) - acks_before
    assert acks <= 300 + 100


def test_the_acks_we_sign_are_bounded_in_all_the_oldest_out_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spec 8: past SIGNED_ACKS_MAX acks we signed, the oldest goes, however slowly the
    texts came (the store rate bounds a hop's pace, not what many hops leave over a
    week). With the bound at 50: 80 texts, a tenth of a second apart, leave the newest
    50 acks (and our record, which the bound counts), and each text was received."""
    monkeypatch.setattr(node_module, "SIGNED_ACKS_MAX", 50)
    wire = Wire()
    stranger, victim = wire.add(1), wire.add(2)
    wire.connect(stranger, victim)
    now = T0 + 1
    victim_id = PublicIdentity(victim.identity.key)
    for i in range(80):
        stranger.send_text(victim_id, f"text {i}", now)
        now = wire.settle(now) + 0.1
    assert victim.stats.texts_received == 80
    own_acks = [e for e in victim._store if e.kind is Kind.ACK and not e.for_others]
    assert len(own_acks) <= 50
    assert len(own_acks) >= 49  # the bound, less our record if it is held
    newest = max(e.stored_at for e in own_acks)
    assert newest >= now - 1  # the last text's ack is among them


def test_three_junk_messages_addressed_to_a_node_do_not_evict_it_from_a_full_bucket() -> None:
    """The same attack as above, at a relay whose bucket holding the victim is full with
    nodes waiting in its replacement cache (40 nodes known, as a busy relay's far
    buckets are): 2 s after the 3 junk messages the victim is out of the relay's table,
    replaced by a node of the cache. The relay no longer sends it what it holds for it
    (pushes on arrival), nor names it to anyone; it only learns of it again from a
    datagram of the victim's own, until the next 3 junk messages."""
    wire = Wire()
    relay = wire.add(1)
    nodes = [wire.add(10 + i) for i in range(40)]
    for known in nodes:
        relay.add_known_peer(known.identity.key, wire.endpoint(known), T0)
        wire.pump(T0)
    full = next(b for b in relay._table._buckets if len(b.nodes) == 8 and b.replacements)
    victim = next(n for n in nodes if n.address in full.nodes)
    now = T0 + 1
    _hand_junk_for(victim, relay, now)
    wire.pump(now)
    assert victim.stats.rejected["bad_seal"] >= 3
    for later in (now + 1, now + RECEIPT_TIMEOUT_S + 0.1):
        wire.tick(later)
    assert victim.address in {peer.address for peer in relay.peers()}


def test_a_node_fetching_fast_makes_us_walk_what_we_hold_for_it_once_a_second() -> None:
    """Spec 7.2: a served Fetch walks everything held for its sender (0.15-0.3 ms for
    1,400 items) and mostly finds it awaited; a sender fetching at its 500 datagrams a
    second made us do it at every datagram. Now one a second per address, 4 in a burst:
    of 100 Fetches in a second, at most 5 are served, and the text held for the fetcher
    was pushed by the first."""
    wire = Wire()
    author, relay, fetcher = wire.add(1), wire.add(2), wire.add(3)
    wire.connect(author, relay)
    wire.connect(fetcher, relay)
    wire.offline.add(wire.endpoint(fetcher))
    now = T0 + 1
    author.send_text(PublicIdentity(fetcher.identity.key), "for the fetcher", now)
    now = wire.settle(now) + 10  # the relay's wait for the fetcher's receipt ran out
    wire.offline.clear()
    pushed = relay.stats.pushed_on_join
    at = wire.endpoint(fetcher)
    for i in range(100):
        data = fetcher._codec.encode_frame(
            relay.identity.key, pb.Frame(fetch=pb.Fetch()), now + i / 100
        )
        relay.receive_datagram(data, at, now + i / 100)
        relay.drain_events()
        relay.datagrams_to_send()
    assert relay.stats.fetches_too_soon >= 95
    assert relay.stats.pushed_on_join == pushed + 1
    assert relay.stats.rejected["internal_error"] == 0
