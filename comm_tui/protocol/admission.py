"""Who may make this node do work, and how much, before they proved anything.

Two rules live here (docs/PROTOCOL.md, "Admission"):

- **Address validation.** A boxed datagram proves which key sent it, not that its
  source address is real: anyone can write a victim's address into the IP header. A
  (key, endpoint) pair is *validated* once a challenge we sent to that endpoint came
  back authenticated by that key, from that endpoint (a Pong to our Ping or Hello, a
  Nodes answer to our FindNode). The challenges peers make us send are stateless (a
  keyed hash of key, endpoint and time, like QUIC's retry tokens), so forged sources
  cannot fill a table of outstanding validations. Until validation, what we send to
  the pair is limited to ``AMPLIFICATION_FACTOR`` times the bytes that pair sent us, as
  QUIC limits a server before address validation (RFC 9000, section 8.1, which counts
  per connection: the pair here). The node
  additionally keeps answers larger than their request (pushes, fetched items) for
  validated pairs, but answers a FindNode at once when its Nodes answer fits that
  limit (a first contact), and inserts only validated pairs into its routing table.
- **Cookies.** When the new-key budget is spent, a packet from a key we have no box
  for gets no key agreement unless it echoes a cookie bound to its source address:
  WireGuard's cookie reply (whitepaper, section 5.4.7). The cookie is a keyed hash of
  the address under a secret that rotates, so it costs us no state, and whoever forges
  source addresses never sees it. The reply echoes a hash of the packet that caused
  it, so a requester takes only replies to what it really sent, re-sends each such
  packet at most once, and nobody can make it re-send by forging replies.

Both are bounded: the tables forget their least recently used entries, which can only
make an honest peer prove its address once more (one round trip), never admit anyone.
Validated pairs are bounded per network of origin and per wide network too, and a full
table forgets a pair of the network holding the most within the wide network holding the
most: pairs are as cheap as the source ports and keys of one host, networks as cheap as
the /48s of one /32, and neither must make us forget everyone else's proofs. The rule is
``OriginBound``'s; a relay's attached clients follow it too (docs/PROTOCOL.md, "12.4").
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
from collections import OrderedDict
from typing import Generic, TypeVar

from comm_tui.protocol.routing import IP_PREFIX_CACHE_HOSTS, Endpoint, origin_network

AMPLIFICATION_FACTOR = 3
# Unvalidated (key, endpoint) pairs whose byte credit we remember (as many as there were
# endpoints when credit was kept per endpoint: a first contact needs it for one round
# trip), and the most credit one can hold.
CREDIT_PAIRS = 8192
MAX_CREDIT_BYTES = AMPLIFICATION_FACTOR * 64 * 1024
# Validated (key, endpoint) pairs in all, per wide network and per network of origin
# (docs/PROTOCOL.md, "5.1 Address validation"): a host owns 65,535 ports and any number
# of keys, and whoever holds an IPv6 /32 holds 65,536 networks of origin.
VALIDATED_PAIRS = 16384
VALIDATED_PER_WIDE_NETWORK = 1024
VALIDATED_PER_NETWORK = 64
# A wide network (docs/PROTOCOL.md, "5.2 Peer-triggered state"): what one provider holds,
# as a second level above the networks of origin. A /48 is what a home is given, but one
# IPv6 /32 holds 65,536 of them; an IPv4 /16 holds 256 /24s.
WIDE_IPV4_PREFIX_BITS = 16
WIDE_IPV6_PREFIX_BITS = 32
COOKIE_BYTES = 16
ECHO_BYTES = 16
CHALLENGE_BYTES = 16
# Cookies and validation challenges are good for one to two rotations of their secret.
COOKIE_ROTATE_S = 120.0
CHALLENGE_ROTATE_S = 10.0

M = TypeVar("M")


@functools.lru_cache(maxsize=IP_PREFIX_CACHE_HOSTS)
def wide_network(endpoint: Endpoint) -> str:
    """The wide network ``endpoint`` is in (docs/PROTOCOL.md, "5.2"): an IPv4 /16, an
    IPv6 /32 (an IPv4-mapped address as IPv4); on loopback, each host and port, as its
    network of origin.

    Bounds per network of origin alone are only as good as networks are scarce, and
    IPv6 /48s are not: whoever holds a /32 holds 65,536 of them. Budgets and tables
    that many networks could spend or fill are bounded per wide network too.
    """
    host, port = endpoint
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"host:{host}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip}:{port}"
    bits = WIDE_IPV4_PREFIX_BITS if ip.version == 4 else WIDE_IPV6_PREFIX_BITS
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def _endpoint_bytes(endpoint: Endpoint) -> bytes:
    host, port = endpoint
    return host.encode("utf-8", "replace") + b"|" + port.to_bytes(2, "big")


def echo_of(datagram: bytes) -> bytes:
    """What a cookie reply echoes of the packet that caused it."""
    return hashlib.blake2b(datagram, digest_size=ECHO_BYTES).digest()


class RotatingMac:
    """A keyed hash under a secret replaced every ``period_s``; the previous one still
    verifies, so a tag is good for one to two periods and nothing is stored per tag."""

    def __init__(self, period_s: float, size: int, now: float) -> None:
        self._period_s = period_s
        self._size = size
        self._secret = os.urandom(32)
        self._previous = os.urandom(32)
        self._rotated_at = now

    def tag(self, data: bytes, now: float) -> bytes:
        self._rotate(now)
        return self._mac(self._secret, data)

    def verify(self, data: bytes, tag: bytes, now: float) -> bool:
        self._rotate(now)
        return tag in (self._mac(self._secret, data), self._mac(self._previous, data))

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= self._period_s:
            # Two periods or more since: the previous secret is stale too.
            stale = now - self._rotated_at >= 2 * self._period_s
            self._previous = os.urandom(32) if stale else self._secret
            self._secret = os.urandom(32)
            self._rotated_at = now

    def _mac(self, secret: bytes, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=secret, digest_size=self._size).digest()


class _ByCount:
    """Names filed by how many members each holds, so that the one holding the most (of
    several, the one that reached that count first) is found without a scan."""

    def __init__(self) -> None:
        self._names: dict[int, OrderedDict[str, None]] = {}
        self._largest = 0

    def moved(self, name: str, before: int, after: int) -> None:
        """``name`` went from ``before`` members to ``after``: file it anew."""
        if before:
            names = self._names[before]
            del names[name]
            if not names:
                del self._names[before]
        if after:
            self._names.setdefault(after, OrderedDict())[name] = None
            self._largest = max(self._largest, after)
        while self._largest and self._largest not in self._names:
            self._largest -= 1

    def largest(self) -> str:
        return next(iter(self._names[self._largest]))


class _Wide:
    """The members of one wide network: how many, and its networks of origin by count."""

    def __init__(self) -> None:
        self.members = 0
        self.networks = _ByCount()


class OriginBound(Generic[M]):
    """A table's members (validated pairs, attached clients) filed by network of origin
    and wide network (docs/PROTOCOL.md, "5.2"), least recent first in each network, and
    bounded: past ``per_network`` in a network its least recent member is forgotten;
    past ``per_wide`` in a wide network, the least recent of that wide network's network
    holding the most; past ``total`` in all, that of the network holding the most within
    the wide network holding the most (of several, the one that reached its count
    first), each found without a scan.

    The one rule of every table that hostile networks could fill: members are as cheap
    as the ports and keys of one host, networks as cheap as the /48s of one /32, and
    neither must make the table forget everyone else's; an honest member goes only once
    every wide network holds as many as its own.
    """

    def __init__(self, per_network: int, per_wide: int, total: int) -> None:
        self._per_network = per_network
        self._per_wide = per_wide
        self._total = total
        # Member -> its network of origin and wide network (read directly on hot paths).
        self.members: dict[M, tuple[str, str]] = {}
        self._networks: dict[str, OrderedDict[M, None]] = {}
        self._wides: dict[str, _Wide] = {}
        self._wides_by_count = _ByCount()

    def __len__(self) -> int:
        return len(self.members)

    def in_network(self, network: str) -> int:
        """How many members ``network`` holds."""
        members = self._networks.get(network)
        return 0 if members is None else len(members)

    def add(self, member: M, network: str, wide: str) -> list[M]:
        """File ``member`` of ``network`` (in ``wide``) as the most recent of its network,
        or refresh it if it is filed there already (moved, if it was filed elsewhere);
        the members forgotten to keep the bounds, in the order the class states."""
        known = self.members.get(member)
        if known is not None:
            if known == (network, wide):
                self._networks[network].move_to_end(member)
                return []
            self.remove(member)
        members = self._networks.setdefault(network, OrderedDict())
        members[member] = None
        self.members[member] = (network, wide)
        filed = self._wides.get(wide)
        if filed is None:
            filed = self._wides[wide] = _Wide()
        self._counted(network, wide, +1)
        forgotten: list[M] = []
        if len(members) > self._per_network:
            forgotten.append(self._forget_one(network))
        elif filed.members > self._per_wide:
            forgotten.append(self._forget_one(filed.networks.largest()))
        if len(self.members) > self._total:
            largest = self._wides[self._wides_by_count.largest()]
            forgotten.append(self._forget_one(largest.networks.largest()))
        return forgotten

    def remove(self, member: M) -> None:
        """Forget ``member`` (filed)."""
        network, wide = self.members.pop(member)
        del self._networks[network][member]
        self._counted(network, wide, -1)

    def _forget_one(self, network: str) -> M:
        """Forget the least recent member of ``network``, and name it."""
        member = next(iter(self._networks[network]))
        self.remove(member)
        return member

    def _counted(self, network: str, wide: str, change: int) -> None:
        """``network`` (of ``wide``) gained or lost a member, already in or out of its
        own table: file both anew, and drop what holds nothing."""
        after = len(self._networks[network])
        filed = self._wides[wide]
        filed.networks.moved(network, after - change, after)
        filed.members += change
        self._wides_by_count.moved(wide, filed.members - change, filed.members)
        if not after:
            del self._networks[network]
        if not filed.members:
            del self._wides[wide]


class AddressValidator:
    """Validated (key, endpoint) pairs, stateless challenges to validate more, and the
    byte credit of pairs not yet validated."""

    def __init__(self, now: float) -> None:
        self._pairs: OriginBound[tuple[bytes, Endpoint]] = OriginBound(
            VALIDATED_PER_NETWORK, VALIDATED_PER_WIDE_NETWORK, VALIDATED_PAIRS
        )
        self._validated = self._pairs.members  # looked up per datagram
        self._credit: OrderedDict[tuple[bytes, Endpoint], int] = OrderedDict()
        self._challenges = RotatingMac(CHALLENGE_ROTATE_S, CHALLENGE_BYTES, now)

    def challenge(self, key: bytes, endpoint: Endpoint, now: float) -> bytes:
        """The challenge that proves ``key`` receives at ``endpoint`` when it comes back."""
        return self._challenges.tag(key + _endpoint_bytes(endpoint), now)

    def answered(self, key: bytes, endpoint: Endpoint, challenge: bytes, now: float) -> bool:
        """Is ``challenge`` one we sent ``key`` at ``endpoint`` lately? Then it is validated."""
        if not self._challenges.verify(key + _endpoint_bytes(endpoint), challenge, now):
            return False
        self.validate(key, endpoint)
        return True

    def received(self, key: bytes, endpoint: Endpoint, size: int) -> None:
        """Count ``size`` bytes that ``key`` sent (or someone sent in its name) from
        ``endpoint`` toward what we may send back to that pair before it is validated.

        Per pair, not per endpoint (docs/PROTOCOL.md, "5.1"): anyone can write a
        victim's endpoint as its source, so credit that a peer's own datagrams earned
        there would pay for our answers to a forger's requests under another key
        (red5, finding 8). The caller counts only datagrams of pairs not validated: a
        validated pair spends no credit.
        """
        pair = (key, endpoint)
        credit = self._credit.pop(pair, 0)
        self._credit[pair] = min(MAX_CREDIT_BYTES, credit + AMPLIFICATION_FACTOR * size)
        if len(self._credit) > CREDIT_PAIRS:
            self._credit.popitem(last=False)

    def is_validated(self, key: bytes, endpoint: Endpoint) -> bool:
        return (key, endpoint) in self._validated

    def validate(self, key: bytes, endpoint: Endpoint) -> None:
        """``key`` answered a challenge we sent to ``endpoint``: it receives there.

        At most ``VALIDATED_PER_NETWORK`` pairs per network of origin,
        ``VALIDATED_PER_WIDE_NETWORK`` per wide network and ``VALIDATED_PAIRS`` in all,
        the least recently validated forgotten as ``OriginBound`` rules
        (docs/PROTOCOL.md, "5.1 Address validation"). A flood of pairs from one network,
        or from the many networks of one provider, only evicts its own, and an honest
        peer's proof lasts while any wide network holds more than its own.
        """
        self._pairs.add((key, endpoint), origin_network(endpoint), wide_network(endpoint))

    def spend(self, key: bytes, endpoint: Endpoint, size: int) -> bool:
        """Take ``size`` bytes of credit for a datagram to ``key`` at ``endpoint``, a pair
        not validated.

        False, taking nothing, when the pair has not sent us enough to cover it.
        """
        pair = (key, endpoint)
        credit = self._credit.get(pair, 0)
        if credit < size:
            return False
        self._credit[pair] = credit - size
        return True


class CookieJar:
    """Stateless cookies bound to a source address, under a secret rotated every 2 min."""

    def __init__(self, now: float) -> None:
        self._mac = RotatingMac(COOKIE_ROTATE_S, COOKIE_BYTES, now)

    def cookie(self, endpoint: Endpoint, now: float) -> bytes:
        return self._mac.tag(_endpoint_bytes(endpoint), now)

    def check(self, endpoint: Endpoint, cookie: bytes, now: float) -> bool:
        return self._mac.verify(_endpoint_bytes(endpoint), cookie, now)
