"""The asyncio UDP adapter: the only place where the protocol core meets a socket.

Shaped like aioquic's ``asyncio/protocol.py``: on every datagram or timer it feeds
the core with the wall-clock time, hands the core's events to a callback (which
persists them), and only then transmits what the core wants sent, so nothing is
announced to the network before it is on disk. With a group commit attached
(``comm_tui/net/commit.py``) the events and datagrams go to it instead, and it transmits
each batch's datagrams once the batch is committed. One ``call_later`` timer is
re-armed after each step in which the core's deadline changed (only then: see ``pump``).

asyncio hands a datagram protocol one datagram per loop iteration. On a socket we bound
(``open_udp``), the adapter takes what else is already queued, up to ``READ_BATCH``, before
it pumps: one pump then hands over one ``StoreChanged`` for all of them and makes one
group-commit batch (their receipts gather per peer for up to 25 ms anyway,
docs/PROTOCOL.md, "4. Frames", Receipt).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from comm_tui.errors import UserError
from comm_tui.net.commit import Datagram, GroupCommit
from comm_tui.protocol.events import Event
from comm_tui.protocol.node import Node
from comm_tui.protocol.routing import Endpoint

# Datagrams taken from the socket before one pump, at most: enough that a busy relay's
# writes go in few batches, few enough that one pump stays short on a shared loop.
READ_BATCH = 16
# The largest datagram read (a UDP payload cannot be larger).
READ_BYTES = 65535

EventSink = Callable[[list[Event]], None]
FailureSink = Callable[[Exception], None]


class NodeProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        node: Node,
        on_events: EventSink,
        clock: Callable[[], float] = time.time,
        on_failure: FailureSink | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.node = node
        self.on_events = on_events
        self.on_failure = on_failure
        self.clock = clock
        self.failure: Exception | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0
        # An IPv6 socket (dual stack on "::") sends to IPv4 peers by their mapped form.
        self._ipv6 = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # the core's timer deadline the armed timer is for
        self._loop = asyncio.get_running_loop()
        # Set by a durable owner (NodeService): then it decides when datagrams go out.
        self.journal: GroupCommit[Any] | None = None
        # The bound socket the transport reads (non-blocking), to take what else is
        # queued before a pump; None: one datagram per pump.
        self._sock = sock
        self.batched_reads = 0  # datagrams taken that way (for benchmarks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = self.transport.get_extra_info("socket")
        self._ipv6 = sock is not None and sock.family == socket.AF_INET6
        self.pump()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.node.receive_datagram(data, _endpoint(addr), self.clock())
        self._read_queued()
        self.pump()

    def _read_queued(self) -> None:
        """Feed the core what else is queued on the socket (``READ_BATCH`` in all), so
        that one pump answers them together. Errors are the transport's: an ICMP error
        is counted as ``error_received`` counts it, and reading stops there."""
        sock = self._sock
        if sock is None or self.transport is None:
            return
        for _ in range(READ_BATCH - 1):
            try:
                data, addr = sock.recvfrom(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.send_errors += 1
                return
            self.batched_reads += 1
            self.node.receive_datagram(data, _endpoint(addr), self.clock())

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a peer's port closed) arrive here; liveness handles the peer.
        self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None
        self._sock = None  # closed with the transport

    def pump(self) -> None:
        """Persist what happened, then send, then re-arm the one timer.

        With a journal the events and datagrams go to it, which sends the datagrams
        once what they depend on is committed; otherwise ``on_events`` runs first.
        """
        events = self.node.drain_events()
        if self.failure is not None:
            return
        datagrams, receipts = [], []
        if self.transport is not None:
            datagrams = self.node.datagrams_to_send()
            receipts = self.node.receipts_to_send()  # none unless the node holds them apart
        if self.journal is not None:
            self.journal.add(events, datagrams, receipts)
        else:
            if events:
                try:
                    self.on_events(events)
                except Exception as exc:  # any failure to persist: fail-stop, send nothing
                    self.fail(exc)
                    return
            self.transmit(datagrams)
            self.transmit(receipts)
        if self.transport is None or self.failure is not None:
            return
        deadline = self.node.get_timer()
        if self._timer is not None:
            if deadline == self._deadline:
                # The armed timer is still the right one. Never re-arm it for the same
                # deadline: a due timer waits in the loop's queue behind the datagrams
                # of the same iteration, and re-arming from their pump cancelled it for
                # one queued behind the next datagram, so a node that heard something
                # every iteration ran its retries and timeouts seconds late.
                return
            self._timer.cancel()
        self._deadline = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)

    def transmit(self, datagrams: list[Datagram]) -> None:
        """Send datagrams the core produced (whatever they depend on is durable by now)."""
        if self.transport is None:
            return
        for data, endpoint in datagrams:
            if self._ipv6 and ":" not in endpoint[0]:
                endpoint = ("::ffff:" + endpoint[0], endpoint[1])  # docs/PROTOCOL.md, "13.4"
            try:
                self.transport.sendto(data, endpoint)
            except OSError:
                self.send_errors += 1

    def fail(self, exc: Exception) -> None:
        """Stop for good because what happened could not be made durable.

        The datagrams the core produced alongside (receipts, acks) are discarded:
        announcing that we hold something we could not write down would lose it.
        """
        self.failure = exc
        self.node.datagrams_to_send()
        self.node.receipts_to_send()
        self.close()
        if self.on_failure is not None:
            self.on_failure(exc)

    def _on_timer(self) -> None:
        self._timer = None
        if self.failure is not None:
            return
        try:
            self.node.handle_timer(self.clock())
        finally:
            # Whatever happened in there, the node keeps its clock: a bug in one retry
            # must not stop every later one (the exception still reaches the loop's log).
            self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


def _endpoint(addr: tuple[Any, ...]) -> Endpoint:
    """The (host, port) a datagram came from. An IPv4 socket's address is that pair
    already, and is passed on as it is (no new tuple per datagram); an IPv6 socket's
    carries flow info and scope id too, which the core does not use."""
    return addr if len(addr) == 2 else (addr[0], addr[1])


def _bind(listen: Endpoint) -> socket.socket:
    """A bound UDP socket; on the IPv6 wildcard ``::`` one that takes IPv4 as well.

    docs/PROTOCOL.md, "13.4 Dual stack": ``[::]:PORT`` is one socket for both families
    (``IPV6_V6ONLY`` off), whatever the system's default for new sockets is.
    """
    host, port = listen
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind, as IPv4
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_udp(
    node: Node, listen: Endpoint, on_events: EventSink, on_failure: FailureSink | None = None
) -> tuple[NodeProtocol, Endpoint]:
    """Bind ``listen`` and start driving ``node``; a clear UserError if the port is taken."""
    loop = asyncio.get_running_loop()
    host, port = listen
    try:
        sock = _bind(listen)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"cannot listen on {host}:{port}: the port is already in use") from exc
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: NodeProtocol(node, on_events, on_failure=on_failure, sock=sock), sock=sock
    )
    sockname = transport.get_extra_info("sockname")
    return protocol, (str(sockname[0]), int(sockname[1]))
