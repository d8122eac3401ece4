"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from comm_tui.net.lan import INTERFACES_ENV, PORT_ENV
from tests.node_procs import Proc

# Nodes the tests start (in process and as `comm-tui` processes, which inherit this) send
# their LAN beacons on loopback only: multicast from tests stays on this machine. The
# namespace tests set their own interfaces.
os.environ[INTERFACES_ENV] = "lo"
# ... and on a group port of this process's own (each pytest-xdist worker is a process, and
# so is each concurrent run of the suite): a node one test starts never hears the beacons
# of a node another worker's test started at the same time, nor a real node's on 47177.
# Below the ephemeral range (32768-60999), so no socket bound to port 0 is given it.
os.environ[PORT_ENV] = str(20000 + os.getpid() % 10000)


def _clear_comm_tui_caches() -> None:
    """Empty every ``functools.lru_cache``/``cache`` of the loaded ``comm_tui`` modules
    (module-level functions and methods of module-level classes; the package keeps no
    module-level memo dicts)."""
    for name, module in list(sys.modules.items()):
        if module is None or (name != "comm_tui" and not name.startswith("comm_tui.")):
            continue
        for value in list(vars(module).values()):
            owners = [value, *vars(value).values()] if isinstance(value, type) else [value]
            for owner in owners:
                clear = getattr(owner, "cache_clear", None)
                if callable(clear) and hasattr(owner, "cache_info"):
                    clear()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under mutmut, start every test with cold function caches.

    mutmut runs the clean tests in one process and forks each mutant's run from it, so a
    cache such as ``routing.origin_network``'s is already warm in the child: a function
    reached only through it (``routing._ip``) never runs under its mutant, which then
    "survives" though a fresh process kills it; in the stats pass only the first test to
    compute a host would be recorded as reaching the function. mutmut names the mutant
    (or ``stats``) in ``MUTANT_UNDER_TEST``; outside it (and in mutmut's clean run, where
    the variable is empty) this does nothing. bench/MUTATION.md, "Fourth round (D)".
    """
    if os.environ.get("MUTANT_UNDER_TEST"):
        _clear_comm_tui_caches()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """``comm-tui`` processes a test starts; every one is killed when it ends, pass or fail."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
