"""What callers may read of a node: frozen copies, never the node's own tables.

The app, the CLI, the service, the simulator and the benchmarks read a node only through
these (``Node.status()``, ``Node.peers()``, ``Node.closest_peers()``, ``Node.stats``), so
the routing table, relay store, codec and sessions stay the core's to change (the review
of issue 11: callers reached into ``node.table``/``node.store`` about twenty times).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

from comm_tui.protocol.reachability import Reachability
from comm_tui.protocol.relay_store import RelayUsage
from comm_tui.protocol.routing import Endpoint, NodeEntry
from comm_tui.protocol.stats import NodeStats

NodeState = Literal["no peers", "bootstrapping", "online"]


@dataclass(frozen=True)
class PeerView:
    """One peer of the routing table, as it was when asked."""

    key: bytes
    address: bytes
    endpoint: Endpoint
    last_seen: float

    @classmethod
    def of(cls, entry: NodeEntry) -> PeerView:
        return cls(entry.key, entry.address, entry.endpoint, entry.last_seen)


@dataclass(frozen=True)
class NodeStatus:
    """Everything a status panel, a log line or a benchmark reads of a node, at once.

    ``stats`` is a copy: the node's own counters go on counting.
    """

    state: NodeState
    peers: int
    bucket_fill: tuple[tuple[int, int], ...]
    stored_items: int
    stored_bytes: int
    outbox: int  # our texts not yet acknowledged
    reachability: Reachability
    client_mode: bool
    keepalive_s: float | None
    punched: int  # contacts reached directly through a punched hole
    relay_usage: RelayUsage
    stats: NodeStats


def stats_copy(stats: NodeStats) -> NodeStats:
    """A copy of ``stats`` whose counters no longer move."""
    return copy.deepcopy(stats)
