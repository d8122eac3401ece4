"""Receipts, both ways: the ones we owe peers (``ReceiptsOwed``), and how long we wait
for a peer's and what a late one costs it (``ReceiptWaits``).

**Owed.** docs/PROTOCOL.md, "4. Frames", "Receipts wait at most 25 ms". The ids owed
one (peer key, endpoint) go as one Receipt: at the end of the pump for a quiet pair, once
the first has waited ``RECEIPT_DELAY_S`` for a busy one, at once when the next id would
not fit (``RECEIPT_IDS_BYTES``) or more than ``RECEIPT_PAIRS_MAX`` pairs are owed one.

**Awaited.** docs/PROTOCOL.md, "7.2 Message ids and relaying", "Receipt wait". Every item we send a
peer awaits that peer's ``Receipt``, and while a wait runs, the item is not sent to that
peer again: a copy sent before the receipt could have come back is a duplicate, not a
retry. A wait that runs out is a signal about the item, not the peer's liveness: a node
refuses junk and items over its caps without a receipt (spec 8.1), so counting it as a
failure let anyone make a node "bad" at its relays by handing them junk addressed to it.
The node only checks the peer's liveness with a ping (``Node._check_alive``), whose own
timeout counts.

The wait is the peer's own retransmission timeout, computed as TCP computes it (RFC
6298, section 2) from the delays of its receipts: at least ``RECEIPT_TIMEOUT_S``, which
is all a peer that answers within it ever gets, at most ``RECEIPT_TIMEOUT_MAX_S``. A
peer whose receipts are merely late (its disk commits slowly, its process is
saturated) is then neither counted as failing nor sent every item again at each retry,
which fed the overload that made it late (the retry storm of bench/RESULTS.md, "Issue
11, this session"). Samples follow Karn's rule (RFC 6298, section 3): a receipt for an
item sent to the peer more than once says nothing about which copy it answers, and is
not measured; instead every wait that runs out doubles the peer's next waits (section
5.5) until a receipt is measured again. A peer that never sends a receipt gives no
sample: its waits run out at 2 s, then 4 s, 8 s, ... after each item.

Per-peer state is kept only for items sent to validated (key, endpoint) pairs
(``tracked``): an answer to a copy from a source nobody proved (a forger writes any, with
fresh keys) is awaited, and its receipt makes a holder, but it measures nothing and its
running out leaves nothing behind, so that forged copies cannot flush what honest peers'
receipts taught us. Measured delays and the backoff of peers never measured are kept in
separate tables, so that the second cannot push the first out.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from comm_tui.protocol.admission import wide_network
from comm_tui.protocol.routing import Endpoint, origin_network

# docs/PROTOCOL.md, "4. Frames": the receipts owed to one peer in one pump go as one
# Receipt, split where its ids would pass this many bytes (each id with its 2-byte tag
# and length). A sealed packet adds at most 103 bytes (head 36, box tag and length 3,
# nonce 24, MAC 16, cookie 18, receipt tag and length 3, client flag 3), so a Receipt
# always fits one 1,200-byte datagram, and 1,000 bytes hold at most 500 ids: never
# more than FETCH_ITEMS_MAX (protocol/node.py).
RECEIPT_IDS_BYTES = 1000
# docs/PROTOCOL.md, "4. Frames", "Receipts wait at most 25 ms": the ids owed one (key,
# endpoint) gather across pumps until the first of them has waited this long (QUIC's
# default max_ack_delay). The sender's receipt wait is at least RECEIPT_TIMEOUT_S (2 s),
# 80 times longer, so nothing there moves; a relay taking a peer's items faster than one
# per 25 ms sends one Receipt for several of them instead of one each.
RECEIPT_DELAY_S = 0.025
# At most this many (key, endpoint) pairs owed a receipt at once; past it the oldest pair's
# Receipt goes at once (early is always allowed). Each holds under RECEIPT_IDS_BYTES of ids.
# The same bound holds the pairs whose last Receipts are remembered (``ReceiptsOwed``).
RECEIPT_PAIRS_MAX = 1024
# Only a busy pair's receipts wait (docs/PROTOCOL.md, "4. Frames"): one sent two Receipts
# in the last RECEIPT_DELAY_S. A quiet pair's go at the end of the pump that took its items
# (``ReceiptsOwed.take_quick``), as TCP's quick-ack and QUIC's immediate ACK of the first
# packets: at light traffic a pair owes at most an item or two within 25 ms (a message
# and its ack's way back), and a delayed Receipt would cost a timer wake-up and a pump of
# its own for nothing gathered. A stream (the third Receipt within 25 ms) gathers.

# The least wait, and the wait of a peer we have no measurement of.
RECEIPT_TIMEOUT_S = 2.0
# RFC 6298 (2.4) asks for a maximum of at least 60 s.
RECEIPT_TIMEOUT_MAX_S = 60.0
# Peers whose receipt delays we remember (least recently measured forgotten first), and
# as many validated peers never measured whose waits ran out (their doubled wait, in a
# table of their own: validated pairs cost a real address each, but as no receipt is
# needed to fill it, it must not evict a measured peer); and (peer, item) pairs whose
# wait ran out, remembered so that a copy sent again is known
# to be a second one (Karn's rule) after the first wait was forgotten, and so that a
# late receipt still counts (docs/PROTOCOL.md, "7.2"). At most TIMED_OUT_PAIRS_PER_NETWORK
# of them per network of origin of the endpoint the item went to (the oldest of that
# network forgotten first): keys are free, and one network whose nodes never answer
# (targets of items it made us store, say) would otherwise flush every honest peer's
# late receipt, whose item then went to it again. All of it only for validated pairs
# (``ReceiptWaits.sent``, ``tracked``): a forged source is free. And at most
# TIMED_OUT_PAIRS_PER_WIDE_NETWORK per wide network (admission.wide_network): validated
# pairs are cheap in /48s, and 17 of one IPv6 /32 held 256 each, past the 4,096 in all.
RECEIPT_PEERS_MAX = 4096
TIMED_OUT_PAIRS_MAX = 4096
TIMED_OUT_PAIRS_PER_NETWORK = 256
TIMED_OUT_PAIRS_PER_WIDE_NETWORK = 1024
# RFC 6298, section 2: the gains of the smoothed delay and of its variation, and K.
_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4


Pair = tuple[bytes, Endpoint]  # a peer's key and the endpoint its items came from


class Receipt(NamedTuple):
    """A Receipt to send now: to ``key`` at ``endpoint``, naming ``ids`` in the order their
    items came, each once."""

    key: bytes
    endpoint: Endpoint
    ids: Collection[bytes]


_NONE: tuple[Receipt, ...] = ()
# Wide networks' names in ``ReceiptWaits._timed_out_by_net``, apart from networks' (on
# loopback both are the host and port).
_WIDE = "wide "


@dataclass(slots=True)
class _Owed:
    """The ids one pair is owed a receipt for (a dict: ordered, each once), their bytes in
    a Receipt (2 + length each), and when they must go: for a busy pair the first one
    owed plus ``RECEIPT_DELAY_S``, for a quiet one when it was owed."""

    ids: dict[bytes, None]
    size: int
    deadline: float


class ReceiptsOwed:
    """The Receipts we owe peers for the items they handed us, and when each goes
    (docs/PROTOCOL.md, "4. Frames", "Receipts wait at most 25 ms").

    Sans-IO like the node that owns it: ``owe`` for each item taken hands back what must
    go at once (a full Receipt, the oldest pair's past ``RECEIPT_PAIRS_MAX``),
    ``take_quick`` at the end of each pump the quiet pairs', ``take_due`` at the timer
    (``deadline``) the busy pairs' whose first id has waited ``RECEIPT_DELAY_S``. Every
    Receipt handed out is taken as sent: the node boxes and queues each one.
    """

    def __init__(self, now: float) -> None:
        # Busy pairs' ids, in the order each pair was first owed one (so the first holds
        # the earliest deadline), and that deadline (inf: none owed), which the node's
        # timer reads as it is.
        self._due: dict[Pair, _Owed] = {}
        self.deadline = math.inf
        # Quiet pairs' ids owed in this pump, handed out by take_quick as of _quick_at.
        self._quick: dict[Pair, _Owed] = {}
        self._quick_at = now
        # When each pair was sent its last two Receipts (-inf: none before the last),
        # the pair sent one last at the end (pruned past RECEIPT_DELAY_S since the last
        # and past RECEIPT_PAIRS_MAX pairs as Receipts go).
        self._sent_at: OrderedDict[Pair, tuple[float, float]] = OrderedDict()

    @property
    def quick(self) -> bool:
        """Does a quiet pair wait for the end of the pump (``take_quick``)?"""
        return bool(self._quick)

    def owe(self, key: bytes, endpoint: Endpoint, item: bytes, now: float) -> Sequence[Receipt]:
        """Owe ``key`` at ``endpoint`` a receipt for ``item`` (a store key), with every
        other id owed that pair; the Receipts that must go at once (mostly none)."""
        pair = (key, endpoint)
        quick = self._quick
        if pair in quick or (pair not in self._due and not self._busy(pair, now)):
            self._quick_at = now
            return self._owe_in(quick, pair, item, now, now) or _NONE
        deadline = now + RECEIPT_DELAY_S
        out = self._owe_in(self._due, pair, item, deadline, now)
        if out is None:
            return _NONE
        if out:
            self.deadline = self._first_deadline()
        # Later than the first's only if the clock went back: then the earlier one is the
        # timer's, and take_due hands out the older pairs as overdue.
        if deadline < self.deadline:
            self.deadline = deadline
        return out

    def take_quick(self) -> tuple[float, list[Receipt]]:
        """The quiet pairs' Receipts owed in this pump, one per pair in the order each was
        first owed one, and the time to send them at: the pump's last datagram's."""
        quick, self._quick = self._quick, {}
        now = self._quick_at
        return now, [self._hand_out(pair, owed, now) for pair, owed in quick.items()]

    def take_due(self, now: float) -> list[Receipt]:
        """The busy pairs' Receipts whose first id has waited ``RECEIPT_DELAY_S`` by ``now``,
        oldest pair first, and any dated later than ``now`` allows (the clock went back)."""
        due = self._due
        latest = now + RECEIPT_DELAY_S
        out: list[Receipt] = []
        while due:
            pair, owed = next(iter(due.items()))
            if now < owed.deadline <= latest:
                self.deadline = owed.deadline
                return out
            del due[pair]
            out.append(self._hand_out(pair, owed, now))
        self.deadline = math.inf
        return out

    def remembered(self) -> int:
        """How many pairs' last Receipts are remembered (bounded by RECEIPT_PAIRS_MAX)."""
        return len(self._sent_at)

    def _owe_in(
        self, table: dict[Pair, _Owed], pair: Pair, item: bytes, deadline: float, now: float
    ) -> list[Receipt] | None:
        """Add ``item`` to the ids ``table`` owes ``pair``: None if it joined them (or was
        there); else it starts the pair's next Receipt, last in line, and what goes at once
        is handed out: the pair's full one, the oldest pair's past RECEIPT_PAIRS_MAX."""
        owed = table.get(pair)
        if owed is None:
            out: list[Receipt] = []
        else:
            if item in owed.ids:
                return None
            size = owed.size + 2 + len(item)
            if size <= RECEIPT_IDS_BYTES:
                owed.ids[item] = None
                owed.size = size
                return None
            del table[pair]
            out = [self._hand_out(pair, owed, now)]  # full: it goes now
        table[pair] = _Owed({item: None}, 2 + len(item), deadline)
        if len(table) > RECEIPT_PAIRS_MAX:
            oldest = next(iter(table))
            out.append(self._hand_out(oldest, table.pop(oldest), now))
        return out

    def _first_deadline(self) -> float:
        """The first busy pair's deadline (pairs are in the order first owed), inf if none."""
        for owed in self._due.values():
            return owed.deadline
        return math.inf

    def _busy(self, pair: Pair, now: float) -> bool:
        """Was ``pair`` sent two Receipts in the last ``RECEIPT_DELAY_S`` (its ids gather)?"""
        sent = self._sent_at.get(pair)
        return sent is not None and 0 <= now - sent[0] < RECEIPT_DELAY_S

    def _hand_out(self, pair: Pair, owed: _Owed, now: float) -> Receipt:
        """``owed``'s Receipt to ``pair``, remembered as sent at ``now`` with when the one
        before went (``_busy``)."""
        sent_at = self._sent_at
        before = sent_at.get(pair)
        sent_at[pair] = (before[1] if before is not None else -math.inf, now)
        sent_at.move_to_end(pair)
        while sent_at:
            first, (_, last) = next(iter(sent_at.items()))
            if len(sent_at) <= RECEIPT_PAIRS_MAX and 0 <= now - last < RECEIPT_DELAY_S:
                break
            del sent_at[first]
        return Receipt(pair[0], pair[1], owed.ids)


@dataclass(slots=True)
class _Peer:
    """RFC 6298's state for one peer: smoothed delay (None before the first sample), its
    variation, and the wait now in force."""

    srtt: float | None = None
    rttvar: float = 0.0
    rto: float = RECEIPT_TIMEOUT_S


@dataclass(slots=True)
class _Wait:
    sent_at: float
    deadline: float
    resent: bool
    timeout: float  # the peer's wait when it was sent
    item: object  # what was sent: a newer item under the same key is not awaited
    endpoint: Endpoint | None  # where: a recipient met at several endpoints gets it at each
    tracked: bool  # sent to a validated pair: measured, and remembered when it runs out


class ReceiptWaits:
    """The receipts we await, by (peer address, store key), and each peer's wait."""

    def __init__(self) -> None:
        self._waits: dict[tuple[bytes, bytes], _Wait] = {}
        # (deadline, address, key), with stale entries left in until they reach the top.
        self._deadlines: list[tuple[float, bytes, bytes]] = []
        self._peers: OrderedDict[bytes, _Peer] = OrderedDict()
        # The wait of validated peers never measured, doubled by waits that ran out.
        self._backed_off: OrderedDict[bytes, float] = OrderedDict()
        # Timed-out pairs, oldest first, with the network and wide network each went to;
        # and per network and per wide network (``_WIDE`` before its name).
        self._timed_out: OrderedDict[tuple[bytes, bytes], tuple[str, str]] = OrderedDict()
        self._timed_out_by_net: dict[str, OrderedDict[tuple[bytes, bytes], None]] = {}

    def __len__(self) -> int:
        return len(self._waits)

    def timeout(self, address: bytes) -> float:
        """How long a receipt from ``address`` is awaited (RFC 6298's RTO, clamped)."""
        peer = self._peers.get(address)
        if peer is not None:
            return peer.rto
        return self._backed_off.get(address, RECEIPT_TIMEOUT_S)

    def _measured(self, address: bytes) -> _Peer:
        """``address``'s state, made the most recent; a first measurement ends the backoff
        of a peer never measured before (its sample sets the wait)."""
        peer = self._peers.pop(address, None)
        if peer is None:
            self._backed_off.pop(address, None)
            peer = _Peer()
        self._peers[address] = peer
        if len(self._peers) > RECEIPT_PEERS_MAX:
            self._peers.popitem(last=False)
        return peer

    def _back_off(self, address: bytes, timeout: float) -> None:
        """A tracked wait of ``timeout`` for ``address`` ran out: double its wait, once
        per wait in force (RFC 6298, 5.5)."""
        peer = self._peers.get(address)
        if peer is not None:
            if timeout >= peer.rto:
                peer.rto = min(RECEIPT_TIMEOUT_MAX_S, 2 * peer.rto)
            return
        backed_off = self._backed_off
        rto = backed_off.pop(address, RECEIPT_TIMEOUT_S)
        backed_off[address] = min(RECEIPT_TIMEOUT_MAX_S, 2 * rto) if timeout >= rto else rto
        if len(backed_off) > RECEIPT_PEERS_MAX:
            backed_off.popitem(last=False)

    def awaiting(
        self,
        address: bytes,
        key: bytes,
        now: float,
        item: object = None,
        endpoint: Endpoint | None = None,
    ) -> bool:
        """Was ``item`` (stored under ``key``) sent to ``address`` at ``endpoint``, and its
        receipt still within the wait? A record replaced by a newer one keeps its key:
        the newer one was not sent. A recipient met at several endpoints (one may be a
        Sybil's relay, docs/PROTOCOL.md, "7.2") is sent it at each."""
        wait = self._waits.get((address, key))
        return (
            wait is not None
            and wait.item is item
            and wait.endpoint == endpoint
            and wait.deadline > now
        )

    def sent(
        self,
        address: bytes,
        key: bytes,
        now: float,
        item: object = None,
        endpoint: Endpoint | None = None,
        *,
        tracked: bool = True,
    ) -> None:
        """``item``, stored under ``key``, went to ``address`` at ``endpoint``: await its
        receipt (again). ``tracked``: ``endpoint`` is a validated pair of the peer's, so
        the wait may measure its delay and leave a backoff and a timed-out pair when it
        runs out; an untracked wait only makes a holder of a receipt while it is open."""
        pair = (address, key)
        resent = pair in self._waits or pair in self._timed_out
        self._forget_timed_out(pair)
        timeout = self.timeout(address)
        deadline = now + timeout
        self._waits[pair] = _Wait(now, deadline, resent, timeout, item, endpoint, tracked)
        heapq.heappush(self._deadlines, (deadline, address, key))
        if len(self._deadlines) > 2 * len(self._waits) + 64:
            # Mostly stale (answered or re-armed): rebuilt from what is awaited.
            self._deadlines = [(w.deadline, a, k) for (a, k), w in self._waits.items()]
            heapq.heapify(self._deadlines)

    def received(self, address: bytes, key: bytes, now: float) -> bool:
        """``address`` sent a receipt naming ``key``: stop waiting, and measure the delay
        if the item went to it once, at a validated pair (``tracked``). True if we sent
        it that item: its wait is open, or ran out lately (a late receipt, the pair
        among the ``TIMED_OUT_PAIRS_MAX`` last remembered, its network's
        ``TIMED_OUT_PAIRS_PER_NETWORK`` and its wide network's
        ``TIMED_OUT_PAIRS_PER_WIDE_NETWORK``; never for an untracked wait). False for an
        item we never sent it, or whose wait was forgotten: such a receipt must not make
        the peer a holder (docs/PROTOCOL.md, "7.2", "Receipt wait"), else Sybils told an
        item's id by one colluder could claim to hold it and stop its replication. One
        dict lookup more than a wait answered costs, and only on a miss."""
        pair = (address, key)
        wait = self._waits.pop(pair, None)
        if wait is None:
            return pair in self._timed_out
        if wait.resent or not wait.tracked:
            return True
        sample = max(0.0, now - wait.sent_at)
        peer = self._measured(address)
        if peer.srtt is None:  # RFC 6298 (2.2): the first measurement
            peer.srtt, peer.rttvar = sample, sample / 2
        else:  # (2.3)
            peer.rttvar = (1 - _BETA) * peer.rttvar + _BETA * abs(peer.srtt - sample)
            peer.srtt = (1 - _ALPHA) * peer.srtt + _ALPHA * sample
        peer.rto = min(RECEIPT_TIMEOUT_MAX_S, max(RECEIPT_TIMEOUT_S, peer.srtt + _K * peer.rttvar))
        return True

    def item_sent(self, address: bytes, key: bytes) -> object:
        """What went to ``address`` under ``key`` while its wait is open (None if none)."""
        wait = self._waits.get((address, key))
        return None if wait is None else wait.item

    def forget(self, address: bytes, key: bytes) -> None:
        """Stop waiting without measuring (``address`` sent the item's ack instead)."""
        self._waits.pop((address, key), None)

    def next_deadline(self) -> float | None:
        """When the earliest wait runs out, or None if nothing is awaited."""
        while self._deadlines:
            deadline, address, key = self._deadlines[0]
            wait = self._waits.get((address, key))
            if wait is not None and wait.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def overdue(self, now: float) -> list[bytes]:
        """The tracked waits that ran out by ``now``, forgotten; one peer address per wait
        (untracked ones are only forgotten).

        Each doubles the peer's wait (RFC 6298, 5.5) until a receipt is measured; once
        per wait in force, so a burst of items to a dead peer doubles it once."""
        late: list[bytes] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, address, key = heapq.heappop(self._deadlines)
            wait = self._waits.pop((address, key))
            if not wait.tracked:
                continue
            self._remember_timed_out((address, key), wait.endpoint)
            self._back_off(address, wait.timeout)
            late.append(address)
        return late

    def _remember_timed_out(self, pair: tuple[bytes, bytes], endpoint: Endpoint | None) -> None:
        """Keep ``pair``, whose wait ran out, within the bounds per network, per wide
        network and in all."""
        if endpoint is None:
            network, wide = "", _WIDE
        else:
            network, wide = origin_network(endpoint), _WIDE + wide_network(endpoint)
        self._timed_out[pair] = (network, wide)
        for name, bound in (
            (network, TIMED_OUT_PAIRS_PER_NETWORK),
            (wide, TIMED_OUT_PAIRS_PER_WIDE_NETWORK),
        ):
            of_network = self._timed_out_by_net.setdefault(name, OrderedDict())
            of_network[pair] = None
            if len(of_network) > bound:
                self._forget_timed_out(next(iter(of_network)))
        if len(self._timed_out) > TIMED_OUT_PAIRS_MAX:
            self._forget_timed_out(next(iter(self._timed_out)))

    def _forget_timed_out(self, pair: tuple[bytes, bytes]) -> None:
        names = self._timed_out.pop(pair, None)
        if names is None:
            return
        for name in names:
            of_network = self._timed_out_by_net[name]
            del of_network[pair]
            if not of_network:
                del self._timed_out_by_net[name]
