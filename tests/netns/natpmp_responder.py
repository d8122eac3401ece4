"""A small PCP (RFC 6887) and NAT-PMP (RFC 6886) server, for tests only.

Why it exists (docs/PROTOCOL.md, "14. Port mapping"): Debian's miniupnpd refuses every
mapping while its external address is reserved, and test addresses must stay in
198.18.0.0/15 (reserved for benchmarking), so a real daemon can only show discovery and
refusal. This responder, run in the emulated router's namespace with ``--nft``, installs
the nftables DNAT rule each mapping stands for and deletes it when the mapping is deleted
or lapses, so a test can show that a mapping really opens the port from outside. The unit
tests use :class:`Responder` on 127.0.0.1 with its misbehaviours (refusals, garbage,
silence, answers from another port, restarts).

Run: ``python -m tests.netns.natpmp_responder --external-ip 198.18.0.2 --nft``. It prints
``ready`` once listening, then ``mapped EXT_PORT -> CLIENT:PORT`` / ``unmapped EXT_PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

PORT = 5351
NFT_TABLE = "natpmp_test"


@dataclass
class Grant:
    client_ip: str
    internal_port: int
    external_port: int
    expires: float


@dataclass
class Behaviour:
    """How the responder answers; the defaults are a well-behaved PCP and NAT-PMP server."""

    pcp: bool = True  # False: answer PCP with NAT-PMP's "unsupported version"
    result: int = 0  # a refusal code for every mapping request
    lifetime: int | None = None  # grant this lifetime instead of the requested one
    external_port_offset: int = 0
    nonce_flip: bool = False  # answer PCP with another nonce
    garbage_first: bool = False  # send a garbage datagram before each real answer
    only_garbage: bool = False
    silent: bool = False
    answer_from_other_port: bool = False
    external_ip_answer: str | None = None  # claim this external address instead


@dataclass
class Responder(asyncio.DatagramProtocol):
    external_ip: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    on_map: Callable[[Grant], None] | None = None
    on_unmap: Callable[[Grant], None] | None = None
    requests: list[bytes] = field(default_factory=list)
    grants: dict[tuple[str, int], Grant] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    epoch_offset: int = 1000
    transport: asyncio.DatagramTransport | None = None
    other: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def restart(self, external_ip: str) -> None:
        """A router reboot: the epoch starts again at 0, every mapping is forgotten."""
        self.external_ip = external_ip
        self.started = time.monotonic()
        self.epoch_offset = 0
        for grant in list(self.grants.values()):
            self._drop(grant)

    def epoch(self) -> int:
        return self.epoch_offset + int(time.monotonic() - self.started)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests.append(data)
        self.expire()
        b = self.behaviour
        if b.silent:
            return
        if b.garbage_first or b.only_garbage:
            self._send(b"\x02\x81garbage" + bytes(7), addr)
            if b.only_garbage:
                return
        if len(data) >= 2 and data[0] == 0:
            answer = self._natpmp(data, addr[0])
        elif len(data) >= 60 and data[0] == 2:
            answer = self._pcp(data, addr[0]) if b.pcp else struct.pack("!BBHI", 0, 0x81, 1, 0)
        else:
            return
        if answer is not None:
            self._send(answer, addr)

    def expire(self) -> None:
        now = time.monotonic()
        for grant in [g for g in self.grants.values() if g.expires <= now]:
            self._drop(grant)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.other if self.behaviour.answer_from_other_port else self.transport
        assert transport is not None
        transport.sendto(data, addr)

    def _natpmp(self, data: bytes, client_ip: str) -> bytes | None:
        b = self.behaviour
        if data[1] == 0 and len(data) == 2:
            if b.result:
                return struct.pack("!BBHI", 0, 128, b.result, self.epoch())
            ip = b.external_ip_answer or self.external_ip
            return struct.pack("!BBHI", 0, 128, 0, self.epoch()) + ipaddress.IPv4Address(ip).packed
        if data[1] == 1 and len(data) == 12:
            internal, suggested, lifetime = struct.unpack_from("!HHI", data, 4)
            if b.result:
                return struct.pack("!BBHI", 0, 129, b.result, self.epoch())
            external, granted = self._map(client_ip, internal, suggested, lifetime)
            return struct.pack("!BBHIHHI", 0, 129, 0, self.epoch(), internal, external, granted)
        return None

    def _pcp(self, data: bytes, source_ip: str) -> bytes | None:
        b = self.behaviour
        _, opcode, lifetime, client = struct.unpack_from("!BBxxI16s", data)
        nonce, protocol, internal, suggested, _ = struct.unpack_from("!12sB3xHH16s", data, 24)
        if opcode != 1:
            return None
        mapped = ipaddress.IPv6Address(client).ipv4_mapped
        # RFC 6887, section 8.1: the client address must be the request's source.
        address_mismatch = mapped is None or str(mapped) != source_ip
        result = 12 if address_mismatch else b.result
        external_ip = b.external_ip_answer or self.external_ip
        external, granted = 0, 0
        if result == 0:
            external, granted = self._map(source_ip, internal, suggested, lifetime)
        if b.nonce_flip:
            nonce = bytes(12)
        header = struct.pack("!BBxBII12x", 2, 0x81, result, granted, self.epoch())
        body = struct.pack(
            "!12sB3xHH16s",
            nonce,
            protocol,
            internal,
            external,
            ipaddress.IPv6Address(f"::ffff:{external_ip}").packed,
        )
        return header + body

    def _map(self, client_ip: str, internal: int, suggested: int, lifetime: int) -> tuple[int, int]:
        key = (client_ip, internal)
        if lifetime == 0:
            grant = self.grants.get(key)
            if grant is not None:
                self._drop(grant)
            return 0, 0
        granted = self.behaviour.lifetime if self.behaviour.lifetime is not None else lifetime
        external = (suggested or internal) + self.behaviour.external_port_offset
        old = self.grants.get(key)
        if old is not None and old.external_port != external:
            self._drop(old)
            old = None
        grant = Grant(client_ip, internal, external, time.monotonic() + granted)
        self.grants[key] = grant
        if old is None and self.on_map is not None:
            self.on_map(grant)
        return external, granted

    def _drop(self, grant: Grant) -> None:
        self.grants.pop((grant.client_ip, grant.internal_port), None)
        if self.on_unmap is not None:
            self.on_unmap(grant)


async def start(
    host: str, port: int, external_ip: str, behaviour: Behaviour | None = None
) -> Responder:
    """A responder listening on (host, port), plus a second socket for wrong-port answers."""
    loop = asyncio.get_running_loop()
    _, responder = await loop.create_datagram_endpoint(
        lambda: Responder(external_ip, behaviour or Behaviour()), local_addr=(host, port)
    )
    other, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(host, 0))
    responder.other = other
    return responder


def close(responder: Responder) -> None:
    for transport in (responder.transport, responder.other):
        if transport is not None:
            transport.close()


# -------------------------------------------------------------- in a router namespace


class NftRules:
    """The DNAT rule each mapping stands for, in a table of its own (deleted at exit)."""

    def __init__(self, external_ip: str) -> None:
        self.external_ip = external_ip
        self.handles: dict[int, int] = {}
        self._nft(
            f"add table ip {NFT_TABLE}; "
            f"add chain ip {NFT_TABLE} pre {{ type nat hook prerouting priority -100 ; }}"
        )

    def add(self, grant: Grant) -> None:
        out = self._nft(
            f"add rule ip {NFT_TABLE} pre ip daddr {self.external_ip} udp dport"
            f" {grant.external_port} dnat to {grant.client_ip}:{grant.internal_port}",
            echo=True,
        )
        handle = int(out.rsplit("# handle", 1)[1].split()[0])
        self.handles[grant.external_port] = handle
        print(f"mapped {grant.external_port} -> {grant.client_ip}:{grant.internal_port}")

    def remove(self, grant: Grant) -> None:
        handle = self.handles.pop(grant.external_port, None)
        if handle is not None:
            self._nft(f"delete rule ip {NFT_TABLE} pre handle {handle}")
        print(f"unmapped {grant.external_port}")

    def close(self) -> None:
        self._nft(f"delete table ip {NFT_TABLE}")

    @staticmethod
    def _nft(command: str, *, echo: bool = False) -> str:
        args = ["nft", "-e", "-a", command] if echo else ["nft", command]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--external-ip", required=True)
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--nft", action="store_true", help="install a DNAT rule per mapping")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    rules = NftRules(args.external_ip) if args.nft else None
    responder = await start(args.listen, PORT, args.external_ip)
    if rules is not None:
        responder.on_map, responder.on_unmap = rules.add, rules.remove
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print("ready")
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                responder.expire()
    finally:
        close(responder)
        if rules is not None:
            rules.close()


if __name__ == "__main__":
    asyncio.run(main())
