"""What the apps print when they crash: the traceback, without the local variables.

Textual's default crash report (``App._fatal_error``) is a rich traceback with
``show_locals=True``: every frame's variables, which in this app are message texts,
rows of history, passphrases and key objects, printed to the terminal and then pasted
into bug reports. Both apps route their crash report here instead.
"""

from __future__ import annotations

from typing import Any

import rich
from rich.segment import Segments
from rich.traceback import Traceback
from textual.app import App


def report_crash_without_locals(app: App[Any]) -> None:
    """Textual's ``_fatal_error`` with ``show_locals=False``; the rest is unchanged."""
    app.bell()
    traceback = Traceback(show_locals=False, width=None, suppress=[rich])
    app._exit_renderables.append(Segments(app.console.render(traceback, app.console.options)))
    app._close_messages_no_wait()
