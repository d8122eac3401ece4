"""Where is my message? The custody screen (Enter on a message in the conversation).

Users of store-and-forward messengers ask it most (Bitmessage #723, SimpleX #2990):
a ◷ or ✓ says nothing about whether a text sits in three nodes or in none. This
screen shows, live (refreshed every second), what our node knows: for our own texts,
how many nodes hold each part and since when, how often it was sent, when it is tried
next, when the network drops it; once delivered, that the recipient's signed
acknowledgement came back. An expired text can be sent again from here with one key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import WorkType

from comm_tui.app.format import ago, shown
from comm_tui.protocol.custody import Custody
from comm_tui.store.db import HistoryRow

REFRESH_S = 1.0

# Asks the node thread where a text is (NodeRunner.custody): the screen awaits the answer
# in its refresh timer, never in a handler, so a busy node cannot hold up a key.
CustodySource = Callable[[bytes], concurrent.futures.Future[Custody | None]]


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _until(when: float, now: float) -> str:
    return "now" if when <= now else f"in {ago(when - now)}"


def custody_lines(
    row: HistoryRow, custody: Custody | None, now: float, *, node_running: bool
) -> list[str]:
    """What the screen says about ``row``: plain lines, computed here to be testable."""
    if row.direction == "in":
        lines = [f"Received {_clock(row.created_at)}."]
        if row.sent_ms is not None:
            lines.append(f"Written {_clock(row.sent_ms / 1000)} (the sender's clock).")
        lines.append("Our signed acknowledgement went back the way it came.")
        return lines
    lines = [f"Written {_clock(row.created_at)}."]
    if row.read_at is not None:
        # docs/PROTOCOL.md, "7.1.1": only the recipient's own receipt sets it.
        lines.append(f"Read {_clock(row.read_at)}: the recipient sent a read receipt.")
    if row.state == "delivered":
        lines.append(
            f"Delivered {_clock(row.updated_at)}: the recipient's signed acknowledgement"
            " came back, checked against their key."
        )
        return lines
    if row.state == "expired":
        lines.append(
            f"Expired {_clock(row.updated_at)} without an acknowledgement: the network has"
            " dropped it. Press r to send it again."
        )
        return lines
    if not node_running:
        lines.append("The node is not running: the text waits in the outbox.")
        return lines
    if custody is None:
        lines.append("The outbox no longer holds it; its final state follows.")
        return lines
    lines.append(
        f"{custody.acknowledged} of {custody.parts} part{'s' * (custody.parts != 1)}"
        f" acknowledged. The network drops it {_until(custody.expires_at, now)}"
        f" ({_clock(custody.expires_at)}) unless it is delivered first."
    )
    for part in custody.pending:
        held = (
            f"held by {part.holders} node{'s' * (part.holders != 1)}"
            f" since {ago(now - part.held_since)} ago"
            if part.holders and part.held_since is not None
            else "held by no node yet"
        )
        retry = (
            f"next try {_until(part.next_retry, now)}"
            if part.next_retry is not None
            else "no retry scheduled"
        )
        sent = f"sent {part.attempts} time{'s' * (part.attempts != 1)}"
        lines.append(f"Part {part.part + 1}: {held}; {sent}; {retry}.")
    return lines


class CustodyScreen(ModalScreen[bool]):
    """Dismissed with True when the user asks to send an expired text again."""

    BINDINGS = [
        Binding("escape,enter", "dismiss(False)", "Close"),
        Binding("r", "resend", "Send again"),
    ]

    def __init__(
        self,
        row: HistoryRow,
        title: str,
        current_row: Callable[[], HistoryRow],
        custody: CustodySource | None,
    ) -> None:
        super().__init__()
        self.row = row
        self.title_text = title
        self.current_row = current_row
        self.custody = custody

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="custody"):
            direction = "to" if self.row.direction == "out" else "from"
            yield Static(
                Content(shown(f"Message {direction} {self.title_text}")), classes="dialog-title"
            )
            yield Static(Content(shown(self.row.text[:200])), classes="dialog-text")
            yield Static("", id="custody-lines")
            yield Static("Escape closes.", classes="dialog-hint")

    def on_mount(self) -> None:
        refresh: WorkType[None] = self._refresh  # a function: see CommApp._after
        self.run_worker(refresh, exclusive=True)
        self.set_interval(REFRESH_S, self._refresh)

    async def _refresh(self) -> None:
        self.row = self.current_row()
        custody: Custody | None = None
        if self.custody is not None:
            try:
                custody = await asyncio.wrap_future(self.custody(self.row.text_id))
            except Exception:  # the node stopped: shown as not running
                self.custody = None
        if not self.is_attached:  # closed while the node answered
            return
        lines = custody_lines(self.row, custody, time.time(), node_running=self.custody is not None)
        self.query_one("#custody-lines", Static).update(Content("\n".join(lines)))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resend":
            return self.row.direction == "out" and self.row.state == "expired"
        return True

    def action_resend(self) -> None:
        self.dismiss(True)
