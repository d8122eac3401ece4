"""Tests for the Kademlia routing table: splitting, liveness, eclipse limits, refresh."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comm_tui.protocol.routing import (
    ADDRESS_BITS,
    ADDRESS_BYTES,
    Endpoint,
    K,
    NodeEntry,
    Observation,
    RoutingTable,
    common_prefix_length,
    distance,
    normalize_endpoint,
    origin_network,
)

KEY = b"\x00" * 32
GOOD_INTERVAL_S = 900.0


def address_with_cpl(own: bytes, cpl: int, rng: random.Random) -> bytes:
    """A random address sharing exactly ``cpl`` leading bits with ``own``."""
    free_bits = ADDRESS_BITS - cpl - 1
    prefix = (int.from_bytes(own, "big") >> free_bits) ^ 1
    return ((prefix << free_bits) | rng.getrandbits(free_bits)).to_bytes(ADDRESS_BYTES, "big")


def unique_endpoint(i: int) -> Endpoint:
    """An endpoint in its own /24, so the prefix limit never applies."""
    return (f"10.{(i >> 8) & 255}.{i & 255}.1", 4000 + i % 1000)


def network_of(host: str) -> str | None:
    """Independent restatement of the per-bucket prefix rule, for checking invariants."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


def bucket_index(table: RoutingTable, address: bytes) -> int:
    return min(common_prefix_length(table.own_address, address), len(table.bucket_fill()) - 1)


def check_invariants(table: RoutingTable) -> None:
    entries = list(table)
    addresses = [entry.address for entry in entries]
    fill = table.bucket_fill()
    assert len(addresses) == len(set(addresses)) == len(table)
    assert table.own_address not in table
    assert 1 <= len(fill) <= ADDRESS_BITS
    assert [depth for depth, _ in fill] == list(range(len(fill)))
    assert all(count <= table.k for _, count in fill)
    placed = Counter(bucket_index(table, address) for address in addresses)
    assert [count for _, count in fill] == [placed[depth] for depth in range(len(fill))]
    per_network = Counter(
        (bucket_index(table, entry.address), network_of(entry.endpoint[0])) for entry in entries
    )
    assert all(
        count <= table.ip_prefix_limit
        for (_, network), count in per_network.items()
        if network is not None
    )
    for entry in entries:
        assert table.get(entry.address) is entry
        assert entry.address in table


def brute_force_closest(table: RoutingTable, target: bytes, count: int) -> list[bytes]:
    usable = [entry.address for entry in table if entry.failures < table.max_failures]
    return sorted(usable, key=lambda address: distance(address, target))[:count]


def test_distance_and_common_prefix_length() -> None:
    a = bytes(20)
    assert distance(a, a) == 0
    assert common_prefix_length(a, a) == ADDRESS_BITS
    b = bytes([0x80]) + bytes(19)
    assert distance(a, b) == 1 << 159
    assert common_prefix_length(a, b) == 0
    c = bytes(19) + b"\x01"
    assert common_prefix_length(a, c) == 159
    assert common_prefix_length(bytes([0x0F]) + bytes(19), bytes([0x0E]) + bytes(19)) == 7
    with pytest.raises(ValueError):
        distance(a, b"\x00")


def test_node_entry_caches_its_address_as_an_integer() -> None:
    entry = NodeEntry(KEY, bytes(19) + b"\x05", ("10.0.0.1", 1), 0.0, 0.0)
    assert entry.address_int == 5


def test_rejects_malformed_addresses() -> None:
    with pytest.raises(ValueError):
        RoutingTable(b"short")
    table = RoutingTable(bytes(20))
    with pytest.raises(ValueError):
        table.observe(KEY, b"short", ("10.0.0.1", 1), 0.0)


def test_own_address_is_never_inserted() -> None:
    own = bytes(range(20))
    table = RoutingTable(own)
    observation = table.observe(KEY, own, ("10.0.0.1", 1), 0.0)
    assert not observation.added
    assert own not in table
    assert len(table) == 0


def test_splitting_with_two_thousand_random_nodes() -> None:
    rng = random.Random(1)
    own = rng.randbytes(20)
    table = RoutingTable(own)
    addresses = [rng.randbytes(20) for _ in range(2000)]
    for i, address in enumerate(addresses):
        table.observe(KEY, address, unique_endpoint(i), float(i))

    check_invariants(table)
    fill = table.bucket_fill()
    last = len(fill) - 1
    assert 5 <= last < 20
    by_cpl = Counter(common_prefix_length(own, address) for address in addresses)
    # Far buckets keep the first k nodes that arrived (all stayed good).
    for depth in range(last):
        assert fill[depth] == (depth, min(K, by_cpl[depth]))
    # Every node at least as close as the last bucket's depth is kept...
    near = [address for address in addresses if common_prefix_length(own, address) >= last]
    assert all(address in table for address in near)
    # ...and the last split was needed: the bucket before it had overflowed.
    assert sum(n for cpl, n in by_cpl.items() if cpl >= last - 1) > K


def test_splitting_stops_at_the_deepest_bucket() -> None:
    own = bytes(20)
    table = RoutingTable(own, k=1)
    # One node per depth, deepest first, forces a split for every one after the first.
    for i, cpl in enumerate(range(ADDRESS_BITS - 1, -1, -1)):
        address = address_with_cpl(own, cpl, random.Random(cpl))
        assert table.observe(KEY, address, unique_endpoint(i), 0.0).added
    assert len(table.bucket_fill()) == ADDRESS_BITS
    assert len(table) == ADDRESS_BITS
    check_invariants(table)
    # The deepest bucket holds the one address that differs from ours in the last bit.
    other = address_with_cpl(own, ADDRESS_BITS - 1, random.Random(0))
    assert table.get(other) is not None


def test_closest_matches_brute_force_and_honours_exclude() -> None:
    rng = random.Random(2)
    table = RoutingTable(rng.randbytes(20))
    for i in range(300):
        table.observe(KEY, rng.randbytes(20), unique_endpoint(i), 0.0)
    for _ in range(50):
        target = rng.randbytes(20)
        got = [entry.address for entry in table.closest(target)]
        assert got == brute_force_closest(table, target, K)
        excluded = set(got[:3])
        rest = [entry.address for entry in table.closest(target, 5, exclude=list(excluded))]
        assert rest == [a for a in brute_force_closest(table, target, 8) if a not in excluded][:5]


def test_is_among_closest_counts_ourselves() -> None:
    rng = random.Random(3)
    own = rng.randbytes(20)
    table = RoutingTable(own)
    for i in range(200):
        table.observe(KEY, rng.randbytes(20), unique_endpoint(i), 0.0)
    for _ in range(100):
        target = rng.randbytes(20)
        count = rng.randint(1, 10)
        ranking = sorted(
            [own, *(entry.address for entry in table)], key=lambda a: distance(a, target)
        )
        assert table.is_among_closest(own, target, count) == (own in ranking[:count])
        probe = rng.randbytes(20)
        with_probe = sorted([*ranking, probe], key=lambda a: distance(a, target))
        assert table.is_among_closest(probe, target, count) == (probe in with_probe[:count])
    assert table.is_among_closest(own, own, 1)


def test_is_among_closest_with_no_other_nodes() -> None:
    own = bytes(20)
    table = RoutingTable(own)
    probe = bytes(19) + b"\x07"
    assert table.is_among_closest(own, probe, 1)
    assert not table.is_among_closest(bytes([0x80]) + bytes(19), probe, 1)
    assert table.is_among_closest(bytes([0x80]) + bytes(19), probe, 2)


class FullFarBucket:
    """A table with k = 2 whose bucket 0 (cpl 0, never split again) is full."""

    def __init__(self, ip_prefix_limit: int = 2) -> None:
        self.rng = random.Random(4)
        self.own = self.rng.randbytes(20)
        self.table = RoutingTable(
            self.own, k=2, ip_prefix_limit=ip_prefix_limit, good_interval_s=GOOD_INTERVAL_S
        )
        self.a = self.far()
        self.b = self.far()
        assert self.table.observe(KEY, self.a, ("10.0.1.1", 1), 0.0).added
        assert self.table.observe(KEY, self.b, ("10.0.2.1", 1), 10.0).added
        # A near node makes the lone bucket split, so bucket 0 stops being the last one.
        assert self.table.observe(KEY, self.near(), ("10.0.3.1", 1), 10.0).added
        assert self.table.bucket_fill()[0] == (0, 2)

    def far(self) -> bytes:
        return address_with_cpl(self.own, 0, self.rng)

    def near(self) -> bytes:
        return address_with_cpl(self.own, 5, self.rng)


def test_full_bucket_of_good_nodes_only_caches_the_newcomer() -> None:
    setup = FullFarBucket()
    newcomer = setup.far()
    assert setup.table.observe(KEY, newcomer, ("10.0.9.1", 1), 100.0) == Observation()
    assert newcomer not in setup.table
    assert setup.table.get(setup.a) is not None


def test_full_bucket_with_questionable_node_asks_for_a_ping() -> None:
    setup = FullFarBucket()
    table = setup.table
    now = GOOD_INTERVAL_S + 20.0  # both a (seen at 0) and b (seen at 10) are questionable
    first = table.observe(KEY, setup.far(), ("10.0.9.1", 1), now)
    assert not first.added
    assert first.ping is not None and first.ping.address == setup.a
    # a answers: it becomes the most recent, so b is the next one to check.
    table.observe(KEY, setup.a, ("10.0.1.1", 1), now)
    second = table.observe(KEY, setup.far(), ("10.0.9.2", 1), now)
    assert second.ping is not None and second.ping.address == setup.b
    # Once b answers too, every node is good and nobody is pinged.
    table.observe(KEY, setup.b, ("10.0.2.1", 1), now)
    assert table.observe(KEY, setup.far(), ("10.0.9.3", 1), now).ping is None


def test_failed_node_is_replaced_by_the_freshest_cached_newcomer() -> None:
    setup = FullFarBucket()
    table = setup.table
    older, fresher = setup.far(), setup.far()
    table.observe(KEY, older, ("10.0.8.1", 1), 100.0)
    table.observe(KEY, fresher, ("10.0.9.1", 1), 200.0)
    assert table.record_failure(setup.a, 300.0) is None
    assert table.record_failure(setup.a, 301.0) is None
    removed = table.record_failure(setup.a, 302.0)
    assert removed is not None and removed.address == setup.a
    assert setup.a not in table
    promoted = table.get(fresher)
    assert promoted is not None and promoted.first_seen == 200.0
    assert older not in table
    # The older newcomer is still waiting for the next slot.
    for now in (400.0, 401.0, 402.0):
        table.record_failure(setup.b, now)
    assert setup.b not in table
    assert older in table
    check_invariants(table)


def test_promoted_node_keeps_its_place_in_recency_order() -> None:
    setup = FullFarBucket()
    table = setup.table
    cached = setup.far()
    table.observe(KEY, cached, ("10.0.9.1", 1), 100.0)
    table.observe(KEY, setup.b, ("10.0.2.1", 1), 150.0)
    for now in (200.0, 201.0, 202.0):
        table.record_failure(setup.a, now)
    assert cached in table
    # The promoted node was heard from before b, so it is the one to ping first.
    observation = table.observe(KEY, setup.far(), ("10.0.8.1", 1), 150.0 + GOOD_INTERVAL_S + 1)
    assert observation.ping is not None and observation.ping.address == cached


def test_answer_resets_failures() -> None:
    setup = FullFarBucket()
    table = setup.table
    table.observe(KEY, setup.far(), ("10.0.9.1", 1), 100.0)
    table.record_failure(setup.a, 101.0)
    table.record_failure(setup.a, 102.0)
    table.observe(KEY, setup.a, ("10.0.1.1", 1), 103.0)
    entry = table.get(setup.a)
    assert entry is not None and entry.failures == 0
    assert table.record_failure(setup.a, 104.0) is None
    assert setup.a in table


def test_bad_node_without_replacement_stays_out_of_lookups_until_replaced() -> None:
    setup = FullFarBucket()
    table = setup.table
    for now in (100.0, 101.0, 102.0):
        assert table.record_failure(setup.a, now) is None
    assert setup.a in table
    assert setup.a not in [entry.address for entry in table.closest(setup.a, 10)]
    newcomer = setup.far()
    observation = table.observe(KEY, newcomer, ("10.0.9.1", 1), 103.0)
    assert observation.added
    assert observation.evicted is not None and observation.evicted.address == setup.a
    assert newcomer in table and setup.a not in table


def test_bad_node_that_answers_again_is_good() -> None:
    setup = FullFarBucket()
    table = setup.table
    for now in (100.0, 101.0, 102.0):
        table.record_failure(setup.a, now)
    table.observe(KEY, setup.a, ("10.0.1.1", 1), 103.0)
    assert setup.a in [entry.address for entry in table.closest(setup.a, 1)]


def test_replacement_cache_is_bounded_and_deduplicated() -> None:
    setup = FullFarBucket()
    table = setup.table
    waiting = [setup.far() for _ in range(5)]
    for i, address in enumerate(waiting):
        table.observe(KEY, address, (f"10.1.{i}.1", 1), 100.0 + i)
    # The first one speaks again: it becomes the freshest, the next oldest drops out.
    table.observe(KEY, waiting[0], ("10.1.0.1", 1), 200.0)
    for now in (300.0, 301.0, 302.0):
        table.record_failure(setup.a, now)
    for now in (303.0, 304.0, 305.0):
        table.record_failure(setup.b, now)
    assert waiting[0] in table and waiting[4] in table
    # Only two slots opened, and the cache held at most k = 2 nodes: nobody else remains.
    for now in (400.0, 401.0, 402.0):
        assert table.record_failure(waiting[0], now) is None


def test_replacement_that_would_break_the_prefix_limit_is_not_promoted() -> None:
    setup = FullFarBucket(ip_prefix_limit=1)
    table = setup.table
    cached = setup.far()
    table.observe(KEY, cached, ("10.0.3.1", 1), 100.0)
    # b moves into the cached node's network, so promoting it would put two there.
    assert table.confirm_endpoint(setup.b, ("10.0.3.2", 1), 101.0)
    for now in (102.0, 103.0, 104.0):
        assert table.record_failure(setup.a, now) is None
    assert setup.a in table and cached not in table
    # When b itself goes, the cached node is admissible again.
    for now in (105.0, 106.0, 107.0):
        table.record_failure(setup.b, now)
    assert cached in table and setup.b not in table


def test_remove_forgets_the_node_and_does_not_promote() -> None:
    setup = FullFarBucket()
    table = setup.table
    cached = setup.far()
    table.observe(KEY, cached, ("10.0.9.1", 1), 100.0)
    removed = table.remove(setup.a)
    assert removed is not None and removed.address == setup.a
    assert setup.a not in table and cached not in table
    assert table.remove(setup.a) is None
    # The cached node takes the free slot once it is heard from again.
    assert table.observe(KEY, cached, ("10.0.9.1", 1), 101.0).added
    entry = table.get(cached)
    assert entry is not None and entry.first_seen == 100.0 and entry.last_seen == 101.0


def test_endpoint_change_is_reported_and_applied_only_when_confirmed() -> None:
    rng = random.Random(5)
    table = RoutingTable(rng.randbytes(20))
    address = rng.randbytes(20)
    table.observe(KEY, address, ("10.0.0.1", 1000), 1.0)
    observation = table.observe(KEY, address, ("10.9.9.9", 2000), 2.0)
    assert observation.endpoint_changed and not observation.added
    entry = table.get(address)
    assert entry is not None
    assert entry.endpoint == ("10.0.0.1", 1000)
    assert entry.last_seen == 1.0
    assert table.confirm_endpoint(address, ("10.9.9.9", 2000), 3.0)
    assert entry.endpoint == ("10.9.9.9", 2000)
    assert entry.last_seen == 3.0
    assert not table.observe(KEY, address, ("10.9.9.9", 2000), 4.0).endpoint_changed
    assert not table.confirm_endpoint(rng.randbytes(20), ("10.0.0.2", 1), 5.0)


def test_confirm_endpoint_respects_the_prefix_limit() -> None:
    rng = random.Random(8)
    table = RoutingTable(rng.randbytes(20), k=4, ip_prefix_limit=1)
    a, b = rng.randbytes(20), rng.randbytes(20)
    table.observe(KEY, a, ("1.2.3.4", 1), 0.0)
    table.observe(KEY, b, ("5.6.7.8", 1), 0.0)
    assert not table.confirm_endpoint(b, ("1.2.3.99", 1), 1.0)
    entry = table.get(b)
    assert entry is not None and entry.endpoint == ("5.6.7.8", 1)
    assert table.confirm_endpoint(a, ("1.2.3.5", 2), 1.0)


@pytest.mark.parametrize(
    ("hosts", "accepted"),
    [
        (["1.2.3.4", "1.2.3.5", "1.2.3.6", "1.2.4.1"], [True, True, False, True]),
        (
            # One /48 (2001:db8:0::/48) is one site: a fourth /64 of it is refused too.
            ["2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "2001:db8:1::1"],
            [True, True, False, True],
        ),
        (["::ffff:1.2.3.4", "1.2.3.5", "1.2.3.6"], [True, True, False]),
        (["example.org", "example.org", "example.org", "other.example"], [True, True, False, True]),
        (["127.0.0.1", "127.0.0.1", "127.0.0.2", "::1", "127.0.0.1"], [True] * 5),
    ],
)
def test_ip_prefix_limit_per_bucket(hosts: list[str], accepted: list[bool]) -> None:
    setup = FullFarBucket()
    table = RoutingTable(setup.own, k=8, ip_prefix_limit=2)
    addresses = [setup.far() for _ in hosts]
    results = [
        table.observe(KEY, address, (host, 7000 + i), 0.0).added
        for i, (address, host) in enumerate(zip(addresses, hosts, strict=True))
    ]
    assert results == accepted
    check_invariants(table)


def test_ip_prefix_limit_is_per_bucket() -> None:
    setup = FullFarBucket(ip_prefix_limit=1)  # bucket 0 holds a node from 10.0.1.0/24
    table = setup.table
    assert not table.observe(KEY, setup.far(), ("10.0.1.2", 1), 20.0).added
    # The same network is welcome in another bucket.
    assert table.observe(KEY, setup.near(), ("10.0.1.3", 1), 20.0).added
    assert table.bucket_fill() == [(0, 2), (1, 2)]


def test_rejected_network_is_not_cached_either() -> None:
    setup = FullFarBucket()
    table = setup.table  # k = 2, limit 2: bucket 0 holds a (10.0.1.1) and b (10.0.2.1)
    assert table.confirm_endpoint(setup.b, ("10.0.1.2", 1), 20.0)
    over = setup.far()
    assert table.observe(KEY, over, ("10.0.1.3", 1), 30.0) == Observation()
    for now in (40.0, 41.0, 42.0):
        assert table.record_failure(setup.a, now) is None  # nobody to promote
    assert over not in table


def test_a_refused_replacement_is_weighed_in_full_once_a_node_moved_to_its_network() -> None:
    setup = FullFarBucket()
    table = setup.table  # k = 2, limit 2: bucket 0 holds a (10.0.1.1) and b (10.0.2.1)
    refused = setup.far()
    assert table.observe(KEY, refused, ("10.0.1.5", 1), 20.0) == Observation()
    assert table.confirm_endpoint(setup.b, ("10.0.1.2", 1), 21.0)
    # Its network now has the limit's two nodes here: heard again, it is not even cached.
    assert table.observe(KEY, refused, ("10.0.1.5", 1), 22.0) == Observation()
    for now in (30.0, 31.0, 32.0):
        assert table.record_failure(setup.a, now) is None
    assert refused not in table


def test_a_refused_replacement_is_weighed_in_full_once_a_bad_node_was_replaced() -> None:
    """A node of the refused one's network took a bad node's place (``record_failure``):
    its network is at the limit, so heard again it is dropped from the cache, as a first
    contact from it would be, rather than kept to take the next free place (red5)."""
    rng = random.Random(7)
    own = rng.randbytes(20)
    table = RoutingTable(own, k=2, ip_prefix_limit=2, max_failures=1)
    a, b, refused, other = (address_with_cpl(own, 0, rng) for _ in range(4))
    assert table.observe(KEY, a, ("10.0.3.1", 1), 0.0).added
    assert table.observe(KEY, b, ("10.0.2.1", 1), 1.0).added
    assert table.observe(KEY, address_with_cpl(own, 5, rng), ("10.0.9.1", 1), 1.0).added  # split
    table.observe(KEY, refused, ("10.0.3.5", 1), 2.0)
    table.observe(KEY, other, ("10.0.3.6", 1), 3.0)  # the freshest replacement
    assert table.record_failure(b, 4.0) is not None and other in table
    table.observe(KEY, refused, ("10.0.3.5", 1), 5.0)
    assert table.record_failure(a, 6.0) is None
    assert refused not in table


@pytest.mark.parametrize(
    ("key", "endpoint"), [(b"\x01" * 32, ("10.0.9.1", 1)), (KEY, ("10.0.8.1", 2))]
)
def test_a_refused_replacement_heard_with_a_new_key_or_endpoint_waits_with_them(
    key: bytes, endpoint: Endpoint
) -> None:
    setup = FullFarBucket()
    table = setup.table
    refused = setup.far()
    table.observe(KEY, refused, ("10.0.9.1", 1), 20.0)
    table.observe(key, refused, endpoint, 21.0)
    table.observe(key, refused, endpoint, 22.0)
    for now in (30.0, 31.0, 32.0):
        table.record_failure(setup.a, now)
    entry = table.get(refused)
    assert entry is not None
    assert (entry.key, entry.endpoint) == (key, endpoint)
    assert (entry.first_seen, entry.last_seen) == (20.0, 22.0)


def test_replacement_cache_keeps_few_nodes_per_network() -> None:
    setup = FullFarBucket(ip_prefix_limit=1)
    table = setup.table
    honest = setup.far()
    table.observe(KEY, honest, ("198.51.100.1", 1), 100.0)
    flood = [setup.far() for _ in range(3)]
    for i, address in enumerate(flood):
        table.observe(KEY, address, ("192.0.2.1", 100 + i), 101.0 + i)
    # The cache (k = 2) kept one node of the flooding network, so the honest node heard
    # before the flood still gets a slot.
    for now in (200.0, 201.0, 202.0):
        table.record_failure(setup.a, now)
    for now in (203.0, 204.0, 205.0):
        table.record_failure(setup.b, now)
    assert flood[2] in table
    assert honest in table
    assert flood[0] not in table and flood[1] not in table


def test_buckets_needing_refresh_targets_lie_in_their_bucket() -> None:
    rng = random.Random(6)
    own = rng.randbytes(20)
    table = RoutingTable(own)
    for i in range(500):
        table.observe(KEY, rng.randbytes(20), unique_endpoint(i), 0.0)
    depths = len(table.bucket_fill())
    assert table.buckets_needing_refresh(100.0, 900.0, rng) == []
    targets = table.buckets_needing_refresh(1000.0, 900.0, rng)
    assert len(targets) == depths
    for depth, target in enumerate(targets[:-1]):
        assert common_prefix_length(own, target) == depth
    assert common_prefix_length(own, targets[-1]) >= depths - 1
    # Refreshed now, so not again until the interval passes.
    assert table.buckets_needing_refresh(1000.0, 900.0, rng) == []
    # A node heard from in bucket 0 keeps that bucket fresh.
    bucket0_node = next(e for e in table if common_prefix_length(own, e.address) == 0)
    table.observe(KEY, bucket0_node.address, bucket0_node.endpoint, 1500.0)
    later = table.buckets_needing_refresh(2000.0, 900.0, rng)
    assert len(later) == depths - 1
    assert all(common_prefix_length(own, target) != 0 for target in later)


def test_a_new_table_wants_its_only_bucket_refreshed() -> None:
    rng = random.Random(7)
    table = RoutingTable(rng.randbytes(20))
    assert len(table.buckets_needing_refresh(0.0, 900.0, rng)) == 1
    assert table.buckets_needing_refresh(1.0, 900.0, rng) == []


OWN = bytes.fromhex("5a" * 20)
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.1.1", "127.0.0.1", "2001:db8::1", "2001:db8::2", "node.lan"]

# A small pool, so operations keep hitting the same nodes: several per far bucket so they
# overflow, a spread of depths so the table splits, and our own address.
ADDRESS_POOL = [
    *(address_with_cpl(OWN, cpl, random.Random(seed)) for cpl in (0, 1, 2) for seed in range(5)),
    *(address_with_cpl(OWN, cpl, random.Random(cpl)) for cpl in (3, 4, 6, 9, 40, 158, 159)),
    OWN,
]
addresses = st.sampled_from(ADDRESS_POOL)
Operation = tuple[str, bytes, str, int]


def operation_lists(
    pool: st.SearchStrategy[bytes], numbers: int, *more: st.SearchStrategy[Operation]
) -> st.SearchStrategy[list[Operation]]:
    """Lists of table operations on ``pool``'s addresses: observe and confirm (from one of
    ``HOSTS``, a number 1 to ``numbers``), ``more``, fail (1 to 3 times), remove, wait."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("observe"), pool, st.sampled_from(HOSTS), st.integers(1, numbers)),
            *more,
            st.tuples(st.just("confirm"), pool, st.sampled_from(HOSTS), st.integers(1, numbers)),
            st.tuples(st.just("fail"), pool, st.just(""), st.integers(1, 3)),
            st.tuples(st.just("remove"), pool, st.just(""), st.just(0)),
            st.tuples(st.just("wait"), pool, st.just(""), st.integers(1, 2000)),
        ),
        min_size=20,
        max_size=150,
    )


operations = operation_lists(addresses, 3)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(1, 4), st.integers(1, 3))
def test_invariants_hold_after_any_operations(
    ops: list[tuple[str, bytes, str, int]], k: int, limit: int
) -> None:
    table = RoutingTable(OWN, k=k, ip_prefix_limit=limit, good_interval_s=GOOD_INTERVAL_S)
    now = 0.0
    for op, address, host, number in ops:
        before = table.get(address)
        if op == "observe":
            observation = table.observe(KEY, address, (host, number), now)
            assert not observation.added or (before is None and address in table)
            if observation.evicted is not None:
                assert observation.evicted.failures >= table.max_failures
            if observation.endpoint_changed:
                assert before is not None and before.endpoint != (host, number)
        elif op == "confirm":
            table.confirm_endpoint(address, (host, number), now)
        elif op == "fail":
            for _ in range(number):
                size = len(table)
                removed = table.record_failure(address, now)
                # A node is only dropped for failing when a replacement takes its place.
                assert removed is None or (removed is before and address not in table)
                assert len(table) == size
        elif op == "remove":
            assert table.remove(address) is before
            assert address not in table
        else:
            now += number
        check_invariants(table)
    assert [e.address for e in table.closest(OWN, 5)] == brute_force_closest(table, OWN, 5)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=20, max_size=20), max_size=60), st.binary(min_size=20, max_size=20)
)
def test_closest_equals_brute_force(nodes: list[bytes], target: bytes) -> None:
    table = RoutingTable(OWN, k=3)
    for i, address in enumerate(nodes):
        table.observe(KEY, address, unique_endpoint(i), float(i))
    check_invariants(table)
    for count in (1, 3, 8, 100):
        got = [entry.address for entry in table.closest(target, count)]
        assert got == brute_force_closest(table, target, count)


def test_origin_network_is_what_an_attacker_has_not_what_it_claims() -> None:
    """Quotas count networks: an IPv4 /24, an IPv6 /48; on loopback every node alone."""
    assert origin_network(("198.18.5.7", 1)) == origin_network(("198.18.5.200", 9))
    assert origin_network(("198.18.5.7", 1)) != origin_network(("198.18.6.7", 1))
    assert origin_network(("::ffff:198.18.5.7", 1)) == "198.18.5.0/24"
    assert origin_network(("2001:db8:1:2::1", 1)) == origin_network(("2001:db8:1:ffff::9", 1))
    assert origin_network(("2001:db8:1::1", 1)) != origin_network(("2001:db8:2::1", 1))
    assert origin_network(("127.0.0.1", 4000)) != origin_network(("127.0.0.1", 4001))
    assert origin_network(("node.example", 1)) == "host:node.example"


def test_a_dual_stack_peer_is_one_endpoint_in_one_spelling() -> None:
    """docs/PROTOCOL.md, "13.4 Dual stack": an IPv4 peer seen through a dual-stack socket
    (``::ffff:a.b.c.d``) is the IPv4 endpoint, and an IPv6 host is written compressed, so
    one node is never two endpoints (two validations, two quota slots)."""
    assert normalize_endpoint(("::ffff:198.18.0.5", 7)) == ("198.18.0.5", 7)
    assert normalize_endpoint(("2001:0db8:0000::0005", 7)) == ("2001:db8::5", 7)
    assert normalize_endpoint(("198.18.0.5", 7)) == ("198.18.0.5", 7)
    assert normalize_endpoint(("2001:db8::5", 7)) == ("2001:db8::5", 7)
    assert normalize_endpoint(("node.example", 7)) == ("node.example", 7)


@pytest.mark.parametrize("bad", [{"k": 0}, {"ip_prefix_limit": 0}, {"max_failures": 0}])
def test_a_table_needs_at_least_one_slot_node_per_network_and_failure(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RoutingTable(bytes(20), **bad)


def test_with_max_failures_one_a_single_unanswered_query_makes_a_node_bad() -> None:
    table = RoutingTable(bytes(20), k=2, ip_prefix_limit=1, max_failures=1)
    far = bytes([0x80]) + bytes(19)
    assert table.observe(KEY, far, ("10.0.0.1", 1), 0.0).added
    assert [e.address for e in table.closest(far, 1)] == [far]
    assert table.record_failure(far, 1.0) is None  # bad, but nobody to replace it
    assert table.closest(far, 1) == []


def test_a_node_unheard_for_more_than_15_minutes_is_questionable_by_default() -> None:
    """Kademlia's liveness rule at its default: a full bucket's newcomer asks for a ping of
    the least recently seen node once that node has been silent more than 900 s, not at
    900 s itself."""
    own = bytes(20)
    table = RoutingTable(own, k=2)
    rng = random.Random(10)
    a, b = address_with_cpl(own, 0, rng), address_with_cpl(own, 0, rng)
    assert table.observe(KEY, a, ("10.0.1.1", 1), 0.0).added
    assert table.observe(KEY, b, ("10.0.2.1", 1), 0.0).added
    assert table.observe(KEY, address_with_cpl(own, 5, rng), ("10.0.3.1", 1), 0.0).added
    assert table.bucket_fill()[0] == (0, 2)
    at_900 = table.observe(KEY, address_with_cpl(own, 0, rng), ("10.0.4.1", 1), 900.0)
    assert not at_900.added and at_900.ping is None
    later = table.observe(KEY, address_with_cpl(own, 0, rng), ("10.0.5.1", 1), 900.5)
    assert later.ping is not None and later.ping.address == a


def test_both_halves_of_a_split_bucket_keep_its_refresh_time() -> None:
    """A split does not make either half look freshly refreshed, or never refreshed: the
    half the newcomer did not enter is refreshed an interval after the old bucket's last
    touch (docs/PROTOCOL.md, "6.2": buckets not touched for 15 min are refreshed)."""
    own = bytes(20)
    rng = random.Random(11)
    table = RoutingTable(own, k=2)
    assert table.observe(KEY, address_with_cpl(own, 3, rng), ("10.0.1.1", 1), 0.0).added
    assert table.observe(KEY, address_with_cpl(own, 6, rng), ("10.0.2.1", 1), 10.0).added
    # A far newcomer splits the full lone bucket and enters the far half at 20.
    assert table.observe(KEY, address_with_cpl(own, 0, rng), ("10.0.3.1", 1), 20.0).added
    assert table.bucket_fill() == [(0, 1), (1, 2)]
    targets = table.buckets_needing_refresh(10.0 + GOOD_INTERVAL_S, GOOD_INTERVAL_S, rng)
    assert len(targets) == 1 and common_prefix_length(own, targets[0]) >= 1
    targets = table.buckets_needing_refresh(20.0 + GOOD_INTERVAL_S, GOOD_INTERVAL_S, rng)
    assert len(targets) == 1 and common_prefix_length(own, targets[0]) == 0


def test_the_last_buckets_refresh_targets_cover_all_of_it() -> None:
    """The last bucket holds every address at least as close as its depth, our own
    neighbourhood included: its refresh targets are drawn from all of it, not only from
    the half that differs from us in the next bit."""
    rng = random.Random(12)
    own = rng.randbytes(20)
    table = RoutingTable(own)  # one bucket: depth 0, the last
    shared_top_bit = []
    for i in range(32):
        (target,) = table.buckets_needing_refresh(i * GOOD_INTERVAL_S, GOOD_INTERVAL_S, rng)
        shared_top_bit.append(common_prefix_length(own, target) >= 1)
    assert any(shared_top_bit) and not all(shared_top_bit)


def test_a_removed_node_waiting_in_the_replacement_cache_is_not_promoted() -> None:
    """``remove`` forgets a node entirely: one waiting in the replacement cache does not
    come back when a slot of its bucket opens."""
    setup = FullFarBucket()
    table = setup.table
    cached = setup.far()
    assert table.observe(KEY, cached, ("10.0.9.1", 1), 100.0) == Observation()
    assert table.remove(cached) is None  # it was not in the table, only waiting
    for now in (200.0, 201.0, 202.0):
        assert table.record_failure(setup.a, now) is None
    assert cached not in table and setup.a in table


def _long_way(table: RoutingTable) -> None:
    """Make ``table`` weigh every replacement in full when it is next heard from, as it
    did before ``observe`` learned its short way (``NodeEntry.refused_at``)."""
    for bucket in table._buckets:
        for cached in bucket.replacements.values():
            cached.refused_at = -1


def _state(table: RoutingTable) -> list[tuple[list[NodeEntry], list[NodeEntry], float]]:
    """Every bucket's nodes and replacements, in their order, and its refresh time."""
    return [
        (list(bucket.nodes.values()), list(bucket.replacements.values()), bucket.touched_at)
        for bucket in table._buckets
    ]


# As ``operations``, and "again": a node heard again with the key and endpoint it last
# used (number 0), or with the other key (1) or port (2), so refused replacements are
# heard again often, after their buckets changed or not. An observation's number picks
# its port (odd or even) and key (above 2 or not).
# Most of the pool in bucket 0, so it fills and refuses; a few deep ones split it off.
crowded = st.sampled_from(
    [
        *(address_with_cpl(OWN, 0, random.Random(seed)) for seed in range(8)),
        *(address_with_cpl(OWN, cpl, random.Random(cpl)) for cpl in (3, 159)),
    ]
)
hearing_again = operation_lists(
    crowded,
    4,
    st.tuples(st.just("again"), crowded, st.just(""), st.just(0)),
    st.tuples(st.just("again"), crowded, st.just(""), st.integers(0, 2)),
)


@settings(max_examples=500, deadline=None)
@given(
    hearing_again,
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([5.0, GOOD_INTERVAL_S]),
)
def test_a_refused_replacement_heard_again_is_weighed_as_the_long_way_would(
    ops: list[tuple[str, bytes, str, int]],
    k: int,
    limit: int,
    max_failures: int,
    good_interval_s: float,
) -> None:
    """The short way for a replacement heard again (``RoutingTable.observe``) answers and
    leaves the table exactly as weighing it in full does, whatever happened in its bucket
    in between: nodes joining, leaving, moving, failing, going bad, waiting."""
    short, long = (
        RoutingTable(
            OWN,
            k=k,
            ip_prefix_limit=limit,
            good_interval_s=good_interval_s,
            max_failures=max_failures,
        )
        for _ in range(2)
    )
    other_key = b"\x01" * 32
    heard: dict[bytes, tuple[bytes, Endpoint]] = {}  # address -> the key, endpoint it used
    now = 0.0
    for op, address, host, number in ops:
        if op == "observe":
            heard[address] = (other_key if number > 2 else KEY, (host, number % 2))
        elif op == "again" and address in heard:
            key, (last_host, port) = heard[address]
            if number == 1:
                key = KEY if key == other_key else other_key
            heard[address] = (key, (last_host, 1 - port if number == 2 else port))
        if op in ("observe", "again") and address in heard:
            key, endpoint = heard[address]
            _long_way(long)
            assert short.observe(key, address, endpoint, now) == long.observe(
                key, address, endpoint, now
            )
        elif op == "confirm":
            moved = short.confirm_endpoint(address, (host, number), now)
            assert moved == long.confirm_endpoint(address, (host, number), now)
        elif op == "fail":
            for _ in range(number):
                assert short.record_failure(address, now) == long.record_failure(address, now)
        elif op == "remove":
            assert short.remove(address) == long.remove(address)
        elif op == "wait":
            now += number
        assert _state(short) == _state(long)
