"""The relay path's cheaper primitives give the bytes and refusals of the reference ones
(issue 11, "the relay path", third session; bench/RESULTS.md).

- ``LinkKey`` calls libsodium's secret box through PyNaCl's cffi module directly: the
  same bytes as ``nacl.bindings``, and every box that is not authentic, or too short to
  hold a nonce and a MAC, refused;
- the store key of each kind;
- receipts: every receipt a node owes a quiet peer in one pump, or a busy one within
  ``RECEIPT_DELAY_S`` of the first, leaves as one Receipt, in the order the items came,
  each item named once, split where the ids pass ``RECEIPT_IDS_BYTES`` (docs/PROTOCOL.md,
  "4. Frames") (tests/test_receipt_delay.py holds the timer and the quiet rule);
- ``RoutingTable.closest`` walks the buckets nearest first, equal to a full sort.
"""

from __future__ import annotations

import os
import random

import pytest
from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
from nacl.exceptions import CryptoError

from comm_tui.crypto.identity import Identity, LinkKey
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import CLIENT_FLAG, MAX_DATAGRAM_BYTES, Codec, receipt_frame
from comm_tui.protocol.node import (
    EXPIRY_UNIT_MS,
    FETCH_ITEMS_MAX,
    RECEIPT_DELAY_S,
    RECEIPT_IDS_BYTES,
    SEALED_BYTES,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import Kind, entry_key
from comm_tui.protocol.routing import ADDRESS_BITS, Endpoint, RoutingTable
from tests.test_routing import KEY as PEER_KEY
from tests.test_routing import OWN, address_with_cpl, brute_force_closest, unique_endpoint
from tests.wire import T0, Wire

KEY = bytes(range(32))
NONCE = bytes(range(100, 124))


@pytest.mark.parametrize("size", [0, 1, 35, 1000, 1160])
def test_a_link_box_is_the_box_pynacl_writes_and_opens(size: int) -> None:
    plaintext = os.urandom(size)
    boxed = LinkKey(KEY).encrypt(plaintext, NONCE)
    assert boxed == NONCE + crypto_secretbox_easy(plaintext, NONCE, KEY)
    assert LinkKey(KEY).decrypt(boxed) == plaintext
    assert crypto_secretbox_open_easy(boxed[24:], boxed[:24], KEY) == plaintext


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_a_link_box_changed_anywhere_is_refused(size: int) -> None:
    boxed = LinkKey(KEY).encrypt(os.urandom(size), NONCE)
    for position in {0, 23, 24, 39, 40, len(boxed) - 1}:
        if position >= len(boxed):
            continue
        tampered = bytearray(boxed)
        tampered[position] ^= 1
        with pytest.raises(CryptoError):
            LinkKey(KEY).decrypt(bytes(tampered))
    with pytest.raises(CryptoError):
        LinkKey(bytes(32)).decrypt(boxed)  # another key
    with pytest.raises(CryptoError):
        LinkKey(KEY).decrypt(boxed + b"\x00")  # longer


@pytest.mark.parametrize("length", [0, 1, 24, 39])
def test_a_link_box_too_short_for_nonce_and_mac_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        LinkKey(KEY).decrypt(bytes(length))


def test_a_link_box_needs_a_whole_key_and_nonce() -> None:
    with pytest.raises(ValueError):
        LinkKey(bytes(31))
    with pytest.raises(ValueError):
        LinkKey(KEY).encrypt(b"x", NONCE[:23])


def test_store_keys_start_with_the_kind() -> None:
    assert entry_key(Kind.MESSAGE, b"i") == b"\x01i"
    assert entry_key(Kind.ACK, b"i") == b"\x02i"
    assert entry_key(Kind.RECORD, b"i") == b"\x03i"


# ---------------------------------------------------------------- receipts, one per peer per delay


def _message_frame(recipient: bytes, expires_ms: int) -> pb.Frame:
    sealed = os.urandom(SEALED_BYTES)
    return pb.Frame(message=pb.Message(recipient=recipient, expires_ms=expires_ms, sealed=sealed))


def _expiry(now: float) -> int:
    return (int(now * 1000) // EXPIRY_UNIT_MS + 24) * EXPIRY_UNIT_MS


def _rig(peers: int = 1) -> tuple[Wire, Node, list[Node]]:
    wire = Wire()
    relay = wire.add(1, NodeConfig(store_rate_per_s=1e9, store_burst=1e9))
    senders = [wire.add(10 + i) for i in range(peers)]
    for sender in senders:
        wire.connect(sender, relay)
    relay.datagrams_to_send()
    return wire, relay, senders


def _pump(
    wire: Wire, relay: Node, handed: list[tuple[Node, pb.Frame]], now: float = T0
) -> tuple[list[bytes], dict[Endpoint, list[list[bytes]]]]:
    """The senders hand ``relay`` these frames in one pump (every datagram read before
    it sends), then its timer runs when a busy pair's receipts would be due; returns the
    datagrams of both and, by sender endpoint, the ids of each Receipt."""
    for sender, frame in handed:
        data = Codec(sender.identity).encode_frame(relay.identity.key, frame, now)
        relay.receive_datagram(data, wire.endpoint(sender), now)
    sent = relay.datagrams_to_send()
    relay.handle_timer(now + RECEIPT_DELAY_S)
    sent += relay.datagrams_to_send()
    receipts: dict[Endpoint, list[list[bytes]]] = {}
    for sender in {s for s, _ in handed}:
        source = wire.endpoint(sender)
        for data, dest in sent:
            if dest != source:
                continue
            got = Codec(sender.identity).decode(data, now).frame
            assert got is not None
            if got.WhichOneof("body") == "receipt":
                receipts.setdefault(source, []).append(list(got.receipt.ids))
    return [data for data, _ in sent], receipts


def _stored_key(frame: pb.Frame) -> bytes:
    msg = frame.message
    return entry_key(Kind.MESSAGE, message_id(msg.recipient, msg.expires_ms, msg.sealed))


def test_the_receipts_one_peer_is_owed_in_a_pump_go_as_one_receipt_in_order() -> None:
    wire, relay, (sender,) = _rig()
    frames = [_message_frame(os.urandom(20), _expiry(T0)) for _ in range(3)]
    _, receipts = _pump(wire, relay, [(sender, f) for f in frames])
    assert receipts == {wire.endpoint(sender): [[_stored_key(f) for f in frames]]}
    assert relay.stats.sent_by_kind["receipt"] == 1


def test_items_further_apart_than_the_delay_are_receipted_one_each() -> None:
    wire, relay, (sender,) = _rig()
    for step in range(3):
        frame = _message_frame(os.urandom(20), _expiry(T0))
        _, receipts = _pump(wire, relay, [(sender, frame)], T0 + step * 2 * RECEIPT_DELAY_S)
        assert receipts == {wire.endpoint(sender): [[_stored_key(frame)]]}


def test_each_peer_gets_its_own_receipt_naming_only_its_items() -> None:
    wire, relay, senders = _rig(3)
    handed = [(s, _message_frame(os.urandom(20), _expiry(T0))) for s in senders for _ in range(2)]
    _, receipts = _pump(wire, relay, handed)
    for sender in senders:
        mine = [_stored_key(f) for s, f in handed if s is sender]
        assert receipts[wire.endpoint(sender)] == [mine]


def test_an_item_handed_twice_in_a_pump_is_named_once() -> None:
    wire, relay, (sender,) = _rig()
    frame = _message_frame(os.urandom(20), _expiry(T0))
    again = pb.Frame()
    again.CopyFrom(frame)  # a second copy (another nonce): a duplicate, receipted again
    _, receipts = _pump(wire, relay, [(sender, frame), (sender, again)])
    assert receipts == {wire.endpoint(sender): [[_stored_key(frame)]]}
    assert relay.stats.duplicates == 1


def test_a_receipt_is_split_where_its_ids_pass_the_limit_and_never_outgrows_its_items() -> None:
    wire, relay, (sender,) = _rig()
    per_receipt = RECEIPT_IDS_BYTES // (2 + 33)  # message store keys are 33 bytes
    frames = [_message_frame(os.urandom(20), _expiry(T0)) for _ in range(2 * per_receipt + 3)]
    handed = sum(
        len(Codec(sender.identity).encode_frame(relay.identity.key, f, T0)) for f in frames
    )
    sent, receipts = _pump(wire, relay, [(sender, f) for f in frames])
    batches = receipts[wire.endpoint(sender)]
    assert [len(b) for b in batches] == [per_receipt, per_receipt, 3]
    assert [k for b in batches for k in b] == [_stored_key(f) for f in frames]
    assert all(len(data) <= MAX_DATAGRAM_BYTES for data in sent)
    assert 0 < relay.stats.bytes_out < handed / 10  # the answer is far smaller than the items


def _owe_all(relay: Node, key: bytes, endpoint: Endpoint, ids: list[bytes], now: float) -> None:
    """Owe ``key`` at ``endpoint`` a receipt for each of ``ids``, in order, at ``now``."""
    for item in ids:
        relay._owe_receipt(key, endpoint, item, now)


def test_ids_that_fill_the_limit_exactly_go_as_one_receipt() -> None:
    wire, relay, (sender,) = _rig()
    key, endpoint = sender.identity.key, wire.endpoint(sender)
    per = RECEIPT_IDS_BYTES // 50

    def ids(tag: int) -> list[bytes]:  # 50 bytes each in a Receipt: per of them fill it
        return [bytes([i, tag]) * 24 for i in range(per)]

    _owe_all(relay, key, endpoint, [*ids(0), ids(0)[0]], T0)  # one named twice
    assert relay.stats.sent_by_kind["receipt"] == 0  # a quiet pair's: at the pump's end
    assert len(relay.datagrams_to_send()) == 1 and relay.stats.sent_by_kind["receipt"] == 1
    _owe_all(relay, key, endpoint, [b"w" * 48], T0)
    assert len(relay.datagrams_to_send()) == 1  # still quiet: one sent in 25 ms
    busy = T0 + RECEIPT_DELAY_S / 2  # two sent 12.5 ms ago: its ids gather
    _owe_all(relay, key, endpoint, [*ids(1), b"x" * 48], busy)
    assert relay.stats.sent_by_kind["receipt"] == 3  # one byte over: the full one at once
    assert len(relay.datagrams_to_send()) == 1
    assert relay.get_timer() == busy + RECEIPT_DELAY_S  # the id over waits the delay
    relay.handle_timer(busy + RECEIPT_DELAY_S)
    assert len(relay.datagrams_to_send()) == 1
    quiet = T0 + 1
    _owe_all(relay, key, endpoint, [*ids(2), b"y" * 48], quiet)
    assert relay.stats.sent_by_kind["receipt"] == 5  # quiet too: the full one at once
    assert len(relay.datagrams_to_send()) == 2  # and the id over at the pump's end
    assert relay.get_timer() > quiet + RECEIPT_DELAY_S


def test_the_largest_receipt_with_a_cookie_and_the_client_flag_fits_a_datagram() -> None:
    ids = [os.urandom(53) for _ in range(RECEIPT_IDS_BYTES // 55)]  # ack keys, the longest
    frame = receipt_frame(ids) + CLIENT_FLAG
    data = Codec(Identity.generate()).seal(Identity.generate().key, frame, T0, cookie=b"c" * 16)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert RECEIPT_IDS_BYTES // 2 <= FETCH_ITEMS_MAX  # never more ids than a Receipt may hold


# ---------------------------------------------------------------- closest, bucket by bucket


@pytest.mark.parametrize("seed", range(4))
def test_closest_walks_the_buckets_to_exactly_the_full_sort_at_every_depth(seed: int) -> None:
    """Targets sharing 0 to 159 bits with us, a table split deep, some nodes bad and some
    excluded: the buckets visited nearest first give what sorting the table gives."""
    rng = random.Random(seed)
    table = RoutingTable(OWN, k=4)
    i = 0
    for depth in range(0, ADDRESS_BITS, 3):  # nodes at many depths: the table splits deep
        for _ in range(rng.randrange(1, 7)):
            table.observe(PEER_KEY, address_with_cpl(OWN, depth, rng), unique_endpoint(i), float(i))
            i += 1
    for entry in list(table._entries.values())[::5]:
        entry.failures = table.max_failures  # bad: never among the closest
    for shared in range(ADDRESS_BITS):
        target = address_with_cpl(OWN, shared, rng)
        excluded = {e.address for e in table.closest(target, 2)}
        for count in (1, 4, 8, 1000):
            got = [e.address for e in table.closest(target, count, exclude=excluded)]
            want = [a for a in brute_force_closest(table, target, 1000) if a not in excluded]
            assert got == want[:count]
    assert [e.address for e in table.closest(OWN, 8)] == brute_force_closest(table, OWN, 8)
