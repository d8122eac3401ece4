"""A sans-IO network with NAT routers in it, for the hole punching tests.

``NatWire`` is ``tests/wire.Wire`` with some nodes behind their own NAT router. Each
router has one public address and maps a host's source endpoint to a public port:

- ``full``: one mapping per host endpoint, whoever sends to it gets in (a full cone:
  endpoint-independent mapping and filtering, RFC 4787);
- ``restricted``: one mapping per host endpoint, but only from an address and port the
  host sent to (endpoint-independent mapping, address-and-port-dependent filtering;
  Linux masquerade);
- ``symmetric``: a new public port for every destination, and only that destination
  gets in (address-and-port-dependent mapping and filtering; masquerade ``random``).

Mappings and permissions are forgotten after ``timeout_s`` without traffic either way.
Every datagram delivered is logged (source node, destination node, size), so a test can
tell which nodes a text passed through.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from comm_tui.protocol.node import Node
from comm_tui.protocol.routing import Endpoint
from tests.wire import Wire

NatKind = Literal["full", "restricted", "symmetric"]


@dataclass
class Nat:
    kind: NatKind
    public_ip: str
    timeout_s: float
    # (host endpoint, destination or None) -> public port
    mappings: dict[tuple[Endpoint, Endpoint | None], int] = field(default_factory=dict)
    # public port -> (host endpoint, {remote endpoint: last traffic})
    ports: dict[int, tuple[Endpoint, dict[Endpoint, float]]] = field(default_factory=dict)
    _next_port: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))

    def outbound(self, host: Endpoint, dest: Endpoint, now: float) -> Endpoint:
        """The public source endpoint of a datagram from ``host`` to ``dest``."""
        self.expire(now)
        key = (host, dest if self.kind == "symmetric" else None)
        port = self.mappings.get(key)
        if port is None:
            port = self.mappings[key] = next(self._next_port)
            self.ports[port] = (host, {})
        self.ports[port][1][dest] = now
        return (self.public_ip, port)

    def inbound(self, port: int, source: Endpoint, now: float) -> Endpoint | None:
        """The host a datagram from ``source`` to our ``port`` goes to, or None (dropped)."""
        self.expire(now)
        mapped = self.ports.get(port)
        if mapped is None:
            return None
        host, remotes = mapped
        if self.kind != "full" and source not in remotes:
            return None
        remotes[source] = now
        return host

    def expire(self, now: float) -> None:
        for port, (_, remotes) in list(self.ports.items()):
            for remote in [r for r, t in remotes.items() if now - t > self.timeout_s]:
                del remotes[remote]
            if not remotes:
                del self.ports[port]
                for key in [k for k, p in self.mappings.items() if p == port]:
                    del self.mappings[key]


class NatWire(Wire):
    """Nodes on one internet, some behind NAT routers (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.nats: dict[Endpoint, Nat] = {}  # host endpoint -> its router
        self.routers: dict[str, Nat] = {}  # public ip -> router
        self.log: list[tuple[Node, Node, int]] = []

    def add_behind(self, seed: int, kind: NatKind, timeout_s: float = 3600.0) -> Node:
        """A node behind a NAT router of its own (public address 198.18.<seed>.1)."""
        node = self.add(seed)
        host = self.endpoint(node)
        nat = Nat(kind, f"198.18.{seed}.1", timeout_s)
        self.nats[host] = nat
        self.routers[nat.public_ip] = nat
        return node

    def pump(self, now: float, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            moved = False
            for source, node in list(self.nodes.items()):
                self._drain_events(source, node)
                for data, dest in node.datagrams_to_send():
                    moved = True
                    if source in self.offline:
                        continue
                    nat = self.nats.get(source)
                    seen_from = nat.outbound(source, dest, now) if nat is not None else source
                    router = self.routers.get(dest[0])
                    host = router.inbound(dest[1], seen_from, now) if router else dest
                    target = self.nodes.get(host) if host is not None else None
                    if target is None or host in self.offline:
                        continue
                    if self.drop is not None and self.drop(source, dest, data):
                        continue
                    self.log.append((node, target, len(data)))
                    target.receive_datagram(data, seen_from, now)
            if not moved:
                for source, node in self.nodes.items():
                    self._drain_events(source, node)
                return
        raise AssertionError("datagrams kept flowing")

    def join(self, node: Node, via: Node, now: float) -> None:
        """``node`` bootstraps through ``via`` and looks itself up (a NATed node cannot be
        pinged first: only its own datagrams open its router)."""
        node.bootstrap(self.endpoint(via), now)
        self.pump(now)
        assert via.address in node.table

    def between(self, a: Node, b: Node) -> list[int]:
        """Sizes of the datagrams delivered from ``a`` to ``b``."""
        return [size for src, dst, size in self.log if src is a and dst is b]
