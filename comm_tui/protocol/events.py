"""What the protocol core reports to whoever drives it, as small named types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from comm_tui.crypto.identity import PublicIdentity

if TYPE_CHECKING:  # outbox.py builds these events, so it imports this module
    from comm_tui.protocol.outbox import OutboxState


@dataclass(frozen=True)
class TextReceived:
    """A whole text (all its parts) arrived from an authenticated sender."""

    text_id: bytes
    sender: PublicIdentity
    text: str
    sent_ms: int


@dataclass(frozen=True)
class NameClaimed:
    """An authenticated peer's session claimed a display name (docs/PROTOCOL.md, "7.1.1").

    Only a claim: the driver keeps the newest ``version`` per peer key, never lets it
    replace the user's own name for a contact, and shows it as the peer's words.
    """

    sender: PublicIdentity
    name: str
    version: int


@dataclass(frozen=True)
class TextsRead:
    """An authenticated peer says it read these texts (docs/PROTOCOL.md, "7.1.1").

    The driver applies them only to its own outgoing texts to that same peer.
    """

    sender: PublicIdentity
    text_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class TextStateChanged:
    """An outgoing text moved to ``sent``, ``delivered`` or ``expired`` (the moves are
    ``protocol/outbox.py``'s ``TRANSITIONS``)."""

    text_id: bytes
    recipient: bytes  # 20-byte address
    state: OutboxState


@dataclass(frozen=True)
class PeerAdded:
    key: bytes
    endpoint: tuple[str, int]


@dataclass(frozen=True)
class PeerRemoved:
    key: bytes


class StoreChanged(NamedTuple):
    """Relay-store entries to persist (``put``: key -> serialized entry) or forget.

    The adapter writes these in one transaction before it transmits, so whatever
    the network was told we hold (a receipt, an ack) is on disk first.

    A tuple, not a frozen dataclass like the other events: a relay hands over one per
    pump, mostly per datagram, and a frozen dataclass's ``__init__`` (four
    ``object.__setattr__`` calls) cost 2 % of relaying one.
    """

    # key -> (blob, expires_ms); the core's ``StorePut`` serializes an entry when read.
    put: Mapping[bytes, tuple[bytes, int]]
    delete: frozenset[bytes]
    # Keys of ``put`` whose change is relay bookkeeping only (RelayStore.touch): a
    # driver need not hold datagrams back for them (docs/PROTOCOL.md, "8.2").
    bookkeeping: frozenset[bytes] = frozenset()
    # Keys of ``put`` whose entry is held for others (``Entry.for_others``): only the
    # Receipts after them wait for their write (docs/PROTOCOL.md, "8.2").
    for_others: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class SessionsChanged:
    """Session state to persist (``put``: peer key -> sessions; None: forget the peer), and
    the prekey state when it changed.

    Emitted in the same batch as what caused it (a text sealed, a text received), so the
    adapter writes both in one transaction (docs/PROTOCOL.md, "Letters and sealing").
    """

    put: dict[bytes, bytes | None]
    prekeys: bytes | None


@dataclass(frozen=True)
class SessionReset:
    """A peer with whom we had a confirmed session started a new one: its state was lost.

    Shown in the conversation, and our unacknowledged texts to it are sent again.
    """

    peer_key: bytes


@dataclass(frozen=True)
class BundleFetched:
    """A ``fetch_bundle`` ended: every node asked answered or timed out.

    ``found``: the node's ``Directory.known_bundles`` holds a verified, unexpired bundle
    of ``address``.
    """

    address: bytes
    found: bool


# A rejected datagram is no event: it is counted by reason (``NodeStats.reject``), so a
# flood of bad datagrams grows a counter, never a queue the driver must drain.
Event = (
    TextReceived
    | NameClaimed
    | TextsRead
    | TextStateChanged
    | PeerAdded
    | PeerRemoved
    | StoreChanged
    | SessionsChanged
    | SessionReset
    | BundleFetched
)
