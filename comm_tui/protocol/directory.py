"""The prekey directory: our own signed record, others' records we store for them, and
the bundles we fetch to start sessions (docs/PROTOCOL.md, "8a. Records": 8a.2 checks,
8a.3 storing and relaying, 8a.4 publishing, 8a.5 fetching).

``Directory`` owns every piece of that state: the bundles of others we verified
(``known_bundles``, bounded, the least recently fetched forgotten first), the fetches in
flight, the contacts whose bundle we want, and when our own record is issued again. It
does no I/O and keeps no clock: the node calls it with ``now`` (Unix seconds, the
driver's clock) and it acts through the narrow ``DirectoryHost`` the node hands it (send
a frame, relay or hand over an item, start a lookup, open and close a GetRecord query,
report an event). Records themselves are relay-store items like messages (one per
owner, ``Kind.RECORD``), so the store, its quotas and its retries stay the node's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from comm_tui.crypto.identity import ADDRESS_BYTES, Identity, PublicIdentity, address_of
from comm_tui.crypto.prekeys import PublicBundle
from comm_tui.crypto.records import (
    RECORD_LIFETIME_S,
    RECORD_REFRESH_S,
    bundle_of,
    record_problem,
    sign_record,
    verify_record,
)
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import MAX_CLOCK_SKEW_S, Rejected
from comm_tui.protocol.events import BundleFetched, Event
from comm_tui.protocol.faces import SendFrame
from comm_tui.protocol.lookup import Candidate, Lookup
from comm_tui.protocol.ratelimit import RateLimiter
from comm_tui.protocol.relay_store import Entry, Kind, QuotaExceeded, RelayStore
from comm_tui.protocol.routing import Endpoint
from comm_tui.protocol.sessions import SessionBook
from comm_tui.protocol.stats import NodeStats

# Bundle fetches in flight at once, and verified bundles of others kept (least recently
# fetched forgotten first).
BUNDLE_FETCHES_MAX = 64
KNOWN_BUNDLES_MAX = 256
# Our own bundle is published again when it changes (a one-time prekey used, a rotation,
# a refill), at most this often: strangers who start sessions with us use up one-time
# prekeys at will, and must not make us publish at will (docs/PROTOCOL.md, "8a.4").
BUNDLE_REPUBLISH_MIN_S = 60.0
# Contacts we have no session with, whose bundles we fetch while online (so a first text
# opens with X3DH, not the fallback): at most this many, each tried again after a delay.
WANTED_BUNDLES_MAX = 256
BUNDLE_RETRY_S = 60.0
# A fetched bundle's one-time prekeys are used this long after we learned it, no longer.
ONE_TIME_PREKEYS_FRESH_S = 600.0


def _ms(now: float) -> int:
    return int(now * 1000)


@dataclass(frozen=True)
class DirectoryHost:
    """What the directory asks of its node: the whole face between the two."""

    identity: Identity
    # Records are relay-store items; the directory reads and adds them, the node relays.
    store: RelayStore
    # Whether we have a session with a key, and our prekeys (``sessions.prekeys``, which
    # a restore replaces).
    sessions: SessionBook
    stats: NodeStats
    # Records stored for others count against the node's per-peer store rate.
    store_limit: RateLimiter
    emit: Callable[[Event], None]
    send_frame: SendFrame
    # Hand an item to one node (a newer record to a stale holder, ours to a neighbour).
    send_item: Callable[[Entry, bytes, Endpoint, float], None]
    owe_receipt: Callable[[bytes, Endpoint, bytes, float], None]
    add_holder: Callable[[Entry, bytes, float], None]
    # Send an item toward its target's neighbourhood and schedule its retries.
    relay: Callable[[Entry, float], None]
    # The network an item came from, for the store's quotas.
    origin: Callable[[bytes, Endpoint], str]
    relaying: Callable[[], bool]
    joined: Callable[[], bool]
    # A lookup seeded from the routing table (None when it is empty), then its next step;
    # its end comes back through ``Directory.lookup_finished``.
    new_lookup: Callable[[bytes], Lookup | None]
    advance_lookup: Callable[[Lookup, float], None]
    # A GetRecord query of ours to (key, endpoint) for an owner address: its query id,
    # or None when our own query table is full; and taking the answer's query back (the
    # owner address asked for, or None if ``query_id`` is no GetRecord to that key).
    open_query: Callable[[bytes, Endpoint, bytes, float], bytes | None]
    close_query: Callable[[bytes, bytes], bytes | None]


@dataclass
class _BundleFetch:
    """A ``fetch`` in progress: its lookup, then its GetRecord queries."""

    lookup: Lookup | None
    asked: int = 0  # GetRecord queries not yet answered or timed out


class Directory:
    """Prekey records: published, stored for others, fetched (docs/PROTOCOL.md, "8a")."""

    def __init__(self, host: DirectoryHost) -> None:
        self._host = host
        self._store = host.store
        self.address = host.identity.address
        # Others' verified bundles by owner address, and per known bundle its record's
        # issued_ms and expires_ms, and when we learned it.
        self.known_bundles: OrderedDict[bytes, PublicBundle] = OrderedDict()
        self.known_bundle_times: dict[bytes, tuple[int, int, float]] = {}
        self._fetches: OrderedDict[bytes, _BundleFetch] = OrderedDict()
        self._own_bundle: PublicBundle | None = None
        # The version of our prekeys' bundle we last published, and when (None: not yet
        # in this run, or the prekeys were replaced by restored ones).
        self._published_version: int | None = None
        self._published_at = float("-inf")
        # Contacts whose bundle we want, by address: (their key, when to try next).
        self.wanted: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._own_record_due = float("inf")  # when our record is issued again

    # ------------------------------------------------------------------ our own record

    def set_own_bundle(self, public: PublicBundle, now: float) -> None:
        """Sign ``public`` as our record, keep it, publish it (see ``Node.set_own_bundle``)."""
        self._publish_own_record(public, now)
        self._own_bundle = public

    def keep_published(self, now: float) -> bool:
        """Publish our prekeys' bundle once per run and again whenever it changed;
        returns whether it did (the node then reports the store change at once).

        Once per run, because a restored record may predate prekeys used since; at most
        every ``BUNDLE_REPUBLISH_MIN_S`` after that. Between changes the record's own
        refresh (``RECORD_REFRESH_S``) keeps it alive.
        """
        prekeys = self._host.sessions.prekeys
        # The version, not the bundle: building one costs a scalar multiplication a key.
        if prekeys.bundle_version == self._published_version:
            return False
        if now - self._published_at < BUNDLE_REPUBLISH_MIN_S:
            return False
        self._published_version, self._published_at = prekeys.bundle_version, now
        self.set_own_bundle(prekeys.public_bundle(), now)
        return True

    def prekeys_replaced(self) -> None:
        """Restored prekeys count their versions from 1 again: publish them anew."""
        self._published_version = None

    def restore_own_record(self, entry: Entry) -> None:
        """After a restart, keep refreshing the record we had published."""
        assert isinstance(entry.wire, pb.PrekeyBundle)
        self._own_bundle = bundle_of(entry.wire)
        self._own_record_due = entry.wire.issued_ms / 1000 + RECORD_REFRESH_S

    def offer_own_record(self, neighbours: list[Candidate], now: float) -> None:
        """(Re)joined: hand our record to the neighbours the self-lookup met that lack it."""
        entry = self._store.get(Kind.RECORD, self.address)
        if entry is None:
            return
        for node in neighbours:
            if node.address not in entry.holders:
                self._host.send_item(entry, node.key, node.endpoint, now)

    def housekeeping(self, now: float) -> None:
        """Issue our record again when due; forget others' bundles once expired."""
        if self._own_bundle is not None and now >= self._own_record_due:
            self._publish_own_record(self._own_bundle, now)
        now_ms = _ms(now)
        for owner, (_, expires_ms, _) in list(self.known_bundle_times.items()):
            if expires_ms <= now_ms:
                del self.known_bundle_times[owner]
                self.known_bundles.pop(owner, None)

    def _publish_own_record(self, public: PublicBundle, now: float) -> None:
        """Issue a fresh record of ``public`` (strictly newer than any before) and relay it."""
        issued_ms = _ms(now)
        prior = self._store.get(Kind.RECORD, self.address)
        if prior is not None:
            assert isinstance(prior.wire, pb.PrekeyBundle)
            # Newer than the last one even within one millisecond or after the clock
            # stepped back, or relays holding the last one would refuse it as stale.
            issued_ms = max(issued_ms, prior.wire.issued_ms + 1)
        record = sign_record(
            self._host.identity, public, issued_ms, issued_ms + int(RECORD_LIFETIME_S * 1000)
        )
        entry = Entry(
            Kind.RECORD, self.address, self.address, record.expires_ms, record, stored_at=now
        )
        self._store.add(entry, enforce_quota=False)  # ours, like our outbox
        self._own_record_due = now + RECORD_REFRESH_S
        self._host.relay(entry, now)

    # ------------------------------------------------------------------ others' bundles

    def want(self, keys: Iterable[bytes], now: float) -> None:
        """Fetch these contacts' bundles while we have no session with them (see
        ``Node.want_bundles``)."""
        sessions = self._host.sessions
        for key in keys:
            if key == self._host.identity.key or sessions.active(key) is not None:
                continue
            address = address_of(key)
            if address not in self.wanted:
                self.wanted[address] = (key, now)
                while len(self.wanted) > WANTED_BUNDLES_MAX:
                    self.wanted.popitem(last=False)
        self.fetch_wanted(now)

    def fetch_wanted(self, now: float) -> None:
        """Start the due fetches of wanted bundles; forget those we no longer need."""
        if not self._host.joined():
            return  # a fetch starts with a lookup: it needs a table
        for address, (key, due) in list(self.wanted.items()):
            if address in self.known_bundles or self._host.sessions.active(key) is not None:
                del self.wanted[address]
            elif due <= now and self.fetch(address, now):
                self.wanted[address] = (key, now + BUNDLE_RETRY_S)

    def bundle_to_start_with(self, address: bytes, now: float) -> PublicBundle | None:
        """The bundle a new session to ``address`` starts from, if we know one.

        Its one-time prekeys only while it is fresh: every sender that learned the same
        record may pick the same one, and its owner deletes a one-time prekey once used
        and republishes at most once a minute; a letter naming a used one opens in no
        session and costs a reset (docs/PROTOCOL.md, "Letters and sealing"). An older
        bundle starts with its signed prekey alone (X3DH without DH4), still forward
        secret once that prekey is retired.
        """
        bundle = self.known_bundles.get(address)
        times = self.known_bundle_times.get(address)
        if bundle is None or times is None or now - times[2] <= ONE_TIME_PREKEYS_FRESH_S:
            return bundle
        return replace(bundle, one_time_prekeys=())

    def forget(self, address: bytes) -> None:
        """Drop the bundle of ``address`` (one with an unusable key)."""
        self.known_bundles.pop(address, None)

    def fetch(self, address: bytes, now: float) -> bool:
        """Look for the prekey record of ``address``; False if no fetch could start
        (see ``Node.fetch_bundle``)."""
        if len(address) != ADDRESS_BYTES or address == self.address:
            return False
        held = self._store.get(Kind.RECORD, address)
        if held is not None and held.expires_ms > _ms(now):
            assert isinstance(held.wire, pb.PrekeyBundle)
            self._learn_bundle(held.wire, now)  # verified when we stored it
        if address in self._fetches:
            return True
        if len(self._fetches) >= BUNDLE_FETCHES_MAX:
            return False
        lookup = self._host.new_lookup(address)
        if lookup is None:
            return False
        self._fetches[address] = _BundleFetch(lookup)
        self._host.advance_lookup(lookup, now)  # its end (lookup_finished) sends GetRecords
        return True

    def lookup_finished(self, lookup: Lookup, now: float) -> None:
        """A lookup ended: if it was a fetch's, ask each node it met for the record."""
        fetch = self._fetches.get(lookup.target)
        if fetch is not None and fetch.lookup is lookup:
            self._ask_for_record(lookup.target, fetch, lookup.result(), now)

    def _ask_for_record(
        self, address: bytes, fetch: _BundleFetch, nodes: list[Candidate], now: float
    ) -> None:
        """Send a GetRecord to each node the fetch's lookup met (own queries, bounded)."""
        fetch.lookup = None
        for node in nodes:
            query_id = self._host.open_query(node.key, node.endpoint, address, now)
            if query_id is None:
                break
            fetch.asked += 1
            frame = pb.Frame(get_record=pb.GetRecord(query_id=query_id, address=address))
            self._host.send_frame(node.key, node.endpoint, frame, now, probe=True)
        if fetch.asked == 0:
            self._end_fetch(address)

    def record_query_ended(self, address: bytes) -> None:
        """One GetRecord was answered or timed out; the last one ends its fetch."""
        fetch = self._fetches.get(address)
        if fetch is None:
            return
        fetch.asked -= 1
        if fetch.asked <= 0 and fetch.lookup is None:
            self._end_fetch(address)

    def _end_fetch(self, address: bytes) -> None:
        del self._fetches[address]
        self._host.emit(BundleFetched(address, address in self.known_bundles))

    def _learn_bundle(self, record: pb.PrekeyBundle, now: float) -> None:
        """Keep a verified, unexpired record's bundle unless we know a newer one."""
        owner = address_of(record.owner_key)
        known = self.known_bundle_times.get(owner)
        if known is not None and owner in self.known_bundles and known[0] >= record.issued_ms:
            return
        self.known_bundles[owner] = bundle_of(record)
        self.known_bundles.move_to_end(owner)
        self.known_bundle_times[owner] = (record.issued_ms, record.expires_ms, now)
        while len(self.known_bundles) > KNOWN_BUNDLES_MAX:
            forgotten, _ = self.known_bundles.popitem(last=False)
            # .pop: others may fill or drop known_bundles directly (session code, tests).
            self.known_bundle_times.pop(forgotten, None)

    # ------------------------------------------------------------------ frames

    def on_get_record(
        self, sender: PublicIdentity, get: pb.GetRecord, addr: Endpoint, now: float
    ) -> None:
        """Answer with the record we hold for the address, or an empty answer.

        Only reached from a validated endpoint (the node's ``_NEEDS_VALIDATION``): the
        answer is larger than the request.
        """
        if len(get.query_id) != CHALLENGE_BYTES or len(get.address) != ADDRESS_BYTES:
            raise Rejected("malformed")
        answer = pb.Record(query_id=get.query_id)
        held = self._store.get(Kind.RECORD, get.address)
        if held is not None and held.expires_ms > _ms(now):
            assert isinstance(held.wire, pb.PrekeyBundle)
            answer.bundle.CopyFrom(held.wire)
        self._host.send_frame(sender.key, addr, pb.Frame(record=answer), now)

    def on_record(
        self, sender: PublicIdentity, record: pb.Record, addr: Endpoint, now: float
    ) -> None:
        """A Record frame: the answer to a GetRecord of ours, or a record pushed to us."""
        if record.query_id:
            self._on_record_answer(sender, record, now)
        elif record.HasField("bundle"):
            self._store_record(sender, record.bundle, addr, now)
        else:
            raise Rejected("malformed")

    def _on_record_answer(self, sender: PublicIdentity, record: pb.Record, now: float) -> None:
        """An answer to our GetRecord: only from the node asked, once, for the owner asked."""
        record_for = self._host.close_query(record.query_id, sender.key)
        if record_for is None:
            raise Rejected("unsolicited")
        try:
            if record.HasField("bundle"):
                bundle = record.bundle
                _check_record(bundle, now)
                if address_of(bundle.owner_key) != record_for:
                    raise Rejected("wrong_owner")
                if not verify_record(bundle):
                    raise Rejected("bad_record")
                self._learn_bundle(bundle, now)
        finally:
            self.record_query_ended(record_for)

    def _store_record(
        self, sender: PublicIdentity, record: pb.PrekeyBundle, addr: Endpoint, now: float
    ) -> None:
        """A record pushed for storage: kept like any item, at most one per owner.

        The newest issued_ms wins: an older record never replaces a newer one, and its
        sender is handed ours, so a stale holder catches up. Equal issued_ms: the first
        one held stays.
        """
        host = self._host
        _check_record(record, now)
        owner = address_of(record.owner_key)
        existing = self._store.get(Kind.RECORD, owner)
        if owner == self.address:
            # Our own record came back (records are never sent to their owner, so only a
            # hostile or confused peer sends it): ours is the one we issued.
            if existing is not None:
                host.owe_receipt(sender.key, addr, existing.key, now)
            raise Rejected("own_record")
        if existing is not None:
            assert isinstance(existing.wire, pb.PrekeyBundle)
            if record == existing.wire:
                host.stats.duplicates += 1
                host.add_holder(existing, sender.address, now)
                host.owe_receipt(sender.key, addr, existing.key, now)
                return
            if record.issued_ms <= existing.wire.issued_ms:
                # We hold one (so the receipt is true and counts no failure against us);
                # a strictly newer one goes back. Never one of the same age: two relays
                # holding different records an owner signed in the same millisecond
                # would bounce them between each other forever.
                host.owe_receipt(sender.key, addr, existing.key, now)
                if existing.wire.issued_ms > record.issued_ms and sender.address != owner:
                    host.send_item(existing, sender.key, addr, now)
                raise Rejected("stale_record")
        if not host.relaying():
            raise Rejected("not_relay")  # docs/PROTOCOL.md, "12.3": relaying is off
        if not host.store_limit.allow(sender.address, now):
            raise Rejected("store_rate")
        if not verify_record(record):
            raise Rejected("bad_record")
        entry = Entry(
            Kind.RECORD,
            owner,
            owner,
            record.expires_ms,
            record,
            stored_at=now,
            holders={sender.address},
            origin=sender.address,
            origin_net=host.origin(sender.key, addr),
            # The pair that handed it to us: charged to ``unvalidated`` while unproven, it
            # is re-charged to the pair's network once the pair is validated, as a
            # message is (docs/PROTOCOL.md, "8. Relay store").
            origin_key=sender.key,
            origin_endpoint=addr,
        )
        try:
            self._store.add(entry)
        except QuotaExceeded as exc:
            raise Rejected(exc.reason) from exc
        host.stats.stored += 1
        host.owe_receipt(sender.key, addr, entry.key, now)
        host.relay(entry, now)


def _check_record(record: pb.PrekeyBundle, now: float) -> None:
    """Refuse a record out of shape, dead, or issued in the future (before any signature
    work; docs/PROTOCOL.md, "8a.2 Checks")."""
    problem = record_problem(record)
    if problem is not None:
        raise Rejected(problem)
    now_ms = _ms(now)
    if record.expires_ms <= now_ms:
        raise Rejected("expired")
    if record.issued_ms > now_ms + MAX_CLOCK_SKEW_S * 1000:
        # It would win over every record its owner issues until then.
        raise Rejected("record_from_future")
