"""The conversation pane: a lazily loaded history and the input that sends.

Only the newest page of history is mounted when a conversation opens; scrolling
to the top loads the page before it (``history(before_id=...)``), so a
conversation with 100,000 messages opens as fast as one with ten.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Static

from comm_tui.app.format import (
    ASCII_STATE_MARKS,
    STATE_HELP,
    STATE_MARKS,
    day_label,
    local_day,
    message_time,
    short_address,
    shown,
    shown_state,
)
from comm_tui.app.messages import RequestAnswered, SendRequested
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.contact_list import ContactEntry
from comm_tui.store.db import DEFAULT_HISTORY_PAGE, HistoryRow

NO_CONVERSATION = "Pick a contact on the left (arrows, Enter) or add one with ctrl+n."
# Load the previous page when the view is this close to the top, in lines.
LOAD_OLDER_MARGIN_LINES = 2


class HistorySource(Protocol):
    def history(
        self, peer_address: bytes, limit: int = ..., before_id: int | None = ...
    ) -> list[HistoryRow]: ...

    def history_after(
        self, peer_address: bytes, after_id: int, limit: int = ...
    ) -> list[HistoryRow]: ...

    def history_around(
        self, peer_address: bytes, row_id: int, limit: int = ...
    ) -> list[HistoryRow]: ...


class MessageRow(Horizontal):
    """One message: time and delivery mark on the left, the wrapped text on the right."""

    def __init__(self, row: HistoryRow, marks: dict[str, str] = STATE_MARKS) -> None:
        super().__init__(classes=f"-{row.direction}")
        self.row = row
        self.marks = marks

    def compose(self) -> ComposeResult:
        # Drawn from self.row as it is now: a state that changed since the row was
        # created (update_row before this ran) is already in it.
        yield Static(self._meta(), classes="meta").with_tooltip(STATE_HELP.get(self.state))
        yield Static(Content(shown(self.row.text)), classes="body")

    @property
    def state(self) -> str:
        return shown_state(self.row.state, self.row.read_at)

    def _meta(self) -> Content:
        mark = self.marks.get(self.state, "")
        style = {
            "delivered": "$text-success",
            "read": "bold $text-accent",
            "expired": "$text-error",
        }.get(self.state, "$text-muted")
        return Content.assemble(
            (message_time(self.row.created_at), "$text-muted"), " ", (mark, style)
        )

    def update_row(self, row: HistoryRow) -> None:
        """Show the row's new state. A row is mounted without waiting (add_row), and a
        text's next state can come right after it is shown (its delivery, under load):
        before the row is composed there is nothing to redraw, and compose draws it."""
        self.row = row
        for meta in self.query(".meta").results(Static):
            meta.update(self._meta())
            meta.tooltip = STATE_HELP.get(self.state)
        self.set_class(row.state == "expired", "-expired")


class DaySeparator(Static):
    """ "── Yesterday ──" above the first message of each day."""

    def __init__(self, when: float) -> None:
        super().__init__(Content(day_label(when)), classes="day-separator")
        self.day = local_day(when)


class UnreadMarker(Static):
    """Above the first message that was unread when the conversation opened."""

    def __init__(self, count: int) -> None:
        label = f"{count} new message{'s' * (count != 1)}"
        super().__init__(Content(label), classes="unread-marker")


def with_separators(
    rows: list[MessageRow], before: HistoryRow | None, unread: int = 0
) -> list[Static | MessageRow]:
    """``rows`` with a day separator wherever the day changes (``before`` is the row
    shown just above them, if any) and the unread marker above the last ``unread``
    incoming messages."""
    incoming = [i for i, w in enumerate(rows) if w.row.direction == "in"]
    first_unread = incoming[-min(unread, len(incoming))] if unread and incoming else None
    widgets: list[Static | MessageRow] = []
    previous = before
    for index, widget in enumerate(rows):
        if previous is None or local_day(previous.created_at) != local_day(widget.row.created_at):
            widgets.append(DaySeparator(widget.row.created_at))
        if index == first_unread:
            widgets.append(UnreadMarker(unread))
        widgets.append(widget)
        previous = widget.row
    return widgets


class MessageLog(VerticalScroll, can_focus=True):
    """The scrolling history, with a selected message; tells its parent when the top
    is reached (to load older pages) and when the user asks where a message is."""

    BINDINGS = [
        Binding("up", "select(-1)", "Previous message", show=False),
        Binding("down", "select(1)", "Next message", show=False),
        Binding("enter", "details", "Where is it?", tooltip="Where the selected message is"),
        Binding("home", "scroll_home", "Oldest", show=False),
        Binding("end", "scroll_end", "Newest", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]

    class NearTop(Message):
        """The user scrolled to the top: time to load older messages."""

    class NearBottom(Message):
        """The user scrolled to the bottom of a page opened in the past (a search result)."""

    @dataclass
    class DetailsRequested(Message):
        """Enter on a selected message: show where it is (the custody screen)."""

        widget: MessageRow

    selected: MessageRow | None = None

    def on_mount(self) -> None:
        self.anchor()
        self.watch(self, "scroll_y", self._scrolled, init=False)

    def _scrolled(self, scroll_y: float) -> None:
        if scroll_y <= LOAD_OLDER_MARGIN_LINES and self.max_scroll_y > 0:
            self.post_message(self.NearTop())
        if scroll_y >= self.max_scroll_y - LOAD_OLDER_MARGIN_LINES and not self.is_anchored:
            self.post_message(self.NearBottom())

    def release_anchor_at_top(self) -> None:
        """Stop following the newest message, the view back inside its content.

        A log shorter than its view is drawn at the bottom, while anchored, by a negative
        ``scroll_y`` that Textual's layout sets only as long as the anchor holds. Released
        as it stood, that offset stayed: a page mounted next was drawn below the view,
        out of sight (a search result opened from an empty conversation showed an empty
        pane, and under load from any conversation, when a frame fell between the old
        rows' removal and the new ones' mount).
        """
        self.anchor(False)
        # (forced: with no more content than view, Textual would not scroll at all)
        self.scroll_to(y=0, animate=False, immediate=True, force=True)

    def action_select(self, step: int) -> None:
        """Move the selection; the first press selects the newest message."""
        rows = list(self.query(MessageRow))
        if not rows:
            return
        if self.selected is None or self.selected not in rows:
            index = len(rows) - 1
        else:
            index = max(0, min(len(rows) - 1, rows.index(self.selected) + step))
        self.select(rows[index])

    def select(self, widget: MessageRow | None) -> None:
        if self.selected is not None:
            self.selected.remove_class("-selected")
        self.selected = widget
        if widget is not None:
            widget.add_class("-selected")
            self.scroll_to_widget(widget, animate=False)

    def action_details(self) -> None:
        if self.selected is not None:
            self.post_message(self.DetailsRequested(self.selected))

    def on_blur(self) -> None:
        self.select(None)


class RequestBar(Horizontal):
    """Shown above a conversation with someone who is not a contact yet."""

    def compose(self) -> ComposeResult:
        yield Static("Not in your contacts. Accept to reply.", classes="request-text")
        yield Button("Accept", id="accept", variant="success")
        yield Button("Ignore", id="ignore", variant="default")


class ConversationView(Vertical):
    """Title, request bar, history and input for the open conversation."""

    def __init__(self, source: HistorySource, *, ascii: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.source = source
        self.marks = ASCII_STATE_MARKS if ascii else STATE_MARKS
        self.peer: ContactEntry | None = None
        self._rows: dict[int, MessageRow] = {}
        self._oldest_id: int | None = None
        self._has_older = False
        # Opened at a search result: newer messages exist below the loaded ones.
        self._newest_id: int | None = None
        self._has_newer = False
        # One change of the rows at a time: a conversation opening (on the app's loop)
        # and a page loading (on this widget's) both remove and mount rows; a page loaded
        # across a reopening mixed two conversations' rows, or mounted before a removed one.
        self._changing = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Static(NO_CONVERSATION, id="conversation-title")
        yield RequestBar(id="request-bar")
        yield MessageLog(id="message-log")
        yield Composer(
            placeholder="Write a message; Enter sends", id="message-input", disabled=True
        )

    def on_mount(self) -> None:
        self.query_one(RequestBar).display = False

    @property
    def peer_address(self) -> bytes | None:
        return None if self.peer is None else self.peer.peer_address

    async def open(self, peer: ContactEntry) -> None:
        """Show the conversation with ``peer``: its newest page of history."""
        same = self.peer is not None and self.peer.peer_address == peer.peer_address
        self.set_peer(peer)
        if same and not self._has_newer:  # (a page in the past goes back to the newest)
            return
        rows = self.source.history(peer.peer_address, DEFAULT_HISTORY_PAGE)
        has_older = len(rows) == DEFAULT_HISTORY_PAGE
        await self._show(rows, unread=peer.unread, has_older=has_older, has_newer=False)
        self.query_one(MessageLog).anchor()

    async def open_at(self, peer: ContactEntry, row_id: int) -> None:
        """Show the conversation with ``peer`` around message ``row_id``, selected."""
        self.set_peer(peer)
        # Released before the rows change: no layout of the new page may run anchored.
        self.query_one(MessageLog).release_anchor_at_top()
        address = peer.peer_address
        rows = self.source.history_around(address, row_id)
        has_older = sum(r.id <= row_id for r in rows) == DEFAULT_HISTORY_PAGE // 2
        has_newer = bool(rows) and bool(self.source.history_after(address, rows[-1].id, 1))
        await self._show(rows, unread=0, has_older=has_older, has_newer=has_newer)
        log = self.query_one(MessageLog)
        target = self._rows.get(row_id)
        if target is not None:
            log.focus()
            log.call_after_refresh(log.select, target)

    async def _show(
        self, rows: list[HistoryRow], *, unread: int, has_older: bool, has_newer: bool
    ) -> None:
        async with self._changing:
            log = self.query_one(MessageLog)
            await log.remove_children()
            log.selected = None
            self._has_older = has_older
            self._oldest_id = rows[0].id if rows else None
            self._newest_id = rows[-1].id if rows else None
            self._has_newer = has_newer
            widgets = [MessageRow(row, self.marks) for row in rows]
            self._rows = {w.row.id: w for w in widgets}
            await log.mount_all(with_separators(widgets, None, unread))

    def set_peer(self, peer: ContactEntry) -> None:
        """Update the title and request bar (after a rename or an accept)."""
        self.peer = peer
        parts: list[str | tuple[str, str]] = [(shown(peer.title), "bold")]
        also = peer.also_called
        if also is not None:
            # docs/PROTOCOL.md, "7.1.1": the user's own name wins; the claim is secondary.
            parts.append((f" — calls themselves {shown(also)}", "italic $text-muted"))
        parts += ["  ", (peer.peer_address.hex(), "$text-muted")]
        title = Content.assemble(*parts)
        self.query_one("#conversation-title", Static).update(title)
        self.query_one(RequestBar).display = peer.is_request
        composer = self.query_one(Composer)
        composer.disabled = peer.is_request
        # A Content, never a str: TextArea reads a str placeholder as markup, and the
        # title may be a stranger's words.
        composer.placeholder = Content(
            "Accept the request to reply"
            if peer.is_request
            else f"Message {shown(peer.title)} ({short_address(peer.peer_address)})"
            " · ctrl+j: new line"
        )

    async def close(self) -> None:
        async with self._changing:
            self.peer = None
            self._rows.clear()
            await self.query_one(MessageLog).remove_children()
        self.query_one("#conversation-title", Static).update(NO_CONVERSATION)
        self.query_one(RequestBar).display = False
        self.query_one(Composer).disabled = True

    def focus_input(self) -> None:
        composer = self.query_one(Composer)
        if not composer.disabled:
            composer.focus()

    async def add_row(self, row: HistoryRow) -> None:
        """Append a new message of the open conversation.

        Under the lock of the changes of rows: a text that arrived while a conversation
        opened (its rows removed, the new page not yet mounted) was mounted above the
        new page, or beside its own row in it, and left out of ``_rows`` (its later
        states never drawn). Waiting, it sees the page that is shown.
        """
        async with self._changing:
            if row.peer_address != self.peer_address or row.id in self._rows or self._has_newer:
                return  # (with newer messages still to load, it comes with them)
            widget = MessageRow(row, self.marks)
            last = next(reversed(self._rows.values()), None) if self._rows else None
            self._rows[row.id] = widget
            self.query_one(MessageLog).mount_all(
                with_separators([widget], None if last is None else last.row)
            )

    def update_row(self, row: HistoryRow) -> None:
        widget = self._rows.get(row.id)
        if widget is not None:
            widget.update_row(row)

    def row_widget(self, row_id: int) -> MessageRow | None:
        return self._rows.get(row_id)

    @on(MessageLog.NearBottom)
    async def _load_newer(self, event: MessageLog.NearBottom) -> None:
        event.stop()
        if (
            self._changing.locked()
            or not self._has_newer
            or self.peer is None
            or self._newest_id is None
        ):
            return
        async with self._changing:
            rows = self.source.history_after(
                self.peer.peer_address, self._newest_id, DEFAULT_HISTORY_PAGE
            )
            self._has_newer = len(rows) == DEFAULT_HISTORY_PAGE
            if not rows:
                return
            last = next(reversed(self._rows.values()), None)
            widgets = [MessageRow(row, self.marks) for row in rows]
            self._rows.update({w.row.id: w for w in widgets})
            self._newest_id = rows[-1].id
            log = self.query_one(MessageLog)
            await log.mount_all(with_separators(widgets, None if last is None else last.row))
            if not self._has_newer:
                log.anchor()  # at the newest again: follow what arrives

    @on(MessageLog.NearTop)
    async def _load_older(self, event: MessageLog.NearTop) -> None:
        event.stop()
        if self._changing.locked() or not self._has_older or self.peer is None:
            return
        async with self._changing:
            rows = self.source.history(
                self.peer.peer_address, DEFAULT_HISTORY_PAGE, before_id=self._oldest_id
            )
            self._has_older = len(rows) == DEFAULT_HISTORY_PAGE
            if not rows:
                return
            self._oldest_id = rows[0].id
            log = self.query_one(MessageLog)
            height_before = log.virtual_size.height
            widgets = [MessageRow(row, self.marks) for row in rows]
            self._rows = {w.row.id: w for w in widgets} | self._rows
            first = log.children[0] if log.children else None
            if isinstance(first, DaySeparator) and first.day == local_day(rows[-1].created_at):
                # The older page ends on the day the shown history began with.
                await first.remove()
                first = log.children[0] if log.children else None
            await log.mount_all(with_separators(widgets, None), before=first)

            def keep_place() -> None:
                # Keep the message the user was reading where it was on screen.
                added = log.virtual_size.height - height_before
                log.scroll_to(y=log.scroll_y + added, animate=False, immediate=True)

            log.call_after_refresh(keep_place)

    @on(Composer.Submitted)
    def _submitted(self, event: Composer.Submitted) -> None:
        event.stop()
        if self.peer is not None:
            self.post_message(SendRequested(self.peer.peer_address, event.text))

    @on(Button.Pressed, "#accept, #ignore")
    def _answered(self, event: Button.Pressed) -> None:
        event.stop()
        if self.peer is not None:
            self.post_message(RequestAnswered(self.peer.peer_address, event.button.id == "accept"))
