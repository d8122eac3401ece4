"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.node_procs import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """``comm-tui`` processes a test starts; every one is killed when it ends, pass or fail."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
