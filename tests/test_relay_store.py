"""Tests for the relay store: quotas that refuse (never evict), expiry, change
tracking, and the serialize/deserialize round trip of persisted entries.
"""

from __future__ import annotations

import contextlib

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity, address_of
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.relay_store import (
    BANDWIDTH_WAKE_MARGIN_S,
    ENTRY_OVERHEAD_BYTES,
    UNVALIDATED_ORIGIN,
    Entry,
    Kind,
    QuotaExceeded,
    RelayBandwidth,
    RelayStore,
    entry_key,
)

NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)
SEALED = 1000
# Our own address: the store evicts farthest from it first.
OWN = bytes(20)


def message_entry(
    n: int,
    *,
    target: bytes = b"T" * 20,
    origin: bytes = b"",
    expires_ms: int = NOW_MS + 60_000,
    net: str = "",
) -> Entry:
    sealed = n.to_bytes(4, "big") * (SEALED // 4)
    msg = pb.Message(recipient=target, expires_ms=expires_ms, sealed=sealed)
    return Entry(
        Kind.MESSAGE,
        message_id(target, expires_ms, sealed),
        target,
        expires_ms,
        msg,
        stored_at=NOW,
        holders={origin} if origin else set(),
        origin=origin,
        origin_net=net,
    )


ENTRY_SIZE = message_entry(0).size


def ack_entry(recipient: Identity, mid: bytes) -> Entry:
    ack = sign_ack(recipient, mid, NOW_MS + 60_000)
    return Entry(
        Kind.ACK, mid + recipient.address, recipient.address, ack.expires_ms, ack, stored_at=NOW
    )


def test_entry_size_counts_bookkeeping() -> None:
    assert ENTRY_SIZE > SEALED + ENTRY_OVERHEAD_BYTES


def test_add_get_remove_and_target_index() -> None:
    store = RelayStore(OWN)
    a, b = message_entry(1), message_entry(2, target=b"U" * 20)
    store.add(a)
    store.add(b)
    assert len(store) == 2
    assert store.get(Kind.MESSAGE, a.item_id) is a
    assert store.for_target(b"T" * 20) == [a]
    assert store.total_bytes == a.size + b.size
    store.remove(a)
    store.remove(a)  # twice is harmless
    assert store.get(Kind.MESSAGE, a.item_id) is None
    assert store.for_target(b"T" * 20) == []
    assert store.total_bytes == b.size


def test_total_quota_refuses_new_items_and_keeps_old_ones() -> None:
    store = RelayStore(
        OWN, total_bytes=ENTRY_SIZE * 3, per_target_bytes=10**9, per_peer_bytes=10**9
    )
    kept = [message_entry(i, target=bytes([i]) * 20, origin=bytes([i]) * 20) for i in range(3)]
    for entry in kept:
        store.add(entry)
    with pytest.raises(QuotaExceeded) as info:
        store.add(message_entry(9, target=b"\x09" * 20, origin=b"\x09" * 20))
    assert info.value.reason == "store_full"
    assert [store.get(Kind.MESSAGE, e.item_id) for e in kept] == kept
    assert store.total_bytes <= store.total_limit


def test_per_target_quota() -> None:
    store = RelayStore(
        OWN, total_bytes=10**9, per_target_bytes=ENTRY_SIZE * 2, per_peer_bytes=10**9
    )
    store.add(message_entry(1, origin=b"a" * 20))
    store.add(message_entry(2, origin=b"b" * 20))
    with pytest.raises(QuotaExceeded) as info:
        store.add(message_entry(3, origin=b"c" * 20))
    assert info.value.reason == "target_quota"
    store.add(message_entry(4, target=b"V" * 20, origin=b"c" * 20))  # other targets still fit


def test_per_peer_quota_stops_a_flood_without_hurting_others() -> None:
    store = RelayStore(
        OWN, total_bytes=ENTRY_SIZE * 20, per_target_bytes=10**9, per_peer_bytes=ENTRY_SIZE * 5
    )
    honest = message_entry(10_000, origin=b"h" * 20)
    store.add(honest)
    refused = 0
    for i in range(1000):
        try:
            store.add(message_entry(i, target=i.to_bytes(20, "big"), origin=b"f" * 20))
        except QuotaExceeded as exc:
            assert exc.reason == "peer_quota"
            refused += 1
    assert refused == 995
    assert store.get(Kind.MESSAGE, honest.item_id) is honest
    store.add(message_entry(10_001, origin=b"g" * 20))  # another peer still gets room
    assert store.total_bytes <= store.total_limit


def test_refused_items_leave_no_bookkeeping_behind() -> None:
    """A flood of refused items to ever new targets must not grow the store's memory."""
    store = RelayStore(OWN, total_bytes=10**9, per_target_bytes=10**9, per_peer_bytes=ENTRY_SIZE)
    store.add(message_entry(0, origin=b"f" * 20))
    for i in range(1, 500):
        with pytest.raises(QuotaExceeded):
            store.add(message_entry(i, target=i.to_bytes(20, "big"), origin=b"f" * 20))
    assert len(store._target_bytes) == 1
    assert len(store._peer_bytes) == 1
    assert len(store._by_target) == 1


def test_own_items_bypass_the_quota() -> None:
    store = RelayStore(
        OWN, total_bytes=ENTRY_SIZE, per_target_bytes=ENTRY_SIZE, per_peer_bytes=10**9
    )
    store.add(message_entry(1, origin=b"x" * 20))
    with pytest.raises(QuotaExceeded):
        store.add(message_entry(2, origin=b"y" * 20))
    store.add(message_entry(3), enforce_quota=False)
    assert len(store) == 2


def test_accounting_returns_to_zero_after_removal() -> None:
    store = RelayStore(OWN)
    entries = [
        message_entry(i, target=bytes([i % 3]) * 20, origin=bytes([i % 2]) * 20) for i in range(10)
    ]
    for entry in entries:
        store.add(entry)
    store.add(entries[0])  # re-adding the same key replaces it
    assert len(store) == 10
    for entry in entries:
        store.remove(entry)
    assert store.total_bytes == 0
    assert not store._target_bytes and not store._peer_bytes and not store._by_target


def test_expiry_removes_only_what_is_due() -> None:
    store = RelayStore(OWN)
    soon = message_entry(1, expires_ms=NOW_MS + 1000)
    later = message_entry(2, expires_ms=NOW_MS + 5000)
    store.add(soon)
    store.add(later)
    assert store.expire(NOW_MS + 999) == []
    assert store.expire(NOW_MS + 1000) == [soon]
    assert len(store) == 1
    assert store.expire(NOW_MS + 10_000) == [later]
    assert store.total_bytes == 0


def test_take_changes_reports_puts_and_deletes_once() -> None:
    store = RelayStore(OWN)
    a, b = message_entry(1), message_entry(2)
    store.add(a)
    store.add(b)
    put, deleted, bookkeeping, for_others = store.take_changes()
    assert set(put) == {a.key, b.key}
    assert put[a.key] == (a.serialize(), a.expires_ms)
    assert deleted == bookkeeping == for_others == frozenset()
    assert store.take_changes() == ({}, frozenset(), frozenset(), frozenset())
    store.remove(a)
    b.attempts = 3
    store.touch(b)
    put, deleted, _, _ = store.take_changes()
    assert set(put) == {b.key}
    assert deleted == frozenset({a.key})


def test_message_entry_round_trip() -> None:
    entry = message_entry(7, origin=b"o" * 20)
    entry.attempts = 5
    entry.next_at = NOW + 31.5
    entry.holders = {b"h" * 20, b"i" * 20}
    entry.own_text_id = b"x" * 16
    entry.own_part = 3
    entry.own_parts = 4
    entry.origin_key = b"k" * 32
    entry.origin_endpoint = ("198.51.100.7", 4711)
    entry.stem = True
    back = Entry.deserialize(entry.serialize())
    # Where its ack goes back to survives a restart (docs/PROTOCOL.md, "7.3 Acks").
    assert (back.origin_key, back.origin_endpoint) == (b"k" * 32, ("198.51.100.7", 4711))
    assert back.stem
    assert back.key == entry.key
    assert back.kind is Kind.MESSAGE
    assert back.target == entry.target
    assert back.expires_ms == entry.expires_ms
    assert back.wire == entry.wire
    assert (back.attempts, back.next_at, back.holders) == (5, NOW + 31.5, entry.holders)
    assert (back.own_text_id, back.own_part, back.own_parts) == (b"x" * 16, 3, 4)
    assert back.stored_at == NOW
    assert back.size == entry.size


def test_ack_entry_round_trip_keeps_its_key() -> None:
    """A restored ack must keep the key the node stores it under (id + recipient address)."""
    recipient = Identity.from_seed(b"\x07" * 32)
    mid = message_entry(1).item_id
    entry = ack_entry(recipient, mid)
    entry.settled = True
    entry.origin_key = b"k" * 32
    entry.origin_endpoint = ("2001:db8::7", 4000)
    entry.notify = {b"n" * 20, b"m" * 20}
    back = Entry.deserialize(entry.serialize())
    assert (back.origin_key, back.origin_endpoint) == (b"k" * 32, ("2001:db8::7", 4000))
    assert back.notify == entry.notify
    assert back.kind is Kind.ACK
    assert back.key == entry.key == entry_key(Kind.ACK, mid + address_of(recipient.key))
    assert back.target == recipient.address
    assert back.settled
    assert back.wire == entry.wire


def test_acks_are_found_by_the_address_they_go_back_to() -> None:
    store = RelayStore(b"\x00" * 20)
    recipient = Identity.from_seed(b"\x07" * 32)
    entry = ack_entry(recipient, message_entry(1).item_id)
    entry.origin_key = Identity.from_seed(b"\x08" * 32).key
    store.add(entry)
    back = address_of(entry.origin_key)
    assert store.acks_back_to(back) == [entry]
    store.remove(entry)
    assert store.acks_back_to(back) == []


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xff",
        b"\xff" * 40,
        pb.StoreEntry(attempts=3).SerializeToString(),  # no item
        pb.StoreEntry(message=pb.Message(recipient=b"short")).SerializeToString(),
        pb.StoreEntry(ack=pb.Ack(message_id=b"m" * 32)).SerializeToString(),
    ],
)
def test_damaged_blobs_raise_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        Entry.deserialize(blob)


def test_truncated_and_flipped_blobs_raise_only_value_error() -> None:
    blob = message_entry(3, origin=b"o" * 20).serialize()
    for cut in range(len(blob)):
        with contextlib.suppress(ValueError):
            Entry.deserialize(blob[:cut])
    for position in range(0, len(blob), 7):
        flipped = bytearray(blob)
        flipped[position] ^= 0xFF
        with contextlib.suppress(ValueError):
            Entry.deserialize(bytes(flipped))


def test_one_network_holds_at_most_its_share() -> None:
    store = RelayStore(OWN, total_bytes=ENTRY_SIZE * 100, per_net_share=0.05)
    for i in range(5):
        store.add(message_entry(i, target=bytes([i]) * 20, net="198.18.1.0/24"))
    with pytest.raises(QuotaExceeded, match="net_quota"):
        store.add(message_entry(9, target=b"\x09" * 20, net="198.18.1.0/24"))
    store.add(message_entry(10, target=b"\x0a" * 20, net="198.18.2.0/24"))


def test_a_full_store_evicts_the_most_represented_network_farthest_target_first() -> None:
    """Issue 8, finding 5: nothing was evicted early, so a full store stayed full of junk."""
    store = RelayStore(OWN, total_bytes=ENTRY_SIZE * 6, per_target_bytes=10**9, per_net_share=0.5)
    near, far = b"\x00" * 19 + b"\x01", b"\xff" * 20  # near and far from OWN (all zero)
    store.add(message_entry(1, target=near, net="junk"))
    store.add(message_entry(2, target=far, net="junk"))
    store.add(message_entry(3, target=b"\x0f" * 20, net="junk"))
    store.add(message_entry(4, target=b"\x01" * 20, net="a"))
    store.add(message_entry(5, target=b"\x02" * 20, net="b"))
    store.add(message_entry(6, target=b"\x03" * 20, net="b"))
    honest = message_entry(7, target=b"\x04" * 20, net="c")
    store.add(honest)  # full: "junk" holds the most, and its farthest target goes
    assert store.evicted == 1
    assert store.get(Kind.MESSAGE, honest.item_id) is not None
    remaining = {e.target for e in store}
    assert far not in remaining and near in remaining
    # A newcomer network again evicts from the largest ("junk" and "b" hold 2 each).
    store.add(message_entry(8, target=b"\x05" * 20, net="d"))
    assert store.evicted == 2 and store.get(Kind.MESSAGE, honest.item_id) is not None
    # Refused only when the newcomer's own network would then be the largest.
    with pytest.raises(QuotaExceeded, match="store_full"):
        store.add(message_entry(9, target=b"\x06" * 20, net="a"))
    assert store.total_bytes <= store.total_limit


# ---------------------------------------------------------------- third mutation round
# Rules bench/MUTATION.md ("Third round (A)") found no test for.


def test_an_entry_keeps_its_network_of_origin_and_no_endpoint_stays_none() -> None:
    """A restarted relay holds what it took under the same quotas (docs/PROTOCOL.md, "8.2
    Local durability"): the network of origin survives; an entry that had no endpoint to
    send its ack back to (our own text) still has none, not ("", 0)."""
    handed = message_entry(5, origin=b"o" * 20, net="198.51.100.0/24")
    handed.first_held_at = NOW + 2.5
    back = Entry.deserialize(handed.serialize())
    assert (back.origin, back.origin_net) == (b"o" * 20, "198.51.100.0/24")
    assert back.first_held_at == NOW + 2.5 and back.for_others
    own = Entry.deserialize(message_entry(6).serialize())
    assert own.origin_endpoint is None and not own.for_others


@pytest.mark.parametrize(
    ("recipient", "sealed"),
    [(b"r" * 19, b"s" * 10), (b"r" * 21, b"s" * 10), (b"r" * 20, b"")],
    ids=["short recipient", "long recipient", "nothing sealed"],
)
def test_a_stored_message_with_a_bad_recipient_or_nothing_sealed_is_damaged(
    recipient: bytes, sealed: bytes
) -> None:
    good = pb.Message(recipient=b"r" * 20, expires_ms=NOW_MS, sealed=b"s" * 10)
    assert Entry.deserialize(pb.StoreEntry(message=good).SerializeToString()).kind is Kind.MESSAGE
    message = pb.Message(recipient=recipient, expires_ms=NOW_MS, sealed=sealed)
    with pytest.raises(ValueError):
        Entry.deserialize(pb.StoreEntry(message=message).SerializeToString())


def test_only_acks_are_found_by_the_address_they_go_back_to() -> None:
    """docs/PROTOCOL.md, "7.3 Acks": the message a peer handed us records that peer too,
    but only acks go back to it."""
    store = RelayStore(b"\x00" * 20)
    peer = Identity.from_seed(b"\x08" * 32)
    message = message_entry(1)
    message.origin_key = peer.key
    store.add(message)
    ack = ack_entry(Identity.from_seed(b"\x07" * 32), message_entry(2).item_id)
    ack.origin_key = peer.key
    store.add(ack)
    assert store.acks_back_to(peer.address) == [ack]


def test_a_full_store_evicts_items_of_unproven_origin_first() -> None:
    """docs/PROTOCOL.md, "8. Relay store": items from a pair not yet validated go first,
    even when a proven network holds more; a newcomer of unproven origin evicts from the
    largest network like any other."""
    store = RelayStore(OWN, total_bytes=ENTRY_SIZE * 4, per_target_bytes=10**9, per_net_share=1)
    for i, net in enumerate(["a", "a", UNVALIDATED_ORIGIN]):
        store.add(message_entry(i, target=bytes([i + 1]) * 20, net=net))
    store.add(message_entry(3, target=b"\x04" * 20, net="a"))  # full now: a 3, unproven 1
    store.add(message_entry(4, target=b"\x05" * 20, net="b"))
    assert store.origin_shares(3) == [("a", 3 * ENTRY_SIZE), ("b", ENTRY_SIZE)]
    store.add(message_entry(5, target=b"\x06" * 20, net=UNVALIDATED_ORIGIN))
    assert store.origin_shares(3) == [
        ("a", 2 * ENTRY_SIZE),
        ("b", ENTRY_SIZE),
        (UNVALIDATED_ORIGIN, ENTRY_SIZE),
    ]


def test_the_network_evicted_from_is_the_one_holding_the_most_bytes() -> None:
    """Not the first or last by name: "a" holds the most, "z" the least."""
    store = RelayStore(OWN, total_bytes=ENTRY_SIZE * 4, per_target_bytes=10**9, per_net_share=1)
    for i, net in enumerate(["a", "a", "a", "z"]):
        store.add(message_entry(i, target=bytes([i + 1]) * 20, net=net))
    store.add(message_entry(4, target=b"\x05" * 20, net="m"))
    assert store.origin_shares(3) == [("a", 2 * ENTRY_SIZE), ("m", ENTRY_SIZE), ("z", ENTRY_SIZE)]


# ------------------------------------------------- fifth round (h-mut5, main 1267de7)


def test_a_new_or_changed_entry_is_a_write_and_only_a_reschedule_is_bookkeeping() -> None:
    """docs/PROTOCOL.md, "8.2 Local durability": a new entry, or one touched for a real
    change, is a write that datagrams wait on; only ``touch(bookkeeping=True)`` is
    bookkeeping, and of an item held for others not persisted at all."""
    store = RelayStore(OWN)
    ours, theirs = message_entry(1), message_entry(2, origin=b"o" * 20)
    store.add(ours)
    store.add(theirs)
    put, _, bookkeeping, for_others = store.take_changes()
    assert set(put) == {ours.key, theirs.key}
    assert bookkeeping == frozenset() and for_others == {theirs.key}
    store.touch(ours)
    store.touch(theirs)
    put, _, bookkeeping, for_others = store.take_changes()
    assert set(put) == {ours.key, theirs.key}
    assert bookkeeping == frozenset() and for_others == {theirs.key}
    store.touch(ours, bookkeeping=True)
    store.touch(theirs, bookkeeping=True)
    put, _, bookkeeping, for_others = store.take_changes()
    assert set(put) == {ours.key}
    assert bookkeeping == {ours.key} and for_others == frozenset()


def test_an_entry_removed_before_its_changes_are_taken_is_only_deleted() -> None:
    store = RelayStore(OWN)
    entry = message_entry(1)
    store.add(entry)
    store.remove(entry)
    put, deleted, _, _ = store.take_changes()
    assert dict(put) == {} and deleted == {entry.key}


def test_removing_one_ack_back_to_an_address_keeps_the_others() -> None:
    store = RelayStore(OWN)
    origin = Identity.from_seed(b"\x08" * 32).key
    first, second = (
        ack_entry(Identity.from_seed(bytes([seed]) * 32), message_entry(seed).item_id)
        for seed in (1, 2)
    )
    for entry in (first, second):
        entry.origin_key = origin
        store.add(entry)
    store.remove(first)
    assert store.acks_back_to(address_of(origin)) == [second]
    store.remove(second)
    assert store.acks_back_to(address_of(origin)) == []


def test_a_relay_bandwidth_balance_spent_to_exactly_zero_defers() -> None:
    """docs/PROTOCOL.md, "8.1 Local caps": an item for others goes while the balance is
    positive; at exactly zero it waits (1 byte's time at the cap, behind none), then goes."""
    budget = RelayBandwidth(1000, NOW)
    budget.spend(int(budget.burst), NOW)
    assert budget.balance == 0 and not budget.open(NOW)
    entry = message_entry(1, origin=b"o" * 20, net="n")
    assert budget.defer(NOW, entry) is True
    wake = budget.wake_at()
    assert wake is not None
    assert wake - NOW == pytest.approx(1 / 1000 + BANDWIDTH_WAKE_MARGIN_S, abs=3e-7)
    assert budget.take(NOW) is None and budget.take(wake) is entry
