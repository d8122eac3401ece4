"""Port mapping on emulated networks (docs/PROTOCOL.md, "14. Port mapping"): a real
``comm-tui node`` behind a NAT router that runs Debian's miniupnpd, or our test responder
that installs the DNAT rule each mapping stands for."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import check_netns
from tests.netns.features import mapping_rules, start_pmp_responder, wait_mapping
from tests.netns.harness import DEFAULT_PORT, Internet, NsProcess, Router, netns_required

MAPPING_TARGET_S = 5.0  # issue 10: a mapping within 5 s of start
MINIUPNPD_CHAINS = ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd")


def _start_miniupnpd(router: Router) -> NsProcess:
    """Debian's miniupnpd (nftables) serving the router's LAN, NAT-PMP/PCP and UPnP on."""
    lan_net = router.lan_ip.rsplit(".", 1)[0] + ".0/24"
    conf = router.dir / "miniupnpd.conf"
    conf.write_text(
        "ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=yes\n"
        "secure_mode=yes\nsystem_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n"
        f"allow 1024-65535 {lan_net} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    )
    # Debian's package lacks the script its nft_init.sh sources: make its chains here.
    router.nft("".join(f"add chain inet filter {chain}\n" for chain in MINIUPNPD_CHAINS))
    proc = router.run(["miniupnpd", "-d", "-f", str(conf), "-P", str(router.dir / "pid")])
    deadline = time.monotonic() + 10.0
    log = Path(proc.stderr_path)
    while "Listening for NAT-PMP/PCP traffic" not in log.read_text(errors="replace"):
        assert proc.popen.poll() is None, f"miniupnpd exited: {proc.stderr_tail()}"
        assert time.monotonic() < deadline, f"miniupnpd not ready: {proc.stderr_tail()}"
        time.sleep(0.05)
    return proc


def test_miniupnpd_is_found_and_its_refusal_is_handled(net: Internet) -> None:
    if shutil.which("miniupnpd") is None:
        check_netns(
            "'miniupnpd' is not installed (apt-get install miniupnpd-nftables)", netns_required()
        )
    home = net.nat_router("home", kind="restricted")
    alice = home.host("alice")
    daemon = _start_miniupnpd(home)
    node = alice.node()
    # All three protocols reach the daemon through the default route's gateway, and each
    # refusal (its external address 198.18.x.2 is reserved) is said in words.
    line = node.wait_for_line(r"port mapping: (.*)$", timeout_s=10.0).group(1)
    gateway = re.escape(home.lan_ip)
    assert re.fullmatch(
        rf"none \(refused by {gateway}: PCP: [a-z ]+; NAT-PMP: [a-z ]+; UPnP-IGD: error 501 \w+\)",
        line,
    ), line
    assert daemon.popen.poll() is None
    for chain in MINIUPNPD_CHAINS:  # nothing half-made in the daemon's chains
        listing = home.exec_ns(["nft", "list", "chain", "inet", "filter", chain]).stdout
        assert "udp" not in listing and "dnat to" not in listing, listing
    assert node.stop() == 0
    node.wait_for_line(r" stopped$", timeout_s=1.0)
    assert not [line for line in node.seen if "port mapping: removed" in line]


def test_mapping_opens_the_port_within_5_s_and_is_removed_on_exit(net: Internet) -> None:
    home = net.nat_router("home", kind="restricted")
    alice = home.host("alice")
    mapped_endpoint = f"{home.wan_ip}:{DEFAULT_PORT}"
    # The control: with no one to map, the restricted NAT keeps a stranger out.
    node = alice.node()
    node.wait_for_line(r"port mapping: none \(no gateway answered\)$", timeout_s=5.0)
    locked_out = net.public_host("locked-out").agent(bootstrap=[mapped_endpoint])
    with pytest.raises(AssertionError, match="fewer than 1 peers"):
        locked_out.wait_peers(1, timeout_s=2.0)
    assert int(locked_out.status()["stats"]["datagrams_in"]) == 0  # not even an answer
    # It would keep retrying its bootstrap and reach Alice through the mapping made below,
    # before the stranger: the stranger's first contact would not be the one tested.
    locked_out.quit()
    assert node.stop() == 0

    responder = start_pmp_responder(home)
    started = time.monotonic()
    node = alice.node()
    match = node.wait_for_line(r"port mapping: udp (\S+):(\d+) via (\S+), (\d+) s$")
    assert (match.group(1), int(match.group(2))) == (home.wan_ip, DEFAULT_PORT)
    assert (match.group(3), match.group(4)) == ("PCP", "7200")
    assert wait_mapping(home, responder, present=True, timeout_s=MAPPING_TARGET_S)
    took = time.monotonic() - started
    assert took < MAPPING_TARGET_S, f"mapped after {took:.2f} s"
    assert mapping_rules(home) == [
        f"ip daddr {home.wan_ip} udp dport {DEFAULT_PORT} dnat to {alice.ip}:{DEFAULT_PORT}"
    ]
    # From outside and unsolicited (Alice never sent to it): a node that knows only the
    # mapped endpoint reaches Alice through the restricted NAT, and she answers. That its
    # arrival then confirms her mapping once a Pong shows her where she is seen (she is a
    # public relay, docs/PROTOCOL.md, "12.2", "Port mappings") is pinned on the sans-IO
    # NAT harness (tests/test_reachability.py): here no Pong comes within the test.
    stranger = net.public_host("outside").agent(bootstrap=[mapped_endpoint])
    deadline = time.monotonic() + 5.0
    while int(stranger.status()["stats"]["datagrams_in"]) == 0:
        assert time.monotonic() < deadline, "no answer from Alice through the mapping in 5 s"
        time.sleep(0.1)
    # A clean exit deletes the mapping: the rule is gone.
    stopping = time.monotonic()
    assert node.stop() == 0
    node.wait_for_line(r"port mapping: removed$", timeout_s=1.0)
    assert wait_mapping(home, responder, present=False, timeout_s=2.0)
    assert time.monotonic() - stopping < 2.0 + 1.0
    responder.wait_for_line(rf"^unmapped {DEFAULT_PORT}$", timeout_s=1.0)


RELAYS = 4  # public nodes of distinct networks: 3 at least must see Alice where she is (12.1)


def _reachability(check: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    """An agent event whose node's reachability passes ``check``."""

    def match(event: dict[str, Any]) -> bool:
        reach = event.get("reachability")
        return isinstance(reach, dict) and check(reach)

    return match


def test_a_mapped_node_becomes_a_public_relay_once_a_stranger_arrives(net: Internet) -> None:
    """docs/PROTOCOL.md, "12.2", "Port mappings": a mapping is a candidate until evidence
    confirms it; then the node is public at the mapped endpoint and leaves client mode
    (12.4). End to end through a real restricted NAT, the PCP responder's DNAT rule and
    real processes: Alice's peers of several networks see her at the mapped endpoint (the
    NAT keeps her port), and a stranger who knows only that endpoint reaches her
    unsolicited (probes from the hosts she talks to prove nothing: her own datagrams may
    have opened the way), which confirms it (the sans-IO rules: tests/test_reachability.py)."""
    home = net.nat_router("home", kind="restricted")
    alice_host = home.host("alice")
    start_pmp_responder(home)
    relays = [net.public_host(f"relay{i}") for i in range(RELAYS)]
    bootstrap = [relays[0].endpoint()]
    agents = [relays[0].agent()]
    agents += [relay.agent(bootstrap=bootstrap) for relay in relays[1:]]
    alice = alice_host.agent(bootstrap=bootstrap)
    mapped: list[object] = [home.wan_ip, DEFAULT_PORT]
    alice.wait_event(
        _reachability(lambda reach: reach.get("public_endpoint") == mapped), timeout_s=12.0
    )
    stranger = net.public_host("stranger").agent(bootstrap=[f"{home.wan_ip}:{DEFAULT_PORT}"])
    alice.wait_event(_reachability(lambda reach: reach.get("kind") == "public"), timeout_s=8.0)
    status = alice.status()
    assert status["reachability"]["public_endpoint"] == mapped, status["reachability"]
    assert status["client_mode"] is False
    stranger.wait_peers(1, timeout_s=5.0)
    for agent in [stranger, alice, *agents]:
        agent.quit()


@pytest.fixture(autouse=True)
def _bounded(request: pytest.FixtureRequest) -> None:
    """Each test here is bounded well under the 30 s all port-mapping netns tests may take."""
    request.node.add_marker(pytest.mark.timeout(25))
