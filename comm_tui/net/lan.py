"""LAN discovery: a signed UDP multicast beacon naming a node's key and port.

Hosts on one network, with no internet and no bootstrap address, find each other by
announcing themselves to a multicast group (docs/PROTOCOL.md, "13.1 LAN discovery").
A beacon is only a hint. What it may make us do is the same as what a remembered
peer makes us do: ping the key it names at the beacon's *source address* (never an
address a beacon names) through the usual hello and address validation
(docs/PROTOCOL.md, "5.1"), which only the holder of the key can answer. So a LAN host
that forges or replays another node's beacon gets one unanswered ping sent to itself.
The signature and the fresh timestamp keep such pings rare, and the limits below keep
a flood of beacons from costing more than a few dozen signature checks a second.

The reading (:class:`BeaconReader`) is sans-IO so that tests can drive it with any
clock; :class:`LanBeacon` owns the sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.errors import UserError
from comm_tui.protocol.ratelimit import RateLimiter, TokenBucket
from comm_tui.protocol.routing import Endpoint, normalize_endpoint

# docs/PROTOCOL.md, "13.1 LAN discovery" (and the constants table).
LAN_GROUP_V4 = "239.255.77.77"  # organisation-local scope (RFC 2365), sent with TTL 1
LAN_GROUP_V6 = "ff02::636f:6d6d"  # link-local scope; "comm" in the group id
LAN_PORT = 47177
BEACON_MAGIC = b"CTLB"
BEACON_VERSION = 1
BEACON_DOMAIN = b"comm-tui lan beacon v1\x00"
_SIGNED = struct.Struct(">4sB32sHQ")  # magic, version, key, port, time in ms
BEACON_BYTES = _SIGNED.size + 64  # 111
BEACON_INTERVAL_S = 30.0
BEACON_JITTER = 0.25  # each interval is drawn from [0.75, 1.25] x BEACON_INTERVAL_S
BEACON_REPEAT_S = 1.0  # the start announcement is sent twice, this far apart
BEACON_MAX_AGE_S = 120.0  # |now - time| above this: stale (or a clock far off)
BEACONS_PER_S = 50.0  # all sources together
BEACONS_BURST = 100.0
BEACONS_PER_SOURCE_PER_S = 2.0
BEACONS_PER_SOURCE_BURST = 5.0
BEACON_SOURCES_MAX = 256  # per-source buckets kept (LRU)
BEACON_KEYS_MAX = 256  # distinct keys remembered (LRU)
BEACON_RECHECK_S = 15.0  # a key at the same endpoint leads to a ping at most this often


def encode_beacon(identity: Identity, port: int, now: float) -> bytes:
    """The 111-byte beacon that says: the node of ``identity`` listens on ``port`` here."""
    signed = _SIGNED.pack(BEACON_MAGIC, BEACON_VERSION, identity.key, port, int(now * 1000))
    return signed + identity.sign(BEACON_DOMAIN + signed)


@dataclass(frozen=True)
class Sighting:
    """A beacon worth acting on: ping ``key`` at ``endpoint`` (the beacon's source host)."""

    key: bytes
    endpoint: Endpoint


class BeaconReader:
    """Checks beacons in order of cost and remembers which keys it has acted on.

    Every beacon it does not act on is counted in ``rejected`` by reason; it never
    raises on what the network sends.
    """

    def __init__(self, own_key: bytes, now: float) -> None:
        self.own_key = own_key
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._all = TokenBucket(BEACONS_PER_S, BEACONS_BURST, BEACONS_BURST, now)
        self._per_source = RateLimiter(
            BEACONS_PER_SOURCE_PER_S, BEACONS_PER_SOURCE_BURST, BEACON_SOURCES_MAX
        )
        # key -> (endpoint, when we last acted on it)
        self._keys: OrderedDict[bytes, tuple[Endpoint, float]] = OrderedDict()

    def read(self, data: bytes, source: Endpoint, now: float) -> Sighting | None:
        """The sighting a datagram from ``source`` amounts to, or None (counted)."""
        reason = self._check(data, source, now)
        if isinstance(reason, str):
            self.rejected[reason] += 1
            return None
        if reason is not None:
            self.accepted += 1
        return reason

    def _check(self, data: bytes, source: Endpoint, now: float) -> Sighting | str | None:
        if len(data) != BEACON_BYTES or not data.startswith(BEACON_MAGIC):
            return "malformed"
        # Limits before the signature check: it is the one thing here that costs. The
        # source's own first, so that one host spends only its own burst of the budget
        # for all (docs/PROTOCOL.md, "13.1"): checked the other way round, one host's
        # flood spent that budget and every other beacon was refused.
        host = normalize_endpoint(source)[0]
        if not self._per_source.allow(host, now):
            return "rate_limited"
        if not self._all.take(now):
            return "rate_limited"
        _, version, key, port, sent_ms = _SIGNED.unpack_from(data)
        if version != BEACON_VERSION:
            return "unknown_version"
        if key == self.own_key:
            return None  # our own, looped back: not a rejection
        if port == 0 or not _usable_source(host):
            return "bad_endpoint"
        if abs(now - sent_ms / 1000) > BEACON_MAX_AGE_S:
            return "stale"
        try:
            PublicIdentity(key).verify_key.verify(
                BEACON_DOMAIN + data[: _SIGNED.size], data[_SIGNED.size :]
            )
        except (BadSignatureError, ValueError):
            return "bad_signature"
        # docs/PROTOCOL.md, "13.1": the endpoint is the source host with the named port.
        endpoint = (host, port)
        last = self._keys.get(key)
        if last is not None:
            self._keys.move_to_end(key)
            if last[0] == endpoint and now - last[1] < BEACON_RECHECK_S:
                return "repeated"
        self._keys[key] = (endpoint, now)
        if len(self._keys) > BEACON_KEYS_MAX:
            self._keys.popitem(last=False)
        return Sighting(key, endpoint)


def _usable_source(host: str) -> bool:
    """A beacon comes from the local network: never from a global address, which only a
    host elsewhere on the internet sends from (the socket listens on every address, so
    anyone could otherwise make us ping a forged source; docs/PROTOCOL.md, "13.1")."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_unspecified or ip.is_multicast or ip.is_global)


def lan_families(bound: Endpoint) -> list[int]:
    """The address families to beacon on for a node socket bound to ``bound``.

    None for a loopback-bound node (nobody on the LAN could reach it) and for one bound to
    a single global address (its beacons would have to leave from that address, and
    receivers ignore beacons from global addresses; docs/PROTOCOL.md, "13.1"); IPv6 only
    when the node's socket is IPv6 (a dual-stack ``::`` socket does both).
    """
    try:
        ip = ipaddress.ip_address(bound[0].partition("%")[0])
    except ValueError:
        return [socket.AF_INET]
    if ip.is_loopback or (ip.is_global and not ip.is_unspecified):
        return []
    if ip.version == 4:
        return [socket.AF_INET]
    return [socket.AF_INET, socket.AF_INET6] if ip.is_unspecified else [socket.AF_INET6]


def beacon_source(bound: Endpoint) -> str | None:
    """The address our beacons must leave from: the node's own, when it listens on one.

    A receiver reaches us at the beacon's source address (docs/PROTOCOL.md, "13.1"). The
    kernel would pick the interface's preferred address for the group's scope (for
    ``ff02::`` the link-local one), where a node bound to a single address never hears the
    pings; None for a node on every address, which hears them wherever they arrive.
    """
    try:
        ip = ipaddress.ip_address(bound[0].partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_unspecified else str(ip)


INTERFACES_ENV = "COMM_TUI_LAN_INTERFACES"


def all_interfaces() -> list[int]:
    """Indexes of the interfaces the beacon goes out on: all, or those ``INTERFACES_ENV`` names.

    The variable (names separated by commas) keeps beacons off a network the user does not
    want to be seen on (a VPN, say), and keeps the test suite's beacons on loopback.
    """
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return []
    wanted = os.environ.get(INTERFACES_ENV)
    if wanted is None:
        return [index for index, _ in interfaces]
    names = {name.strip() for name in wanted.split(",")}
    return [index for index, name in interfaces if name in names]


PORT_ENV = "COMM_TUI_LAN_PORT"


def lan_port() -> int:
    """The group's port: ``LAN_PORT``, or the one ``PORT_ENV`` names.

    Nodes that share a port hear each other's beacons. The variable gives a set of nodes
    a group of their own on one host: the test suite's parallel workers each use their
    own, so a node one worker starts never joins the network of another worker's test
    (docs/PROTOCOL.md, "13.1 LAN discovery"). A value that is not a port is refused, not
    ignored: a node that silently announced itself elsewhere would be harder to debug.
    """
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return LAN_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UserError(f"{PORT_ENV}={value!r} is not a UDP port (1-65535)")
    return int(value)


@dataclass(frozen=True)
class LanOptions:
    """Where beacons go: the group port, the groups, the interfaces (tests narrow them)."""

    port: int = field(default_factory=lan_port)
    group_v4: str = LAN_GROUP_V4
    group_v6: str = LAN_GROUP_V6
    interfaces: Callable[[], list[int]] = all_interfaces
    # None: from the node's bound address (lan_families).
    families: tuple[int, ...] | None = None

    def group(self, family: int) -> str:
        return self.group_v6 if family == socket.AF_INET6 else self.group_v4


def _open_socket(family: int, group: str, port: int, interfaces: list[int]) -> socket.socket:
    """A socket on the group's port, a member of the group on every interface that takes it.

    Several nodes of one host share the port (SO_REUSEADDR/SO_REUSEPORT); multicast is
    delivered to each of them.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.bind(("::", port))
            packed = socket.inet_pton(socket.AF_INET6, group)
            joined = 0
            for index in interfaces:
                with contextlib.suppress(OSError):
                    mreq = packed + struct.pack("@I", index)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                    joined += 1
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.bind(("", port))
            packed = socket.inet_aton(group)
            joined = 0
            for index in interfaces:
                with contextlib.suppress(OSError):
                    mreqn = packed + struct.pack("@4si", b"\0\0\0\0", index)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                    joined += 1
        if joined == 0:
            raise OSError("no interface joined the LAN discovery group")
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _send_on_every_interface(
    sock: socket.socket,
    data: bytes,
    group: str,
    port: int,
    interfaces: list[int],
    source: str | None,
) -> int:
    """Send one copy out of each interface that takes multicast; how many went out.

    With ``source``, each copy leaves from that address (IPv6: ``IPV6_PKTINFO``; IPv4: the
    address of ``IP_MULTICAST_IF``, which Linux uses as the source of multicast sends);
    an interface that does not hold it refuses the send and is skipped.
    """
    sent = 0
    for index in interfaces:
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                if source is None:
                    sock.sendto(data, (group, port))
                else:
                    info = socket.inet_pton(socket.AF_INET6, source) + struct.pack("@I", index)
                    ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
                    sock.sendmsg([data], ancillary, 0, (group, port))
            else:
                address = socket.inet_aton(source) if source is not None else b"\0\0\0\0"
                mreqn = struct.pack("@4s4si", b"\0\0\0\0", address, index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                sock.sendto(data, (group, port))
            sent += 1
        except OSError:
            continue
    return sent


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Endpoint], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        return  # an ICMP error for a beacon: nothing to do, the next one goes out anyway


class LanBeacon:
    """Announces this node on the LAN and reports the signed beacons of others.

    ``on_sighting`` is called for each beacon that passed :class:`BeaconReader`; the
    service hands it to the node as a known peer to ping.
    """

    def __init__(
        self,
        identity: Identity,
        node_port: int,
        families: list[int],
        on_sighting: Callable[[Sighting, float], None],
        *,
        options: LanOptions | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        source: str | None = None,
    ) -> None:
        self.identity = identity
        self.node_port = node_port
        self.options = options or LanOptions()
        self.families = list(self.options.families or families)
        # The address the beacons leave from, per family (see beacon_source).
        self.sources: dict[int, str] = {}
        if source is not None:
            family = socket.AF_INET6 if ":" in source else socket.AF_INET
            self.sources[family] = source
        self.on_sighting = on_sighting
        self.clock = clock
        self.rng = rng or random.Random()
        self.reader = BeaconReader(identity.key, clock())
        self.sent = 0
        self.unavailable: dict[int, str] = {}  # family -> why it could not be used
        self._sockets: list[tuple[socket.socket, asyncio.BaseTransport]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open what the host allows; a family it does not allow is noted, not fatal."""
        loop = asyncio.get_running_loop()
        interfaces = self.options.interfaces()
        for family in self.families:
            try:
                sock = _open_socket(
                    family, self.options.group(family), self.options.port, interfaces
                )
            except OSError as exc:
                self.unavailable[family] = exc.strerror or str(exc)
                continue
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Receiver(self._received), sock=sock
            )
            self._sockets.append((sock, transport))
        if self._sockets:
            self._task = asyncio.create_task(self._announce_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, transport in self._sockets:
            transport.close()
        self._sockets.clear()

    @property
    def bound_ports(self) -> list[int]:
        """The local ports of the beacon sockets (the group port, unless a test asked for 0)."""
        return [int(sock.getsockname()[1]) for sock, _ in self._sockets]

    def announce(self) -> None:
        """Send one beacon on every family and interface."""
        data = encode_beacon(self.identity, self.node_port, self.clock())
        interfaces = self.options.interfaces()
        for sock, _ in self._sockets:
            group = self.options.group(sock.family)
            source = self.sources.get(sock.family)
            self.sent += _send_on_every_interface(
                sock, data, group, self.options.port, interfaces, source
            )

    def next_interval(self) -> float:
        return BEACON_INTERVAL_S * self.rng.uniform(1 - BEACON_JITTER, 1 + BEACON_JITTER)

    async def _announce_forever(self) -> None:
        self.announce()
        await asyncio.sleep(BEACON_REPEAT_S)
        while True:
            self.announce()
            await asyncio.sleep(self.next_interval())

    def _received(self, data: bytes, source: Endpoint) -> None:
        now = self.clock()
        sighting = self.reader.read(data, source, now)
        if sighting is not None:
            self.on_sighting(sighting, now)
