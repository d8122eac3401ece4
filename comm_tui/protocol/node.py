"""The node state machine: routing, relaying, delivery and acknowledgement.

Its whole face to the outside world, in the shape of aioquic's connection:

- ``receive_datagram(data, addr, now)``: feed it what arrived;
- ``datagrams_to_send()``: take what it wants sent;
- ``get_timer()`` / ``handle_timer(now)``: when it next wants to wake up;
- ``next_event()``: what happened (``comm_tui.protocol.events``);
- ``send_text(recipient, text, now)``, ``bootstrap(endpoint, now)``, ``restore(...)``.

Relaying follows the seed: a message travels toward its recipient's neighbourhood,
every relay stores it and re-relays it with exponential backoff until the
recipient's signed ack arrives or it expires. On top of that (DESIGN.md section 5):

- relays track which nodes already hold an item (receipts), so a re-relay only
  goes to nodes that still lack it;
- a relay far from the target forwards to a few nodes closer than itself and
  stops once one of them holds it; one in the target's neighbourhood keeps a few
  replicas there (``NodeConfig.replicas``) and hands the item to the target;
- every attempt of the sender goes in a stem: to one fresh random peer, which forwards
  it to one random peer with probability ``STEM_FORWARD``, else relays it as above
  (and to the recipient itself when the sender knows it), so no relay can tell the
  sender from a stem relay, and one that takes a text and drops it only delays it
  until the next retry; a relay stuck with an item whose target it does not know looks
  the target up (see ``_next_hops`` and ``_relay``); no copy carries a hop count, and
  expiries are whole hours;
- an ack names no sender: it goes back the way the message came, to the peer that
  handed it to us and to the other holders we know, so the sender learns of delivery
  from its first hops, or, after being offline, when its retries are answered with it;
- a node that joins is handed what waits for it at once (push on insert, and
  its own ``Fetch`` after the join lookup), instead of at the next backoff tick;
- prekey records (``set_own_bundle``, ``fetch_bundle``) are items too: an owner's
  signed bundle is stored and replicated at its neighbourhood, never delivered, one
  per owner, the newest winning (docs/PROTOCOL.md, "8a. Records"; its rules live in
  ``protocol/directory.py``).

What a peer can make us do is bounded by ``admission``: nothing enters the routing
table, and no request whose answer is larger than itself (Fetch, GetRecord, Attach...)
is served to an endpoint, before a return-routability round trip from that endpoint;
until then replies are held to 3x the bytes it sent. A FindNode is the exception: its
Nodes answer goes at once when it fits those 3x, which a first contact's padded
FindNode always does (docs/PROTOCOL.md, "5.1", "First contact"). Validation
challenges are stateless; what peers can make us remember (deferred requests, store
items, partial texts) is bounded per key and per network of origin.

Two subsystems live beside the node, each owning its state behind a typed face the
node hands it: prekey records in ``directory.py`` (``Directory``) and reachability,
client mode and attach in ``reachability_agent.py`` (``ReachabilityAgent``). The node's
handler table dispatches their frames straight to them.

``policy="flood"`` switches all of that off and re-sends to the k nearest on every
tick: the seed's rule as written, kept as the benchmark baseline.
"""

from __future__ import annotations

import heapq
import os
import random
import socket
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, Literal

from comm_tui.crypto.ack import ack_is_well_formed, sign_ack, verify_ack
from comm_tui.crypto.identity import (
    ADDRESS_BYTES,
    Identity,
    PublicIdentity,
    address_of,
    is_valid_public_key,
)
from comm_tui.crypto.prekeys import PrekeyError, PrekeyStore, PublicBundle
from comm_tui.crypto.ratchet import RatchetError
from comm_tui.crypto.seal import message_id
from comm_tui.crypto.x3dh import X3DHError
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import (
    CHALLENGE_BYTES,
    COOKIE_ROTATE_S,
    AddressValidator,
    CookieJar,
    echo_of,
)
from comm_tui.protocol.codec import (
    CLIENT_FLAG,
    MAX_CLOCK_SKEW_S,
    PIN_ATTACHED,
    Codec,
    Rejected,
    receipt_frame,
    varint,
)
from comm_tui.protocol.custody import Custody, custody_of
from comm_tui.protocol.directory import Directory, DirectoryHost
from comm_tui.protocol.events import (
    Event,
    NameClaimed,
    PeerAdded,
    PeerRemoved,
    SessionReset,
    SessionsChanged,
    TextReceived,
    TextsRead,
    TextStateChanged,
)
from comm_tui.protocol.letters import (
    TEXT_ID_BYTES,
    ControlError,
    LetterError,
    Reassembler,
    decode_letter,
    encode_letter,
    encode_profile_letter,
    encode_read_letter,
    split_text,
)
from comm_tui.protocol.lookup import FIND_NODE_PADDING, LOOKUP_MAX_QUERIES, Candidate, Lookup
from comm_tui.protocol.outbox import Outbox, OutboxState
from comm_tui.protocol.punch import Punching, Send
from comm_tui.protocol.ratelimit import RateLimiter, TokenBucket
from comm_tui.protocol.reachability import Reachability, named_endpoint_allowed
from comm_tui.protocol.reachability_agent import (
    ReachabilityAgent,
    ReachabilityHost,
    ipv6_prefix,
    seen_endpoint,
)
from comm_tui.protocol.reachability_agent import packed_ip as _packed_ip
from comm_tui.protocol.receipts import RECEIPT_DELAY_S as RECEIPT_DELAY_S  # tests read it
from comm_tui.protocol.receipts import RECEIPT_IDS_BYTES as RECEIPT_IDS_BYTES
from comm_tui.protocol.receipts import RECEIPT_PAIRS_MAX as RECEIPT_PAIRS_MAX
from comm_tui.protocol.receipts import RECEIPT_TIMEOUT_S as RECEIPT_TIMEOUT_S  # tests read it
from comm_tui.protocol.receipts import Receipt, ReceiptsOwed, ReceiptWaits
from comm_tui.protocol.relay_store import (
    CAP_REASONS,
    ORIGINS_SHOWN,
    UNVALIDATED_ORIGIN,
    Entry,
    Kind,
    QuotaExceeded,
    RelayBandwidth,
    RelayStore,
    RelayUsage,
    entry_key,
)
from comm_tui.protocol.routing import (
    Endpoint,
    NodeEntry,
    RoutingTable,
    normalize_endpoint,
    origin_network,
)
from comm_tui.protocol.sessions import SEALED_BYTES as SEALED_BYTES  # the size relays check
from comm_tui.protocol.sessions import CommitToken, SessionBook, SessionError
from comm_tui.protocol.stats import NodeStats
from comm_tui.protocol.views import NodeState, NodeStatus, PeerView, stats_copy

DAY_S = 24 * 3600.0
DEFAULT_TTL_S = 7 * DAY_S
MAX_TTL_S = 7 * 24 * 3600.0
# Expiries are whole hours, set back by 0 or 1 hour at random, the same for every part
# of a text: they date no send time and tell no text's length (docs/PROTOCOL.md, "7.2").
EXPIRY_UNIT_MS = 3_600_000
EXPIRY_JITTER_UNITS = 1
# A node that gets a message in the stem forwards it in the stem to one random peer
# with this probability, else relays it normally (docs/PROTOCOL.md, "7.2"; bench/origin.py).
STEM_FORWARD = 0.5
QUERY_TIMEOUT_S = 2.0
# A peer whose receipt wait ran out is pinged to learn whether it is alive, unless it
# was heard from this lately (docs/PROTOCOL.md, "7.2", "Receipt wait"): a datagram of its
# own within a query's timeout shows as much as the pong would.
ALIVE_HEARD_S = QUERY_TIMEOUT_S
HOUSEKEEPING_INTERVAL_S = 30.0
REBOOTSTRAP_INTERVAL_S = 5.0
# Restored relay items wait this long after a restart before their next relay.
RESTORE_GRACE_S = 5.0
# A timer that fires this much later than asked means the node was asleep.
SLEEP_GAP_S = 30.0
# Our own queries (lookups, liveness pings) outstanding at most.
PENDING_QUERIES_MAX = 1024
# Liveness pings out at once, at most: a quarter of our query table, so that junk
# addressed to every node we know (each ping is one peer's) never leaves lookups without
# a slot. A wait that runs out while it is full checks nothing; the next one will.
ALIVE_CHECKS_MAX = PENDING_QUERIES_MAX // 4
# Requests held until their sender's address is validated: pairs (one per key, the
# oldest forgotten first), and requests per pair. Validation itself needs no state.
DEFERRED_PAIRS_MAX = 256
DEFERRED_PER_PAIR = 2
# Pairs of one network of origin whose requests wait for validation (docs/PROTOCOL.md,
# "5.1"): fresh keys from one host must not push everyone else's first requests out.
DEFERRED_PER_NETWORK = 16
# Pairs we challenged lately (so a burst from one pair costs one challenge).
CHALLENGED_MAX = 4096
# Cookies peers gave us (for when they are under load), per endpoint; and datagrams we
# sent lately to nodes outside our routing table (the ones that may not know us), by
# echo, so a cookie reply is taken only for one of them.
PEER_COOKIES_MAX = 1024
SENT_REMEMBERED = 512
# Items we forwarded in the stem only (not yet relayed normally), remembered so a stem
# that loops back to us ends here (docs/PROTOCOL.md, "7.2"); the oldest forgotten first.
STEMMED_MAX = 4096
# Retries after which an item whose target we do not know triggers a lookup of it.
LOOKUP_ON_ATTEMPTS = frozenset({1, 3, 6})
# Recipients of our own texts that a lookup met in person (validated), for those
# that are not in our routing table: at most this many, the oldest forgotten first.
DIRECT_CONTACTS_MAX = 256
# Retries of a text of ours still not acknowledged after which we look for its recipient
# in person (a lookup ``until_found``): it costs up to 64 queries, and a recipient that
# is offline cannot be found, so only twice: early, and two minutes later. Not after the
# first attempt: each attempt goes to one random peer in the stem, and one lost stem
# says nothing about the recipient's neighbourhood; two lost in a row begin to.
FIND_RECIPIENT_ON_ATTEMPTS = frozenset({2, 6})
# One such lookup per recipient in this long, whatever the number of texts and parts
# waiting for it (a 64 KiB text has 74 parts): meeting it hands it all of them.
FIND_RECIPIENT_INTERVAL_S = 60.0
FETCH_ITEMS_MAX = 512
# Fetches and Attaches served per sender address (their pushes of what we hold for it): a
# second apart, 4 in a burst. Each walks everything held for the sender (~0.15-0.3 ms for
# 1,400 items) and mostly finds it awaited (a receipt wait is at least RECEIPT_TIMEOUT_S);
# at the sender's 500 datagrams a second that walk was its cheapest way to spend our CPU
# (docs/PROTOCOL.md, "7.2"). A node fetches on waking, and attaches every 10 s or more.
FETCH_RATE_PER_S = 1.0
FETCH_BURST = 4
# The acks we sign, kept at most (with our record: what the store holds addressed to us).
# Each answers later copies of a text we received until its expiry (up to 7 days), but a
# stranger's text costs it a datagram, so past this the oldest goes (docs/PROTOCOL.md,
# "8. Relay store"). ~2 KB each: 32 MiB.
SIGNED_ACKS_MAX = 16384
# The ids (and expiries) of the texts whose acks went past SIGNED_ACKS_MAX, kept at most:
# a late copy of one is acknowledged again (~120 bytes an id: 7.5 MiB), the oldest
# forgotten first. Past it a late copy does not open, as any letter whose keys are spent.
ACKED_IDS_MAX = 65536
# Lost sessions (docs/PROTOCOL.md, "Session reset"): a peer whose letters no session opens
# gets one handshake letter in this long, and the node sends at most HANDSHAKE_BURST of
# them (refilled at HANDSHAKE_RATE_PER_S), whatever claims to be the sender.
HANDSHAKE_INTERVAL_S = 600.0
HANDSHAKE_RATE_PER_S = 1 / 60
HANDSHAKE_BURST = 10
HANDSHAKE_PEERS_MAX = 1024
FIND_NODE_ANSWER_NODES = 8
# Nodes entries remembered as parsed and as written (``_candidates``, ``_node_infos``):
# the same few hundred nodes fill every answer. Past the bound the memo is cleared.
NODE_INFO_MEMO = 4096

# Requests whose answer is larger than they are, or that make us send to a third party
# (a dial-back): served only to validated endpoints.
_NEEDS_VALIDATION = frozenset(
    {"find_node", "fetch", "get_record", "attach", "probe_request", "dial_back", "introduce"}
)
# Frames we start, which a node under load may answer with a cookie reply.
_REMEMBERED_FOR_COOKIES = frozenset(
    {"find_node", "fetch", "message", "ack", "record", "get_record", "introduce"}
)
_Handler = Callable[[PublicIdentity, Any, Endpoint, float], None]
# The store keys' first bytes of messages and acks (``relay_store.entry_key``), for the
# lookups every relayed message makes.
_MESSAGE_KEY_PREFIX = entry_key(Kind.MESSAGE, b"")
_ACK_KEY_PREFIX = entry_key(Kind.ACK, b"")
_MESSAGE_FRAME_TAG = bytes([6 << 3 | 2])  # Frame.message, length-delimited

Policy = Literal["ours", "flood"]


@dataclass
class NodeConfig:
    """Tunables. Defaults are what a real node runs with; tests shrink timings."""

    k: int = 8
    alpha: int = 3
    lookup_paths: int = 2
    sender_fanout: int = 4
    # Copies kept in a target's neighbourhood (Kademlia stores at k; fewer, with
    # retries that widen, already survives churn in the simulator; see bench/).
    replicas: int = 5
    transit_fanout: int = 2
    policy: Policy = "ours"
    ttl_s: float = DEFAULT_TTL_S
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    max_relay_attempts: int = 16
    refresh_interval_s: float = 900.0
    ip_prefix_limit: int = 2
    # Per source endpoint (or per key, for a known key at its validated endpoint):
    # datagrams; per peer address: new items to store.
    datagram_rate_per_s: float = 500.0
    datagram_burst: float = 1000.0
    store_rate_per_s: float = 100.0
    store_burst: float = 300.0
    # Whole node: datagrams from keys we have no Box for yet (each costs a key agreement).
    new_key_rate_per_s: float = 2000.0
    new_key_burst: float = 4000.0
    # Under load, first contacts that echoed a cookie: per network of origin.
    new_key_net_rate_per_s: float = 20.0
    new_key_net_burst: float = 40.0
    store_total_bytes: int = 64 * 1024 * 1024
    store_per_target_bytes: int = 2 * 1024 * 1024
    store_per_peer_bytes: int = 4 * 1024 * 1024
    # docs/PROTOCOL.md, "8.1 Local caps" (the profile's config sets them, with
    # ``store_total_bytes``): items held for others, the longest remaining life of an item
    # we take for others (the TTL: no cap), bytes per second sent on behalf of others.
    store_max_items: int = 50_000
    store_max_days: float = 7.0
    relay_bandwidth_bytes_s: int = 256 * 1024
    # docs/PROTOCOL.md, "12.3": False keeps us in client mode whatever our reachability,
    # relaying and storing nothing for others.
    relay: bool = True


@dataclass(slots=True)
class _Query:
    """An outstanding request of our own that we expect an authenticated answer to.

    Slotted: a lookup makes one per query (no ``__dict__`` to build, nothing more for
    the young collections to walk)."""

    kind: Literal["find_node", "ping", "get_record", "attach"]
    peer_key: bytes
    endpoint: Endpoint
    deadline: float
    lookup: Lookup | None = None
    path: int = 0
    candidate: Candidate | None = None
    record_for: bytes = b""  # get_record: the owner address asked for


@dataclass
class _Deferred:
    """Requests from a pair whose address is being validated, answered once it is."""

    endpoint: Endpoint
    network: str  # of origin, for the bound per network
    deadline: float
    frames: list[tuple[str, pb.Frame]]


@dataclass(frozen=True)
class _PartTag:
    """What we remember of each received part until its whole text is there."""

    item_id: bytes
    expires_ms: int
    peer_key: bytes  # the node that handed it to us: the ack goes back to it
    peer_endpoint: Endpoint
    commit: CommitToken  # what commits the session once the whole text is here


def _ms(now: float) -> int:
    return int(now * 1000)


def node_info(key: bytes, endpoint: Endpoint) -> pb.NodeInfo | None:
    """A NodeInfo for a NODES answer, or None for a host that is not a plain IP address."""
    packed = _packed_ip(endpoint[0])
    return None if packed is None else pb.NodeInfo(key=key, ip=packed, port=endpoint[1])


_NODES_TAG = bytes([5 << 3 | 2])  # Frame.nodes
_QUERY_ID_TAG = bytes([1 << 3 | 2])  # Nodes.query_id, FindNode.query_id
_NODE_INFO_TAG = bytes([2 << 3 | 2])  # Nodes.nodes


def nodes_frame(query_id: bytes, infos: list[bytes]) -> bytes:
    """The serialized ``Frame{nodes: Nodes{query_id, nodes}}`` from serialized
    ``NodeInfo``s, as protobuf writes it (tests/test_first_contact.py compares)."""
    parts = [_QUERY_ID_TAG, varint(len(query_id)), query_id]
    for info in infos:
        parts += (_NODE_INFO_TAG, varint(len(info)), info)
    body = b"".join(parts)
    return _NODES_TAG + varint(len(body)) + body


_FIND_NODE_TAG = bytes([4 << 3 | 2])  # Frame.find_node
_TARGET_TAG = bytes([2 << 3 | 2])  # FindNode.target
_PADDING_TAG = bytes([3 << 3 | 2])  # FindNode.padding


def find_node_frame(query_id: bytes, target: bytes, padding: bytes = b"") -> bytes:
    """The serialized ``Frame{find_node: FindNode{query_id, target, padding}}``, as
    protobuf writes it (tests/test_lookup_cost.py compares): a lookup sends one per
    query, and building the messages cost as much as boxing the frame."""
    parts = [_QUERY_ID_TAG, varint(len(query_id)), query_id, _TARGET_TAG]
    parts += (varint(len(target)), target)
    if padding:
        parts += (_PADDING_TAG, varint(len(padding)), padding)
    body = b"".join(parts)
    return _FIND_NODE_TAG + varint(len(body)) + body


def parse_node_info(info: pb.NodeInfo) -> Candidate | None:
    """A candidate from a NODES answer, or None when any field is out of shape.

    The key must be a valid curve point: an invalid one would only fail later, when
    we box a query to it, far from the datagram that brought it.
    """
    if len(info.key) != 32 or len(info.ip) not in (4, 16) or not 0 < info.port < 65536:
        return None
    if not is_valid_public_key(info.key):
        return None
    family = socket.AF_INET if len(info.ip) == 4 else socket.AF_INET6
    endpoint = normalize_endpoint((socket.inet_ntop(family, info.ip), info.port))
    return Candidate(info.key, address_of(info.key), endpoint)


class Node:
    def __init__(
        self,
        identity: Identity,
        now: float,
        *,
        config: NodeConfig | None = None,
        rng: random.Random | None = None,
        receipts_apart: bool = False,
    ) -> None:
        """``receipts_apart``: hand out Receipts by ``receipts_to_send`` only, not with the
        other datagrams: a driver with a disk sends them later, once every write before
        them is durable, and the rest sooner (docs/PROTOCOL.md, "8.2 Local durability").
        """
        self.identity = identity
        self.address = identity.address
        self._address_int = int.from_bytes(self.address, "big")
        self.config = config or NodeConfig()
        # For choices only (lookup targets); everything secret or unguessable (nonces,
        # challenges, text ids) comes from os.urandom.
        self._rng = rng or random.Random()
        self._codec = Codec(identity)
        # docs/PROTOCOL.md, "Letters and sealing": our prekeys and sessions (the bundles
        # of peers we may start sessions with are the directory's, filled by records).
        self._prekeys = PrekeyStore(identity.key, now)
        self._sessions = SessionBook(identity, self._prekeys)
        self._handshakes: OrderedDict[bytes, float] = OrderedDict()  # peer key -> last sent
        self._handshake_bucket = TokenBucket(
            HANDSHAKE_RATE_PER_S, HANDSHAKE_BURST, HANDSHAKE_BURST, now
        )
        self._table = RoutingTable(
            self.address, k=self.config.k, ip_prefix_limit=self.config.ip_prefix_limit
        )
        self._relay_bandwidth = RelayBandwidth(self.config.relay_bandwidth_bytes_s, now)
        self._store = RelayStore(
            self.address,
            total_bytes=self.config.store_total_bytes,
            per_target_bytes=self.config.store_per_target_bytes,
            per_peer_bytes=self.config.store_per_peer_bytes,
            max_items=self.config.store_max_items,
            # The skew _check_expiry allows on top: a cap of the TTL refuses nothing.
            max_life_s=self.config.store_max_days * DAY_S + MAX_CLOCK_SKEW_S,
            on_remove=self._relay_bandwidth.forget,
        )
        self._stats = NodeStats()
        self._reassembler = Reassembler()
        self.bootstrap_endpoints: list[Endpoint] = []
        self.joined = False
        self._outbox: list[tuple[bytes, Endpoint]] = []
        # Receipts made since the last receipts_to_send; None: they go in _outbox.
        self._receipts_out: list[tuple[bytes, Endpoint]] | None = [] if receipts_apart else None
        self._receipts = ReceiptsOwed(now)  # the Receipts we owe, and when each goes
        self._events: deque[Event] = deque()
        self._received_unflushed = False  # a datagram came since the last drain
        self._queries: dict[bytes, _Query] = {}
        self._deferred: OrderedDict[bytes, _Deferred] = OrderedDict()  # by peer key
        self._challenged: OrderedDict[tuple[bytes, Endpoint], float] = OrderedDict()
        self._addresses = AddressValidator(now)
        self._cookie_jar = CookieJar(now)
        self._peer_cookies: dict[Endpoint, tuple[bytes, float]] = {}
        self._sent: OrderedDict[bytes, tuple[Endpoint, bytes]] = OrderedDict()  # by echo
        self._hellos: dict[bytes, tuple[Endpoint, float]] = {}
        # docs/PROTOCOL.md, "7.2", "Receipt wait": the receipts we await, and each peer's wait.
        self._receipt_waits = ReceiptWaits()
        self._schedule: list[tuple[float, bytes]] = []
        # The last item frame built (``_item_frame``): entry, stem, kind, bytes.
        self._last_frame: tuple[Entry, bool, str, bytes] | None = None
        # The last (key, endpoint) found validated in this call into the node.
        self._proven: tuple[bytes, Endpoint] | None = None
        # Our texts and their states (docs/PROTOCOL.md, "Outbox states"; protocol/outbox.py).
        self._outgoing = Outbox()
        # Recipients met by a lookup ``until_found`` but not in the table, by address: at
        # every endpoint where they answered (a Sybil may relay for them at one of them).
        self._direct: OrderedDict[bytes, dict[Endpoint, NodeEntry]] = OrderedDict()
        # Liveness pings after a receipt wait ran out (``_check_alive``), by address, until
        # their deadline: one at a time per peer, ALIVE_CHECKS_MAX in all, and only to
        # peers we route to (the table, a punched pair, a recipient met in person).
        self._alive_checks: OrderedDict[bytes, float] = OrderedDict()
        # Nodes entries as parsed (by their fields) and as written (by node and endpoint).
        self._candidates: dict[tuple[bytes, bytes, int], Candidate | None] = {}
        self._node_infos: dict[tuple[bytes, Endpoint], bytes] = {}
        # When we last started a lookup until found, by recipient address.
        self._finding: OrderedDict[bytes, float] = OrderedDict()
        self._stemmed: OrderedDict[bytes, None] = OrderedDict()  # store keys
        self._fetch_limit = RateLimiter(FETCH_RATE_PER_S, FETCH_BURST)  # by address
        self._acked: OrderedDict[bytes, int] = OrderedDict()  # part id -> expires_ms
        # Store keys of the acks we signed for texts of strangers (not contacts), oldest
        # first: the first to go past SIGNED_ACKS_MAX (_bound_signed_acks).
        self._stranger_acks: OrderedDict[bytes, None] = OrderedDict()
        self._datagram_limit = RateLimiter(
            self.config.datagram_rate_per_s, self.config.datagram_burst
        )
        self._key_limit = RateLimiter(self.config.datagram_rate_per_s, self.config.datagram_burst)
        self._store_limit = RateLimiter(self.config.store_rate_per_s, self.config.store_burst)
        self._new_keys = TokenBucket(
            self.config.new_key_rate_per_s,
            self.config.new_key_burst,
            self.config.new_key_burst,
            now,
        )
        # Key agreements for validated pairs whose box left the cache (_receive): as many
        # as for first contacts, apart from theirs (red7).
        self._validated_keys = TokenBucket(
            self.config.new_key_rate_per_s,
            self.config.new_key_burst,
            self.config.new_key_burst,
            now,
        )
        self._new_keys_by_net = RateLimiter(
            self.config.new_key_net_rate_per_s, self.config.new_key_net_burst
        )
        # Prekey records (docs/PROTOCOL.md, "8a. Records"): ours, others' stored for
        # them, and the bundles we fetch (protocol/directory.py).
        self._directory = Directory(
            DirectoryHost(
                identity=identity,
                store=self._store,
                sessions=self._sessions,
                stats=self._stats,
                store_limit=self._store_limit,
                emit=self._events.append,
                send_frame=self._send_frame,
                send_item=self._send_item,
                owe_receipt=self._owe_receipt,
                add_holder=self._copy_held,
                relay=self._relay,
                origin=self._origin,
                relaying=lambda: self._reachability.relaying,
                joined=lambda: self.joined,
                new_lookup=self._new_lookup,
                advance_lookup=self._advance_lookup,
                open_query=self._open_record_query,
                close_query=self._close_record_query,
            )
        )
        # Reachability (docs/PROTOCOL.md, "12. Reachability"): how peers see us, relay or
        # client, a client's bindings, a relay's attached clients and probe serving
        # (protocol/reachability_agent.py).
        self._reachability = ReachabilityAgent(
            ReachabilityHost(
                identity=identity,
                table=self._table,
                stats=self._stats,
                rng=self._rng,
                send_frame=self._send_frame,
                # Looked up at each call, so every Pong we send follows one rule, even one
                # replaced on an instance (the tests make hostile relays that way).
                pong=lambda challenge, addr: self._pong(challenge, addr),
                ping=self._ping,
                lookup=self.lookup,
                push_waiting=self._push_asked,
                attach_query=self._attach_query,
                pin_client=lambda key: self._codec.pin(key, PIN_ATTACHED),
                unpin_client=lambda key, now: self._codec.unpin(key, now, PIN_ATTACHED),
                no_helpers_retry_s=REBOOTSTRAP_INTERVAL_S,
            ),
            now,
            relaying=self.config.relay,
        )
        # Frame dispatch: one handler per ``Frame.body`` (wire.proto).
        self._handlers: dict[str, _Handler] = {
            "ping": self._on_ping,
            "pong": self._on_pong,
            "find_node": self._on_find_node,
            "nodes": self._on_nodes,
            "message": self._on_message,
            "ack": self._on_ack,
            "receipt": self._on_receipt,
            "fetch": self._on_fetch,
            "record": self._directory.on_record,
            "get_record": self._directory.on_get_record,
            "attach": self._reachability.on_attach,
            "probe_request": self._reachability.on_probe_request,
            "dial_back": self._reachability.on_dial_back,
            "probe": self._reachability.on_probe,
            "introduce": self._on_introduce,
            "introduced": self._on_introduced,
        }
        self._armed_for = now
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
        self._next_rebootstrap = now + REBOOTSTRAP_INTERVAL_S
        self._next_thin_lookup = now
        self._thin_lookups = 0
        self._thin_table_size = 0
        self._now = now  # the last time the driver gave us (receive or timer)
        # Hole punching between contacts behind NATs (docs/PROTOCOL.md, "12.6"), and the
        # lookups that find a wanted contact's relays (one per wanted contact at most).
        self._punch = Punching(identity.key, now)
        self._punch_lookups: dict[bytes, Lookup] = {}

    # ------------------------------------------------------------------ driver API

    @property
    def state(self) -> NodeState:
        """ "no peers", "bootstrapping" (a hello or our first lookup out) or "online"."""
        if len(self._table) == 0:
            return "bootstrapping" if self._hellos else "no peers"
        return "online" if self.joined else "bootstrapping"

    @property
    def stats(self) -> NodeStats:
        """The node's counters, live: read them, never write them (``status()`` copies)."""
        return self._stats

    @property
    def peer_count(self) -> int:
        """How many nodes our routing table holds."""
        return len(self._table)

    def peers(self) -> tuple[PeerView, ...]:
        """Every peer of the routing table (a copy), in no particular order."""
        return tuple(PeerView.of(entry) for entry in self._table)

    def closest_peers(self, target: bytes, count: int) -> tuple[PeerView, ...]:
        """The ``count`` peers of our table nearest ``target`` by XOR, nearest first."""
        return tuple(PeerView.of(entry) for entry in self._table.closest(target, count))

    def status(self) -> NodeStatus:
        """Everything a status line reads of the node, copied at once (docs/PROTOCOL.md,
        "12. Reachability" and "8.1 Local caps" for the figures it names)."""
        return NodeStatus(
            state=self.state,
            peers=len(self._table),
            bucket_fill=tuple(self._table.bucket_fill()),
            stored_items=len(self._store),
            stored_bytes=self._store.total_bytes,
            outbox=len(self._outgoing),
            reachability=self.reachability,
            client_mode=self.client_mode,
            keepalive_s=self.keepalive_interval,
            punched=len(self._punch.pairs),
            relay_usage=self.relay_usage(),
            stats=stats_copy(self._stats),
        )

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Every datagram the node wants sent, as ``(data, (host, port))``, oldest first;
        they are handed over once (the next call returns only newer ones). A node made
        with ``receipts_apart`` keeps its Receipts for ``receipts_to_send``.

        Call it after every ``receive_datagram``, ``handle_timer`` and command, and send
        them only once the events drained alongside are durable (docs/PROTOCOL.md,
        "Letters and sealing", peek and commit): a receipt or ack must never leave before
        what it vouches for is on disk.
        """
        if self._receipts.quick:
            self._send_quick_receipts()
        out, self._outbox = self._outbox, []
        return out

    def receipts_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """The Receipts a node made with ``receipts_apart`` holds out of
        ``datagrams_to_send``, oldest first, handed over once (empty for any other node).

        Call it after ``datagrams_to_send``: the Receipts made since (those due at a
        ``handle_timer``, a full one at once, docs/PROTOCOL.md, "4. Frames").
        A Receipt is our promise "I hold it": send it only once every write drained
        before it is durable. The other datagrams depend on fewer writes: a forwarded
        copy promises nothing about our disk (docs/PROTOCOL.md, "8.2 Local durability").
        """
        out = self._receipts_out
        if not out:
            return []
        self._receipts_out = []
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None when there is none (aioquic's shape)."""
        if self._received_unflushed:
            self._flush_received()
        return self._events.popleft() if self._events else None

    def drain_events(self) -> list[Event]:
        """Every event not yet taken, oldest first (empty if none).

        Take them after each ``receive_datagram``/``handle_timer``/command and before
        sending ``datagrams_to_send()``: a ``StoreChanged`` or ``SessionsChanged`` among
        them must be durable before the datagrams that depend on it leave.
        """
        if self._received_unflushed:
            self._flush_received()
        events = list(self._events)
        self._events.clear()
        return events

    def get_timer(self) -> float:
        """When ``handle_timer`` should next be called: the node time (Unix seconds, the
        clock the driver passes as ``now``) of the earliest retry, timeout or periodic
        upkeep. Always a number: upkeep is always due some time. Ask again after every
        call into the node; it only moves when something was scheduled or done.

        Timeouts are always "now + a constant" and their dicts keep insertion order,
        so the first entry of each holds its earliest deadline.
        """
        timer = self._upkeep_due()
        if self._receipts.deadline < timer:
            timer = self._receipts.deadline
        self._armed_for = timer
        return timer

    def _upkeep_due(self) -> float:
        """``get_timer`` but for the receipts owed: when anything else is due."""
        # Plain comparisons, not min(): this runs after every datagram a node handles.
        timer = self._next_housekeeping
        if self._next_rebootstrap < timer:
            timer = self._next_rebootstrap
        if self._schedule and self._schedule[0][0] < timer:
            timer = self._schedule[0][0]
        due = self._relay_bandwidth.wake_at()
        if due is not None and due < timer:
            timer = due
        if self._queries:
            due = next(iter(self._queries.values())).deadline
            if due < timer:
                timer = due
        receipt_due = self._receipt_waits.next_deadline()
        if receipt_due is not None and receipt_due < timer:
            timer = receipt_due
        if self._hellos:
            due = next(iter(self._hellos.values()))[1]
            if due < timer:
                timer = due
        due = self._reachability.next_due()
        if due < timer:
            timer = due
        due = self._punch.next_due()
        if due < timer:
            timer = due
        return timer

    def restore(self, blobs: Iterable[bytes], now: float) -> int:
        """Load persisted relay-store entries; returns how many were damaged and skipped."""
        damaged = 0
        now_ms = _ms(now)
        entries: list[Entry] = []
        for blob in blobs:
            try:
                entry = Entry.deserialize(blob)
            except ValueError:
                damaged += 1
                continue
            if entry.expires_ms > now_ms:
                entries.append(entry)
        # In the order they were stored, as the store keeps them: "the oldest" of its
        # bounds (the acks we sign, _bound_signed_acks) is then the oldest again.
        entries.sort(key=lambda entry: entry.stored_at)
        for entry in entries:
            self._store.add(entry, enforce_quota=False)
            if entry.own_text_id:
                self._outgoing.add_part(entry.own_text_id, entry.target, entry.item_id)
            elif entry.kind is Kind.RECORD and entry.target == self.address:
                self._directory.restore_own_record(entry)
            # Resume where the schedule was, but not before the node has had a moment to
            # rejoin: relaying into an empty routing table would only burn attempts.
            self._reschedule(entry, max(entry.next_at, now + RESTORE_GRACE_S))
        # Parts missing from a restored outbox were acknowledged before the restart;
        # a text counts as sent again once every remaining part has a holder.
        self._outgoing.restored(self._part_held)
        self._store.dirty.clear()
        return damaged

    def restore_sessions(
        self, prekeys: bytes | None, sessions: Iterable[tuple[bytes, bytes]], now: float
    ) -> int:
        """Load persisted prekeys and sessions; returns how many were damaged and skipped.

        Without saved prekeys (a new profile) the fresh ones made at construction stay,
        and are reported for saving by the next ``SessionsChanged``.
        """
        damaged = 0
        if prekeys is not None:
            try:
                self._prekeys = PrekeyStore.deserialize(self.identity.key, prekeys, now)
                self._directory.prekeys_replaced()
            except PrekeyError:
                damaged += 1
            self._sessions.prekeys = self._prekeys
        for peer_key, blob in sessions:
            try:
                self._sessions.restore(peer_key, blob)
            except RatchetError:
                damaged += 1
        self._flush_store()
        return damaged

    def custody(self, text_id: bytes) -> Custody | None:
        """Where our undelivered text ``text_id`` is (None: not in the outbox)."""
        return custody_of(self._own_entries(text_id), text_id)

    def outgoing_text_ids(self) -> set[bytes]:
        """Texts this node is still trying to deliver."""
        return set(self._outgoing)

    def outgoing_parts(self, text_id: bytes) -> frozenset[bytes]:
        """The item ids of our text's parts not yet acknowledged (empty: not in the outbox)."""
        return self._outgoing.parts(text_id)

    def bootstrap(self, endpoint: Endpoint, now: float) -> None:
        """Contact a node we only know by host and port."""
        endpoint = normalize_endpoint(endpoint)
        if endpoint not in self.bootstrap_endpoints:
            self.bootstrap_endpoints.append(endpoint)
        self._send_hello(endpoint, now)

    def add_known_peer(self, key: bytes, endpoint: Endpoint, now: float) -> None:
        """Ping a node remembered from an earlier run; it joins the table if it answers."""
        if key != self.identity.key:
            self._ping(key, normalize_endpoint(endpoint), now)

    def send_text(
        self,
        recipient: PublicIdentity,
        text: str,
        now: float,
        *,
        text_id: bytes | None = None,
        sent_ms: int | None = None,
    ) -> bytes:
        """Queue a text to ``recipient``; returns its id. Raises ValueError if too long.

        Sending a text id we are still sending (a re-send after a session reset) replaces
        its parts: the old ones were sealed in a session the recipient lost.
        """
        chunks = split_text(text)
        text_id = text_id or os.urandom(TEXT_ID_BYTES)
        sent_ms = _ms(now) if sent_ms is None else sent_ms
        letters = [
            encode_letter(text_id, part, len(chunks), sent_ms, chunk)
            for part, chunk in enumerate(chunks)
        ]
        self._send_letters(recipient, text_id, letters, now, handshake=False)
        self._flush_store()
        return text_id

    def send_profile(self, recipient: PublicIdentity, name: str, version: int, now: float) -> bytes:
        """Queue a control letter claiming our display name; returns its id.

        docs/PROTOCOL.md, "7.1.1": its own one-part message with its own id and ack, so
        text parts keep their whole CHUNK_BYTES. Raises ValueError for a name that is not
        a display name (``letters.is_display_name``).
        """
        text_id = os.urandom(TEXT_ID_BYTES)
        letter = encode_profile_letter(text_id, _ms(now), name, version)
        self._send_letters(recipient, text_id, [letter], now, handshake=False)
        self._flush_store()
        return text_id

    def send_read(self, recipient: PublicIdentity, read_ids: list[bytes], now: float) -> bytes:
        """Queue a control letter saying we read ``read_ids`` (at most READ_IDS_MAX) of theirs.

        docs/PROTOCOL.md, "7.1.1". Raises ValueError when the list is out of bounds.
        """
        text_id = os.urandom(TEXT_ID_BYTES)
        letter = encode_read_letter(text_id, _ms(now), read_ids)
        self._send_letters(recipient, text_id, [letter], now, handshake=False)
        self._flush_store()
        return text_id

    def _send_letters(
        self,
        recipient: PublicIdentity,
        text_id: bytes,
        letters: list[bytes],
        now: float,
        *,
        handshake: bool,
    ) -> None:
        """Seal one text (or a handshake) in the recipient's session and start relaying it."""
        for old in self._own_entries(text_id):
            self._store.remove(old)
        bundle = self._directory.bundle_to_start_with(recipient.address, now)
        try:
            sealed_parts = self._sessions.seal_text(
                recipient, letters, bundle, now, handshake=handshake
            )
        except X3DHError:
            # A bundle with an unusable key: forget it and use the fallback.
            self._directory.forget(recipient.address)
            sealed_parts = self._sessions.seal_text(
                recipient, letters, None, now, handshake=handshake
            )
        expires_ms = self._expiry_ms(now)
        self._outgoing.start(text_id, recipient.address)
        for part, sealed in enumerate(sealed_parts):
            msg = pb.Message(recipient=recipient.address, expires_ms=expires_ms, sealed=sealed)
            item_id = message_id(recipient.address, expires_ms, sealed)
            entry = Entry(
                Kind.MESSAGE,
                item_id,
                recipient.address,
                expires_ms,
                msg,
                stored_at=now,
                own_text_id=text_id,
                own_part=part,
                own_parts=len(sealed_parts),
                stem=self.config.policy == "ours",
            )
            self._store.add(entry, enforce_quota=False)
            self._outgoing.add_part(text_id, recipient.address, item_id)
            self._relay(entry, now)

    def _expiry_ms(self, now: float) -> int:
        """The expiry of a text sent at ``now``: whole hours, jittered (docs/PROTOCOL.md, "7.2").

        ``floor_hour(now + ttl)`` set back by 0 or 1 hour at random, never earlier than
        the first whole hour after ``now`` (a TTL under two hours gets at least that).
        """
        latest = _ms(now + self.config.ttl_s) // EXPIRY_UNIT_MS
        earliest = _ms(now) // EXPIRY_UNIT_MS + 1
        units = latest - self._rng.randint(0, EXPIRY_JITTER_UNITS)
        return max(units, earliest) * EXPIRY_UNIT_MS

    def handle_timer(self, now: float) -> None:
        """Do what is due at ``now`` (Unix seconds, the driver's clock; a simulator passes
        its virtual time): retries of stored items, timeouts of queries and receipts,
        upkeep. Returns nothing: what it causes is in ``drain_events()`` and
        ``datagrams_to_send()``. Calling it early does nothing that is not due.
        """
        self._proven = None
        if now >= self._receipts.deadline:
            self._send_receipts(self._receipts.take_due(now), now)
            if now < self._upkeep_due():
                # Only receipts were due (most wake-ups of a node that takes items): the
                # upkeep below would find nothing to do, at ~20 times the cost.
                self._now = now
                return
        while self._schedule and self._schedule[0][0] <= now:
            due, key = heapq.heappop(self._schedule)
            entry = self._store.by_key(key)
            if entry is None or entry.next_at != due or entry.settled:
                continue
            if entry.attempts < self.config.max_relay_attempts or entry.own_text_id:
                self._relay(entry, now)
        # Items deferred over the relay bandwidth cap, in their networks' turns
        # (docs/PROTOCOL.md, "8.1 Local caps"), while the balance lasts.
        while (waited := self._relay_bandwidth.take(now)) is not None:
            if not waited.settled:
                self._relay(waited, now, granted=True)
        self._now = now
        if now - self._armed_for > SLEEP_GAP_S and len(self._table):
            # We were asleep (a closed laptop, a stopped process): the network moved
            # on, so look ourselves up again, which ends in a Fetch of what waits (a
            # client's overdue keep-alives go out in this same tick).
            self.lookup(self.address, now)
        self._armed_for = now
        self._expire_queries(now)
        self._reachability.tick(now)
        self._punch_tick(now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
            self._housekeeping(now)
        if now >= self._next_rebootstrap:
            self._next_rebootstrap = now + REBOOTSTRAP_INTERVAL_S
            if self._directory.keep_published(now):
                self._flush_store()
            self._directory.fetch_wanted(now)
            if not self._table.closest(self.address, 1):  # empty, or every node failing
                for endpoint in self.bootstrap_endpoints:
                    self._send_hello(endpoint, now)
            elif len(self._table) < self.config.k and now >= self._next_thin_lookup:
                # A thin table (we joined while the network was forming, or most of it
                # left): look ourselves up again, so our neighbourhood learns of us.
                # Backs off, since a small network simply has few nodes to know.
                self._thin_lookups += 1
                if len(self._table) > self._thin_table_size:
                    self._thin_lookups = 1
                self._thin_table_size = len(self._table)
                delay = REBOOTSTRAP_INTERVAL_S * 2 ** min(self._thin_lookups, 16)
                self._next_thin_lookup = now + min(delay, self.config.refresh_interval_s)
                self.lookup(self.address, now)
        self._flush_store()

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None:
        """Take in one datagram that arrived from ``addr`` (its UDP source, unproven) at
        ``now`` (Unix seconds, the driver's clock, which also dates our nonces).

        Returns nothing and never raises: whatever is wrong with it is counted in
        ``stats.rejected`` by reason ("internal_error" for a bug of ours, which the fuzz
        tests hold at 0). What it causes is in ``drain_events()`` and
        ``datagrams_to_send()``.
        """
        self._stats.datagrams_in += 1
        self._stats.bytes_in += len(data)
        self._proven = None
        addr = normalize_endpoint(addr)
        self._now = now
        try:
            self._receive(data, addr, now)
        except Rejected as rejected:
            self._stats.reject(rejected.reason)
        except Exception:
            self._stats.reject("internal_error")
        # What it changed is handed over at the next drain (_flush_received): one
        # StoreChanged for all the datagrams of a pump.
        self._received_unflushed = True

    def lookup(self, target: bytes, now: float, *, until_found: bool = False) -> None:
        """Start an iterative lookup (used for joining and bucket refresh).

        ``until_found``: we want the target node itself (the recipient of a text of
        ours that is not acknowledged yet), see ``Lookup``. It starts from more of our
        table than the k nearest: those may all be Sybils, who name only each other.
        """
        lookup = self._new_lookup(target, until_found=until_found)
        if lookup is not None:
            self._advance_lookup(lookup, now)

    def _new_lookup(self, target: bytes, *, until_found: bool = False) -> Lookup | None:
        """A lookup seeded from our table (None when it is empty), not yet started."""
        count = LOOKUP_MAX_QUERIES if until_found else self.config.k
        seeds = [
            Candidate(n.key, n.address, n.endpoint) for n in self._table.closest(target, count)
        ]
        if not seeds:
            return None
        return Lookup(
            target,
            seeds,
            k=self.config.k,
            alpha=self.config.alpha,
            paths=self.config.lookup_paths,
            until_found=until_found,
        )

    # ------------------------------------------------------------------ receive path

    def _receive(self, data: bytes, addr: Endpoint, now: float) -> None:
        codec = self._codec
        canonical = codec.read_boxed(data)  # most datagrams: no Packet object
        if canonical is None:
            packet: pb.Packet | None
            packet, kind = codec.parse_packet(data)
            key, boxed, cookie = packet.sender_key, packet.boxed, packet.cookie
        else:
            packet, kind, cookie = None, "boxed", b""
            key, boxed = canonical
        peer = codec.peer(key)  # nothing below changes it before the box is opened
        # The rate limit counts what a sender can be held to. A source address is not:
        # junk forged "from" a peer would spend the peer's allowance and silence it. So
        # a key at its validated address is limited by key alone, once its datagram has
        # proved to be its own (opening a box is cheap: the boxes of table peers and
        # attached clients are pinned); everything else by source address, before it
        # costs us anything more than a parse, and by key too once opened (below). Not
        # "a key whose box is cached": fresh keys push any box out of the cache (red5,
        # finding 6).
        trusted = kind == "boxed" and self._is_validated(
            key, addr, None if peer is None else peer.address
        )
        if not trusted:
            # The pair's 3x credit (docs/PROTOCOL.md, "5.1"), counted even if refused
            # below; a validated pair needs none.
            self._addresses.received(key, addr, len(data))
            if not self._datagram_limit.allow(addr, now):
                raise Rejected("rate_limited")
        if kind == "cookie_reply":
            assert packet is not None  # read_boxed reads boxed packets only
            self._on_cookie_reply(packet.cookie_reply, addr, now)
            return
        if peer is None and not self._established(key):
            if not trusted:
                self._admit_new_key(key, cookie, data, addr, now)
            elif not self._validated_keys.take(now):
                # A validated pair's box costs one key agreement and is cached again. Not
                # from the new-key budget: forged junk under its key from its endpoint
                # (limited by key, not endpoint, as above) spent that at line rate and
                # drew a cookie reply each (red6); from a budget of its own, since junk
                # cycled through more validated pairs than the cache holds cost an
                # agreement each (red7). Past it, dropped: the pair's retry comes in.
                raise Rejected("new_key_rate")
        if kind == "hello":
            assert packet is not None
            hello = codec.open(packet, now).hello
            assert hello is not None
            # A hello too: it passed our NAT like any datagram (docs/PROTOCOL.md, "12.2").
            self._reachability.heard(addr, now)
            self._answer_hello(key, hello, addr, now, len(data))
            return
        sender, frame, body = codec.open_boxed(key, boxed, now)
        # Every authentic datagram spends its key's allowance, wherever it came from: the
        # box proves the key sent it, so no forger spends another's, and one key writing
        # many source addresses gets one key's allowance (docs/PROTOCOL.md, "5.4").
        if not self._key_limit.allow(key, now):
            raise Rejected("rate_limited")
        self._reachability.heard(addr, now)
        answered_at_once = False
        try:
            if body in _NEEDS_VALIDATION and not self._is_validated(sender.key, addr):
                # The answer would be larger than the request: only for a proven address,
                # or a FindNode whose answer fits the pair's 3x credit (first contact).
                answered_at_once = body == "find_node" and self._answer_first_contact(
                    sender, frame.find_node, addr, now
                )
                if not answered_at_once:
                    self._validate(sender.key, addr, now, defer=(body, frame))
            else:
                self._handlers[body](sender, getattr(frame, body), addr, now)
        finally:
            # After the handler (a Pong may just have validated the pair), and even if it
            # refused the frame: the datagram was authentic, and a first contact whose
            # item was refused must still get the challenge that lets its retry in.
            if body != "probe":  # a prober is a stranger we need nothing from
                self._observe(sender, addr, now, client=frame.client, served=answered_at_once)
            self._reachability.bindings.traffic(addr)
            sends = self._punch.heard(sender.address, addr, now)
            if sends:
                self._send_all(sends, now)

    def _admit_new_key(
        self, key: bytes, cookie: bytes, data: bytes, addr: Endpoint, now: float
    ) -> None:
        """May a packet from ``key``, one we have no box for, cost us a key agreement?

        Yes while the node-wide budget lasts. Past it (a flood of first contacts), only
        with a cookie proving the source address, and then within a budget per network
        of origin; otherwise the sender gets a cookie reply (WireGuard's rule).
        """
        if self._new_keys.take(now):
            return
        if cookie and self._cookie_jar.check(addr, cookie, now):
            if self._new_keys_by_net.allow(origin_network(addr), now):
                return
            raise Rejected("new_key_rate")
        reply = self._codec.encode_cookie_reply(self._cookie_jar.cookie(addr, now), echo_of(data))
        # Smaller than its cause; a validated pair earns no credit and needs none.
        if self._is_validated(key, addr) or self._addresses.spend(key, addr, len(reply)):
            self._emit(reply, addr, now, remember=False)
        raise Rejected("cookie_required")

    def _on_cookie_reply(self, reply: pb.CookieReply, addr: Endpoint, now: float) -> None:
        """A node was too busy for a packet of ours: keep its cookie, send the packet again.

        Only for a packet we really sent there (the echo names it), and once: forged
        replies can neither make us send anything nor plant a cookie.
        """
        sent = self._sent.pop(reply.echo, None)
        if sent is None or sent[0] != addr:
            raise Rejected("unsolicited")
        self._peer_cookies.pop(addr, None)
        self._peer_cookies[addr] = (reply.cookie, now)
        if len(self._peer_cookies) > PEER_COOKIES_MAX:
            del self._peer_cookies[next(iter(self._peer_cookies))]
        packet = pb.Packet.FromString(sent[1])
        packet.cookie = reply.cookie
        # The box is unchanged: the busy node never opened it, so it is no replay.
        self._emit(packet.SerializeToString(), addr, now, remember=False)

    def _established(self, key: bytes) -> bool:
        """Is ``key`` in our routing table? Its datagrams never wait for the new-key
        budget, even before its box is cached (after a restart, say)."""
        entry = self._table.get(address_of(key))
        return entry is not None and entry.key == key

    def _origin(self, key: bytes, addr: Endpoint) -> str:
        """The network an item came from, for quotas: unproven addresses share one."""
        return origin_network(addr) if self._is_validated(key, addr) else UNVALIDATED_ORIGIN

    def _is_validated(self, key: bytes, addr: Endpoint, address: bytes | None = None) -> bool:
        """Has ``key`` proved it receives at ``addr``? Table entries have, by construction.
        ``address``: the key's, when the caller has it (else derived).

        The last pair found proven is remembered until the call into the node returns
        (``_proven``): a datagram asked this of its own sender four times (rate limit,
        quota origin, receipt, routing table)."""
        pair = (key, addr)
        if pair == self._proven:
            return True
        if self._in_table(key, addr, address) or self._addresses.is_validated(key, addr):
            self._proven = pair
            return True
        return False

    def _validate_pair(self, key: bytes, addr: Endpoint) -> None:
        """``key`` proved it receives at ``addr``: the pair is validated, and the items it
        handed us while unproven are charged to its network of origin from now on (as
        ``_origin`` charges its next ones), in the store's quotas and in the relay
        bandwidth's lines (docs/PROTOCOL.md, "8. Relay store"): charged to
        ``unvalidated`` they waited behind every forged source's items, and were evicted
        first, for good (h-red4)."""
        self._addresses.validate(key, addr)
        for entry in self._store.recharge(key, addr, origin_network(addr)):
            self._relay_bandwidth.recharged(entry, UNVALIDATED_ORIGIN)

    def _in_table(self, key: bytes, addr: Endpoint, address: bytes | None = None) -> bool:
        """Is ``key`` (whose address is ``address``, if the caller has it) in our routing
        table at ``addr``?"""
        entry = self._table.get(address or address_of(key))
        return entry is not None and entry.key == key and entry.endpoint == addr

    def _validate(
        self, key: bytes, addr: Endpoint, now: float, *, defer: tuple[str, pb.Frame] | None = None
    ) -> None:
        """Challenge ``addr`` to prove that ``key`` receives there; ``defer`` waits for it.

        The challenge is stateless (``AddressValidator.challenge``), so forged sources
        cost us no slot. Deferred requests are bounded: one pair per key, a few requests
        per pair, ``DEFERRED_PER_NETWORK`` pairs per network of origin and
        ``DEFERRED_PAIRS_MAX`` in all, the oldest pair of the network forgotten first,
        and past the bound in all the oldest of the network holding the most (its
        peer's retry comes back).
        """
        if defer is not None:
            waiting = self._deferred.pop(key, None)
            if waiting is None or waiting.endpoint != addr:
                waiting = _Deferred(addr, origin_network(addr), now + QUERY_TIMEOUT_S, [])
            if len(waiting.frames) < DEFERRED_PER_PAIR:
                waiting.frames.append(defer)
            self._deferred[key] = waiting
            self._bound_deferred(waiting.network)
        pair = (key, addr)
        last = self._challenged.get(pair)
        if last is not None and now - last < QUERY_TIMEOUT_S:
            return
        self._challenged.pop(pair, None)
        self._challenged[pair] = now
        if len(self._challenged) > CHALLENGED_MAX:
            self._challenged.popitem(last=False)
        challenge = self._addresses.challenge(key, addr, now)
        self._send_frame(key, addr, pb.Frame(ping=pb.Ping(challenge=challenge)), now)

    def _bound_deferred(self, network: str) -> None:
        """Forget deferred pairs past the bounds (docs/PROTOCOL.md, "5.1"): the oldest of
        ``network`` past its share, the oldest of the network holding the most past the
        bound in all. A scan of at most 257 entries, only for an unvalidated request."""
        counts = Counter(waiting.network for waiting in self._deferred.values())
        if counts[network] > DEFERRED_PER_NETWORK:
            crowded = network
        elif len(self._deferred) > DEFERRED_PAIRS_MAX:
            crowded = max(counts, key=counts.__getitem__)
        else:
            return
        key = next(k for k, waiting in self._deferred.items() if waiting.network == crowded)
        del self._deferred[key]

    def _observe(
        self,
        sender: PublicIdentity,
        addr: Endpoint,
        now: float,
        *,
        client: bool = False,
        served: bool = False,
    ) -> None:
        """Let an authenticated datagram refresh or insert its sender in the routing table.

        Only a validated (key, endpoint) pair may: a first contact, or a known node
        speaking from a new endpoint, is challenged there first. A client never enters
        the table, and leaves it when it says it is one (docs/PROTOCOL.md, "12.3").
        ``served``: its request was answered at once (``_answer_first_contact``); it is
        challenged only if the table has room for it, since that is all the proof would
        serve (docs/PROTOCOL.md, "5.1", "First contact").
        """
        if not self._is_validated(sender.key, addr):
            if not served or self._table.has_room(sender.address, addr):
                self._validate(sender.key, addr, now)
            return
        if client:
            known = self._table.get(sender.address)
            if known is not None and known.key == sender.key:
                self._table.remove(sender.address)
                self._peer_removed(sender.key, now)
            return
        observation = self._table.observe(sender.key, sender.address, addr, now)
        if observation.endpoint_changed:
            self._table.confirm_endpoint(sender.address, addr, now)
        if sender.address in self._table:
            self._codec.pin(sender.key)
        if observation.evicted is not None:
            self._peer_removed(observation.evicted.key, now)
        if observation.added:
            self._stats.peers_added += 1
            self._events.append(PeerAdded(sender.key, addr))
            self._push_waiting(sender.address, sender.key, addr, now)
            if len(self._table) == 1:
                # First peer: start joining, and send whatever the outbox holds.
                self.lookup(self.address, now)
                for entry in self._own_entries():
                    if not entry.holders:
                        self._relay(entry, now)
        if observation.ping is not None:
            self._ping(observation.ping.key, observation.ping.endpoint, now)

    def _answer_hello(
        self, key: bytes, hello: pb.Hello, addr: Endpoint, now: float, size: int
    ) -> None:
        """A boxed Pong no larger than the hello: with the endpoint we saw it come from
        when that fits (docs/PROTOCOL.md, "3.3", "12.1")."""
        pong = self._pong(hello.challenge, addr)
        pong.client = self._reachability.client  # as _send_frame will: measured as sent
        if len(pong.pong.observed.ip) and self._frame_size(key, pong, addr, now) > size:
            pong.pong.ClearField("observed")
        self._send_frame(key, addr, pong, now)

    def _frame_size(self, key: bytes, frame: pb.Frame, addr: Endpoint, now: float) -> int:
        try:
            cookie = self._cookie_for(addr, now)
            return len(self._codec.encode_frame(key, frame, now, cookie=cookie))
        except ValueError:
            return 0

    @staticmethod
    def _pong(challenge: bytes, addr: Endpoint) -> pb.Frame:
        """A Pong echoing ``challenge`` and telling where its request came from."""
        pong = pb.Pong(challenge=challenge)
        seen = seen_endpoint(addr)
        if seen is not None:
            pong.observed.CopyFrom(seen)
        return pb.Frame(pong=pong)

    def _on_ping(self, sender: PublicIdentity, ping: pb.Ping, addr: Endpoint, now: float) -> None:
        if len(ping.challenge) != CHALLENGE_BYTES:
            raise Rejected("malformed")
        self._send_frame(sender.key, addr, self._pong(ping.challenge, addr), now)

    def _on_pong(self, sender: PublicIdentity, pong: pb.Pong, addr: Endpoint, now: float) -> None:
        """A challenge came back: from the endpoint we sent it to, it validates the pair,
        and what it observed of us is counted (docs/PROTOCOL.md, "12.1")."""
        hello = self._hellos.pop(pong.challenge, None)
        if hello is not None:
            if hello[0] == addr:
                self._validate_pair(sender.key, addr)
                self._reachability.note_observed(pong, addr, now)
            return  # a bootstrap node answered; _observe takes it in
        if self._reachability.echo_answered(sender, pong, addr, now):
            return
        query = self._queries.get(pong.challenge)
        if query is None:
            if self._punch.pong(sender.address, addr, pong.challenge, now):
                # A punch or keep-alive ping came back from where we sent it.
                self._validate_pair(sender.key, addr)
                return
            if not self._addresses.answered(sender.key, addr, pong.challenge, now):
                raise Rejected("unsolicited")
            self._validate_pair(sender.key, addr)
            self._reachability.note_observed(pong, addr, now)
            self._challenged.pop((sender.key, addr), None)
            waiting = self._deferred.get(sender.key)
            if waiting is not None and waiting.endpoint == addr:
                del self._deferred[sender.key]
                for body, frame in waiting.frames:
                    self._handlers[body](sender, getattr(frame, body), addr, now)
            return
        if query.kind not in ("ping", "attach") or query.peer_key != sender.key:
            raise Rejected("unsolicited")
        del self._queries[pong.challenge]
        if query.endpoint != addr:
            raise Rejected("wrong_endpoint")
        self._validate_pair(sender.key, addr)
        # A liveness check answered frees its place at once, not at its deadline: junk
        # for many peers could else hold every place (``_check_alive``; red6).
        self._alive_checks.pop(sender.address, None)
        relay = sender.address if query.kind == "attach" else None
        self._reachability.note_observed(pong, addr, now, relay=relay)

    def _on_find_node(
        self, sender: PublicIdentity, find: pb.FindNode, addr: Endpoint, now: float
    ) -> None:
        self._send_encoded(sender.key, addr, "nodes", self._nodes_answer(sender, find), now)

    def _answer_first_contact(
        self, sender: PublicIdentity, find: pb.FindNode, addr: Endpoint, now: float
    ) -> bool:
        """Answer a FindNode from an unvalidated pair at once if the answer fits the
        pair's credit (3x the bytes it sent us, QUIC's rule, RFC 9000 section 8.1);
        False, having sent nothing, when it does not (docs/PROTOCOL.md, "5.1", "First
        contact"): the caller validates the address first, as for other requests.

        The credit is per (key, endpoint) pair and counts every byte that came from it,
        so forged sources get at most 3x what their forger sent, each and in all, and
        never what the endpoint's own traffic under another key earned. A FindNode
        padded to ``FIND_NODE_FIRST_CONTACT_BYTES`` covers the largest answer; the
        validation round trip it saves is most of what a lookup's first contacts cost.
        """
        answer = self._nodes_answer(sender, find)
        return self._send_encoded(sender.key, addr, "nodes", answer, now, count_withheld=False)

    def _nodes_answer(self, sender: PublicIdentity, find: pb.FindNode) -> bytes:
        """The serialized ``Frame{nodes}`` answering ``find``: our nodes nearest its
        target, the asker left out.

        Written as bytes from each entry's memoized ``NodeInfo`` (``nodes_frame``): the
        same nodes fill every answer, and building them as messages cost more than
        boxing the answer.
        """
        if len(find.target) != ADDRESS_BYTES or len(find.query_id) != CHALLENGE_BYTES:
            raise Rejected("malformed")
        nodes = self._table.closest(find.target, FIND_NODE_ANSWER_NODES, exclude=(sender.address,))
        memo = self._node_infos
        infos: list[bytes] = []
        for node in nodes:
            info = memo.get((node.key, node.endpoint))
            if info is None:
                message = node_info(node.key, node.endpoint)
                if message is None:
                    continue
                if len(memo) >= NODE_INFO_MEMO:
                    memo.clear()
                info = memo[(node.key, node.endpoint)] = message.SerializeToString()
            infos.append(info)
        return nodes_frame(find.query_id, infos)

    def _on_nodes(
        self, sender: PublicIdentity, nodes: pb.Nodes, addr: Endpoint, now: float
    ) -> None:
        query = self._queries.get(nodes.query_id)
        if query is None or query.kind != "find_node" or query.peer_key != sender.key:
            raise Rejected("unsolicited")
        del self._queries[nodes.query_id]
        if query.endpoint == addr:
            self._validate_pair(sender.key, addr)
        assert query.lookup is not None and query.candidate is not None
        if (
            query.lookup.until_found
            and sender.address == query.lookup.target
            and query.endpoint == addr
        ):
            self._met_target(sender, addr, now)
        if len(nodes.nodes) > FIND_NODE_ANSWER_NODES * 2:
            query.lookup.on_timeout(query.path, query.candidate)
            self._advance_lookup(query.lookup, now)
            raise Rejected("malformed")
        found = self._parse_nodes(nodes, addr)
        query.lookup.on_response(query.path, query.candidate, found)
        self._advance_lookup(query.lookup, now)

    def _parse_nodes(self, nodes: pb.Nodes, answerer: Endpoint) -> list[Candidate]:
        """The well-formed entries of a Nodes answer but ourselves (``parse_node_info``),
        memoized by their fields: the same nodes come back in answer after answer.

        Only entries of the answerer's scope or farther out (``named_endpoint_allowed``):
        a lookup sends each a FindNode, so a peer on the internet must not aim them at
        our own machine or LAN; a LAN peer still names LAN and internet peers, a loopback
        peer any (docs/PROTOCOL.md, "4", Nodes). Nor in the /64 of one of our own IPv6
        endpoints, unless the answerer is in it too: our machine and LAN have global IPv6
        addresses that scopes cannot tell apart (red6)."""
        memo, own_key = self._candidates, self.identity.key
        own = self._reachability.own_prefixes
        shared = ipv6_prefix(answerer[0]) if own else None
        found: list[Candidate] = []
        for info in nodes.nodes:
            fields = (info.key, info.ip, info.port)
            candidate = memo.get(fields)
            if candidate is None and fields not in memo:  # None is kept too: out of shape
                if len(memo) >= NODE_INFO_MEMO:
                    memo.clear()
                candidate = memo[fields] = parse_node_info(info)
            if (
                candidate is not None
                and candidate.key != own_key
                and named_endpoint_allowed(candidate.endpoint, answerer)
                and (not own or info.ip[:8] not in own or info.ip[:8] == shared)
            ):
                found.append(candidate)
        return found

    def _find_recipient(self, address: bytes, now: float) -> None:
        """Look ``address`` up until found, unless we did so lately (see the constants)."""
        while (
            self._finding and now - next(iter(self._finding.values())) >= FIND_RECIPIENT_INTERVAL_S
        ):
            self._finding.popitem(last=False)
        if address in self._finding:
            return
        self._finding[address] = now
        self.lookup(address, now, until_found=True)

    def _met_target(self, sender: PublicIdentity, addr: Endpoint, now: float) -> None:
        """A lookup ``until_found`` reached the recipient itself: hand it what we hold.

        Its answer came from the endpoint we asked, under the key whose hash is the
        address we looked up: a validated pair. That proves a return path, not that the
        endpoint is the recipient's own: a Sybil can name an endpoint of its own that
        relays to the recipient, and drop what we send there. So the lookup goes on
        after the first answer, and every endpoint where the recipient answered is kept
        and gets our texts. It may not fit in our table (a bucket full of responsive
        Sybils keeps it out, and no admission rule bends for it), so it is kept apart.
        """
        endpoints = self._direct.pop(sender.address, {})
        endpoints[addr] = NodeEntry(sender.key, sender.address, addr, now, now)
        self._direct[sender.address] = endpoints
        if len(self._direct) > DIRECT_CONTACTS_MAX:
            self._direct.popitem(last=False)
        self._push_waiting(sender.address, sender.key, addr, now)

    def _on_receipt(
        self, sender: PublicIdentity, receipt: pb.Receipt, addr: Endpoint, now: float
    ) -> None:
        """``sender`` says it holds the items these ids name (docs/PROTOCOL.md, "4. Frames").

        An id counts, making the sender a holder (which counts toward the item's
        replication and stops its relaying), only for an item we sent that peer: its
        receipt wait is open or ran out lately (``ReceiptWaits.received``). Any other id
        of an item we hold is ignored and counted (``receipt_unsent``), unless the sender
        already holds it (a second receipt): Sybils told an item's id by one colluder
        must not silence it by claiming to hold it (docs/PROTOCOL.md, "7.2", "Receipt
        wait"). An id naming nothing we hold is skipped, unless it names a message we
        sent that peer and have since replaced by its ack (``_ack_to_late_holder``).
        """
        ids = receipt.ids
        if len(ids) > FETCH_ITEMS_MAX:
            raise Rejected("malformed")
        address = sender.address
        by_key = self._store.by_key
        received = self._receipt_waits.received
        for key in ids:
            entry = by_key(key)
            if entry is None:
                self._ack_to_late_holder(sender, key, addr, now)
                continue
            if received(address, key, now):
                self._add_holder(entry, address, now)
            elif address not in entry.holders:
                self._stats.reject("receipt_unsent")

    def _ack_to_late_holder(
        self, sender: PublicIdentity, key: bytes, addr: Endpoint, now: float
    ) -> None:
        """A receipt for a message we sent ``sender`` and have replaced by its ack since: the
        ack came back before the receipt, which may wait up to ``RECEIPT_DELAY_S``
        (docs/PROTOCOL.md, "4. Frames"). The peer holds the message, so it is owed the ack
        as the message's other holders are (docs/PROTOCOL.md, "7.3 Acks"): it goes to that
        peer at once, and its wait ends, measured, instead of counting a failure. Only to
        that peer, and no attempt of the ack's is counted: a late receipt must not spend
        the ack's retries on the hops it has reached already. An ack that had settled is
        scheduled again, so it retries to the peer until the peer holds it. Only with a
        wait open for that message: whoever names ids we never sent it gets nothing, and
        costs one dict lookup per id."""
        sent = self._receipt_waits.item_sent(sender.address, key)
        if not isinstance(sent, Entry):
            return
        # A message's ack is stored under its id and recipient (nothing else sent has one).
        ack = self._store.by_key(_ACK_KEY_PREFIX + sent.item_id + sent.target)
        if ack is None or not self._receipt_waits.received(sender.address, key, now):
            return
        ack.notify.add(sender.address)
        if sender.address not in self._ack_owed(ack):
            return  # the peer has sent us its copy of the ack already
        self._send_item(ack, sender.key, addr, now)
        if ack.settled:
            ack.settled = False
            self._reschedule(ack, now + self._retry_delay(ack))

    def _on_fetch(
        self, sender: PublicIdentity, fetch: pb.Fetch, addr: Endpoint, now: float
    ) -> None:
        self._push_asked(sender.address, sender.key, addr, now)

    def _push_asked(self, address: bytes, key: bytes, endpoint: Endpoint, now: float) -> None:
        """A node asked for what we hold for it (a Fetch, an Attach): pushed within its
        address's FETCH_RATE_PER_S (docs/PROTOCOL.md, "7.2")."""
        if not self._fetch_limit.allow(address, now):
            self._stats.fetches_too_soon += 1
            return
        self._push_waiting(address, key, endpoint, now)

    # ------------------------------------------------------------------ messages

    def _on_message(
        self, sender: PublicIdentity, msg: pb.Message, addr: Endpoint, now: float
    ) -> None:
        # Each read of a protobuf bytes field copies it: read each once.
        recipient, sealed, expires_ms = msg.recipient, msg.sealed, msg.expires_ms
        if len(recipient) != ADDRESS_BYTES:
            raise Rejected("malformed")
        if len(sealed) != SEALED_BYTES:
            raise Rejected("bad_size")
        _check_expiry(expires_ms, now)
        item_id = message_id(recipient, expires_ms, sealed)
        store = self._store
        ack_entry = store.by_key(_ACK_KEY_PREFIX + item_id + recipient)
        if ack_entry is not None:
            # Already acknowledged: answer this copy with the ack instead of relaying it.
            self._stats.acks_answered += 1
            self._send_item(ack_entry, sender.key, addr, now)
            return
        if recipient == self.address:
            if self._acked.get(item_id) == expires_ms:
                # A late copy of a text whose ack went (_bound_signed_acks): answered with
                # the ack signed again, not opened (its keys are spent: a lost session,
                # else). Within its hop's store rate, and not stored: copies of many old
                # texts cycled past the bound made us sign and evict at line rate (red7).
                if not self._store_limit.allow(sender.address, now):
                    raise Rejected("store_rate")
                self._stats.acks_answered += 1
                self._send_item(
                    self._ack_entry(item_id, expires_ms, sender.key, addr, now),
                    sender.key,
                    addr,
                    now,
                )
                return
            self._on_message_for_me(sender, msg, item_id, addr, now)
            return
        existing = store.by_key(_MESSAGE_KEY_PREFIX + item_id)
        if existing is not None:
            self._stats.duplicates += 1
            # Our own text handed back to us in the stem (a walk that came round to its
            # sender) got nowhere: its next attempt, a fresh stem, goes now rather than at
            # the retry 2 s later (docs/PROTOCOL.md, "7.2"). Only in its first attempt, so
            # that handing it back again (from more keys) cannot push its retries back.
            looped = (
                bool(existing.own_text_id)
                and msg.stem
                and existing.attempts == 1
                and sender.address not in existing.holders
            )
            self._copy_held(existing, sender.address, now)
            if looped:
                self._relay(existing, now)
            self._owe_receipt(sender.key, addr, existing.key, now)
            if existing.key in self._stemmed:
                del self._stemmed[existing.key]
                # It came back to us, who only forwarded it in the stem (a stem that
                # looped, or a fluff copy counting on us): relayed normally now, not at
                # its sender's retry (docs/PROTOCOL.md, "7.2"; common in small networks).
                # As its first relay out of the stem: stem holders are no progress.
                existing.attempts = 0
                self._relay(existing, now)
            return
        if not self._reachability.relaying:
            raise Rejected("not_relay")  # docs/PROTOCOL.md, "12.3": relaying is off
        address = sender.address
        if not self._store_limit.allow(address, now):
            raise Rejected("store_rate")
        in_stem = msg.stem and self.config.policy == "ours"
        entry = Entry(
            Kind.MESSAGE,
            item_id,
            recipient,
            expires_ms,
            msg,
            now,
            holders={address},
            origin=address,
            origin_net=self._origin(sender.key, addr),
            origin_key=sender.key,
            origin_endpoint=addr,
            stem=in_stem,
        )
        try:
            store.add(entry)
        except QuotaExceeded as exc:
            raise Rejected(exc.reason) from exc
        self._stats.stored += 1
        self._owe_receipt(sender.key, addr, entry.key, now)
        # In the stem: forward it in the stem once more, or relay it (docs/PROTOCOL.md,
        # "7.2"). Whoever set the flag, the walk ends after 1 / (1 - STEM_FORWARD) hops
        # on average, so a hostile flag costs a relay no more than an honest one.
        stem = in_stem and self._rng.random() < STEM_FORWARD
        self._relay(entry, now, stem=stem)
        if stem:
            self._stemmed[entry.key] = None
            if len(self._stemmed) > STEMMED_MAX:
                self._stemmed.popitem(last=False)

    def _on_message_for_me(
        self, sender: PublicIdentity, msg: pb.Message, item_id: bytes, addr: Endpoint, now: float
    ) -> None:
        try:
            opened = self._sessions.open(msg.sealed, now, self._origin(sender.key, addr))
        except SessionError as exc:
            if exc.lost_with is not None:
                self._session_lost(exc.lost_with, now)
            raise Rejected(exc.reason) from exc
        try:
            letter = decode_letter(opened.letter)
        except ControlError as exc:
            raise Rejected("bad_control") from exc
        except LetterError as exc:
            raise Rejected("bad_letter") from exc
        author = opened.author
        # A part for us is a new item too (the ack we sign for it is stored to its
        # expiry): its author's store rate, once it opened, so junk that does not open
        # spends no one's, and the relays that bring our texts none of theirs
        # (docs/PROTOCOL.md, "5.4"; red6).
        if not self._store_limit.allow(author.address, now):
            raise Rejected("store_rate")
        self._punch.used(sender.address, now)
        tag = _PartTag(item_id, msg.expires_ms, sender.key, addr, opened.token)
        if opened.handshake:
            # docs/PROTOCOL.md, "Session reset": a handshake only starts a session; it is
            # never shown, and acknowledged like any letter.
            self._text_complete(author, (tag,), letter.sent_ms, now, handshake=True)
            return
        control = letter.WhichOneof("control")
        if control is not None:
            # docs/PROTOCOL.md, "7.1.1": a control letter is one part, never shown as a
            # text; the author is the session's, so no one can claim a name or read
            # receipts for another key. Acknowledged like any text.
            if control == "profile":
                self._events.append(
                    NameClaimed(author, letter.profile.name, letter.profile.version)
                )
            else:
                self._events.append(TextsRead(author, tuple(letter.read.text_ids)))
            self._text_complete(author, (tag,), letter.sent_ms, now, handshake=False)
            return
        try:
            done = self._reassembler.add(
                author.key, letter, now, tag, self._origin(sender.key, addr)
            )
        except LetterError as exc:
            raise Rejected("bad_letter") from exc
        if done is None:
            # Not acknowledged until the whole text is here (and on disk), but the
            # sender learns this part arrived, so it does not count us as failing.
            self._owe_receipt(sender.key, addr, entry_key(Kind.MESSAGE, item_id), now)
            return
        self._stats.texts_received += 1
        self._events.append(TextReceived(done.text_id, author, done.text, done.sent_ms))
        self._text_complete(author, done.tags, done.sent_ms, now, handshake=False)

    def _text_complete(
        self,
        author: PublicIdentity,
        tags: tuple[object, ...],
        sent_ms: int,
        now: float,
        *,
        handshake: bool,
    ) -> None:
        """Commit the session change of a whole text, and acknowledge each of its parts.

        The session change, the text and the acks reach the driver in one batch of
        events, which it persists in one transaction (docs/PROTOCOL.md, "Letters and
        sealing", peek and commit).
        """
        part_tags = [t for t in tags if isinstance(t, _PartTag)]
        tokens = [t.commit for t in part_tags]
        if self._sessions.commit(author, tokens, now, sent_ms=sent_ms, handshake=handshake):
            self._events.append(SessionReset(author.key))
        stranger = author.key not in self._sessions.contacts
        for tag_object in part_tags:
            part_id, expires_ms, peer_key, peer_addr, _ = astuple(tag_object)
            self._acknowledge(part_id, expires_ms, peer_key, peer_addr, now, stranger=stranger)

    def _acknowledge(
        self,
        part_id: bytes,
        expires_ms: int,
        peer_key: bytes,
        peer_addr: Endpoint,
        now: float,
        *,
        stranger: bool,
    ) -> None:
        """Sign the ack of a part of a text to us and send it back to the node that handed
        us the part, retried until it holds it; later copies from anyone are answered with
        it (_on_message), and once it went (``_bound_signed_acks``) with it signed again.
        ``stranger``: its author is not one of the user's contacts; such acks go first."""
        entry = self._ack_entry(part_id, expires_ms, peer_key, peer_addr, now)
        self._store.add(entry, enforce_quota=False)
        if stranger:
            self._stranger_acks[entry.key] = None
            if len(self._stranger_acks) > 2 * SIGNED_ACKS_MAX:  # keys of acks gone since
                held = self._store.by_key
                self._stranger_acks = OrderedDict.fromkeys(
                    key for key in self._stranger_acks if held(key) is not None
                )
        self._relay(entry, now)
        self._bound_signed_acks()

    def _ack_entry(
        self, part_id: bytes, expires_ms: int, peer_key: bytes, peer_addr: Endpoint, now: float
    ) -> Entry:
        """The ack we sign for a part of a text to us, going back to ``peer_key``."""
        return Entry(
            Kind.ACK,
            part_id + self.address,
            self.address,
            expires_ms,
            sign_ack(self.identity, part_id, expires_ms),
            stored_at=now,
            origin_key=peer_key,
            origin_endpoint=peer_addr,
        )

    def _bound_signed_acks(self) -> None:
        """Past ``SIGNED_ACKS_MAX``, drop the oldest acks we signed for strangers' texts,
        and only when none is left the oldest of all (docs/PROTOCOL.md, "8. Relay store"):
        anyone can write us texts, so their acks must not push out our contacts' (red7).
        Their ids are kept (``ACKED_IDS_MAX``): a copy of its text that comes later is
        answered with the ack signed again, where it would not open (its keys are spent)
        and would count as a lost session."""
        while self._store.count_for(self.address) > SIGNED_ACKS_MAX:
            oldest = self._oldest_stranger_ack() or self._store.oldest_for(self.address, Kind.ACK)
            if oldest is None:
                return
            self._stranger_acks.pop(oldest.key, None)
            self._acked[oldest.item_id[:-ADDRESS_BYTES]] = oldest.expires_ms
            if len(self._acked) > ACKED_IDS_MAX:
                self._acked.popitem(last=False)
            self._store.remove(oldest)  # its schedule entry is skipped when due

    def _oldest_stranger_ack(self) -> Entry | None:
        """The oldest ack we signed for a stranger's text that we still hold, if any."""
        while self._stranger_acks:
            key = next(iter(self._stranger_acks))
            entry = self._store.by_key(key)
            if entry is not None:
                return entry
            del self._stranger_acks[key]  # expired meanwhile
        return None

    # ------------------------------------------------------------------ acks

    def _on_ack(self, sender: PublicIdentity, ack: pb.Ack, addr: Endpoint, now: float) -> None:
        """Take an ack for a message we hold, stop relaying it and send it back its way.

        docs/PROTOCOL.md, "7.3 Acks": an ack names no sender, so nothing tells a relay
        where to route it but the message it answers. Only an ack for a message we hold
        (or a copy of one we hold) is taken, so the acks a peer can make us store are
        bounded by the messages we hold, each of which it replaces.
        """
        if not ack_is_well_formed(ack):
            raise Rejected("malformed")
        recipient = address_of(ack.recipient_key)
        key = entry_key(Kind.ACK, ack.message_id + recipient)
        existing = self._store.by_key(key)
        if existing is not None:
            # A copy counts no more than a receipt: its sender becomes a holder only if
            # the ack is owed to it (which ends our sends to it) or we sent it the message
            # (its receipt for the message, if late, then draws no ack it holds); anyone
            # else's copy joined a set without bound, rewritten with our own acks at
            # every commit (docs/PROTOCOL.md, "7.3 Acks").
            message_key = entry_key(Kind.MESSAGE, ack.message_id)
            if sender.address in self._ack_owed(existing) or (
                self._receipt_waits.item_sent(sender.address, message_key) is not None
            ):
                self._receipt_waits.received(sender.address, key, now)
                self._add_holder(existing, sender.address, now)
            self._owe_receipt(sender.key, addr, key, now)
            return
        message = self._store.get(Kind.MESSAGE, ack.message_id)
        if message is None:
            raise Rejected("unknown_ack")
        if message.target != recipient or ack.expires_ms != message.expires_ms:
            raise Rejected("forged_ack")
        _check_expiry(ack.expires_ms, now)
        if not self._store_limit.allow(sender.address, now):
            raise Rejected("store_rate")
        if not verify_ack(ack):
            raise Rejected("bad_ack")
        self._stats.acks_seen += 1
        self._receipt_waits.forget(sender.address, message.key)
        # The ack takes the message's place (it is smaller), under the same origin for
        # the quotas, and goes back to whoever handed us the message and to every other
        # node we know holds it: each of them stops relaying and sends it on back.
        entry = Entry(
            Kind.ACK,
            ack.message_id + recipient,
            recipient,
            ack.expires_ms,
            ack,
            stored_at=now,
            holders={sender.address},
            origin=message.origin,
            origin_net=message.origin_net,
            origin_key=message.origin_key,
            origin_endpoint=message.origin_endpoint,
            notify=message.holders - {sender.address},
        )
        self._store.remove(message)
        self._store.add(entry, enforce_quota=False)
        if message.own_text_id:
            self._outbox_moved(self._outgoing.part_acked(message.own_text_id, message.item_id))
        self._owe_receipt(sender.key, addr, key, now)
        entry.settled = not self._ack_owed(entry)
        if not entry.settled:
            self._relay(entry, now)

    # ------------------------------------------------------------------ prekey records

    def set_own_bundle(self, public: PublicBundle, now: float) -> None:
        """Sign ``public`` as our record, keep it, publish it to our neighbourhood.

        The record lives ``RECORD_LIFETIME_S`` and is issued again every
        ``RECORD_REFRESH_S``, when set again, and offered to the neighbours a self-lookup
        meets, so it outlives our absences (docs/PROTOCOL.md, "8a. Records";
        ``protocol/directory.py``). Raises ValueError for a bundle that is not ours or
        could not be a valid record.
        """
        self._directory.set_own_bundle(public, now)
        self._flush_store()

    def want_bundles(self, keys: Iterable[bytes], now: float) -> None:
        """Fetch the prekey bundles of these contacts while we have no session with them.

        A first text to someone opens with X3DH only if we hold their bundle by then;
        fetching it when they become a contact (and at start, for contacts without a
        session) means a text typed later finds it. Fetched while we are online, tried
        again every ``BUNDLE_RETRY_S``; forgotten once a session or the bundle is there.
        """
        self._directory.want(keys, now)

    def fetch_bundle(self, address: bytes, now: float) -> bool:
        """Look for the prekey record of ``address``; False if no fetch could start.

        A lookup finds the owner's neighbourhood (the owner itself, when online, is
        nearest), then each of the nodes it met is asked with a GetRecord. Verified
        answers fill the directory's ``known_bundles`` (the newest issued wins, so a
        hostile relay can only withhold the record or serve an older valid one), and the
        fetch ends with a ``BundleFetched`` event once every answer is in or timed out.
        """
        return self._directory.fetch(address, now)

    def _open_record_query(
        self, key: bytes, endpoint: Endpoint, address: bytes, now: float
    ) -> bytes | None:
        """Register a GetRecord of ours for ``address``: its query id, None when full."""
        if self._own_queries_full():
            return None
        query_id = os.urandom(CHALLENGE_BYTES)
        self._queries[query_id] = _Query(
            "get_record", key, endpoint, now + QUERY_TIMEOUT_S, record_for=address
        )
        return query_id

    def _close_record_query(self, query_id: bytes, peer_key: bytes) -> bytes | None:
        """Take back our GetRecord ``query_id`` if it went to ``peer_key``: the owner
        address it asked for, or None (no such query: the answer is unsolicited)."""
        query = self._queries.get(query_id)
        if query is None or query.kind != "get_record" or query.peer_key != peer_key:
            return None
        del self._queries[query_id]
        return query.record_for

    # ------------------------------------------------------------------ reachability

    @property
    def reachability(self) -> Reachability:
        """What we know of our own reachability (docs/PROTOCOL.md, "12.3"; the rules and
        their state live in ``protocol/reachability_agent.py``)."""
        return self._reachability.reach

    @property
    def client_mode(self) -> bool:
        """Do our frames say we are a client (not, or not yet known to be, reachable)?"""
        return self._reachability.client

    @property
    def relaying(self) -> bool:
        """Do we relay for others (the user may switch it off, docs/PROTOCOL.md, "12.3")?"""
        return self._reachability.relaying

    def set_relaying(self, on: bool, now: float) -> None:
        """Switch relaying for others on or off. Off: client mode from the next frame, so
        peers drop us from their tables, and nothing new is stored for others; what we
        hold already was acknowledged to its senders and is still relayed until its ack
        or expiry (never dropped)."""
        self._reachability.set_relaying(on, now)

    def relay_usage(self) -> RelayUsage:
        """Use against each local cap (docs/PROTOCOL.md, "8.1 Local caps")."""
        return RelayUsage(
            relaying=self._reachability.relaying,
            bytes_held=self._store.others_bytes,
            bytes_cap=self._store.total_limit,
            items_held=self._store.others_items,
            items_cap=self._store.items_limit,
            days_cap=self.config.store_max_days,
            sent_bytes=self._relay_bandwidth.sent,
            bandwidth_cap=self.config.relay_bandwidth_bytes_s,
            deferred=self._stats.relay_deferred,
            origins=tuple(self._store.origin_shares(ORIGINS_SHOWN)),
            refused=tuple((cap, self._stats.rejected[reason]) for cap, reason in CAP_REASONS),
            waiting=self._relay_bandwidth.waiting,
            waiting_networks=self._relay_bandwidth.networks_waiting(),
            waiting_wide=self._relay_bandwidth.wide_networks_waiting(),
            waiting_top=tuple(self._relay_bandwidth.most_waiting(ORIGINS_SHOWN)),
        )

    @property
    def keepalive_interval(self) -> float | None:
        """The keep-alive interval in use (learned, "12.5"), or None when not a client."""
        return self._reachability.keepalive_interval

    def set_local_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        """The endpoints our socket is bound to, as the driver sees them.

        Without them, nothing tells a NAT from a direct link: the node then never calls
        itself a client and sends no probes (an in-process simulator, a test harness).
        """
        self._reachability.set_local_endpoints(endpoints, now)

    def note_port_mapping(self, endpoint: Endpoint | None, now: float) -> None:
        """The local router mapped ``endpoint`` to our socket (None: it was removed).

        A candidate only: a dial-back probe to it must arrive before we call ourselves
        public by it (docs/PROTOCOL.md, "12.2").
        """
        self._reachability.note_port_mapping(endpoint, now)

    def attached_client(self, address: bytes) -> tuple[bytes, Endpoint] | None:
        """A client attached to us (docs/PROTOCOL.md, "12.4"): its key and the endpoint
        we reach it at, or None."""
        return self._reachability.attached_client(address, self._now)

    def _attach_query(
        self, challenge: bytes, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float
    ) -> None:
        """Send an Attach as our own query (its Pong is awaited), unless our query table
        is full or the frame could not go."""
        if self._own_queries_full():
            return
        self._queries[challenge] = _Query("attach", key, endpoint, now + QUERY_TIMEOUT_S)
        if not self._send_frame(key, endpoint, frame, now, probe=True):
            del self._queries[challenge]

    # ------------------------------------------------------------------ hole punching

    def set_contacts(self, keys: Iterable[bytes], now: float) -> None:
        """The keys the user has as contacts: only they may make us punch a hole, and
        their sessions are the last to go when a flood of strangers' fills the book.

        docs/PROTOCOL.md, "12.6 Hole punching": an introduction shows each side the
        other's IP address, which is acceptable between contacts and never to strangers;
        and only a contact's introduction makes us ping an endpoint. Called by the
        service at start and whenever the contacts change; a former contact's punched
        pair and attempts end at once.
        """
        contacts = frozenset(keys)
        self._punch.set_contacts(contacts)
        self._sessions.contacts = contacts
        self._punch_tick(now)

    def punched_peers(self) -> dict[bytes, Endpoint]:
        """Contacts we reach directly through a punched hole, by address (for status)."""
        return {a: p.endpoint for a, p in self._punch.pairs.items()}

    def _may_punch(self, address: bytes) -> bool:
        """Would a hole to ``address`` help (docs/PROTOCOL.md, "12.6", when to punch)?

        Not when we reach it already (in our table, met in person by a lookup), and not
        when we are publicly reachable ourselves: its relays' pushes and its own acks
        reach us then, and it finds us through the table.
        """
        return address not in self._table and address not in self._direct and not self._is_public()

    def _is_public(self) -> bool:
        """Are we publicly reachable (docs/PROTOCOL.md, "12.3")? Not while unknown."""
        return self.reachability.kind == "public"

    def _want_punch(self, address: bytes, now: float) -> None:
        """A text of ours for ``address`` waits for its ack: try to reach it directly.

        The first round goes out at once, while the text still waits (its ack may be
        back before our next timer).
        """
        if self._may_punch(address):
            self._punch.want(address, now)
            self._punch_tick(now)

    def _punch_tick(self, now: float) -> None:
        """Send what hole punching has due: rounds of Introduce, pings, keep-alives."""
        due = self._punch.due_wants(now)
        relays: dict[bytes, list[tuple[bytes, Endpoint]]] = {}
        still_wanted: set[bytes] = set()
        if due:
            waiting = self._outgoing.recipients()
            for address in due:
                nearest = self._table.closest(address, self.config.k, exclude=(address,))
                relays[address] = [(n.key, n.endpoint) for n in nearest if n.failures == 0]
                if address in waiting and self._may_punch(address):
                    still_wanted.add(address)
        self._send_all(self._punch.tick(now, relays, still_wanted), now)
        for address in still_wanted:
            # Our table may hold none of the few relays the contact attaches to (its own
            # nearest): look its neighbourhood up, and ask the nearest the lookup met.
            if address in self._punch.wants and address not in self._punch_lookups:
                lookup = self._new_lookup(address)
                if lookup is not None:
                    self._punch_lookups[address] = lookup
                    self._advance_lookup(lookup, now)

    def _punch_lookup_finished(self, lookup: Lookup, now: float) -> None:
        """A wanted contact's neighbourhood was looked up: ask its nearest nodes."""
        if self._punch_lookups.get(lookup.target) is not lookup:
            return
        del self._punch_lookups[lookup.target]
        relays = [(c.key, c.endpoint) for c in lookup.result() if c.address != lookup.target]
        self._send_all(self._punch.ask_relays(lookup.target, relays, now, spend=False), now)

    def _send_all(self, sends: list[Send], now: float) -> None:
        for send in sends:
            self._send_frame(send.key, send.endpoint, send.frame, now, probe=send.probe)

    def _introducible(self, address: bytes) -> tuple[bytes, Endpoint] | None:
        """Relay side: the node at ``address`` where we reach it, if we may introduce it:
        a client attached to us ("12.4"), else one in our table (a validated pair by
        construction)."""
        attached = self.attached_client(address)
        if attached is not None:
            return attached
        entry = self._table.get(address)
        return None if entry is None else (entry.key, entry.endpoint)

    def _on_introduce(
        self, sender: PublicIdentity, introduce: pb.Introduce, addr: Endpoint, now: float
    ) -> None:
        """Relay side: only reached from a validated requester (``_NEEDS_VALIDATION``)."""
        target_at = self._introducible(introduce.target)
        self._send_all(self._punch.on_introduce(sender.key, addr, introduce, target_at, now), now)

    def _on_introduced(
        self, sender: PublicIdentity, introduced: pb.Introduced, addr: Endpoint, now: float
    ) -> None:
        """An answer to an Introduce of ours (it has our nonce), or a notice: someone
        asks a relay to meet us. A notice counts only from a relay of our table, at the
        endpoint we know it by (``unsolicited``): a stranger cannot make us ask anyone."""
        if introduced.nonce:
            self._send_all(self._punch.on_answer(sender.key, addr, introduced, now), now)
            return
        if introduced.ip or introduced.port:
            raise Rejected("malformed")
        known = self._table.get(sender.address)
        if known is None or known.key != sender.key or known.endpoint != addr:
            raise Rejected("unsolicited")
        self._send_all(self._punch.on_notice(sender.key, addr, introduced.key, now), now)

    # ------------------------------------------------------------------ relaying

    def _relay(
        self, entry: Entry, now: float, *, stem: bool = False, granted: bool = False
    ) -> None:
        """Send an item to the nodes that should hold it next, and schedule the retry.

        ``stem``: forward it in the stem instead. Every attempt at our own texts is
        (docs/PROTOCOL.md, "7.2"): retries sent by the sender straight to the recipient's
        neighbourhood would single it out there whenever the recipient is offline.
        ``granted``: an item for others the relay bandwidth hands back in its turn.
        """
        if entry.for_others and not granted and self._relay_bandwidth.defer(now, entry):
            # Over the relay bandwidth cap, or others' items wait (docs/PROTOCOL.md, "8.1
            # Local caps"): the whole attempt waits in its network's line, and costs no
            # attempt of the item's budget; handle_timer relays it in its turn.
            self._stats.relay_deferred += 1
            return
        stem = stem or (entry.stem and bool(entry.own_text_id))
        punched = entry.own_text_id and self._punch.hop(entry.target) is not None
        stem_peer = self._stem_peer(entry) if stem else None
        if punched:
            # Our text to a contact we punched a hole to goes straight there, and to no
            # relay (docs/PROTOCOL.md, "12.6"): the recipient knows us anyway. If the
            # hole closed, the ping after the missing receipt goes unanswered, which drops
            # the pair (``_check_alive``), and the next retry takes the stem.
            for node in self._with_target([], entry, skip_holders=False):
                self._send_item(entry, node.key, node.endpoint, now, budgeted=True)
        elif stem_peer is not None:
            # One random peer gets it in the stem, a fresh draw at every attempt, so a
            # stem peer that drops it only delays it; from its sender, the recipient too
            # when known. A relay's retries relay it normally (fluff).
            self._stats.stem_forwards += 1
            self._send_item(entry, stem_peer.key, stem_peer.endpoint, now, stem=True, budgeted=True)
            if entry.own_text_id:
                for node in self._with_target([], entry, skip_holders=False):
                    self._send_item(entry, node.key, node.endpoint, now, budgeted=True)
        else:
            for node in self._next_hops(entry):
                self._send_item(entry, node.key, node.endpoint, now, budgeted=True)
        self._push_to_attached(entry, now)
        if (
            self.config.policy == "ours"
            and entry.kind is not Kind.ACK  # an ack goes back the way its message came
            and entry.target not in self._table
        ):
            if entry.own_text_id and entry.kind is Kind.MESSAGE and not punched:
                self._want_punch(entry.target, now)
            if (
                entry.own_text_id
                and entry.attempts in FIND_RECIPIENT_ON_ATTEMPTS
                and entry.target not in self._direct
                and not punched
            ):
                # Our own text, still not acknowledged: only the ack proves delivery.
                # Receipts prove nothing (Sybils next to the target send them and drop
                # the text), so we look for the recipient itself, past its k nearest,
                # and hand it the text in person (docs/PROTOCOL.md, "Relaying").
                self._find_recipient(entry.target, now)
            elif (
                not entry.own_text_id
                and entry.target != self.address
                and entry.attempts in LOOKUP_ON_ATTEMPTS
                and not self._closer_holder(entry)
            ):
                # Still undelivered, nobody nearer the target took it, and we do not know
                # the target: our view of its neighbourhood may be thin (a young network,
                # churn). A lookup meets the nodes nearest to it; the next retry reaches
                # them. Never for our own record (its target is us): our neighbourhood is
                # what joining, waking and refreshes look up already, and each self-lookup
                # ends in a Fetch and the record offered to all it met (docs/PROTOCOL.md,
                # "7.2 Message ids and relaying", "8a.3 Storing and relaying").
                self.lookup(entry.target, now)
        entry.attempts += 1
        self._reschedule(entry, now + self._retry_delay(entry))

    def _retry_delay(self, entry: Entry) -> float:
        """How long after an attempt the next one comes: doubling from ``backoff_base_s``
        with each attempt made, up to ``backoff_max_s``."""
        doublings = max(entry.attempts - 1, 0)
        return min(self.config.backoff_max_s, self.config.backoff_base_s * 2.0**doublings)

    def _push_to_attached(self, entry: Entry, now: float) -> None:
        """A message for a client attached to us goes to it at once, at every attempt
        until its receipt makes it a holder (docs/PROTOCOL.md, "12.4")."""
        if entry.kind is not Kind.MESSAGE or entry.target in entry.holders:
            return
        client = self._reachability.attached.get(entry.target, now)
        if client is not None:
            self._stats.pushed_to_clients += 1
            self._send_item(entry, client.key, client.endpoint, now, budgeted=True)

    def _reschedule(self, entry: Entry, when: float) -> None:
        entry.next_at = when
        heapq.heappush(self._schedule, (when, entry.key))
        self._store.touch(entry, bookkeeping=True)

    def _next_hops(self, entry: Entry) -> list[NodeEntry]:
        """Who should get this item now (``ours``), or the k nearest (``flood``).

        - The sender of a text sends every attempt in the stem (``_relay``); only
          with no peer to stem to does it send to its nearest to the recipient, more
          of them on every retry until the ack comes.
        - An ack goes back to the nodes that handed us or hold its message
          (``_ack_hops``, docs/PROTOCOL.md, "7.3 Acks").
        - A relay in the target's neighbourhood replicates to a few of its
          neighbours, the target itself included when it is online.
        - A relay further away forwards to a few nodes closer than itself, and
          stops once a closer node holds the item: the item made progress.
        """
        if entry.kind is Kind.ACK:
            return self._ack_hops(entry)
        k = self.config.k
        # A record is never sent to its owner, who is nearest its own address.
        owner = (entry.target,) if entry.kind is Kind.RECORD else ()
        closest = self._table.closest(entry.target, k, exclude=owner)
        if self.config.policy == "flood":
            return [n for n in closest if n.address != entry.origin]
        fanout = min(k, self.config.sender_fanout + entry.attempts)
        if entry.own_text_id:
            return self._with_target(closest[:fanout], entry, skip_holders=False)
        # A message that came in the stem was handed to us by a random peer: its holding
        # it is no progress toward the target, so our first relay of it out of the stem
        # goes out whoever holds it.
        leaving_stem = entry.stem and entry.attempts == 0
        # Distances to the target, computed once: ours, and each hop's from its address.
        target_int = int.from_bytes(entry.target, "big")
        ours = self._address_int ^ target_int
        if entry.kind is Kind.RECORD:
            # Its owner is left out of ``closest`` but counts among the nearest.
            among_closest = self._table.is_among_closest(self.address, entry.target, k)
        else:
            # ``closest`` holds the k nearest usable nodes: we are among the k nearest
            # unless the k-th of them is nearer than we are (routing.is_among_closest).
            among_closest = len(closest) < k or closest[k - 1].address_int ^ target_int > ours
        if among_closest:
            if (
                entry.attempts == 0
                and not leaving_stem
                and entry.origin
                and self._closer_than_us(entry.origin, entry.target)
            ):
                # A closer neighbour replicated this to us and handed it to the target
                # itself; we only keep a replica until our first retry.
                return []
            return self._with_target(closest[: self.config.replicas], entry)
        if not leaving_stem and self._closer_holder(entry):
            return []
        closer = [n for n in closest if n.address_int ^ target_int < ours] or closest
        return self._with_target(
            closer[: min(k, self.config.transit_fanout + entry.attempts)], entry
        )

    def _stem_peer(self, entry: Entry) -> NodeEntry | None:
        """One random peer of our table for a stem forward, or None if there is none.

        Neither the node that handed us the item nor its target: the target gets it
        from the sender directly, and a walk back is a wasted hop.
        """
        peers = [
            n
            for n in self._table
            if n.address not in (entry.origin, entry.target) and n.failures == 0
        ]
        return self._rng.choice(peers) if peers else None

    @staticmethod
    def _ack_owed(entry: Entry) -> set[bytes]:
        """Addresses an ack still goes back to (docs/PROTOCOL.md, "7.3 Acks"): the peer
        that handed us the message and the other holders of the message, until each
        holds the ack."""
        back = {address_of(entry.origin_key)} if entry.origin_key else set()
        return (back | entry.notify) - entry.holders

    def _ack_hops(self, entry: Entry) -> list[NodeEntry]:
        """The nodes owed an ack that we can reach: the peer that handed us the message,
        at the endpoint it spoke from, and the other holders that are in our table."""
        owed = self._ack_owed(entry)
        hops: list[NodeEntry] = []
        back = address_of(entry.origin_key) if entry.origin_key else b""
        if back in owed and entry.origin_endpoint is not None:
            hops.append(NodeEntry(entry.origin_key, back, entry.origin_endpoint, 0.0, 0.0))
        for address in sorted(owed - {back}):
            node = self._table.get(address)
            if node is not None:
                hops.append(node)
        return hops

    def _closer_holder(self, entry: Entry) -> bool:
        """Does a node nearer the target than we are hold this item (it made progress)?

        Not the peer that handed it to us: a message needs no validated address, so a key
        ground near the target that hands far relays an item first would make each of them
        a dead end. Only a holder we sent it to, which answered, shows progress
        (docs/PROTOCOL.md, "7.2")."""
        origin = entry.origin
        return any(h != origin and self._closer_than_us(h, entry.target) for h in entry.holders)

    def _closer_than_us(self, address: bytes, target: bytes) -> bool:
        """Is ``address`` nearer ``target`` (XOR) than we are: progress toward it?"""
        target_int = int.from_bytes(target, "big")
        return int.from_bytes(address, "big") ^ target_int < self._address_int ^ target_int

    def _with_target(
        self, hops: list[NodeEntry], entry: Entry, *, skip_holders: bool = True
    ) -> list[NodeEntry]:
        """``hops``, with the target itself first whenever we know it (even if it looked dead).

        Besides our table, a recipient of our own texts that a lookup met in person.
        """
        known = self._table.get(entry.target)
        direct = [known] if known is not None and entry.kind is not Kind.RECORD else []
        punched = self._punch.hop(entry.target) if entry.own_text_id else None
        if punched is not None:
            # A punched pair (docs/PROTOCOL.md, "12.6"): the contact answers there.
            direct = [NodeEntry(punched[0], entry.target, punched[1], 0.0, 0.0)]
        elif not direct and entry.own_text_id:
            direct = list(self._direct.get(entry.target, {}).values())
        chosen = direct + [n for n in hops if n not in direct]
        if skip_holders:
            chosen = [n for n in chosen if n.address not in entry.holders]
        return chosen

    def _send_item(
        self,
        entry: Entry,
        key: bytes,
        endpoint: Endpoint,
        now: float,
        *,
        stem: bool = False,
        budgeted: bool = False,
    ) -> None:
        """Send one stored item. An item for others is paid from the relay bandwidth
        (docs/PROTOCOL.md, "8.1 Local caps"): ``budgeted`` says the caller (``_relay``)
        checked the balance for the whole attempt; otherwise (a push on Attach or Fetch,
        a newer record handed back) it is skipped while the balance is spent, and goes at
        the item's next retry or the peer's next Attach or Fetch. A relay attempt
        (``budgeted``) also skips a peer still within its receipt wait for the item."""
        address = address_of(key)
        ours = self.config.policy == "ours"
        if (
            budgeted
            and ours
            and self._receipt_waits.awaiting(address, entry.key, now, entry, endpoint)
        ):
            # docs/PROTOCOL.md, "7.2", "Receipt wait": a relay attempt skips a peer whose
            # receipt may still come; a copy now would be a duplicate (a late receipt is
            # not a lost item). Answers (an ack for a copy, a push on Fetch) still go.
            self._stats.resends_held += 1
            return
        if entry.for_others and not budgeted and not self._relay_bandwidth.open(now):
            self._stats.relay_deferred += 1
            return
        body, plaintext = self._item_frame(entry, stem)
        if body == "message":
            self._stats.messages_relayed += 0 if entry.own_text_id else 1
        elif body == "ack":
            self._stats.acks_relayed += 1
        if entry.for_others:
            self._relay_bandwidth.spend(len(plaintext), now)
        self._send_encoded(key, endpoint, body, plaintext, now)
        self._punch.used(address, now)
        if ours:
            # Per-peer memory only for a proven pair: an answer to a copy from a forged
            # source must not evict what honest peers' receipts taught us (receipts.py).
            tracked = self._is_validated(key, endpoint, address)
            self._receipt_waits.sent(address, entry.key, now, entry, endpoint, tracked=tracked)

    def _item_frame(self, entry: Entry, stem: bool) -> tuple[str, bytes]:
        """The kind and serialized ``Frame`` carrying ``entry`` (a message with ``stem``
        set as asked; no client flag).

        The last one is kept: an attempt sends the same frame to every hop, and building
        it (a copy of a 1,061-byte payload through two message objects) cost more than
        boxing it. Only one, so the store's memory is not doubled by cached frames.
        """
        cached = self._last_frame
        if cached is not None and cached[0] is entry and cached[1] == stem:
            return cached[2], cached[3]
        wire = entry.wire
        if isinstance(wire, pb.Message):
            body = "message"
            if wire.stem == stem:
                # As stored: ``Frame{message}`` is the message's bytes behind their tag and
                # length, as protobuf writes it (tests/test_relay_path.py compares).
                inner = wire.SerializeToString()
            else:
                msg = pb.Message()
                msg.CopyFrom(wire)
                msg.stem = stem
                inner = msg.SerializeToString()
            plaintext = _MESSAGE_FRAME_TAG + varint(len(inner)) + inner
        elif isinstance(wire, pb.Ack):
            body = "ack"
            plaintext = pb.Frame(ack=wire).SerializeToString()
        else:
            body = "record"
            plaintext = pb.Frame(record=pb.Record(bundle=wire)).SerializeToString()
        self._last_frame = (entry, stem, body, plaintext)
        return body, plaintext

    def _copy_held(self, entry: Entry, holder: bytes, now: float) -> None:
        """A peer handed us a copy of an item we hold: a holder only if we sent it that
        item (its receipt wait open, or lately timed out), as for a receipt. Handing us a
        copy costs a colluder no more than naming its id, so Sybils given the bytes must
        not stop its replication by it either (docs/PROTOCOL.md, "7.2", "Receipt wait")."""
        if self._receipt_waits.received(holder, entry.key, now):
            self._add_holder(entry, holder, now)

    def _add_holder(self, entry: Entry, holder: bytes, now: float) -> None:
        if holder in entry.holders:
            return
        entry.holders.add(holder)
        entry.first_held_at = entry.first_held_at or now
        if entry.kind is Kind.ACK and not self._ack_owed(entry):
            entry.settled = True
        self._store.touch(entry, bookkeeping=True)
        if entry.own_text_id:
            self._outbox_moved(self._outgoing.part_held(entry.own_text_id, self._part_held))

    def _push_waiting(self, address: bytes, key: bytes, endpoint: Endpoint, now: float) -> None:
        """Hand a node that (re)joined everything we hold for it (not in the seed's rule)."""
        if self.config.policy == "flood":
            return
        # Messages for it, and acks that go back to it (a sender that was offline).
        waiting = [e for e in self._store.for_target(address) if e.kind is Kind.MESSAGE]
        waiting += [e for e in self._store.acks_back_to(address) if not e.settled]
        awaiting = self._receipt_waits.awaiting
        for entry in waiting[:FETCH_ITEMS_MAX]:
            # Not again while its receipt is awaited: a node fetching fast, never sending
            # receipts, would spend the relay bandwidth every item shares on pushes to
            # itself (docs/PROTOCOL.md, "7.2").
            if address not in entry.holders and not awaiting(
                address, entry.key, now, entry, endpoint
            ):
                self._stats.pushed_on_join += 1
                self._send_item(entry, key, endpoint, now)

    # ------------------------------------------------------------------ outbox

    def _own_entries(self, text_id: bytes | None = None) -> list[Entry]:
        """The stored parts of our texts not yet acknowledged (of ``text_id`` only, if given)."""
        text_ids = list(self._outgoing) if text_id is None else [text_id]
        return [
            entry
            for tid in text_ids
            for pid in self._outgoing.parts(tid)
            if (entry := self._store.get(Kind.MESSAGE, pid)) is not None
        ]

    def _part_held(self, part_id: bytes) -> bool:
        """Does a peer hold this part of ours (the outbox's "sent" test)?"""
        entry = self._store.get(Kind.MESSAGE, part_id)
        return entry is not None and bool(entry.holders)

    def _outbox_moved(self, change: TextStateChanged | None) -> None:
        """Report a move of the outbox's state machine (protocol/outbox.py), if any."""
        if change is None:
            return
        if change.state is OutboxState.DELIVERED:
            self._stats.texts_delivered += 1
        self._events.append(change)

    # ------------------------------------------------------------------ queries and lookups

    def _send_hello(self, endpoint: Endpoint, now: float) -> None:
        challenge = os.urandom(CHALLENGE_BYTES)
        self._hellos[challenge] = (endpoint, now + QUERY_TIMEOUT_S)
        self._emit(
            self._codec.encode_hello(challenge, cookie=self._cookie_for(endpoint, now)),
            endpoint,
            now,
        )

    def _own_queries_full(self) -> bool:
        """Only our own queries are in the table: peers can make us send a challenge,
        never take a slot."""
        return len(self._queries) >= PENDING_QUERIES_MAX

    def _ping(self, key: bytes, endpoint: Endpoint, now: float) -> None:
        if self._own_queries_full():
            return
        challenge = os.urandom(CHALLENGE_BYTES)
        self._queries[challenge] = _Query("ping", key, endpoint, now + QUERY_TIMEOUT_S)
        frame = pb.Frame(ping=pb.Ping(challenge=challenge))
        if not self._send_frame(key, endpoint, frame, now, probe=True):
            del self._queries[challenge]

    def _advance_lookup(self, lookup: Lookup, now: float) -> None:
        for path, candidate in lookup.next_queries():
            if self._own_queries_full():
                lookup.on_timeout(path, candidate)
                continue
            query_id = os.urandom(CHALLENGE_BYTES)
            self._queries[query_id] = _Query(
                "find_node",
                candidate.key,
                candidate.endpoint,
                now + QUERY_TIMEOUT_S,
                lookup=lookup,
                path=path,
                candidate=candidate,
            )
            # A node outside our table may not have validated us: padded, its answer
            # comes at once (docs/PROTOCOL.md, "5.1", "First contact").
            padding = (
                b""
                if self._in_table(candidate.key, candidate.endpoint, candidate.address)
                else FIND_NODE_PADDING
            )
            frame = find_node_frame(query_id, lookup.target, padding)
            self._send_encoded(
                candidate.key, candidate.endpoint, "find_node", frame, now, probe=True
            )
        if lookup.done:
            self._lookup_finished(lookup, now)

    def _lookup_finished(self, lookup: Lookup, now: float) -> None:
        self._directory.lookup_finished(lookup, now)
        self._punch_lookup_finished(lookup, now)
        if lookup.target != self.address or (self.joined and lookup.queries_sent == 0):
            return
        first_join = not self.joined
        self.joined = True
        # Joined: ask our neighbourhood for whatever waits for us (the seed only waited).
        if self.config.policy == "ours":
            for candidate in lookup.result():
                fetch_frame = pb.Frame(fetch=pb.Fetch())
                self._send_frame(candidate.key, candidate.endpoint, fetch_frame, now)
            self._directory.offer_own_record(lookup.result(), now)
        if first_join:
            # The self-lookup only fills the buckets near us; refresh every bucket once so
            # we also know the far half of the network (Kademlia paper, section 2.3).
            for target in self._table.buckets_needing_refresh(now, 0.0, self._rng):
                self.lookup(target, now)

    def _expire_queries(self, now: float) -> None:
        """Time out what is overdue; each dict is in deadline order: stop at the first not due."""
        while self._queries:
            query_id, query = next(iter(self._queries.items()))
            if query.deadline > now:
                break
            del self._queries[query_id]
            self._peer_failed(address_of(query.peer_key), now)
            if query.lookup is not None and query.candidate is not None:
                query.lookup.on_timeout(query.path, query.candidate)
                self._advance_lookup(query.lookup, now)
            elif query.kind == "get_record":
                self._directory.record_query_ended(query.record_for)
        while self._deferred:
            key, waiting = next(iter(self._deferred.items()))
            if waiting.deadline > now:
                break
            # The address never answered: whoever wrote it may not own it, so nothing
            # counts against anyone; the requests are dropped.
            del self._deferred[key]
        while self._hellos:
            challenge, (_, deadline) = next(iter(self._hellos.items()))
            if deadline > now:
                break
            del self._hellos[challenge]
        for address in self._receipt_waits.overdue(now):
            self._check_alive(address, now)

    def _check_alive(self, address: bytes, now: float) -> None:
        """A receipt wait of ``address`` ran out: ping it where we route to it, and let
        only the ping's timeout count (docs/PROTOCOL.md, "7.2", "Receipt wait").

        A wait that runs out is about the item: a node refuses junk, and honest items
        over its caps, without a receipt (spec 8.1), so counting it as a failure made
        any node "bad" at a relay handed three junk messages addressed to it, and out
        of the relay's table. The item's own retries go on as before. No ping while one
        to the peer is out or the peer was heard from lately, and none to a peer we do
        not route to (the origin of a message we send the ack back to): nothing counts
        against it anyway."""
        checks = self._alive_checks
        while checks:
            first, deadline = next(iter(checks.items()))
            if deadline > now:
                break
            del checks[first]
        if address in checks or len(checks) >= ALIVE_CHECKS_MAX:
            return
        known = self._table.get(address)
        if known is not None and now - known.last_seen < ALIVE_HEARD_S:
            return
        at = self._punch.hop(address)
        if at is None and known is not None:
            at = (known.key, known.endpoint)
        if at is None:
            for met in self._direct.get(address, {}).values():
                at = (met.key, met.endpoint)
                break
        if at is not None and not self._own_queries_full():
            checks[address] = now + QUERY_TIMEOUT_S
            self._ping(at[0], at[1], now)

    def _peer_failed(self, address: bytes, now: float) -> None:
        """A query went unanswered: count it; the table may drop the node."""
        self._direct.pop(address, None)
        self._punch.drop(address)
        removed = self._table.record_failure(address, now)
        if removed is not None:
            self._peer_removed(removed.key, now)

    def _peer_removed(self, key: bytes, now: float) -> None:
        """A node left our table: its boxes may be evicted again, and the driver is told."""
        self._proven = None
        self._codec.unpin(key, now)
        self._events.append(PeerRemoved(key))

    def _housekeeping(self, now: float) -> None:
        for entry in self._store.expire(_ms(now)):
            self._stats.expired += 1
            if entry.own_text_id:
                self._outbox_moved(self._outgoing.part_expired(entry.own_text_id))
        self._reassembler.expire(now)
        self._reachability.attached.expire(now)
        self._prekeys.maintain(now)
        self._sessions.expire(now)
        self._directory.housekeeping(now)
        if len(self._table):
            for target in self._table.buckets_needing_refresh(
                now, self.config.refresh_interval_s, self._rng
            ):
                self.lookup(target, now)

    # ------------------------------------------------------------------ output

    def _owe_receipt(self, key: bytes, endpoint: Endpoint, item: bytes, now: float) -> None:
        """Owe ``key`` at ``endpoint`` a receipt for ``item``: it goes with every other id
        owed that pair, as one Receipt, when ``ReceiptsOwed`` says (docs/PROTOCOL.md, "4.
        Frames", "Receipts wait at most 25 ms"): at the end of the pump for a quiet pair
        (``datagrams_to_send``), at ``handle_timer`` for a busy one, at once when full."""
        if self.config.policy != "ours":
            return
        receipts = self._receipts.owe(key, endpoint, item, now)
        if receipts:
            self._send_receipts(receipts, now)

    def _send_quick_receipts(self) -> None:
        """Send the Receipts owed quiet pairs in this pump, as of its last datagram."""
        self._proven = None  # an entry point: the table may have changed since
        now, receipts = self._receipts.take_quick()
        self._send_receipts(receipts, now)

    def _send_receipts(self, receipts: Sequence[Receipt], now: float) -> None:
        """Box and queue each Receipt ``ReceiptsOwed`` handed out."""
        for receipt in receipts:
            frame = receipt_frame(receipt.ids)
            self._send_encoded(receipt.key, receipt.endpoint, "receipt", frame, now)

    def _send_frame(
        self,
        key: bytes,
        endpoint: Endpoint,
        frame: pb.Frame,
        now: float,
        *,
        probe: bool = False,
        count_withheld: bool = True,
    ) -> bool:
        """Box and queue a frame; False if the anti-amplification limit held it back.

        To an endpoint not validated for ``key``, we send at most 3x what it sent us
        (``admission``). ``probe`` marks requests we start on our own (lookups, pings of
        known nodes), which the query table bounds instead. ``count_withheld``: False
        when the caller has another way (a first contact's FindNode is validated first).
        """
        frame.ClearField("client")  # _send_encoded adds it for a client
        body = frame.WhichOneof("body") or ""
        return self._send_encoded(
            key,
            endpoint,
            body,
            frame.SerializeToString(),
            now,
            probe=probe,
            count_withheld=count_withheld,
        )

    def _send_encoded(
        self,
        key: bytes,
        endpoint: Endpoint,
        body: str,
        plaintext: bytes,
        now: float,
        *,
        probe: bool = False,
        count_withheld: bool = True,
    ) -> bool:
        """``_send_frame`` for a frame already serialized (``body`` is its kind), without
        its client flag: the relay path writes its frames as bytes (``receipt_frame``,
        ``_item_frame``). A client's flag goes last, where protobuf writes field 20."""
        if self._reachability.client:
            plaintext += CLIENT_FLAG  # docs/PROTOCOL.md, "12.3": keep us out of tables
        cookie = self._cookie_for(endpoint, now) if self._peer_cookies else b""
        try:
            data = self._codec.seal(key, plaintext, now, cookie=cookie)
        except ValueError:
            # A key that is no curve point, or a frame too large: nothing a peer sends
            # can produce either (both are checked on receipt); counted, never raised.
            self._stats.unsendable += 1
            return False
        if (
            not probe
            and not self._is_validated(key, endpoint)
            and not self._addresses.spend(key, endpoint, len(data))
        ):
            self._stats.withheld += count_withheld
            return False
        self._stats.sent_by_kind[body] += 1
        # Only what we start (requests, items) is remembered for a cookie reply: a node
        # that is sent our replies knows our key already, and counting replies would let
        # a peer flush the memory by making us answer.
        remember = body in _REMEMBERED_FOR_COOKIES and not self._established(key)
        self._emit(data, endpoint, now, remember=remember, receipt=body == "receipt")
        return True

    def _cookie_for(self, endpoint: Endpoint, now: float) -> bytes:
        """The cookie ``endpoint`` gave us while under load, while it is still good."""
        cookie = self._peer_cookies.get(endpoint)
        if cookie is None or now - cookie[1] >= COOKIE_ROTATE_S:
            return b""
        return cookie[0]

    def _emit(
        self,
        data: bytes,
        endpoint: Endpoint,
        now: float,
        *,
        remember: bool = True,
        receipt: bool = False,
    ) -> None:
        """Queue a datagram (a ``receipt`` apart, ``receipts_to_send``); ``remember`` it
        (bounded) so a cookie reply can name it.

        Every destination is noted (by what a NAT filters on), so a dial-back probe from
        it later proves nothing (docs/PROTOCOL.md, "12.2").
        """
        self._reachability.sent(endpoint, now)
        if remember:
            self._sent[echo_of(data)] = (endpoint, data)
            if len(self._sent) > SENT_REMEMBERED:
                self._sent.popitem(last=False)
        self._stats.datagrams_out += 1
        self._stats.bytes_out += len(data)
        if receipt and self._receipts_out is not None:
            self._receipts_out.append((data, endpoint))
        else:
            self._outbox.append((data, endpoint))

    def _flush_received(self) -> None:
        """``_flush_store`` for the datagrams received since the last drain, at the drain
        (``drain_events``, ``next_event``): a pump of many datagrams hands over one
        ``StoreChanged``. Only then: a drain before any datagram (the driver's first pump,
        before ``restore_sessions``) must not hand over the prekeys made at construction."""
        self._received_unflushed = False
        self._flush_store()

    def _flush_store(self) -> None:
        """Hand the driver what changed in the store and the sessions since the last call,
        as one ``StoreChanged`` and one ``SessionsChanged`` (none when nothing did). Called
        by the commands and ``handle_timer`` as they end, and at the drain for the
        datagrams received since (docs/PROTOCOL.md, "8.2 Local durability")."""
        store = self._store
        if store.dirty or store.deleted:
            self._events.append(store.take_changes())
        if self._sessions.changed or self._prekeys.dirty:
            changed = self._sessions.take_changes()
            prekeys = self._prekeys.serialize() if self._prekeys.dirty else None
            self._prekeys.dirty = False
            self._events.append(SessionsChanged(changed, prekeys))

    def _session_lost(self, peer: PublicIdentity, now: float) -> None:
        """A letter that names ``peer`` opens in none of our sessions: start a new one.

        docs/PROTOCOL.md, "Session reset". The sender named inside is not authenticated,
        so this is rate-limited per named peer and for the whole node.
        """
        last = self._handshakes.get(peer.key)
        if last is not None and now - last < HANDSHAKE_INTERVAL_S:
            return
        if not self._handshake_bucket.take(now):
            return
        self._handshakes[peer.key] = now
        self._handshakes.move_to_end(peer.key)
        while len(self._handshakes) > HANDSHAKE_PEERS_MAX:
            self._handshakes.popitem(last=False)
        self._stats.handshakes_sent += 1
        text_id = os.urandom(TEXT_ID_BYTES)
        letter = encode_letter(text_id, 0, 1, _ms(now), b"")
        self._send_letters(peer, text_id, [letter], now, handshake=True)


# The longest an item may still live when it reaches us: a sender's TTL and its clock's skew.
_LONGEST_LIFE_MS = int((MAX_TTL_S + MAX_CLOCK_SKEW_S) * 1000)


def _check_expiry(expires_ms: int, now: float) -> None:
    """Items must still be alive, live no longer than a sender may ask (plus skew), and
    expire on a whole hour (docs/PROTOCOL.md, "7.2"): a finer expiry would date the text."""
    if expires_ms % EXPIRY_UNIT_MS:
        raise Rejected("fine_expiry")
    now_ms = _ms(now)
    if expires_ms <= now_ms:
        raise Rejected("expired")
    if expires_ms > now_ms + _LONGEST_LIFE_MS:
        raise Rejected("ttl_too_long")
