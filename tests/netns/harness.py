"""Emulated internets in Linux network namespaces, for tests and ``bench/nat.py``.

An :class:`Internet` is a core router namespace ("the internet") to which every public
host and every NAT router's WAN side is joined by its own veth link, each in its own
/24 of 198.18.0.0/16, so peers see each other from distinct networks (as the reachability
tally needs: it counts agreement across /24s). NAT routers serve home LANs in
198.19.0.0/16 through a bridge; a router-less LAN is a bridge namespace of its own with
no route anywhere. IPv6 (``Internet(ipv6=True)``) uses 2001:2::/48 only: public links
2001:2:0:N::/64, LANs 2001:2:1:M::/64, routed without NAT behind a stateful firewall (new
inbound connections dropped, as home routers do). Nothing is ever routed outside the
namespaces made here: the core router has no default route.

NAT kinds (nftables in the router namespace; the conntrack UDP timeouts are per router):

- ``"restricted"``: plain ``masquerade``. Linux keeps the source port where it can, and
  only answers to a flow's own remote address and port come back in:
  address-and-port-restricted.
- ``"symmetric"``: ``masquerade random``: a new external port per destination.
- ``"full_cone"``: masquerade, plus a map from the external port to the internal host and
  port, refreshed by every outbound datagram, through which any inbound UDP datagram to
  that port is sent on to the host (endpoint-independent mapping and filtering).

Everything made is removed by :meth:`Internet.close` (also on exceptions through the
context manager, and from an ``atexit`` hook): processes are killed by process group and
by ``ip netns pids``, namespaces deleted (their veths go with them: veths are created
directly inside their namespaces, never in the root namespace). Names carry the pid
(``ctn<pid>i<k>-<name>``), so parallel runs never collide, and :func:`sweep_leftovers`
removes the namespaces of runs whose process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_PATH = Path(__file__).resolve().parent / "agent.py"

NS_PREFIX = "ctn"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}\Z")
_OURS = re.compile(rf"{NS_PREFIX}(\d+)[ip]")
COMMAND_TIMEOUT_S = 20.0
LINE_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
DEFAULT_PORT = 7400
NAT_KINDS = ("restricted", "symmetric", "full_cone")
NETNS_ENV = "COMM_TUI_NETNS"


class NetnsError(RuntimeError):
    """A command setting up the emulated network failed."""


def _sh(argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT_S, check: bool = True) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def netns_unavailable() -> str | None:
    """Why emulated networks cannot be made here (one line), or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install iproute2 nftables)"
    probe = f"{NS_PREFIX}{os.getpid()}probe"
    try:
        _sh(["ip", "netns", "add", probe])
        try:
            _sh(["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "probe"])
        finally:
            _sh(["ip", "netns", "del", probe], check=False)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace with nftables: {exc}"
    return None


def netns_required() -> bool:
    """CI sets COMM_TUI_NETNS=require: then missing namespaces fail the tests, not skip them."""
    return os.environ.get(NETNS_ENV, "") == "require"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_pids(ns: str) -> None:
    out = _sh(["ip", "netns", "pids", ns], check=False)
    for word in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(word), signal.SIGKILL)


def _delete_ns(ns: str) -> None:
    _kill_ns_pids(ns)
    _sh(["ip", "netns", "del", ns], check=False)


def our_namespaces() -> list[str]:
    """Namespaces named by this harness (any run)."""
    names = []
    for line in _sh(["ip", "netns", "list"], check=False).splitlines():
        name = line.split(" ", 1)[0]
        if _OURS.match(name):
            names.append(name)
    return names


def sweep_leftovers() -> list[str]:
    """Delete namespaces of earlier runs whose process has died; returns their names."""
    removed = []
    for name in our_namespaces():
        match = _OURS.match(name)
        assert match is not None
        if not _alive(int(match.group(1))):
            _delete_ns(name)
            removed.append(name)
    return removed


class NsProcess:
    """A process in a namespace, in its own process group; stdout read line by line."""

    def __init__(
        self,
        ns: str,
        argv: Sequence[str],
        env: dict[str, str],
        stderr_path: Path,
        *,
        stdin: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._listeners: list[Callable[[str], None]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.rstrip("\n")
            for listener in self._listeners:
                listener(line)
            self.lines.put(line)

    def stderr_tail(self, lines: int = 15) -> str:
        self._stderr.flush()
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_line(self, pattern: str, timeout_s: float = LINE_TIMEOUT_S) -> re.Match[str]:
        """The first stdout line (seen so far or still to come) matching ``pattern``."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for line in self.seen[checked:]:
                if match := re.search(pattern, line):
                    return match
            checked = len(self.seen)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.popen.poll() is not None and self.lines.empty()):
                raise AssertionError(
                    f"no line matching {pattern!r} from {self.argv[:4]} within {timeout_s} s;"
                    f" stdout {self.seen[-10:]}; stderr:\n{self.stderr_tail()}"
                )
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                continue

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; the exit code."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_s)
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (children too), then reap."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_GRACE_S)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        self._stderr.close()


def wait_listening(proc: NsProcess, timeout_s: float = LINE_TIMEOUT_S) -> str:
    """Until a ``comm-tui node`` says it listens; its address (hex)."""
    return proc.wait_for_line(r" listening \S+ address ([0-9a-f]+)", timeout_s).group(1)


class _Namespace:
    """A namespace this harness made: run commands and processes in it."""

    def __init__(self, net: Internet, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad name {name!r}: lowercase letters, digits, '-', at most 20")
        self.net = net
        self.name = name
        self.ns = f"{net.prefix}-{name}"
        _sh(["ip", "netns", "add", self.ns])
        net._namespaces.append(self.ns)
        self.ip_cmd("link", "set", "lo", "up")
        self.dir = net.base_dir / name
        self.dir.mkdir(mode=0o700)

    def ip_cmd(self, *args: str) -> str:
        return _sh(["ip", "-n", self.ns, *args])

    def exec_ns(
        self,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command to completion in this namespace, bounded in time."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=REPO_ROOT,
            input=input_text,
            check=False,
        )
        if check and result.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(argv)} exited {result.returncode}: "
                f"{result.stderr.strip()[-2000:]}"
            )
        return result

    def sysctl(self, key: str, value: str | int) -> None:
        self.exec_ns(["sysctl", "-q", "-w", f"{key}={value}"])

    def nft(self, script: str) -> None:
        self.exec_ns(["nft", "-f", "-"], input_text=script)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def run(
        self, argv: Sequence[str], *, stdin: bool = False, env: dict[str, str] | None = None
    ) -> NsProcess:
        """Start a process in this namespace; it is killed when the Internet closes."""
        self.net._serial += 1
        stem = Path(argv[0]).name if argv else "proc"
        stderr_path = self.dir / f"{self.net._serial}-{stem}.stderr"
        proc = NsProcess(self.ns, argv, env or self.env(), stderr_path, stdin=stdin)
        self.net._processes.append(proc)
        return proc


class Host(_Namespace):
    """An emulated machine: one interface ``eth0``, its own HOME, runtime dir and data dir."""

    def __init__(self, net: Internet, name: str, ip: str, ipv6: str | None) -> None:
        super().__init__(net, name)
        self.ip = ip
        self.ipv6 = ipv6
        self.home = self.dir / "home"
        self.runtime_dir = self.dir / "run"
        self.data_dir = self.dir / "data"
        for path in (self.home, self.runtime_dir, self.data_dir):
            path.mkdir(mode=0o700)
        self._counting = False

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("COMM_TUI_PASSPHRASE", None)
        # The suite keeps LAN beacons on loopback (tests/conftest.py); in a namespace they
        # go out of every interface, as on a real host.
        env.pop("COMM_TUI_LAN_INTERFACES", None)
        env.pop("COMM_TUI_LAN_PORT", None)  # a namespace is a LAN of its own: the real port
        env.update(
            HOME=str(self.home),
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_STATE_HOME=str(self.home / ".local" / "state"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def endpoint(self, port: int = DEFAULT_PORT) -> str:
        return f"{self.ip}:{port}"

    def comm_tui(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """``comm-tui --data-dir <this host's> ARGS`` to completion; its stdout."""
        argv = [sys.executable, "-m", "comm_tui", "--data-dir", str(self.data_dir), *args]
        return self.exec_ns(argv, timeout=timeout).stdout

    def card(self) -> str:
        """This host's default profile's card (``comm-tui id``; creates the profile)."""
        match = re.search(r"^card: (\S+)", self.comm_tui("id"), re.MULTILINE)
        if match is None:
            raise NetnsError(f"{self.name}: no card in 'comm-tui id'")
        return match.group(1)

    def node(
        self,
        *,
        port: int = DEFAULT_PORT,
        bootstrap: Sequence[str] = (),
        listen_ip: str = "",
        wait: bool = True,
    ) -> NsProcess:
        """A real ``comm-tui node`` on this host; returns once it listens (unless not
        ``wait``: then call ``wait_listening`` on several started at once)."""
        argv = [sys.executable, "-m", "comm_tui", "--data-dir", str(self.data_dir), "node"]
        argv += ["--listen", f"{listen_ip or self.ip}:{port}"]
        for endpoint in bootstrap:
            argv += ["--bootstrap", endpoint]
        proc = self.run(argv)
        if wait:
            wait_listening(proc)
        return proc

    def agent(
        self,
        *,
        port: int = DEFAULT_PORT,
        bootstrap: Sequence[str] = (),
        listen_ip: str = "0.0.0.0",
        extra: Sequence[str] = (),
    ) -> Agent:
        """The JSON-driven node of ``tests/netns/agent.py`` on this host, once ready."""
        argv = [sys.executable, str(AGENT_PATH), "--data-dir", str(self.data_dir)]
        argv += ["--listen", f"{listen_ip}:{port}", *extra]
        for endpoint in bootstrap:
            argv += ["--bootstrap", endpoint]
        agent = Agent(self.run(argv, stdin=True), self.name)
        agent.wait_ready()
        return agent

    def count_udp(self) -> None:
        """Start counting this host's UDP datagrams and bytes (IP lengths), both ways."""
        self.nft(
            "table inet ctn_count {\n"
            " counter udp_out {}\n counter udp_in {}\n"
            " chain count_out { type filter hook output priority 0; meta l4proto udp"
            ' ip daddr != 224.0.0.0/4 counter name "udp_out"; }\n'
            " chain count_in { type filter hook input priority 0; meta l4proto udp"
            ' counter name "udp_in"; }\n'
            "}\n"
        )
        self._counting = True

    def udp_counters(self) -> dict[str, int]:
        """``{"out_packets", "out_bytes", "in_packets", "in_bytes"}`` since :meth:`count_udp`."""
        if not self._counting:
            raise NetnsError(f"{self.name}: count_udp() first")
        data = json.loads(self.exec_ns(["nft", "-j", "list", "counters"]).stdout)
        result: dict[str, int] = {}
        for item in data.get("nftables", []):
            counter = item.get("counter")
            if counter and counter.get("table") == "ctn_count":
                side = counter["name"].removeprefix("udp_")
                result[f"{side}_packets"] = int(counter["packets"])
                result[f"{side}_bytes"] = int(counter["bytes"])
        return result


class Router(_Namespace):
    """A NAT router: WAN on the internet, a bridge ``lan`` for its hosts."""

    def __init__(
        self,
        net: Internet,
        name: str,
        *,
        kind: str,
        udp_timeout: int,
        stream_timeout: int,
    ) -> None:
        if kind not in NAT_KINDS:
            raise ValueError(f"kind must be one of {NAT_KINDS}, not {kind!r}")
        super().__init__(net, name)
        self.kind = kind
        self.udp_timeout = udp_timeout
        self.stream_timeout = stream_timeout
        self.hosts: list[Host] = []
        self.wan_ip, self.wan_ipv6 = net._attach(self, "wan")
        self.lan_index = net._next_lan()
        self.lan_ip = f"198.19.{self.lan_index}.1"
        self.lan_ipv6 = f"2001:2:1:{self.lan_index:x}::1" if net.ipv6 else None
        self.ip_cmd("link", "add", "lan", "type", "bridge", "mcast_snooping", "0")
        self.ip_cmd("addr", "add", f"{self.lan_ip}/24", "dev", "lan")
        if self.lan_ipv6:
            self.ip_cmd("addr", "add", f"{self.lan_ipv6}/64", "dev", "lan", "nodad")
        self.ip_cmd("link", "set", "lan", "up")
        self.sysctl("net.ipv4.ip_forward", 1)
        if net.ipv6:
            self.sysctl("net.ipv6.conf.all.forwarding", 1)
        self.nft(self._ruleset())
        self.set_timeouts(udp_timeout, stream_timeout)

    def _ruleset(self) -> str:
        masquerade = "masquerade random" if self.kind == "symmetric" else "masquerade"
        cone = self.kind == "full_cone"
        lines = ["table ip nat {"]
        if cone:
            lines += [
                " map cone { type inet_service : ipv4_addr . inet_service;"
                # A full cone mapping lives as long as an answered flow would.
                f" flags dynamic,timeout; timeout {self.stream_timeout}s; }}",
                " chain pre { type nat hook prerouting priority dstnat;"
                ' iifname "wan" dnat ip to udp dport map @cone; }',
                " chain track { type filter hook postrouting priority 300;"
                ' oifname "wan" meta l4proto udp update @cone'
                " { ct reply proto-dst : ct original ip saddr . ct original proto-src }; }",
            ]
        lines += [
            " chain post { type nat hook postrouting priority srcnat;"
            f' oifname "wan" {masquerade}; }}',
            "}",
            # A home router's firewall: nothing new comes in from the WAN unless a
            # (cone) mapping sent it on; counters for the router's WAN traffic.
            "table inet filter {",
            " counter wan_out {}",
            " counter wan_in {}",
            " counter wan_dropped {}",
            " chain forward_wan { type filter hook forward priority 0;",
            '  oifname "wan" counter name "wan_out";',
            '  iifname "wan" counter name "wan_in";',
            '  iifname "wan" ct state established,related accept;',
            '  iifname "wan" ct status dnat accept;',
            '  iifname "wan" counter name "wan_dropped" drop; }',
            # Unsolicited datagrams to the router itself are dropped, not refused: a
            # dropped packet's conntrack entry is never confirmed, so it cannot take
            # the external port that a later outbound flow of a host would map to.
            " chain input_wan { type filter hook input priority 0;",
            '  iifname "wan" ct state established,related accept;',
            # Neighbour discovery is ICMPv6 (conntrack leaves it untracked).
            '  iifname "wan" meta l4proto ipv6-icmp accept;',
            '  iifname "wan" counter name "wan_dropped" drop; }',
            "}",
        ]
        return "\n".join(lines) + "\n"

    def set_timeouts(self, udp_timeout: int, stream_timeout: int) -> None:
        """Conntrack UDP timeouts: unanswered flows and answered ("stream") flows, seconds.

        (A full cone's map keeps the stream timeout it was made with.)
        """
        self.udp_timeout = udp_timeout
        self.stream_timeout = stream_timeout
        self.sysctl("net.netfilter.nf_conntrack_udp_timeout", udp_timeout)
        self.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", stream_timeout)

    def host(self, name: str) -> Host:
        """A new host on this router's LAN (default route through the router)."""
        index = len(self.hosts) + 2
        ip = f"198.19.{self.lan_index}.{index}"
        ipv6 = f"2001:2:1:{self.lan_index:x}::{index:x}" if self.net.ipv6 else None
        host = Host(self.net, name, ip, ipv6)
        self.net._join_bridge(
            self, "lan", host, ip, 24, ipv6, gateway=self.lan_ip, gateway6=self.lan_ipv6
        )
        self.hosts.append(host)
        self.net.hosts[name] = host
        return host

    def flush_conntrack(self) -> None:
        """Forget every mapping at once, as a router reboot does."""
        if shutil.which("conntrack") is None:
            raise NetnsError("'conntrack' is not installed (apt-get install conntrack)")
        self.exec_ns(["conntrack", "-F"], check=False)
        if self.kind == "full_cone":
            self.exec_ns(["nft", "flush", "map", "ip", "nat", "cone"])

    def wan_counters(self) -> dict[str, int]:
        """Packets and bytes forwarded out of and into the WAN since the router was made, and
        unsolicited inbound packets dropped (``dropped_packets``: the NAT's filtering)."""
        data = json.loads(self.exec_ns(["nft", "-j", "list", "counters"]).stdout)
        result: dict[str, int] = {}
        for item in data.get("nftables", []):
            counter = item.get("counter")
            if counter and counter.get("table") == "filter":
                side = counter["name"].removeprefix("wan_")
                result[f"{side}_packets"] = int(counter["packets"])
                result[f"{side}_bytes"] = int(counter["bytes"])
        return result


class Lan(_Namespace):
    """A network with no router: a bridge namespace and its hosts, no way out."""

    def __init__(self, net: Internet, name: str) -> None:
        super().__init__(net, name)
        self.index = net._next_lan()
        self.hosts: list[Host] = []
        self.ip_cmd("link", "add", "lanbr", "type", "bridge", "mcast_snooping", "0")
        self.ip_cmd("link", "set", "lanbr", "up")

    def host(self, name: str) -> Host:
        index = len(self.hosts) + 2
        ip = f"198.19.{self.index}.{index}"
        ipv6 = f"2001:2:1:{self.index:x}::{index:x}" if self.net.ipv6 else None
        host = Host(self.net, name, ip, ipv6)
        self.net._join_bridge(self, "lanbr", host, ip, 24, ipv6, gateway=None, gateway6=None)
        self.hosts.append(host)
        self.net.hosts[name] = host
        return host


_live: list[Internet] = []


@atexit.register
def _close_all() -> None:
    for net in list(_live):
        net.close()


class Internet:
    """An emulated internet; use as a context manager (or call :meth:`close`)."""

    _count = 0  # Internets made by this process, for unique names

    def __init__(self, *, ipv6: bool = False, keep_dir: bool = False) -> None:
        Internet._count += 1
        self.prefix = f"{NS_PREFIX}{os.getpid()}i{Internet._count}"
        self.ipv6 = ipv6
        self.keep_dir = keep_dir
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.hosts: dict[str, Host] = {}
        self.routers: dict[str, Router] = {}
        self._namespaces: list[str] = []
        self._processes: list[NsProcess] = []
        self._serial = 0
        self._links = 0
        self._lans = 0
        self._closed = False
        _live.append(self)
        sweep_leftovers()
        try:
            self.core = _Namespace(self, "core")
            self.core.sysctl("net.ipv4.ip_forward", 1)
            if ipv6:
                self.core.sysctl("net.ipv6.conf.all.forwarding", 1)
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- topology
    def public_host(self, name: str) -> Host:
        """A host with a public address of its own (a relay, a server)."""
        index = self._links + 1
        ipv6 = f"2001:2:0:{index:x}::2" if self.ipv6 else None
        host = Host(self, name, f"198.18.{index}.2", ipv6)
        self._attach(host, "eth0")
        self.hosts[name] = host
        return host

    def nat_router(
        self,
        name: str,
        kind: str = "restricted",
        *,
        udp_timeout: int = 20,
        stream_timeout: int = 30,
    ) -> Router:
        """A NAT router of ``kind`` (see the module docstring) with its own public address."""
        router = Router(
            self, name, kind=kind, udp_timeout=udp_timeout, stream_timeout=stream_timeout
        )
        self.routers[name] = router
        return router

    def lan(self, name: str, hosts: int = 0) -> Lan:
        """A router-less LAN with ``hosts`` hosts named ``<name>-1``…; more by ``lan.host``."""
        lan = Lan(self, name)
        for number in range(1, hosts + 1):
            lan.host(f"{name}-{number}")
        return lan

    def _attach(self, ns: _Namespace, ifname: str) -> tuple[str, str | None]:
        """A point-to-point link from the core to ``ns``; ``ns`` gets 198.18.N.2/24."""
        if self._links >= 250:
            raise NetnsError("at most 250 links to the core")
        self._links += 1
        index = self._links
        core_if = f"p{index}"
        _sh(["ip", "link", "add", core_if, "netns", self.core.ns, "type", "veth",
             "peer", "name", ifname, "netns", ns.ns])  # fmt: skip
        ip, core_ip = f"198.18.{index}.2", f"198.18.{index}.1"
        self.core.ip_cmd("addr", "add", f"{core_ip}/24", "dev", core_if)
        self.core.ip_cmd("link", "set", core_if, "up")
        ns.ip_cmd("addr", "add", f"{ip}/24", "dev", ifname)
        ns.ip_cmd("link", "set", ifname, "up")
        ns.ip_cmd("route", "add", "default", "via", core_ip)
        ipv6 = None
        if self.ipv6:
            ipv6, core_ipv6 = f"2001:2:0:{index:x}::2", f"2001:2:0:{index:x}::1"
            self.core.ip_cmd("addr", "add", f"{core_ipv6}/64", "dev", core_if, "nodad")
            ns.ip_cmd("addr", "add", f"{ipv6}/64", "dev", ifname, "nodad")
            ns.ip_cmd("-6", "route", "add", "default", "via", core_ipv6)
        if isinstance(ns, Router) and self.ipv6:
            # Only the LAN's IPv6 prefix is routed to a router: its IPv4 LAN stays private.
            # (The router takes the next LAN number right after this link.)
            lan = self._lans + 1
            self.core.ip_cmd(
                "-6", "route", "add", f"2001:2:1:{lan:x}::/64", "via", f"2001:2:0:{index:x}::2"
            )
        return ip, ipv6

    def _next_lan(self) -> int:
        if self._lans >= 250:
            raise NetnsError("at most 250 LANs")
        self._lans += 1
        return self._lans

    def _join_bridge(
        self,
        owner: _Namespace,
        bridge: str,
        host: Host,
        ip: str,
        prefix_len: int,
        ipv6: str | None,
        *,
        gateway: str | None,
        gateway6: str | None,
    ) -> None:
        port = f"h{len(self.hosts) + 1}"
        _sh(["ip", "link", "add", "eth0", "netns", host.ns, "type", "veth",
             "peer", "name", port, "netns", owner.ns])  # fmt: skip
        owner.ip_cmd("link", "set", port, "master", bridge)
        owner.ip_cmd("link", "set", port, "up")
        host.ip_cmd("addr", "add", f"{ip}/{prefix_len}", "dev", "eth0")
        if ipv6:
            host.ip_cmd("addr", "add", f"{ipv6}/64", "dev", "eth0", "nodad")
        host.ip_cmd("link", "set", "eth0", "up")
        if gateway:
            host.ip_cmd("route", "add", "default", "via", gateway)
        if gateway6:
            host.ip_cmd("-6", "route", "add", "default", "via", gateway6)
        # Multicast (LAN discovery) leaves by eth0 even without a default route.
        host.ip_cmd("route", "add", "224.0.0.0/4", "dev", "eth0")

    # -------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Kill every process, delete every namespace and the temporary directory."""
        if self._closed:
            return
        self._closed = True
        for proc in self._processes:
            with contextlib.suppress(Exception):
                proc.signal(signal.SIGKILL)
        for proc in self._processes:
            with contextlib.suppress(Exception):
                proc.kill()
        for ns in reversed(self._namespaces):
            with contextlib.suppress(Exception):
                _delete_ns(ns)
        if not self.keep_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        with contextlib.suppress(ValueError):
            _live.remove(self)

    def __enter__(self) -> Internet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Agent:
    """Client side of ``tests/netns/agent.py``: JSON commands in, timestamped events out."""

    def __init__(self, proc: NsProcess, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.info: dict[str, Any] = {}
        proc._listeners.append(self._on_line)

    def _on_line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict):
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    @property
    def card(self) -> str:
        return str(self.info["card"])

    @property
    def address(self) -> str:
        return str(self.info["address"])

    def command(self, cmd: str, **fields: Any) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        stdin.flush()

    def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float = LINE_TIMEOUT_S,
        *,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event (index >= ``after``) matching ``predicate``, bounded in time."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.popen.poll() is not None:
                    raise AssertionError(
                        f"{self.name}: no such event within {timeout_s} s; last events "
                        f"{self.events[-8:]}; stderr:\n{self.proc.stderr_tail()}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_ready(self) -> None:
        self.info = self.wait_event(lambda e: e.get("ev") == "ready")

    def add_contact(self, name: str, card: str) -> None:
        mark = len(self.events)
        self.command("add_contact", name=name, card=card)
        self.wait_event(lambda e: e.get("ev") in ("contact_added", "error"), after=mark)
        self._raise_error(mark)

    def send(self, to: str, text: str) -> dict[str, Any]:
        """Send ``text`` to a card; the ``sent`` event (``t``: the stamp before sending)."""
        mark = len(self.events)
        self.command("send", to=to, text=text)
        event = self.wait_event(lambda e: e.get("ev") in ("sent", "error"), after=mark)
        self._raise_error(mark)
        return event

    def status(self) -> dict[str, Any]:
        mark = len(self.events)
        self.command("status")
        return self.wait_event(lambda e: e.get("ev") == "status", after=mark)

    def received(self, text_id: str, timeout_s: float) -> dict[str, Any]:
        return self.wait_event(
            lambda e: e.get("ev") == "received" and e.get("text_id") == text_id, timeout_s
        )

    def state(self, text_id: str, state: str, timeout_s: float) -> dict[str, Any]:
        return self.wait_event(
            lambda e: (
                e.get("ev") == "state" and e.get("text_id") == text_id and e.get("state") == state
            ),
            timeout_s,
        )

    def wait_peers(self, count: int = 1, timeout_s: float = LINE_TIMEOUT_S) -> None:
        """Until the node's routing table holds ``count`` peers (polled by ``status``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if int(self.status()["peers"]) >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: fewer than {count} peers in {timeout_s} s")
            time.sleep(0.3)

    def quit(self, timeout_s: float = 15.0) -> dict[str, Any]:
        """Stop the node cleanly (``NodeService.stop``), return the ``stopped`` event."""
        mark = len(self.events)
        self.command("quit")
        event = self.wait_event(lambda e: e.get("ev") == "stopped", timeout_s, after=mark)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(timeout=timeout_s)
        return event

    def _raise_error(self, mark: int) -> None:
        for event in self.events[mark:]:
            if event.get("ev") == "error":
                raise AssertionError(f"{self.name}: {event.get('message')}")


@contextlib.contextmanager
def internet(**kwargs: Any) -> Iterator[Internet]:
    """``with internet() as net:``: an :class:`Internet` that is always closed."""
    net = Internet(**kwargs)
    try:
        yield net
    finally:
        net.close()
