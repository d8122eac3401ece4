"""The red-team findings against reachability, punching and LAN discovery, each pinned.

A review of the merged issue-10 code found ways to silence or misdirect nodes. Each test
here fails when its rule is switched off: unsolicited arrivals outweigh probes that an
attacker can make fail (a DialBack flood spending the helpers' budgets); newcomers cannot
flush the observation tally, and IPv6 observations count per /32; probes and punching
pings stay within the asker's scope (no aiming at our own LAN or machine from outside);
a client's bindings span networks; a relay's echo queue stays bounded; a mapping that no
longer lets probes in stops counting; beacons from global addresses are ignored.
"""

from __future__ import annotations

import os

import pytest

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.net.lan import BeaconReader, encode_beacon
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.punch import Punching
from comm_tui.protocol.reachability import (
    PROBE_RECHECK_S,
    PROBE_ROUNDS,
    PROBE_TIMEOUT_S,
    AttachTable,
    Prober,
    named_endpoint_allowed,
    probe_target_allowed,
    tally_network,
)
from comm_tui.protocol.routing import origin_network
from tests.wire import T0, Wire


def _fail_rounds(prober: Prober, now: float) -> float:
    for _ in range(PROBE_ROUNDS):
        prober.asked(os.urandom(16), b"h" * 32, now)
        now += PROBE_TIMEOUT_S
        prober.expire(now)
    return now


def test_probes_made_to_fail_do_not_outweigh_strangers_reaching_us() -> None:
    prober = Prober()
    assert prober.inbound(T0)  # a stranger's datagram came in: strangers reach us
    assert prober.outcome == "arrived"
    assert not prober.inbound(T0 + 1)  # no change the second time
    # Rounds whose probes never came (their helpers' budgets spent by a flood) are no
    # evidence against it while the arrival is recent.
    _fail_rounds(prober, T0 + 10)
    assert prober.outcome == "arrived"
    # Without any arrival for a recheck period, failed rounds do count.
    quiet = Prober()
    _fail_rounds(quiet, T0 + PROBE_RECHECK_S)
    assert quiet.outcome == "failed"


def test_an_unsolicited_datagram_makes_a_node_see_it_is_reachable() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    a.set_local_endpoints([wire.endpoint(a)], T0)
    wire.connect(a, b)
    before = a._reachability.prober.last_inbound
    # A stranger at an IP a never sent to: its authentic datagram proves inbound.
    stranger = wire.add(3)
    data = stranger._codec.encode_frame(
        a.identity.key, pb.Frame(ping=pb.Ping(challenge=b"c" * 16)), T0 + 5
    )
    a.receive_datagram(data, ("10.77.0.1", 4000), T0 + 5)
    assert a._reachability.prober.last_inbound == T0 + 5 != before
    # From an IP we sent to lately, it proves nothing (our own mapping let it in).
    data = stranger._codec.encode_frame(
        a.identity.key, pb.Frame(ping=pb.Ping(challenge=b"d" * 16)), T0 + 6
    )
    a.receive_datagram(data, wire.endpoint(b), T0 + 6)
    assert a._reachability.prober.last_inbound == T0 + 5


def test_observations_count_per_ipv6_32_and_ipv4_24() -> None:
    assert tally_network(("2001:db8:1::1", 1)) == tally_network(("2001:db8:ffff::1", 2))
    assert tally_network(("2001:db8::1", 1)) != tally_network(("2001:db9::1", 1))
    assert tally_network(("198.18.5.1", 1)) == "198.18.5.0/24"
    assert tally_network(("::ffff:198.18.5.1", 1)) == "198.18.5.0/24"
    assert tally_network(("127.0.0.1", 5)) != tally_network(("127.0.0.1", 6))


@pytest.mark.parametrize(
    ("target", "asker", "allowed"),
    [
        (("8.8.8.8", 4000), ("1.1.1.1", 5000), True),
        (("10.0.0.5", 4000), ("1.1.1.1", 5000), False),  # a stranger aiming at our LAN
        (("192.168.1.255", 4000), ("1.1.1.1", 5000), False),
        (("169.254.0.1", 4000), ("1.1.1.1", 5000), False),
        (("fe80::1", 4000), ("2606:4700::1", 5000), False),
        (("127.0.0.1", 4000), ("1.1.1.1", 5000), False),
        (("127.0.0.1", 4000), ("127.0.0.1", 5000), True),
        (("198.18.0.9", 4000), ("198.18.1.1", 5000), True),  # the test ranges, among themselves
        (("8.8.8.8", 4000), ("198.18.1.1", 5000), False),
        (("224.0.0.1", 4000), ("1.1.1.1", 5000), False),
    ],
)
def test_probe_targets_stay_in_the_askers_scope(
    target: tuple[str, int], asker: tuple[str, int], allowed: bool
) -> None:
    assert probe_target_allowed(target, asker) is allowed


@pytest.mark.parametrize(
    ("target", "namer", "allowed"),
    [
        (("8.8.8.8", 4000), ("1.1.1.1", 5000), True),
        (("10.0.0.5", 4000), ("1.1.1.1", 5000), False),  # an internet peer naming our LAN
        (("fd00::5", 4000), ("2606:4700::1", 5000), False),
        (("127.0.0.1", 11211), ("1.1.1.1", 5000), False),  # ... or our own machine
        (("::1", 53), ("2606:4700::1", 5000), False),
        (("127.0.0.1", 4000), ("192.168.1.2", 5000), False),  # a LAN host: not our machine
        (("192.168.1.9", 4000), ("192.168.1.2", 5000), True),  # LAN peers name LAN peers
        (("8.8.8.8", 4000), ("192.168.1.2", 5000), True),  # ... and internet ones
        (("127.0.0.1", 4000), ("127.0.0.1", 5000), True),  # the tests' loopback networks
        (("8.8.8.8", 4000), ("127.0.0.1", 5000), True),
        (("::ffff:10.0.0.5", 4000), ("::ffff:1.1.1.1", 5000), False),  # mapped is IPv4
        # IPv6 forms that carry an IPv4 address are no farther out than it (red6).
        (("::127.0.0.1", 4000), ("2606:4700::1", 5000), False),
        (("::ffff:0:7f00:1", 4000), ("2606:4700::1", 5000), False),
        (("64:ff9b::a00:1", 4000), ("2606:4700::1", 5000), False),
        (("2002:7f00:1::1", 4000), ("2606:4700::1", 5000), False),
        (("2002:808:808::1", 4000), ("2606:4700::1", 5000), True),  # 6to4 of 8.8.8.8
        (("64:ff9b::808:808", 4000), ("2606:4700::1", 5000), True),
        (("224.0.0.251", 5353), ("192.168.1.2", 5000), False),
        (("255.255.255.255", 4000), ("127.0.0.1", 5000), False),
        (("8.8.8.8", 0), ("1.1.1.1", 5000), False),
    ],
)
def test_nodes_entries_name_endpoints_no_nearer_to_us_than_the_answerer(
    target: tuple[str, int], namer: tuple[str, int], allowed: bool
) -> None:
    """docs/PROTOCOL.md, "4" (red5, finding 10): a lookup sends every entry of a Nodes
    answer a FindNode, so an entry may not be nearer to us than the peer naming it."""
    assert named_endpoint_allowed(target, namer) is allowed


def test_a_relay_cannot_aim_our_punching_pings_at_our_lan() -> None:
    me_key, contact, relay = (Identity.generate().key for _ in range(3))
    me = Punching(me_key, T0)
    me.set_contacts([contact])
    relay_at = ("8.8.8.8", 4000)
    for ip in (bytes([10, 0, 0, 1]), bytes([127, 0, 0, 1])):
        nonce = me._ask(relay, relay_at, address_of(contact), T0).frame.introduce.nonce
        answer = pb.Introduced(key=contact, nonce=nonce, ip=ip, port=4000)
        with pytest.raises(Rejected, match="bad_target"):
            me.on_answer(relay, relay_at, answer, T0)
    # An IPv4-mapped address is the IPv4 one: pings go (and pongs come) there.
    nonce = me._ask(relay, relay_at, address_of(contact), T0).frame.introduce.nonce
    mapped = bytes(10) + b"\xff\xff" + bytes([9, 9, 9, 9])
    sends = me.on_answer(
        relay, relay_at, pb.Introduced(key=contact, nonce=nonce, ip=mapped, port=4000), T0
    )
    assert [s.endpoint for s in sends] == [("9.9.9.9", 4000)]


def test_a_clients_bindings_span_networks() -> None:
    wire = Wire()
    client = wire.add(1)
    # Many keys from two networks sit nearest the client's address (ground there by an
    # attacker): the client binds to at most one of each, and to others beyond them.
    nodes = [wire.add(10 + i) for i in range(12)]
    nodes.sort(
        key=lambda n: int.from_bytes(n.address, "big") ^ int.from_bytes(client.address, "big")
    )
    for i, node in enumerate(nodes):
        net = i % 2 if i < 8 else i  # the 8 nearest: two networks, the others one each
        client._table.observe(node.identity.key, node.address, (f"198.18.{net}.{i}", 4000), T0)
    chosen = client._reachability.binding_relays()
    networks = [origin_network(n.endpoint) for n in chosen]
    assert len(chosen) == 4 and len(set(networks)) == 4


def test_the_delayed_echo_queue_stays_bounded() -> None:
    table = AttachTable()
    key = Identity.generate().key
    address = address_of(key)
    for i in range(5000):
        table.attach(address, key, ("198.18.0.1", 4000), "198.18.0.0/24", 20, T0)
        table.owe_echo(address, os.urandom(16), T0 + 30 + i / 1000)
    assert len(table._echoes) <= 2 * len(table) + 16
    assert len(table.echoes_due(T0 + 100)) == 1  # one echo per client, the latest


def test_a_mapping_that_stops_letting_probes_in_stops_counting() -> None:
    prober = Prober()
    nonce = os.urandom(16)
    prober.asked(nonce, b"h" * 32, T0, mapping=True)
    assert prober.arrived(nonce, solicited=False, now=T0 + 1) and prober.mapping_ok
    prober.asked(os.urandom(16), b"h" * 32, T0 + 10, mapping=True)
    prober.expire(T0 + 10 + PROBE_TIMEOUT_S)
    assert not prober.mapping_ok


def test_beacons_from_global_addresses_are_ignored() -> None:
    reader = BeaconReader(Identity.generate().key, T0)
    other = Identity.generate()
    beacon = encode_beacon(other, 7400, T0)
    assert reader.read(beacon, ("8.8.8.8", 47177), T0) is None
    assert reader.read(beacon, ("::ffff:8.8.8.8", 47177), T0) is None
    assert reader.read(beacon, ("192.168.1.20", 47177), T0) is not None
