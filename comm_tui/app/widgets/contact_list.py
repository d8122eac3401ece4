"""The contact list: contacts and message requests, newest activity first."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.binding import Binding
from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from comm_tui.app.format import list_time, one_line, short_address, shown
from comm_tui.app.messages import ConversationOpened

# Fits the list at its narrowest (28 columns, less its border and padding).
PREVIEW_CHARS = 24
EMPTY_HINT = "No contacts yet.\nPress ctrl+n to add one."


@dataclass(frozen=True)
class ContactEntry:
    """One row: a contact, or a request from a sender who is not a contact (``name`` None)."""

    peer_address: bytes
    peer_key: bytes | None
    name: str | None
    last_text: str | None
    last_time: float | None
    unread: int

    @property
    def is_request(self) -> bool:
        return self.name is None

    @property
    def title(self) -> str:
        return self.name or f"request {short_address(self.peer_address)}"


def _prompt(entry: ContactEntry) -> Content:
    name_style = "bold $warning" if entry.is_request else "bold"
    parts: list[str | Content | tuple[str, str]] = [(shown(entry.title), name_style)]
    if entry.unread:
        parts += [" ", (f" {entry.unread} ", "bold $text-accent on $accent-muted")]
    if entry.last_time is not None:
        parts += ["  ", (list_time(entry.last_time), "$text-muted")]
    parts.append("\n")
    if entry.is_request:
        parts.append(("wants to talk: a to accept, i to ignore", "italic $text-warning"))
    elif entry.last_text is not None:
        parts.append((one_line(entry.last_text, PREVIEW_CHARS), "$text-muted"))
    else:
        parts.append(("no messages yet", "italic $text-muted"))
    return Content.assemble(*parts)


class ContactList(OptionList):
    """Arrows move, Enter (or a click) opens the conversation."""

    BINDINGS = [
        Binding("enter", "select", "Open", tooltip="Open the conversation"),
        Binding("r", "app.rename_contact", "Rename"),
        Binding("delete,d", "app.remove_contact", "Remove"),
        Binding("a", "app.accept_request", "Accept"),
        Binding("i", "app.ignore_request", "Ignore"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._entries: dict[str, ContactEntry] = {}

    def set_entries(self, entries: list[ContactEntry]) -> None:
        """Replace the rows, keeping the highlighted one where it still exists."""
        keep = self.highlighted_entry
        self._entries = {entry.peer_address.hex(): entry for entry in entries}
        self.clear_options()
        if not entries:
            self.add_option(Option(EMPTY_HINT, id="empty", disabled=True))
            return
        self.add_options(Option(_prompt(e), id=e.peer_address.hex()) for e in entries)
        index = 0
        if keep is not None and keep.peer_address.hex() in self._entries:
            index = self.get_option_index(keep.peer_address.hex())
        self.highlighted = index

    @property
    def highlighted_entry(self) -> ContactEntry | None:
        if self.highlighted is None or not self._entries:
            return None
        option = self.get_option_at_index(self.highlighted)
        return self._entries.get(option.id or "")

    def entry(self, peer_address: bytes) -> ContactEntry | None:
        return self._entries.get(peer_address.hex())

    def select_address(self, peer_address: bytes) -> None:
        if peer_address.hex() in self._entries:
            self.highlighted = self.get_option_index(peer_address.hex())

    @on(OptionList.OptionSelected)
    def _opened(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        entry = self._entries.get(event.option_id or "")
        if entry is not None:
            self.post_message(ConversationOpened(entry.peer_address))
