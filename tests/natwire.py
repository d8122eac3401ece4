"""Sans-IO test network with NAT routers on a fake clock (docs/PROTOCOL.md, "12").

Each ``Nat`` is one home router: hosts behind it have private endpoints; what they
send leaves from the router's public IP with a port of its mapping table, and what
arrives there comes in only if a live mapping lets it, as Linux conntrack does:

- ``restricted``: one external port per host socket (the port kept where it can be),
  inbound only from a remote endpoint the host sent to (address-and-port restricted);
- ``symmetric``: a new external port for every remote endpoint, same filter;
- ``full_cone``: one external port per host socket, inbound from anyone while the
  mapping lives;
- ``firewall``: no translation (the host has a public address), the restricted filter.

A mapping lives ``unanswered_s`` after its last datagram until a reply came back,
``established_s`` after that (the issue measured 20 s / 30 s on a home router).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint
from tests.wire import T0, Wire

NatKind = Literal["restricted", "symmetric", "full_cone", "firewall"]


@dataclass
class _Conn:
    """One conntrack entry: a host socket talking to one remote endpoint."""

    port: int  # external port
    last: float
    answered: bool = False


@dataclass
class Nat:
    kind: NatKind
    public_ip: str
    unanswered_s: float = 20.0
    established_s: float = 30.0
    conns: dict[tuple[Endpoint, Endpoint], _Conn] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    dropped: int = 0
    # Port mappings the router made on request (UPnP, NAT-PMP): external port -> host.
    forwards: dict[int, Endpoint] = field(default_factory=dict)

    def _alive(self, conn: _Conn, now: float) -> bool:
        life = self.established_s if conn.answered else self.unanswered_s
        return now - conn.last < life

    def outbound(self, inside: Endpoint, remote: Endpoint, now: float) -> Endpoint:
        """The source ``remote`` sees for a datagram ``inside`` sends it now."""
        conn = self.conns.get((inside, remote))
        if conn is None or not self._alive(conn, now):
            conn = _Conn(self._port_for(inside, remote, now), now)
            self.conns[(inside, remote)] = conn
        conn.last = now
        return (self.public_ip, conn.port)

    def _port_for(self, inside: Endpoint, remote: Endpoint, now: float) -> int:
        if self.kind == "firewall":
            return inside[1]
        if self.kind != "symmetric":
            # Endpoint-independent mapping: the port of any live mapping of this socket,
            # else its own port when free (Linux masquerade keeps it where it can).
            for (host, _), conn in self.conns.items():
                if host == inside and self._alive(conn, now):
                    return conn.port
        used = {c.port for (h, _), c in self.conns.items() if h != inside and self._alive(c, now)}
        port = inside[1] if self.kind != "symmetric" else 0
        while port in used or port == 0:
            port = self.rng.randrange(20000, 60000)
        return port

    def inbound(self, remote: Endpoint, port: int, now: float) -> Endpoint | None:
        """The host a datagram from ``remote`` to our ``port`` reaches, or None (dropped)."""
        if port in self.forwards:
            return self.forwards[port]
        for (inside, peer), conn in self.conns.items():
            if conn.port != port or not self._alive(conn, now):
                continue
            if self.kind == "full_cone" or peer == remote:
                conn.answered = True
                conn.last = now
                return inside
        self.dropped += 1
        return None

    def reboot(self, public_ip: str) -> None:
        """A router reboot: a new public IP, every mapping forgotten."""
        self.public_ip = public_ip
        self.conns.clear()


class NatWire(Wire):
    """A ``Wire`` where some nodes sit behind NAT routers.

    Public nodes live at ``198.18.<n>.1:4000`` (each its own /24); a host behind a NAT at
    ``10.<n>.0.2:4000``, its router at ``198.19.<n>.1``. Every node is told its local
    endpoint, as the UDP service tells it the address it is bound to.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nat_of: dict[Endpoint, Nat] = {}  # private endpoint -> its router
        self.routers: dict[str, Nat] = {}  # public IP -> router

    def add_public(self, seed: int, config: NodeConfig | None = None, now: float = T0) -> Node:
        return self._add(seed, (f"198.18.{seed}.1", 4000), config, now)

    def add_behind(
        self,
        seed: int,
        kind: NatKind,
        config: NodeConfig | None = None,
        now: float = T0,
        *,
        unanswered_s: float = 20.0,
        established_s: float = 30.0,
    ) -> Node:
        if kind == "firewall":
            endpoint = (f"198.18.{seed}.1", 4000)
            nat = Nat(kind, endpoint[0], unanswered_s, established_s)
        else:
            endpoint = (f"10.{seed}.0.2", 4000)
            nat = Nat(kind, f"198.19.{seed}.1", unanswered_s, established_s)
        self.nat_of[endpoint] = nat
        self.routers[nat.public_ip] = nat
        return self._add(seed, endpoint, config, now)

    def _add(self, seed: int, endpoint: Endpoint, config: NodeConfig | None, now: float) -> Node:
        identity = Identity.from_seed(bytes([seed]) * 32)
        node = Node(identity, now, config=config, rng=random.Random(seed))
        node.set_local_endpoints([endpoint], now)
        self.nodes[endpoint] = node
        self.events.setdefault(endpoint, [])
        self.persisted.setdefault(endpoint, {})
        return node

    def reboot(self, node: Node, public_ip: str) -> None:
        nat = self.nat_of[self.endpoint(node)]
        del self.routers[nat.public_ip]
        nat.reboot(public_ip)
        self.routers[public_ip] = nat

    def public_endpoint_of(self, node: Node) -> Endpoint:
        """Where others reach ``node`` (a NATed one: its router's IP, the host's port)."""
        endpoint = self.endpoint(node)
        nat = self.nat_of.get(endpoint)
        return endpoint if nat is None else (nat.public_ip, endpoint[1])

    def deliver(self, source: Endpoint, dest: Endpoint, data: bytes, now: float) -> None:
        nat = self.nat_of.get(source)
        if nat is not None:
            source = nat.outbound(source, dest, now)
        router = self.routers.get(dest[0])
        if router is not None:
            inside = router.inbound(source, dest[1], now)
            if inside is None:
                return
            dest = inside
        super().deliver(source, dest, data, now)
