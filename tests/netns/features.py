"""Which issue-10 features this build has, so tests and ``bench/nat.py`` run on any branch.

Each check looks at the public interface named in the shared design (NAT-DESIGN.md,
"Interfaces between parts"), never at private names.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from comm_tui.protocol.node import Node


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
