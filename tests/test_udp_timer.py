"""The UDP adapter re-arms its one timer only when the core's deadline changed.

A busy node pumps on every datagram; cancelling and re-creating the loop's timer each
time costs a heap entry per datagram for nothing when the deadline did not move.
"""

from __future__ import annotations

import time

from comm_tui.crypto.identity import Identity
from comm_tui.net.udp import open_udp
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
