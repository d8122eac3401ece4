"""Wide characters in overlays stay on screen: a fix to Textual's compositor.

Textual draws each screen line in "chops" cut at every edge of every widget on that
line, also the edges of widgets *under* the one in front. A double-width character
(CJK, many emoji) that straddles such an edge is split by ``Segment.divide``, and a
split wide character becomes two spaces. So a toast over the conversation and the
status panel lost the characters that happened to sit over a panel's border: a
stranger's ``t縀R`` was shown as ``t  R`` (upstream: Textualize/textual#6357, open
for Textual 8.2.8). Here the widget in front is cut only where what is in front
changes (where another widget is in front), so what it draws arrives whole. The
cells it covers past the first cut get an empty strip, which keeps the widgets below
from claiming them, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

from textual._compositor import Compositor
from textual.geometry import Region
from textual.strip import Strip

_COVERED = Strip([], 0)


def _render_chops(
    self: Compositor, crop: Region, is_rendered_line: Callable[[int], bool]
) -> Sequence[Mapping[int, Strip]]:
    """``Compositor._render_chops`` with a front widget's runs of cells kept whole.

    A run of adjacent chops where this widget is in front is given to it as one
    strip, in the run's first chop. Who is in front is decided over every visible
    widget, not only the ones rendered for ``crop``: a partial update writes a
    chop's whole strip, and it must not write over a widget in front that this
    update did not render.
    """
    cuts = self.cuts
    chops: list[dict[int, Strip | None]] = [dict.fromkeys(cut_set[:-1]) for cut_set in cuts]
    fronts: dict[int, list[tuple[Region, Region] | None]] = {}
    for region, clip, strips in self._get_renders(crop):
        render_region = region.intersection(clip)
        render_x = render_region.x
        first_cut, last_cut = render_region.column_span
        for y, strip in zip(render_region.line_range, strips, strict=False):
            if not is_rendered_line(y):
                continue
            chops_line = chops[y]
            final_cuts = [cut for cut in cuts[y] if last_cut >= cut >= first_cut]
            if len(final_cuts) < 2:
                continue
            if y not in fronts:
                fronts[y] = _fronts(self, y)
            front = fronts[y]
            first = cuts[y].index(first_cut)  # final_cuts are consecutive cuts of the line
            mine = [front[first + index] == (region, clip) for index in range(len(final_cuts) - 1)]
            bounds = [
                cut
                for index, cut in enumerate(final_cuts[1:-1], start=1)
                if not (mine[index] and mine[index - 1])
            ]
            bounds.append(final_cuts[-1])
            start = final_cuts[0]
            pieces = strip.divide([cut - render_x for cut in bounds])
            for piece, end in zip(pieces, bounds, strict=False):
                if chops_line.get(start) is None:
                    chops_line[start] = piece
                    for cut in final_cuts:
                        if start < cut < end:
                            chops_line[cut] = _COVERED
                start = end
    return cast("Sequence[Mapping[int, Strip]]", chops)  # as Textual's: None is skipped


def _fronts(self: Compositor, y: int) -> list[tuple[Region, Region] | None]:
    """For each chop of line ``y``, the (region, clip) of the widget in front there.

    ``visible_widgets`` is in drawing order, front first, as ``_get_renders`` reads it.
    """
    line_cuts = self.cuts[y]
    front: list[tuple[Region, Region] | None] = [None] * (len(line_cuts) - 1)
    for region, clip in self.visible_widgets.values():
        x, top, width, height = region.intersection(clip)
        if width and height and top <= y < top + height:
            for index, cut in enumerate(line_cuts[:-1]):
                if front[index] is None and x <= cut < x + width:
                    front[index] = (region, clip)
    return front


def keep_wide_characters() -> None:
    """Install the fixed ``_render_chops`` on Textual's compositor (idempotent)."""
    Compositor._render_chops = _render_chops  # type: ignore[method-assign]
