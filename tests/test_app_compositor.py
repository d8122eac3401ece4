"""What the terminal receives keeps a toast's wide characters (comm_tui/app/compositor.py).

The screen is written in two ways: in full, and as partial updates of the regions that
changed. A partial update writes the pieces ("chops") of the lines it covers; this
test plays those writes onto a grid of terminal cells holding the screen before the
toast, and compares with the full render. Textual's compositor cut the toast's line
at the edges of the panels under it and wrote a CJK character there as two spaces;
the fix must keep it in both ways, and a piece of a panel kept whole must never be
written over the toast in front of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.segment import ControlType, Segment
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets._toast import Toast

from comm_tui.app import app_session
from comm_tui.app.messages import NodeEvent
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import FAST_KDF_ENV
from comm_tui.net.service import IncomingText
from tests.app_helpers import SIZE, make_profile, wait_until

pytestmark = pytest.mark.timeout(90)

Grid = list[list[str]]


def _grid(strips: list[Strip]) -> Grid:
    """Terminal cells: a wide character fills its cell and leaves the next one ''."""
    grid: Grid = []
    for strip in strips:
        row: list[str] = []
        for segment in strip:
            for char in segment.text:
                width = cell_len(char)
                if width == 0 and row:
                    row[-1] += char  # a combining mark is drawn with the cell before
                else:
                    row += [char, ""] if width == 2 else [char]
        grid.append(row)
    return grid


def _play(grid: Grid, segments: list[Segment]) -> None:
    """Write ``segments`` (cursor moves and text) onto ``grid`` as a terminal would."""
    x = y = 0
    for segment in segments:
        for control in segment.control or ():
            if control[0] == ControlType.CURSOR_MOVE_TO:
                x, y = control[1], control[2]
        if segment.control:
            continue
        for char in segment.text:
            width = cell_len(char)
            if char == "\n":
                continue
            if width == 0:
                grid[y][x - 1] += char
                continue
            grid[y][x] = char
            if width == 2:
                grid[y][x + 1] = ""
            x += width


async def test_partial_updates_write_the_toast_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")
    make_profile(tmp_path)
    # An odd and an even column for the wide characters: some lie across a cut.
    text = "a" + "縀" * 26 + " " + "縀" * 40
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            compositor = app.screen._compositor
            await pilot.pause()
            before = _grid(compositor.render_strips())
            sender = Identity.generate()
            row = app.profile.db.add_incoming(
                bytes(16), sender.key, sender.address, text, 1, time.time()
            )
            assert row is not None
            app.post_message(NodeEvent(IncomingText(row)))
            await wait_until(pilot, lambda: app.screen.query(Toast), "the toast", 0.02)
            await pilot.pause()
            toast = app.screen.query_one(Toast)
            region = toast.region
            full = _grid(compositor.render_strips())
            # A line of the toast where a wide character lies across another widget's
            # edge (a cut): its right half, the cell at the cut, is "".
            line = next(
                (
                    y
                    for y in region.line_range
                    for cut in compositor.cuts[y]
                    if region.x < cut < region.right and full[y][cut] == "" and full[y][cut - 1]
                ),
                None,
            )
            assert line is not None, "no wide character across a cut: lost, or the layout moved"
            assert "縀" * 13 in "".join(full[line][region.x : region.right])
            for dirty in (
                region,  # the toast appears
                Region(region.x + 3, region.y, region.width - 6, region.height),  # a part
                Region(0, line, region.x, 1),  # beside it: must not write over it
            ):
                compositor._dirty_regions.add(dirty)
                update = compositor.render_update()
                assert update is not None
                writes = list(update.__rich_console__(app.console, app.console.options))
                onto_before = [list(cells) for cells in before]
                _play(onto_before, writes)
                for y in dirty.line_range:
                    assert onto_before[y][dirty.x : dirty.right] == full[y][dirty.x : dirty.right]
                onto_full = [list(cells) for cells in full]
                _play(onto_full, writes)
                assert onto_full == full  # nothing written that is not on screen
