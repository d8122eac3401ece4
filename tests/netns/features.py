"""Which issue-10 features this build has, so tests and ``bench/nat.py`` run on any branch.

Each check looks at the public interface named in the shared design (NAT-DESIGN.md,
"Interfaces between parts"), never at private names.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any

from comm_tui.protocol.node import Node
from tests.netns.harness import NsProcess, Router


def has_reachability() -> bool:
    """h-reach: ``Node.reachability`` (observed endpoint, probes, client mode, keep-alives)."""
    return hasattr(Node, "reachability")


def has_punching() -> bool:
    """h-punch: ``Node.set_contacts`` (only contacts may make us punch)."""
    return hasattr(Node, "set_contacts")


def has_port_mapping() -> bool:
    """h-portmap: ``Node.note_port_mapping`` and the service's port-mapping module."""
    return hasattr(Node, "note_port_mapping") and _module("comm_tui.net.portmap")


def has_lan_discovery() -> bool:
    """h-lan: the LAN beacon module."""
    return _module("comm_tui.net.lan")


def has_card_hints() -> bool:
    """h-lan: cards that carry endpoint hints."""
    return _module("comm_tui.net.hints")


def card_with_hints(agent: Any) -> str:
    """The agent's card, which must carry endpoint hints (it listens on a public address)."""
    from comm_tui.crypto.card import read_card

    card = str(agent.card)
    if not read_card(card).hints:
        raise AssertionError(f"{agent.name}'s card has no endpoint hints: {card}")
    return card


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
