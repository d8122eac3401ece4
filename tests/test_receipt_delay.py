"""Receipts wait at most RECEIPT_DELAY_S, coalesced per (key, endpoint) (docs/PROTOCOL.md,
"4. Frames", "Receipts wait at most 25 ms"; issue 11, sixth and seventh sessions).

A relay owes the receipt for an item from the moment it takes it. A quiet pair (sent
fewer than two Receipts in the last RECEIPT_DELAY_S) gets it at the end of the pump,
with every other id it is owed in that pump. A busy pair's ids go as one Receipt when
the first of them has waited RECEIPT_DELAY_S (``get_timer`` says when, ``handle_timer``
sends it). Either goes at once when the next id would not fit one Receipt
(tests/test_relay_fast.py), and the oldest pair's at once when more than
RECEIPT_PAIRS_MAX pairs are owed one.
"""

from __future__ import annotations

import os

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import (
    RECEIPT_DELAY_S,
    RECEIPT_PAIRS_MAX,
    RECEIPT_TIMEOUT_S,
    Node,
    NodeConfig,
)
from comm_tui.protocol.receipts import ReceiptsOwed
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint
from tests.test_node import forge_frame, frames_sent, message_of, stored_messages
from tests.test_relay_fast import _expiry, _message_frame, _owe_all, _stored_key
from tests.test_relay_fast import _rig as fast_rig
from tests.wire import T0, Wire


def _rig(peers: int = 1) -> tuple[Wire, Node, list[Node]]:
    """test_relay_fast's relay and senders, with the join's receipts settled."""
    wire, relay, senders = fast_rig(peers)
    wire.settle(T0)
    relay.datagrams_to_send()
    return wire, relay, senders


def _hand(wire: Wire, sender: Node, relay: Node, now: float) -> bytes:
    """``sender`` hands ``relay`` one message datagram at ``now``; returns its store key."""
    frame = _message_frame(os.urandom(20), _expiry(T0))
    data = Codec(sender.identity).encode_frame(relay.identity.key, frame, now)
    relay.receive_datagram(data, wire.endpoint(sender), now)
    return _stored_key(frame)


def _warm(wire: Wire, relay: Node, senders: list[Node], now: float) -> None:
    """Make each sender's pair busy: two pumps at ``now``, each taking one item from each
    sender (a quiet pair's receipt leaves with its pump: two Receipts in 25 ms)."""
    for _ in range(2):
        for sender in senders:
            _hand(wire, sender, relay, now)
        receipts = relay.stats.sent_by_kind["receipt"]
        relay.datagrams_to_send()
        assert relay.stats.sent_by_kind["receipt"] == receipts + len(senders)


def _receipts(relay: Node, sender: Node, now: float, to: Endpoint) -> list[list[bytes]]:
    """The ids of each Receipt ``relay`` queued for ``sender`` at ``to``."""
    codec = Codec(sender.identity)
    found = []
    for data, dest in relay.datagrams_to_send():
        frame = codec.decode(data, now).frame if dest == to else None
        if frame is not None and frame.WhichOneof("body") == "receipt":
            found.append(list(frame.receipt.ids))
    return found


def test_receipts_owed_across_pumps_wait_for_the_first_ones_delay_then_go_as_one() -> None:
    wire, relay, (sender,) = _rig()
    to = wire.endpoint(sender)
    start = T0 + 1
    _warm(wire, relay, [sender], start - 0.001)
    keys = []
    for step in range(3):  # one pump each, 10 ms apart
        now = start + step * 0.01
        keys.append(_hand(wire, sender, relay, now))
        assert _receipts(relay, sender, now, to) == []  # nothing leaves with the pump
        assert relay.get_timer() == start + RECEIPT_DELAY_S  # the first id's deadline
    just_before = start + RECEIPT_DELAY_S - 0.001
    relay.handle_timer(just_before)
    assert _receipts(relay, sender, just_before, to) == []
    relay.handle_timer(start + RECEIPT_DELAY_S)
    assert _receipts(relay, sender, start + RECEIPT_DELAY_S, to) == [keys]
    assert relay.get_timer() > start + RECEIPT_DELAY_S  # nothing owed: not asked again


def test_each_pair_waits_its_own_delay_oldest_first() -> None:
    wire, relay, (first, second) = _rig(2)
    start = T0 + 1
    _warm(wire, relay, [first, second], start - 0.001)
    first_key = _hand(wire, first, relay, start)
    second_key = _hand(wire, second, relay, start + 0.01)
    receipts = relay.stats.sent_by_kind["receipt"]
    relay.handle_timer(start + RECEIPT_DELAY_S)
    now = start + RECEIPT_DELAY_S
    assert _receipts(relay, first, now, wire.endpoint(first)) == [[first_key]]
    assert relay.stats.sent_by_kind["receipt"] == receipts + 1  # the second's waits
    assert relay.get_timer() == start + 0.01 + RECEIPT_DELAY_S
    # The first pair, sent one 1 ms after its delayed one (quiet: one in 25 ms), owed again
    # starts a new delay, behind the second's.
    _hand(wire, first, relay, start + 0.026)
    assert len(_receipts(relay, first, start + 0.026, wire.endpoint(first))) == 1
    _hand(wire, first, relay, start + 0.03)
    relay.handle_timer(start + 0.01 + RECEIPT_DELAY_S)
    now = start + 0.01 + RECEIPT_DELAY_S
    assert _receipts(relay, second, now, wire.endpoint(second)) == [[second_key]]
    assert relay.get_timer() == start + 0.03 + RECEIPT_DELAY_S


def test_a_pair_whose_receipt_filled_goes_behind_the_others_in_the_timer() -> None:
    """A full Receipt goes at once; the id over starts the pair's next one, with its own
    delay, last in line: the timer is then the next pair's deadline."""
    wire, relay, (first, second) = _rig(2)
    start = T0 + 1
    _warm(wire, relay, [first, second], start - 0.001)
    base = relay.stats.sent_by_kind["receipt"]
    key, to = first.identity.key, wire.endpoint(first)
    relay._owe_receipt(key, to, b"\x01" * 48, start)
    _hand(wire, second, relay, start + 0.01)
    fill = [bytes([i]) * 48 for i in range(2, 2 + 1000 // 50)]  # past 1,000 bytes
    _owe_all(relay, key, to, fill, start + 0.02)
    assert relay.stats.sent_by_kind["receipt"] == base + 1
    assert relay.get_timer() == start + 0.01 + RECEIPT_DELAY_S
    relay.handle_timer(start + 0.01 + RECEIPT_DELAY_S)
    assert relay.stats.sent_by_kind["receipt"] == base + 2
    assert relay.get_timer() == start + 0.02 + RECEIPT_DELAY_S


def test_a_clock_that_went_back_does_not_hold_later_receipts_behind_earlier_ones() -> None:
    wire, relay, (first, second) = _rig(2)
    _warm(wire, relay, [first], T0 + 10)
    _warm(wire, relay, [second], T0 + 1)
    _hand(wire, first, relay, T0 + 10)
    # The wall clock stepped back 9 s: the new pair's deadline is the timer's, and the
    # pair owed "in the future" goes with it rather than 9 s late.
    _hand(wire, second, relay, T0 + 1)
    assert relay.get_timer() == T0 + 1 + RECEIPT_DELAY_S
    relay.handle_timer(T0 + 1 + RECEIPT_DELAY_S)
    dests = {dest for _, dest in relay.datagrams_to_send()}
    assert dests == {wire.endpoint(first), wire.endpoint(second)}


def test_past_the_bound_of_pairs_the_oldest_pairs_receipt_goes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One (key, endpoint) pair per sender of an item within the delay; keys are free, so
    the table is bounded: one pair more sends the oldest pair's Receipt at once. Every
    pair busy, as under items from many keys at once (the busy pairs remembered are
    bounded by the same number: test_the_busy_pairs_remembered_are_bounded)."""
    node = Node(Identity.from_seed(b"\x07" * 32), T0)
    monkeypatch.setattr(node._receipts, "_busy", lambda pair, now: True)
    key = Identity.from_seed(b"\x08" * 32).key
    endpoints = [(f"10.9.{i // 250}.{i % 250 + 1}", 4000) for i in range(RECEIPT_PAIRS_MAX + 1)]
    for endpoint in endpoints:
        node._addresses.received(key, endpoint, 1000)  # credit for the answer (3x what it sent)
    later = T0 + 0.01
    for i, endpoint in enumerate(endpoints[:-1]):  # the first pair 10 ms before the rest
        node._owe_receipt(key, endpoint, bytes([i % 256, i // 256]) * 16, later if i else T0)
    assert node.datagrams_to_send() == []
    node._owe_receipt(key, endpoints[-1], b"last" * 8, later)
    assert [dest for _, dest in node.datagrams_to_send()] == [endpoints[0]]
    assert node.stats.sent_by_kind["receipt"] == 1
    assert node.get_timer() == later + RECEIPT_DELAY_S  # the next pair's deadline
    node.handle_timer(later + RECEIPT_DELAY_S)
    assert node.stats.sent_by_kind["receipt"] == RECEIPT_PAIRS_MAX + 1


def test_the_sender_sees_its_part_held_once_the_delay_has_passed() -> None:
    """The receipt comes RECEIPT_DELAY_S after the item, inside the sender's least wait
    (RECEIPT_TIMEOUT_S): the part is held then, with no failure and no second copy, and
    the delay measured into the peer's wait leaves it at the floor (docs/PROTOCOL.md,
    "7.2", "Receipt wait")."""
    wire = Wire()
    a, r = wire.add(1), wire.add(2)
    wire.connect(a, r)
    wire.settle(T0)
    _warm(wire, r, [a], T0 + 1)  # r sent a two receipts just now: its next ids gather
    text_id = a.send_text(Identity.generate().public, "held after 25 ms", T0 + 1)
    wire.pump(T0 + 1)
    assert wire.states(a, text_id) == []
    wire.tick(T0 + 1 + RECEIPT_DELAY_S)
    assert wire.states(a, text_id) == ["sent"]
    assert a._receipt_waits.timeout(r.address) == RECEIPT_TIMEOUT_S
    assert RECEIPT_DELAY_S * 50 <= RECEIPT_TIMEOUT_S
    entry = a._table.get(r.address)
    assert entry is not None and entry.failures == 0
    assert a.stats.sent_by_kind["message"] == 1


def test_a_refused_item_owes_no_receipt_even_after_the_delay() -> None:
    wire, relay, (sender,) = _rig()
    frame = _message_frame(os.urandom(20), _expiry(T0))
    frame.message.sealed = frame.message.sealed[:-1]  # bad_size
    data = Codec(sender.identity).encode_frame(relay.identity.key, frame, T0 + 1)
    relay.receive_datagram(data, wire.endpoint(sender), T0 + 1)
    assert relay.stats.rejected["bad_size"] == 1
    relay.handle_timer(T0 + 1 + RECEIPT_DELAY_S)
    assert _receipts(relay, sender, T0 + 1, wire.endpoint(sender)) == []


def test_a_receipt_that_comes_after_the_ack_gets_the_ack_and_counts_no_failure() -> None:
    """The recipient's ack can reach a relay before the receipt of a peer the relay sent
    the message to (that receipt waits up to RECEIPT_DELAY_S). The late receipt names a
    message replaced by its ack: the peer holds it, so the relay sends it the ack and
    ends its wait, measured; it counts no failure against the peer (docs/PROTOCOL.md,
    "4. Frames", "7.3 Acks")."""
    wire = Wire()
    a, r, b, x = wire.add(1), wire.add(2), wire.add(3), wire.add(4)
    for node in (a, b, x):
        wire.connect(node, r)
    wire.settle(T0)
    wire.offline.add(wire.endpoint(b))
    x_end, r_end = wire.endpoint(x), wire.endpoint(r)
    wire.drop = lambda source, dest, _: (source, dest) == (x_end, r_end)  # x's receipt is late
    a.send_text(b.identity.public, "acked before x's receipt", T0 + 1)
    a.datagrams_to_send()  # a's stem peer is random: hand r the message in person instead
    (own,) = stored_messages(a)
    handed = forge_frame(a, r, pb.Frame(message=message_of(own)), T0 + 1)
    r.receive_datagram(handed, wire.endpoint(a), T0 + 1)
    wire.pump(T0 + 1)
    (message,) = stored_messages(r)
    now = T0 + 1.01
    r._send_item(message, x.identity.key, x_end, now)  # a replica at x (as _relay sends one)
    wire.pump(now)  # x takes it; its receipt is late
    assert x.address not in message.holders
    assert r._receipt_waits.item_sent(x.address, message.key) is message
    ack = sign_ack(b.identity, message.item_id, message.expires_ms)
    r.receive_datagram(forge_frame(b, r, pb.Frame(ack=ack), now), wire.endpoint(b), now)
    r.datagrams_to_send()
    later = now + RECEIPT_DELAY_S
    acks = r.stats.acks_relayed
    late = pb.Frame(receipt=pb.Receipt(ids=[message.key]))
    (held,) = [e for e in r._store if e.kind is Kind.ACK]
    attempts = held.attempts
    r.receive_datagram(forge_frame(x, r, late, later), wire.endpoint(x), later)
    assert r._receipt_waits.item_sent(x.address, message.key) is None  # the wait ended
    assert held.attempts == attempts  # sent to x alone: none of the ack's retries spent
    wire.drop = None
    wire.settle(later)  # the ack to x, and x's receipt for it
    assert r.stats.acks_relayed == acks + 1
    assert [e.kind for e in x._store] == [Kind.ACK]  # x's message replaced by the ack
    r.handle_timer(later + RECEIPT_TIMEOUT_S + 1)
    entry = r._table.get(x.address)
    assert entry is not None and entry.failures == 0
    assert not r.stats.rejected
    # Named again (a second receipt), it sends nothing more.
    r.receive_datagram(forge_frame(x, r, late, later + 3), x_end, later + 3)
    assert [f for f in frames_sent(wire, r, x, later + 3) if f.WhichOneof("body") == "ack"] == []


def _acked_before_xs_receipt(
    config: NodeConfig,
) -> tuple[Wire, tuple[Node, Node, Node, Node], Entry, Entry, float]:
    """a's message reaches relay r (made with ``config``), r sends a replica to x, and b's
    ack reaches r before x's receipt: returns the wire, (a, r, b, x), r's message entry
    (replaced), r's ack entry and when the ack came."""
    wire = Wire()
    a, r, b, x = wire.add(1), wire.add(2, config), wire.add(3), wire.add(4)
    for node in (a, b, x):
        wire.connect(node, r)
    wire.settle(T0)
    a.send_text(b.identity.public, "x is owed the ack", T0 + 1)
    a.datagrams_to_send()
    (own,) = stored_messages(a)
    handed = forge_frame(a, r, pb.Frame(message=message_of(own)), T0 + 1)
    r.receive_datagram(handed, wire.endpoint(a), T0 + 1)
    r.datagrams_to_send()
    (message,) = stored_messages(r)
    now = T0 + 1.01
    r._send_item(message, x.identity.key, wire.endpoint(x), now)
    ack = sign_ack(b.identity, message.item_id, message.expires_ms)
    r.receive_datagram(forge_frame(b, r, pb.Frame(ack=ack), now), wire.endpoint(b), now)
    r.datagrams_to_send()
    (held,) = [e for e in r._store if e.kind is Kind.ACK]
    return wire, (a, r, b, x), message, held, now


def test_a_late_receipt_from_a_peer_that_holds_the_ack_already_sends_nothing() -> None:
    wire, (a, r, _, x), message, held, now = _acked_before_xs_receipt(NodeConfig())
    held.holders |= {x.address, a.address}  # both handed r their copy of the ack meanwhile
    held.settled = True
    late = pb.Frame(receipt=pb.Receipt(ids=[message.key]))
    later = now + RECEIPT_DELAY_S
    r.receive_datagram(forge_frame(x, r, late, later), wire.endpoint(x), later)
    assert [f.WhichOneof("body") for f in frames_sent(wire, r, x, later)] == []
    assert held.settled and r._receipt_waits.item_sent(x.address, message.key) is None


def test_a_wake_up_for_receipts_alone_runs_no_upkeep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most wake-ups of a node taking items are for its receipts: when nothing else is
    due, ``handle_timer`` sends them and returns before the upkeep (which would find
    nothing to do)."""
    wire, relay, (sender,) = _rig()
    upkeep: list[float] = []
    monkeypatch.setattr(relay, "_expire_queries", upkeep.append)
    start = relay.get_timer() - 0.01 - RECEIPT_DELAY_S  # the receipts due just before it
    _warm(wire, relay, [sender], start)
    _hand(wire, sender, relay, start)
    assert relay.get_timer() == start + RECEIPT_DELAY_S
    relay.handle_timer(start + RECEIPT_DELAY_S)
    assert relay.stats.sent_by_kind["receipt"] >= 1 and upkeep == []
    relay.handle_timer(relay.get_timer())  # the upkeep's own deadline: it runs
    assert len(upkeep) == 1


def test_a_quiet_pairs_receipt_leaves_with_the_pump_and_arms_no_timer() -> None:
    """A pair sent fewer than two Receipts in the last RECEIPT_DELAY_S gets its ids at the
    end of the pump (``datagrams_to_send``), one Receipt for all it handed in that pump:
    at light traffic (an item, or a message and its ack's way back) a delay would gather
    nothing and cost a wake-up (TCP's quick-ack). The third within 25 ms waits."""
    wire, relay, (sender,) = _rig()
    to, now = wire.endpoint(sender), T0 + 1
    keys = [_hand(wire, sender, relay, now) for _ in range(2)]
    assert relay.stats.sent_by_kind["receipt"] == 0  # not before the pump ends
    assert relay.get_timer() > now + RECEIPT_DELAY_S  # no wake-up for it
    assert _receipts(relay, sender, now, to) == [keys]
    second = now + 0.005
    key = _hand(wire, sender, relay, second)
    assert _receipts(relay, sender, second, to) == [[key]]  # one sent in 25 ms: still quiet
    # Two sent in the last 25 ms: the pair is busy, its next id waits the delay.
    busy = now + 0.01
    key = _hand(wire, sender, relay, busy)
    assert _receipts(relay, sender, busy, to) == []
    assert relay.get_timer() == busy + RECEIPT_DELAY_S
    relay.handle_timer(busy + RECEIPT_DELAY_S)
    assert _receipts(relay, sender, busy + RECEIPT_DELAY_S, to) == [[key]]
    # Busy while the one before the last is under 25 ms old: 1 ms after, quiet again.
    quiet = second + RECEIPT_DELAY_S + 0.001
    key = _hand(wire, sender, relay, quiet)
    assert _receipts(relay, sender, quiet, to) == [[key]]


def test_the_busy_pairs_remembered_are_bounded() -> None:
    """When each pair was sent its last two Receipts is kept for at most RECEIPT_PAIRS_MAX
    pairs and at most RECEIPT_DELAY_S after the last: keys are free, and a forgotten pair
    is only quiet (its receipt goes early, which is always allowed)."""
    owed = ReceiptsOwed(T0)
    key = Identity.from_seed(b"\x08" * 32).key
    endpoints = [(f"10.9.{i // 250}.{i % 250 + 1}", 4000) for i in range(RECEIPT_PAIRS_MAX + 1)]
    for round_ in range(2):  # two Receipts each, in two pumps: all busy
        for i, endpoint in enumerate(endpoints[:-1]):
            assert not owed.owe(key, endpoint, bytes([i % 256, i // 256, round_]) * 16, T0)
        assert len(owed.take_quick()[1]) == RECEIPT_PAIRS_MAX
    assert owed.remembered() == RECEIPT_PAIRS_MAX
    owed.owe(key, endpoints[-1], b"one more" * 4, T0)  # a new pair: quiet
    assert [r.endpoint for r in owed.take_quick()[1]] == [endpoints[-1]]
    assert owed.remembered() == RECEIPT_PAIRS_MAX
    owed.owe(key, endpoints[0], b"first" * 8, T0)  # the oldest was forgotten: quiet
    assert [r.endpoint for r in owed.take_quick()[1]] == [endpoints[0]]
    later = T0 + RECEIPT_DELAY_S - 0.001
    assert not owed.owe(key, endpoints[2], b"again" * 8, later)  # still busy: it waits
    assert owed.take_quick()[1] == []
    assert owed.deadline == later + RECEIPT_DELAY_S
    (receipt,) = owed.take_due(later + RECEIPT_DELAY_S)
    assert receipt == (key, endpoints[2], {b"again" * 8: None})
    assert owed.remembered() == 1  # the rest had passed RECEIPT_DELAY_S since their last


def test_a_late_receipt_reopens_a_settled_ack_for_that_peer_at_its_backoff() -> None:
    """Every holder r knew of had the ack (it settled, and left the retry schedule) when a
    late receipt names the message: x is sent the ack at once, with no attempt counted,
    and the ack is scheduled again at its backoff so it retries to x until x holds it
    (docs/PROTOCOL.md, "7.3 Acks")."""
    # r's retries come sooner than x's receipt wait (2 s) ends: the ack settles inside it.
    wire, (a, r, _, x), message, held, _ = _acked_before_xs_receipt(NodeConfig(backoff_base_s=0.5))
    held.holders.add(a.address)  # a handed r its copy of the ack meanwhile
    held.settled = True
    r.handle_timer(held.next_at)  # its retry comes and goes: settled, it left the schedule
    r.datagrams_to_send()
    assert all(key != held.key for _, key in r._schedule)
    attempts = held.attempts
    late = pb.Frame(receipt=pb.Receipt(ids=[message.key]))
    later = held.next_at + 0.01  # x's receipt wait is still open
    r.receive_datagram(forge_frame(x, r, late, later), wire.endpoint(x), later)
    assert [f.WhichOneof("body") for f in frames_sent(wire, r, x, later)] == ["ack"]
    assert not held.settled and held.attempts == attempts
    assert later < held.next_at <= later + r.config.backoff_max_s
    assert (held.next_at, held.key) in r._schedule


def test_a_pair_owed_after_the_clock_went_back_sets_the_timer_even_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy pair first owed after the clock went back has the earliest deadline, and the
    timer is its deadline, also when its coming sent the oldest pair's Receipt at once
    (past RECEIPT_PAIRS_MAX): else its Receipt waited as long as the clock had gone back,
    past the 25 ms of docs/PROTOCOL.md, "4. Frames"."""
    owed = ReceiptsOwed(T0)
    monkeypatch.setattr(owed, "_busy", lambda pair, now: True)
    key = Identity.from_seed(b"\x08" * 32).key
    endpoints = [(f"10.9.{i // 250}.{i % 250 + 1}", 4000) for i in range(RECEIPT_PAIRS_MAX + 1)]
    for i, endpoint in enumerate(endpoints[:-1]):
        assert not owed.owe(key, endpoint, bytes([i % 256, i // 256]) * 16, T0)
    assert owed.deadline == T0 + RECEIPT_DELAY_S
    back = T0 - 1
    (oldest,) = owed.owe(key, endpoints[-1], b"late" * 8, back)
    assert oldest.endpoint == endpoints[0]
    assert owed.deadline == back + RECEIPT_DELAY_S
    sent = owed.take_due(back + RECEIPT_DELAY_S)
    assert endpoints[-1] in [receipt.endpoint for receipt in sent]
