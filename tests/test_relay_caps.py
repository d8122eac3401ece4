"""The user's relay caps and relaying off (docs/PROTOCOL.md, "8.1 Local caps" and "12.3").

On the store: the items cap and the bytes cap count only what we hold for others, and an
item whose remaining life is longer than the days cap is refused. On the node, over the
wire harness: a refused item draws no receipt (so the sender's retries go elsewhere),
relaying for others waits for the bandwidth cap and is never dropped while our own texts
do not wait, and a node with relaying off sends and receives through others, stores
nothing for them and is in nobody's table.
"""

from __future__ import annotations

import os

import pytest

from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import MAX_CLOCK_SKEW_S, Codec
from comm_tui.protocol.node import (
    DAY_S,
    EXPIRY_UNIT_MS,
    RECEIPT_DELAY_S,
    SEALED_BYTES,
    Node,
    NodeConfig,
)
from comm_tui.protocol.relay_store import (
    BANDWIDTH_MIN_BURST,
    BANDWIDTH_WAKE_MARGIN_S,
    QuotaExceeded,
    RelayBandwidth,
    RelayStore,
)
from tests.natwire import NatWire
from tests.test_relay_store import ENTRY_SIZE, NOW, NOW_MS, OWN, message_entry
from tests.wire import T0, Wire, peer_addresses

HOUR_MS = 3_600_000

# ---------------------------------------------------------------- the store


def test_the_items_cap_evicts_fairly_then_refuses_by_its_own_name() -> None:
    store = RelayStore(OWN, max_items=3, per_net_share=1.0)
    for i in range(3):
        store.add(message_entry(i, target=bytes([i + 1]) * 20, origin=b"a" * 20, net="a"))
    assert store.others_items == 3
    # A newcomer network makes room in the largest one, as the bytes cap does.
    store.add(message_entry(10, target=b"\x0a" * 20, origin=b"b" * 20, net="b"))
    assert store.others_items == 3 and store.evicted == 1
    # The largest network's own newcomer has no one to evict: refused, named by the cap.
    with pytest.raises(QuotaExceeded) as refused:
        store.add(message_entry(11, target=b"\x0b" * 20, origin=b"a" * 20, net="a"))
    assert refused.value.reason == "store_cap_items"
    assert store.others_items == 3


def test_the_caps_count_only_what_we_hold_for_others() -> None:
    """Our outbox (no origin) fills neither cap; an item for others still fits."""
    store = RelayStore(OWN, total_bytes=2 * ENTRY_SIZE, max_items=2, per_net_share=1.0)
    for i in range(5):
        store.add(message_entry(i, target=bytes([i + 1]) * 20), enforce_quota=False)
    assert store.others_items == 0 and store.others_bytes == 0
    store.add(message_entry(20, target=b"\x20" * 20, origin=b"o" * 20, net="n1"))
    store.add(message_entry(21, target=b"\x21" * 20, origin=b"p" * 20, net="n2"))
    assert store.others_items == 2 and store.others_bytes == 2 * ENTRY_SIZE
    assert len(store) == 7
    # Removing one frees its share of both caps.
    entry = next(e for e in store if e.for_others)
    store.remove(entry)
    assert store.others_items == 1 and store.others_bytes == ENTRY_SIZE


def test_an_item_living_longer_than_the_days_cap_is_refused_one_at_the_cap_taken() -> None:
    store = RelayStore(OWN, max_life_s=2 * DAY_S)
    at_cap = NOW_MS + int(2 * DAY_S * 1000)
    store.add(message_entry(1, origin=b"o" * 20, net="n", expires_ms=at_cap))
    with pytest.raises(QuotaExceeded) as refused:
        store.add(message_entry(2, origin=b"o" * 20, net="n", expires_ms=at_cap + 1))
    assert refused.value.reason == "store_cap_days"
    # Our own items are what the user asked for: no cap.
    store.add(message_entry(3, expires_ms=at_cap + HOUR_MS), enforce_quota=False)
    assert len(store) == 2


def test_origin_shares_rank_networks_by_bytes_held() -> None:
    store = RelayStore(OWN, per_net_share=1.0)
    for i, net in enumerate(["a", "b", "b", "c", "c", "c"]):
        store.add(message_entry(i, target=bytes([i + 1]) * 20, origin=b"o" * 20, net=net))
    assert store.origin_shares(2) == [("c", 3 * ENTRY_SIZE), ("b", 2 * ENTRY_SIZE)]


def test_the_bandwidth_balance_refills_at_its_rate_and_lends_one_relay() -> None:
    budget = RelayBandwidth(1000, NOW)
    assert budget.burst == BANDWIDTH_MIN_BURST  # 2 s of 1,000 B/s is less than 2 datagrams
    first, second = (message_entry(n, origin=b"o" * 20, net="n") for n in (1, 2))
    assert budget.defer(NOW, first) is False  # open: nothing deferred
    assert budget.wake_at() is None
    budget.spend(int(budget.burst) + 500, NOW)  # one relay may take it into debt
    assert not budget.open(NOW)
    assert budget.sent == int(budget.burst) + 500
    assert budget.defer(NOW, first) is True
    assert budget.defer(NOW, second) is True
    # Offsets from NOW, not times: pytest.approx of a time of 1.8e9 s tolerates 1,800 s.
    wake = budget.wake_at()
    # (1 - balance) / rate, and the margin; a time near 1.8e9 is resolved to 0.24 us
    assert wake is not None
    assert wake - NOW == pytest.approx(0.501 + BANDWIDTH_WAKE_MARGIN_S, abs=3e-7)
    assert not budget.open(NOW + 0.5) and budget.take(NOW + 0.5) is None
    # Once the balance is positive the waiting go, whatever their size: the first may
    # take it into debt again, and the next waits for that.
    later = NOW + 0.502
    assert budget.take(later) is first
    budget.spend(1000, later)  # the balance was 2 bytes: now 998 in debt
    assert budget.take(later) is None
    wake = budget.wake_at()
    assert wake is not None
    assert wake - later == pytest.approx(0.999 + BANDWIDTH_WAKE_MARGIN_S, abs=3e-7)
    assert budget.take(wake) is second and budget.wake_at() is None


# ---------------------------------------------------------------- the node, on the wire


def _message_for(recipient: bytes, expires_ms: int) -> pb.Frame:
    sealed = os.urandom(SEALED_BYTES)
    return pb.Frame(message=pb.Message(recipient=recipient, expires_ms=expires_ms, sealed=sealed))


def _hand(wire: Wire, sender: Node, to: Node, frame: pb.Frame, now: float) -> list[str]:
    """``sender`` hands ``to`` a frame; returns the kinds of frames ``to`` sent back."""
    codec = Codec(sender.identity)
    source = wire.endpoint(sender)
    to.receive_datagram(codec.encode_frame(to.identity.key, frame, now), source, now)
    to.handle_timer(now + RECEIPT_DELAY_S)  # a receipt waits that long (docs/PROTOCOL.md, "4")
    kinds = []
    for data, dest in to.datagrams_to_send():
        if dest == source:
            got = codec.decode(data, now).frame
            assert got is not None
            kinds.append(got.WhichOneof("body") or "")
    return kinds


def _hour_after(now: float, hours: int) -> int:
    return (int(now * 1000) // EXPIRY_UNIT_MS + hours) * EXPIRY_UNIT_MS


def test_a_node_refuses_what_outlives_its_days_cap_without_a_receipt() -> None:
    """A refusal draws no receipt: the sender counts no holder and retries elsewhere."""
    wire = Wire()
    relay = wire.add(1, NodeConfig(store_max_days=1.0))
    sender = wire.add(2)
    wire.connect(sender, relay)
    far = os.urandom(20)
    long_lived = _hand(wire, sender, relay, _message_for(far, _hour_after(T0, 30)), T0)
    assert "receipt" not in long_lived
    assert relay.stats.rejected["store_cap_days"] == 1
    assert relay.relay_usage().items_held == 0
    short_lived = _hand(wire, sender, relay, _message_for(far, _hour_after(T0, 20)), T0)
    assert "receipt" in short_lived and relay.relay_usage().items_held == 1
    usage = relay.relay_usage()
    assert dict(usage.refused)["days"] == 1 and usage.items_held == 1


def test_the_default_days_cap_refuses_nothing_the_ttl_allows() -> None:
    """7 days is the TTL: an item at the longest life a sender may ask (with the clock
    skew allowed) is taken."""
    wire = Wire()
    relay, sender = wire.add(1), wire.add(2)
    wire.connect(sender, relay)
    longest = int((T0 + 7 * DAY_S + MAX_CLOCK_SKEW_S) * 1000) // EXPIRY_UNIT_MS * EXPIRY_UNIT_MS
    kinds = _hand(wire, sender, relay, _message_for(os.urandom(20), longest), T0)
    assert "receipt" in kinds and relay.stats.rejected["store_cap_days"] == 0


def _star(wire: Wire, relay: Node, peers: int) -> list[Node]:
    nodes = [wire.add(10 + i) for i in range(peers)]
    for node in nodes:
        wire.connect(node, relay)
    return nodes


def test_relaying_for_others_waits_for_the_bandwidth_cap_and_is_never_dropped() -> None:
    rate = 4000
    wire = Wire()
    relay = wire.add(1, NodeConfig(relay_bandwidth_bytes_s=rate, store_rate_per_s=1e9))
    peers = _star(wire, relay, 6)
    items = 40
    expires = _hour_after(T0, 24)
    for i in range(items):
        _hand(wire, peers[i % 2], relay, _message_for(os.urandom(20), expires), T0)
    assert relay.relay_usage().items_held == items
    assert relay.stats.relay_deferred > 0
    # Over any span, no more than the burst and the rate (one relay's debt aside).
    sent_at_start = relay._relay_bandwidth.sent
    assert sent_at_start <= relay._relay_bandwidth.burst + 8 * 1200
    wire.run(T0 + 0.5, T0 + 10, step=0.5)
    # The load wants far more than the cap gives in 10 s: the cap is what binds.
    assert relay._relay_bandwidth.sent <= relay._relay_bandwidth.burst + rate * 10 + 8 * 1200
    wire.run(T0 + 10.5, T0 + 120, step=0.5)
    # Deferred items wait in line, each woken about once, not all at every refill.
    assert relay.stats.relay_deferred <= 5 * items
    # Every item went out at least once: deferred, not dropped.
    assert all(entry.attempts >= 1 for entry in relay._store if entry.for_others)


def test_without_the_cap_the_same_load_goes_out_at_once() -> None:
    """The control: the test above can fail."""
    wire = Wire()
    relay = wire.add(1, NodeConfig(store_rate_per_s=1e9))
    peers = _star(wire, relay, 6)
    expires = _hour_after(T0, 24)
    for i in range(40):
        _hand(wire, peers[i % 2], relay, _message_for(os.urandom(20), expires), T0)
    assert relay.stats.relay_deferred == 0
    assert all(entry.attempts >= 1 for entry in relay._store if entry.for_others)


def test_own_texts_do_not_wait_for_the_relay_bandwidth() -> None:
    wire = Wire()
    relay = wire.add(1, NodeConfig(relay_bandwidth_bytes_s=1, store_rate_per_s=1e9))
    peers = _star(wire, relay, 4)
    expires = _hour_after(T0, 24)
    # Enough for the cap's burst to be spent whatever the random targets: an item whose
    # target is nearest the relay itself is held, not relayed (6 left it open 1.5% of runs).
    for _ in range(20):
        _hand(wire, peers[0], relay, _message_for(os.urandom(20), expires), T0)
    assert not relay._relay_bandwidth.open(T0)
    spent = relay._relay_bandwidth.sent
    relay.send_text(peers[3].identity.public, "mine", T0)
    wire.pump(T0)
    assert [t.text for t in wire.texts(peers[3])] == ["mine"]
    assert relay._relay_bandwidth.sent == spent  # not paid from the relay bandwidth


# ---------------------------------------------------------------- relaying off


def _relays(wire: NatWire, count: int) -> list[Node]:
    relays = [wire.add_public(1 + i) for i in range(count)]
    for relay in relays[1:]:
        relay.bootstrap(wire.endpoint(relays[0]), T0)
    wire.pump(T0)
    wire.run(T0, T0 + 20)
    return relays


def _run(wire: NatWire, start: float, seconds: float, check: list[Node]) -> float:
    """Step the wire 0.5 s at a time, checking no relay ever has ``check`` in its table."""
    now = start
    while now < start + seconds:
        now += 0.5
        wire.tick(now)
        for node in wire.nodes.values():
            for other in check:
                assert other.address not in peer_addresses(node)
    return now


def test_a_node_with_relaying_off_mails_through_others_and_relays_for_nobody() -> None:
    """docs/PROTOCOL.md, "12.3": a public node with relaying off is a client. Its texts
    go both ways through the relays, it keeps bindings with them, is in no table, and
    stores nothing for anyone (an item pushed at it anyway is refused, not_relay)."""
    wire = NatWire()
    relays = _relays(wire, 10)
    carol = wire.add_public(100, NodeConfig(relay=False))
    alice = wire.add_behind(101, "restricted")
    assert carol.client_mode and not carol.relaying
    for node in (carol, alice):
        node.bootstrap(wire.endpoint(relays[0]), T0 + 21)
    wire.pump(T0 + 21)
    assert all(carol.address not in peer_addresses(r) for r in relays)  # from its first frame
    now = _run(wire, T0 + 21, 60, [carol])
    assert any(r.attached_client(carol.address) for r in relays)
    alice.send_text(carol.identity.public, "to carol", now)
    carol.send_text(alice.identity.public, "to alice", now)
    wire.pump(now)
    now = _run(wire, now, 30, [carol])
    assert [t.text for t in wire.texts(carol)] == ["to carol"]
    assert [t.text for t in wire.texts(alice)] == ["to alice"]
    assert carol.relay_usage().items_held == 0
    # Someone hands it an item for a third party anyway: refused, no receipt.
    kinds = _hand(wire, relays[1], carol, _message_for(os.urandom(20), _hour_after(now, 5)), now)
    assert "receipt" not in kinds and carol.stats.rejected["not_relay"] == 1
    assert carol.relay_usage().items_held == 0


def test_with_relaying_on_the_same_public_node_relays() -> None:
    """The control: a public node relays (and is in tables) unless switched off."""
    wire = NatWire()
    relays = _relays(wire, 10)
    carol = wire.add_public(100)
    carol.bootstrap(wire.endpoint(relays[0]), T0 + 21)
    wire.pump(T0 + 21)
    wire.run(T0 + 21, T0 + 60)
    assert not carol.client_mode
    assert any(carol.address in peer_addresses(r) for r in relays)
    before = carol.relay_usage().items_held
    kinds = _hand(wire, relays[1], carol, _message_for(os.urandom(20), _hour_after(T0, 5)), T0 + 60)
    assert "receipt" in kinds and carol.relay_usage().items_held == before + 1


def test_switching_relaying_off_takes_the_node_out_of_tables_and_keeps_what_it_holds() -> None:
    wire = NatWire()
    relays = _relays(wire, 10)
    carol = wire.add_public(100)
    carol.bootstrap(wire.endpoint(relays[0]), T0 + 21)
    wire.pump(T0 + 21)
    wire.run(T0 + 21, T0 + 60)
    before = carol.relay_usage().items_held
    held = _hand(wire, relays[1], carol, _message_for(os.urandom(20), _hour_after(T0, 5)), T0 + 60)
    assert "receipt" in held
    carol.set_relaying(False, T0 + 60)
    assert carol.client_mode
    wire.run(T0 + 61, T0 + 200)
    assert all(carol.address not in peer_addresses(r) for r in relays)
    # What it acknowledged holding stays until its ack or expiry (never dropped).
    assert carol.relay_usage().items_held == before + 1
    carol.set_relaying(True, T0 + 200)
    assert not carol.client_mode


def test_relaying_off_is_client_mode_from_the_first_frame_without_local_endpoints() -> None:
    """Even where no reachability is measured (no local endpoints known), a node with
    relaying off is never inserted by the node it joins through."""
    wire = Wire()
    seed_node = wire.add(1)
    carol = wire.add(2, NodeConfig(relay=False))
    assert carol.client_mode  # what the status panel shows before any datagram
    carol.bootstrap(wire.endpoint(seed_node), T0)
    wire.pump(T0)
    assert seed_node.address in peer_addresses(carol)
    assert carol.address not in peer_addresses(seed_node)
    assert carol.relay_usage().relaying is False


def test_each_relay_attempt_over_the_bandwidth_cap_is_counted_deferred() -> None:
    """Once the relay bandwidth is spent, every item handed over waits for the balance
    (docs/PROTOCOL.md, "8.1 Local caps"), and each such attempt is counted in
    ``relay_deferred`` (the status panel's figure of a relay at its cap)."""
    wire = Wire()
    relay = wire.add(1, NodeConfig(relay_bandwidth_bytes_s=1, store_rate_per_s=1e9))
    peers = _star(wire, relay, 4)
    expires = _hour_after(T0, 24)
    for _ in range(20):
        _hand(wire, peers[0], relay, _message_for(os.urandom(20), expires), T0)
    waiting = [e for e in relay._store if e.for_others and e.attempts == 0]
    assert len(waiting) >= 2
    assert relay.stats.relay_deferred == len(waiting)
