"""What the UDP adapter tells the core a datagram came from (net/udp.py, ``_endpoint``).

An IPv4 socket reports ``(host, port)``, which is passed on as it is: no new tuple per
datagram on the receive path. An IPv6 socket reports ``(host, port, flowinfo,
scope_id)``; the core's endpoints are ``(host, port)`` (docs/PROTOCOL.md, "13.4 Dual
stack"), so those two are taken.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import UserError
from comm_tui.net.udp import _endpoint, open_udp
from comm_tui.protocol.node import Node
from comm_tui.protocol.routing import Endpoint


def test_an_ipv4_address_is_passed_on_as_it_is_and_an_ipv6_one_is_cut_to_two() -> None:
    ipv4 = ("127.0.0.1", 4000)
    assert _endpoint(ipv4) is ipv4
    assert _endpoint(("::1", 4000, 0, 0)) == ("::1", 4000)


async def _seen(host: str, family: socket.AddressFamily) -> tuple[Endpoint, int]:
    """Send one datagram over real UDP to a node on ``host``; what the core was told it
    came from, and the sender's port."""
    node = Node(Identity.generate(), time.time())
    seen: list[Endpoint] = []
    receive = node.receive_datagram

    def recording(data: bytes, addr: Endpoint, now: float) -> None:
        seen.append(addr)
        receive(data, addr, now)

    node.receive_datagram = recording  # type: ignore[method-assign]
    protocol, (_, port) = await open_udp(node, (host, 0), lambda events: None)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as peer:
            peer.bind((host, 0))
            peer.sendto(b"\x01junk", (host, port))
            deadline = time.monotonic() + 5.0
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return seen[0], peer.getsockname()[1]
    finally:
        protocol.close()


async def test_the_core_hears_host_and_port_over_ipv4() -> None:
    addr, port = await _seen("127.0.0.1", socket.AF_INET)
    assert addr == ("127.0.0.1", port)


async def test_the_core_hears_host_and_port_over_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        addr, port = await _seen("::1", socket.AF_INET6)
    except (OSError, UserError) as exc:  # ::1 not configured (a container without IPv6 loopback)
        pytest.skip(f"no IPv6 loopback: {exc}")
    assert addr == ("::1", port) and len(addr) == 2
