"""Counters a node keeps about itself, for the status panel, logs and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
    fetches_too_soon: int = 0  # Fetch/Attach pushes past the sender's FETCH_RATE_PER_S
    texts_received: int = 0
    texts_delivered: int = 0
    stem_forwards: int = 0  # items we sent on in the stem (docs/PROTOCOL.md, "7.2")
    # Handshake letters sent because a peer's letter opened in none of our sessions.
    handshakes_sent: int = 0
    # Replies not sent: the endpoint was not validated and had no credit left (admission).
    withheld: int = 0
    # docs/PROTOCOL.md, "12. Reachability": messages pushed to attached clients, attached
    # clients evicted by the table's bounds, re-announcements after our endpoint changed.
    pushed_to_clients: int = 0
    attach_evicted: int = 0
    reannounced: int = 0
    # docs/PROTOCOL.md, "8.1 Local caps": sends of items for others put off because the
    # relay bandwidth cap was spent (deferred, never dropped).
    relay_deferred: int = 0
    # docs/PROTOCOL.md, "7.2", "Receipt wait": copies not sent to a peer whose receipt for
    # the same item was still awaited.
    resends_held: int = 0
    # Frames we could not encode (an invalid key from our own database, say).
    unsendable: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sent_by_kind: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
