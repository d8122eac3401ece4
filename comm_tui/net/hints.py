"""Which of our endpoints a card may name as hints (docs/PROTOCOL.md, "13.2").

A hint is only worth giving if another host on the internet can send to it: not a
loopback, private, link-local or otherwise non-global address. The benchmarking ranges
(198.18.0.0/15, 2001:2::/48) are not global either, but the emulated networks of the
tests are made of them; a profile that sets ``test_networks`` treats them as public.
"""

from __future__ import annotations

import ipaddress

from comm_tui.protocol.routing import Endpoint, normalize_endpoint

TEST_NETWORKS = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48"))
MAX_HINTS = 4  # docs/PROTOCOL.md, "13.2": what a card carries at most


def is_public(host: str, *, test_networks: bool = False) -> bool:
    """Whether hosts elsewhere on the internet could send to ``host``."""
    try:
        ip = ipaddress.ip_address(normalize_endpoint((host, 0))[0])
    except ValueError:
        return False  # a name: it says nothing about where it points
    if test_networks and any(ip in network for network in TEST_NETWORKS):
        return True
    return ip.is_global and not ip.is_multicast


def endpoint_hints(
    candidates: list[Endpoint | None], *, test_networks: bool = False
) -> list[Endpoint]:
    """The public endpoints among ``candidates``, in order, without repeats, at most 4."""
    hints: list[Endpoint] = []
    for candidate in candidates:
        if candidate is None or not 0 < candidate[1] < 65536:
            continue
        endpoint = normalize_endpoint(candidate)
        if endpoint not in hints and is_public(endpoint[0], test_networks=test_networks):
            hints.append(endpoint)
    return hints[:MAX_HINTS]
