"""Which issue-10 features this build has, so tests and ``bench/nat.py`` run on any branch.

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
    """h-portmap: the service's port mapper, and the test NAT-PMP/PCP responder."""
    return _module("comm_tui.net.portmap") and RESPONDER.exists()


def has_lan_discovery() -> bool:
    """h-lan: the LAN beacon."""
    return _module("comm_tui.net.lan")


def has_card_hints() -> bool:
    """h-lan: cards of version 2 that carry signed endpoint hints (``read_card``)."""
    return hasattr(card_module, "read_card")


def start_pmp_responder(router: Router) -> NsProcess:
    """h-portmap's NAT-PMP/PCP responder in the router, installing a DNAT rule per mapping.

    (Debian's miniupnpd refuses to map while its external address is in 198.18.0.0/15,
    see tests/netns/README.md.)
    """
    proc = router.run([sys.executable, str(RESPONDER), "--external-ip", router.wan_ip, "--nft"])
    proc.wait_for_line(r"^ready$")
    return proc


def wait_mapping(
    responder: NsProcess, *, present: bool, timeout_s: float
) -> tuple[float, int] | None:
    """When the responder said it mapped (``present``) or unmapped a port, and that external
    port; None if it did not within ``timeout_s``."""
    pattern = r"^mapped (\d+) -> " if present else r"^unmapped (\d+)"
    try:
        match = responder.wait_for_line(pattern, timeout_s)
    except AssertionError:
        return None
    return time.time(), int(match.group(1))


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


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
