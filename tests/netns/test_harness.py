"""The emulated networks behave as their names say, and leave nothing behind.

Plain UDP sockets (``tests/netns/udptool.py``) in the namespaces: what a server sees
as the source of a host behind each NAT kind, which unsolicited datagrams a NAT lets
in, router-less LANs, IPv6, and the cleanup of namespaces and processes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.conftest import check_netns, require_netns
from tests.netns.harness import Host, Internet, NsProcess, Router, our_namespaces
from tests.netns.scenarios import two_homes

UDPTOOL = str(Path(__file__).resolve().parent / "udptool.py")
WAIT_S = 10.0


def udp(host: Host, port: int, *args: str) -> NsProcess:
    proc = host.run([sys.executable, UDPTOOL, str(port), *args], stdin=True)
    proc.wait_for_line(r"^ready$")
    return proc


def send(proc: NsProcess, ip: str, port: int, data: str) -> None:
    assert proc.popen.stdin is not None
    proc.popen.stdin.write(f"{ip} {port} {data}\n")
    proc.popen.stdin.flush()


def observed_port(client: NsProcess, server: Host, tag: str) -> int:
    """Send ``tag`` to an echoing server; the source port it saw (from its answer)."""
    send(client, server.ip, 9000, tag)
    match = client.wait_for_line(rf"^recv {re.escape(server.ip)} 9000 seen ([\d.]+):(\d+)$")
    return int(match.group(2))


def wait_dropped(router: Router, at_least: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while router.wan_counters()["dropped_packets"] < at_least:
        assert time.monotonic() < deadline, "the router never dropped the datagram"
        time.sleep(0.1)


def nat_world(net: Internet, kind: str) -> tuple[Router, NsProcess, list[Host], list[NsProcess]]:
    servers = [net.public_host(f"s{i}") for i in (1, 2, 3)]
    echo = [udp(s, 9000, "--echo") for s in servers]
    router = net.nat_router("home", kind)
    client = udp(router.host("alice"), 5000)
    return router, client, servers, echo


@pytest.mark.parametrize("kind", ["restricted", "full_cone"])
def test_port_keeping_nat_maps_one_port_to_every_destination(net: Internet, kind: str) -> None:
    _, client, servers, _ = nat_world(net, kind)
    assert observed_port(client, servers[0], "one") == 5000
    assert observed_port(client, servers[1], "two") == 5000


def test_symmetric_nat_maps_a_new_port_per_destination(net: Internet) -> None:
    _, client, servers, _ = nat_world(net, "symmetric")
    ports = {observed_port(client, s, f"to {s.name}") for s in servers}
    assert len(ports) == 3


def test_restricted_nat_drops_datagrams_from_strangers(net: Internet) -> None:
    router, client, servers, echo = nat_world(net, "restricted")
    observed_port(client, servers[0], "hello")
    dropped = router.wan_counters()["dropped_packets"]
    send(echo[2], router.wan_ip, 5000, "stranger")
    wait_dropped(router, dropped + 1)
    # An answer from the peer it talked to still comes in, after the stranger's.
    send(echo[0], router.wan_ip, 5000, "friend")
    client.wait_for_line(rf"^recv {re.escape(servers[0].ip)} 9000 friend$")
    assert not any("stranger" in line for line in client.seen)


def test_full_cone_nat_lets_anyone_reach_a_mapped_port(net: Internet) -> None:
    router, client, servers, echo = nat_world(net, "full_cone")
    observed_port(client, servers[0], "hello")
    send(echo[2], router.wan_ip, 5000, "stranger")
    client.wait_for_line(rf"^recv {re.escape(servers[2].ip)} 9000 stranger$")


def test_mapping_expires_after_the_routers_udp_timeout(net: Internet) -> None:
    servers = [net.public_host("s1")]
    echo = udp(servers[0], 9000, "--echo")
    router = net.nat_router("home", "restricted", udp_timeout=1, stream_timeout=2)
    client = udp(router.host("alice"), 5000)
    observed_port(client, servers[0], "hello")
    # Until the answered flow's timeout (2 s) runs out, the peer gets through.
    send(echo, router.wan_ip, 5000, "soon")
    client.wait_for_line(r" soon$")
    deadline = time.monotonic() + WAIT_S
    while "198.19" in router.exec_ns(["conntrack", "-L"]).stdout:
        assert time.monotonic() < deadline, "conntrack kept the mapping"
        time.sleep(0.2)
    dropped = router.wan_counters()["dropped_packets"]
    send(echo, router.wan_ip, 5000, "late")
    wait_dropped(router, dropped + 1)
    assert not any(line.endswith(" late") for line in client.seen)


def test_two_hosts_share_one_router(net: Internet) -> None:
    server = net.public_host("s1")
    udp(server, 9000, "--echo")
    router = net.nat_router("home")
    a, b = router.host("a"), router.host("b")
    assert a.ip != b.ip
    ca, cb = udp(a, 5000), udp(b, 5000)
    # Both bound port 5000: the second flow cannot keep it and gets another.
    ports = {observed_port(ca, server, "a"), observed_port(cb, server, "b")}
    assert len(ports) == 2 and 5000 in ports


def test_lan_without_router_reaches_only_itself(net: Internet) -> None:
    public = net.public_host("s1")
    lan = net.lan("office", hosts=2)
    one, two = lan.hosts
    a = udp(one, 5000)
    b = udp(two, 5000, "--join", "239.255.70.77")
    send(a, two.ip, 5000, "direct")
    b.wait_for_line(rf"^recv {re.escape(one.ip)} 5000 direct$")
    send(a, "239.255.70.77", 5000, "multicast")
    b.wait_for_line(rf"^recv {re.escape(one.ip)} 5000 multicast$")
    send(a, public.ip, 9000, "out")
    a.wait_for_line(r"^error ")


def test_ipv6_public_hosts_talk_and_home_firewall_holds(net6: Internet) -> None:
    server = net6.public_host("s1")
    router = net6.nat_router("home")
    alice = router.host("alice")
    assert server.ipv6 and alice.ipv6 and alice.ipv6.startswith("2001:2:")
    script = (
        "import socket,sys;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);"
        "s.settimeout(5);s.sendto(b'x',(sys.argv[1],9));"
        "print(s.recvfrom(64)[1][0])"
    )
    echo = (
        "import socket;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.bind(('::',9));"
        "print('ready',flush=True)\nwhile True:\n d,a=s.recvfrom(64);s.sendto(d,a)"
    )
    server.run([sys.executable, "-c", echo]).wait_for_line("^ready$")
    out = alice.exec_ns([sys.executable, "-c", script, server.ipv6]).stdout.strip()
    assert out == server.ipv6
    dropped = router.wan_counters()["dropped_packets"]
    server.exec_ns([sys.executable, "-c", script.replace("print(s.recvfrom(64)[1][0])", "")
                    .replace(";s.settimeout(5)", ""), alice.ipv6])  # fmt: skip
    wait_dropped(router, dropped + 1)


def test_text_crosses_two_nats_through_relays(net: Internet) -> None:
    world = two_homes(net, "restricted", "restricted")
    sent = world.alice.send(world.bob.card, "hello through the NATs")
    world.bob.received(str(sent["text_id"]), 30.0)
    world.alice.state(str(sent["text_id"]), "delivered", 30.0)


def test_close_kills_processes_and_removes_namespaces() -> None:
    require_netns()
    net = Internet()
    host = net.public_host("s1")
    proc = udp(host, 9000)
    names = our_namespaces()
    assert any(n.startswith(net.prefix) for n in names)
    net.close()
    assert proc.popen.poll() is not None
    assert not [n for n in our_namespaces() if n.startswith(net.prefix + "-")]
    assert not net.base_dir.exists()


def test_namespaces_of_dead_runs_are_swept() -> None:
    require_netns()
    finished = subprocess.Popen(["true"])
    finished.wait()
    name = f"ctn{finished.pid}i1-leftover"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with Internet():
            assert name not in our_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_missing_namespaces_skip_or_fail_as_required() -> None:
    with pytest.raises(pytest.skip.Exception, match="need root"):
        check_netns("network namespaces need root", required=False)
    with pytest.raises(pytest.fail.Exception, match="COMM_TUI_NETNS=require"):
        check_netns("network namespaces need root", required=True)
    check_netns(None, required=True)
