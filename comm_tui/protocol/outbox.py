"""The outbox: our own texts on their way, and the one state machine they move through.

Everything that moves a text's state lives here (h11's rule, "everything that affects
the state lives in one place"): the states, the causes that move them, the table of
moves, and the bookkeeping of parts that decides when a cause has happened. ``node.py``
reports facts (a part found a holder, a part was acknowledged, a part expired) and emits
the ``TextStateChanged`` this returns; ``store/db.py`` derives from ``TRANSITIONS`` which
stored states a row may move from (docs/PROTOCOL.md, "7.3 Acks", "Outbox states").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from comm_tui.protocol.events import TextStateChanged


class OutboxState(enum.StrEnum):
    """Where one of our texts is; the values are what the history database stores."""

    QUEUED = "queued"  # some part has no holder yet
    SENT = "sent"  # every part is held by at least one peer
    DELIVERED = "delivered"  # the recipient acknowledged every part (final)
    EXPIRED = "expired"  # a part expired unacknowledged (final)


class Cause(enum.Enum):
    """What can happen to a text that may move its state."""

    ALL_HELD = "every part not yet acknowledged is held by a peer"
    ALL_ACKED = "every part is acknowledged"
    EXPIRED = "a part expired before its ack came"


# The only moves there are: the outbox moves forwards, and the final states never move.
TRANSITIONS: Mapping[tuple[OutboxState, Cause], OutboxState] = MappingProxyType(
    {
        (OutboxState.QUEUED, Cause.ALL_HELD): OutboxState.SENT,
        (OutboxState.QUEUED, Cause.ALL_ACKED): OutboxState.DELIVERED,
        (OutboxState.SENT, Cause.ALL_ACKED): OutboxState.DELIVERED,
        (OutboxState.QUEUED, Cause.EXPIRED): OutboxState.EXPIRED,
        (OutboxState.SENT, Cause.EXPIRED): OutboxState.EXPIRED,
    }
)
FINAL_STATES = frozenset(s for s in OutboxState if all(src != s for src, _ in TRANSITIONS))


def next_state(state: OutboxState, cause: Cause) -> OutboxState | None:
    """The state ``cause`` moves a text in ``state`` to; None if it does not move it."""
    return TRANSITIONS.get((state, cause))


def sources(state: OutboxState) -> tuple[OutboxState, ...]:
    """The states some cause moves to ``state`` (in declaration order)."""
    return tuple(s for s in OutboxState if any(TRANSITIONS.get((s, c)) == state for c in Cause))


@dataclass
class OutgoingText:
    """One text of ours as the outbox sees it: its recipient, parts and state."""

    recipient: bytes  # 20-byte address
    parts: set[bytes] = field(default_factory=set)  # item ids of the parts not yet acked
    state: OutboxState = OutboxState.QUEUED


class Outbox:
    """Our texts not yet delivered or expired, by text id.

    Bounded by what the user sends (each text is also in the relay store, without quota,
    until it is acknowledged or expires); a final state removes the text.
    """

    def __init__(self) -> None:
        self._texts: dict[bytes, OutgoingText] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, text_id: object) -> bool:
        return text_id in self._texts

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._texts))

    def start(self, text_id: bytes, recipient: bytes) -> None:
        """A text (or a re-send of it, after a session reset) starts over, queued."""
        self._texts[text_id] = OutgoingText(recipient)

    def add_part(self, text_id: bytes, recipient: bytes, item_id: bytes) -> None:
        """A part of ``text_id``: as it is sealed, or as the store is restored."""
        text = self._texts.get(text_id)
        if text is None:
            text = self._texts[text_id] = OutgoingText(recipient)
        text.parts.add(item_id)

    def parts(self, text_id: bytes) -> frozenset[bytes]:
        """The item ids of ``text_id``'s parts not yet acknowledged (empty: not ours)."""
        text = self._texts.get(text_id)
        return frozenset(text.parts) if text is not None else frozenset()

    def recipients(self) -> set[bytes]:
        """The addresses we have texts waiting for."""
        return {text.recipient for text in self._texts.values()}

    def restored(self, held: Callable[[bytes], bool]) -> None:
        """After a restart: a text all of whose remaining parts have a holder is ``sent``
        again (parts missing from the restored store were acknowledged before it). No
        event: the history database already says so."""
        for text in self._texts.values():
            if all(held(pid) for pid in text.parts):
                text.state = next_state(text.state, Cause.ALL_HELD) or text.state

    def part_held(self, text_id: bytes, held: Callable[[bytes], bool]) -> TextStateChanged | None:
        """A part of ``text_id`` found a holder; ``held(part_id)`` says whether a part has
        one now. The text is sent once every part not yet acknowledged has one."""
        text = self._texts.get(text_id)
        if text is None or next_state(text.state, Cause.ALL_HELD) is None:
            return None
        if not all(held(pid) for pid in text.parts):
            return None
        return self._move(text_id, text, Cause.ALL_HELD)

    def part_acked(self, text_id: bytes, part_id: bytes) -> TextStateChanged | None:
        """The recipient acknowledged a part; the text is delivered with its last one."""
        text = self._texts.get(text_id)
        if text is None:
            return None
        text.parts.discard(part_id)
        if text.parts:
            return None
        return self._move(text_id, text, Cause.ALL_ACKED)

    def part_expired(self, text_id: bytes) -> TextStateChanged | None:
        """A part expired unacknowledged: the text can no longer be delivered whole."""
        text = self._texts.get(text_id)
        if text is None:
            return None
        return self._move(text_id, text, Cause.EXPIRED)

    def _move(self, text_id: bytes, text: OutgoingText, cause: Cause) -> TextStateChanged | None:
        """Apply ``TRANSITIONS``: the one place a text's state changes."""
        state = next_state(text.state, cause)
        if state is None:
            return None
        text.state = state
        if state in FINAL_STATES:
            del self._texts[text_id]
        return TextStateChanged(text_id, text.recipient, state)
