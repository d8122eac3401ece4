"""Reachability: what peers observe of us, what kind of network we sit behind, how long
our NAT keeps an idle mapping, and which clients hold a binding with us.

Pure logic, no I/O and no clock of its own (docs/PROTOCOL.md, "12. Reachability"); the
node's agent (``reachability_agent.py``) sends and receives the frames and feeds the
results in:

- ``ObservationTally``: the endpoints peers saw our datagrams come from (``Pong.observed``),
  one per network of origin, bounded. Keys are free and addresses are not, so it counts
  networks: a few hostile peers on a few networks cannot outvote the honest ones.
- ``classify``: the NAT kind from those observations, our local endpoints and the outcome
  of dial-back probes.
- ``IntervalLearner``: the keep-alive interval, learned from delayed echoes (grow on
  success, shrink on loss, between a floor and a ceiling).
- ``AttachTable``: a relay's attached clients, bounded per key, per network of origin, per
  wide network and in all.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from comm_tui.protocol.admission import OriginBound, wide_network
from comm_tui.protocol.routing import Endpoint

ReachabilityKind = Literal["unknown", "public", "cone", "symmetric", "firewalled"]

# docs/PROTOCOL.md, "12.1": networks whose latest observation we keep, how long one
# counts, and how many distinct networks must agree before an endpoint is ours.
OBSERVATION_NETWORKS_MAX = 64
OBSERVATION_TTL_S = 3600.0
OBSERVATION_QUORUM = 3

# docs/PROTOCOL.md, "12.5": the keep-alive interval. 20 s to start: the shortest
# unanswered-mapping timeout met in home routers (the issue measured 20 s / 30 s). Floor
# 10 s: shorter than any router keeps a mapping, and 4 bindings at 10 s still cost under
# 100 B/s. Ceiling 120 s: RFC 4787 (REQ-5) asks NATs to keep idle UDP mappings at least
# 2 minutes, so no compliant NAT needs less; beyond it a relay that vanished would be
# noticed too late.
KEEPALIVE_START_S = 20.0
KEEPALIVE_FLOOR_S = 10.0
KEEPALIVE_CEILING_S = 120.0
# An echo test of idle D seconds (one relay at a time): the first tries 1.5x the interval;
# once a loss bounds it, a bisection between the longest success and the shortest loss.
ECHO_GROW = 1.5
# Keep-alives go out this fraction of the longest idle period that was survived.
ECHO_MARGIN = 0.9
# A loss at or under the interval in use shrinks it to this fraction of the lost delay.
ECHO_SHRINK = 0.5
# The search stops when success and loss are this close (seconds, or this fraction).
ECHO_RESOLUTION_S = 5.0
ECHO_RESOLUTION_FRACTION = 0.1
# After converging, the bound above is forgotten this often, so a NAT that now keeps
# mappings longer (another network, a new router) is noticed.
ECHO_RETEST_S = 1800.0
# How late an echo may be (round trip and timer granularity) before it counts as lost.
ECHO_GRACE_S = 3.0
# A relay delays an echo at most this long.
ECHO_MAX_DELAY_S = KEEPALIVE_CEILING_S * 1.5

# docs/PROTOCOL.md, "12.4": a relay's attached clients. An entry lives 3 of its client's
# keep-alive intervals (clamped to floor and ceiling); one per key; per network of
# origin (a household behind one NAT shares it), per wide network (16 full networks of
# one provider, a quarter of the table: one provider's /48s, 65,536 to a /32, evicted
# every other client) and in all, the least recently refreshed of the fullest network
# of the fullest wide network gives way.
ATTACH_LIFETIME_INTERVALS = 3
ATTACH_PER_NETWORK = 16
ATTACH_PER_WIDE_NETWORK = 256
ATTACH_MAX = 1024


@dataclass(frozen=True)
class Reachability:
    """How reachable this node is (docs/PROTOCOL.md, "12.3").

    ``public_endpoint``: where peers of several networks agree they see us (or a port
    mapping a probe confirmed), None until they do. ``checked_at``: when the kind was
    last decided (0.0: never).
    """

    kind: ReachabilityKind
    public_endpoint: Endpoint | None
    checked_at: float


# Hosts whose parse is remembered: the send path asks about every destination of every
# datagram (``solicitation_key``), ``ipaddress`` takes ~20 us a parse, and a node talks
# to a few thousand hosts. A forged-source flood only cycles the cache (LRU, bounded).
HOST_CACHE_ENTRIES = 4096


@lru_cache(maxsize=HOST_CACHE_ENTRIES)
def canonical_host(host: str) -> str:
    """An IP address written one way (IPv4-mapped IPv6 as IPv4), so endpoints compare."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def canonical(endpoint: Endpoint) -> Endpoint:
    return (canonical_host(endpoint[0]), endpoint[1])


@lru_cache(maxsize=HOST_CACHE_ENTRIES)
def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(canonical_host(host)).is_loopback
    except ValueError:
        return False


def probe_target_allowed(target: Endpoint, asker: Endpoint) -> bool:
    """May a node send a probe (or a punching ping) to ``target`` for a peer speaking
    from ``asker``?

    Only to a unicast address of the asker's own scope: loopback for a loopback peer, a
    global address for a peer on a global one, a non-global one (a LAN, the test ranges)
    for a peer on such an address. A stranger on the internet must never aim our
    datagrams at our own machine or our LAN (docs/PROTOCOL.md, "12.2").
    """
    scope = _unicast_scope(target)
    return scope is not None and scope == _scope_of(asker[0])


# Scopes from our own machine outward: a peer may name endpoints of its own scope or
# farther out, never nearer to us than itself.
_SCOPE_DISTANCE = {"loopback": 0, "local": 1, "global": 2}


def named_endpoint_allowed(target: Endpoint, namer: Endpoint) -> bool:
    """May a peer speaking from ``namer`` make us send to ``target`` by naming it (an
    entry of its ``Nodes`` answer, which a lookup sends a FindNode)?

    Only a unicast address of its own scope or farther out: a peer on the internet names
    internet endpoints, a LAN peer LAN and internet ones, a loopback peer any. So a
    stranger on the internet never aims our lookups at our own machine or LAN, nor a
    LAN host at our machine (docs/PROTOCOL.md, "4"), while a LAN peer that knows the
    internet still brings us there. Looser than ``probe_target_allowed``: a probe
    tests the asker's own endpoint, a lookup asks whoever the answer names.
    """
    scope = _unicast_scope(target)
    if scope is None:
        return False
    namer_scope = _scope_of(namer[0])
    return namer_scope is not None and _SCOPE_DISTANCE[scope] >= _SCOPE_DISTANCE[namer_scope]


def _unicast_scope(target: Endpoint) -> str | None:
    """The scope of ``target``, or None when it is no unicast IP endpoint (multicast,
    unspecified, broadcast, port 0)."""
    try:
        ip = ipaddress.ip_address(canonical_host(target[0]))
    except ValueError:
        return None
    if not 0 < target[1] < 65536:
        return None
    if ip.is_multicast or ip.is_unspecified or (ip.version == 4 and ip == _BROADCAST):
        return None
    return _scope(ip)


def _scope(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Loopback, local or global; an IPv6 address that carries an IPv4 one (6to4, NAT64,
    the IPv4-compatible and -translated forms) is no farther out than that IPv4 address:
    Python calls ``::127.0.0.1`` or ``64:ff9b::a00:1`` global, and a host that routes
    them may deliver to its own machine or LAN (red6)."""
    if ip.is_loopback:
        return "loopback"
    scope = "global" if ip.is_global else "local"
    if ip.version == 6:
        inner = _embedded_ipv4(ip)
        if inner is not None:
            nearer = _scope(inner)
            if _SCOPE_DISTANCE[nearer] < _SCOPE_DISTANCE[scope]:
                return nearer
    return scope


# NAT64's well-known prefix (RFC 6052) and its local-use one (RFC 8215), which carries
# the IPv4 address in its last 32 bits too as the usual /96 of it.
_NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, if any."""
    value = int(ip)  # IPv4-mapped ones never get here: canonical_host made them IPv4
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in prefix for prefix in _NAT64_PREFIXES) or value >> 32 == 0xFFFF0000:
        # NAT64 (the /96 form, which local-use /48 prefixes use too); IPv4-translated
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible (deprecated, still routed by some)
        return ipaddress.IPv4Address(value)
    return None


def _scope_of(host: str) -> str | None:
    try:
        return _scope(ipaddress.ip_address(canonical_host(host)))
    except ValueError:
        return None


# Observations are counted per network, coarser than quotas' for IPv6: a /48 is what a
# home is given, but anyone can hold thousands of them; a /32 is what a provider holds.
TALLY_IPV6_PREFIX_BITS = 32


def tally_network(endpoint: Endpoint) -> str:
    """The network an observation counts for (docs/PROTOCOL.md, "12.1"): an IPv4 /24,
    an IPv6 /32; on loopback, each host and port."""
    host = canonical_host(endpoint[0])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"host:{host}"
    if ip.is_loopback:
        return f"{ip}:{endpoint[1]}"
    bits = 24 if ip.version == 4 else TALLY_IPV6_PREFIX_BITS
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@lru_cache(maxsize=HOST_CACHE_ENTRIES)
def solicitation_key(endpoint: Endpoint) -> str:
    """What a NAT filters inbound datagrams by, at its most lenient: the remote IP.

    A probe from an IP we sent to lately may have come in through the mapping we opened
    (an address-restricted NAT), so it proves nothing. On loopback, every node shares one
    IP, so there it is the endpoint (as ``routing.origin_network`` does).
    """
    host = canonical_host(endpoint[0])
    return f"{host}:{endpoint[1]}" if is_loopback(host) else host


class ObservationTally:
    """The latest endpoint each network of origin saw us at (docs/PROTOCOL.md, "12.1").

    One entry per network, the most recent winning, at most ``OBSERVATION_NETWORKS_MAX``,
    each counted for ``OBSERVATION_TTL_S``. When full, a new network takes only the slot
    of an expired observation: newcomers (an attacker's many networks) cannot push out
    the networks already counted, whose refreshes keep their slots.
    """

    def __init__(self) -> None:
        self._by_network: OrderedDict[str, tuple[Endpoint, float]] = OrderedDict()
        # What ``recent`` found, and what was derived from it, for any ``now`` in
        # [_valid_from, _valid_until]: until an observation is added or the oldest one
        # counted ages out. The node reclassifies on every timer tick and every answer,
        # and on loopback each peer is a network of its own: rebuilding the view each
        # time was a walk of 64 entries and three Counters, most of an idle node's CPU.
        self._recent: dict[str, Endpoint] | None = None
        self._valid_from = 0.0
        self._valid_until = 0.0
        self._agreed: tuple[Endpoint | None] | None = None
        self._varies: bool | None = None
        self._nat: dict[frozenset[Endpoint], bool] = {}

    def _forget_view(self) -> None:
        self._recent, self._agreed, self._varies = None, None, None
        self._nat.clear()

    def add(self, network: str, observed: Endpoint, now: float) -> bool:
        """Count it; False if the tally is full of live observations from other networks."""
        if network not in self._by_network and len(self._by_network) >= OBSERVATION_NETWORKS_MAX:
            oldest_network, (_, at) = next(iter(self._by_network.items()))
            if now - at <= OBSERVATION_TTL_S:
                return False
            del self._by_network[oldest_network]
        held = self._by_network.pop(network, None)
        seen = canonical(observed)
        self._by_network[network] = (seen, now)
        if held is None or held[0] != seen or now - held[1] > OBSERVATION_TTL_S:
            # A network seeing us anew or elsewhere changes the view. The same endpoint
            # again, still counted, only lives longer: every view valid now stays so.
            self._forget_view()
        return True

    def recent(self, now: float) -> Mapping[str, Endpoint]:
        """Network -> the endpoint it saw, for observations younger than the TTL."""
        if self._recent is not None and self._valid_from <= now <= self._valid_until:
            return self._recent
        self._forget_view()
        recent: dict[str, Endpoint] = {}
        until = float("inf")
        for network, (endpoint, at) in self._by_network.items():
            if now - at <= OBSERVATION_TTL_S:
                recent[network] = endpoint
                until = min(until, at + OBSERVATION_TTL_S)
        self._recent, self._valid_from, self._valid_until = recent, now, until
        return recent

    def __len__(self) -> int:
        return len(self._by_network)

    def agreed(self, now: float) -> Endpoint | None:
        """The endpoint at least ``OBSERVATION_QUORUM`` networks agree on, and more than
        half of them: a minority of networks, however many keys, cannot set it."""
        recent = self.recent(now)
        if self._agreed is None:
            self._agreed = (_agreed(recent),)
        return self._agreed[0]

    def nat_suspected(self, local: frozenset[Endpoint], now: float) -> bool:
        """Do more networks see us somewhere other than where we are bound than at it?

        False when we do not know where we are bound: nothing to compare with.
        """
        if not local:
            return False
        recent = self.recent(now)
        suspected = self._nat.get(local)
        if suspected is None:
            seen = list(recent.values())
            away = sum(1 for endpoint in seen if endpoint not in local)
            suspected = self._nat[local] = away > len(seen) - away
        return suspected

    def mapping_varies(self, now: float) -> bool:
        """Do networks see us at one IP but at different ports, with no port held by more
        than half of them? That is a symmetric NAT (a new mapping per destination); a
        hostile minority reporting other ports cannot make it so."""
        recent = self.recent(now)
        if self._varies is None:
            self._varies = _mapping_varies(list(recent.values()))
        return self._varies


def _agreed(recent: Mapping[str, Endpoint]) -> Endpoint | None:
    """``ObservationTally.agreed`` over the observations counted now."""
    counts = Counter(recent.values())
    if not counts:
        return None
    endpoint, votes = max(counts.items(), key=lambda item: item[1])
    total = sum(counts.values())
    return endpoint if votes >= OBSERVATION_QUORUM and 2 * votes > total else None


def _mapping_varies(seen: list[Endpoint]) -> bool:
    """``ObservationTally.mapping_varies`` over the endpoints counted now."""
    by_ip = Counter(host for host, _ in seen)
    if not by_ip:
        return False
    ip, n = max(by_ip.items(), key=lambda item: item[1])
    if n < 2:
        return False
    ports = Counter(port for host, port in seen if host == ip)
    return 2 * max(ports.values()) <= n


ProbeOutcome = Literal["none", "arrived", "failed"]


def classify(
    tally: ObservationTally,
    local: frozenset[Endpoint],
    probe: ProbeOutcome,
    mapped: bool,
    now: float,
) -> ReachabilityKind:
    """The kind of network we sit behind (docs/PROTOCOL.md, "12.3").

    ``probe``: whether an unsolicited dial-back probe reached us ("arrived"), none did in
    every round we asked for ("failed"), or we have no answer yet. ``mapped``: a probe
    reached a port mapping of ours.

    - public: a probe arrived and we receive at the endpoint we are bound to (or at a
      port mapping a probe reached);
    - symmetric: peers see different ports, whatever the probes say;
    - cone: peers agree on an endpoint that is not ours (a probe arriving there means a
      full cone; none, a restricted one: both keep the mapping, both are clients);
    - firewalled: bound where peers see us, and no probe gets in;
    - unknown otherwise.
    """
    if mapped:
        return "public"
    if tally.mapping_varies(now):
        return "symmetric"
    if not tally.recent(now):
        return "unknown"
    nat = tally.nat_suspected(local, now)
    if probe == "arrived":
        return "cone" if nat else "public"
    if probe == "failed":
        if nat:
            return "cone"
        return "firewalled" if local else "unknown"
    return "unknown"


def family_of(host: str) -> int:
    """The address family of ``host``: 6 for IPv6, else 4 (IPv4-mapped IPv6 is IPv4)."""
    return 6 if ":" in canonical_host(host) else 4


FAMILIES = (4, 6)


class FamilyTallies:
    """An observation tally per address family (docs/PROTOCOL.md, "12.1").

    A node reached over IPv4 and over IPv6 has an endpoint in each, behind a NAT or not
    independently, and networks cost differently in each: many IPv6 networks are
    cheaper to hold than many IPv4 ones. One tally for both let observations of one
    family outvote the other's (an IPv6 majority made an IPv4-public node a symmetric-NAT
    client and took its announced endpoint). The family is that of the ponger's
    endpoint, the path the observation came over; an observation of the other family
    over it is no observation of that path and is not counted.
    """

    def __init__(self) -> None:
        self._tallies = {family: ObservationTally() for family in FAMILIES}

    def family(self, family: int) -> ObservationTally:
        return self._tallies[family]

    def add(self, ponger: Endpoint, observed: Endpoint, now: float) -> bool:
        """Count what the ponger at ``ponger`` saw of us; False if not counted (the other
        family's endpoint, or that family's tally full of live observations)."""
        family = family_of(ponger[0])
        if family_of(observed[0]) != family:
            return False
        return self._tallies[family].add(tally_network(ponger), observed, now)

    def recent(self, now: float) -> dict[str, Endpoint]:
        """Network -> the endpoint it saw, both families (their networks never collide)."""
        return {n: e for tally in self._tallies.values() for n, e in tally.recent(now).items()}

    def deciding(self, now: float) -> int:
        """The family whose verdict stands unless the other's is public: IPv4 when it
        has live observations (most peers reach most nodes over it), else IPv6."""
        return 4 if self._tallies[4].recent(now) else 6

    def evidence(self, local: frozenset[Endpoint], now: float) -> tuple[Endpoint | None, bool]:
        """What a change of calls for a new probe round (12.2): the deciding family's
        agreed endpoint and whether it suspects a NAT. The other family's evidence
        changing does not reset the probes, which would leave the deciding family's
        verdict unknown meanwhile: that was a way to demote it from the other family."""
        family = self.deciding(now)
        tally = self._tallies[family]
        return tally.agreed(now), tally.nat_suspected(_of_family(local, family), now)


def _of_family(local: frozenset[Endpoint], family: int) -> frozenset[Endpoint]:
    return frozenset(e for e in local if family_of(e[0]) == family)


@dataclass(frozen=True)
class Judgement:
    """A kind, the endpoint the family that decided it agrees on, and whether that
    family suspects a NAT (client mode while the kind is unknown)."""

    kind: ReachabilityKind
    agreed: Endpoint | None
    nat_suspected: bool


def judge(
    tallies: FamilyTallies,
    local: frozenset[Endpoint],
    probe: ProbeOutcome,
    mapped: bool,
    now: float,
) -> Judgement:
    """Classify each family on its own tally and local endpoints (``classify``), then
    (docs/PROTOCOL.md, "12.3"): public if either family is (IPv4's endpoint first);
    otherwise the deciding family's verdict (``FamilyTallies.deciding``), whose NAT
    suspicion alone decides client mode while the kind is unknown. So observations of
    one family can take neither the other's `public`, nor its endpoint, nor make it a
    client.
    """
    deciding = tallies.deciding(now)
    verdicts: dict[int, Judgement] = {}
    for family in FAMILIES:
        tally = tallies.family(family)
        mine = _of_family(local, family)
        kind = classify(tally, mine, probe, mapped, now)
        verdicts[family] = Judgement(kind, tally.agreed(now), tally.nat_suspected(mine, now))
    for family in FAMILIES:
        if verdicts[family].kind == "public":
            return verdicts[family]
    return verdicts[deciding]


class IntervalLearner:
    """The keep-alive interval, learned from delayed echoes (docs/PROTOCOL.md, "12.5").

    ``good`` is the longest idle period an echo survived, ``bad`` the shortest one it did
    not. Keep-alives go out every ``interval``: the start value until an echo proves
    more, ``ECHO_MARGIN`` of ``good`` after, shrunk at once when a loss shows the NAT
    forgets sooner than we thought.
    """

    def __init__(self) -> None:
        self.interval = KEEPALIVE_START_S
        self.good = 0.0
        self.bad = float("inf")
        self.converged_at: float | None = None

    def next_delay(self, now: float) -> float | None:
        """The idle period the next echo should test, or None while there is nothing to."""
        if self.converged_at is not None:
            if now - self.converged_at < ECHO_RETEST_S:
                return None
            self.converged_at = None
            self.bad = float("inf")
        if self.bad == float("inf"):
            delay = max(self.interval, self.good) * ECHO_GROW
        else:
            delay = (max(self.good, KEEPALIVE_FLOOR_S) + self.bad) / 2
        return min(delay, KEEPALIVE_CEILING_S / ECHO_MARGIN)

    def succeeded(self, delay: float, now: float) -> None:
        self.good = max(self.good, delay)
        self.interval = _clamp(self.good * ECHO_MARGIN)
        self._check_converged(now)

    def lost(self, delay: float, now: float) -> None:
        self.bad = min(self.bad, delay)
        if self.good >= delay:  # the NAT changed: what held before does not now
            self.good = 0.0
        if self.interval >= delay * ECHO_MARGIN:
            self.interval = _clamp(delay * ECHO_SHRINK)
        self._check_converged(now)

    def _check_converged(self, now: float) -> None:
        """Stop testing once the interval is at the ceiling or the search is fine enough.

        The gap is measured from the floor at least: no interval goes under it, so a
        loss at up to ``KEEPALIVE_FLOOR_S + ECHO_RESOLUTION_S`` ends the search (the
        interval is at the floor or within the resolution of it).
        """
        top = self.good >= KEEPALIVE_CEILING_S / ECHO_MARGIN
        gap = self.bad - max(self.good, KEEPALIVE_FLOOR_S)
        close = gap <= max(ECHO_RESOLUTION_S, ECHO_RESOLUTION_FRACTION * self.good)
        if top or close:
            self.converged_at = now


def _clamp(interval: float) -> float:
    return min(KEEPALIVE_CEILING_S, max(KEEPALIVE_FLOOR_S, interval))


def attach_lifetime(interval_s: float) -> float:
    """How long a relay keeps a client attached after its last Attach."""
    return ATTACH_LIFETIME_INTERVALS * _clamp(interval_s)


@dataclass
class AttachedClient:
    """A client holding a binding with us: where we reach it, until when."""

    key: bytes
    endpoint: Endpoint
    network: str
    expires_at: float
    echo_challenge: bytes = b""  # a delayed echo owed to it, and when
    echo_due: float = 0.0


class AttachTable:
    """A relay's attached clients, by address (docs/PROTOCOL.md, "12.4").

    Bounded per key (one entry per address), per network of origin, per wide network and
    in all (``OriginBound``): past a bound the least recently refreshed client of the
    network holding the most entries, within the wide network holding the most, gives
    way, so a flood from one network, or from the many networks of one provider, only
    ever evicts its own.

    ``left(key, now)`` is told of every client that leaves (evicted or expired): the
    node pins an attached client's boxes while it is attached (docs/PROTOCOL.md, "5.3").
    """

    def __init__(self, left: Callable[[bytes, float], None] | None = None) -> None:
        self._left = left
        self._clients: dict[bytes, AttachedClient] = {}
        self._filed: OriginBound[bytes] = OriginBound(
            ATTACH_PER_NETWORK, ATTACH_PER_WIDE_NETWORK, ATTACH_MAX
        )
        self._echoes: list[tuple[float, bytes]] = []  # (due, address), lazily pruned
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._clients)

    def per_network(self, network: str) -> int:
        return self._filed.in_network(network)

    def attach(
        self,
        address: bytes,
        key: bytes,
        endpoint: Endpoint,
        network: str,
        interval_s: float,
        now: float,
    ) -> bool:
        """Attach or refresh a client (``network``: its endpoint's network of origin);
        True when it is new or moved to another endpoint (the caller then pushes what
        waits for it)."""
        old = self._clients.get(address)
        entry = AttachedClient(key, endpoint, network, now + attach_lifetime(interval_s))
        if old is not None and old.key == key and old.echo_challenge:
            entry.echo_challenge, entry.echo_due = old.echo_challenge, old.echo_due
        self._clients[address] = entry
        for evicted in self._filed.add(address, network, wide_network(endpoint)):
            self._left_table(evicted, now)
            self.evicted += 1
        return old is None or old.endpoint != endpoint or old.key != key

    def _left_table(self, address: bytes, now: float) -> None:
        """``address`` is no longer filed: forget its entry, and tell ``left``."""
        entry = self._clients.pop(address)
        if self._left is not None:
            self._left(entry.key, now)

    def get(self, address: bytes, now: float) -> AttachedClient | None:
        entry = self._clients.get(address)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def owe_echo(self, address: bytes, challenge: bytes, due: float) -> None:
        """Answer this client's Attach at ``due``, not now (one echo per client)."""
        entry = self._clients[address]
        entry.echo_challenge, entry.echo_due = challenge, due
        entry.expires_at = max(entry.expires_at, due + KEEPALIVE_FLOOR_S)
        heapq.heappush(self._echoes, (due, address))
        if len(self._echoes) > 2 * len(self._clients) + 16:
            # Replaced echoes wait in the heap until they reach its front: rebuilt from
            # the live ones, it stays within one entry per client (and a little more).
            self._echoes = [(c.echo_due, a) for a, c in self._clients.items() if c.echo_challenge]
            heapq.heapify(self._echoes)

    def next_echo(self) -> float | None:
        while self._echoes:
            due, address = self._echoes[0]
            entry = self._clients.get(address)
            if entry is not None and entry.echo_challenge and entry.echo_due == due:
                return due
            heapq.heappop(self._echoes)
        return None

    def echoes_due(self, now: float) -> list[tuple[bytes, Endpoint, bytes]]:
        """(key, endpoint, challenge) of each client whose delayed echo is due, once."""
        due: list[tuple[bytes, Endpoint, bytes]] = []
        while (when := self.next_echo()) is not None and when <= now:
            _, address = heapq.heappop(self._echoes)
            entry = self._clients[address]
            due.append((entry.key, entry.endpoint, entry.echo_challenge))
            entry.echo_challenge, entry.echo_due = b"", 0.0
        return due

    def expire(self, now: float) -> None:
        for address in [a for a, c in self._clients.items() if c.expires_at <= now]:
            self._filed.remove(address)
            self._left_table(address, now)


# docs/PROTOCOL.md, "12.2": dial-back probes. Helpers asked per round, how long each
# request waits for its probe, and how many rounds without one make a failure; how
# often the kind is checked again, and how soon after rounds that gave no evidence
# (every helper declined, or the probe came from an IP we had sent to).
PROBE_HELPERS = 2
PROBE_TIMEOUT_S = 5.0
PROBE_ROUNDS = 2
PROBE_RECHECK_S = 600.0
PROBE_RETRY_S = 300.0
# A probe from an IP we sent anything to this recently may have come in through the
# mapping we opened: no evidence (an address-restricted NAT lets it in).
PROBE_SOLICITED_S = 300.0
# Serving probes (the asked node, then the node that sends the probe): per network of
# origin of whoever asks, and in all. The burst holds a whole check of one requester
# asked of the same helper: PROBE_ROUNDS rounds back to back (a failed round starts the
# next at once), each a request for the observed endpoint and one for a port mapping.
PROBE_REQUEST_RATE_PER_S = 0.1
PROBE_REQUEST_BURST = float(2 * PROBE_ROUNDS)
PROBE_SERVE_RATE_PER_S = 2.0
PROBE_SERVE_BURST = 10.0
DIAL_BACK_RATE_PER_S = 1.0
DIAL_BACK_BURST = 5.0


@dataclass
class _PendingProbe:
    helper: bytes  # key of the node asked
    deadline: float
    mapping: bool  # a probe of our port mapping candidate, not of the observed endpoint
    # A mapping probe the node asked may send itself: it sees us at the mapping's IP and
    # another port, so its probe cannot come in through a mapping we opened to it (12.2).
    vouch: bool = False


def vouches_for(observed: Endpoint | None, mapping: Endpoint) -> bool:
    """May a helper that sees us at ``observed`` probe our port ``mapping`` itself, as
    evidence (docs/PROTOCOL.md, "12.2", "Port mappings")? Only at the mapping's IP and
    another port: at the same port its probe would come in through the mapping our own
    datagrams to it opened, whatever the router forwards."""
    return observed is not None and observed[0] == mapping[0] and observed[1] != mapping[1]


def mapping_is_seen(tally: ObservationTally, mapping: Endpoint, now: float) -> bool:
    """Do more than half of the networks counted see us at the mapped endpoint itself?
    Then a stranger's datagram that reached us came in at that endpoint, which the
    router keeps open for us (docs/PROTOCOL.md, "12.2", "Port mappings")."""
    seen = list(tally.recent(now).values())
    return 2 * seen.count(mapping) > len(seen)


class Prober:
    """Our side of dial-back probes: rounds of requests and what they concluded."""

    def __init__(self) -> None:
        self.outcome: ProbeOutcome = "none"
        self.mapping_ok = False
        self.next_at = 0.0
        self._pending: dict[bytes, _PendingProbe] = {}
        # When an authenticated datagram last came from an IP we had not sent to: inbound
        # reachability shown by the network itself (docs/PROTOCOL.md, "12.2").
        self.last_inbound = float("-inf")
        self._failed_rounds = 0
        self._round_failures = 0
        self._round_success = False
        # This round's mapping requests, and how many of them their helper vouched for.
        self._round_mapping_asked = 0
        self._round_vouched = 0

    def due(self, now: float) -> bool:
        return not self._pending and now >= self.next_at

    def next_deadline(self) -> float | None:
        if self._pending:
            return min(p.deadline for p in self._pending.values())
        return None

    def asked(
        self, nonce: bytes, helper: bytes, now: float, *, mapping: bool = False, vouch: bool = False
    ) -> None:
        """We sent a ProbeRequest; ``vouch``: for our mapping, to a helper whose own probe
        counts (``vouches_for``)."""
        self._pending[nonce] = _PendingProbe(helper, now + PROBE_TIMEOUT_S, mapping, vouch)
        self._round_mapping_asked += mapping

    def helper_of(self, nonce: bytes) -> bytes | None:
        pending = self._pending.get(nonce)
        return None if pending is None else pending.helper

    def arrived(self, nonce: bytes, solicited: bool, now: float) -> bool:
        """A probe carrying ``nonce`` came in; True if it was ours (outcome may change)."""
        pending = self._pending.pop(nonce, None)
        if pending is None:
            return False
        if not solicited:
            if pending.mapping:
                self.mapping_ok = True
            else:
                self._round_success = True
        self._end_round_if_done(now)
        return True

    def inbound(self, now: float) -> bool:
        """An authenticated datagram came from an IP we had not sent to lately: strangers
        reach us, as a probe would show. True when the outcome changed.

        It also outweighs rounds whose probes never came: probes can be made to fail (a
        flood of dial-back requests spends the helpers' budgets), an arrival cannot be
        faked from outside a NAT or firewall that would have dropped it.
        """
        self.last_inbound = now
        if self.outcome == "arrived":
            return False
        self.outcome = "arrived"
        self._failed_rounds = 0
        self.next_at = max(self.next_at, now + PROBE_RECHECK_S)
        return True

    def from_helper(self, nonce: bytes, now: float) -> None:
        """The node asked sent the Probe itself: it declines (it found nobody to send it),
        no evidence either way; or, for a mapping request it may vouch for, it probed our
        mapped port. The round confirms the mapping if every mapping request of it was
        vouched for (docs/PROTOCOL.md, "12.2", "Port mappings")."""
        pending = self._pending.pop(nonce)
        self._round_vouched += pending.vouch
        self._end_round_if_done(now)

    def expire(self, now: float) -> None:
        overdue = [nonce for nonce, pending in self._pending.items() if pending.deadline <= now]
        for nonce in overdue:
            if self._pending.pop(nonce).mapping:
                self.mapping_ok = False  # the mapping no longer lets a probe in
            else:
                self._round_failures += 1
        if overdue:
            self._end_round_if_done(now)

    def _end_round_if_done(self, now: float) -> None:
        if self._pending:
            return
        if self._round_mapping_asked and self._round_vouched == self._round_mapping_asked:
            self.mapping_ok = True  # every helper asked probed the mapped port itself
        if self._round_success or now - self.last_inbound < PROBE_RECHECK_S:
            self.outcome = "arrived"
            self._failed_rounds = 0
            self.next_at = now + PROBE_RECHECK_S
        elif self._round_failures:
            self._failed_rounds += 1
            if self._failed_rounds >= PROBE_ROUNDS:
                self.outcome = "failed"
                self._failed_rounds = 0
                self.next_at = now + PROBE_RECHECK_S
            else:
                self.next_at = now  # the next round, with other helpers, at once
        else:
            self.next_at = now + PROBE_RETRY_S
        self._round_success, self._round_failures = False, 0
        self._round_mapping_asked = self._round_vouched = 0

    def reset(self, now: float) -> None:
        """The evidence changed (a new endpoint, a new mapping): check again now."""
        self._pending.clear()
        self.outcome, self.mapping_ok = "none", False
        self._failed_rounds = self._round_failures = 0
        self._round_mapping_asked = self._round_vouched = 0
        self._round_success = False
        self.next_at = now


# docs/PROTOCOL.md, "12.4": a client attaches to this many of the nodes nearest its own
# address (who hold its mail: 5 replicas among the 8 nearest), and re-announces itself
# at most this often when its observed endpoint changes.
# An arrival refreshes the evidence of inbound reachability at most this often (12.2).
INBOUND_REFRESH_S = 1.0
ATTACH_RELAYS = 4
# Nearest nodes a client picks its bindings among, one per network of origin.
BINDING_CANDIDATES = 16
REANNOUNCE_MIN_S = 10.0


@dataclass
class Binding:
    """A client's binding with one relay of its neighbourhood."""

    key: bytes
    endpoint: Endpoint
    next_at: float  # when the next keep-alive (Attach) is due
    observed: Endpoint | None = None  # where this relay last saw us


@dataclass
class EchoTest:
    """One delayed echo in flight: idle ``delay`` seconds with ``relay``, then an answer."""

    relay: bytes  # address
    challenge: bytes
    delay: float
    deadline: float
    disturbed: bool = False  # other traffic with the relay meanwhile: inconclusive


class ClientBindings:
    """Which relays a client keeps a binding with, when each keep-alive is due, and the
    echo test that learns the interval (docs/PROTOCOL.md, "12.4", "12.5")."""

    def __init__(self) -> None:
        self.learner = IntervalLearner()
        self.bindings: dict[bytes, Binding] = {}
        self.test: EchoTest | None = None
        self._next_test_at = 0.0

    def choose(self, relays: list[tuple[bytes, bytes, Endpoint]], now: float) -> None:
        """Keep bindings with exactly ``relays`` (address, key, endpoint): new ones are
        due at once, ones that left our neighbourhood are dropped (they expire there)."""
        wanted = {address: (key, endpoint) for address, key, endpoint in relays}
        for address in [a for a in self.bindings if a not in wanted]:
            del self.bindings[address]
            if self.test is not None and self.test.relay == address:
                self.test = None
        for address, (key, endpoint) in wanted.items():
            binding = self.bindings.get(address)
            if binding is None or binding.key != key or binding.endpoint != endpoint:
                self.bindings[address] = Binding(key, endpoint, now)

    def clear(self) -> None:
        self.bindings.clear()
        self.test = None

    def all_due_now(self, now: float) -> None:
        """Re-attach everywhere at once (a new endpoint, waking from sleep)."""
        for binding in self.bindings.values():
            binding.next_at = now
        self.test = None

    def due(self, now: float) -> list[tuple[bytes, Binding, float]]:
        """(address, binding, echo delay or 0) of every Attach to send now.

        At most one binding at a time runs an echo test, and only while another binding
        keeps us reachable meanwhile.
        """
        out: list[tuple[bytes, Binding, float]] = []
        for address, binding in self.bindings.items():
            if binding.next_at > now or (self.test is not None and self.test.relay == address):
                continue
            delay = 0.0
            if self.test is None and len(self.bindings) >= 2 and now >= self._next_test_at:
                wanted = self.learner.next_delay(now)
                if wanted is not None:
                    delay = float(int(wanted + 0.5))
            out.append((address, binding, delay))
            binding.next_at = now + self.learner.interval
            if delay:
                self.test = EchoTest(address, b"", delay, now + delay + ECHO_GRACE_S)
        return out

    def next_due(self) -> float | None:
        times = [
            b.next_at for a, b in self.bindings.items() if self.test is None or self.test.relay != a
        ]
        if self.test is not None:
            times.append(self.test.deadline)
        return min(times, default=None)

    def traffic(self, endpoint: Endpoint) -> None:
        """A datagram went to or came from ``endpoint``: an echo test with it is spoiled."""
        test = self.test
        if test is not None and test.challenge:
            binding = self.bindings.get(test.relay)
            if binding is not None and binding.endpoint == endpoint:
                test.disturbed = True

    def echo_answered(self, challenge: bytes, now: float) -> bool:
        """The delayed echo came back: the NAT kept the mapping that long."""
        test = self.test
        if test is None or not test.challenge or test.challenge != challenge:
            return False
        self.test = None
        if not test.disturbed:
            self.learner.succeeded(test.delay, now)
        self._after_test(test, now)
        return True

    def expire(self, now: float) -> bool:
        """The echo is overdue: lost, unless other traffic spoiled the test. True when the
        relay must be attached again at once (its mapping is gone)."""
        test = self.test
        if test is None or test.deadline > now:
            return False
        self.test = None
        if not test.disturbed:
            self.learner.lost(test.delay, now)
        self._after_test(test, now)
        binding = self.bindings.get(test.relay)
        if binding is not None:
            binding.next_at = now
        return True

    def _after_test(self, test: EchoTest, now: float) -> None:
        binding = self.bindings.get(test.relay)
        if binding is not None:
            binding.next_at = now + self.learner.interval
        self._next_test_at = now + self.learner.interval
