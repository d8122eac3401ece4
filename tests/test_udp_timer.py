"""The UDP adapter re-arms its one timer only when the core's deadline changed.

A busy node pumps on every datagram; cancelling and re-creating the loop's timer each
time costs a heap entry per datagram for nothing when the deadline did not move.
"""

from __future__ import annotations

import asyncio
import socket
import time

from comm_tui.crypto.identity import Identity
from comm_tui.net.udp import NodeProtocol, open_udp
from comm_tui.protocol.node import Node


async def test_the_timer_is_rearmed_only_when_the_deadline_moves() -> None:
    node = Node(Identity.generate(), time.time())
    protocol, _ = await open_udp(node, ("127.0.0.1", 0), lambda events: None)
    try:
        protocol.pump()
        armed = protocol._timer
        assert armed is not None
        protocol.pump()  # nothing changed: the same timer stays armed
        assert protocol._timer is armed and not armed.cancelled()
        # A peer to ping is due at once: the deadline moves, the timer follows it.
        node.bootstrap(("127.0.0.1", 9), time.time())
        protocol.pump()
        assert protocol._timer is not armed and armed.cancelled()
        assert protocol._deadline == node.get_timer()
    finally:
        protocol.close()


async def _driven(node: Node, clock: list[float]) -> NodeProtocol:
    """A NodeProtocol on a real loopback socket, reading the node time from ``clock``."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: NodeProtocol(node, lambda events: None, clock=lambda: clock[0]),
        local_addr=("127.0.0.1", 0),
    )
    return protocol


async def test_a_deadline_moved_earlier_rearms_the_timer_for_the_new_one() -> None:
    """The rule the skip rests on: any change of the core's deadline, earlier above all,
    replaces the armed timer by one due at the new deadline (a stale later timer would
    hold back whatever became due sooner)."""
    clock = [time.time()]
    node = Node(Identity.generate(), clock[0])
    protocol = await _driven(node, clock)
    loop = asyncio.get_running_loop()
    try:
        later = protocol._timer
        assert later is not None
        node.bootstrap(("127.0.0.1", 9), clock[0])  # a hello's timeout: sooner than upkeep
        protocol.pump()
        sooner = protocol._timer
        assert sooner is not None and sooner is not later and later.cancelled()
        assert sooner.when() < later.when()
        due_in = node.get_timer() - clock[0]
        assert abs(sooner.when() - loop.time() - due_in) < 0.05
    finally:
        protocol.close()


async def test_a_timer_that_fired_before_its_deadline_is_armed_again() -> None:
    """A loop may run a timer a hair early, so the core finds nothing due and keeps its
    deadline: the adapter must arm a timer again for that same deadline, or nothing
    would ever wake the node."""
    clock = [time.time()]
    node = Node(Identity.generate(), clock[0])
    protocol = await _driven(node, clock)
    try:
        deadline = protocol._deadline
        assert protocol._timer is not None
        protocol._timer.cancel()  # as the loop does when it runs it
        clock[0] = deadline - 0.001
        protocol._on_timer()
        assert node.get_timer() == deadline  # nothing was due: the deadline stayed
        assert protocol._timer is not None and not protocol._timer.cancelled()
        assert protocol._deadline == deadline
    finally:
        protocol.close()


async def test_a_due_timer_runs_while_datagrams_keep_arriving() -> None:
    """The timer is not re-armed for a deadline it is already armed for. Re-arming on
    every datagram (the rule before) cancelled a due timer that the loop had queued
    behind that datagram's callback, and queued a new one behind the next datagram: a
    node that heard something in every loop iteration ran its retries and timeouts
    seconds late (measured on loopback under load: 5 to 9 s at the 99th percentile)."""
    node = Node(Identity.generate(), time.time())
    protocol, bound = await open_udp(node, ("127.0.0.1", 0), lambda events: None)
    ran: list[float] = []
    original = node.handle_timer

    def handle_timer(now: float) -> None:
        ran.append(now)
        original(now)

    node.handle_timer = handle_timer  # type: ignore[method-assign]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    try:
        node.bootstrap(("127.0.0.1", 9), time.time())  # a hello, timed out in 2 s
        protocol.pump()
        due = protocol._deadline
        give_up = time.monotonic() + due - time.time() + 3.0
        while not ran and time.monotonic() < give_up:
            sender.sendto(b"junk", bound)  # one more datagram for every loop iteration
            await asyncio.sleep(0)
        assert ran, "the timer never ran while datagrams kept arriving"
        assert ran[0] - due < 1.0
    finally:
        sender.close()
        protocol.close()
