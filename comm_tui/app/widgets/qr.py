"""A QR code drawn with half-block characters: two rows of modules per terminal line.

Where the terminal cannot draw half blocks, each module is two cells on one line:
``##`` drawn black on black for a dark one (solid with colour, still a visible
pattern without), two spaces on white for a light one.
"""

from __future__ import annotations

import itertools

import segno
from textual.content import Content
from textual.widgets import Static

QR_BORDER_MODULES = 2
# Dark modules in the foreground on a light background, as scanners expect.
QR_STYLE = "#000000 on #ffffff"
QR_DARK_STYLE = "#000000 on #000000"
_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_modules(text: str) -> list[list[bool]]:
    """The QR code of ``text``, dark modules True (cards go upper-case: a smaller code)."""
    code = segno.make(text.upper(), error="m")
    return [
        [bool(module) for module in row]
        for row in code.matrix_iter(scale=1, border=QR_BORDER_MODULES)
    ]


def qr_ascii(text: str) -> Content:
    """The QR code of ``text`` in ASCII: two cells and one line per module."""
    lines = []
    for row in qr_modules(text):
        runs = itertools.groupby(row)
        lines.append(
            Content.assemble(
                *(
                    ("##" * len(list(group)), QR_DARK_STYLE) if dark else "  " * len(list(group))
                    for dark, group in runs
                )
            ).stylize_before(QR_STYLE)
        )
    return Content("\n").join(lines)


def qr_lines(text: str) -> list[str]:
    """The QR code of ``text`` as lines of half blocks, two rows of modules per line."""
    rows = qr_modules(text)
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    return [
        "".join(_HALF_BLOCKS[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[::2], rows[1::2], strict=True)
    ]


class QRCode(Static):
    """Shows ``text`` as a QR code; the content is set with :meth:`show`."""

    DEFAULT_CSS = """
    QRCode { width: auto; height: auto; }
    """

    def __init__(self, text: str = "", *, ascii: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._text = ""
        self.ascii = ascii
        if text:
            self.show(text)

    def show(self, text: str) -> None:
        if text == self._text:
            return
        self._text = text
        if self.ascii:
            self.update(qr_ascii(text))
        else:
            self.update(Content("\n".join(qr_lines(text))).stylize(QR_STYLE))
