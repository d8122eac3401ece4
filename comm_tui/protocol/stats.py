"""Counters a node keeps about itself, for the status panel, logs and benchmarks."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

HOPS_KEPT = 10_000


@dataclass
class NodeStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    peers_added: int = 0
    stored: int = 0  # items accepted into the relay store for others
    duplicates: int = 0
    messages_relayed: int = 0
    acks_relayed: int = 0
    acks_seen: int = 0  # valid acks verified
    acks_answered: int = 0  # copies of acknowledged messages answered with the ack
    expired: int = 0
    pushed_on_join: int = 0
    texts_received: int = 0
    texts_delivered: int = 0
    # Handshake letters sent because a peer's letter opened in none of our sessions.
    handshakes_sent: int = 0
    hops_seen_total: int = 0
    # Replies not sent: the endpoint was not validated and had no credit left (admission).
    withheld: int = 0
    # Frames we could not encode (an invalid key from our own database, say).
    unsendable: int = 0
    # Hops of the most recent parts delivered to us (bounded: a node runs for months).
    hops_delivered: deque[int] = field(default_factory=lambda: deque(maxlen=HOPS_KEPT))
    rejected: Counter[str] = field(default_factory=Counter)
    sent_by_kind: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
