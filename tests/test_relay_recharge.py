"""Items a pair handed us before it was validated are re-charged to its network of
origin once it is (docs/PROTOCOL.md, "8. Relay store" and "8.1 Local caps",
"Deferred items, fairly per network"): in the store's quotas and eviction, on disk, and
in the relay bandwidth's lines (h-red4 finding 1; the attack itself is replayed by
``tests/test_attacks_red4.py``).
"""

from __future__ import annotations

import pytest

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.punch import _Attempt
from comm_tui.protocol.relay_store import (
    UNVALIDATED_ORIGIN,
    Entry,
    Kind,
    RelayBandwidth,
    RelayStore,
)
from comm_tui.protocol.routing import Endpoint, origin_network
from tests.test_directory import _published_record
from tests.test_relay_caps import _hour_after, _message_for
from tests.test_relay_fair import _item, _relay_with_peers, _spent, _taken
from tests.test_relay_store import NOW, OWN
from tests.wire import T0

KEY = b"K" * 32
OTHER_KEY = b"k" * 32
HERE: Endpoint = ("203.0.113.7", 4000)
NET = origin_network(HERE)


def _from(n: int, key: bytes = KEY, endpoint: Endpoint = HERE, sealed: int = 1000) -> Entry:
    """An item for others handed to us by the unvalidated pair (``key``, ``endpoint``)."""
    entry = _item(n, UNVALIDATED_ORIGIN, sealed)
    entry.origin_key, entry.origin_endpoint = key, endpoint
    return entry


def _nets(store: RelayStore, *entries: Entry) -> list[str]:
    return [store.by_key(e.key).origin_net for e in entries]  # type: ignore[union-attr]


# ------------------------------------------------------------------ the store


def test_recharge_moves_the_pairs_items_to_its_network() -> None:
    store = RelayStore(OWN)
    mine = [_from(1), _from(2)]
    others = [_from(3, key=OTHER_KEY), _from(4, endpoint=("203.0.113.8", 4000))]
    for entry in mine + others:
        store.add(entry)
    size = mine[0].size
    assert store._net_bytes[UNVALIDATED_ORIGIN] == 4 * size

    assert store.recharge(KEY, HERE, NET) == mine
    assert _nets(store, *mine) == [NET, NET]
    assert _nets(store, *others) == [UNVALIDATED_ORIGIN] * 2  # another key, another port
    assert store._net_bytes[NET] == 2 * size
    assert store._net_bytes[UNVALIDATED_ORIGIN] == 2 * size
    assert list(store._by_net[NET]) == [e.key for e in mine]
    assert (KEY, HERE) not in store._unvalidated
    assert store.recharge(KEY, HERE, NET) == []  # once
    # The per-peer bytes and the caps' totals do not change: the same items, held.
    assert store.others_bytes == 4 * size and store.others_items == 4


def test_the_index_holds_only_unvalidated_entries_the_store_holds() -> None:
    """Added, replaced and removed entries keep the pair index exact, and it holds no
    empty pair: a validation costs that pair's items, and the index is bounded by them."""
    store = RelayStore(OWN)
    first, second = _from(1), _from(2)
    validated = _item(3, NET)
    validated.origin_key, validated.origin_endpoint = KEY, HERE
    own = _from(4)
    own.origin, own.origin_net = b"", ""  # not for others: charged to no network
    for entry in (first, second, validated, own):
        store.add(entry, enforce_quota=False)
    assert dict(store._unvalidated) == {(KEY, HERE): {first.key: None, second.key: None}}
    store.add(_from(1))  # a replacement of the same item
    assert list(store._unvalidated[(KEY, HERE)]) == [second.key, first.key]
    store.remove(second)
    store.remove(store.by_key(first.key))  # type: ignore[arg-type]
    assert dict(store._unvalidated) == {}
    assert store.recharge(KEY, HERE, NET) == []
    assert store.by_key(validated.key).origin_net == NET  # type: ignore[union-attr]


def test_an_ack_replacing_a_message_stays_indexed_under_its_pair() -> None:
    """An ack takes its message's origin (node.py ``_on_ack``), so a validation of the
    pair that handed us the message re-charges the ack."""
    store = RelayStore(OWN)
    message = _from(1)
    store.add(message)
    recipient = Identity.from_seed(bytes(32))
    ack = sign_ack(recipient, message.item_id, message.expires_ms)
    replacing = Entry(
        Kind.ACK,
        ack.message_id + recipient.address,
        recipient.address,
        ack.expires_ms,
        ack,
        stored_at=NOW,
        origin=message.origin,
        origin_net=message.origin_net,
        origin_key=message.origin_key,
        origin_endpoint=message.origin_endpoint,
    )
    store.remove(message)
    store.add(replacing, enforce_quota=False)
    assert store.recharge(KEY, HERE, NET) == [replacing]
    assert replacing.origin_net == NET


def test_the_network_quota_holds_on_a_recharge() -> None:
    """An item that would take its network past its share stays in ``unvalidated``, and
    so does every item after it (a validation costs the items moved and one more); one
    that fits exactly moves. A later validation, once there is room, moves the rest."""
    probe = _from(0)
    size = probe.size
    store = RelayStore(OWN, total_bytes=100 * size, per_net_share=3 * size / (100 * size))
    assert store.per_net_limit == 3 * size
    store.add(_item(10, NET))  # the network already holds one item
    big = _from(1, sealed=3000)  # over the 2 items' room left
    small, fits = _from(2), _from(3)
    for entry in (small, fits):
        store.add(entry, enforce_quota=False)  # past unvalidated's own share here
    assert store.recharge(KEY, HERE, NET) == [small, fits]  # exactly the limit
    assert store._net_bytes[NET] == 3 * size

    store2 = RelayStore(OWN, total_bytes=100 * size, per_net_share=3 * size / (100 * size))
    store2.add(_item(10, NET))
    later = _from(2)
    store2.add(big, enforce_quota=False)
    store2.add(later, enforce_quota=False)
    assert store2.recharge(KEY, HERE, NET) == []  # the first does not fit: none moves
    assert _nets(store2, big, later) == [UNVALIDATED_ORIGIN] * 2
    assert list(store2._unvalidated[(KEY, HERE)]) == [big.key, later.key]
    store2.remove(store2.by_key(_item(10, NET).key))  # type: ignore[arg-type]
    assert store2.recharge(KEY, HERE, NET) == [big]  # now it fits, the next does not
    assert _nets(store2, big, later) == [NET, UNVALIDATED_ORIGIN]


def test_a_recharged_item_is_no_longer_evicted_first() -> None:
    """A full store evicts from ``unvalidated`` first: a re-charged item is spared, a
    forged source's is not."""
    size = _from(0).size
    store = RelayStore(OWN, total_bytes=3 * size, per_net_share=1.0)
    honest = _from(1)
    forged = _from(2, key=OTHER_KEY, endpoint=("198.18.100.1", 7000))
    store.add(honest)
    store.add(forged)
    store.recharge(KEY, HERE, NET)
    store.add(_item(3, "192.0.2.0/24"))
    store.add(_item(4, "198.51.100.0/24"))  # over the cap: one item must go
    assert store.by_key(forged.key) is None
    assert store.by_key(honest.key) is honest


def test_a_recharge_is_written_and_read_back() -> None:
    """The new network is persisted like any entry change (not as bookkeeping, which is
    not written for items held for others), so a restart charges it there."""
    store = RelayStore(OWN)
    entry = _from(1)
    store.add(entry)
    store.take_changes()
    store.recharge(KEY, HERE, NET)
    put, _, bookkeeping, for_others = store.take_changes()
    assert bookkeeping == frozenset()  # written, not bookkeeping
    blob, _ = put[entry.key]
    assert for_others == {entry.key}
    restored = Entry.deserialize(blob)
    assert restored.origin_net == NET
    again = RelayStore(OWN)
    again.add(restored, enforce_quota=False)
    assert again._net_bytes == {NET: entry.size}
    assert dict(again._unvalidated) == {}


# ------------------------------------------------------------------ the lines


def test_a_waiting_item_moves_to_the_end_of_its_networks_line() -> None:
    budget = RelayBandwidth(1000, NOW)
    _spent(budget)
    forged = [_item(n, UNVALIDATED_ORIGIN) for n in (1, 2)]
    honest = _from(3)
    ahead = _item(4, NET)
    for entry in (*forged, honest, ahead):
        budget.defer(NOW, entry)
    assert budget.networks_waiting() == 2 and budget.waiting == 4
    honest.origin_net = NET
    budget.recharged(honest, UNVALIDATED_ORIGIN)
    assert budget.waiting == 4
    assert list(budget._lines[NET].items) == [ahead.key, honest.key]  # at the end
    assert list(budget._lines[UNVALIDATED_ORIGIN].items) == [e.key for e in forged]
    budget.recharged(honest, UNVALIDATED_ORIGIN)  # not in that line (any more): nothing
    assert budget.waiting == 4
    later = NOW + 100
    assert sorted(_taken(budget, later)) == sorted(
        [f"{UNVALIDATED_ORIGIN}:1", f"{UNVALIDATED_ORIGIN}:2", f"{NET}:4", f"{NET}:3"]
    )
    assert budget.waiting == 0 and budget.networks_waiting() == 0


def test_a_line_emptied_by_a_move_leaves_and_a_new_one_joins_the_turns() -> None:
    """The item was all its line held: the ``unvalidated`` line and its wide network
    leave the turns, and the network's new line joins them (alone: its turn is on)."""
    budget = RelayBandwidth(1000, NOW)
    _spent(budget)
    honest = _from(1)
    budget.defer(NOW, honest)
    honest.origin_net = NET
    budget.recharged(honest, UNVALIDATED_ORIGIN)
    assert budget.networks_waiting() == 1 and budget.wide_networks_waiting() == 1
    assert UNVALIDATED_ORIGIN not in budget._lines and UNVALIDATED_ORIGIN not in budget._wide
    assert budget.take(NOW + 100) is honest
    budget.forget(honest)  # the store lets go of it later: nothing left to forget
    assert budget.waiting == 0


def test_an_item_not_waiting_is_not_put_in_a_line() -> None:
    budget = RelayBandwidth(1000, NOW)
    _spent(budget)
    honest = _from(1)
    honest.origin_net = NET
    budget.recharged(honest, UNVALIDATED_ORIGIN)
    assert budget.waiting == 0 and budget.networks_waiting() == 0


# ------------------------------------------------------------------ the node


@pytest.mark.parametrize("item", ["message", "record"])
@pytest.mark.parametrize("validated_by", ["challenge", "ping", "hello", "nodes", "punch"])
def test_a_validation_recharges_and_persists_the_item(validated_by: str, item: str) -> None:
    """The node end to end: an item from a pair the relay has not validated is charged
    to ``unvalidated``; once the pair is validated, by whichever round trip, the item is
    charged to the pair's network, on disk too (the driver's write of ``StoreChanged``).
    ``challenge``: the stateless ping its datagram draws comes back; ``ping``: a ping of
    a remembered peer (``add_known_peer``) does; ``hello``: a bootstrap hello does (the
    relay's own answers to the item are lost, so only that round trip validates);
    ``nodes``: the stranger's answer to a lookup's FindNode does (a peer named it);
    ``punch``: its pong to a hole-punching ping does (the attempt is set up by hand: an
    introduction needs NATs the harness does not have). ``item``: a message for others,
    or a prekey record pushed for storage (docs/PROTOCOL.md, "8a.3")."""
    wire, relay, peers = _relay_with_peers()
    stranger = wire.add(77)
    if validated_by == "nodes":
        wire.offline.add(wire.endpoint(relay))  # the relay hears nothing of it
        wire.connect(stranger, peers[0])
        wire.offline.clear()
    source = wire.endpoint(stranger)
    if item == "message":
        target = bytes(range(20))
        frame = _message_for(target, _hour_after(T0, 24))
    else:
        owner = Identity.from_seed(b"\x02" * 32)
        target = owner.address
        frame = pb.Frame(record=pb.Record(bundle=_published_record(owner, T0).wire))
    relay.receive_datagram(stranger._codec.encode_frame(relay.identity.key, frame, T0), source, T0)
    (entry,) = [e for e in relay._store if e.target == target]
    assert entry.origin_net == UNVALIDATED_ORIGIN
    if validated_by != "challenge":
        relay.datagrams_to_send()
        relay.receipts_to_send()
        wire.pump(T0)
        assert not relay._is_validated(stranger.identity.key, source)
        if validated_by == "ping":
            relay.add_known_peer(stranger.identity.key, source, T0)
        elif validated_by == "hello":
            relay.bootstrap(source, T0)
        elif validated_by == "nodes":
            relay.lookup(stranger.address, T0)
        else:
            challenge = bytes(range(16))
            attempt = _Attempt(stranger.identity.key, T0, 1, {source: challenge})
            relay._punch.attempts[stranger.address] = attempt
            pong = pb.Frame(pong=pb.Pong(challenge=challenge))
            data = stranger._codec.encode_frame(relay.identity.key, pong, T0)
            relay.receive_datagram(data, source, T0)
            assert stranger.address in relay._punch.pairs  # punched by that pong
    wire.pump(T0)
    assert relay._is_validated(stranger.identity.key, source)
    assert entry.origin_net == origin_network(source)
    assert relay._store._net_bytes.get(UNVALIDATED_ORIGIN, 0) == 0
    blob = wire.persisted[wire.endpoint(relay)][entry.key]
    assert Entry.deserialize(blob).origin_net == origin_network(source)
