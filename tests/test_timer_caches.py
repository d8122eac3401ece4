"""The cached punch deadline behind ``Node.get_timer`` (docs/PROTOCOL.md, "12.6").

``Node.get_timer`` runs after every datagram a node handles; ``Punching.next_due``
walked its tables each time. It now keeps its answer until a table changes
(``Punching._changed``). The cache must never be later than the tables say: a stale
later deadline holds back a ping, a round or an expiry. These tests drive the tables
through their public methods in random order and compare the cached answer with one
computed afresh after every step, and show that a change moving the deadline earlier
re-arms a real node's timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.net.udp import NodeProtocol
from comm_tui.protocol import punch
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.node import QUERY_TIMEOUT_S, REBOOTSTRAP_INTERVAL_S, Node
from comm_tui.protocol.punch import Punching, Send
from comm_tui.protocol.routing import Endpoint
from tests.wire import T0


def _keys(n: int, base: int) -> list[bytes]:
    return [Identity.from_seed(bytes([base + i]) * 32).key for i in range(n)]


class _Driver:
    """Random calls into one ``Punching``, both roles, with what it sent so far."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.me = Punching(_keys(1, 60)[0], T0)
        self.contacts = _keys(5, 70)
        self.relays = _keys(3, 80)
        self.strangers = _keys(4, 90)
        self.me.set_contacts(self.contacts)
        self.now = T0
        self.introduces: list[Send] = []  # our Introduce requests (their nonces)
        self.pings: list[Send] = []  # our pings (their challenges and endpoints)

    def endpoint(self) -> Endpoint:
        return (f"198.18.{self.rng.randrange(1, 4)}.{self.rng.randrange(1, 4)}", 4000)

    def keep(self, sends: list[Send]) -> None:
        for send in sends:
            if send.frame.HasField("introduce"):
                self.introduces.append(send)
            elif send.frame.HasField("ping"):
                self.pings.append(send)

    def step(self) -> None:
        rng, me = self.rng, self.me
        contact = rng.choice(self.contacts)
        address = address_of(contact)
        op = rng.randrange(12)
        if op == 0:
            self.now += rng.choice([0.0, 0.1, 0.3, 1.0, 2.5, 6.0, 20.0])
        elif op == 1:
            me.want(address, self.now)
        elif op == 2:
            due = me.due_wants(self.now)
            relays = {a: [(r, self.endpoint()) for r in self.relays] for a in due}
            wanted = {a for a in relays if rng.random() < 0.8}
            self.keep(me.tick(self.now, relays, wanted))
        elif op == 3 and self.introduces:
            ask = rng.choice(self.introduces)
            target = ask.frame.introduce.target
            key = next((k for k in self.contacts if address_of(k) == target), contact)
            answer = pb.Introduced(
                key=key,
                nonce=ask.frame.introduce.nonce,
                ip=bytes([198, 18, rng.randrange(1, 4), 7]),
                port=rng.randrange(1, 3),
            )
            self.keep(me.on_answer(ask.key, ask.endpoint, answer, self.now))
        elif op == 4 and self.pings:
            ping = rng.choice(self.pings)
            at = ping.endpoint if rng.random() < 0.9 else self.endpoint()
            me.pong(address_of(ping.key), at, ping.frame.ping.challenge, self.now)
        elif op == 5:
            pair = me.pairs.get(address)
            at = pair.endpoint if pair is not None and rng.random() < 0.8 else self.endpoint()
            self.keep(me.heard(address, at, self.now))
        elif op == 6:
            me.used(address, self.now)
        elif op == 7 and rng.random() < 0.3:
            me.drop(address)
        elif op == 8:
            requester, target = rng.sample(self.strangers, 2)
            introduce = pb.Introduce(
                target=address_of(target),
                nonce=rng.randbytes(punch.NONCE_BYTES),
                padding=bytes(punch.INTRODUCE_PADDING),
            )
            held = (target, self.endpoint()) if rng.random() < 0.7 else None
            me.on_introduce(requester, self.endpoint(), introduce, held, self.now)
        elif op == 9:
            self.keep(me.on_notice(rng.choice(self.relays), self.endpoint(), contact, self.now))
        elif op == 10:
            relays = [(r, self.endpoint()) for r in self.relays]
            self.keep(me.ask_relays(address, relays, self.now, spend=rng.random() < 0.5))
        elif op == 11 and rng.random() < 0.2:
            me.set_contacts(rng.sample(self.contacts, rng.randrange(3, 6)))


@pytest.mark.parametrize("seed", range(40))
def test_the_cached_punch_deadline_is_always_the_tables_own(seed: int) -> None:
    """After any call, ``next_due`` (cached) equals the deadline computed afresh from the
    tables: every change of a deadline-bearing table drops the cache. Asked before each
    call too, so that a call which forgot to drop it would be caught."""
    driver = _Driver(seed)
    changes = 0
    for _ in range(400):
        before = driver.me.next_due()
        with contextlib.suppress(Rejected):
            driver.step()
        fresh = driver.me._compute_due()
        assert driver.me.next_due() == fresh
        changes += fresh != before
    assert changes > 20  # the deadline did move, many times


def test_a_wanted_contact_rearms_a_real_nodes_timer_at_once() -> None:
    """A contact wanted now moves the punch deadline (and so the node's) earlier than
    anything else the node waits for: the UDP adapter's next pump re-arms its one timer
    for it. With the cache kept across ``want`` the timer stayed where it was."""

    async def run() -> None:
        clock = [time.time()]
        node = Node(Identity.generate(), clock[0])
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: NodeProtocol(node, lambda events: None, clock=lambda: clock[0]),
            local_addr=("127.0.0.1", 0),
        )
        try:
            assert isinstance(protocol, NodeProtocol)
            protocol.pump()
            later = protocol._timer
            assert later is not None and protocol._deadline > clock[0]
            contact = Identity.generate().key
            node.set_contacts([contact], clock[0])
            protocol.pump()
            node._punch.want(address_of(contact), clock[0])
            protocol.pump()
            assert protocol._deadline == clock[0] == node.get_timer()
            assert protocol._timer is not later and later.cancelled()
        finally:
            protocol.close()

    asyncio.run(run())


def test_a_round_of_ours_moves_the_deadline_at_once() -> None:
    """A contact wanted now is due now; once ``tick`` has sent its round of Introduce, the
    deadline is the next round or the round's answer timeout, whichever comes first."""
    driver = _Driver(1)
    me = driver.me
    address = address_of(driver.contacts[0])
    assert me.next_due() == float("inf")
    me.want(address, T0)
    assert me.next_due() == T0
    relays = {address: [(driver.relays[0], ("198.18.0.1", 4000))]}
    (ask,) = me.tick(T0, relays, {address})
    assert ask.frame.HasField("introduce")
    assert me.next_due() == T0 + min(punch.PUNCH_RETRY_S, punch.INTRODUCE_TIMEOUT_S)


def test_a_pairs_linger_deadline_follows_its_last_use() -> None:
    """A punched pair kept alive by keep-alives but unused is due to go PUNCH_LINGER_S
    after its last text; a text over it (``used``) moves that deadline, and the cached
    one with it."""
    driver = _Driver(2)
    me = driver.me
    contact = driver.contacts[0]
    address = address_of(contact)
    me.want(address, T0)
    relay, at_relay = driver.relays[0], ("198.18.0.1", 4000)
    (ask,) = me.tick(T0, {address: [(relay, at_relay)]}, {address})
    answer = pb.Introduced(
        key=contact, nonce=ask.frame.introduce.nonce, ip=bytes([198, 18, 7, 7]), port=1
    )
    (ping,) = me.on_answer(relay, at_relay, answer, T0)
    at = ("198.18.7.7", 1)
    assert me.pong(address, at, ping.frame.ping.challenge, T0)
    now = T0
    while me.next_due() < T0 + punch.PUNCH_LINGER_S:  # keep-alives, each answered
        now = me.next_due()
        for send in me.tick(now, {}, set()):
            assert me.pong(address, at, send.frame.ping.challenge, now)
    later = T0 + punch.PUNCH_LINGER_S - 1
    me.heard(address, at, later)  # the contact spoke: the next keep-alive is later still
    assert me.next_due() == T0 + punch.PUNCH_LINGER_S and address in me.pairs
    me.used(address, later)
    assert me.next_due() == later + me._keepalive_s(address) == me._compute_due()


def test_an_outstanding_query_sets_the_nodes_timer() -> None:
    """``get_timer`` is the earliest of every deadline the node keeps: a ping's timeout
    (QUERY_TIMEOUT_S) comes before the first rebootstrap tick and upkeep."""
    node = Node(Identity.generate(), T0)
    assert node.get_timer() == T0 + REBOOTSTRAP_INTERVAL_S
    node._ping(Identity.generate().key, ("127.0.0.1", 9), T0 + 1)
    assert node.get_timer() == T0 + 1 + QUERY_TIMEOUT_S < T0 + REBOOTSTRAP_INTERVAL_S
