"""Shared helpers for the app tests: profiles in tmp dirs and a bounded wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from textual.pilot import Pilot

from comm_tui.app.app import CommApp
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import write_identity_file
from comm_tui.net.service import NodeService
from comm_tui.store.config import Config, save_config
from comm_tui.store.db import Database
from comm_tui.store.paths import ensure_dirs, profile_paths

T = TypeVar("T")
SIZE = (140, 45)
WAIT_S = 15.0


async def wait_until(
    pilot: Pilot[int], condition: Callable[[], object], what: str, step_s: float = 0.1
) -> None:
    """Poll ``condition`` every ``step_s`` for up to WAIT_S; fail naming ``what``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(step_s)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")


def keep_notifications(app: CommApp) -> list[tuple[str, str]]:
    """(title, message) of every notification ``app`` raises from now on, in order.

    ``app._notifications`` holds only the toasts still shown: each is dropped when its
    timeout ends (5 s by default), so a count taken there misses any raised more than
    5 s earlier, as on a loaded machine. This list keeps them all; the app still shows
    each one as before.
    """
    kept: list[tuple[str, str]] = []
    notify = app.notify

    def keeping(message: str, **options: Any) -> None:
        kept.append((str(options.get("title", "")), message))
        notify(message, **options)

    app.notify = keeping  # type: ignore[method-assign]
    return kept


def make_profile(
    data_dir: Path, identity: Identity | None = None, nickname: str = "tester"
) -> Identity:
    """A profile that already exists (no first-run prompt), with LAN discovery off."""
    paths = profile_paths("default", data_dir)
    ensure_dirs(paths)
    identity = identity or Identity.generate()
    write_identity_file(paths.identity_file, identity)
    save_config(paths.config_file, Config(nickname=nickname, lan_discovery=False))
    Database.open(paths.database).close()
    return identity


def profile_db(data_dir: Path) -> Database:
    return Database.open(profile_paths("default", data_dir).database)


async def on_node(app: CommApp, read: Callable[[NodeService], T]) -> T:
    """``read(service)`` run on the app's node thread (the only place that may read the
    node), awaited without blocking the app's loop."""
    assert app.runner is not None, "the node is not running"
    return await asyncio.wrap_future(app.runner.submit(read))


async def wait_on_node(
    pilot: Pilot[int], app: CommApp, condition: Callable[[NodeService], object], what: str
) -> None:
    """``wait_until`` for a condition on the node's state, checked on the node thread."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if app.node_bound is not None:
            met: object = await on_node(app, condition)
            if met:
                return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
