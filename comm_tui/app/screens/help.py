"""The help screen (F1, or ? on the contact list): every key the app answers to.

The table is built from the widgets' own ``BINDINGS``, so a key added or changed
there shows here without anyone remembering to update a text; the few keys that are
not bindings (Enter sends, up/down recall) are listed beside them.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

# Keys handled in code rather than declared as bindings: (keys, what they do).
COMPOSER_KEYS = [
    ("enter", "Send the text"),
    ("up / down", "On an empty composer: the texts sent before"),
    ("tab", "Leave the composer"),
]
LIST_KEYS = [
    ("up / down", "Move through contacts"),
    ("any letter", "Write to the open conversation"),
]


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) of each declared binding that has a description."""
    rows = []
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        keys = " / ".join(key.strip() for key in binding.key.split(","))
        rows.append((keys, binding.tooltip or binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    """Sections of keys; Escape, F1 or q closes it."""

    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help"):
            yield Static("Keys", classes="dialog-title")
            with VerticalScroll(id="help-keys"):
                for title, rows in self.sections:
                    yield Static(Content.styled(title, "bold $text-primary"), classes="help-title")
                    for keys, what in rows:
                        yield Static(
                            Content.assemble((f"{keys:>18}", "bold"), "  ", what),
                            classes="help-row",
                        )
            yield Static(
                "ctrl+p opens the command palette: every action by name.",
                classes="dialog-hint",
            )
