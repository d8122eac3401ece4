"""The Kademlia routing table: which nodes we know, kept so lookups converge and stay honest.

Why it is shaped the way it is:

- Buckets split around our own address (Kademlia paper, section 2.4), so we know many nodes
  near us and few far away, and every lookup hop at least halves the distance to its target.
- A responsive old node is never evicted for a newcomer. Nodes that have been up for long
  tend to stay up, and it means flooding the network with fresh nodes cannot push honest
  ones out of our table. Newcomers wait in a small per-bucket replacement cache.
- A node that stops answering is dropped only when a replacement can take its place; until
  then it is marked bad and left out of lookups, so a short outage of our own link does not
  empty the table (the paper's section 4.1 advice).
- At most a few nodes per IPv4 /24 or IPv6 /64 in any bucket, so one network cannot fill our
  view of a region of the address space (an eclipse attack). Loopback is exempt so that many
  nodes can run on one machine.
- An endpoint change is never applied on the strength of one datagram: whoever replays a
  peer's authenticated datagram from another address would otherwise redirect that peer. The
  caller challenges the new endpoint and then calls ``confirm_endpoint``.

Sans-IO: time comes in as ``now`` (seconds) and randomness as a ``random.Random``.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

K = 8
ADDRESS_BYTES = 20
ADDRESS_BITS = ADDRESS_BYTES * 8
IPV4_PREFIX_BITS = 24
# Per bucket, at most ip_prefix_limit nodes of one IPv6 /48 (what one site is given; a
# /64 limit let one site fill a bucket with keys ground near a target's address).
IPV6_PREFIX_BITS = 48
# Quotas count IPv6 origins by /48, what one site is commonly given.
IPV6_ORIGIN_PREFIX_BITS = 48
IP_PREFIX_CACHE_HOSTS = 4096
NEVER: float = float("-inf")

Endpoint = tuple[str, int]


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two addresses of the same length, as an unsigned integer."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare addresses of {len(a)} and {len(b)} bytes")
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def common_prefix_length(a: bytes, b: bytes) -> int:
    """How many leading bits ``a`` and ``b`` share (their full bit length if they are equal)."""
    return len(a) * 8 - distance(a, b).bit_length()


@dataclass
class NodeEntry:
    """A node we know: its key, address, where it speaks from, and how it has behaved."""

    key: bytes  # 32-byte Ed25519 public key (opaque here)
    address: bytes  # 20-byte address
    endpoint: Endpoint
    first_seen: float
    last_seen: float
    failures: int = 0  # consecutive unanswered queries
    # The address as an integer, so sorting by XOR distance does no byte conversion.
    address_int: int = field(init=False, repr=False, compare=False)
    # A replacement only: its bucket's ``changed`` when the bucket last refused it a
    # place (``RoutingTable.observe``'s short way for the refused heard again).
    refused_at: int = field(default=-1, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.address_int = int.from_bytes(self.address, "big")


@dataclass(frozen=True)
class Observation:
    """What ``RoutingTable.observe`` did, and what it asks the caller to do next."""

    added: bool = False  # newly inserted into a bucket
    # The bucket is full: ping this least-recently-seen, questionable node. The newcomer
    # waits in the replacement cache and takes its place if it keeps failing.
    ping: NodeEntry | None = None
    # A known node spoke from a new endpoint. Nothing was updated: the caller must challenge
    # the new endpoint and then call ``confirm_endpoint``.
    endpoint_changed: bool = False
    evicted: NodeEntry | None = None  # a bad node the newcomer replaced


_NOTHING_TO_DO = Observation()
_ENDPOINT_CHANGED = Observation(endpoint_changed=True)


@dataclass
class _Bucket:
    touched_at: float  # last time a node in it was observed or inserted, or it was refreshed
    nodes: dict[bytes, NodeEntry] = field(default_factory=dict)  # least recently seen first
    replacements: dict[bytes, NodeEntry] = field(default_factory=dict)  # least recent first
    # Counts the nodes that left or moved to another endpoint: what decides whether a
    # refused replacement may enter now (a free place; the per-network limit). Nothing
    # else can: a bucket refuses only while full of good nodes, so a node joins only
    # after one left; and a node that goes bad is replaced at once by the freshest
    # admissible replacement (``record_failure``), which a refused one is while nobody
    # left or moved, so the bad one leaves. A split makes new buckets, counting anew.
    changed: int = 0


def normalize_endpoint(endpoint: Endpoint) -> Endpoint:
    """One spelling per endpoint: an IPv4-mapped IPv6 host (``::ffff:a.b.c.d``) as IPv4.

    A dual-stack socket reports IPv4 peers in the mapped form; without this the same
    node would be two endpoints (two validations, two quota slots, docs/PROTOCOL.md,
    "13.4 Dual stack"). IPv6 hosts are also put in their compressed form.
    """
    host, port = endpoint
    if ":" not in host:
        return endpoint  # IPv4 text or a name: the kernel and parse_endpoint spell it one way
    normal = _normal_host(host)
    return endpoint if normal == host else (normal, port)


@functools.lru_cache(maxsize=IP_PREFIX_CACHE_HOSTS)
def _normal_host(host: str) -> str:
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` names (an IPv4-mapped IPv6 one as IPv4), None for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=IP_PREFIX_CACHE_HOSTS)
def _ip_prefix(host: str) -> str | None:
    """The network a host shares with its neighbours for the per-bucket limit.

    ``None`` for loopback (exempt). A host that is not an IP address is its own prefix.
    """
    ip = _ip(host)
    if ip is None:
        return f"host:{host}"
    if ip.is_loopback:
        return None
    prefix_bits = IPV4_PREFIX_BITS if ip.version == 4 else IPV6_PREFIX_BITS
    return str(ipaddress.ip_network(f"{ip}/{prefix_bits}", strict=False))


@functools.lru_cache(maxsize=IP_PREFIX_CACHE_HOSTS)
def origin_network(endpoint: Endpoint) -> str:
    """The network a datagram came from, for per-origin quotas: an IPv4 /24, an IPv6 /48.

    One host, or one network of hosts, is what an attacker has; keys are free. Loopback
    endpoints each count alone (host and port), so nodes on one machine are told apart.
    """
    host, port = endpoint
    ip = _ip(host)
    if ip is None:
        return f"host:{host}"
    if ip.is_loopback:
        return f"{ip}:{port}"
    prefix_bits = IPV4_PREFIX_BITS if ip.version == 4 else IPV6_ORIGIN_PREFIX_BITS
    return str(ipaddress.ip_network(f"{ip}/{prefix_bits}", strict=False))


def _check_address(address: bytes) -> None:
    if len(address) != ADDRESS_BYTES:
        raise ValueError(f"an address is {ADDRESS_BYTES} bytes, not {len(address)}")


class RoutingTable:
    """k-buckets that split around ``own_address``, with liveness and eclipse rules."""

    def __init__(
        self,
        own_address: bytes,
        *,
        k: int = K,
        ip_prefix_limit: int = 2,
        good_interval_s: float = 900.0,
        max_failures: int = 3,
    ) -> None:
        _check_address(own_address)
        if k < 1 or ip_prefix_limit < 1 or max_failures < 1:
            raise ValueError("k, ip_prefix_limit and max_failures must be at least 1")
        self.own_address = own_address
        self.k = k
        self.ip_prefix_limit = ip_prefix_limit
        self.good_interval_s = good_interval_s
        self.max_failures = max_failures
        self._own_int = int.from_bytes(own_address, "big")
        # Bucket i < n-1 holds nodes whose common prefix with us is exactly i bits; the last
        # bucket holds everything closer, our own address included.
        self._buckets: list[_Bucket] = [_Bucket(touched_at=NEVER)]
        self._entries: dict[bytes, NodeEntry] = {}

    def observe(self, key: bytes, address: bytes, endpoint: Endpoint, now: float) -> Observation:
        """Record an authenticated datagram from a node: refresh it, or try to insert it.

        The common answers are shared constants (an ``Observation`` is frozen): every
        datagram from a table peer is observed, and building one cost a tenth of it.

        A replacement heard again from where it was refused, with the same key, is refused
        again the short way if no node of its bucket left or moved since
        (``_Bucket.changed``): only its time and place in the cache move, as ``_insert``
        would leave them. Most of a busy relay's peers are replacements, and
        ``_insert``'s scans cost a sixth of relaying their datagrams.
        """
        _check_address(address)
        if address == self.own_address:
            return _NOTHING_TO_DO
        entry = self._entries.get(address)
        if entry is None:
            bucket = self._bucket_for(int.from_bytes(address, "big"))
            cached = bucket.replacements.pop(address, None)
            if cached is None:
                first_seen = now
            elif (
                cached.refused_at == bucket.changed
                and cached.key == key
                and cached.endpoint == endpoint
            ):
                cached.last_seen = now
                bucket.replacements[address] = cached
                return self._refused(bucket, now)
            else:
                first_seen = cached.first_seen
            return self._insert(NodeEntry(key, address, endpoint, first_seen, now), now)
        if entry.endpoint != endpoint:
            return _ENDPOINT_CHANGED
        self._refresh(entry, now)
        return _NOTHING_TO_DO

    def has_room(self, address: bytes, endpoint: Endpoint) -> bool:
        """Could ``observe`` put this node in the table now, not merely cache it?

        True for a node already in it (a new endpoint must be confirmed), when its bucket
        has a free place or can split, or when a bad node could leave for it; False when
        its bucket (or its network's share of it) is full of responsive nodes. Nothing
        changes: a first contact answered at once is challenged only if this holds
        (docs/PROTOCOL.md, "5.1", "First contact").
        """
        if address == self.own_address:
            return False
        if address in self._entries:
            return True
        bucket = self._bucket_for(int.from_bytes(address, "big"))
        prefix = _ip_prefix(endpoint[0])
        if prefix is not None:
            same_network = [e for e in bucket.nodes.values() if _ip_prefix(e.endpoint[0]) == prefix]
            if len(same_network) >= self.ip_prefix_limit:
                return self._least_recent_bad(same_network) is not None
        if len(bucket.nodes) < self.k or bucket is self._buckets[-1]:
            return True
        return self._least_recent_bad(bucket.nodes.values()) is not None

    def confirm_endpoint(self, address: bytes, endpoint: Endpoint, now: float) -> bool:
        """Move a known node to ``endpoint`` once it answered a challenge sent there.

        Returns False, changing nothing, if the node is unknown or the move would put more
        than ``ip_prefix_limit`` nodes of one network in its bucket.
        """
        entry = self._entries.get(address)
        if entry is None:
            return False
        bucket = self._bucket_for(entry.address_int)
        prefix = _ip_prefix(endpoint[0])
        others = (e for e in bucket.nodes.values() if e is not entry)
        if prefix is not None and self._count_prefix(others, prefix) >= self.ip_prefix_limit:
            return False
        entry.endpoint = endpoint
        bucket.changed += 1
        self._refresh(entry, now)
        return True

    def record_failure(self, address: bytes, now: float) -> NodeEntry | None:
        """Count an unanswered query; drop the node once it is bad and someone can replace it.

        The freshest admissible node in the bucket's replacement cache takes its place.
        Returns the removed entry, if any. A bad node without a replacement stays (out of
        ``closest()``) until it answers again or a newcomer replaces it.
        """
        entry = self._entries.get(address)
        if entry is None:
            return None
        entry.failures += 1
        if entry.failures < self.max_failures:
            return None
        bucket = self._bucket_for(entry.address_int)
        replacement = self._freshest_admissible(bucket, leaving=entry)
        if replacement is None:
            return None
        self._detach(bucket, entry)
        del bucket.replacements[replacement.address]
        self._attach(bucket, replacement)
        # The replacement may have been heard from before the bucket's other nodes.
        bucket.nodes = dict(sorted(bucket.nodes.items(), key=lambda item: item[1].last_seen))
        bucket.touched_at = now
        return entry

    def remove(self, address: bytes) -> NodeEntry | None:
        """Forget a node entirely (table and replacement cache); returns its table entry.

        Nobody is promoted: cached nodes enter the freed slot when they are next heard from.
        """
        bucket = self._bucket_for(int.from_bytes(address, "big"))
        bucket.replacements.pop(address, None)
        entry = self._entries.get(address)
        if entry is not None:
            self._detach(bucket, entry)
        return entry

    def get(self, address: bytes) -> NodeEntry | None:
        return self._entries.get(address)

    def closest(
        self, target: bytes, count: int = K, *, exclude: Collection[bytes] = ()
    ) -> list[NodeEntry]:
        """The ``count`` usable (not bad) nodes nearest to ``target``, nearest first.

        The buckets are visited nearest first instead of sorting the table (a relay asks
        this for every item it relays). With ``j`` the bits ``target`` shares with us
        (at most the last bucket's depth), XOR distance orders the buckets in groups that
        never overlap: bucket ``j`` (its nodes share more than ``j`` bits with the
        target), then every deeper bucket together (they share exactly ``j``), then
        buckets ``j - 1``, ``j - 2``, ... 0 (bucket ``i`` shares exactly ``i``). Only the
        groups needed are sorted. tests/test_routing.py holds it equal to a full sort.
        """
        target_int = int.from_bytes(target, "big")
        excluded = exclude if isinstance(exclude, set | frozenset) else frozenset(exclude)
        buckets = self._buckets
        last = len(buckets) - 1
        shared = min(ADDRESS_BITS - (target_int ^ self._own_int).bit_length(), last)
        nearest = [buckets[last:]] if shared == last else [[buckets[shared]], buckets[shared + 1 :]]
        groups = nearest + [[bucket] for bucket in reversed(buckets[:shared])]
        found: list[NodeEntry] = []
        for group in groups:
            candidates = [
                entry
                for bucket in group
                for entry in bucket.nodes.values()
                if entry.failures < self.max_failures and entry.address not in excluded
            ]
            candidates.sort(key=lambda entry: entry.address_int ^ target_int)
            found += candidates
            if len(found) >= count:
                break
        return found[:count]

    def is_among_closest(self, address: bytes, target: bytes, count: int = K) -> bool:
        """Would ``address`` rank within the ``count`` nearest to ``target`` that we know?

        The candidates are our usable nodes and ourselves. Distinct addresses are never at
        the same distance from a target, so the rank is unambiguous.
        """
        target_int = int.from_bytes(target, "big")
        address_distance = int.from_bytes(address, "big") ^ target_int
        closer = sum(
            1
            for entry in self._entries.values()
            if entry.failures < self.max_failures
            and entry.address_int ^ target_int < address_distance
        )
        if self._own_int ^ target_int < address_distance:  # never true when we are `address`
            closer += 1
        return closer < count

    def buckets_needing_refresh(
        self, now: float, refresh_interval_s: float, rng: random.Random
    ) -> list[bytes]:
        """A random lookup target inside each bucket left untouched for ``refresh_interval_s``.

        Each such bucket counts as refreshed at ``now``.
        """
        targets: list[bytes] = []
        last = len(self._buckets) - 1
        for depth, bucket in enumerate(self._buckets):
            if now - bucket.touched_at < refresh_interval_s:
                continue
            bucket.touched_at = now
            # Bucket `depth` shares exactly `depth` leading bits with us, so its next bit is
            # the opposite of ours; the last bucket shares at least `depth` bits.
            fixed_bits = depth if depth == last else depth + 1
            free_bits = ADDRESS_BITS - fixed_bits
            prefix = self._own_int >> free_bits
            if depth != last:
                prefix ^= 1
            target_int = (prefix << free_bits) | rng.getrandbits(free_bits)
            targets.append(target_int.to_bytes(ADDRESS_BYTES, "big"))
        return targets

    def bucket_fill(self) -> list[tuple[int, int]]:
        """(bucket depth, node count) for each bucket, farthest first."""
        return [(depth, len(bucket.nodes)) for depth, bucket in enumerate(self._buckets)]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[NodeEntry]:
        # A snapshot, so the caller may remove nodes while iterating.
        return iter(list(self._entries.values()))

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def _bucket_for(self, address_int: int) -> _Bucket:
        prefix_length = ADDRESS_BITS - (address_int ^ self._own_int).bit_length()
        return self._buckets[min(prefix_length, len(self._buckets) - 1)]

    def _insert(self, newcomer: NodeEntry, now: float) -> Observation:
        bucket = self._bucket_for(newcomer.address_int)
        # This stops by 160 buckets: the last one then holds only the address that differs
        # from ours in the final bit, which cannot be a newcomer once it is in the table.
        while len(bucket.nodes) >= self.k and bucket is self._buckets[-1]:
            self._split_last()
            bucket = self._bucket_for(newcomer.address_int)

        victim: NodeEntry | None = None
        prefix = _ip_prefix(newcomer.endpoint[0])
        if prefix is not None:
            same_network = [
                entry for entry in bucket.nodes.values() if _ip_prefix(entry.endpoint[0]) == prefix
            ]
            if len(same_network) >= self.ip_prefix_limit:
                # The one way in for this network is taking the place of its own bad node.
                victim = self._least_recent_bad(same_network)
                if victim is None:
                    return _NOTHING_TO_DO
        if victim is None and len(bucket.nodes) >= self.k:
            victim = self._least_recent_bad(bucket.nodes.values())
            if victim is None:
                self._cache(bucket, newcomer)
                newcomer.refused_at = bucket.changed
                return self._refused(bucket, now)
        if victim is not None:
            self._detach(bucket, victim)
        self._attach(bucket, newcomer)
        bucket.touched_at = now
        return Observation(added=True, evicted=victim)

    def _refused(self, bucket: _Bucket, now: float) -> Observation:
        """A newcomer was refused a place in the full ``bucket`` (and cached): ask for a
        ping of its least recently seen node if that one is questionable."""
        oldest = next(iter(bucket.nodes.values()))
        if now - oldest.last_seen > self.good_interval_s:
            return Observation(ping=oldest)
        return _NOTHING_TO_DO

    def _split_last(self) -> None:
        old = self._buckets.pop()
        far, near = _Bucket(old.touched_at), _Bucket(old.touched_at)
        self._buckets += [far, near]
        # Iterating in order keeps both halves ordered by recency. The last bucket has no
        # replacement cache to share out: while it can split, nobody waits to enter it.
        for address, entry in old.nodes.items():
            self._bucket_for(entry.address_int).nodes[address] = entry

    def _refresh(self, entry: NodeEntry, now: float) -> None:
        entry.last_seen = now
        entry.failures = 0
        bucket = self._bucket_for(entry.address_int)
        del bucket.nodes[entry.address]
        bucket.nodes[entry.address] = entry
        bucket.touched_at = now

    def _attach(self, bucket: _Bucket, entry: NodeEntry) -> None:
        bucket.nodes[entry.address] = entry
        self._entries[entry.address] = entry

    def _detach(self, bucket: _Bucket, entry: NodeEntry) -> None:
        del bucket.nodes[entry.address]
        del self._entries[entry.address]
        bucket.changed += 1

    def _cache(self, bucket: _Bucket, newcomer: NodeEntry) -> None:
        """Keep ``newcomer`` as the freshest replacement, bounded per network and to k."""
        cache = bucket.replacements
        cache.pop(newcomer.address, None)
        prefix = _ip_prefix(newcomer.endpoint[0])
        if prefix is not None:
            same_network = [
                address
                for address, entry in cache.items()
                if _ip_prefix(entry.endpoint[0]) == prefix
            ]
            for address in same_network[: max(0, len(same_network) - self.ip_prefix_limit + 1)]:
                del cache[address]
        cache[newcomer.address] = newcomer
        while len(cache) > self.k:
            del cache[next(iter(cache))]

    def _freshest_admissible(self, bucket: _Bucket, *, leaving: NodeEntry) -> NodeEntry | None:
        """The most recently heard replacement that fits the prefix limit once ``leaving`` goes."""
        staying = [entry for entry in bucket.nodes.values() if entry is not leaving]
        for candidate in reversed(bucket.replacements.values()):
            prefix = _ip_prefix(candidate.endpoint[0])
            if prefix is None or self._count_prefix(staying, prefix) < self.ip_prefix_limit:
                return candidate
        return None

    def _least_recent_bad(self, entries: Iterable[NodeEntry]) -> NodeEntry | None:
        bad = [entry for entry in entries if entry.failures >= self.max_failures]
        return min(bad, key=lambda entry: entry.last_seen, default=None)

    @staticmethod
    def _count_prefix(entries: Iterable[NodeEntry], prefix: str) -> int:
        return sum(1 for entry in entries if _ip_prefix(entry.endpoint[0]) == prefix)
