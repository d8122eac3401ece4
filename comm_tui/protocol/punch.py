"""Hole punching between two contacts behind NATs (docs/PROTOCOL.md, "12.6 Hole punching").

Two contacts A and B, each reachable only through relays, ask a relay R that both can
reach to introduce them, as Tox does through a friend's close nodes (toxcore
``DHT.c``, ``handle_nat_ping`` / ``punch_holes``). The introduction needs **both**
sides' consent, so no stranger learns anyone's address:

1. A sends R ``Introduce{target=B's address, nonce}``. R, which has B attached (or in
   its table), holds the request for ``RELAY_WAIT_S`` and sends B a *notice*,
   ``Introduced{key=A}``: "A asks to meet you". It names no endpoint.
2. B, if A is one of its contacts and the notice came from a relay of its own table,
   asks R in turn: ``Introduce{target=A's address, nonce'}``.
3. R now holds a request from each for the other: it answers each with the other's
   key and endpoint as R observes it, ``Introduced{key, ip, port, nonce}``.
4. Each side pings the endpoint it was given on a short schedule; the first pong that
   comes back authenticated from that endpoint makes the pair *punched*: the node
   sends texts for that contact straight there, keeps the pair alive with a ping per
   ``PUNCH_KEEPALIVE_S`` of silence while texts flow (and ``PUNCH_LINGER_S`` after),
   then lets it go. A pair that falls silent is dropped; texts go through relays again.

This module holds the state and the decisions; ``Node`` owns the sockets' view (who
is validated, who is in the table) and sends what the methods here return. Every
table is bounded, per origin and in all, and every refusal raises ``Rejected``.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from comm_tui.crypto.identity import ADDRESS_BYTES, address_of, is_valid_public_key
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES, wide_network
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.ratelimit import RateLimiter, TokenBucket
from comm_tui.protocol.reachability import canonical, probe_target_allowed
from comm_tui.protocol.routing import Endpoint, origin_network

NONCE_BYTES = 16
# An Introduce carries at least this much padding, so that the answer it gets
# (an Introduced with a key, an IPv6 address, a port and the nonce) is never larger than
# the request (docs/PROTOCOL.md, "Admission").
INTRODUCE_PADDING = 40
# Pings of one attempt, in seconds after it starts (the answers reach both sides within
# a round trip of each other; the first pings open our own NAT, the later ones cross).
PUNCH_SCHEDULE_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# An attempt that got no pong this long after it started has failed.
PUNCH_ATTEMPT_S = 6.0
# Endpoints one attempt pings: one per relay that answered, and ones the peer's own
# authenticated pings came from (a peer-reflexive candidate, as in ICE, RFC 8445 §7.3.1.3).
PUNCH_ENDPOINTS_MAX = 4
# Attempts in progress at once, node-wide.
PUNCH_ATTEMPTS_MAX = 16
# A contact we want to reach directly: relays asked per round, rounds, and the delay
# before the next round (doubling); after the last round, or an attempt whose pings got
# no pong, we give up on it for a while.
PUNCH_RELAYS_PER_ROUND = 3
PUNCH_ROUNDS = 5
PUNCH_RETRY_S = 5.0
PUNCH_GIVE_UP_S = 600.0
PUNCH_WANTS_MAX = 64
# Our own Introduce requests awaiting an answer (the relay waits RELAY_WAIT_S for the
# other side, so we wait a little longer).
INTRODUCE_TIMEOUT_S = 6.0
PENDING_INTRODUCTIONS_MAX = 64
# Introductions we start for one contact (our rounds): a burst, then one a minute; and
# for the whole node. Notices have budgets of their own (below): what others make us
# ask must never spend what our own rounds need.
PEER_INTRODUCTIONS_BURST = 6.0
PEER_INTRODUCTIONS_PER_S = 1 / 60
NODE_INTRODUCTIONS_BURST = 32.0
NODE_INTRODUCTIONS_PER_S = 1.0
# Notices we answer, checked in this order: from relays of one network of origin, of one
# wide network (docs/PROTOCOL.md, "5.2"), and node-wide. A hostile node of our table may
# name each of our contacts (their keys are no secret), or one contact over and over: a
# budget per contact would let it spend an honest relay's notices for that contact, so
# there is none; and the node-wide budget is 32 networks' bursts and 60 networks' rates,
# so that a few networks cannot leave an honest notice unanswered.
NOTICES_PER_NETWORK_BURST = 2.0
NOTICES_PER_NETWORK_PER_S = 1 / 15
NOTICES_PER_WIDE_NETWORK_BURST = 4.0
NOTICES_PER_WIDE_NETWORK_PER_S = 2 / 15
NODE_NOTICES_BURST = 64.0
NODE_NOTICES_PER_S = 4.0
# Punched pairs kept (least recently used forgotten first), the silence after which we
# ping to keep the NATs' mappings open (the side with the higher address waits longer,
# so that only one side pings), the silence after which the pair is dead, and how long
# a pair is kept after the last text over it.
PUNCHED_PAIRS_MAX = 64
PUNCH_KEEPALIVE_S = 15.0
PUNCH_KEEPALIVE_BACKUP_S = 5.0
PUNCH_DEAD_S = 3 * PUNCH_KEEPALIVE_S + 2.0
PUNCH_LINGER_S = 300.0
# Relay side: requests held until the other side asks too, in all; how long; and the
# rates per requester key, per requester's network of origin, per requester's wide
# network (docs/PROTOCOL.md, "5.2"), per target address and requester's network, and
# node-wide. Keys are free and networks are not: without the bounds per network, fresh
# keys from one host spent the node's budget (and a target's) for everyone. The node's
# budget is 64 networks' bursts and rates (32 wide networks'): with 2/s and burst 8 per
# network of a node budget of 20/s and 40, ten networks spent it and no honest contact
# was introduced meanwhile.
RELAY_WAITING_MAX = 256
RELAY_WAIT_S = 5.0
RELAY_RATE_PER_S = 0.5
RELAY_BURST = 4.0
RELAY_NETWORK_RATE_PER_S = 1.0
RELAY_NETWORK_BURST = 4.0
RELAY_WIDE_NETWORK_RATE_PER_S = 2.0
RELAY_WIDE_NETWORK_BURST = 8.0
RELAY_NODE_RATE_PER_S = 64.0
RELAY_NODE_BURST = 256.0
RELAY_LIMITER_KEYS = 4096


@dataclass(frozen=True)
class Send:
    """A frame the node is to box and send (``probe``: a request of our own, bounded by
    the tables here rather than by the endpoint's anti-amplification credit)."""

    key: bytes
    endpoint: Endpoint
    frame: pb.Frame
    probe: bool = False


@dataclass
class _Want:
    """A contact we have a text for and would reach directly (its key is the contact
    list's: ``contacts``)."""

    rounds: int = 0
    next_at: float = 0.0


@dataclass(frozen=True)
class _Asked:
    """An Introduce of ours: answered only by that relay, about that target."""

    relay_key: bytes
    target: bytes
    deadline: float


@dataclass
class _Attempt:
    """Pings in progress to a contact: a challenge per endpoint we were given."""

    key: bytes
    started: float
    sent: int  # pings of PUNCH_SCHEDULE_S sent so far
    endpoints: dict[Endpoint, bytes] = field(default_factory=dict)


@dataclass
class _Pair:
    """A punched pair: the contact answers at ``endpoint``."""

    key: bytes
    endpoint: Endpoint
    challenge: bytes
    last_heard: float
    last_used: float
    last_ping: float


@dataclass(frozen=True)
class _Waiting:
    """Relay side: a validated requester who asked to meet a target."""

    key: bytes
    endpoint: Endpoint
    ip: bytes  # the endpoint's address, packed (4 or 16 bytes)
    nonce: bytes
    deadline: float


def _ip_bytes(endpoint: Endpoint) -> bytes | None:
    host = endpoint[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_pton(family, host)
    except OSError:
        return None


def _endpoint_of(ip: bytes, port: int) -> Endpoint | None:
    if len(ip) not in (4, 16) or not 0 < port < 65536:
        return None
    family = socket.AF_INET if len(ip) == 4 else socket.AF_INET6
    return canonical((socket.inet_ntop(family, ip), port))  # ::ffff:a.b.c.d is a.b.c.d


def _ping(key: bytes, endpoint: Endpoint, challenge: bytes) -> Send:
    return Send(key, endpoint, pb.Frame(ping=pb.Ping(challenge=challenge)), probe=True)


class Punching:
    """What one node knows and decides about hole punching (both roles: ends and relay)."""

    def __init__(self, own_key: bytes, now: float) -> None:
        self.own_key = own_key
        self.own_address = address_of(own_key)
        # Contacts by address: only they may make us ask, answer or ping.
        self.contacts: dict[bytes, bytes] = {}
        self.wants: OrderedDict[bytes, _Want] = OrderedDict()
        self.given_up: OrderedDict[bytes, float] = OrderedDict()  # address -> until
        self.asked: OrderedDict[bytes, _Asked] = OrderedDict()  # by nonce
        self.attempts: OrderedDict[bytes, _Attempt] = OrderedDict()  # by address
        self.pairs: OrderedDict[bytes, _Pair] = OrderedDict()  # by address
        self.waiting: OrderedDict[tuple[bytes, bytes], _Waiting] = OrderedDict()
        # ``next_due``'s answer, None once any deadline above may have changed: the node
        # asks for its timer after every datagram, and walking these tables each time
        # was a measurable part of a lookup query (bench/RESULTS.md, "fifth session").
        # Every change to a deadline-bearing table goes through ``_changed``.
        self._due: float | None = None
        self._peer_budget = RateLimiter(
            PEER_INTRODUCTIONS_PER_S, PEER_INTRODUCTIONS_BURST, RELAY_LIMITER_KEYS
        )
        self._node_budget = TokenBucket(
            NODE_INTRODUCTIONS_PER_S, NODE_INTRODUCTIONS_BURST, NODE_INTRODUCTIONS_BURST, now
        )
        self._notices_by_network = RateLimiter(
            NOTICES_PER_NETWORK_PER_S, NOTICES_PER_NETWORK_BURST, RELAY_LIMITER_KEYS
        )
        self._notices_by_wide_network = RateLimiter(
            NOTICES_PER_WIDE_NETWORK_PER_S, NOTICES_PER_WIDE_NETWORK_BURST, RELAY_LIMITER_KEYS
        )
        self._notices_budget = TokenBucket(
            NODE_NOTICES_PER_S, NODE_NOTICES_BURST, NODE_NOTICES_BURST, now
        )
        self._by_requester = RateLimiter(RELAY_RATE_PER_S, RELAY_BURST, RELAY_LIMITER_KEYS)
        self._by_target = RateLimiter(RELAY_RATE_PER_S, RELAY_BURST, RELAY_LIMITER_KEYS)
        self._by_network = RateLimiter(
            RELAY_NETWORK_RATE_PER_S, RELAY_NETWORK_BURST, RELAY_LIMITER_KEYS
        )
        self._by_wide_network = RateLimiter(
            RELAY_WIDE_NETWORK_RATE_PER_S, RELAY_WIDE_NETWORK_BURST, RELAY_LIMITER_KEYS
        )
        self._relay_budget = TokenBucket(
            RELAY_NODE_RATE_PER_S, RELAY_NODE_BURST, RELAY_NODE_BURST, now
        )
        # Counters for stats and the status panel.
        self.introduced = 0  # relay side: pairs we introduced
        self.started = 0  # attempts started
        self.punched = 0  # attempts that got their pong
        self.failed = 0  # attempts that did not

    # ------------------------------------------------------------------ contacts

    def set_contacts(self, keys: Iterable[bytes]) -> None:
        """Replace the contact set; whatever concerned a former contact is forgotten."""
        self.contacts = {
            address_of(key): key
            for key in keys
            if len(key) == 32 and key != self.own_key and is_valid_public_key(key)
        }
        for table in (self.wants, self.attempts, self.pairs, self.given_up):
            for address in [a for a in table if a not in self.contacts]:
                del table[address]
        for nonce in [n for n, a in self.asked.items() if a.target not in self.contacts]:
            del self.asked[nonce]
        self._changed()

    # ------------------------------------------------------------------ asking side

    def want(self, address: bytes, now: float) -> None:
        """We hold an unacknowledged text for ``address`` and cannot reach it directly.

        The caller checked the rest (docs/PROTOCOL.md, "12.6": not in our table, not
        punched, we are not public); here: a contact, not given up on lately.
        """
        if address not in self.contacts or address in self.wants or address in self.pairs:
            return
        until = self.given_up.get(address)
        if until is not None:
            if now < until:
                return
            del self.given_up[address]
        self.wants[address] = _Want(next_at=now)
        while len(self.wants) > PUNCH_WANTS_MAX:
            self.wants.popitem(last=False)
        self._changed()

    def _ask(self, relay_key: bytes, relay: Endpoint, target: bytes, now: float) -> Send:
        """An Introduce of ours to ``relay`` about ``target`` (pending, bounded)."""
        nonce = os.urandom(NONCE_BYTES)
        self.asked[nonce] = _Asked(relay_key, target, now + INTRODUCE_TIMEOUT_S)
        while len(self.asked) > PENDING_INTRODUCTIONS_MAX:
            self.asked.popitem(last=False)
        self._changed()
        frame = pb.Frame(
            introduce=pb.Introduce(target=target, nonce=nonce, padding=bytes(INTRODUCE_PADDING))
        )
        return Send(relay_key, relay, frame)

    def _asking(self, relay_key: bytes, target: bytes) -> bool:
        return any(a.relay_key == relay_key and a.target == target for a in self.asked.values())

    def on_notice(self, relay_key: bytes, relay: Endpoint, key: bytes, now: float) -> list[Send]:
        """A relay of our table says ``key`` asks to meet us: ask it for them in turn.

        Only for a contact (``not_contact``: a stranger learns nothing of us, since only
        our own Introduce makes the relay hand out our endpoint), within the notices'
        budgets (``punch_rate``, see ``_answer_notice``). The caller checked that the
        relay is in our table at the endpoint it spoke from.
        """
        if len(key) != 32:
            raise Rejected("malformed")
        address = address_of(key)
        if self.contacts.get(address) != key:
            raise Rejected("not_contact")
        if address in self.pairs or address in self.attempts or self._asking(relay_key, address):
            return []  # already meeting them: a duplicate notice (another relay, a retry)
        if not self._answer_notice(relay, now):
            raise Rejected("punch_rate")
        return [self._ask(relay_key, relay, address, now)]

    def _answer_notice(self, relay: Endpoint, now: float) -> bool:
        """May we answer a notice from ``relay``? Per network of origin of the relay, per
        its wide network, node-wide, in that order (one refusing spends none of the later
        ones) (docs/PROTOCOL.md, "12.6"). Our own rounds draw on other budgets
        (``_spend``): notices never starve them."""
        return (
            self._notices_by_network.allow(origin_network(relay), now)
            and self._notices_by_wide_network.allow(wide_network(relay), now)
            and self._notices_budget.take(now)
        )

    def _spend(self, address: bytes, now: float) -> bool:
        """One round of ours for ``address``: within its budget and the node's."""
        return self._peer_budget.allow(address, now) and self._node_budget.take(now)

    def on_answer(
        self, relay_key: bytes, relay: Endpoint, introduced: pb.Introduced, now: float
    ) -> list[Send]:
        """The relay we asked gives us the contact's endpoint: start (or widen) an attempt.

        Only as the answer to a nonce of ours, from the relay it went to, naming the
        key of the address we asked about (``unsolicited``): a forged answer can make
        us ping nothing.
        """
        asked = self.asked.get(introduced.nonce)
        if asked is None or asked.relay_key != relay_key:
            raise Rejected("unsolicited")
        if address_of(introduced.key) != asked.target or len(introduced.key) != 32:
            raise Rejected("unsolicited")
        del self.asked[introduced.nonce]
        self._changed()
        endpoint = _endpoint_of(introduced.ip, introduced.port)
        if endpoint is None:
            raise Rejected("malformed")
        if not probe_target_allowed(endpoint, relay):
            # A relay may not aim our pings at our own machine or LAN from outside it.
            raise Rejected("bad_target")
        address = asked.target
        if self.contacts.get(address) != introduced.key or address in self.pairs:
            return []  # no longer a contact, or punched meanwhile by another answer
        attempt = self.attempts.get(address)
        if attempt is None:
            if len(self.attempts) >= PUNCH_ATTEMPTS_MAX:
                raise Rejected("punch_rate")
            # The first ping goes out below, at once: the schedule's first entry.
            attempt = self.attempts[address] = _Attempt(introduced.key, now, sent=1)
            self.started += 1
        return self._add_endpoint(attempt, endpoint)

    def _add_endpoint(self, attempt: _Attempt, endpoint: Endpoint) -> list[Send]:
        """Ping a new endpoint of an attempt now (it catches up with the schedule)."""
        if endpoint in attempt.endpoints or len(attempt.endpoints) >= PUNCH_ENDPOINTS_MAX:
            return []
        challenge = os.urandom(CHALLENGE_BYTES)
        attempt.endpoints[endpoint] = challenge
        return [_ping(attempt.key, endpoint, challenge)]

    def heard(self, address: bytes, endpoint: Endpoint, now: float) -> list[Send]:
        """An authenticated datagram came from ``address`` at ``endpoint``.

        It keeps a punched pair alive; during an attempt, an endpoint the contact
        speaks from that we were not given (its NAT gave it another port toward us
        than toward the relay) is pinged too, as a candidate.
        """
        pair = self.pairs.get(address)
        if pair is not None and pair.endpoint == endpoint:
            pair.last_heard = now
            self._changed()
        attempt = self.attempts.get(address)
        if attempt is None:
            return []
        return self._add_endpoint(attempt, endpoint)

    def pong(self, address: bytes, endpoint: Endpoint, challenge: bytes, now: float) -> bool:
        """Is this pong the answer to one of our punch or keep-alive pings? It then
        validates the pair (the caller records it) and the pair is punched."""
        pair = self.pairs.get(address)
        if pair is not None and pair.challenge == challenge:
            if pair.endpoint != endpoint:
                raise Rejected("wrong_endpoint")
            pair.last_heard = now
            self._changed()
            return True
        attempt = self.attempts.get(address)
        if attempt is None or challenge not in attempt.endpoints.values():
            return False
        if attempt.endpoints.get(endpoint) != challenge:
            raise Rejected("wrong_endpoint")
        del self.attempts[address]
        self.wants.pop(address, None)
        self.given_up.pop(address, None)
        self.punched += 1
        self.pairs.pop(address, None)
        self.pairs[address] = _Pair(attempt.key, endpoint, challenge, now, now, now)
        while len(self.pairs) > PUNCHED_PAIRS_MAX:
            self.pairs.popitem(last=False)
        self._changed()
        return True

    def used(self, address: bytes, now: float) -> None:
        """A text or ack went over the pair (or came from it): keep it a while longer."""
        pair = self.pairs.get(address)
        if pair is not None:
            pair.last_used = now
            self.pairs.move_to_end(address)
            self._changed()

    def hop(self, address: bytes) -> tuple[bytes, Endpoint] | None:
        """The contact's punched endpoint, if we have one."""
        pair = self.pairs.get(address)
        return None if pair is None else (pair.key, pair.endpoint)

    def drop(self, address: bytes) -> None:
        """The contact did not answer a ping after a text sent over the pair got no
        receipt (``Node._check_alive``): the hole closed, use relays again."""
        if self.pairs.pop(address, None) is not None:
            self._changed()

    # ------------------------------------------------------------------ relay side

    def on_introduce(
        self,
        requester_key: bytes,
        requester: Endpoint,
        introduce: pb.Introduce,
        target_at: tuple[bytes, Endpoint] | None,
        now: float,
    ) -> list[Send]:
        """Relay side: a validated requester asks to meet ``introduce.target``.

        If the target asked to meet the requester within ``RELAY_WAIT_S``, each gets
        the other's key and endpoint as we observe it, answering its own nonce.
        Otherwise the target, if it is attached to us or in our table (``target_at``,
        else ``unknown_target``), gets a notice naming the requester and nothing more.
        Rates (``introduce_rate``), in this order so that a refused request spends
        nothing shared: per requester key; per network of origin of the requester; per
        its wide network (the /48s of one /32 are one budget); per target and
        requester's network (a flood aimed at one target from one network cannot keep
        another network's requests for it out); node-wide, 32 wide networks' worth.
        """
        target = introduce.target
        if (
            len(target) != ADDRESS_BYTES
            or len(introduce.nonce) != NONCE_BYTES
            or len(introduce.padding) < INTRODUCE_PADDING
        ):
            raise Rejected("malformed")
        requester_address = address_of(requester_key)
        ip = _ip_bytes(requester)
        if target in (requester_address, self.own_address) or ip is None:
            raise Rejected("malformed")
        self._expire_waiting(now)
        network = origin_network(requester)
        if not (
            self._by_requester.allow(requester_address, now)
            and self._by_network.allow(network, now)
            and self._by_wide_network.allow(wide_network(requester), now)
            and self._by_target.allow((target, network), now)
            and self._relay_budget.take(now)
        ):
            raise Rejected("introduce_rate")
        other = self.waiting.pop((target, requester_address), None)
        if other is not None:
            self._changed()
            self.introduced += 1
            to_requester = _answer(
                requester_key, requester, introduce.nonce, other.key, other.ip, other.endpoint
            )
            return [
                to_requester,
                _answer(other.key, other.endpoint, other.nonce, requester_key, ip, requester),
            ]
        if target_at is None or address_of(target_at[0]) != target:
            raise Rejected("unknown_target")
        self.waiting.pop((requester_address, target), None)
        self.waiting[(requester_address, target)] = _Waiting(
            requester_key, requester, ip, introduce.nonce, now + RELAY_WAIT_S
        )
        while len(self.waiting) > RELAY_WAITING_MAX:
            self.waiting.popitem(last=False)
        self._changed()
        notice = pb.Frame(introduced=pb.Introduced(key=requester_key))
        return [Send(target_at[0], target_at[1], notice)]

    def _expire_waiting(self, now: float) -> None:
        while self.waiting:
            waiting = next(iter(self.waiting.values()))
            if waiting.deadline > now:
                break
            self.waiting.popitem(last=False)
            self._changed()

    # ------------------------------------------------------------------ time

    def _changed(self) -> None:
        """A deadline ``next_due`` reads may have moved (a table entry came, went or
        changed its times): compute it again when next asked."""
        self._due = None

    def next_due(self) -> float:
        """When ``tick`` next has something to do (``inf``: nothing). O(1) while no
        table changed since the last call (``_changed``)."""
        due = self._due
        if due is None:
            due = self._due = self._compute_due()
        return due

    def _compute_due(self) -> float:
        """``next_due`` from the tables: the earliest deadline of any of them."""
        due = float("inf")
        if self.asked:
            due = next(iter(self.asked.values())).deadline
        if self.waiting:
            due = min(due, next(iter(self.waiting.values())).deadline)
        for want in self.wants.values():
            due = min(due, want.next_at)
        for attempt in self.attempts.values():
            offset = (
                PUNCH_SCHEDULE_S[attempt.sent]
                if attempt.sent < len(PUNCH_SCHEDULE_S)
                else PUNCH_ATTEMPT_S
            )
            due = min(due, attempt.started + offset)
        for address, pair in self.pairs.items():
            due = min(
                due,
                max(pair.last_heard, pair.last_ping) + self._keepalive_s(address),
                pair.last_heard + PUNCH_DEAD_S,
                pair.last_used + PUNCH_LINGER_S,
            )
        return due

    def tick(
        self,
        now: float,
        relays_for: dict[bytes, list[tuple[bytes, Endpoint]]],
        still_wanted: set[bytes],
    ) -> list[Send]:
        """Everything due at ``now``: rounds of Introduce, pings, keep-alives, expiries.

        ``relays_for``: for each wanted address whose round is due, the nodes nearest
        to it in our table (see ``due_wants``); ``still_wanted``: those of them for
        which a text of ours still waits for an ack.
        """
        sends: list[Send] = []
        # Rounds, pings, expiries: nearly every table may change below.
        self._changed()
        while self.asked and next(iter(self.asked.values())).deadline <= now:
            self.asked.popitem(last=False)
        self._expire_waiting(now)
        for address in [a for a, w in self.wants.items() if w.next_at <= now]:
            sends += self._round(address, now, relays_for.get(address, []), still_wanted)
        for address, attempt in list(self.attempts.items()):
            due = sum(1 for offset in PUNCH_SCHEDULE_S if attempt.started + offset <= now)
            if due > attempt.sent:
                # One ping per endpoint however late the timer fired.
                attempt.sent = due
                sends += [_ping(attempt.key, e, c) for e, c in attempt.endpoints.items()]
            if now >= attempt.started + PUNCH_ATTEMPT_S:
                # No pong from any endpoint: a NAT that maps per destination (symmetric)
                # on one side at least. Quietly back to relays, and not again for a while.
                del self.attempts[address]
                self.failed += 1
                self.wants.pop(address, None)
                self._give_up(address, now)
        for address, pair in list(self.pairs.items()):
            if now - pair.last_heard >= PUNCH_DEAD_S or now - pair.last_used >= PUNCH_LINGER_S:
                del self.pairs[address]
            elif now - max(pair.last_heard, pair.last_ping) >= self._keepalive_s(address):
                pair.last_ping = now
                sends.append(_ping(pair.key, pair.endpoint, pair.challenge))
        return sends

    def _keepalive_s(self, address: bytes) -> float:
        """Silence after which we ping a punched pair. One ping and its pong refresh both
        routers' mappings, so one side is enough: the one with the lower address; the
        other pings only once that one has been silent a while longer."""
        if self.own_address < address:
            return PUNCH_KEEPALIVE_S
        return PUNCH_KEEPALIVE_S + PUNCH_KEEPALIVE_BACKUP_S

    def _give_up(self, address: bytes, now: float) -> None:
        self.given_up.pop(address, None)
        self.given_up[address] = now + PUNCH_GIVE_UP_S
        while len(self.given_up) > PUNCH_WANTS_MAX:
            self.given_up.popitem(last=False)

    def due_wants(self, now: float) -> list[bytes]:
        """Addresses whose next round of Introduce is due."""
        return [a for a, w in self.wants.items() if w.next_at <= now]

    def _round(
        self,
        address: bytes,
        now: float,
        relays: list[tuple[bytes, Endpoint]],
        still_wanted: set[bytes],
    ) -> list[Send]:
        """One round: ask a few relays nearest the contact, a different few each round."""
        want = self.wants[address]
        if address not in still_wanted or want.rounds >= PUNCH_ROUNDS:
            del self.wants[address]
            if want.rounds >= PUNCH_ROUNDS:
                self._give_up(address, now)  # quietly: the relays still carry every text
            return []
        want.rounds += 1
        want.next_at = now + PUNCH_RETRY_S * 2 ** (want.rounds - 1)
        if not relays:
            return []
        start = (want.rounds - 1) * PUNCH_RELAYS_PER_ROUND % len(relays)
        return self.ask_relays(address, relays[start:] + relays[:start], now, spend=True)

    def ask_relays(
        self, address: bytes, relays: list[tuple[bytes, Endpoint]], now: float, *, spend: bool
    ) -> list[Send]:
        """Ask the first few of ``relays`` (nearest the contact first), those we are not
        asking already, to introduce us, while we still want ``address`` and hold no
        attempt or pair with it. ``spend``: a new round, within the contact's budget and
        the node's (the asks that end a round's lookup belong to that round)."""
        if address not in self.wants or address in self.attempts or address in self.pairs:
            return []
        first = relays[:PUNCH_RELAYS_PER_ROUND]
        chosen = [(k, e) for k, e in first if not self._asking(k, address)]
        if not chosen or (spend and not self._spend(address, now)):
            return []
        return [self._ask(key, endpoint, address, now) for key, endpoint in chosen]


def _answer(
    key: bytes, endpoint: Endpoint, nonce: bytes, other: bytes, ip: bytes, at: Endpoint
) -> Send:
    """Relay side: tell ``key`` (at ``endpoint``) that ``other`` is at ``at`` (``ip``)."""
    frame = pb.Frame(introduced=pb.Introduced(key=other, nonce=nonce, ip=ip, port=at[1]))
    return Send(key, endpoint, frame)
