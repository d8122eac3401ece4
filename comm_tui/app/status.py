"""A snapshot of the node's figures, taken once a second for the status panel.

The panel never touches the node: the app takes a :class:`StatusSnapshot` and hands
it down, so the panel can be rendered (and tested) from plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

from comm_tui.crypto.identity import Identity
from comm_tui.net.service import NodeService
from comm_tui.protocol.relay_store import RelayUsage

MAX_PEERS_SHOWN = 12
MAX_REJECT_REASONS_SHOWN = 6


@dataclass(frozen=True)
class PeerLine:
    address: bytes
    endpoint: str
    last_seen: float


@dataclass(frozen=True)
class StatusSnapshot:
    now: float
    address: bytes
    card: str
    listen: str
    state: str
    table_size: int
    bucket_fill: tuple[tuple[int, int], ...]
    peers: tuple[PeerLine, ...]
    stored_now: int
    stored_bytes: int
    stored_total: int
    relayed: int
    acks_seen: int
    expired: int
    rejected: int
    rejected_by_reason: tuple[tuple[str, int], ...]  # most frequent first
    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    outbox: int
    # docs/PROTOCOL.md, "12. Reachability": the kind, where peers agree they see us, and
    # (in client mode) the keep-alive interval learned from our NAT.
    reachability: str = "unknown"
    public_endpoint: str = "unknown"
    client_mode: bool = False
    keepalive_s: float | None = None
    # docs/PROTOCOL.md, "14. Port mapping" and "12.6 Hole punching".
    port_mapping: str = "none"
    punched: int = 0  # contacts reached directly through a punched hole
    # docs/PROTOCOL.md, "8.1 Local caps": use against each cap (None before the node runs).
    relay_usage: RelayUsage | None = None


def endpoint_text(endpoint: tuple[str, int] | None) -> str:
    if endpoint is None:
        return "not bound"
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def offline_snapshot(identity: Identity, card: str, now: float) -> StatusSnapshot:
    """What the panel shows before the node is bound."""
    return StatusSnapshot(
        now=now,
        address=identity.address,
        card=card,
        listen="starting…",
        state="starting",
        table_size=0,
        bucket_fill=(),
        peers=(),
        stored_now=0,
        stored_bytes=0,
        stored_total=0,
        relayed=0,
        acks_seen=0,
        expired=0,
        rejected=0,
        rejected_by_reason=(),
        datagrams_in=0,
        datagrams_out=0,
        bytes_in=0,
        bytes_out=0,
        outbox=0,
    )


def take_snapshot(service: NodeService, now: float) -> StatusSnapshot:
    node = service.node
    stats = node.stats
    peers = sorted(node.table, key=lambda entry: entry.last_seen, reverse=True)
    return StatusSnapshot(
        now=now,
        address=service.identity.address,
        card=service.card,
        listen=endpoint_text(service.bound),
        state=node.state,
        table_size=len(node.table),
        bucket_fill=tuple(node.table.bucket_fill()),
        peers=tuple(
            PeerLine(entry.address, endpoint_text(entry.endpoint), entry.last_seen)
            for entry in peers[:MAX_PEERS_SHOWN]
        ),
        stored_now=len(node.store),
        stored_bytes=node.store.total_bytes,
        stored_total=stats.stored,
        relayed=stats.messages_relayed,
        acks_seen=stats.acks_seen,
        expired=stats.expired,
        rejected=stats.rejected_total,
        rejected_by_reason=tuple(stats.rejected.most_common(MAX_REJECT_REASONS_SHOWN)),
        datagrams_in=stats.datagrams_in,
        datagrams_out=stats.datagrams_out,
        bytes_in=stats.bytes_in,
        bytes_out=stats.bytes_out,
        outbox=len(node.outgoing_text_ids()),
        reachability=node.reachability.kind,
        public_endpoint=public_text(node.reachability.public_endpoint),
        client_mode=node.client_mode,
        keepalive_s=node.keepalive_interval,
        port_mapping=(
            service.port_mapping.describe() if service.port_mapping is not None else "none"
        ),
        punched=len(node.punched_peers()),
        relay_usage=node.relay_usage(),
    )


def public_text(endpoint: tuple[str, int] | None) -> str:
    """Where peers agree they see us, or "unknown" until several networks agree."""
    return "unknown" if endpoint is None else endpoint_text(endpoint)
