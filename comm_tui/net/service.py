"""A node running on a profile: the core, its UDP socket, its database, its discovery.

The TUI, ``comm-tui node`` and ``comm-tui send`` all run exactly this. It owns the
order of durable steps: a text is written to history *and* its sealed parts to the
relay store in one transaction before anything is transmitted; a received text
and the acks that answer it are committed together before the acks go out. So a
crash at any moment loses nothing the user was shown, and repeats nothing the
user would notice (duplicates are dropped by message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.errors import StorageError
from comm_tui.net.discovery import LocalDirectory
from comm_tui.net.udp import NodeProtocol, open_udp
from comm_tui.protocol.events import (
    Event,
    PeerAdded,
    PeerRemoved,
    SessionReset,
    SessionsChanged,
    StoreChanged,
    TextReceived,
    TextStateChanged,
)
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import SESSION_RESET_NOTICE, Database, HistoryRow

PEER_SAVE_INTERVAL_S = 60.0
DISCOVERY_INTERVAL_S = 10.0
# How often the addresses we are bound at are looked at again (a laptop that moved to
# another network): the node compares them with what peers see (docs/PROTOCOL.md, "12").
LOCAL_ADDRESS_INTERVAL_S = 30.0
# Peers whose route tells which local address we send from, at most.
LOCAL_ADDRESS_PEERS = 8


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
class PeersChanged:
    count: int


@dataclass(frozen=True)
class NodeFailed:
    """The node stopped because it could not write to its database (a full disk, say)."""

    message: str


ServiceEvent = IncomingText | OutgoingUpdated | NoticeAdded | PeersChanged | NodeFailed
Listener = Callable[[ServiceEvent], None]


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.db = db
        self.listen = listen
        self.bootstrap_endpoints = list(bootstrap or [])
        self.discovery = discovery
        self.clock = clock
        self.node = Node(identity, clock(), config=config)
        self.protocol: NodeProtocol | None = None
        self.bound: Endpoint | None = None
        self.damaged_entries = 0
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> Endpoint:
        # Bind first: a port in use must fail before anything is loaded or changed.
        self.protocol, self.bound = await open_udp(
            self.node, self.listen, self._on_events, self._on_failure
        )
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
                self._persist(self._drain())
            self._settle_lost_outgoing()
        except BaseException:
            self.protocol.close()
            self.protocol = None
            raise
        # First texts to contacts we have no session with open with X3DH if their
        # bundles are fetched by then (docs/PROTOCOL.md, "8a. Records").
        self.node.want_bundles((contact.key for contact in self.db.contacts()), now)
        known = [(key, (host, port)) for key, host, port, _ in self.db.load_peers()]
        self._note_local_endpoints([endpoint for _, endpoint in known], now)
        for key, endpoint in known:
            self.node.add_known_peer(key, endpoint, now)
        for endpoint in self.bootstrap_endpoints:
            self.node.bootstrap(endpoint, now)
        if self.discovery is not None:
            self.discovery.announce(self.identity.key, self.bound)
            self._tasks.append(asyncio.create_task(self._discover_forever()))
        self._tasks.append(asyncio.create_task(self._save_peers_forever()))
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
        if self.discovery is not None:
            self.discovery.withdraw()
        self._save_peers()
        if self.protocol is not None:
            self.protocol.pump()
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
            peers = [entry.endpoint for entry in self.node.table]
            self._note_local_endpoints(peers, self.clock())
            if self.protocol is not None:
                self.protocol.pump()

    def send_text(self, recipient: PublicIdentity, text: str) -> HistoryRow:
        """Record and queue a text in one transaction, then transmit.

        Raises ValueError if the text is too long (nothing is written then).
        """
        now = self.clock()
        text_id = self.node.rng.randbytes(16)
        if self.protocol is not None and self.protocol.failure is not None:
            raise StorageError(f"the node has stopped: {self.protocol.failure}")
        try:
            with self.db.transaction():
                row = self.db.add_outgoing(text_id, recipient.key, recipient.address, text, now)
                self.node.send_text(recipient, text, now, text_id=text_id)
                self._persist(self._drain())
        except StorageError as exc:
            # The core already holds the text; with nothing on disk it must not go out.
            if self.protocol is not None:
                self.protocol.fail(exc)
            raise
        if self.protocol is not None:
            self.protocol.pump()
        return row

    def contact_added(self, key: bytes) -> None:
        """Fetch a new contact's prekey bundle now, so a first text to them opens with X3DH."""
        self.node.want_bundles([key], self.clock())
        if self.protocol is not None:
            self.protocol.pump()

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while (event := self.node.next_event()) is not None:
            events.append(event)
        return events

    def _on_failure(self, exc: Exception) -> None:
        notice = NodeFailed(f"node stopped: {exc}")
        for listener in self._listeners:
            listener(notice)

    def _on_events(self, events: list[Event]) -> None:
        with self.db.transaction():
            self._persist(events)

    def _persist(self, events: list[Event]) -> None:
        """Write events to the database (inside the caller's transaction), then notify."""
        now = self.clock()
        notices: list[ServiceEvent] = []
        for event in events:
            if isinstance(event, StoreChanged):
                self.db.apply_store_changes(event.put, event.delete)
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
            elif isinstance(event, TextStateChanged):
                changed = self.db.set_outgoing_state(event.text_id, event.state, now)  # type: ignore[arg-type]
                if changed is not None:
                    notices.append(OutgoingUpdated(changed))
            elif isinstance(event, PeerAdded | PeerRemoved):
                notices.append(PeersChanged(len(self.node.table)))
        for notice in notices:
            for listener in self._listeners:
                listener(notice)

    def _session_reset(self, peer_key: bytes, now: float) -> list[ServiceEvent]:
        """A peer lost its session with us: say so, and send our unacknowledged texts again.

        docs/PROTOCOL.md, "Session reset". Runs inside the transaction that committed the
        new session, so the notice, the new session and the re-sealed parts are one write.
        """
        peer = PublicIdentity(peer_key)
        notice = self.db.add_notice(peer_key, peer.address, SESSION_RESET_NOTICE, now)
        for row in self.db.outgoing_in_states(("queued", "sent")):
            if row.peer_address == peer.address:
                self.node.send_text(peer, row.text, now, text_id=row.text_id, sent_ms=row.sent_ms)
        self._persist(self._drain())
        return [NoticeAdded(notice)]

    def _settle_lost_outgoing(self) -> None:
        """Texts the outbox shows as pending but the relay store no longer holds expired."""
        pending = self.node.outgoing_text_ids()
        now = self.clock()
        with self.db.transaction():
            for row in self.db.outgoing_in_states(("queued", "sent")):
                if row.text_id not in pending:
                    self.db.set_outgoing_state(row.text_id, "expired", now)

    def _save_peers(self) -> None:
        now = self.clock()
        self.db.save_peers((n.key, n.endpoint[0], n.endpoint[1], now) for n in self.node.table)

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
                if key not in known or len(self.node.table) == 0:
                    known.add(key)
                    self.node.add_known_peer(key, endpoint, now)
            if self.protocol is not None:
                self.protocol.pump()
            await asyncio.sleep(DISCOVERY_INTERVAL_S)
