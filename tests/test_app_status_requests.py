"""The status panel's requests to the node thread, in the real app: one on its way at a
time, and one whose answer never comes back to the screen does not stop the next."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from comm_tui.app import app as app_module
from comm_tui.app import app_session
from comm_tui.app.status import StatusSnapshot, take_snapshot
from comm_tui.net.service import NodeService
from tests.app_helpers import SIZE, WAIT_S, make_profile, wait_until


async def test_a_status_answer_that_never_reaches_the_screen_does_not_stop_the_next(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.status is not None, "a first snapshot")
            # A request goes to the node, and the worker that would show its answer is
            # cancelled before it runs (as the app's workers are when it closes): the
            # answer never reaches the screen. The once-a-second tick asks again.
            app._tick()
            app.workers.cancel_group(app, "node")
            app.status = None
            await wait_until(pilot, lambda: app.status is not None, "a later snapshot")


async def test_no_second_status_request_while_one_is_on_its_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node thread slow to answer (a long fsync) gets one request, not one a second."""
    calls: list[str] = []

    def counted(service: NodeService, now: float) -> StatusSnapshot:
        calls.append("snapshot")
        return take_snapshot(service, now)

    monkeypatch.setattr(app_module, "take_snapshot", counted)
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.status is not None, "a first snapshot")
            assert app.runner is not None
            release = threading.Event()

            def busy(service: NodeService) -> None:
                calls.append("busy")
                release.wait(WAIT_S)

            app.runner.submit(busy)
            # Once it is busy, any request asked before has been answered.
            await wait_until(pilot, lambda: "busy" in calls, "the node thread busy")
            for _ in range(3):  # three ticks while the node thread is busy
                app._tick()
            marker = app.runner.submit(lambda service: calls.append("marker"))
            release.set()
            await asyncio.wrap_future(marker)  # commands run in order: all before it ran
            asked = calls[calls.index("busy") + 1 : calls.index("marker")]
            assert asked == ["snapshot"]
