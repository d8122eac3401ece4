"""The relay path's rules and its cheaper encodings (issue 11, "the relay path").

- the receipt wait (docs/PROTOCOL.md, "7.2", "Receipt wait"): RFC 6298's timeout over a
  peer's receipt delays, Karn's rule, backoff on timeouts; a relay attempt skips a peer
  whose receipt is still awaited, and a late receipt is no failure;
- packets, receipts and relayed frames written as bytes are the bytes protobuf writes;
- ``StoreChanged`` serializes an entry only when the driver reads it.
"""

from __future__ import annotations

import os
import random

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import CLIENT_FLAG, PROTOCOL_VERSION, Codec, receipt_frame
from comm_tui.protocol.events import StoreChanged
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.receipts import (
    RECEIPT_PEERS_MAX,
    RECEIPT_TIMEOUT_MAX_S,
    RECEIPT_TIMEOUT_S,
    ReceiptWaits,
)
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.internals import SEALED_BYTES, forged_expiry_ms
from tests.wire import T0, Wire

A, B = b"a" * 20, b"b" * 20
K1, K2, K3 = b"\x01" * 33, b"\x02" * 33, b"\x03" * 33

# ---------------------------------------------------------------- ReceiptWaits


def test_an_unmeasured_peer_waits_the_least_and_fails_when_it_runs_out() -> None:
    waits = ReceiptWaits()
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S
    item = object()
    waits.sent(A, K1, T0, item, ("10.0.0.1", 1))
    assert waits.next_deadline() == T0 + RECEIPT_TIMEOUT_S
    assert waits.awaiting(A, K1, T0 + RECEIPT_TIMEOUT_S - 0.01, item, ("10.0.0.1", 1))
    assert not waits.awaiting(A, K1, T0, object(), ("10.0.0.1", 1))  # a newer item, same key
    assert not waits.awaiting(A, K1, T0, item, ("10.0.0.2", 1))  # the same peer elsewhere
    assert not waits.awaiting(A, K1, T0 + RECEIPT_TIMEOUT_S, item, ("10.0.0.1", 1))
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S - 0.01) == []
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A]
    assert len(waits) == 0 and waits.next_deadline() is None


def test_receipt_delays_set_the_wait_as_rfc_6298_does() -> None:
    waits = ReceiptWaits()
    waits.sent(A, K1, T0)
    waits.received(A, K1, T0 + 4.0)  # first sample: srtt 4, rttvar 2 -> 4 + 4 * 2
    assert waits.timeout(A) == pytest.approx(12.0)
    waits.sent(A, K2, T0 + 10)
    waits.received(A, K2, T0 + 10 + 2.0)  # rttvar 3/4*2 + 1/4*2 = 2; srtt 7/8*4 + 1/8*2
    assert waits.timeout(A) == pytest.approx(3.75 + 4 * 2.0)
    assert waits.timeout(B) == RECEIPT_TIMEOUT_S  # per peer
    # Fast receipts bring it down to the floor, never below.
    for i in range(40):
        waits.sent(A, K3, T0 + 20 + i)
        waits.received(A, K3, T0 + 20 + i + 0.001)
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S
    # Very slow ones up to the ceiling, never above.
    for i in range(40):
        waits.sent(A, K3, T0 + 100 + 200 * i)
        waits.received(A, K3, T0 + 100 + 200 * i + 150.0)
    assert waits.timeout(A) == RECEIPT_TIMEOUT_MAX_S


def test_a_wait_uses_the_timeout_in_force_when_the_item_was_sent() -> None:
    waits = ReceiptWaits()
    waits.sent(A, K1, T0)
    waits.received(A, K1, T0 + 4.0)
    waits.sent(A, K2, T0 + 10)
    assert waits.awaiting(A, K2, T0 + 10 + 11.9)
    assert waits.overdue(T0 + 10 + 11.9) == []
    assert waits.overdue(T0 + 10 + 12.0) == [A]


def test_karns_rule_a_receipt_for_an_item_sent_twice_is_not_measured() -> None:
    waits = ReceiptWaits()
    waits.sent(A, K1, T0)
    waits.sent(A, K1, T0 + 1)  # sent again before its receipt
    waits.received(A, K1, T0 + 9.0)
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S
    # Sent again after its wait ran out (and was forgotten): still the second copy.
    waits.sent(A, K2, T0 + 10)
    assert waits.overdue(T0 + 20) == [A]
    backed_off = waits.timeout(A)
    waits.sent(A, K2, T0 + 21)
    waits.received(A, K2, T0 + 21.5)
    assert waits.timeout(A) == backed_off


def test_each_wait_that_runs_out_doubles_the_next_once_per_burst() -> None:
    waits = ReceiptWaits()
    for key in (K1, K2, K3):  # three items to a dead peer, sent together
        waits.sent(A, key, T0)
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A, A, A]  # three failures...
    assert waits.timeout(A) == 2 * RECEIPT_TIMEOUT_S  # ...one doubling
    waits.sent(A, K1, T0 + 10)
    assert waits.overdue(T0 + 10 + 2 * RECEIPT_TIMEOUT_S) == [A]
    assert waits.timeout(A) == 4 * RECEIPT_TIMEOUT_S
    for i in range(10):
        waits.sent(A, K1, T0 + 100 * (i + 1))
        waits.overdue(T0 + 100 * (i + 1) + RECEIPT_TIMEOUT_MAX_S)
    assert waits.timeout(A) == RECEIPT_TIMEOUT_MAX_S
    # A measured receipt ends the backoff.
    fresh = b"\x04" * 33  # K2 timed out before: a copy of it would not be measured
    waits.sent(A, fresh, T0 + 5000)
    waits.received(A, fresh, T0 + 5000.01)
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S


def test_forget_stops_a_wait_without_measuring() -> None:
    waits = ReceiptWaits()
    waits.sent(A, K1, T0)
    waits.forget(A, K1)
    assert waits.overdue(T0 + 100) == []
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S


def test_stale_deadlines_do_not_pile_up() -> None:
    waits = ReceiptWaits()
    for i in range(10_000):
        waits.sent(A, K1, T0 + i)  # the same pair again and again
    assert len(waits) == 1
    assert len(waits._deadlines) <= 2 * len(waits) + 65


def test_the_deadline_heap_is_rebuilt_once_it_passes_twice_the_waits_plus_64() -> None:
    """Stale deadlines (waits answered or re-armed) stay in the heap until it holds more
    than 2 per wait plus 64; then it is rebuilt from what is awaited. Any other threshold
    either holds more stale entries or rebuilds the heap at every send (O(n) each)."""
    waits = ReceiptWaits()
    lengths = []
    for i in range(1_000):
        waits.sent(A, (K1, K2)[i % 2], T0 + i)  # two waits, re-armed again and again
        lengths.append(len(waits._deadlines))
    assert len(waits) == 2
    assert max(lengths) == 2 * 2 + 64
    assert lengths.count(2) >= 10  # rebuilt to the two waits, again and again


def test_receipt_delays_are_remembered_for_4096_peers_the_least_recent_forgotten() -> None:
    """``RECEIPT_PEERS_MAX`` peers keep their measured wait; one more forgets the least
    recently measured, which then waits ``RECEIPT_TIMEOUT_S`` again."""
    waits = ReceiptWaits()
    peers = [i.to_bytes(20, "big") for i in range(RECEIPT_PEERS_MAX + 1)]
    for peer in peers[:RECEIPT_PEERS_MAX]:
        waits.sent(peer, K1, T0)
        waits.received(peer, K1, T0 + 3.0)  # srtt 3, rttvar 1.5: a wait of 9 s
    assert waits.timeout(peers[0]) == pytest.approx(9.0)
    waits.sent(peers[0], K2, T0 + 10)
    waits.received(peers[0], K2, T0 + 13.0)  # measured again: now the most recent
    waits.sent(peers[-1], K1, T0 + 20)
    waits.received(peers[-1], K1, T0 + 23.0)  # one peer too many
    assert waits.timeout(peers[1]) == RECEIPT_TIMEOUT_S  # the least recent, forgotten
    assert waits.timeout(peers[0]) > RECEIPT_TIMEOUT_S
    assert waits.timeout(peers[2]) == pytest.approx(9.0)
    assert waits.timeout(peers[-1]) == pytest.approx(9.0)


# ---------------------------------------------------------------- the rule in the node


def _receipt_reader(wire: Wire, sender: Node, receiver: Node) -> tuple[list[bytes], Codec]:
    """Hold back every receipt ``sender`` sends ``receiver``; returns the held datagrams."""
    reader = Codec(receiver.identity)
    held: list[bytes] = []
    source, dest = wire.endpoint(sender), wire.endpoint(receiver)

    def hold_receipts(src: Endpoint, dst: Endpoint, data: bytes) -> bool:
        if (src, dst) != (source, dest):
            return False
        sent_s = int.from_bytes(pb.Packet.FromString(data).boxed[:8], "big") / 1000
        frame = reader.decode(data, sent_s).frame
        if frame is not None and frame.WhichOneof("body") == "receipt":
            held.append(data)
            return True
        return False

    wire.drop = hold_receipts
    return held, reader


def test_a_slow_peers_late_receipt_is_no_failure_and_no_second_copy() -> None:
    """A peer whose receipts took 5 s is waited for 15 s: the retry at 2 s does not send it
    the item again, and its receipt at 3 s counts no failure (docs/PROTOCOL.md, "7.2")."""
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    wire.run(T0 + 1, T0 + 9)  # the joining's upkeep (records pushed, receipted) before b is slow
    a._receipt_waits.sent(b.address, b"x" * 33, T0)
    a._receipt_waits.received(b.address, b"x" * 33, T0 + 5.0)  # b was slow before
    held, _ = _receipt_reader(wire, b, a)
    a.send_text(Identity.generate().public, "b is slow, not gone", T0 + 10)
    wire.settle(T0 + 10)
    assert held and a.stats.sent_by_kind["message"] == 1
    wire.tick(T0 + 10 + RECEIPT_TIMEOUT_S + 0.1)  # the text's first retry is due
    assert a.stats.sent_by_kind["message"] == 1  # no second copy to b
    assert a.stats.resends_held == 1
    entry = a._table.get(b.address)
    assert entry is not None and entry.failures == 0
    wire.drop = None
    a.receive_datagram(held[0], wire.endpoint(b), T0 + 13)
    wire.tick(T0 + 10 + 20)
    assert entry.failures == 0
    assert all(b.address in e.holders for e in a._store if e.kind is Kind.MESSAGE)


def test_a_peer_that_never_sends_receipts_is_pinged_and_is_sent_again() -> None:
    """docs/PROTOCOL.md, "7.2", "Receipt wait": a wait that runs out counts no failure;
    the peer is pinged, and only an unanswered ping would count. b answers it."""
    wire = Wire()
    slow_retries = NodeConfig(backoff_base_s=600.0, backoff_max_s=600.0)
    a, b = wire.add(1, slow_retries), wire.add(2, slow_retries)
    wire.connect(a, b)
    _receipt_reader(wire, b, a)  # b's receipts never arrive
    a.send_text(Identity.generate().public, "never confirmed", T0)
    wire.pump(T0)
    entry = a._table.get(b.address)
    assert entry is not None
    sent_pings = a.stats.sent_by_kind["ping"]
    wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)
    assert a.stats.sent_by_kind["ping"] == sent_pings + 1
    wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.2)
    assert entry.failures == 0 and not a._queries  # the pong came
    # With its wait over, the next attempt sends it again (and waits twice as long).
    wire.tick(T0 + 600.1)
    assert a.stats.sent_by_kind["message"] == 2
    assert a._receipt_waits.timeout(b.address) == 2 * RECEIPT_TIMEOUT_S


# ---------------------------------------------------------------- bytes as protobuf writes them


@pytest.mark.parametrize("size", [0, 1, 80, 127, 128, 1000])
@pytest.mark.parametrize("cookie", [b"", b"c" * 16])
def test_a_sealed_packet_is_the_packet_protobuf_writes(size: int, cookie: bytes) -> None:
    ours, theirs = Identity.generate(), Identity.generate()
    codec = Codec(ours)
    plaintext = receipt_frame([os.urandom(size)])  # a frame of about ``size`` bytes
    data = codec.seal(theirs.key, plaintext, T0, cookie=cookie)
    packet = pb.Packet.FromString(data)
    expected = pb.Packet(
        version=PROTOCOL_VERSION, sender_key=ours.key, boxed=packet.boxed, cookie=cookie
    )
    assert data == expected.SerializeToString()
    assert Codec(theirs).decode(data, T0).sender.key == ours.key


def test_nonces_are_fresh_across_the_random_pool() -> None:
    codec = Codec(Identity.generate())
    peer = Identity.generate().key
    nonces = {codec.seal(peer, b"", T0)[-40:-16] for _ in range(1000)}  # > 4 KiB of tails
    assert len(nonces) == 1000


@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_a_receipt_frame_is_the_frame_protobuf_writes(count: int) -> None:
    ids = [os.urandom(33) for _ in range(count)]
    assert receipt_frame(ids) == pb.Frame(receipt=pb.Receipt(ids=ids)).SerializeToString()
    client = pb.Frame(receipt=pb.Receipt(ids=ids), client=True).SerializeToString()
    assert receipt_frame(ids) + CLIENT_FLAG == client


@pytest.mark.parametrize("size", [0, 1, 33, 125, 126, 127, 128, 300])
def test_a_receipt_frame_of_one_id_of_any_length_is_the_frame_protobuf_writes(size: int) -> None:
    """One id is written with its four bytes of head while both lengths fit a one-byte
    varint (an id of up to 125 bytes), and the long way past it."""
    ids = {os.urandom(size): None}  # as _flush_receipts passes them
    assert receipt_frame(ids) == pb.Frame(receipt=pb.Receipt(ids=list(ids))).SerializeToString()


def test_relayed_frames_carry_the_stem_flag_asked_for() -> None:
    node = Node(Identity.generate(), T0)
    msg = pb.Message(recipient=b"r" * 20, expires_ms=1, sealed=b"s" * 1061, stem=True)
    entry = Entry(Kind.MESSAGE, b"i" * 32, b"r" * 20, 1, msg, stored_at=T0)
    for stem in (True, False, False, True):
        body, plaintext = node._item_frame(entry, stem)
        frame = pb.Frame.FromString(plaintext)
        assert body == "message" and frame.message.stem is stem
        assert frame.message.sealed == msg.sealed
    other = Entry(Kind.MESSAGE, b"j" * 32, b"q" * 20, 1, pb.Message(recipient=b"q" * 20), T0)
    assert pb.Frame.FromString(node._item_frame(other, True)[1]).message.recipient == b"q" * 20


@pytest.mark.parametrize("stored_stem", [False, True])
@pytest.mark.parametrize("stem", [False, True])
def test_a_relayed_message_frame_is_the_frame_protobuf_writes(
    stored_stem: bool, stem: bool
) -> None:
    """Forwarded as stored (the same stem flag) or with the flag changed, the frame is
    byte for byte ``Frame{message}`` with that flag, and the stored message is untouched."""
    node = Node(Identity.generate(), T0)
    msg = pb.Message(recipient=b"r" * 20, expires_ms=3_600_000, sealed=b"s" * 1061)
    msg.stem = stored_stem
    entry = Entry(Kind.MESSAGE, b"i" * 32, b"r" * 20, 3_600_000, msg, stored_at=T0)
    expected = pb.Message()
    expected.CopyFrom(msg)
    expected.stem = stem
    assert node._item_frame(entry, stem) == (
        "message",
        pb.Frame(message=expected).SerializeToString(),
    )
    assert msg.stem is stored_stem


# ---------------------------------------------------------------- lazy StoreChanged


def test_store_changes_are_serialized_only_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    calls: list[bytes] = []
    serialize = Entry.serialize

    def counting(self: Entry) -> bytes:
        calls.append(self.key)
        return serialize(self)

    monkeypatch.setattr(Entry, "serialize", counting)
    a.send_text(Identity.generate().public, "lazy", T0)
    changes = [e for e in a.drain_events() if isinstance(e, StoreChanged)]
    assert changes and not calls
    (key,) = changes[-1].put
    (entry,) = [e for e in a._store if e.key == key]
    entry.attempts = 7  # read after a later change: the entry as it is now
    blob, expires_ms = changes[-1].put[key]
    assert calls == [key] and Entry.deserialize(blob).attempts == 7
    assert expires_ms == entry.expires_ms


def test_a_removed_peer_is_not_taken_for_validated() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    endpoint = wire.endpoint(b)
    a._proven = None
    assert a._is_validated(b.identity.key, endpoint)
    a._table.remove(b.address)
    a._addresses._validated.clear()
    a._peer_removed(b.identity.key, T0)
    assert not a._is_validated(b.identity.key, endpoint)


# ---------------------------------------------------------------- replicate or pass on


def _relay_with_peers(count: int) -> tuple[Wire, Node, list[Node]]:
    wire = Wire()
    relay = wire.add(1)
    peers = [wire.add(seed) for seed in range(2, count + 2)]
    for peer in peers:
        wire.connect(peer, relay)
    return wire, relay, [p for p in peers if p.address in relay._table]


def _copies_relayed(wire: Wire, relay: Node, peer: Node, target: bytes) -> int:
    """How many copies ``relay`` sends at once of a message ``peer`` hands it for ``target``."""
    msg = pb.Message(recipient=target, expires_ms=forged_expiry_ms(T0), sealed=bytes(SEALED_BYTES))
    before = relay.stats.messages_relayed
    data = peer._codec.encode_frame(relay.identity.key, pb.Frame(message=msg), T0 + 1)
    relay.receive_datagram(data, wire.endpoint(peer), T0 + 1)
    return relay.stats.messages_relayed - before


def test_a_relay_among_the_k_nearest_replicates_and_one_farther_passes_on() -> None:
    """docs/PROTOCOL.md, "7.2": a relay among the k nearest to the target it knows keeps
    ``replicas`` copies there; one farther forwards to ``transit_fanout`` nearer nodes.
    Which it is, ``_next_hops`` reads from the k nearest it looked up."""
    wire, relay, peers = _relay_with_peers(14)
    k = relay.config.k
    assert len(peers) > k + relay.config.replicas

    def distance(address: bytes, target: bytes) -> int:
        return int.from_bytes(address, "big") ^ int.from_bytes(target, "big")

    # Next to the relay: nobody is nearer; handed over by the farthest peer, not a replica.
    near = relay.address[:-1] + bytes([relay.address[-1] ^ 1])
    farthest = max(peers, key=lambda p: distance(p.address, near))
    assert _copies_relayed(wire, relay, farthest, near) == relay.config.replicas

    def target_with(nearer_count: int) -> tuple[bytes, Node]:
        """A target with exactly ``nearer_count`` known nodes nearer than the relay (XOR
        distance makes only some counts possible), and a peer farther from it than the
        relay (to hand the item over)."""
        rng = random.Random(nearer_count)
        for _ in range(5000):
            target = rng.randbytes(20)
            ours = distance(relay.address, target)
            nearer = [p for p in peers if distance(p.address, target) < ours]
            farther = [p for p in peers if distance(p.address, target) > ours]
            if len(nearer) == nearer_count and farther:
                return target, farther[0]
        raise AssertionError("no such target")

    # The k-th nearest: still among the k nearest.
    target, peer = target_with(k - 1)
    assert _copies_relayed(wire, relay, peer, target) == relay.config.replicas
    # Past the k-th (this table gives 10 nearer, not 8 or 9): passes it on.
    target, peer = target_with(k + 2)
    assert _copies_relayed(wire, relay, peer, target) == relay.config.transit_fanout
