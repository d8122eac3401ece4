"""Fixtures of the namespace tests: an emulated internet per test, always torn down.

Without root, ``ip`` or ``nft`` every test here skips with the reason; with
``COMM_TUI_NETNS=require`` (CI) the same conditions fail instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.harness import Internet, netns_required, netns_unavailable


@functools.cache
def _unavailable() -> str | None:
    return netns_unavailable()


def check_netns(reason: str | None, required: bool) -> None:
    """Skip (or, when required, fail) the test if namespaces cannot be made."""
    if reason is None:
        return
    if required:
        pytest.fail(f"COMM_TUI_NETNS=require, but {reason}", pytrace=False)
    pytest.skip(reason)


def require_netns() -> None:
    """For tests that make their own :class:`Internet`: skip or fail like the fixtures."""
    check_netns(_unavailable(), netns_required())


@pytest.fixture
def net() -> Iterator[Internet]:
    """An empty :class:`Internet`; everything in it is removed when the test ends."""
    require_netns()
    with Internet() as internet:
        yield internet


@pytest.fixture
def net6() -> Iterator[Internet]:
    """Like ``net``, with IPv6 (2001:2::/48) beside IPv4."""
    require_netns()
    with Internet(ipv6=True) as internet:
        yield internet


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every namespace test in one pytest-xdist group: they run one after another on one
    worker (as they were written to: each emulated internet has real NAT timers, and two
    at once would measure each other's CPU), while the other worker runs the rest."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.xdist_group("netns"))
