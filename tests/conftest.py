"""Fixtures shared by several test files."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from comm_tui.net.lan import INTERFACES_ENV
from tests.node_procs import Proc

# Nodes the tests start (in process and as `comm-tui` processes, which inherit this) send
# their LAN beacons on loopback only: multicast from tests stays on this machine. The
# namespace tests set their own interfaces.
os.environ[INTERFACES_ENV] = "lo"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """``comm-tui`` processes a test starts; every one is killed when it ends, pass or fail."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
