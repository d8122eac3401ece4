"""Fixtures shared by several test files."""

from __future__ import annotations

import os
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


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """``comm-tui`` processes a test starts; every one is killed when it ends, pass or fail."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
