"""The relay store: messages, acks and prekey records this node holds for others
(and its own outbox and record).

Entries are keyed by kind and message id (a record: by its owner's address, so one
owner has at most one record here, docs/PROTOCOL.md, "8a. Records"). Each remembers
which nodes are known to hold it (they sent it to us or sent a receipt), so
re-relaying only goes to nodes that still lack it.

Keys are free, so quotas that count keys alone bound nothing. Quotas bound the store
in total, per target address, per peer that handed items to us and per *network* it
handed them from (``origin_net``: an IPv4 /24 or IPv6 /48, see
``routing.origin_network``), which is what an attacker actually has: one network holds
at most ``per_net_share`` of the store. A full store makes room for an item from a
less represented network by evicting from the most represented one, farthest target
from us first (what we are least responsible for), so a flood from a few networks can
neither keep honest items out nor stay for the TTL (docs/PROTOCOL.md, "Relay store").

On top of these, the user's caps (docs/PROTOCOL.md, "8.1 Local caps", set in the
profile's config): the bytes and the number of items held for others, and the longest
remaining life an item for others may have when we take it. Only items handed to us by
a peer count (``Entry.for_others``): our outbox, our record and the acks we sign are
what the user asked for. Over a cap an item is refused (the sender gets no receipt and
its retries go to others), never taken and dropped later.

Changes are collected as dirty keys, handed over as one ``StoreChanged`` event per pump
(``RelayStore.take_changes``); the adapter persists them so a restarted relay still holds
what it took.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError

from comm_tui.crypto.ack import ack_is_well_formed
from comm_tui.crypto.identity import ADDRESS_BYTES, address_of
from comm_tui.crypto.records import record_problem
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import wide_network
from comm_tui.protocol.events import StoreChanged

STORE_TOTAL_BYTES = 64 * 1024 * 1024
STORE_MAX_ITEMS = 50_000
# Items for others whose remaining life is longer are refused (None: no cap). The
# default, the protocol's TTL, refuses nothing _check_expiry lets through.
STORE_MAX_LIFE_S: float | None = None
STORE_PER_TARGET_BYTES = 2 * 1024 * 1024
STORE_PER_PEER_BYTES = 4 * 1024 * 1024
# No network of origin holds more than this share of the store.
STORE_PER_NET_SHARE = 0.05
# Items from a pair (key, endpoint) not yet validated share one network of origin:
# their source address may be forged, so it cannot stand for a network. Like any
# network it holds at most its share, and it is evicted from first.
UNVALIDATED_ORIGIN = "unvalidated"
# A pair that handed us items: its key and its source endpoint (host, port).
_Pair = tuple[bytes, tuple[str, int]]
# Bookkeeping a stored item costs beyond its wire bytes (a rough Python overhead).
ENTRY_OVERHEAD_BYTES = 256
_NOTHING: frozenset[bytes] = frozenset()


class Kind(enum.IntEnum):
    MESSAGE = 1
    ACK = 2
    RECORD = 3


# The store key's first byte for each kind, built once (``bytes([kind])`` per call built
# a list and a bytes object on every store lookup of the relay path).
_KIND_BYTE = {kind: bytes([kind]) for kind in Kind}


def entry_key(kind: Kind, item_id: bytes) -> bytes:
    return _KIND_BYTE[kind] + item_id


@dataclass(slots=True)
class Entry:
    """One stored item with its relay schedule.

    Slotted: a relay builds one per item it takes, keeps thousands, and the relay path
    reads their fields about twenty times per item (docs/PROTOCOL.md, "8. Relay store")."""

    kind: Kind
    item_id: bytes
    target: bytes  # address the item travels toward
    expires_ms: int
    wire: pb.Message | pb.Ack | pb.PrekeyBundle
    stored_at: float
    attempts: int = 0
    next_at: float = 0.0
    holders: set[bytes] = field(default_factory=set)
    settled: bool = False  # acks only: every node it goes back to holds it
    own_text_id: bytes = b""
    own_part: int = 0
    own_parts: int = 0
    origin: bytes = b""  # address of the peer that handed it to us (quota accounting)
    origin_net: str = ""  # the network it came from (quotas and eviction)
    # The peer that handed us the item, and where from: a message's ack goes back there
    # (docs/PROTOCOL.md, "7.3 Acks"; an ack copies them from the message it replaces),
    # and an item of an unproven pair is re-charged once the pair is validated
    # (``RelayStore.recharge``). Empty for our own items.
    origin_key: bytes = b""
    origin_endpoint: tuple[str, int] | None = None
    # Acks only: the other nodes known to hold the message, which the ack also stops.
    notify: set[bytes] = field(default_factory=set)
    # Messages only: it came to us in the stem, or it is our own text, which starts in
    # the stem (docs/PROTOCOL.md, "7.2").
    stem: bool = False
    # When the first holder confirmed it (Unix seconds; 0 before): the custody view's
    # "held since" (comm_tui/protocol/custody.py).
    first_held_at: float = 0.0
    # The store key (``entry_key``), computed once: kind and id never change, and the
    # relay path reads it about ten times per item.
    key: bytes = field(init=False, repr=False, compare=False)
    # What the quotas charge for it, computed once: ``wire`` never changes (the store's
    # accounting must give back on removal exactly what it took on adding).
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = entry_key(self.kind, self.item_id)
        self.size = self.wire.ByteSize() + ENTRY_OVERHEAD_BYTES

    @property
    def for_others(self) -> bool:
        """Handed to us by a peer (a relayed item, or the ack that replaced one): what the
        caps count and the relay bandwidth pays for. Our own texts, records and the acks
        we sign have no origin."""
        return bool(self.origin or self.origin_net)

    def serialize(self) -> bytes:
        record = pb.StoreEntry(
            attempts=self.attempts,
            next_at=self.next_at,
            holders=sorted(self.holders),
            settled=self.settled,
            own_text_id=self.own_text_id,
            own_part=self.own_part,
            own_parts=self.own_parts,
            stored_at=self.stored_at,
            origin=self.origin,
            origin_net=self.origin_net,
            origin_key=self.origin_key,
            origin_host=self.origin_endpoint[0] if self.origin_endpoint else "",
            origin_port=self.origin_endpoint[1] if self.origin_endpoint else 0,
            notify=sorted(self.notify),
            stem=self.stem,
            first_held_at=self.first_held_at,
        )
        if isinstance(self.wire, pb.Message):
            record.message.CopyFrom(self.wire)
        elif isinstance(self.wire, pb.Ack):
            record.ack.CopyFrom(self.wire)
        else:
            record.record.CopyFrom(self.wire)
        return record.SerializeToString()

    @classmethod
    def deserialize(cls, blob: bytes) -> Entry:
        """Rebuild an entry from disk; raises ValueError for a damaged record."""
        try:
            record = pb.StoreEntry.FromString(blob)
        except (DecodeError, RuntimeError) as exc:
            raise ValueError("damaged relay-store entry") from exc
        which = record.WhichOneof("item")
        common = {
            "attempts": record.attempts,
            "next_at": record.next_at,
            "holders": set(record.holders),
            "settled": record.settled,
            "own_text_id": record.own_text_id,
            "own_part": record.own_part,
            "own_parts": record.own_parts,
            "stored_at": record.stored_at,
            "origin": record.origin,
            "origin_net": record.origin_net,
            "origin_key": record.origin_key,
            "origin_endpoint": (
                (record.origin_host, record.origin_port) if record.origin_host else None
            ),
            "notify": set(record.notify),
            "stem": record.stem,
            "first_held_at": record.first_held_at,
        }
        if which == "message":
            msg = record.message
            if len(msg.recipient) != ADDRESS_BYTES or not msg.sealed:
                raise ValueError("damaged relay-store entry")
            item_id = message_id(msg.recipient, msg.expires_ms, msg.sealed)
            return cls(Kind.MESSAGE, item_id, msg.recipient, msg.expires_ms, msg, **common)  # type: ignore[arg-type]
        if which == "ack":
            ack = record.ack
            if not ack_is_well_formed(ack):
                raise ValueError("damaged relay-store entry")
            # Acks are keyed by message id and recipient address, as the node stores them,
            # and filed under the recipient, the message's target.
            recipient = address_of(ack.recipient_key)
            item_id = ack.message_id + recipient
            return cls(Kind.ACK, item_id, recipient, ack.expires_ms, ack, **common)  # type: ignore[arg-type]
        if which == "record":
            bundle = record.record
            if record_problem(bundle) is not None:
                raise ValueError("damaged relay-store entry")
            # A record is stored under its owner's address, which is also its target.
            owner = address_of(bundle.owner_key)
            return cls(Kind.RECORD, owner, owner, bundle.expires_ms, bundle, **common)  # type: ignore[arg-type]
        raise ValueError("damaged relay-store entry")


# docs/PROTOCOL.md, "8.1 Local caps": the refusal reasons each cap gives, by cap name.
CAP_REASONS = (
    ("bytes", "store_full"),
    ("items", "store_cap_items"),
    ("days", "store_cap_days"),
    ("relay off", "not_relay"),
)
# Networks of origin the dashboard names.
ORIGINS_SHOWN = 3


@dataclass(frozen=True)
class RelayUsage:
    """What we hold and send for others against each cap, as plain data for the status
    panel and ``comm-tui node``'s stats line."""

    relaying: bool
    bytes_held: int
    bytes_cap: int
    items_held: int
    items_cap: int
    days_cap: float
    sent_bytes: int  # sent on behalf of others since start
    bandwidth_cap: int  # bytes per second
    deferred: int  # sends put off by the bandwidth cap
    origins: tuple[tuple[str, int], ...]  # networks of origin by bytes held, most first
    refused: tuple[tuple[str, int], ...]  # by cap name, in CAP_REASONS order
    # What waits now in the bandwidth's lines (docs/PROTOCOL.md, "8.1 Local caps"): the
    # items, the networks and wide networks with a line, and the networks with the most
    # items waiting, most first (one network filling the lines shows at the top).
    waiting: int = 0
    waiting_networks: int = 0
    waiting_wide: int = 0
    waiting_top: tuple[tuple[str, int], ...] = ()


class QuotaExceeded(Exception):
    """The store refuses a new item; ``reason`` names the statistics counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RelayStore:
    def __init__(
        self,
        own_address: bytes,
        *,
        total_bytes: int = STORE_TOTAL_BYTES,
        per_target_bytes: int = STORE_PER_TARGET_BYTES,
        per_peer_bytes: int = STORE_PER_PEER_BYTES,
        per_net_share: float = STORE_PER_NET_SHARE,
        max_items: int = STORE_MAX_ITEMS,
        max_life_s: float | None = STORE_MAX_LIFE_S,
        on_remove: Callable[[Entry], None] | None = None,
    ) -> None:
        # Told of every entry removed (acked, expired, evicted, replaced): the relay
        # bandwidth's lines hold deferred entries only while the store does.
        self._on_remove = on_remove
        self._own_int = int.from_bytes(own_address, "big")
        self.total_limit = total_bytes
        self.items_limit = max_items
        self.max_life_ms = None if max_life_s is None else int(max_life_s * 1000)
        self.per_target_limit = per_target_bytes
        self.per_peer_limit = per_peer_bytes
        self.per_net_limit = int(total_bytes * per_net_share)
        self._entries: dict[bytes, Entry] = {}
        # Dicts as ordered sets: iteration order must not depend on hash seeds, so a
        # simulation with a fixed seed replays exactly.
        self._by_target: defaultdict[bytes, dict[bytes, None]] = defaultdict(dict)
        # Acks by the address they go back to first (the peer that handed us the message).
        self._acks_back: defaultdict[bytes, dict[bytes, None]] = defaultdict(dict)
        self._target_bytes: defaultdict[bytes, int] = defaultdict(int)
        self._peer_bytes: defaultdict[bytes, int] = defaultdict(int)
        self._by_net: defaultdict[str, dict[bytes, None]] = defaultdict(dict)
        self._net_bytes: defaultdict[str, int] = defaultdict(int)
        # The entries charged to ``unvalidated`` by the pair (origin key, endpoint) that
        # handed them to us, oldest first: a validation re-charges that pair's own items
        # (``recharge``) without a scan, since an attacker can make us validate many
        # pairs. Holds only entries the store holds, so it is bounded as they are.
        self._unvalidated: defaultdict[_Pair, dict[bytes, None]] = defaultdict(dict)
        self.total_bytes = 0
        # What we hold for others (Entry.for_others): what the caps bound.
        self.others_bytes = 0
        self.others_items = 0
        self.evicted = 0
        self.dirty: set[bytes] = set()
        self.deleted: set[bytes] = set()
        # Dirty keys whose entry was added or replaced, not only re-scheduled (``touch``).
        self.written: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def get(self, kind: Kind, item_id: bytes) -> Entry | None:
        return self._entries.get(entry_key(kind, item_id))

    def by_key(self, key: bytes) -> Entry | None:
        """An entry by its store key (as receipts and the schedule name it)."""
        return self._entries.get(key)

    def for_target(self, target: bytes) -> list[Entry]:
        return [self._entries[k] for k in self._by_target.get(target, ())]

    def count_for(self, target: bytes) -> int:
        """How many entries travel toward ``target``, in O(1)."""
        return len(self._by_target.get(target, ()))

    def oldest_for(self, target: bytes, kind: Kind) -> Entry | None:
        """The entry of ``kind`` toward ``target`` stored first (or None)."""
        for key in self._by_target.get(target, ()):
            entry = self._entries[key]
            if entry.kind is kind:
                return entry
        return None

    def acks_back_to(self, address: bytes) -> list[Entry]:
        """Acks that go back to ``address`` (docs/PROTOCOL.md, "7.3 Acks")."""
        return [self._entries[k] for k in self._acks_back.get(address, ())]

    def add(self, entry: Entry, *, enforce_quota: bool = True) -> None:
        """Store a new entry, evicting for it if it is fair to, or raise QuotaExceeded.

        Our own outgoing messages and acks we sign are stored without quota:
        they are what the user asked for and are bounded by the outbox itself.
        """
        size, target, key = entry.size, entry.target, entry.key
        origin, net = entry.origin, entry.origin_net
        if enforce_quota:
            life_ms = entry.expires_ms - int(entry.stored_at * 1000)
            if self.max_life_ms is not None and life_ms > self.max_life_ms:
                raise QuotaExceeded("store_cap_days")
            # .get, not [], so a refused item leaves no zero-valued key behind.
            if self._target_bytes.get(target, 0) + size > self.per_target_limit:
                raise QuotaExceeded("target_quota")
            if origin and self._peer_bytes.get(origin, 0) + size > self.per_peer_limit:
                raise QuotaExceeded("peer_quota")
            if net and self._net_bytes.get(net, 0) + size > self.per_net_limit:
                raise QuotaExceeded("net_quota")
            if self._over_caps(size, 1):
                self._make_room(size, net)
        entries = self._entries
        if key in entries:
            self.remove(entries[key])
        entries[key] = entry
        self._by_target[target][key] = None
        if entry.kind is Kind.ACK and entry.origin_key:
            self._acks_back[address_of(entry.origin_key)][key] = None
        self._target_bytes[target] += size
        if origin:
            self._peer_bytes[origin] += size
        if net:
            self._by_net[net][key] = None
            self._net_bytes[net] += size
            if net == UNVALIDATED_ORIGIN and entry.origin_endpoint is not None:
                self._unvalidated[(entry.origin_key, entry.origin_endpoint)][key] = None
        self.total_bytes += size
        if origin or net:  # entry.for_others
            self.others_bytes += size
            self.others_items += 1
        self.dirty.add(key)  # touch(entry): a new entry is written, not bookkeeping
        self.deleted.discard(key)
        self.written.add(key)

    def _over_caps(self, size: int, items: int) -> bool:
        """Would ``size`` more bytes in ``items`` more items for others pass a cap?"""
        return (
            self.others_bytes + size > self.total_limit
            or self.others_items + items > self.items_limit
        )

    def _make_room(self, size: int, net: str) -> None:
        """Evict from the most represented network until ``size`` more bytes fit, in one
        more item than the items cap allows at most.

        Items of unproven origin go first. Then only a network holding more than the
        newcomer's would afterwards is evicted from, so the store converges on an even
        share per network and an honest newcomer always finds room while any one
        network holds more than it. Within a network the item whose target is farthest
        from us goes first.
        """
        while self._over_caps(size, 1):
            victim_net = self._net_to_evict_from(net, size)
            if victim_net is None:
                # docs/PROTOCOL.md, "8.1 Local caps": named after the cap that is passed.
                full = self.others_bytes + size > self.total_limit
                raise QuotaExceeded("store_full" if full else "store_cap_items")
            keys = self._by_net[victim_net]
            victim = max(
                (self._entries[k] for k in keys),
                key=lambda e: int.from_bytes(e.target, "big") ^ self._own_int,
            )
            self.remove(victim)
            self.evicted += 1

    def _net_to_evict_from(self, net: str, size: int) -> str | None:
        if net != UNVALIDATED_ORIGIN and UNVALIDATED_ORIGIN in self._net_bytes:
            return UNVALIDATED_ORIGIN
        largest = max(self._net_bytes, key=self._net_bytes.__getitem__, default=None)
        if largest is None or largest == net:
            return None
        if self._net_bytes[largest] <= self._net_bytes.get(net, 0) + size:
            return None
        return largest

    def touch(self, entry: Entry, *, bookkeeping: bool = False) -> None:
        """Mark an entry as changed so the next StoreChanged persists it.

        ``bookkeeping``: only its relay schedule changed (attempts, next attempt,
        holders, settled, first held), which no datagram depends on being durable
        (docs/PROTOCOL.md, "8.2 Local durability"). Of an item held for others it is
        not persisted at all: a restart re-learns it (the restore's grace, then the
        holders' receipts), and rewriting the entry for it was about half of a relay's
        writes. Of our own entries it is, for the outbox and custody shown after one.
        """
        if bookkeeping and entry.for_others:
            return
        self.dirty.add(entry.key)
        self.deleted.discard(entry.key)
        if not bookkeeping:
            self.written.add(entry.key)

    def remove(self, entry: Entry) -> None:
        key = entry.key
        if self._entries.pop(key, None) is None:
            return
        size = entry.size
        keys = self._by_target[entry.target]
        keys.pop(key, None)
        if not keys:
            del self._by_target[entry.target]
        if entry.kind is Kind.ACK and entry.origin_key:
            back = address_of(entry.origin_key)
            acks = self._acks_back[back]
            acks.pop(key, None)
            if not acks:
                del self._acks_back[back]
        self._target_bytes[entry.target] -= size
        if self._target_bytes[entry.target] <= 0:
            del self._target_bytes[entry.target]
        if entry.origin:
            self._peer_bytes[entry.origin] -= size
            if self._peer_bytes[entry.origin] <= 0:
                del self._peer_bytes[entry.origin]
        if entry.origin_net:
            self._uncharge(entry)
            if entry.origin_net == UNVALIDATED_ORIGIN and entry.origin_endpoint is not None:
                pair = (entry.origin_key, entry.origin_endpoint)
                pair_keys = self._unvalidated[pair]
                pair_keys.pop(key, None)
                if not pair_keys:
                    del self._unvalidated[pair]
        self.total_bytes -= size
        if entry.for_others:
            self.others_bytes -= size
            self.others_items -= 1
        self.dirty.discard(key)
        self.deleted.add(key)
        if self._on_remove is not None:
            self._on_remove(entry)

    def _uncharge(self, entry: Entry) -> None:
        """Take ``entry`` out of its network of origin's items and bytes."""
        net, key = entry.origin_net, entry.key
        net_keys = self._by_net[net]
        net_keys.pop(key, None)
        if not net_keys:
            del self._by_net[net]
        self._net_bytes[net] -= entry.size
        if self._net_bytes[net] <= 0:
            del self._net_bytes[net]

    def recharge(self, origin_key: bytes, endpoint: tuple[str, int], net: str) -> list[Entry]:
        """The pair (``origin_key``, ``endpoint``) was validated: charge the items it
        handed us while unproven, oldest first, to its network of origin ``net`` instead
        of ``unvalidated`` (docs/PROTOCOL.md, "8. Relay store"), and return them.

        The per-network quota holds as for a new item: the first item that would take
        ``net`` past it stays in ``unvalidated``, and so do those after it (so a
        validation costs the items moved and one more, however often the pair is
        validated again). Each moved entry is written anew: a restart charges an entry
        to the network it stored, and one stored as ``unvalidated`` would be evicted
        first again.
        """
        pair = (origin_key, endpoint)
        keys = self._unvalidated.get(pair)
        moved: list[Entry] = []
        while keys:
            key = next(iter(keys))
            entry = self._entries[key]
            if self._net_bytes.get(net, 0) + entry.size > self.per_net_limit:
                return moved
            del keys[key]
            self._uncharge(entry)
            entry.origin_net = net
            self._by_net[net][key] = None
            self._net_bytes[net] += entry.size
            self.touch(entry)
            moved.append(entry)
        if keys is not None:
            del self._unvalidated[pair]
        return moved

    def origin_shares(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` networks of origin holding the most bytes, most first."""
        ranked = sorted(self._net_bytes.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:limit]

    def expire(self, now_ms: int) -> list[Entry]:
        gone = [e for e in self._entries.values() if e.expires_ms <= now_ms]
        for entry in gone:
            self.remove(entry)
        return gone

    def take_changes(self) -> StoreChanged:
        """What changed since the last call, as the ``StoreChanged`` that asks to persist
        it (docs/PROTOCOL.md, "8.2 Local durability"): the dirty entries, the deleted
        keys, which of the entries only their bookkeeping changed (``touch(entry,
        bookkeeping=True)``), and which are held for others (``Entry.for_others``).

        One pass over the dirty keys: a relay hands over one per pump, mostly per
        datagram, and the three passes and calls this replaced cost 0.5 us more (1.4
        against 0.9 us for a pump that stored one item; bench/RESULTS.md, "Issue 11,
        ninth session")."""
        entries, written = self._entries, self.written
        put: dict[bytes, Entry] = {}
        bookkeeping: list[bytes] = []
        others: list[bytes] = []
        for key in self.dirty:
            entry = put[key] = entries[key]
            if key not in written:
                bookkeeping.append(key)
            if entry.for_others:
                others.append(key)
        self.dirty.clear()
        written.clear()
        if self.deleted:
            deleted = frozenset(self.deleted)
            self.deleted.clear()
        else:
            deleted = _NOTHING
        return StoreChanged(
            StorePut(put),
            deleted,
            frozenset(bookkeeping) if bookkeeping else _NOTHING,
            frozenset(others) if others else _NOTHING,
        )


class StorePut(Mapping[bytes, tuple[bytes, int]]):
    """The entries a ``StoreChanged`` asks to persist: store key -> (serialized entry,
    expires_ms), serialized when read.

    A driver without a disk (the simulator, a memory-store node) never reads them, and
    one with a disk merges the changes of a whole group commit and writes each key once
    (``net/service.py``): serializing every change of every pump cost a tenth of the
    relay path. Read on the node's own thread before the commit that the datagrams
    depending on it wait for, so what is written is the entry as it is then, never older
    than what was announced (docs/PROTOCOL.md, "8.2 Local durability").
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[bytes, Entry]) -> None:
        self._entries = entries

    def __getitem__(self, key: bytes) -> tuple[bytes, int]:
        entry = self._entries[key]
        return entry.serialize(), entry.expires_ms

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# A relay bandwidth cap lets at least this much go in one burst, so one item always fits
# (the largest datagram is 1,200 bytes) however low the cap is set.
BANDWIDTH_MIN_BURST = 2 * 1200
# Seconds of the cap that may go out at once after a quiet spell.
BANDWIDTH_BURST_S = 2.0
# Deficit round robin's quantum: the item bytes (``Entry.size``) a network's line may
# send per turn, on top of what it carried over. At least the largest item (a datagram
# and the bookkeeping), so every turn sends at least one item
# (docs/PROTOCOL.md, "8.1 Local caps").
BANDWIDTH_QUANTUM = 1200 + ENTRY_OVERHEAD_BYTES
# Seconds past the moment the balance turns positive that ``wake_at`` names: more than
# the rounding of a Unix time (0.24 us near 2e9), so the balance is positive then.
BANDWIDTH_WAKE_MARGIN_S = 1e-6


class _Turns:
    """What deficit round robin keeps of one taker of turns: its deficit, the item bytes
    its turns have given it and it has not yet spent."""

    __slots__ = ("deficit",)

    def __init__(self) -> None:
        self.deficit = 0


class _Line(_Turns):
    """One network of origin's deferred items, oldest first."""

    __slots__ = ("items", "wide")

    def __init__(self, wide: str) -> None:
        super().__init__()
        self.wide = wide
        self.items: OrderedDict[bytes, Entry] = OrderedDict()


class _WideLine(_Turns):
    """One wide network's lines (one per network of origin in it), in turn order."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        super().__init__()
        self.lines: OrderedDict[str, _Line] = OrderedDict()


_T = TypeVar("_T", bound=_Turns)


def _next_turn(turns: OrderedDict[str, _T]) -> None:
    """The first taker's turn is over: it goes last, and the next one's turn starts with
    the quantum added to its deficit."""
    turns.move_to_end(next(iter(turns)))
    turns[next(iter(turns))].deficit += BANDWIDTH_QUANTUM


def _join(turns: OrderedDict[str, _T], name: str, taker: _T) -> None:
    """A new taker of turns goes last; alone, its turn starts now."""
    if not turns:
        taker.deficit = BANDWIDTH_QUANTUM
    turns[name] = taker


def _leave(turns: OrderedDict[str, _T], name: str) -> None:
    """A taker with nothing left waiting leaves, with its deficit (deficit round robin:
    it saves no turns while nothing of it waits); if its turn was on, the next one's
    starts."""
    on = next(iter(turns)) == name
    del turns[name]
    if on and turns:
        turns[next(iter(turns))].deficit += BANDWIDTH_QUANTUM


def wide_network_of(net: str) -> str:
    """The wide network (docs/PROTOCOL.md, "5.2": an IPv4 /16, an IPv6 /32) holding a
    network of origin as ``Entry.origin_net`` names it ("198.51.100.0/24"). A name that
    is no IP network (``unvalidated``, a loopback host:port, a host name) is its own."""
    if "/" not in net:
        return net
    try:
        network = ipaddress.ip_network(net)
    except ValueError:
        return net
    return wide_network((str(network.network_address), 0))


class RelayBandwidth:
    """The bytes per second we send on behalf of others (docs/PROTOCOL.md, "8.1 Local
    caps"): items for others forwarded, pushed and handed out on a Fetch.

    A balance refilled at ``rate`` up to a burst of ``BANDWIDTH_BURST_S`` seconds. A
    relay of one item goes out whole (to all its hops) while the balance is positive and
    may take it into debt; the next waits until the debt is paid, so over any long span
    no more than ``rate`` bytes a second go out. What cannot go is deferred, never
    dropped, in a line per network of origin (``Entry.origin_net``, what the store's
    quotas charge: the /24 or /48 the item came from, never a field of the item). When
    the balance is positive again the lines take turns by deficit round robin (Shreedhar
    and Varghese, 1995) on two levels: the wide networks (/16, /32) take turns, and in
    a wide network's turn its networks take theirs. One network that queued thousands of
    items delays another's item by about one turn, not by all it queued (the single line
    this replaces let one network deafen everyone else at a relay for as long as it kept
    the line full), and the holder of a /32's 65,536 /48s gets the turns of one wide
    network, not of 65,536 networks.

    The lines hold only items waiting, each once, and only while the store holds it
    (the store calls ``forget`` on removal): at most the items held for others, so the
    networks and wide networks with a line are bounded by the store's caps.
    """

    def __init__(self, rate_bytes_s: int, now: float) -> None:
        self.rate = float(rate_bytes_s)
        self.burst = max(self.rate * BANDWIDTH_BURST_S, float(BANDWIDTH_MIN_BURST))
        self.balance = self.burst
        self.updated = now
        self.sent = 0  # bytes sent for others in all, for the dashboard
        # Wide network -> its lines, in turn order: the first one's turn is on, and it
        # has had its quantum for this turn (so has the first line of each). Every wide
        # line holds at least one line, every line at least one item.
        self._wide: OrderedDict[str, _WideLine] = OrderedDict()
        self._lines: dict[str, _Line] = {}  # network -> its line (in its wide line)
        self.waiting = 0  # items in all lines

    def _refill(self, now: float) -> None:
        # No min()/max() calls: every item for others refills once.
        elapsed = now - self.updated
        if elapsed > 0.0:
            self.updated = now
            balance = self.balance + elapsed * self.rate
            self.balance = self.burst if balance > self.burst else balance

    def open(self, now: float) -> bool:
        """May a single send for others outside a relay attempt (a push on Fetch or
        Attach, an ack answering a copy, a newer record handed back) go out now? Only
        while the balance is positive and no deferred item waits: such sends come when a
        peer asks, so a peer asking fast would otherwise take every moment the balance
        turns positive (a driver reads the datagrams before a due timer) and the lines
        would never have a turn (docs/PROTOCOL.md, "8.1 Local caps", "Bandwidth")."""
        self._refill(now)
        return self.balance > 0 and not self.waiting

    def defer(self, now: float, entry: Entry) -> bool:
        """False if a relay attempt of ``entry`` (an item for others) may start now: the
        balance is positive and no item waits. Otherwise it waits at the end of its
        network's line (once, however often it is asked) and ``take`` hands it back
        in its turn. One refill and two plain tests in the common case: the relay path
        asks for every item it takes."""
        self._refill(now)
        if self.balance > 0 and not self.waiting:
            return False
        self._enqueue(entry)
        return True

    def _enqueue(self, entry: Entry) -> None:
        """``entry`` waits at the end of its network's line (once, however often it is
        asked), the line and its wide network's joining the turns if new."""
        net = entry.origin_net
        line = self._lines.get(net)
        if line is None:
            wide = wide_network_of(net)
            line = self._lines[net] = _Line(wide)
            wide_line = self._wide.get(wide)
            if wide_line is None:
                wide_line = _WideLine()
                _join(self._wide, wide, wide_line)
            _join(wide_line.lines, net, line)
        if entry.key not in line.items:
            line.items[entry.key] = entry
            self.waiting += 1

    def recharged(self, entry: Entry, old_net: str) -> None:
        """The store charged ``entry`` to a new network of origin (``RelayStore.recharge``,
        from ``old_net``): if it waits, it leaves its old line and waits at the end of its
        new network's, as an item deferred now would (docs/PROTOCOL.md, "8.1 Local caps").
        """
        line = self._lines.get(old_net)
        if line is None or line.items.pop(entry.key, None) is None:
            return
        self.waiting -= 1
        if not line.items:
            self._close(old_net, line)
        self._enqueue(entry)

    def wake_at(self) -> float | None:
        """When ``take`` will next hand out an item: None while no item waits, else when
        the balance is a byte above zero, and ``BANDWIDTH_WAKE_MARGIN_S`` later: Unix
        times near 2e9 are resolved to 0.24 us only, and at a high cap (up to 10 GiB/s)
        a wake rounded down found the balance still spent, so a driver that keeps its
        clock at the timer asked again at the same instant without end."""
        if not self.waiting:
            return None
        return self.updated + ((1.0 - self.balance) / self.rate + BANDWIDTH_WAKE_MARGIN_S)

    def take(self, now: float) -> Entry | None:
        """The next deferred item whose relay attempt may start now, in fair turn, or
        None (the balance is spent, or nothing waits). A turn starts with the quantum
        added to the taker's deficit; the first wide network's first line hands out its
        oldest item while both their deficits cover its size (taking it from both),
        else the line's turn is over, or, when it is the wide network's deficit that
        falls short, the wide network's.
        """
        if not self.waiting:
            return None
        self._refill(now)
        if self.balance <= 0:
            return None
        wides = self._wide
        while True:
            wide_line = next(iter(wides.values()))
            lines = wide_line.lines
            net, line = next(iter(lines.items()))
            key, entry = next(iter(line.items.items()))
            size = entry.size
            if line.deficit < size:
                _next_turn(lines)
            elif wide_line.deficit < size:
                _next_turn(wides)
            else:
                line.deficit -= size
                wide_line.deficit -= size
                del line.items[key]
                self.waiting -= 1
                if not line.items:
                    self._close(net, line)
                return entry

    def forget(self, entry: Entry) -> None:
        """The store no longer holds ``entry``: it leaves its line (an acked, expired or
        evicted item is not sent, and its key is not kept)."""
        if not self.waiting:
            return
        line = self._lines.get(entry.origin_net)
        if line is not None and line.items.pop(entry.key, None) is not None:
            self.waiting -= 1
            if not line.items:
                self._close(entry.origin_net, line)

    def _close(self, net: str, line: _Line) -> None:
        """Drop a line that emptied, and its wide network's if that emptied too."""
        del self._lines[net]
        wide_line = self._wide[line.wide]
        _leave(wide_line.lines, net)
        if not wide_line.lines:
            _leave(self._wide, line.wide)

    def networks_waiting(self) -> int:
        """How many networks have items deferred (each has a line)."""
        return len(self._lines)

    def wide_networks_waiting(self) -> int:
        """How many wide networks have items deferred."""
        return len(self._wide)

    def most_waiting(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` networks with the most items deferred, most first (for the
        dashboard, once a second: the lines are bounded by the store's caps)."""
        ranked = sorted(
            ((net, len(line.items)) for net, line in self._lines.items()),
            key=lambda item: (-item[1], item[0]),
        )
        return ranked[:limit]

    def spend(self, size: int, now: float) -> None:
        self._refill(now)
        self.balance -= size
        self.sent += size
