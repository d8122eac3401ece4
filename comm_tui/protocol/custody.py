"""Where an outgoing text is: its parts, who holds them, when they are tried again.

A sender's node keeps each part of its own undelivered text in the relay store (see
docs/PROTOCOL.md, "7.2 Message ids and relaying"): the entry knows which nodes
confirmed holding it (``holders``, from their receipts), since when the first did, how
often it was sent and when it is tried next. A part's entry is removed when the
recipient's signed ack for it arrives, so a part that is gone from the store of a text
that is still in the outbox has been acknowledged.

The same view is computed from the live store (the app's custody screen, refreshed each
second) and from the entries saved in the database (``comm-tui history --json``, with
no node running): one function, so both say the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from comm_tui.protocol.relay_store import Entry, Kind


@dataclass(frozen=True)
class PartCustody:
    """One part of a text that is not acknowledged yet."""

    part: int  # 0-based, as in the letter
    holders: int  # nodes that confirmed they hold it (their receipts)
    held_since: float | None  # when the first of them confirmed it (Unix seconds)
    attempts: int  # times we sent it
    next_retry: float | None  # when we send it again (Unix seconds), None if not scheduled


@dataclass(frozen=True)
class Custody:
    """An undelivered outgoing text as its sender's node sees it."""

    text_id: bytes
    parts: int  # how many parts the text has
    expires_at: float  # Unix seconds; the network drops it then
    pending: tuple[PartCustody, ...]  # the parts still waiting for the recipient's ack

    @property
    def acknowledged(self) -> int:
        """Parts the recipient has acknowledged (their entries are gone)."""
        return self.parts - len(self.pending)


def custody_of(entries: Iterable[Entry], text_id: bytes) -> Custody | None:
    """The custody of our own text ``text_id``, or None if no part of it is stored.

    None means the text is not in the outbox: delivered, expired, or never ours.
    """
    parts = [e for e in entries if e.kind is Kind.MESSAGE and e.own_text_id == text_id]
    if not parts:
        return None
    parts.sort(key=lambda e: e.own_part)
    return Custody(
        text_id=text_id,
        parts=parts[0].own_parts,
        expires_at=parts[0].expires_ms / 1000,
        pending=tuple(
            PartCustody(
                part=e.own_part,
                holders=len(e.holders),
                held_since=e.first_held_at or None,
                attempts=e.attempts,
                next_retry=e.next_at if e.next_at > 0 else None,
            )
            for e in parts
        ),
    )


def custody_json(custody: Custody | None) -> dict[str, object] | None:
    """The custody as ``history --json`` prints it: plain types, times in Unix seconds."""
    if custody is None:
        return None
    return {
        "parts": custody.parts,
        "acknowledged_parts": custody.acknowledged,
        "expires_at": custody.expires_at,
        "pending": [
            {
                "part": p.part,
                "holders": p.holders,
                "held_since": p.held_since,
                "attempts": p.attempts,
                "next_retry": p.next_retry,
            }
            for p in custody.pending
        ],
    }
