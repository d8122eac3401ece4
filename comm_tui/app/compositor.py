"""Wide characters in overlays stay on screen: a fix to Textual's compositor.

Textual draws each screen line in "chops" cut at every edge of every widget on that
line, also the edges of widgets *under* the one in front. A double-width character
(CJK, many emoji) that straddles such an edge is split by ``Segment.divide``, and a
split wide character becomes two spaces. So a toast over the conversation and the
status panel lost the characters that happened to sit over a panel's border: a
stranger's ``t縀R`` was shown as ``t  R`` (upstream: Textualize/textual#6357, open
for Textual 8.2.8). Here the widget in front is cut only where what is in front
changes (where a widget in front already took the cells), so what it draws arrives
whole. The cells it covers past the first cut get an empty strip, which keeps the
widgets below from claiming them, as before.
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

    Widgets come front first; a run of adjacent chops that no widget before this one
    took is given to it as one strip, in the run's first chop. A partial update
    (``crop`` smaller than the screen) writes a chop's whole strip, which is right
    because the run is this widget's in front: a widget in front that was not
    rendered (its clip misses ``crop``) lies inside an ancestor that was, and that
    ancestor took those chops first.
    """
    cuts = self.cuts
    chops: list[dict[int, Strip | None]] = [dict.fromkeys(cut_set[:-1]) for cut_set in cuts]
    for region, clip, strips in self._get_renders(crop):
        render_region = region.intersection(clip)
        render_x = render_region.x
        first_cut, last_cut = render_region.column_span
        for y, strip in zip(render_region.line_range, strips, strict=False):
            if not is_rendered_line(y):
                continue
            chops_line = chops[y]
            final_cuts = [cut for cut in cuts[y] if last_cut >= cut >= first_cut]
            if len(final_cuts) < 2:  # no width on this line: nothing to draw
                continue
            free = [chops_line.get(cut) is None for cut in final_cuts[:-1]]
            # Cut only where a taken chop meets a free one, and at the end.
            bounds = [
                cut
                for index, cut in enumerate(final_cuts[1:-1], start=1)
                if free[index] != free[index - 1]
            ]
            bounds += final_cuts[-1:]
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


def keep_wide_characters() -> None:
    """Install the fixed ``_render_chops`` on Textual's compositor (idempotent)."""
    Compositor._render_chops = _render_chops  # type: ignore[method-assign]
