"""A receipt counts only for an item we sent that peer (docs/PROTOCOL.md, "7.2",
"Receipt wait"; issue 11, fourth session).

Holders count toward an item's replication: a relay far from the target stops relaying
an item once a node nearer the target holds it. Before this rule, any key could send a
``Receipt`` naming an item's id (told by one colluder) and be counted a holder, so a few
Sybils with addresses near the target silenced the item. Now an id counts only while
that peer's receipt wait for the item is open, or lately ran out (a late receipt);
anything else is ignored and counted as ``receipt_unsent``.
"""

from __future__ import annotations

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import RECEIPT_TIMEOUT_S, SEALED_BYTES, Node, NodeConfig
from comm_tui.protocol.receipts import (
    RECEIPT_PEERS_MAX,
    RECEIPT_TIMEOUT_MAX_S,
    TIMED_OUT_PAIRS_MAX,
    TIMED_OUT_PAIRS_PER_NETWORK,
    TIMED_OUT_PAIRS_PER_WIDE_NETWORK,
    ReceiptWaits,
)
from comm_tui.protocol.relay_store import Kind
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.internals import forged_expiry_ms
from tests.wire import T0, Wire

A = b"a" * 20
K1, K2 = b"\x01" * 33, b"\x02" * 33
NODES = 12
SYBILS = 4


def _distance(address: bytes, target: bytes) -> int:
    return int.from_bytes(address, "big") ^ int.from_bytes(target, "big")


def _closer(target: bytes, than: bytes, seed: int) -> list[Identity]:
    """Identities nearer ``target`` than ``than``, from seeds counted up from ``seed``."""
    found: list[Identity] = []
    while len(found) < SYBILS:
        identity = Identity.from_seed(seed.to_bytes(32, "big"))
        if _distance(identity.address, target) < _distance(than, target):
            found.append(identity)
        seed += 1
    return found


def _relay_holding_an_item(
    sybils: int,
) -> tuple[Node, set[bytes], int, dict[str, int]]:
    """A relay far from an item's target takes the item from a peer, and its onward hops'
    receipts are lost; ``sybils`` keys nearer the target that were never sent it send
    receipts naming it. Returns the relay, the item's holders after them, how many
    copies the relay sent at the item's first retry, and its rejections."""
    wire = Wire()
    nodes = [wire.add(seed) for seed in range(1, NODES + 1)]
    relay = nodes[0]
    for node in nodes[1:]:
        wire.connect(node, relay)
    table = [peer for peer in nodes[1:] if peer.address in relay._table]
    # A target (a recipient not in the network) for which the relay is not among the k
    # nearest it knows, and a peer farther from it than the relay to hand it the item.
    seed = 1000
    while True:
        target = Identity.from_seed(seed.to_bytes(32, "big"))
        seed += 1
        ours = _distance(relay.address, target.address)
        nearer = [p for p in table if _distance(p.address, target.address) < ours]
        farther = [p for p in table if _distance(p.address, target.address) > ours]
        if len(nearer) >= relay.config.k + 1 and farther:
            break
    peer = farther[0]
    relay_end = wire.endpoint(relay)
    # Nothing reaches the relay from the network from now on: its hops' receipts are lost,
    # and no hop hands it a copy back, so the holders are the peer and who the Sybils made.
    wire.drop = lambda source, dest, data: dest == relay_end
    msg = pb.Message(
        recipient=target.address, expires_ms=forged_expiry_ms(T0), sealed=bytes(SEALED_BYTES)
    )
    relay.receive_datagram(
        peer._codec.encode_frame(relay.identity.key, pb.Frame(message=msg), T0),
        wire.endpoint(peer),
        T0,
    )
    wire.pump(T0)
    (entry,) = [e for e in relay._store if e.kind is Kind.MESSAGE]
    assert entry.holders == {peer.address}
    assert relay.stats.sent_by_kind["message"] > 0  # relayed at once, toward the target
    for i, sybil in enumerate(_closer(target.address, relay.address, 5000)[:sybils]):
        receipt = pb.Frame(receipt=pb.Receipt(ids=[entry.key]))
        data = Codec(sybil).encode_frame(relay.identity.key, receipt, T0 + 0.5)
        relay.receive_datagram(data, (f"198.18.{i}.1", 7000), T0 + 0.5)
    holders = set(entry.holders)
    before = relay.stats.sent_by_kind["message"]
    wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)  # the item's first retry
    return relay, holders, relay.stats.sent_by_kind["message"] - before, dict(relay.stats.rejected)


def test_sybil_receipts_for_an_item_never_sent_to_them_leave_its_replication_unchanged() -> None:
    _, holders, retried, rejected = _relay_holding_an_item(0)
    _, attacked_holders, attacked_retried, attacked_rejected = _relay_holding_an_item(SYBILS)
    assert attacked_holders == holders  # no Sybil became a holder...
    assert retried > 0 and attacked_retried == retried  # ...so the retry went out as before
    assert attacked_rejected.get("receipt_unsent") == SYBILS
    assert "receipt_unsent" not in rejected


def _two_nodes() -> tuple[Wire, Node, Node]:
    wire = Wire()
    # Retries far off, so a wait that runs out is not re-armed by the item's retry.
    slow = NodeConfig(backoff_base_s=600.0, backoff_max_s=600.0)
    a, b = wire.add(1, slow), wire.add(2, slow)
    wire.connect(a, b)
    return wire, a, b


def _receipt(sender: Node, receiver: Node, ids: list[bytes], now: float) -> bytes:
    frame = pb.Frame(receipt=pb.Receipt(ids=ids))
    return sender._codec.encode_frame(receiver.identity.key, frame, now)


def test_a_receipt_from_a_peer_never_sent_our_text_does_not_make_it_sent() -> None:
    """The sender's face: a text is ``sent`` once a peer holds each part; a stranger's
    receipt naming the part does not move it (the stem peer's real one does)."""
    wire, a, b = _two_nodes()
    wire.drop = lambda source, dest, data: dest == wire.endpoint(a)  # b's receipt is lost
    text_id = a.send_text(Identity.generate().public, "only b was sent this", T0)
    wire.pump(T0)
    (part,) = [e for e in a._store if e.kind is Kind.MESSAGE]
    wire.drop = None
    stranger = wire.add(3)
    a.receive_datagram(_receipt(stranger, a, [part.key], T0 + 0.2), wire.endpoint(stranger), T0)
    wire.pump(T0 + 0.2)
    assert part.holders == set() and wire.states(a, text_id) == []
    assert a.stats.rejected["receipt_unsent"] == 1
    a.receive_datagram(_receipt(b, a, [part.key], T0 + 0.3), wire.endpoint(b), T0 + 0.3)
    wire.pump(T0 + 0.3)
    assert part.holders == {b.address} and wire.states(a, text_id) == ["sent"]
    # A second receipt from a holder changes nothing and is not counted.
    a.receive_datagram(_receipt(b, a, [part.key], T0 + 0.4), wire.endpoint(b), T0 + 0.4)
    assert a.stats.rejected["receipt_unsent"] == 1


def test_a_late_receipt_for_an_item_sent_still_counts() -> None:
    """The wait ran out (no failure: a liveness ping, docs/PROTOCOL.md, "7.2"), the
    receipt comes after: the peer holds it."""
    wire, a, b = _two_nodes()
    wire.drop = lambda source, dest, data: dest == wire.endpoint(a)
    text_id = a.send_text(Identity.generate().public, "late but held", T0)
    wire.pump(T0)
    (part,) = [e for e in a._store if e.kind is Kind.MESSAGE]
    a.handle_timer(T0 + RECEIPT_TIMEOUT_S + 0.1)  # the wait runs out
    entry = a._table.get(b.address)
    assert entry is not None and entry.failures == 0
    assert [q.kind for q in a._queries.values()] == ["ping"]
    late = T0 + RECEIPT_TIMEOUT_S + 0.5
    a.receive_datagram(_receipt(b, a, [part.key], late), wire.endpoint(b), late)
    assert part.holders == {b.address} and "receipt_unsent" not in a.stats.rejected
    wire.drop = None
    wire.pump(late)
    assert wire.states(a, text_id) == ["sent"]


def test_the_receipt_waits_say_which_receipts_count() -> None:
    waits = ReceiptWaits()
    endpoint: Endpoint = ("10.0.0.1", 1)
    assert not waits.received(A, K1, T0)  # never sent
    waits.sent(A, K1, T0, None, endpoint)
    assert waits.received(A, K1, T0 + 0.1)  # open
    assert not waits.received(A, K1, T0 + 0.2)  # answered already
    waits.sent(A, K2, T0, None, endpoint)
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A]
    assert waits.received(A, K2, T0 + 10)  # ran out lately: a late receipt
    # Timed-out pairs are bounded: the oldest is forgotten, and its receipt no longer counts.
    for i in range(TIMED_OUT_PAIRS_MAX):
        waits.sent(A, i.to_bytes(33, "big"), T0 + 20, None, endpoint)
    assert len(waits.overdue(T0 + 20 + RECEIPT_TIMEOUT_MAX_S)) == TIMED_OUT_PAIRS_MAX
    assert not waits.received(A, K2, T0 + 100)
    assert waits.received(A, (TIMED_OUT_PAIRS_MAX - 1).to_bytes(33, "big"), T0 + 100)


def test_exactly_the_last_timed_out_pairs_max_pairs_take_a_late_receipt() -> None:
    """The bound on timed-out pairs is ``TIMED_OUT_PAIRS_MAX``, not one less: the pair that
    ran out first still takes its late receipt until one more pair runs out (each pair
    sent to a network of its own, within the bound per network)."""
    waits = ReceiptWaits()
    endpoint: Endpoint = ("10.0.0.1", 1)
    waits.sent(A, K1, T0, None, endpoint)
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A]
    for i in range(TIMED_OUT_PAIRS_MAX - 1):  # K1 and these: TIMED_OUT_PAIRS_MAX pairs
        waits.sent(A, i.to_bytes(33, "big"), T0 + 10, None, (f"10.{i // 256}.{i % 256}.1", 1))
    assert len(waits.overdue(T0 + 10 + RECEIPT_TIMEOUT_MAX_S)) == TIMED_OUT_PAIRS_MAX - 1
    assert waits.received(A, K1, T0 + 99)  # the first still counts (and stays: ran out)
    waits.sent(A, K2, T0 + 100, None, ("10.200.0.1", 1))
    assert waits.overdue(T0 + 100 + RECEIPT_TIMEOUT_MAX_S) == [A]  # one more: K1 goes
    assert not waits.received(A, K1, T0 + 200)
    assert waits.received(A, (0).to_bytes(33, "big"), T0 + 200)


def test_a_receipt_for_an_item_sent_again_after_its_wait_ran_out_counts_once() -> None:
    """Sending a timed-out item again moves it from the timed-out pairs to the open waits;
    its receipt then answers it, and a second receipt for it no longer counts."""
    waits = ReceiptWaits()
    endpoint: Endpoint = ("10.0.0.1", 1)
    waits.sent(A, K1, T0, None, endpoint)
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A]
    waits.sent(A, K1, T0 + 5, None, endpoint)
    assert waits.received(A, K1, T0 + 5.1)
    assert not waits.received(A, K1, T0 + 5.2)


def test_an_untracked_wait_makes_a_holder_and_leaves_nothing_behind() -> None:
    """docs/PROTOCOL.md, "7.2", "Receipt wait": an item sent to a pair not validated (an
    ack answering a copy from any source) is awaited, and its receipt counts while the
    wait is open; but it measures nothing, and when it runs out it doubles no wait,
    files no timed-out pair and is no peer's to check (red5, finding 7)."""
    waits = ReceiptWaits()
    endpoint: Endpoint = ("203.0.113.9", 6000)
    waits.sent(A, K1, T0, None, endpoint, tracked=False)
    assert waits.received(A, K1, T0 + 1.5)  # open: a holder
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S  # but no measurement
    waits.sent(A, K2, T0, None, endpoint, tracked=False)
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == []  # nothing to check
    assert waits.timeout(A) == RECEIPT_TIMEOUT_S  # no backoff
    assert not waits.received(A, K2, T0 + 5)  # no timed-out pair
    assert len(waits) == 0 and not waits._peers and not waits._backed_off


def test_peers_never_measured_cannot_push_out_a_measured_wait() -> None:
    """The backoff of validated peers whose waits ran out without any receipt is kept
    apart from measured delays: filling it needs no receipt, so it must not evict
    what an honest peer's receipts taught us."""
    waits = ReceiptWaits()
    slow = b"s" * 20
    waits.sent(slow, K1, T0, None, ("192.0.2.7", 4000))
    waits.received(slow, K1, T0 + 6.0)
    measured = waits.timeout(slow)
    for i in range(RECEIPT_PEERS_MAX + 1):
        waits.sent(i.to_bytes(20, "big"), K2, T0 + 10, None, ("198.51.100.1", 1000 + i))
    assert len(waits.overdue(T0 + 10 + RECEIPT_TIMEOUT_S)) == RECEIPT_PEERS_MAX + 1
    assert waits.timeout(slow) == measured
    assert len(waits._backed_off) == RECEIPT_PEERS_MAX
    assert waits.timeout((RECEIPT_PEERS_MAX).to_bytes(20, "big")) == 2 * RECEIPT_TIMEOUT_S


def test_the_48s_of_one_32_cannot_flush_the_late_receipts_of_others() -> None:
    """Validated pairs are cheap in IPv6 /48s: 17 of one /32 at their 256 timed-out pairs
    each passed the 4,096 in all, and every honest late receipt was forgotten. A wide
    network keeps its last ``TIMED_OUT_PAIRS_PER_WIDE_NETWORK``."""
    waits = ReceiptWaits()
    waits.sent(A, K1, T0, None, ("198.51.100.7", 4000))
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [A]
    per_48 = TIMED_OUT_PAIRS_PER_NETWORK
    count = TIMED_OUT_PAIRS_MAX + per_48
    for i in range(count):
        peer = b"x" * 16 + i.to_bytes(4, "big")
        endpoint = (f"2001:db8:{i // per_48:x}::1", 4000)
        waits.sent(peer, i.to_bytes(33, "big"), T0 + 5, None, endpoint)
    assert len(waits.overdue(T0 + 5 + RECEIPT_TIMEOUT_MAX_S)) == count
    assert waits.received(A, K1, T0 + 100)  # late, and still counted
    kept = [
        i
        for i in range(count)
        if waits.received(b"x" * 16 + i.to_bytes(4, "big"), i.to_bytes(33, "big"), T0 + 100)
    ]
    assert kept == list(range(count - TIMED_OUT_PAIRS_PER_WIDE_NETWORK, count))
