"""The writer side of the group commit (comm_tui/net/commit.py): the writer threads and
the return of finished commits to the loop (docs/PROTOCOL.md, "8.2 Local durability").

What a commit holds back until it returns is pinned in tests/test_group_commit.py, on
these writers (the default executor).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from concurrent.futures import Future
from typing import Any

import pytest

from comm_tui.net.commit import Writers, _Returns, _returns_to

pytestmark = pytest.mark.timeout(60)


async def test_commits_that_finish_together_return_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    returns = _Returns(loop)
    wakes: list[object] = []  # each a self-pipe write and a callback on the loop
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        wakes.append(callback)
        return call_soon_threadsafe(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        returned: list[int] = []

        class Group:
            def __init__(self, n: int) -> None:
                self.n = n

            def _committed(self, future: Future[None]) -> None:
                returned.append(self.n)

        done: Future[None] = Future()
        done.set_result(None)
        # Two commits finish before the loop runs again: one wake-up takes both, in order.
        returns.put(Group(3), done)  # type: ignore[arg-type]
        returns.put(Group(4), done)  # type: ignore[arg-type]
        assert len(wakes) == 1
        await asyncio.sleep(0)
        assert returned == [3, 4]
        # Drained, so the next commit wakes the loop again.
        returns.put(Group(5), done)  # type: ignore[arg-type]
        assert len(wakes) == 2
        await asyncio.sleep(0)
        assert returned == [3, 4, 5]
    finally:
        loop.call_soon_threadsafe = call_soon_threadsafe  # type: ignore[method-assign]


def test_the_return_path_does_not_keep_a_finished_loop_alive() -> None:
    async def make_returns() -> None:
        _returns_to(asyncio.get_running_loop())

    loop = asyncio.new_event_loop()
    loop.run_until_complete(make_returns())
    loop.close()
    collected = weakref.ref(loop)
    del loop
    gc.collect()
    assert collected() is None


def test_a_writer_job_hands_back_its_result_or_its_exception() -> None:
    writers = Writers(2)
    assert writers.submit(pow, 2, 10).result(timeout=10) == 1024
    failed = writers.submit(lambda: 1 // 0)
    assert isinstance(failed.exception(timeout=10), ZeroDivisionError)
    # The threads survive a failed job.
    assert writers.submit(lambda: "still here").result(timeout=10) == "still here"
