"""A QR code drawn with half-block characters: two rows of modules per terminal line."""

from __future__ import annotations

import segno
from textual.content import Content
from textual.widgets import Static

QR_BORDER_MODULES = 2
# Dark modules in the foreground on a light background, as scanners expect.
QR_STYLE = "#000000 on #ffffff"
_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_lines(text: str) -> list[str]:
    """The QR code of ``text`` as lines of half blocks (cards go upper-case: a smaller code)."""
    code = segno.make(text.upper(), error="m")
    rows = [
        [bool(module) for module in row]
        for row in code.matrix_iter(scale=1, border=QR_BORDER_MODULES)
    ]
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

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._text = ""
        if text:
            self.show(text)

    def show(self, text: str) -> None:
        if text == self._text:
            return
        self._text = text
        self.update(Content("\n".join(qr_lines(text))).stylize(QR_STYLE))
