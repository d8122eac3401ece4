"""Sans-IO test network: real ``Node`` cores handing each other datagrams instantly.

Time is passed in by the test; every datagram goes through ``receive_datagram`` with
the sender's endpoint as its source, as over UDP.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.events import Event, StoreChanged, TextReceived, TextStateChanged
from comm_tui.protocol.node import RECEIPT_DELAY_S, Node, NodeConfig
from comm_tui.protocol.routing import Endpoint

T0 = 1_800_000_000.0

Drop = Callable[[Endpoint, Endpoint, bytes], bool]


class Wire:
    """Nodes that hand each other datagrams instantly, with a switch to take one offline."""

    def __init__(self) -> None:
        self.nodes: dict[Endpoint, Node] = {}
        self.events: dict[Endpoint, list[Event]] = {}
        self.offline: set[Endpoint] = set()
        self.persisted: dict[Endpoint, dict[bytes, bytes]] = {}
        self.drop: Drop | None = None

    def add(self, seed: int, config: NodeConfig | None = None, now: float = T0) -> Node:
        identity = Identity.from_seed(bytes([seed]) * 32)
        return self.attach(Node(identity, now, config=config, rng=random.Random(seed)), seed)

    def attach(self, node: Node, seed: int) -> Node:
        endpoint = (f"10.{seed}.0.1", 4000)
        self.nodes[endpoint] = node
        self.events.setdefault(endpoint, [])
        self.persisted.setdefault(endpoint, {})
        return node

    def endpoint(self, node: Node) -> Endpoint:
        return next(e for e, n in self.nodes.items() if n is node)

    def pump(self, now: float, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            moved = False
            for source, node in list(self.nodes.items()):
                self._drain_events(source, node)
                # A node made with receipts_apart hands its receipts out apart.
                for data, dest in node.datagrams_to_send() + node.receipts_to_send():
                    moved = True
                    if source in self.offline:
                        continue
                    if self.drop is not None and self.drop(source, dest, data):
                        continue
                    self.deliver(source, dest, data, now)
            if not moved:
                for source, node in self.nodes.items():
                    self._drain_events(source, node)
                return
        raise AssertionError("datagrams kept flowing")

    def deliver(self, source: Endpoint, dest: Endpoint, data: bytes, now: float) -> None:
        """Hand one datagram from ``source`` to whoever is at ``dest`` (if anyone is)."""
        target = self.nodes.get(dest)
        if target is not None and dest not in self.offline:
            target.receive_datagram(data, source, now)

    def _drain_events(self, endpoint: Endpoint, node: Node) -> None:
        for event in node.drain_events():
            self.events[endpoint].append(event)
            if isinstance(event, StoreChanged):
                store = self.persisted[endpoint]
                for key in event.delete:
                    store.pop(key, None)
                for key, (blob, _) in event.put.items():
                    store[key] = blob

    def tick(self, now: float) -> None:
        for endpoint, node in self.nodes.items():
            if endpoint not in self.offline and node.get_timer() <= now:
                node.handle_timer(now)
        self.pump(now)

    def settle(self, now: float) -> float:
        """``pump`` at ``now``, then let the receipts it left owed go: the clock moves on
        by ``RECEIPT_DELAY_S`` (docs/PROTOCOL.md, "4. Frames"), whatever is due by then
        runs, and what it sends is pumped. Returns the time it moved to."""
        self.pump(now)
        later = now + RECEIPT_DELAY_S
        self.tick(later)
        return later

    def run(self, start: float, end: float, step: float = 1.0) -> None:
        now = start
        while now <= end:
            self.tick(now)
            now += step

    def connect(self, a: Node, b: Node, now: float = T0) -> None:
        a.bootstrap(self.endpoint(b), now)
        self.pump(now)
        if a.address not in peer_addresses(b):  # b already had peers: a ping makes it known to a
            b.add_known_peer(a.identity.key, self.endpoint(a), now)
            self.pump(now)
        assert b.address in peer_addresses(a) and a.address in peer_addresses(b)

    def of(self, node: Node, kind: type[Event]) -> list[Event]:
        return [e for e in self.events[self.endpoint(node)] if isinstance(e, kind)]

    def states(self, node: Node, text_id: bytes) -> list[str]:
        return [
            e.state
            for e in self.events[self.endpoint(node)]
            if isinstance(e, TextStateChanged) and e.text_id == text_id
        ]

    def texts(self, node: Node) -> list[TextReceived]:
        return [e for e in self.events[self.endpoint(node)] if isinstance(e, TextReceived)]


def peer_addresses(node: Node) -> set[bytes]:
    """The addresses in ``node``'s routing table, read through its public view."""
    return {peer.address for peer in node.peers()}
