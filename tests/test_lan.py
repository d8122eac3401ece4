"""LAN discovery: signed beacons, their limits, and what a beacon may make a node do."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.errors import UserError
from comm_tui.net.lan import (
    BEACON_BYTES,
    BEACON_KEYS_MAX,
    BEACON_MAX_AGE_S,
    BEACON_RECHECK_S,
    BEACONS_BURST,
    BEACONS_PER_SOURCE_BURST,
    LAN_PORT,
    PORT_ENV,
    BeaconReader,
    LanBeacon,
    LanOptions,
    Sighting,
    beacon_source,
    encode_beacon,
    lan_families,
)
from comm_tui.net.service import IncomingText, NodeService, ServiceEvent
from comm_tui.store.db import Database
from tests.wire import peer_addresses

T0 = 1_800_000_000.0
ME = Identity.from_seed(b"\x01" * 32)
ALICE = Identity.from_seed(b"\x02" * 32)
MALLORY = Identity.from_seed(b"\x03" * 32)
WAIT_S = 10.0
LO = [socket.if_nametoindex("lo")]


def reader() -> BeaconReader:
    return BeaconReader(ME.key, T0)


def test_a_beacon_names_the_key_at_its_source_host_and_the_named_port() -> None:
    r = reader()
    beacon = encode_beacon(ALICE, 7000, T0)
    assert len(beacon) == BEACON_BYTES == 111
    # The source port is the beacon socket's; the node's port is the one named.
    assert r.read(beacon, ("10.1.2.3", 47177), T0) == Sighting(ALICE.key, ("10.1.2.3", 7000))
    assert r.accepted == 1


def test_an_ipv4_mapped_source_is_the_ipv4_host() -> None:
    sighting = reader().read(encode_beacon(ALICE, 7000, T0), ("::ffff:10.1.2.3", 1), T0)
    assert sighting == Sighting(ALICE.key, ("10.1.2.3", 7000))


def test_a_forged_signature_is_refused() -> None:
    r = reader()
    beacon = bytearray(encode_beacon(ALICE, 7000, T0))
    beacon[-1] ^= 1
    assert r.read(bytes(beacon), ("10.1.2.3", 1), T0) is None
    # Alice's key in a beacon Mallory signed: the field says Alice, the signature does not.
    forged = bytearray(encode_beacon(MALLORY, 7000, T0))
    forged[5:37] = ALICE.key
    assert r.read(bytes(forged), ("10.1.2.3", 1), T0) is None
    assert r.rejected["bad_signature"] == 2
    assert r.accepted == 0


@pytest.mark.parametrize("age", [BEACON_MAX_AGE_S + 1, -(BEACON_MAX_AGE_S + 1)])
def test_a_stale_or_future_beacon_is_refused(age: float) -> None:
    r = reader()
    assert r.read(encode_beacon(ALICE, 7000, T0 - age), ("10.1.2.3", 1), T0) is None
    assert r.rejected["stale"] == 1
    assert r.read(encode_beacon(ALICE, 7000, T0 - age * 0.9), ("10.1.2.3", 1), T0) is not None


def test_our_own_beacon_is_ignored_without_counting() -> None:
    r = reader()
    assert r.read(encode_beacon(ME, 7000, T0), ("10.1.2.3", 1), T0) is None
    assert not r.rejected and r.accepted == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (encode_beacon(ALICE, 7000, T0)[:-1], "malformed"),
        (b"XXXX" + encode_beacon(ALICE, 7000, T0)[4:], "malformed"),
        (
            encode_beacon(ALICE, 7000, T0)[:4] + b"\x02" + encode_beacon(ALICE, 7000, T0)[5:],
            "unknown_version",
        ),
        (encode_beacon(ALICE, 0, T0), "bad_endpoint"),
    ],
)
def test_malformed_beacons_are_counted_by_reason(data: bytes, reason: str) -> None:
    r = reader()
    assert r.read(data, ("10.1.2.3", 1), T0) is None
    assert r.rejected == {reason: 1}


def test_a_key_at_the_same_endpoint_leads_to_a_ping_at_most_every_recheck_interval() -> None:
    r = reader()
    beacon = encode_beacon(ALICE, 7000, T0)
    assert r.read(beacon, ("10.1.2.3", 1), T0) is not None
    assert r.read(beacon, ("10.1.2.3", 1), T0 + BEACON_RECHECK_S - 1) is None
    assert r.rejected["repeated"] == 1
    assert r.read(beacon, ("10.1.2.3", 1), T0 + BEACON_RECHECK_S + 1) is not None
    # From another host it is a new endpoint: tried at once (only the key's holder answers).
    assert r.read(beacon, ("10.1.2.4", 1), T0 + BEACON_RECHECK_S + 2) is not None


def test_each_source_gets_a_few_beacons_checked_before_the_signature_is_tried() -> None:
    r = reader()
    junk = bytearray(encode_beacon(ALICE, 7000, T0))
    junk[-1] ^= 1
    for _ in range(20):
        r.read(bytes(junk), ("10.1.2.3", 1), T0)
    assert r.rejected["bad_signature"] == BEACONS_PER_SOURCE_BURST
    assert r.rejected["rate_limited"] == 20 - BEACONS_PER_SOURCE_BURST
    # Another source is not silenced by the first.
    assert r.read(encode_beacon(ALICE, 7000, T0), ("10.1.2.4", 1), T0) is not None


def test_all_sources_together_are_bounded() -> None:
    r = reader()
    junk = bytearray(encode_beacon(ALICE, 7000, T0))
    junk[-1] ^= 1
    for i in range(300):
        r.read(bytes(junk), (f"10.1.{i // 250}.{i % 250}", 1), T0)
    assert r.rejected["bad_signature"] == BEACONS_BURST
    assert r.rejected["rate_limited"] == 300 - BEACONS_BURST


def test_distinct_keys_remembered_are_bounded() -> None:
    r = reader()
    first = encode_beacon(ALICE, 7000, T0)
    assert r.read(first, ("10.9.0.1", 1), T0) is not None
    for i in range(BEACON_KEYS_MAX):
        other = Identity.from_seed(i.to_bytes(2, "big") * 16)
        r._all.tokens = r._all.burst  # this test is about keys, not the rate
        assert r.read(encode_beacon(other, 7000, T0), (f"10.2.{i // 250}.{i % 250}", 1), T0)
    assert len(r._keys) == BEACON_KEYS_MAX
    # Alice was the least recently seen key: forgotten, so her beacon counts as new again.
    r._all.tokens = r._all.burst
    assert r.read(first, ("10.9.0.1", 1), T0 + 1) is not None


def test_families_follow_the_node_socket() -> None:
    assert lan_families(("127.0.0.1", 7000)) == []
    assert lan_families(("::1", 7000)) == []
    assert lan_families(("0.0.0.0", 7000)) == [socket.AF_INET]
    assert lan_families(("::", 7000)) == [socket.AF_INET, socket.AF_INET6]
    assert lan_families(("2001:2::5", 7000)) == [socket.AF_INET6]
    assert lan_families(("198.18.0.5", 7000)) == [socket.AF_INET]
    # One global address: beacons would leave from it, and receivers ignore those.
    assert lan_families(("2a00:1450::1", 7000)) == []
    assert lan_families(("8.8.8.8", 7000)) == []


def test_a_node_on_one_address_beacons_from_it() -> None:
    """The beacon's source is where receivers ping us (docs/PROTOCOL.md, "13.1")."""
    assert beacon_source(("2001:2::5", 7000)) == "2001:2::5"
    assert beacon_source(("198.18.0.5", 7000)) == "198.18.0.5"
    assert beacon_source(("::ffff:198.18.0.5", 7000)) == "198.18.0.5"
    assert beacon_source(("::", 7000)) is None
    assert beacon_source(("0.0.0.0", 7000)) is None


async def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _test_options() -> LanOptions:
    # Port 0: each test's beacon sockets are its own; loopback only, IPv4.
    return LanOptions(port=0, interfaces=lambda: LO, families=(socket.AF_INET,))


async def test_multicast_beacons_on_loopback_reach_another_listener() -> None:
    """Two beacon sockets on one group: each hears the other's announcement."""
    heard: list[Sighting] = []
    first = LanBeacon(ALICE, 7001, [], lambda s, now: heard.append(s), options=_test_options())
    await first.start()
    port = first.bound_ports[0]
    options = LanOptions(port=port, interfaces=lambda: LO, families=(socket.AF_INET,))
    second = LanBeacon(MALLORY, 7002, [], lambda s, now: None, options=options)
    try:
        await second.start()
        if not second.bound_ports:
            pytest.skip(f"multicast on loopback is not available: {second.unavailable}")
        second.announce()
        await _until(lambda: heard, "the beacon to arrive")
        assert heard[0].key == MALLORY.key and heard[0].endpoint[1] == 7002
    finally:
        await first.stop()
        await second.stop()


async def test_a_beacon_leaves_from_the_address_the_node_listens_on() -> None:
    """Sent with a source, the beacon names that address, not the interface's preferred one
    (a node bound to one IPv6 address was otherwise pinged at its link-local address)."""
    heard: list[Sighting] = []
    first = LanBeacon(ALICE, 7001, [], lambda s, now: heard.append(s), options=_test_options())
    await first.start()
    options = LanOptions(
        port=first.bound_ports[0], interfaces=lambda: LO, families=(socket.AF_INET,)
    )
    second = LanBeacon(MALLORY, 7002, [], lambda s, now: None, options=options, source="127.0.0.2")
    try:
        await second.start()
        if not second.bound_ports:
            pytest.skip(f"multicast on loopback is not available: {second.unavailable}")
        second.announce()
        await _until(lambda: heard, "the beacon to arrive")
        assert heard[0].endpoint == ("127.0.0.2", 7002)
    finally:
        await first.stop()
        await second.stop()


async def test_a_beacon_makes_a_node_without_peers_find_the_sender(tmp_path: Path) -> None:
    """A sees B's beacon (unicast here, to its beacon socket), pings, and they exchange a text."""
    received: list[ServiceEvent] = []
    a = NodeService(
        Identity.generate(),
        Database.open(tmp_path / "a.db"),
        listen=("127.0.0.1", 0),
        lan=_test_options(),
    )
    b = NodeService(Identity.generate(), Database.open(tmp_path / "b.db"), listen=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await a.start()
        bound_b = await b.start()
        assert a.lan is not None
        beacon_port = a.lan.bound_ports[0]
        # Mallory signs a beacon naming her own socket: nothing of B's.
        mallory_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mallory_sock.bind(("127.0.0.1", 0))
        forged = bytearray(encode_beacon(MALLORY, mallory_sock.getsockname()[1], time.time()))
        forged[5:37] = b.identity.key
        sender.sendto(bytes(forged), ("127.0.0.1", beacon_port))
        await _until(
            lambda: a.lan is not None and a.lan.reader.rejected["bad_signature"], "refusal"
        )
        assert a.node.peer_count == 0
        mallory_sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            mallory_sock.recv(2048)  # the forged beacon made A send nothing to Mallory
        mallory_sock.close()

        b.subscribe(received.append)
        sender.sendto(
            encode_beacon(b.identity, bound_b[1], time.time()), ("127.0.0.1", beacon_port)
        )
        await _until(
            lambda: (
                b.identity.address in peer_addresses(a.node)
                and a.identity.address in peer_addresses(b.node)
            ),
            "the two nodes to know each other",
        )
        a.send_text(b.identity.public, "found you on the LAN")
        await _until(lambda: any(isinstance(e, IncomingText) for e in received), "the text")
    finally:
        sender.close()
        for service in (a, b):
            await service.stop()
            service.db.close()
    assert a.lan is not None and not a.lan.bound_ports  # stop closed the beacon sockets


def test_the_group_port_is_the_default_or_the_one_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/PROTOCOL.md, "13.1 LAN discovery": COMM_TUI_LAN_PORT gives a group of its own."""
    monkeypatch.delenv(PORT_ENV, raising=False)
    assert LanOptions().port == LAN_PORT == 47177
    monkeypatch.setenv(PORT_ENV, "")
    assert LanOptions().port == LAN_PORT
    monkeypatch.setenv(PORT_ENV, " 23456 ")
    assert LanOptions().port == 23456
    assert LanOptions(port=0).port == 0  # an explicit port still wins
    for bad in ("0", "65536", "-1", "port", "7400x"):
        monkeypatch.setenv(PORT_ENV, bad)
        with pytest.raises(UserError, match=PORT_ENV):
            LanOptions()
    monkeypatch.setenv(PORT_ENV, "65535")
    assert LanOptions().port == 65535
    monkeypatch.setenv(PORT_ENV, "1")
    assert LanOptions().port == 1
