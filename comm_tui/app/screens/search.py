"""Search every conversation (ctrl+f): results as you type, Enter opens one in context.

The words go to ``Database.search`` (SQLite FTS5, kept in step with history in the same
transactions; docs in comm_tui/store/db.py), which treats them as words only. Results
show who, when, and the matching line with the words marked; everything shown is the
peers' text as literal characters, never markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from comm_tui.app.format import message_time, one_line, short_address, shown
from comm_tui.store.db import SearchHit

PREVIEW_CHARS = 70
RESULTS_MAX = 100

Searcher = Callable[[str], list[SearchHit]]


def marked(text: str, words: list[str]) -> Content:
    """``text`` (one line, literal) with each occurrence of ``words`` in bold.

    Case is folded for the marking; a word the index matched through its accents (café
    for cafe) is found by the search but not marked here, which costs nothing.
    """
    line = shown(one_line(text, PREVIEW_CHARS))
    spans: list[tuple[int, int]] = []
    for word in words:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(word), line, re.IGNORECASE)]
    content = Content(line)
    for start, end in spans:
        content = content.stylize("bold $text-accent", start, end)
    return content


def _prompt(hit: SearchHit, words: list[str]) -> Content:
    row = hit.row
    who = hit.contact_name or f"request {short_address(row.peer_address)}"
    arrow = "from" if row.direction == "in" else "to"
    return Content.assemble(
        (f"{arrow} ", "$text-muted"),
        (shown(who), "bold"),
        "  ",
        (message_time(row.created_at), "$text-muted"),
        "\n",
        marked(row.text, words),
    )


class SearchScreen(ModalScreen[SearchHit | None]):
    """Dismissed with the chosen result, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, search: Searcher) -> None:
        super().__init__()
        self.search = search
        self.hits: dict[str, SearchHit] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="search"):
            yield Static("Search messages", classes="dialog-title")
            yield Input(placeholder="words to find", id="search-input", max_length=200)
            yield Static("", id="search-status", classes="dialog-hint")
            yield OptionList(id="search-results")

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        words = event.value.split()
        results = self.query_one("#search-results", OptionList)
        results.clear_options()
        hits = self.search(event.value)[:RESULTS_MAX] if words else []
        self.hits = {str(hit.row.id): hit for hit in hits}
        results.add_options(Option(_prompt(hit, words), id=str(hit.row.id)) for hit in hits)
        status = self.query_one("#search-status", Static)
        if not words:
            status.update("Messages with words starting with each of yours.")
        elif not hits:
            status.update("No message has all of these words.")
        else:
            more = "+" if len(hits) == RESULTS_MAX else ""
            status.update(
                f"{len(hits)}{more} message{'s' * (len(hits) != 1)}:"
                " Enter opens the newest, down chooses another."
            )

    @on(Input.Submitted, "#search-input")
    def _submitted(self) -> None:
        """Enter in the box opens the newest result at once (down walks the list): two
        keys typed fast must not depend on the focus having moved in between."""
        results = self.query_one("#search-results", OptionList)
        if results.option_count:
            option = results.get_option_at_index(results.highlighted or 0)
            self.dismiss(self.hits.get(option.id or ""))

    def key_down(self) -> None:
        results = self.query_one("#search-results", OptionList)
        if self.query_one("#search-input", Input).has_focus and results.option_count:
            results.highlighted = 0
            results.focus()

    @on(OptionList.OptionSelected, "#search-results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.hits.get(event.option_id or ""))
