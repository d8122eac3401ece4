"""A discrete-event network: datagrams, latency, loss, churn, and a virtual clock.

Every node is an unmodified :class:`comm_tui.protocol.node.Node`; the simulator is
just a second driver of the sans-IO core beside the asyncio UDP adapter. Time only
moves when the next event is due, so a thousand nodes exchanging traffic for
simulated minutes run in seconds, deterministically for a given seed.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.events import Event
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint

SIM_EPOCH_S = 1_800_000_000.0
SIM_PORT = 4000


@dataclass
class LinkModel:
    """Per-datagram one-way latency (lognormal around ``latency_s``) and loss."""

    latency_s: float = 0.04
    jitter: float = 0.3  # sigma of the lognormal
    loss: float = 0.0

    def sample(self, rng: random.Random) -> float | None:
        if self.loss and rng.random() < self.loss:
            return None
        return self.latency_s * rng.lognormvariate(0.0, self.jitter)


@dataclass(eq=False)
class SimNode:
    """A node on the simulated network; compared and hashed by identity, like a machine."""

    endpoint: Endpoint
    node: Node
    online: bool = True
    armed_at: float | None = None
    events: list[Event] = field(default_factory=list)
    # Adversarial behaviour: gets (sim node, datagram, from) and returns True to swallow it.
    intercept: Callable[[SimNode, bytes, Endpoint], bool] | None = None
    # Wall-clock seconds the protocol core spent on this node's datagrams and timers.
    cpu_s: float = 0.0


class SimNetwork:
    def __init__(self, seed: int = 0, *, link: LinkModel | None = None) -> None:
        self.rng = random.Random(seed)
        self.link = link or LinkModel()
        self.now = SIM_EPOCH_S
        self.nodes: dict[Endpoint, SimNode] = {}
        self._queue: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self.datagrams_sent = 0
        self.datagrams_lost = 0
        self.datagrams_undelivered = 0  # arrived at a node that was offline
        self.bytes_sent = 0
        self.on_event: Callable[[SimNode, Event], None] | None = None
        # Sees every datagram put on the wire: (data, source, destination).
        self.tap: Callable[[bytes, Endpoint, Endpoint], None] | None = None

    def add_node(
        self,
        identity: Identity | None = None,
        config: NodeConfig | None = None,
        *,
        host: str | None = None,
    ) -> SimNode:
        index = len(self.nodes) + 1
        host = host or f"10.{(index >> 8) & 255}.{index & 255}.{1 + (index >> 16)}"
        identity = identity or Identity.from_seed(self.rng.randbytes(32))
        node = Node(identity, self.now, config=config, rng=random.Random(self.rng.random()))
        sim = SimNode((host, SIM_PORT), node)
        self.nodes[sim.endpoint] = sim
        self._arm(sim)
        return sim

    def set_online(self, sim: SimNode, online: bool) -> None:
        """Take a node off the network or bring it back; it keeps its state, like a laptop lid."""
        sim.online = online
        if online:
            self._arm(sim, force=True)

    def rejoin(self, sim: SimNode) -> None:
        """Bring a node back as a restarted app would: announce itself and ask for its mail.

        A lookup of its own address refreshes its neighbourhood's tables and ends in a
        ``Fetch`` to the nodes nearest to it; with an empty table it re-bootstraps instead.
        """
        self.set_online(sim, True)
        node = sim.node
        if node.peer_count == 0:
            for endpoint in node.bootstrap_endpoints:
                node.bootstrap(endpoint, self.now)
        else:
            node.lookup(node.address, self.now)
        self._drain(sim)

    def run_until(self, deadline: float, stop: Callable[[], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= deadline:
            when, _, kind, payload = heapq.heappop(self._queue)
            self.now = when
            if kind == "datagram":
                data, source, dest = cast(tuple[bytes, Endpoint, Endpoint], payload)
                self._deliver(data, source, dest)
            elif kind == "timer":
                sim = payload
                assert isinstance(sim, SimNode)
                if sim.armed_at == when and sim.online:
                    sim.armed_at = None
                    started = time.perf_counter()
                    sim.node.handle_timer(when)
                    self._drain(sim)
                    sim.cpu_s += time.perf_counter() - started
            elif kind == "call":
                assert callable(payload)
                payload()
            if stop is not None and stop():
                return
        self.now = max(self.now, deadline)

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        self.run_until(self.now + seconds, stop)

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        self._push(when, "call", action)

    def do(self, sim: SimNode, action: Callable[[Node], object]) -> None:
        """Run an action on a node now (send a text, bootstrap...) and flush what it emits."""
        action(sim.node)
        self._drain(sim)

    def _deliver(self, data: bytes, source: Endpoint, dest: Endpoint) -> None:
        sim = self.nodes.get(dest)
        if sim is None or not sim.online:
            self.datagrams_undelivered += 1
            return
        if sim.intercept is not None and sim.intercept(sim, data, source):
            return
        self.receive(sim, data, source)

    def receive(self, sim: SimNode, data: bytes, source: Endpoint) -> None:
        """Hand a datagram to a node's core and flush what it emits (interceptors use this)."""
        started = time.perf_counter()
        sim.node.receive_datagram(data, source, self.now)
        self._drain(sim)
        sim.cpu_s += time.perf_counter() - started

    def _drain(self, sim: SimNode) -> None:
        for data, dest in sim.node.datagrams_to_send():
            self.send_raw(data, sim.endpoint, dest)
        for event in sim.node.drain_events():
            sim.events.append(event)
            if self.on_event is not None:
                self.on_event(sim, event)
        self._arm(sim)

    def send_raw(self, data: bytes, source: Endpoint, dest: Endpoint) -> None:
        """Put a datagram on the wire (adversaries use this to inject their own).

        A node that is offline sends nothing: whatever it emits is lost with it.
        """
        source_sim = self.nodes.get(source)
        if source_sim is not None and not source_sim.online:
            return
        self.datagrams_sent += 1
        self.bytes_sent += len(data)
        if self.tap is not None:
            self.tap(data, source, dest)
        delay = self.link.sample(self.rng)
        if delay is None:
            self.datagrams_lost += 1
            return
        self._push(self.now + delay, "datagram", (data, source, dest))

    def _arm(self, sim: SimNode, *, force: bool = False) -> None:
        when = max(sim.node.get_timer(), self.now)
        if force or sim.armed_at is None or when < sim.armed_at:
            sim.armed_at = when
            self._push(when, "timer", sim)

    def _push(self, when: float, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, payload))
