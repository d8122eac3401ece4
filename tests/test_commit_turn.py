"""The group commit's default window: a batch commits at the end of the loop's turn.

docs/PROTOCOL.md, "8.2 Local durability": ``COMMIT_WINDOW_S`` (``net/commit.py``) is 0,
so the pumps of the datagrams read in one turn of the event loop share a commit, which
starts without waiting for a timer (a 2 ms window added 2 ms to every hop and grouped
nothing more).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.test_group_commit import GatedExecutor, Harness, committed_meta, datagram, event
from tests.test_integration import until

pytestmark = pytest.mark.timeout(60)

# Loop turns a commit due "at the end of this turn" may take to start: the timer runs in
# the next turn; one more for slack. A window of any length takes far more than these.
TURNS = 2


async def test_by_default_the_pumps_of_one_turn_share_a_commit_that_starts_at_its_end(
    tmp_path: Path,
) -> None:
    disk = GatedExecutor()
    h = Harness(tmp_path / "db", executor=disk)  # the default window
    try:
        h.journal.add([event(1)], [datagram(1)])
        h.journal.add([event(2)], [datagram(2)])  # the same turn: the same batch
        assert not h.journal.committing and h.journal.pending == 4
        for _ in range(TURNS):
            await asyncio.sleep(0)
        assert h.journal.committing and h.journal.commits == 1
        assert h.transmitted == [] and h.notices == []  # held until it is on disk
        disk.gate.set()
        await until(lambda: len(h.notices) == 2, "the commit to return")
        assert h.notices == ["row-01", "row-02"] and h.notified_uncommitted == []
        assert h.transmitted == [datagram(1), datagram(2)]
        assert {"row-01", "row-02"} <= committed_meta(h.path)
    finally:
        disk.gate.set()
        h.close()
        disk.shutdown()
