"""The UDP adapter reads what is queued on its socket before it pumps (net/udp.py).

asyncio hands a datagram protocol one datagram per loop iteration; a relay whose socket
holds a burst would pump once per datagram, and its receipts would go one per item. The
adapter takes up to READ_BATCH datagrams, then pumps once, so the core's receipts to a
peer leave as one (docs/PROTOCOL.md, "4. Frames", Receipt).
"""

from __future__ import annotations

import asyncio
import socket
import time

from comm_tui.crypto.identity import Identity
from comm_tui.net.udp import READ_BATCH, NodeProtocol, open_udp
from comm_tui.protocol.node import Node


async def _queue_then_run(protocol: NodeProtocol, port: int, count: int) -> list[int]:
    """Send ``count`` junk datagrams to ``port`` before the loop can read any, then let
    it read them all; the datagrams each pump followed (the node's reject count then)."""
    node = protocol.node
    pumps: list[int] = []
    pump = protocol.pump

    def counting_pump() -> None:
        pumps.append(node.stats.rejected_total)
        pump()

    protocol.pump = counting_pump  # type: ignore[method-assign]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for i in range(count):
            peer.sendto(b"\x01junk%d" % i, ("127.0.0.1", port))
        deadline = time.monotonic() + 5.0
        while node.stats.rejected_total < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    return pumps


async def test_a_queued_burst_is_read_in_batches_of_read_batch_each_one_pump() -> None:
    node = Node(Identity.generate(), time.time())
    protocol, (_, port) = await open_udp(node, ("127.0.0.1", 0), lambda events: None)
    try:
        count = READ_BATCH + 4
        pumps = await _queue_then_run(protocol, port, count)
        assert node.stats.rejected_total == count  # every one read, counted, dropped
        # The first pump after READ_BATCH of them, the second after the rest.
        assert pumps == [READ_BATCH, count]
        assert protocol.batched_reads == count - 2
    finally:
        protocol.close()


async def test_a_lone_datagram_is_pumped_at_once() -> None:
    node = Node(Identity.generate(), time.time())
    protocol, (_, port) = await open_udp(node, ("127.0.0.1", 0), lambda events: None)
    try:
        assert await _queue_then_run(protocol, port, 1) == [1]
        assert protocol.batched_reads == 0
    finally:
        protocol.close()
