"""Port mapping: ask the home router to forward our UDP port (docs/PROTOCOL.md, "14. Port mapping").

A node behind a NAT is unreachable until it sends out; a router that offers PCP (RFC 6887),
NAT-PMP (RFC 6886) or UPnP-IGD can be asked to forward the node's bound UDP port, and the
external endpoint it names is a candidate public endpoint for the node (which checks it by
dial-back like any other). This module is the only place that speaks those protocols.

PCP and NAT-PMP are small fixed binary formats over UDP, so they are written here: the
request builders and answer parsers are pure functions (tested against a responder on
127.0.0.1), and :class:`PortMapper` is the asyncio task that drives them. UPnP-IGD (SSDP,
HTTP, XML, SOAP) goes through the optional ``async-upnp-client`` library
(``pip install 'comm-tui[upnp]'``); without it that step is skipped and said so.

Every answer is hostile until checked: it must come from the gateway we asked (the sockets
are connected to it, so the kernel drops anything else), have the exact size and opcode of
an answer to our request, name our internal port (and, for PCP, our nonce), and grant a
usable lifetime, port and address. Anything else is counted by reason and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from comm_tui.protocol.routing import Endpoint

if TYPE_CHECKING:
    from async_upnp_client.client import UpnpService

log = logging.getLogger(__name__)

PCP_PORT = 5351  # the same server port for PCP and NAT-PMP (RFC 6887, section 19.1)
SSDP_ADDRESS = ("239.255.255.250", 1900)
PCP_VERSION = 2
NATPMP_VERSION = 0
REQUESTED_LIFETIME_S = 7200  # RFC 6886, section 3.3: the recommended lifetime
MIN_LIFETIME_S = 120  # a shorter grant would have us renewing all the time: refused
RESEND_DELAYS_S = (0.25, 0.5, 1.0)  # a request is sent up to 3 times (RFC 6886 starts at 250 ms)
SSDP_WAIT_S = 1.5
UPNP_HTTP_TIMEOUT_S = 2
RENEW_FRACTION = 0.5  # renew at half the lifetime (RFC 6887, section 11.2.1)
RENEW_RETRY_S = 30.0  # a renewal that got no answer is tried again this much later
RETRY_NONE_S = 600.0  # no gateway answered: try again (a router may come up later)
REMOVE_TIMEOUT_S = 1.0  # removal at exit never holds the exit up longer than this
PROC_NET_ROUTE = Path("/proc/net/route")
RTF_UP_GATEWAY = 0x0003

# Result codes. PCP (RFC 6887, section 7.4) and NAT-PMP (RFC 6886, section 3.5).
PCP_RESULTS = {
    0: "success",
    1: "unsupported version",
    2: "not authorized",
    3: "malformed request",
    4: "unsupported opcode",
    5: "unsupported option",
    6: "malformed option",
    7: "network failure",
    8: "no resources",
    9: "unsupported protocol",
    10: "user exceeded quota",
    11: "cannot provide external",
    12: "address mismatch",
    13: "excessive remote peers",
}
NATPMP_RESULTS = {
    0: "success",
    1: "unsupported version",
    2: "not authorized or refused",
    3: "network failure",
    4: "out of resources",
    5: "unsupported opcode",
}
UNSUPPORTED_VERSION = 1

_PCP_MAP = 1
_PCP_RESPONSE = 0x80
_PCP_HEADER = struct.Struct("!BBxxI16s")  # version, opcode, lifetime, client address
_PCP_MAP_BODY = struct.Struct("!12sB3xHH16s")  # nonce, protocol, internal, external, address
_PCP_ANSWER_HEADER = struct.Struct("!BBxBII12x")  # version, opcode, result, lifetime, epoch
_PCP_MAX_ANSWER = 1100  # RFC 6887, section 7: a PCP message is at most 1100 bytes
_UDP = 17
_NATPMP_ADDRESS = 0
_NATPMP_MAP_UDP = 1


class BadAnswer(ValueError):
    """An answer that is not a well-formed answer to our request; ``reason`` is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    """A checked answer from a PCP or NAT-PMP server."""

    result: int
    epoch: int
    lifetime: int = 0
    external_port: int = 0
    external_ip: str | None = None


@dataclass(frozen=True)
class PortMapping:
    """A mapping the router granted: ``external`` reaches our ``internal_port``."""

    protocol: str  # "PCP", "NAT-PMP" or "UPnP-IGD"
    external: Endpoint
    lifetime_s: int
    gateway: str
    internal_port: int

    def describe(self) -> str:
        host, port = self.external
        return f"udp {host}:{port} via {self.protocol}, {self.lifetime_s} s"


# ------------------------------------------------------------------------ PCP (RFC 6887)


def pcp_map_request(
    nonce: bytes, client_ip: str, internal_port: int, lifetime: int, suggested: Endpoint | None
) -> bytes:
    """A PCP MAP request for UDP (RFC 6887, sections 7.1 and 11.1); lifetime 0 deletes."""
    ext_ip, ext_port = suggested if suggested is not None else ("0.0.0.0", 0)
    return _PCP_HEADER.pack(PCP_VERSION, _PCP_MAP, lifetime, _mapped(client_ip)) + (
        _PCP_MAP_BODY.pack(nonce, _UDP, internal_port, ext_port, _mapped(ext_ip))
    )


def parse_pcp_map_answer(data: bytes, nonce: bytes, internal_port: int) -> Answer:
    """Check an answer to our MAP request; raise :class:`BadAnswer` if it is not one.

    A NAT-PMP-only server answers a version-2 request with a version-0 "unsupported
    version" (RFC 6887, section 9): that comes back as ``Answer(result=1)``.
    """
    if len(data) >= 4 and data[0] == NATPMP_VERSION:
        result = int.from_bytes(data[2:4], "big")
        if result != UNSUPPORTED_VERSION:
            raise BadAnswer("pcp_version")
        return Answer(result=UNSUPPORTED_VERSION, epoch=0)
    if len(data) < _PCP_ANSWER_HEADER.size + _PCP_MAP_BODY.size or len(data) > _PCP_MAX_ANSWER:
        raise BadAnswer("pcp_size")
    if len(data) % 4:
        raise BadAnswer("pcp_size")
    version, opcode, result, lifetime, epoch = _PCP_ANSWER_HEADER.unpack_from(data)
    if version != PCP_VERSION:
        raise BadAnswer("pcp_version")
    if opcode != _PCP_RESPONSE | _PCP_MAP:
        raise BadAnswer("pcp_opcode")
    got_nonce, protocol, got_internal, ext_port, ext_ip = _PCP_MAP_BODY.unpack_from(
        data, _PCP_ANSWER_HEADER.size
    )
    # RFC 6887, section 11.3: the nonce, protocol and internal port identify our mapping.
    if got_nonce != nonce or protocol != _UDP or got_internal != internal_port:
        raise BadAnswer("pcp_not_ours")
    if result != 0:
        return Answer(result=result, epoch=epoch)
    return Answer(
        result=0,
        epoch=epoch,
        lifetime=lifetime,
        external_port=ext_port,
        external_ip=_unmapped(ext_ip),
    )


def _mapped(ip: str) -> bytes:
    """An IPv4 address as PCP carries it: IPv4-mapped IPv6 (RFC 6887, section 5)."""
    return ipaddress.IPv6Address(f"::ffff:{ip}").packed


def _unmapped(packed: bytes) -> str | None:
    mapped = ipaddress.IPv6Address(packed).ipv4_mapped
    return str(mapped) if mapped is not None else None


# ------------------------------------------------------------------- NAT-PMP (RFC 6886)


def natpmp_address_request() -> bytes:
    """NAT-PMP "external address" request (RFC 6886, section 3.2)."""
    return bytes([NATPMP_VERSION, _NATPMP_ADDRESS])


def natpmp_map_request(internal_port: int, suggested_port: int, lifetime: int) -> bytes:
    """NAT-PMP UDP mapping request (RFC 6886, section 3.3); lifetime 0 and port 0 delete."""
    return struct.pack(
        "!BBxxHHI", NATPMP_VERSION, _NATPMP_MAP_UDP, internal_port, suggested_port, lifetime
    )


def parse_natpmp_address_answer(data: bytes) -> Answer:
    """Check an answer to the external address request (12 bytes; 8 when refused)."""
    result, epoch = _natpmp_header(data, _NATPMP_ADDRESS)
    if result != 0:
        return Answer(result=result, epoch=epoch)
    if len(data) != 12:
        raise BadAnswer("natpmp_size")
    return Answer(result=0, epoch=epoch, external_ip=str(ipaddress.IPv4Address(data[8:12])))


def parse_natpmp_map_answer(data: bytes, internal_port: int) -> Answer:
    """Check an answer to our UDP mapping request (16 bytes; 8 when refused)."""
    result, epoch = _natpmp_header(data, _NATPMP_MAP_UDP)
    if result != 0:
        return Answer(result=result, epoch=epoch)
    if len(data) != 16:
        raise BadAnswer("natpmp_size")
    got_internal, ext_port, lifetime = struct.unpack_from("!HHI", data, 8)
    if got_internal != internal_port:
        raise BadAnswer("natpmp_not_ours")
    return Answer(result=0, epoch=epoch, lifetime=lifetime, external_port=ext_port)


def _natpmp_header(data: bytes, opcode: int) -> tuple[int, int]:
    if len(data) < 8 or len(data) > 16:
        raise BadAnswer("natpmp_size")
    version, got_opcode, result, epoch = struct.unpack_from("!BBHI", data)
    if version != NATPMP_VERSION:
        raise BadAnswer("natpmp_version")
    if got_opcode != 128 + opcode:
        raise BadAnswer("natpmp_opcode")
    return result, epoch


# ----------------------------------------------------------------------------- rules


def gateway_lost_state(
    before: tuple[int, float], after: tuple[int, float], *, slack_s: float = 2.0
) -> bool:
    """Whether the server's epoch says it restarted (and forgot our mapping) in between.

    ``before`` and ``after`` are (server epoch, our clock) of two answers. The server's
    clock may run slower or faster than ours by 1/16 plus ``slack_s`` (RFC 6887, section
    8.5; RFC 6886, section 3.6 asks the same with 7/8): outside that it lost its state.
    """
    (server_0, client_0), (server_1, client_1) = before, after
    if server_1 + 1 < server_0:
        return True
    client_delta = client_1 - client_0
    server_delta = server_1 - server_0
    return (
        client_delta + slack_s < server_delta - server_delta / 16
        or server_delta + slack_s < client_delta - client_delta / 16
    )


def usable_grant(answer: Answer, min_lifetime_s: int = MIN_LIFETIME_S) -> str | None:
    """Why a successful answer cannot be used, or None: one rule for all three protocols."""
    if answer.lifetime < min_lifetime_s:
        return "lifetime_short"
    if not 1 <= answer.external_port <= 65535:
        return "bad_external_port"
    if answer.external_ip is None:
        return "bad_external_address"
    address = ipaddress.IPv4Address(answer.external_ip)
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        return "bad_external_address"
    return None


def mappable(bound_host: str) -> bool:
    """Whether a socket bound to ``bound_host`` can be reached through an IPv4 mapping.

    A router forwards only to an address on its LAN: never to loopback (a node listening
    there, like every test on 127.0.0.1, asks no router), nor to a socket bound to one
    IPv6 address. ``::`` may take IPv4 too (dual stack).
    """
    address = ipaddress.ip_address(bound_host)
    if isinstance(address, ipaddress.IPv6Address):
        return address.is_unspecified
    return not address.is_loopback


def default_gateway(route_file: Path = PROC_NET_ROUTE) -> str | None:
    """The IPv4 default route's gateway with the lowest metric, from ``/proc/net/route``."""
    try:
        lines = route_file.read_text(encoding="ascii", errors="replace").splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            destination, gateway = int(fields[1], 16), int(fields[2], 16)
            flags, metric = int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if destination != 0 or flags & RTF_UP_GATEWAY != RTF_UP_GATEWAY or gateway == 0:
            continue
        # The file shows addresses as host-order (little-endian) hexadecimal.
        address = str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
        if best is None or metric < best[0]:
            best = (metric, address)
    return best[1] if best is not None else None


# ------------------------------------------------------------------------ exchanges


class _Datagrams(asyncio.DatagramProtocol):
    """Queue what a socket connected to the gateway receives; note ICMP refusals."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.refused = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable": nothing listens on the gateway's port.
        self.refused.set()


Parser = Callable[[bytes], Answer]


@dataclass
class _Outcome:
    answer: Answer | None
    refused: bool = False


class PortMapper:
    """Creates, renews and removes one mapping for ``internal_port``; never raises.

    ``on_change(mapping, why)`` is called with the new mapping, or with None and a short
    reason for the user, each time that changes. ``gateway`` and the ports exist for tests;
    a node takes the default route's gateway.
    """

    def __init__(
        self,
        internal_port: int,
        on_change: Callable[[PortMapping | None, str], None],
        *,
        gateway: str | None = None,
        pcp_port: int = PCP_PORT,
        ssdp_address: Endpoint = SSDP_ADDRESS,
        upnp: bool = True,
        min_lifetime_s: int = MIN_LIFETIME_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.internal_port = internal_port
        self.on_change = on_change
        self.configured_gateway = gateway
        self.gateway = gateway
        self.pcp_port = pcp_port
        self.ssdp_address = ssdp_address
        self.upnp = upnp
        self.min_lifetime_s = min_lifetime_s
        self.clock = clock
        self.mapping: PortMapping | None = None
        self.rejected: Counter[str] = Counter()
        self._nonce = os.urandom(12)
        self._epoch: tuple[int, float] | None = None
        self._client_ip: str | None = None
        self._upnp_service: UpnpService | None = None

    async def run(self) -> None:
        """Map, keep the mapping renewed; when nothing works, try again much later.

        The node's own work never depends on this task: an unexpected error ends it with
        a log record and "none" reported, nothing else.
        """
        try:
            await self._run()
        except Exception:
            log.exception("port mapping stopped by an unexpected error")
            self.on_change(None, "stopped by an internal error (see the log)")

    async def _run(self) -> None:
        while True:
            why = await self._create()
            if self.mapping is None:
                self.on_change(None, why)
                await asyncio.sleep(RETRY_NONE_S)
                continue
            self.on_change(self.mapping, "")
            while self.mapping is not None:
                await self._keep()
            # Lapsed (no renewal answered): make it again; _create's outcome is reported.

    async def remove(self) -> None:
        """Delete the mapping (at exit); bounded by ``REMOVE_TIMEOUT_S``, never raises."""
        mapping, self.mapping = self.mapping, None
        if mapping is None:
            return
        try:
            await asyncio.wait_for(self._delete(mapping), REMOVE_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            log.info("port mapping: removal not confirmed: %s", exc)

    # -- creating

    async def _create(self) -> str:
        """Try PCP, then NAT-PMP, then UPnP-IGD; return why none worked if so."""
        # Read again at each attempt: the machine may have moved to another network.
        gateway = self.configured_gateway or default_gateway()
        if gateway is None:
            return "no default gateway"
        self.gateway = gateway
        refusals: list[str] = []
        outcome = await self._pcp(REQUESTED_LIFETIME_S, None)
        if self.mapping is not None:
            return ""
        if outcome.answer is not None and outcome.answer.result == 0:
            refusals.append("PCP: unusable answer")
        elif outcome.answer is not None and outcome.answer.result != UNSUPPORTED_VERSION:
            refusals.append(f"PCP: {PCP_RESULTS.get(outcome.answer.result, 'refused')}")
        # A port that refused PCP (ICMP) has nobody for NAT-PMP either: same port.
        if not outcome.refused:
            refused = await self._natpmp(REQUESTED_LIFETIME_S, None)
            if self.mapping is not None:
                return ""
            if refused:
                refusals.append(f"NAT-PMP: {refused}")
        if self.upnp:
            refused = await self._upnp_create(gateway)
            if self.mapping is not None:
                return ""
            if refused:
                refusals.append(f"UPnP-IGD: {refused}")
        if refusals:
            return f"refused by {gateway}: " + "; ".join(refusals)
        return "no gateway answered"

    async def _pcp(self, lifetime: int, suggested: Endpoint | None) -> _Outcome:
        """One PCP MAP exchange; a usable grant becomes ``self.mapping``."""
        assert self.gateway is not None

        def request(client_ip: str) -> bytes:
            return pcp_map_request(self._nonce, client_ip, self.internal_port, lifetime, suggested)

        def parse(data: bytes) -> Answer:
            return parse_pcp_map_answer(data, self._nonce, self.internal_port)

        outcome = await self._exchange(request, parse)
        answer = outcome.answer
        if answer is not None and answer.result == 0 and lifetime:
            self._grant("PCP", answer, answer.external_ip)
        return outcome

    async def _natpmp(self, lifetime: int, granted: Endpoint | None) -> str | None:
        """NAT-PMP: the external address (unless known), then the mapping; a refusal if any.

        A renewal (``granted``: the endpoint granted before) knows the address: it is asked
        again only when the epoch says the gateway restarted (RFC 6886, section 3.6; see
        ``_renew``), and asks for the same external port.
        """
        external_ip, suggested = granted if granted is not None else (None, self.internal_port)
        if external_ip is None:
            address = await self._exchange(
                lambda _: natpmp_address_request(), parse_natpmp_address_answer
            )
            if address.answer is None:
                return None
            if address.answer.result != 0:
                return NATPMP_RESULTS.get(address.answer.result, "refused")
            external_ip = address.answer.external_ip
        mapped = await self._exchange(
            lambda _: natpmp_map_request(self.internal_port, suggested, lifetime),
            lambda data: parse_natpmp_map_answer(data, self.internal_port),
        )
        if mapped.answer is None:
            return None
        if mapped.answer.result != 0:
            return NATPMP_RESULTS.get(mapped.answer.result, "refused")
        self._grant("NAT-PMP", mapped.answer, external_ip)
        return None if self.mapping is not None else "unusable answer"

    def _grant(self, protocol: str, answer: Answer, external_ip: str | None) -> None:
        assert self.gateway is not None
        full = Answer(
            answer.result, answer.epoch, answer.lifetime, answer.external_port, external_ip
        )
        why = usable_grant(full, self.min_lifetime_s)
        if why is not None:
            self.rejected[why] += 1
            return
        assert external_ip is not None
        self._epoch = (answer.epoch, self.clock())
        self.mapping = PortMapping(
            protocol,
            (external_ip, answer.external_port),
            min(answer.lifetime, REQUESTED_LIFETIME_S),
            self.gateway,
            self.internal_port,
        )

    async def _exchange(self, request: Callable[[str], bytes], parse: Parser) -> _Outcome:
        """Send ``request`` to the gateway up to 3 times; the first checked answer wins."""
        assert self.gateway is not None
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(self.gateway, self.pcp_port)
            )
        except OSError as exc:
            log.info("port mapping: cannot reach %s: %s", self.gateway, exc)
            return _Outcome(None, refused=True)
        try:
            self._client_ip = transport.get_extra_info("sockname")[0]
            payload = request(self._client_ip or "0.0.0.0")
            for delay in RESEND_DELAYS_S:
                transport.sendto(payload)
                deadline = loop.time() + delay
                while (left := deadline - loop.time()) > 0:
                    answer = await self._next_answer(proto, parse, left)
                    if answer is not None:
                        return _Outcome(answer)
                    if proto.refused.is_set():
                        return _Outcome(None, refused=True)
            return _Outcome(None)
        finally:
            transport.close()

    async def _next_answer(self, proto: _Datagrams, parse: Parser, wait: float) -> Answer | None:
        refused = asyncio.ensure_future(proto.refused.wait())
        received = asyncio.ensure_future(proto.queue.get())
        try:
            await asyncio.wait({refused, received}, timeout=wait, return_when="FIRST_COMPLETED")
        finally:
            refused.cancel()
            if not received.done():
                received.cancel()
        if not received.done() or received.cancelled():
            return None
        try:
            return parse(received.result())
        except BadAnswer as bad:
            self.rejected[bad.reason] += 1
            return None

    # -- keeping

    async def _keep(self) -> None:
        """Sleep until renewal is due, renew; on silence retry until the lifetime lapses."""
        mapping = self.mapping
        assert mapping is not None
        granted_at = self._epoch[1] if self._epoch is not None else self.clock()
        lapses_at = granted_at + mapping.lifetime_s
        await asyncio.sleep(mapping.lifetime_s * RENEW_FRACTION)
        while self.clock() < lapses_at:
            renewed = await self._renew(mapping)
            if renewed is not None:
                if renewed != mapping:
                    self.on_change(renewed, "renewed with a change")
                return
            if self.mapping is None:
                return
            await asyncio.sleep(min(RENEW_RETRY_S, max(0.0, lapses_at - self.clock())))
        self.mapping = None

    async def _renew(self, mapping: PortMapping) -> PortMapping | None:
        """Ask for the same mapping again; a restarted gateway is asked from scratch."""
        before = self._epoch
        self.mapping = None  # set again by a grant
        try:
            if mapping.protocol == "UPnP-IGD":
                await self._upnp_add(mapping.external[0])
            elif mapping.protocol == "PCP":
                await self._pcp(REQUESTED_LIFETIME_S, mapping.external)
            else:
                await self._natpmp(REQUESTED_LIFETIME_S, mapping.external)
            if (
                self.mapping is not None
                and mapping.protocol != "UPnP-IGD"  # UPnP has no epoch
                and before is not None
                and self._epoch is not None
                and gateway_lost_state(before, self._epoch)
            ):
                # docs/PROTOCOL.md, "14. Port mapping": the router restarted; its external
                # address may be new, so the mapping is made again from the start.
                log.info("port mapping: the gateway restarted (epoch %d)", self._epoch[0])
                self.mapping = None
                await self._create()
        finally:
            renewed = self.mapping
            if renewed is None:
                # No answer, or the node stopped meanwhile: the old grant stands until it
                # lapses, and ``remove`` still deletes it.
                self.mapping = mapping
        return renewed

    async def _delete(self, mapping: PortMapping) -> None:
        if mapping.protocol == "PCP":
            await self._pcp(0, None)
        elif mapping.protocol == "NAT-PMP":
            await self._exchange(
                lambda _: natpmp_map_request(self.internal_port, 0, 0),
                lambda data: parse_natpmp_map_answer(data, self.internal_port),
            )
        else:
            await self._upnp_delete(mapping)

    # -- UPnP-IGD (optional: async-upnp-client)

    async def _upnp_create(self, gateway: str) -> str | None:
        try:
            from comm_tui.net import upnp
        except ImportError:
            log.info("port mapping: UPnP-IGD skipped (install comm-tui[upnp])")
            return None
        location = await upnp.search(gateway, self.ssdp_address, SSDP_WAIT_S, self.rejected)
        if location is None:
            return None
        try:
            self._upnp_service = await upnp.wan_service(location, gateway, UPNP_HTTP_TIMEOUT_S)
        except upnp.UpnpFailure as failure:
            return str(failure)
        return await self._upnp_add(None)

    async def _upnp_add(self, known_ip: str | None) -> str | None:
        from comm_tui.net import upnp

        assert self.gateway is not None and self._upnp_service is not None
        try:
            client_ip = self._client_ip or await _local_address(self.gateway)
        except OSError as exc:
            return f"no route to the gateway ({exc.strerror or exc})"
        try:
            external_ip = await upnp.add_mapping(
                self._upnp_service, client_ip, self.internal_port, REQUESTED_LIFETIME_S
            )
        except upnp.UpnpFailure as failure:
            return str(failure)
        answer = Answer(0, 0, REQUESTED_LIFETIME_S, self.internal_port, external_ip or known_ip)
        self._grant("UPnP-IGD", answer, answer.external_ip)
        return None if self.mapping is not None else "unusable answer"

    async def _upnp_delete(self, mapping: PortMapping) -> None:
        from comm_tui.net import upnp

        if self._upnp_service is not None:
            with contextlib.suppress(upnp.UpnpFailure):
                await upnp.delete_mapping(self._upnp_service, mapping.external[1])


async def _local_address(gateway: str) -> str:
    """Our address on the gateway's network: what a socket connected to it is bound to."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(gateway, PCP_PORT)
    )
    try:
        return str(transport.get_extra_info("sockname")[0])
    finally:
        transport.close()
