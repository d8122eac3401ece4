"""LAN discovery and joining on emulated networks (docs/PROTOCOL.md, "13"), real processes.

The issue's two targets (a LAN text within 5 s, a join from a card within 5 s) are in
``test_targets.py``; here is what a hostile host on the LAN can and cannot do.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.netns.harness import Internet
from tests.netns.scenarios import introduce

REPLAYER = Path(__file__).with_name("beacon_replayer.py")
AGENT_PORT = 7400


@pytest.mark.timeout(40)
def test_a_lan_host_replaying_or_forging_beacons_gets_nowhere(net: Internet) -> None:
    """Mallory replays Alice's beacons from her own address and forges some with Alice's
    key: Bob only ever pings Alice's key at Mallory's address (which cannot answer it),
    never takes Mallory for Alice, and Alice's texts still reach him."""
    lan = net.lan("office")
    mallory_host, bob_host, alice_host = lan.host("mallory"), lan.host("bob"), lan.host("alice")
    replayer = mallory_host.run([sys.executable, str(REPLAYER), mallory_host.ip, str(AGENT_PORT)])
    replayer.wait_for_line(r"^ready$", 10)
    bob = bob_host.agent(port=AGENT_PORT)
    started = time.monotonic()
    alice = alice_host.agent(port=AGENT_PORT)
    replayer.wait_for_line(r"^replayed \d+", 10)
    replayer.wait_for_line(r"^forged \d+", 10)
    introduce(alice, bob)
    sent = alice.send(bob.card, "still me")
    bob.received(str(sent["text_id"]), 10)
    lan_text_s = time.monotonic() - started
    # The replay made Bob ping Alice's key where the beacon came from: Mallory's host.
    # Mallory replays every beacon, Bob's too, so Alice may ping her first: wait for Bob's.
    replayer.wait_for_line(rf"^got \d+ {re.escape(bob_host.ip)}$", 10)
    bob.quit()
    alice.quit()
    db = Database.open(profile_paths("default", bob_host.data_dir).database)
    try:
        peers = {(key.hex(), host) for key, host, _, _ in db.load_peers()}
    finally:
        db.close()
    alice_key = str(alice.info["key"])
    assert (alice_key, alice_host.ip) in peers
    assert all(host != mallory_host.ip for _, host in peers), peers
    assert lan_text_s < 10, lan_text_s


@pytest.mark.timeout(40)
def test_lan_discovery_over_ipv6_alone(net6: Internet) -> None:
    """Nodes listening on IPv6 addresses only beacon to ff02::636f:6d6d and find each other."""
    lan = net6.lan("office", hosts=2)
    one, two = lan.hosts
    assert one.ipv6 is not None and two.ipv6 is not None
    a = one.agent(listen_ip=f"[{one.ipv6}]")
    b = two.agent(listen_ip=f"[{two.ipv6}]")
    introduce(a, b)
    sent = a.send(b.card, "over IPv6")
    b.received(str(sent["text_id"]), 10)
    b.quit()
    db = Database.open(profile_paths("default", two.data_dir).database)
    try:
        hosts = [host for _, host, _, _ in db.load_peers()]
    finally:
        db.close()
    assert hosts == [one.ipv6]
