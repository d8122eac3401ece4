"""The composer: a multi-line text area where Enter sends.

Terminal messengers differ on Enter; in a chat, most texts are one line, so Enter
sends and a newline takes a chord. Terminals report shift+enter only under the
kitty keyboard protocol, so the documented chord is ctrl+j (the terminal's own
line-feed key, distinct from Enter everywhere) with alt+enter and shift+enter as
aliases where they arrive. A pasted text keeps its newlines: a bracketed paste is one
event, never a series of Enters.

Up and down on an empty composer walk through what was sent in this session (as a
shell's history does); once the user edits a recalled text it is their draft.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from comm_tui.protocol.letters import MAX_TEXT_BYTES

# The counter appears when a text passes this share of the limit: far below it,
# a count is noise; near it, the user must see the end coming.
COUNTER_FROM = 0.8
# Sent texts that up/down can bring back, newest last.
HISTORY_MAX = 100
NEWLINE_KEYS = "ctrl+j,alt+enter,shift+enter"


def text_bytes(text: str) -> int:
    """The size that counts against the limit: UTF-8, as the letter carries it."""
    return len(text.encode("utf-8", "surrogatepass"))


class Composer(TextArea):
    """Enter sends; ctrl+j (or alt+enter) adds a line; up/down recall sent texts."""

    BINDINGS = [
        # Not in the footer, which has room for few keys: the placeholder says it.
        Binding(NEWLINE_KEYS, "newline", "New line", key_display="ctrl+j", show=False),
    ]

    @dataclass
    class Submitted(Message):
        """Enter on a text within the limit; the composer is already cleared."""

        composer: Composer
        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, tab_behavior="focus", **kwargs)  # type: ignore[arg-type]
        self._history: list[str] = []
        # Position while walking the history: None when not walking (a draft or empty).
        self._recalled: int | None = None

    def on_mount(self) -> None:
        self.show_line_numbers = False
        self.highlight_cursor_line = False

    async def _on_key(self, event: events.Key) -> None:
        # Enter and the newline chord are handled here, not left to the bindings: a
        # binding runs once the key has bubbled up to the app, behind the keys typed
        # after it, so fast typing (or a paste into a terminal without bracketed
        # paste) put the newline after the next words. The binding stays for the
        # footer and the help screen, where a click runs it.
        if event.key in NEWLINE_KEYS.split(","):
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self._submit()
            return
        if event.key in ("up", "down") and self._walks_history():
            event.stop()
            event.prevent_default()
            self._recall(-1 if event.key == "up" else 1)
            return
        await super()._on_key(event)

    def action_newline(self) -> None:
        start, end = self.selection
        self._replace_via_keyboard("\n", start, end)

    def _walks_history(self) -> bool:
        """Up/down recall only on an empty composer, or one showing an unedited recall."""
        if self._recalled is not None:
            return self.text == self._history[self._recalled]
        return not self.text and bool(self._history)

    def _recall(self, step: int) -> None:
        index = len(self._history) if self._recalled is None else self._recalled
        index = max(0, index + step)
        if index >= len(self._history):
            self._recalled = None
            self.load_text("")
            return
        self._recalled = index
        self.load_text(self._history[index])
        self.move_cursor(self.document.end)

    def _submit(self) -> None:
        text = self.text.strip()
        if not text:
            return
        size = text_bytes(text)
        if size > MAX_TEXT_BYTES:
            self.notify(
                f"The text is {size:,} bytes; the limit is {MAX_TEXT_BYTES:,}. Nothing was sent.",
                title="Too long",
                severity="error",
            )
            return
        if not self._history or self._history[-1] != text:
            self._history.append(text)
            del self._history[:-HISTORY_MAX]
        self._recalled = None
        self.load_text("")
        self.post_message(self.Submitted(self, text))

    def restore(self, text: str) -> None:
        """Put a text back (it could not be sent), with the cursor at its end."""
        self.load_text(text)
        self._recalled = None
        self.move_cursor(self.document.end)

    def _show_counter(self) -> None:
        size = text_bytes(self.text)
        if size < COUNTER_FROM * MAX_TEXT_BYTES:
            self.border_subtitle = ""
        else:
            self.border_subtitle = f"{size:,} / {MAX_TEXT_BYTES:,} bytes"
        self.set_class(size > MAX_TEXT_BYTES, "-over-limit")

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """Every edit, paste and recall passes here: the counter follows the text."""
        self._show_counter()
