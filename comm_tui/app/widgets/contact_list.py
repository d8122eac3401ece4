"""The contact list: contacts and message requests, newest activity first.

A list that re-sorts under the user's cursor makes them act on the wrong row, so the
highlighted row is pinned: when activity reorders the list, the other rows move
around it. Typing on the list writes in the open conversation's composer rather than
firing bindings, so the list's own keys are all chords or function keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events, on
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from comm_tui.app.format import list_time, one_line, short_address, shown
from comm_tui.app.messages import ConversationOpened

# Fits the list at its narrowest (28 columns, less its border and padding).
PREVIEW_CHARS = 24
EMPTY_HINT = "No contacts yet.\nPress ctrl+n to add one."
# A request's claimed name is quoted: it is the sender's words, not a name we gave.
_OPEN_QUOTE = "\N{LEFT SINGLE QUOTATION MARK}"
_CLOSE_QUOTE = "\N{RIGHT SINGLE QUOTATION MARK}"


@dataclass(frozen=True)
class ContactEntry:
    """One row: a contact, or a request from a sender who is not a contact (``name`` None)."""

    peer_address: bytes
    peer_key: bytes | None
    name: str | None
    last_text: str | None
    last_time: float | None
    unread: int
    muted: bool = False
    claimed_name: str | None = None  # what they call themselves (docs/PROTOCOL.md, "7.1.1")
    receipts: bool = False  # we send them read receipts

    @property
    def is_request(self) -> bool:
        return self.name is None

    @property
    def title(self) -> str:
        """The user's name for a contact; for a request, the name it claims, quoted as
        its own words, and its address (a claim proves nothing)."""
        if self.name is not None:
            return self.name
        if self.claimed_name is not None:
            quoted = f"{_OPEN_QUOTE}{self.claimed_name}{_CLOSE_QUOTE}"
            return f"request from {quoted} ({short_address(self.peer_address)})"
        return f"request {short_address(self.peer_address)}"

    @property
    def also_called(self) -> str | None:
        """A contact's claimed name when it differs from the user's name for it."""
        if self.name is None or self.claimed_name is None:
            return None
        return None if self.claimed_name.casefold() == self.name.casefold() else self.claimed_name


def _prompt(entry: ContactEntry) -> Content:
    name_style = "bold $warning" if entry.is_request else "bold"
    parts: list[str | Content | tuple[str, str]] = [(shown(entry.title), name_style)]
    if entry.muted:
        parts += [" ", ("(muted)", "$text-muted")]
    if entry.unread:
        parts += [" ", (f" {entry.unread} ", "bold $text-accent on $accent-muted")]
    if entry.last_time is not None:
        parts += ["  ", (list_time(entry.last_time), "$text-muted")]
    parts.append("\n")
    if entry.is_request:
        parts.append(("wants to talk: alt+a accepts, alt+i ignores", "italic $text-warning"))
    elif entry.last_text is not None:
        parts.append((one_line(entry.last_text, PREVIEW_CHARS), "$text-muted"))
    else:
        parts.append(("no messages yet", "italic $text-muted"))
    return Content.assemble(*parts)


class ContactList(OptionList):
    """Arrows move, Enter (or a click) opens the conversation."""

    BINDINGS = [
        Binding("enter", "select", "Open", tooltip="Open the conversation"),
        Binding("f2", "app.rename_contact", "Rename"),
        Binding("delete", "app.remove_contact", "Remove"),
        Binding("alt+a", "app.accept_request", "Accept"),
        Binding("alt+i", "app.ignore_request", "Ignore"),
        Binding("alt+m", "app.toggle_mute", "Mute", tooltip="Mute or unmute notifications"),
        Binding(
            "alt+e",
            "app.toggle_receipts",
            "Receipts",
            tooltip="Read receipts on/off for this contact",
            show=False,  # in the help screen (F1) and the palette; the footer is full
        ),
        Binding("question_mark", "app.help", "Help", show=False),
    ]

    @dataclass
    class Typed(Message):
        """A printable key on the list: it belongs in the composer, not to a binding."""

        character: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._entries: dict[str, ContactEntry] = {}

    def set_entries(self, entries: list[ContactEntry]) -> None:
        """Replace the rows (newest activity first), the highlighted one pinned in place."""
        keep = self.highlighted_entry
        index = self.highlighted or 0
        scroll_y = self.scroll_y
        pinned = next((e for e in entries if keep and e.peer_address == keep.peer_address), None)
        if pinned is not None:
            entries = [e for e in entries if e is not pinned]
            index = min(index, len(entries))
            entries.insert(index, pinned)
        else:
            index = 0
        self._entries = {entry.peer_address.hex(): entry for entry in entries}
        self.clear_options()
        if not entries:
            self.add_option(Option(EMPTY_HINT, id="empty", disabled=True))
            return
        self.add_options(Option(_prompt(e), id=e.peer_address.hex()) for e in entries)
        self.highlighted = index
        self.scroll_to(y=scroll_y, animate=False, immediate=True)

    def on_key(self, event: events.Key) -> None:
        # "?" stays the help key here; every other printable key is text.
        if event.is_printable and event.character is not None and event.character != "?":
            event.stop()
            event.prevent_default()
            self.post_message(self.Typed(event.character))

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
