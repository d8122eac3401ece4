"""A node running on a profile: the core, its UDP socket, its database, its discovery.

The TUI, ``comm-tui node`` and ``comm-tui send`` all run exactly this. It owns the
order of durable steps: a text is written to history *and* its sealed parts to the
relay store in one transaction before anything is transmitted; a received text
and the acks that answer it are committed together before the acks go out. So a
crash at any moment loses nothing the user was shown, and repeats nothing the
user would notice (duplicates are dropped by message id). What arrives from the
network is written in batches by a group commit (``comm_tui/net/commit.py``), whose
fsync runs off the event loop; the user's commands commit before they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from comm_tui.crypto.card import Card, encode_card, issue_card, read_card
from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.errors import CardError, StorageError
from comm_tui.net.commit import GroupCommit, Hold
from comm_tui.net.discovery import LocalDirectory
from comm_tui.net.hints import endpoint_hints
from comm_tui.net.lan import LanBeacon, LanOptions, Sighting, beacon_source, lan_families
from comm_tui.net.portmap import PortMapper, PortMapping, mappable
from comm_tui.net.udp import NodeProtocol, open_udp
from comm_tui.protocol.custody import Custody
from comm_tui.protocol.events import (
    Event,
    NameClaimed,
    PeerAdded,
    PeerRemoved,
    SessionReset,
    SessionsChanged,
    StoreChanged,
    TextReceived,
    TextsRead,
    TextStateChanged,
)
from comm_tui.protocol.letters import READ_IDS_MAX, display_name
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import SESSION_RESET_NOTICE, Database, HistoryRow

PEER_SAVE_INTERVAL_S = 60.0
DISCOVERY_INTERVAL_S = 10.0
CARD_CHECK_INTERVAL_S = 10.0  # how soon a new public endpoint shows in the profile's card
CARD_META = "card"  # the profile's current card, with hints and name when it has them
# How often the addresses we are bound at are looked at again (a laptop that moved to
# another network): the node compares them with what peers see (docs/PROTOCOL.md, "12").
LOCAL_ADDRESS_INTERVAL_S = 30.0
# Peers whose route tells which local address we send from, at most.
LOCAL_ADDRESS_PEERS = 8
# A rename is sent at once to at most this many contacts, those talked to most recently;
# the others get it with our next text (docs/PROTOCOL.md, "7.1.1").
RENAME_PUSH_MAX = 32


def local_endpoints(bound: Endpoint, toward: Iterable[Endpoint]) -> set[Endpoint]:
    """The endpoints our socket sends from: the bound one, or for a wildcard bind the
    source address the kernel's routes pick toward each of ``toward`` (connecting a UDP
    socket sends nothing). A socket bound to ``::`` is dual stack: it sends to IPv4 peers
    too. Only IP literals are tried: no name lookup here."""
    host, port = bound
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return set()
    if not ip.is_unspecified:
        return {(host, port)}
    found: set[Endpoint] = set()
    for peer_host, peer_port in toward:
        try:
            peer = ipaddress.ip_address(peer_host)
        except ValueError:
            continue
        family = socket.AF_INET6 if peer.version == 6 else socket.AF_INET
        if peer.version == 6 and ip.version == 4:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((peer_host, peer_port))
                found.add((str(probe.getsockname()[0]), port))
        except OSError:
            continue
    return found


T = TypeVar("T")


@dataclass(frozen=True)
class IncomingText:
    row: HistoryRow


@dataclass(frozen=True)
class OutgoingUpdated:
    row: HistoryRow


@dataclass(frozen=True)
class NoticeAdded:
    """A notice line in a conversation (a session re-established)."""

    row: HistoryRow


@dataclass(frozen=True)
class NameChanged:
    """A peer claimed a new display name (docs/PROTOCOL.md, "7.1.1")."""

    peer_key: bytes
    name: str


@dataclass(frozen=True)
class PeersChanged:
    count: int


@dataclass(frozen=True)
class NodeFailed:
    """The node stopped because it could not write to its database (a full disk, say)."""

    message: str


@dataclass(frozen=True)
class PortMappingChanged:
    """The router mapped our port (``mapping``), or no longer does / would not (``why``)."""

    mapping: PortMapping | None
    why: str


ServiceEvent = (
    IncomingText
    | OutgoingUpdated
    | NoticeAdded
    | NameChanged
    | PeersChanged
    | NodeFailed
    | PortMappingChanged
)
Listener = Callable[[ServiceEvent], None]
# Makes the port mapper for the bound port; tests point it at a responder on 127.0.0.1.
PortMapperFactory = Callable[[int, Callable[[PortMapping | None, str], None]], PortMapper]


def holds(event: Event) -> Hold:
    """What an event's write holds back until it is committed (docs/PROTOCOL.md, "8.2
    Local durability").

    Nothing: the relay store's bookkeeping of entries already written (their schedule and
    holders) and its deletions; a crash that loses them only makes the node send again
    what the network already has (duplicates are dropped by id). The receipts after it:
    items held for others added or replaced (``StoreChanged.for_others``), which only a
    Receipt promises we hold. Everything after it: every other write (our texts and the
    acks we sign, texts received, sessions, peers...), and a batch with any gives out
    notices.
    """
    if not isinstance(event, StoreChanged):
        return Hold.ALL
    put, bookkeeping = event.put, event.bookkeeping
    if bookkeeping.issuperset(put):
        return Hold.NOTHING
    others = event.for_others
    if all(key in others or key in bookkeeping for key in put):
        return Hold.RECEIPTS
    return Hold.ALL


def current_card(identity: Identity, db: Database) -> tuple[str, Card]:
    """The card this profile gives people now, and what it says, with no node running.

    The card the node last published (docs/PROTOCOL.md, "13.2") when it is ours and names
    the display name recorded in the profile (its latest, "13.2.1"); else one signed now
    with that card's hints and the recorded name, so a rename shows in the card at once.
    """
    name = db.own_display_name()
    text = db.get_meta(CARD_META)
    published = None
    if text is not None:
        with contextlib.suppress(CardError):
            published = read_card(text)
    if published is None or published.identity != identity.public:
        published, text = Card(identity.public), None
    says = (published.name, published.name_version) if published.name is not None else None
    if text is not None and says == name:
        return text, published
    text = issue_card(identity, list(published.hints), published.issued, name)
    return text, read_card(text)


class NodeService:
    def __init__(
        self,
        identity: Identity,
        db: Database,
        *,
        listen: Endpoint,
        bootstrap: list[Endpoint] | None = None,
        discovery: LocalDirectory | None = None,
        config: NodeConfig | None = None,
        port_mapper: PortMapperFactory | None = None,
        clock: Callable[[], float] = time.time,
        lan: LanOptions | None = None,
        test_networks: bool = False,
        display_name: str | None = None,
    ) -> None:
        self.identity = identity
        self.db = db
        self.listen = listen
        self.bootstrap_endpoints = list(bootstrap or [])
        self.discovery = discovery
        self.lan_options = lan
        self.lan: LanBeacon | None = None
        self.test_networks = test_networks
        self.card_hints: list[Endpoint] | None = None  # None: not yet written in this run
        self.card_name: tuple[str, int] | None = None  # the display name in that card
        self.clock = clock
        # Receipts apart: they wait for every write before them, the other datagrams only
        # for the strict ones (the group commit's ``holds``).
        self.node = Node(identity, clock(), config=config, receipts_apart=True)
        self.protocol: NodeProtocol | None = None
        self.journal: GroupCommit[ServiceEvent] | None = None
        self.bound: Endpoint | None = None
        self.damaged_entries = 0
        self.port_mapper_factory = port_mapper
        self.port_mapper: PortMapper | None = None
        self.port_mapping: PortMapping | None = None
        self._listeners: list[Listener] = []
        # A batch's writes gave the core commands (a session reset re-sends texts): what
        # it produced for them goes out after that batch's commit.
        self._drove_core = False
        self._tasks: list[asyncio.Task[None]] = []
        self.display_name = display_name  # the profile's nickname, taken at start

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> Endpoint:
        # Bind first: a port in use must fail before anything is loaded or changed.
        self.protocol, self.bound = await open_udp(
            self.node, self.listen, self._on_events, self._on_failure
        )
        self.journal = GroupCommit(
            self.db,
            apply=self._persist,
            notify=self._notify,
            transmit=self.protocol.transmit,
            on_failure=self.protocol.fail,
            wake=self._pump_if_driven,
            holds=holds,
        )
        self.protocol.journal = self.journal
        now = self.clock()
        try:
            self.damaged_entries = self.node.restore(
                (blob for _, blob in self.db.load_relay_items(int(now * 1000))), now
            )
            self.damaged_entries += self.node.restore_sessions(
                self.db.load_prekeys(), self.db.load_sessions(), now
            )
            with self.db.transaction():
                # A new profile's prekeys are saved before anything can use them.
                notices = self._persist(self._drain())
            self._notify(notices)
            self._settle_lost_outgoing()
            if self.display_name:
                self.set_display_name(self.display_name)
        except BaseException:
            self.protocol.close()
            self.protocol = None
            self.journal.close()
            self.journal = None
            raise
        # First texts to contacts we have no session with open with X3DH if their
        # bundles are fetched by then (docs/PROTOCOL.md, "8a. Records").
        self.node.want_bundles((contact.key for contact in self.db.contacts()), now)
        # Only contacts may make the node punch a hole (docs/PROTOCOL.md, "12.6").
        self.node.set_contacts((contact.key for contact in self.db.contacts()), now)
        known = [(key, (host, port)) for key, host, port, _ in self.db.load_peers()]
        self._note_local_endpoints([endpoint for _, endpoint in known], now)
        for key, endpoint in known:
            self.node.add_known_peer(key, endpoint, now)
        # docs/PROTOCOL.md, "13.2": a contact's node where its card said it was.
        for key, host, port in self.db.contact_hints():
            self.node.add_known_peer(key, (host, port), now)
        for endpoint in self.bootstrap_endpoints:
            self.node.bootstrap(endpoint, now)
        if self.discovery is not None:
            self.discovery.announce(self.identity.key, self.bound)
            self._tasks.append(asyncio.create_task(self._discover_forever()))
        if self.lan_options is not None:
            self.lan = LanBeacon(
                self.identity,
                self.bound[1],
                lan_families(self.bound),
                self._lan_sighting,
                options=self.lan_options,
                clock=self.clock,
                source=beacon_source(self.bound),
            )
            await self.lan.start()
        self._tasks.append(asyncio.create_task(self._save_peers_forever()))
        if self.port_mapper_factory is not None and mappable(self.bound[0]):
            # docs/PROTOCOL.md, "14. Port mapping": in the background, never in the way.
            self.port_mapper = self.port_mapper_factory(self.bound[1], self._on_port_mapping)
            self._tasks.append(asyncio.create_task(self.port_mapper.run()))
        self._tasks.append(asyncio.create_task(self._publish_card_forever()))
        self._tasks.append(asyncio.create_task(self._watch_local_endpoints_forever()))
        self.protocol.pump()
        return self.bound

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.port_mapper is not None:
            await self.port_mapper.remove()
            if self.port_mapping is not None:
                self._on_port_mapping(None, "removed")
            self.port_mapper = None
        if self.lan is not None:
            await self.lan.stop()
        if self.discovery is not None:
            self.discovery.withdraw()
        if self.protocol is not None:
            self.protocol.pump()
        if self.journal is not None:
            self.journal.close()  # what is pending is committed, its datagrams sent
            self.journal = None
        self._save_peers()
        if self.protocol is not None:
            self.protocol.close()
            self.protocol = None

    def _note_local_endpoints(self, peers: list[Endpoint], now: float) -> None:
        """Tell the node where it is bound, so it can tell a NAT from a direct link."""
        if self.bound is None:
            return
        toward = (self.bootstrap_endpoints + peers)[:LOCAL_ADDRESS_PEERS]
        self.node.set_local_endpoints(local_endpoints(self.bound, toward), now)

    async def _watch_local_endpoints_forever(self) -> None:
        while True:
            await asyncio.sleep(LOCAL_ADDRESS_INTERVAL_S)
            peers = [peer.endpoint for peer in self.node.peers()]
            self._note_local_endpoints(peers, self.clock())
            if self.protocol is not None:
                self.protocol.pump()

    def send_text(self, recipient: PublicIdentity, text: str) -> HistoryRow:
        """Record and queue a text in one transaction, then transmit.

        The returned row is committed (with the group commit's pending batch) when this
        returns, so the caller may show it at once; call it on the thread that runs the
        node's loop, which owns the database. Raises ValueError if the text is too long
        (nothing of it is written then), StorageError if the node has stopped.
        """
        now = self.clock()
        text_id = os.urandom(16)  # unguessable, like every id (not the node's choice rng)
        if self.protocol is not None and self.protocol.failure is not None:
            raise StorageError(f"the node has stopped: {self.protocol.failure}")

        def write() -> HistoryRow:
            row = self.db.add_outgoing(text_id, recipient.key, recipient.address, text, now)
            self._send_name_if_due(recipient, now)
            self.node.send_text(recipient, text, now, text_id=text_id)
            return row

        return self._durably(write)

    def _durably(self, write: Callable[[], T]) -> T:
        """Run ``write`` (the user's command to the core and its rows) in one transaction
        with what the core produced, committed before this returns, then transmit; the
        one rule of every command. The caller may show its result as done at once.

        The group commit's pending batch joins this transaction (it came first). A disk
        error stops the node for good (the fail-stop of ``NodeProtocol.fail``): the core
        already holds what it was told, and with nothing on disk none of it may go out.
        """

        def batch() -> tuple[T, list[ServiceEvent]]:
            result = write()
            return result, self._persist(self._drain())

        if self.journal is None:  # not started, or stopped: nothing goes out anyway
            with self.db.transaction():
                result, notices = batch()
            self._notify(notices)
            return result
        result = self.journal.commit_now(batch)
        if self.protocol is not None:
            self.protocol.pump()
        return result

    def _send_name_if_due(self, recipient: PublicIdentity, now: float) -> None:
        """Queue our display name to a contact that has not been sent its current version.

        docs/PROTOCOL.md, "7.1.1": with the first text to a person and the first after a
        rename, as its own control letter (inside the caller's transaction).
        """
        own = self.db.own_display_name()
        if own is None or self.db.contact_by_address(recipient.address) is None:
            return
        name, version = own
        if self.db.name_sent(recipient.address) >= version:
            return
        text_id = self.node.send_profile(recipient, name, version, now)
        self.db.set_name_sent(recipient.address, version, text_id)

    def set_display_name(self, raw: str) -> bool:
        """Take our display name (the profile's nickname); False if it cannot be one.

        A new name gets the next version and goes at once to the RENAME_PUSH_MAX
        contacts talked to most recently that had an older one; the rest get it with our
        next text to them. So does a name already recorded, at start, when those contacts
        were sent an older one (a rename by ``comm-tui id`` while no node ran). Nothing
        goes out before it is on disk.
        """
        name = display_name(raw)
        if name is None:
            return False
        now = self.clock()

        def write() -> None:
            self.db.set_own_display_name(name)
            own = self.db.own_display_name()
            if own is not None and own[1] > 1:
                contacts = {c.address: c for c in self.db.contacts()}
                recent = [
                    contacts[c.peer_address]
                    for c in self.db.conversations()
                    if c.peer_address in contacts and self.db.name_sent(c.peer_address) > 0
                ]
                for contact in recent[:RENAME_PUSH_MAX]:
                    self._send_name_if_due(PublicIdentity(contact.key), now)

        self._durably(write)
        # The card shown changes with the name (docs/PROTOCOL.md, "13.2.1"); a card that
        # cannot be written now is written by the next check (_publish_card_forever).
        with contextlib.suppress(StorageError):
            self.publish_card()
        return True

    def conversation_read(self, peer_address: bytes) -> None:
        """The user read a conversation: mark it, and send a read receipt if they chose to.

        docs/PROTOCOL.md, "7.1.1": only to a contact with receipts on, one control letter
        naming at most READ_IDS_MAX of the texts newly read (the newest). At most one
        receipt follows each text received, so a peer cannot make us send more.
        """
        now = self.clock()

        def write() -> None:
            newly = self.db.mark_read(peer_address)
            contact = self.db.contact_by_address(peer_address)
            if newly and contact is not None and contact.receipts:
                self.node.send_read(PublicIdentity(contact.key), newly[-READ_IDS_MAX:], now)

        self._durably(write)

    def custody(self, text_id: bytes) -> Custody | None:
        """Where our undelivered text is now (None: delivered, expired or not ours)."""
        return self.node.custody(text_id)

    def contact_added(self, key: bytes, hints: Iterable[Endpoint] = ()) -> None:
        """Fetch a new contact's prekey bundle now, so a first text to them opens with X3DH.

        The endpoint hints of their card (docs/PROTOCOL.md, "13.2") are pinged at once:
        for a node that knows nobody yet, that is how it joins.
        """
        now = self.clock()
        for endpoint in hints:
            self.node.add_known_peer(key, endpoint, now)
        self.node.want_bundles([key], now)
        self.contacts_changed()

    def contacts_changed(self) -> None:
        """Tell the node who the contacts are now: only they may make it punch a hole
        (docs/PROTOCOL.md, "12.6"); a removed contact's direct path ends."""
        self.node.set_contacts((contact.key for contact in self.db.contacts()), self.clock())
        if self.protocol is not None:
            self.protocol.pump()

    def set_relaying(self, on: bool) -> None:
        """Relay for others or not (docs/PROTOCOL.md, "12.3"); takes effect at once, the
        timer re-armed so a client's first Attach goes out now."""
        self.node.set_relaying(on, self.clock())
        if self.protocol is not None:
            self.protocol.pump()

    def _on_port_mapping(self, mapping: PortMapping | None, why: str) -> None:
        self.port_mapping = mapping
        self._tell_node_port_mapping(mapping.external if mapping is not None else None)
        self._notify([PortMappingChanged(mapping, why)])

    def _tell_node_port_mapping(self, endpoint: Endpoint | None) -> None:
        """The one place the mapped endpoint reaches the core, as a candidate public endpoint
        it checks by dial-back (``Node.note_port_mapping``, docs/PROTOCOL.md, "12.
        Reachability")."""
        self.node.note_port_mapping(endpoint, self.clock())
        if self.protocol is not None:
            self.protocol.pump()

    def _drain(self) -> list[Event]:
        return self.node.drain_events()

    def _on_failure(self, exc: Exception) -> None:
        self._notify([NodeFailed(f"node stopped: {exc}")])

    def _pump_if_driven(self) -> None:
        """After a commit: pump the core if writing the batch gave it commands."""
        if self._drove_core and self.protocol is not None:
            self._drove_core = False
            self.protocol.pump()

    def _on_events(self, events: list[Event]) -> None:
        """Before the group commit is attached (while binding): one transaction, then tell."""
        with self.db.transaction():
            notices = self._persist(events)
        self._notify(notices)

    def _notify(self, notices: list[ServiceEvent]) -> None:
        """Tell the listeners, once what the notices show is committed."""
        for notice in notices:
            for listener in self._listeners:
                listener(notice)

    def _persist(self, events: list[Event]) -> list[ServiceEvent]:
        """Write events to the database (inside the caller's transaction); returns the
        notices to give out once that transaction is committed."""
        now = self.clock()
        notices: list[ServiceEvent] = []
        # The relay store's changes, merged over the events and written once: the later
        # change of a key wins (within one event, a key in both is deleted). Each key is
        # read from the last event that put it, once (a core may serialize on reading).
        store_put: dict[bytes, Mapping[bytes, tuple[bytes, int]]] = {}
        store_delete: set[bytes] = set()
        for event in events:
            if isinstance(event, StoreChanged):
                for key in event.put:
                    store_put[key] = event.put
                    store_delete.discard(key)
                for key in event.delete:
                    store_put.pop(key, None)
                    store_delete.add(key)
            elif isinstance(event, SessionsChanged):
                self.db.apply_session_changes(event.put, event.prekeys)
            elif isinstance(event, SessionReset):
                notices.extend(self._session_reset(event.peer_key, now))
            elif isinstance(event, TextReceived):
                row = self.db.add_incoming(
                    event.text_id,
                    event.sender.key,
                    event.sender.address,
                    event.text,
                    event.sent_ms,
                    now,
                )
                if row is not None:
                    notices.append(IncomingText(row))
            elif isinstance(event, NameClaimed):
                if self.db.claim_name(event.sender.key, event.name, event.version, now):
                    notices.append(NameChanged(event.sender.key, event.name))
            elif isinstance(event, TextsRead):
                for read in self.db.texts_read(event.sender.address, event.text_ids, now):
                    notices.append(OutgoingUpdated(read))
            elif isinstance(event, TextStateChanged):
                changed = self.db.set_outgoing_state(event.text_id, event.state, now)
                if changed is not None:
                    notices.append(OutgoingUpdated(changed))
                elif event.state == "expired":
                    # docs/PROTOCOL.md, "7.1.1": a name that never arrived goes again.
                    self.db.name_lost(event.text_id)
            elif isinstance(event, PeerAdded | PeerRemoved):
                if isinstance(event, PeerAdded):
                    # Remembered at once, not at the next save: a node killed a minute
                    # after joining must still find its way back (docs/PROTOCOL.md, "13.3").
                    host, port = event.endpoint
                    self.db.save_peers([(event.key, host, port, now)])
                notices.append(PeersChanged(self.node.peer_count))
        if store_put or store_delete:
            put = {key: source[key] for key, source in store_put.items()}
            self.db.apply_store_changes(put, store_delete)
        return notices

    def _session_reset(self, peer_key: bytes, now: float) -> list[ServiceEvent]:
        """A peer lost its session with us: say so, and send our unacknowledged texts again.

        docs/PROTOCOL.md, "Session reset". Runs inside the transaction that committed the
        new session, so the notice, the new session and the re-sealed parts are one write.
        """
        peer = PublicIdentity(peer_key)
        self._drove_core = True
        notice = self.db.add_notice(peer_key, peer.address, SESSION_RESET_NOTICE, now)
        # The peer's state was lost, its claim of our name with it (docs/PROTOCOL.md,
        # "7.1.1"): the name goes again, in the new session, before the texts.
        if self.db.name_sent(peer.address) > 0:
            self.db.set_name_sent(peer.address, 0, None)
            self._send_name_if_due(peer, now)
        for row in self.db.outgoing_in_states(("queued", "sent")):
            if row.peer_address == peer.address:
                self.node.send_text(peer, row.text, now, text_id=row.text_id, sent_ms=row.sent_ms)
        shown: list[ServiceEvent] = [] if notice is None else [NoticeAdded(notice)]
        return [*shown, *self._persist(self._drain())]

    def _settle_lost_outgoing(self) -> None:
        """Texts the outbox shows as pending but the relay store no longer holds expired."""
        pending = self.node.outgoing_text_ids()
        now = self.clock()
        with self.db.transaction():
            for row in self.db.outgoing_in_states(("queued", "sent")):
                if row.text_id not in pending:
                    self.db.set_outgoing_state(row.text_id, "expired", now)

    def _save_peers(self) -> None:
        """Remember the table with when each node last answered: the best are tried first."""
        self.db.save_peers(
            (n.key, n.endpoint[0], n.endpoint[1], n.last_seen) for n in self.node.peers()
        )

    async def _save_peers_forever(self) -> None:
        while True:
            await asyncio.sleep(PEER_SAVE_INTERVAL_S)
            self._save_peers()

    async def _discover_forever(self) -> None:
        assert self.discovery is not None
        known: set[bytes] = set()
        while True:
            now = self.clock()
            for key, endpoint in self.discovery.peers(self.identity.key):
                if key not in known or self.node.peer_count == 0:
                    known.add(key)
                    self.node.add_known_peer(key, endpoint, now)
            if self.protocol is not None:
                self.protocol.pump()
            await asyncio.sleep(DISCOVERY_INTERVAL_S)

    def _lan_sighting(self, sighting: Sighting, now: float) -> None:
        """A signed LAN beacon: ping its key at its source (docs/PROTOCOL.md, "13.1").

        The ping goes through the usual hello and address validation, which only the
        key's holder can answer; the beacon itself proves nothing.
        """
        self.node.add_known_peer(sighting.key, sighting.endpoint, now)
        if self.protocol is not None:
            self.protocol.pump()

    def public_endpoints(self) -> list[Endpoint]:
        """Our endpoints that hosts elsewhere might reach, best first (docs/PROTOCOL.md, "13.2").

        Where peers agree they see us, once probes showed strangers get through there
        (a cone NAT's mapping lets in only those we wrote to, so it is no hint); the
        endpoint our router forwards to us; the listen address when it is a public one.
        """
        reachability = self.node.reachability
        seen = reachability.public_endpoint if reachability.kind == "public" else None
        mapped = self.port_mapping.external if self.port_mapping is not None else None
        return endpoint_hints([seen, mapped, self.bound], test_networks=self.test_networks)

    @property
    def card(self) -> str:
        """The card to give people: the one last published, with hints and name if any."""
        return self.db.get_meta(CARD_META) or encode_card(self.identity.public)

    def publish_card(self) -> str:
        """Write the profile's current card (with hints and our display name when we have
        them, docs/PROTOCOL.md, "13.2" and "13.2.1") for ``comm-tui id`` and the app.

        Signed again only when the hints or the name change; a card with neither is the
        version 1 card.
        """
        hints = self.public_endpoints()
        name = self.db.own_display_name()
        if hints != self.card_hints or name != self.card_name:
            self.db.set_meta(CARD_META, issue_card(self.identity, hints, int(self.clock()), name))
            # Only once written: a card the disk refused is tried again at the next check.
            self.card_hints, self.card_name = hints, name
        return self.card

    async def _publish_card_forever(self) -> None:
        while True:
            # The card is a convenience for `comm-tui id`: a database that cannot take it
            # now (a full disk) stops nothing here; what must be durable fails the node.
            with contextlib.suppress(StorageError):
                self.publish_card()
            await asyncio.sleep(CARD_CHECK_INTERVAL_S)
