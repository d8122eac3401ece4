"""Which issue-10 features this build has, so tests and ``bench/nat.py`` run on any branch,
and the few helpers that drive those features from outside.

Each check looks at the public interface named in the shared design (NAT-DESIGN.md,
"Interfaces between parts") or at the module a feature lives in, never at private names.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from comm_tui.crypto import card as card_module
from comm_tui.protocol.node import Node
from tests.netns.harness import Agent, NsProcess, Router

RESPONDER = Path(__file__).resolve().parent / "natpmp_responder.py"


def has_reachability() -> bool:
    """h-reach: ``Node.reachability`` (observed endpoint, probes, client mode, keep-alives)."""
    return hasattr(Node, "reachability")


def has_punching() -> bool:
    """h-punch: ``Node.set_contacts`` (only contacts may make us punch)."""
    return hasattr(Node, "set_contacts")


def has_port_mapping() -> bool:
    """h-portmap: the service's port mapper, and the test PCP/NAT-PMP responder."""
    return _module("comm_tui.net.portmap") and RESPONDER.exists()


def has_lan_discovery() -> bool:
    """h-lan: the LAN beacon."""
    return _module("comm_tui.net.lan")


def has_card_hints() -> bool:
    """h-lan: cards of version 2 that carry signed endpoint hints (``read_card``)."""
    return hasattr(card_module, "read_card")


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# ------------------------------------------------------ port mapping (h-portmap, bench f)

PMP_TABLE = "natpmp_test"  # tests/netns/natpmp_responder.py's nftables table


def start_pmp_responder(router: Router) -> NsProcess:
    """The test PCP/NAT-PMP responder in ``router``'s namespace, installing DNAT rules.

    Why not Debian's miniupnpd: it refuses to map while its external address is reserved
    (198.18.0.0/15); docs/PROTOCOL.md, "14. Port mapping".
    """
    argv = [sys.executable, "-m", "tests.netns.natpmp_responder", "--nft"]
    proc = router.run([*argv, "--external-ip", router.wan_ip])
    proc.wait_for_line(r"^ready$", timeout_s=10.0)
    return proc


def mapping_rules(router: Router) -> list[str]:
    """The responder's DNAT rules now in ``router`` (one per mapping)."""
    out = router.exec_ns(["nft", "list", "table", "ip", PMP_TABLE], check=False).stdout
    return [line.strip() for line in out.splitlines() if "dnat to" in line]


def wait_mapping(
    router: Router, responder: NsProcess, *, present: bool, timeout_s: float
) -> float | None:
    """``time.time()`` once a mapping's DNAT rule is in ``router`` (or gone), else None."""
    deadline = time.monotonic() + timeout_s
    while True:
        if bool(mapping_rules(router)) == present:
            return time.time()
        if time.monotonic() > deadline or responder.popen.poll() is not None:
            return None
        time.sleep(0.05)


# ------------------------------------------------------ card hints (h-lan, bench g)


def card_with_hints(agent: Agent, timeout_s: float = 20.0) -> str:
    """The agent's current card once it carries endpoint hints (its node writes it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        card = str(agent.status()["card"])
        if card_module.read_card(card).hints:  # type: ignore[attr-defined]
            return card
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent.name}: no card with hints within {timeout_s} s")
        time.sleep(0.3)
