"""The comm-tui Textual app: layout, bindings, and the wiring between node and widgets.

The node runs on a thread of its own (comm_tui/net/runner.py), so no fsync, flood or
slow router ever holds up a key press. The app talks to it only through the runner:
commands return futures that the app awaits in workers (never in a handler), events
arrive as :class:`NodeEvent` messages, and every figure in the status panel comes from
a snapshot the node thread takes once a second. The app keeps the profile's own
database connection for what it shows (history, contacts: WAL reads never wait for
the node) and for the user's small settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList
from textual.worker import WorkType

from comm_tui.app.compositor import keep_wide_characters
from comm_tui.app.crash import report_crash_without_locals
from comm_tui.app.demo import DemoNetwork
from comm_tui.app.format import ascii_only, one_line, short_address, shown
from comm_tui.app.messages import (
    ConversationOpened,
    NodeEvent,
    NodeStarted,
    RequestAnswered,
    SendRequested,
)
from comm_tui.app.notify import notification_kind, notification_sequence
from comm_tui.app.screens.contact_dialogs import AddContactScreen, ConfirmScreen, RenameScreen
from comm_tui.app.screens.custody import CustodyScreen
from comm_tui.app.screens.first_run import NicknameScreen, OwnNameScreen
from comm_tui.app.screens.help import COMPOSER_KEYS, LIST_KEYS, HelpScreen, binding_rows
from comm_tui.app.screens.identity_dialogs import (
    CardScreen,
    ExportScreen,
    ImportResult,
    ImportScreen,
    PassphraseScreen,
)
from comm_tui.app.screens.search import SearchScreen
from comm_tui.app.status import StatusSnapshot, endpoint_text, offline_snapshot, take_snapshot
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.contact_list import ContactEntry, ContactList
from comm_tui.app.widgets.conversation import ConversationView, MessageLog
from comm_tui.app.widgets.status_panel import StatusPanel
from comm_tui.crypto.card import Card, encode_card
from comm_tui.crypto.identity import PublicIdentity
from comm_tui.errors import UserError
from comm_tui.net.runner import STOP_TIMEOUT_S, NodeRunner, ServiceStarter
from comm_tui.net.service import (
    IncomingText,
    NameChanged,
    NodeFailed,
    NodeService,
    NoticeAdded,
    OutgoingUpdated,
    PeersChanged,
    current_card,
)
from comm_tui.profile import Profile, node_starter
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.config import save_config
from comm_tui.store.db import Database, HistoryRow, SearchHit

T = TypeVar("T")

STATUS_REFRESH_S = 1.0
# Collector thresholds while the app runs: the default (700, 10, 10) makes a full
# collection every 70,000 net allocations of young objects, a frame-stalling pause here.
GC_THRESHOLDS = (700, 10, 1000)
# The user's choice of status panel in the wide layout, kept across runs.
STATUS_META_KEY = "app.status_panel"
# The theme chosen in the command palette, kept across runs.
THEME_META_KEY = "app.theme"
DEFAULT_THEME = "textual-dark"
# Below this width the list and the conversation do not both fit: a 28-column list
# leaves a 52-column conversation, whose text column (after the 16-column time and
# delivery mark) is 31 columns: less would be hard to read.
MEDIUM_FROM = 80
# From this width the 46-column status panel fits beside a 34-column list and still
# leaves the conversation 60 columns; below it the panel opens over the conversation.
WIDE_FROM = 140
# Below this height the dialogs drop their blank lines so they fit without scrolling.
TALL_FROM = 30
NOTIFY_PREVIEW_CHARS = 60


class CommApp(App[int]):
    """Contacts on the left, the conversation in the middle, the network on the right."""

    TITLE = "comm-tui"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (MEDIUM_FROM, "-medium"), (WIDE_FROM, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_FROM, "-tall")]
    BINDINGS = [
        # First: in a narrow terminal the footer has room for only a few keys.
        Binding("escape", "focus_contacts", "Contacts"),
        Binding("ctrl+n", "add_contact", "Add contact"),
        Binding("ctrl+s", "toggle_status", "Status panel"),
        Binding("ctrl+y", "copy_card", "Copy card"),
        Binding("ctrl+g", "show_card", "Card QR"),
        Binding("ctrl+o", "export_identity", "Export id"),
        Binding("ctrl+l", "import_identity", "Import id", show=False),
        Binding(
            "alt+r", "resend_expired", "Send again", tooltip="Send the last expired text again"
        ),
        Binding("ctrl+f", "search", "Search", tooltip="Search every conversation"),
        Binding("alt+u", "next_unread", "Next unread", tooltip="Open the next unread conversation"),
        Binding(
            "alt+n",
            "rename_self",
            "Rename yourself",
            show=False,
            tooltip="Rename yourself: the name in your card, sent to your contacts",
        ),
        Binding("f1", "help", "Help", tooltip="List every key"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        profile: Profile,
        *,
        listen: str | None = None,
        bootstrap: list[str] | None = None,
        demo: bool = False,
        ascii: bool | None = None,
    ) -> None:
        """``ascii`` None detects whether the terminal can draw marks (see ascii_only)."""
        keep_wide_characters()  # toasts over the panels drew a stranger's CJK as spaces
        super().__init__()
        self.profile = profile
        self.listen = listen
        self.bootstrap = list(bootstrap or [])
        self.demo = demo
        self.runner: NodeRunner | None = None
        self.node_bound: Endpoint | None = None  # set once the node runs: commands go in then
        self.status: StatusSnapshot | None = None  # the node's last snapshot
        # The snapshot on its way, if any: no second one is asked for while it is. The
        # future itself, not a flag set beside it: a flag that its callback must clear stayed
        # set if the callback never ran, and the panel never changed again.
        self._status_request: concurrent.futures.Future[StatusSnapshot] | None = None
        self.demo_network: DemoNetwork | None = None
        if ascii is None:
            encoding = sys.__stdout__.encoding if sys.__stdout__ is not None else None
            ascii = ascii_only(os.environ, encoding, profile.config.ascii)
        self.ascii = ascii
        self.status_in_wide = profile.db.get_meta(STATUS_META_KEY) != "hidden"
        self.status_over = False  # opened over the conversation, in the narrower layouts
        self.list_shown = True  # the narrow layout shows the list, not the conversation
        self.last_expired: HistoryRow | None = None  # what alt+r sends again

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header(icon="@" if self.ascii else "✉")
        with Horizontal(id="main"):
            yield ContactList(id="contacts")
            yield ConversationView(self.profile.db, id="conversation", ascii=self.ascii)
            yield StatusPanel(id="status", ascii=self.ascii)
        yield Footer()

    def on_mount(self) -> None:
        # A full (generation 2) collection walks every object of the process, the node
        # thread's tables and the widgets alike, holding the interpreter lock: 100-200 ms
        # without a frame under load (bench/ui_latency.py, bench/RESULTS.md). Made rare;
        # young cycles are still collected as before.
        gc.set_threshold(*GC_THRESHOLDS)
        chosen = self.profile.db.get_meta(THEME_META_KEY)
        self.theme = chosen if chosen in self.available_themes else DEFAULT_THEME
        self.watch(self, "theme", self._theme_chosen, init=False)
        self._arrange(self.size.width)
        self._update_subtitle()
        self.refresh_contacts()
        self.query_one(StatusPanel).snapshot = offline_snapshot(
            self.profile.identity, self.card, time.time()
        )
        self.query_one(ContactList).focus()
        self.set_interval(STATUS_REFRESH_S, self._tick)
        for notice in self.profile.config.notices:  # an old key in config.toml, still read
            self.notify(notice, title="Settings", severity="warning", timeout=30)
        self._run_node()
        if self.profile.created:
            self.push_screen(NicknameScreen(self.profile.identity.address.hex()), self._named)

    async def on_unmount(self) -> None:
        await self.stop_node()

    def _theme_chosen(self, theme: str) -> None:
        self.profile.db.set_meta(THEME_META_KEY, theme)

    def on_resize(self, event: events.Resize) -> None:
        self._arrange(event.size.width)

    @property
    def main_screen(self) -> Screen[object]:
        """The screen with the panes, under any open dialog."""
        return self.screen_stack[0]

    def _arrange(self, width: int) -> None:
        """Show the status panel and the list as the width and the user's choices say.

        The CSS places the panes for each width class; what is shown is decided here,
        because it depends on choices: the panel in the wide layout (remembered), the
        panel opened over the conversation, the list or the conversation when narrow.
        """
        if not self.screen_stack:  # the app is closing
            return
        main = self.main_screen
        main.set_class(self.list_shown, "-list")
        if width >= WIDE_FROM:
            self.status_over = False  # back in a narrower terminal, it starts hidden again
        panels = main.query(StatusPanel)
        if panels:
            panels.first().display = self.status_in_wide if width >= WIDE_FROM else self.status_over

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Show a notification as literal text unless ``markup`` is asked for.

        Notifications quote texts, names, paths and error messages that peers and
        users wrote; Textual's default reads them as markup, so one ``[/]`` from a
        stranger raised MarkupError and closed the app, and ``[@click=...]`` could
        plant actions. Widgets' ``notify`` comes here too.
        """
        super().notify(
            shown(message), title=shown(title), severity=severity, timeout=timeout, markup=markup
        )

    def _fatal_error(self) -> None:
        report_crash_without_locals(self)  # a crash must not print texts or keys

    # ------------------------------------------------------------------ the node

    def _run_node(self) -> None:
        """Start the node on its own thread; NodeStarted is posted once it is bound."""
        runner = NodeRunner(self._starter(), lambda event: self.post_message(NodeEvent(event)))
        self.runner = runner
        self._after(runner.start(), self._bound, self._start_failed)

    def _starter(self) -> ServiceStarter:
        if not self.demo:
            return node_starter(self.profile, self.listen, self.bootstrap)
        profile = self.profile

        async def start_demo(stack: contextlib.AsyncExitStack) -> NodeService:
            # The demo's nodes run on the node thread too: their disks are as slow.
            demo = DemoNetwork()
            stack.push_async_callback(demo.stop)
            self.demo_network = demo  # for tests to look at; the app never touches it
            endpoints = await demo.start()
            db = Database.open(profile.paths.database)
            stack.callback(db.close)
            service = NodeService(
                profile.identity,
                db,
                listen=("127.0.0.1", 0),
                bootstrap=endpoints,
                display_name=profile.config.nickname,
            )
            await service.start()
            demo.greet(profile.identity.public)
            return service

        return start_demo

    def _bound(self, endpoint: Endpoint) -> None:
        self.node_bound = endpoint
        self.post_message(NodeStarted(endpoint_text(endpoint)))

    def _start_failed(self, err: BaseException) -> None:
        self.notify(f"The node did not start: {err}", severity="error", timeout=30)

    def _after(
        self,
        future: concurrent.futures.Future[T],
        then: Callable[[T], object],
        failed: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Run ``then(result)`` on the UI loop when the node thread has done a command
        (awaited, if it is a coroutine function: one that changes the rows waits for
        their lock).

        The one way the app waits for the node: a worker awaits the future, so no
        handler holds the loop (keys, frames) while the node works or its disk syncs.
        A failure goes to ``failed``, or is shown.
        """

        async def wait() -> None:
            try:
                result = await asyncio.wrap_future(future)
            except Exception as err:
                (failed or self._command_failed)(err)
                return
            done = then(result)
            if inspect.isawaitable(done):
                await done

        # The coroutine function, not a coroutine: a worker cancelled before it starts
        # (the app closing) then leaves no coroutine behind never awaited.
        work: WorkType[None] = wait
        self.run_worker(work, group="node", exit_on_error=False)

    def _command_failed(self, err: BaseException) -> None:
        self.notify(str(err), title="The node did not do it", severity="error")

    async def stop_node(self) -> None:
        runner, self.runner = self.runner, None
        self.node_bound = None
        if runner is not None:
            # Bounded: a node that does not stop in time is left to the process's exit.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(runner.stop()), STOP_TIMEOUT_S)
        self.demo_network = None

    def _tick(self) -> None:
        """Once a second: ask the node thread for a snapshot (it alone reads the node)."""
        runner = self.runner
        asked = self._status_request
        if runner is None or self.node_bound is None or (asked is not None and not asked.done()):
            self._update_subtitle()
            return
        request = runner.submit(lambda service: take_snapshot(service, time.time()))
        self._status_request = request
        self._after(request, self._show_status, _ignore)  # a failed one: NodeFailed says why

    def _show_status(self, snapshot: StatusSnapshot) -> None:
        self.status = snapshot
        # While the app closes, the main screen may already be gone.
        panels = self.query(StatusPanel)
        if panels:
            panels.first().snapshot = snapshot
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        nickname = shown(self.profile.config.nickname or "")
        who = nickname or short_address(self.profile.identity.address)
        if self.node_bound is None or self.status is None:
            state = "starting"
        else:
            state = self.status.state
            peers = self.status.table_size
            if peers:
                state += f", {peers} peer{'s' * (peers != 1)}"
        self.sub_title = f"{who} · {state}" + (" · demo network" if self.demo else "")

    @on(NodeStarted)
    def _node_started(self, event: NodeStarted) -> None:
        # A nickname chosen at first run while the node was starting reaches it here
        # (a name the node already has changes nothing).
        if self.runner is not None and self.profile.config.nickname:
            self._after(self.runner.set_display_name(self.profile.config.nickname), _ignore)
        self.refresh_contacts()  # what arrived while the node started
        self._tick()

    @on(NodeEvent)
    async def _node_event(self, message: NodeEvent) -> None:
        conversations = self.query(ConversationView)
        if not conversations:  # the app is closing; the database has the event
            return
        event = message.event
        conversation = conversations.first()
        if isinstance(event, IncomingText):
            row = event.row
            if conversation.peer_address == row.peer_address:
                await conversation.add_row(row)
                self._mark_read(row.peer_address)
            self.refresh_contacts()
            if conversation.peer_address != row.peer_address:
                entry = self.query_one(ContactList).entry(row.peer_address)
                if entry is not None:
                    title = "Message request" if entry.is_request else entry.title
                    self.notify(one_line(row.text, NOTIFY_PREVIEW_CHARS), title=title)
                    if not entry.muted:
                        self._alert("a new contact" if entry.is_request else entry.title)
        elif isinstance(event, OutgoingUpdated):
            conversation.update_row(event.row)
            if event.row.state == "expired":
                self._expired(event.row)
        elif isinstance(event, NoticeAdded):
            # docs/PROTOCOL.md, "Session reset": never silent.
            if conversation.peer_address == event.row.peer_address:
                await conversation.add_row(event.row)
            else:
                entry = self.query_one(ContactList).entry(event.row.peer_address)
                title = entry.title if entry is not None else "Session"
                self.notify(event.row.text, title=title, severity="warning")
        elif isinstance(event, NameChanged):
            self.refresh_contacts()
        elif isinstance(event, PeersChanged):
            if self.status is not None:
                self.status = dataclasses.replace(self.status, table_size=event.count)
            self._update_subtitle()
        elif isinstance(event, NodeFailed):
            # Nothing is lost: what was shown is on disk, and the node sent nothing more.
            self.notify(
                f"{event.message}. Free some space and restart comm-tui.",
                title="Offline",
                severity="error",
                timeout=3600,
            )

    def _alert(self, sender: str) -> None:
        """The terminal's desktop notification or bell (comm_tui/app/notify.py)."""
        kind = notification_kind(self.profile.config.notifications, os.environ)
        if kind == "bell":
            self.bell()
        elif kind != "off" and self._driver is not None:
            # Textual writes its own OSC 52 the same way; it has no public call for others.
            self._driver.write(notification_sequence(kind, sender))

    def _expired(self, row: HistoryRow) -> None:
        """Never silent: a text that expired unacknowledged says so, with its resend key."""
        self.last_expired = row
        entry = self.query_one(ContactList).entry(row.peer_address)
        title = entry.title if entry is not None else short_address(row.peer_address)
        self.notify(
            f"“{one_line(row.text, NOTIFY_PREVIEW_CHARS)}” was not delivered before it"
            " expired. Press alt+r to send it again.",
            title=f"Not delivered to {title}",
            severity="warning",
            timeout=60,
        )
        self.refresh_bindings()

    def action_resend_expired(self) -> None:
        row, self.last_expired = self.last_expired, None
        if row is not None:
            self.post_message(SendRequested(row.peer_address, row.text))
        self.refresh_bindings()

    # ------------------------------------------------------------------ contacts

    def _ignore(self, peer_address: bytes) -> None:
        self.profile.db.ignore_request(peer_address, time.time())

    def contact_entries(self) -> list[ContactEntry]:
        """Contacts and requests; an ignored request returns only with a newer message."""
        entries = []
        for c in self.profile.db.visible_conversations():
            entries.append(
                ContactEntry(
                    c.peer_address,
                    c.peer_key,
                    c.name,
                    c.last_text,
                    c.last_time,
                    c.unread,
                    c.muted,
                    c.claimed_name,
                    c.receipts,
                )
            )
        return entries

    def refresh_contacts(self) -> None:
        # While the app closes, the main screen's panes may already be gone when a
        # message (the node started, a contact's event) still asks for this.
        lists = self.query(ContactList)
        if not lists:
            return
        entries = self.contact_entries()
        lists.first().set_entries(entries)
        conversation = self.query_one(ConversationView)
        if conversation.peer_address is not None:
            current = next(
                (e for e in entries if e.peer_address == conversation.peer_address), None
            )
            if current is not None:
                conversation.set_peer(current)
        self.refresh_bindings()

    def _target(self) -> ContactEntry | None:
        """The contact an action is about: the open conversation if it has focus, else the list."""
        conversation = self.query_one(ConversationView)
        if conversation.peer is not None and conversation.has_focus_within:
            return self.query_one(ContactList).entry(conversation.peer.peer_address)
        return self.query_one(ContactList).highlighted_entry

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resend_expired":
            return self.last_expired is not None
        if action in (
            "rename_contact",
            "remove_contact",
            "accept_request",
            "ignore_request",
            "toggle_mute",
            "toggle_receipts",
        ):
            if len(self.screen_stack) != 1:  # a dialog is open, or the app is closing
                return True
            target = self._target()
            wants_request = action in ("accept_request", "ignore_request")
            return target is not None and target.is_request == wants_request
        return True

    @on(OptionList.OptionHighlighted, "#contacts")
    def _highlighted(self) -> None:
        if self.screen_stack:  # not while the app closes
            self.refresh_bindings()

    @on(MessageLog.DetailsRequested)
    def _details(self, event: MessageLog.DetailsRequested) -> None:
        widget = event.widget
        entry = self.query_one(ContactList).entry(widget.row.peer_address)
        title = entry.title if entry is not None else short_address(widget.row.peer_address)
        runner = self.runner if self.node_bound is not None else None

        def resend(again: bool | None) -> None:
            if again:
                self.post_message(SendRequested(widget.row.peer_address, widget.row.text))

        screen = CustodyScreen(
            widget.row,
            title,
            lambda: widget.row,  # kept current by the conversation's OutgoingUpdated
            runner.custody if runner is not None else None,
        )
        self.push_screen(screen, resend)

    @on(ContactList.Typed)
    def _typed_on_list(self, event: ContactList.Typed) -> None:
        """Typing on the list writes in the open conversation (if it is on screen)."""
        conversation = self.query_one(ConversationView)
        composer = self.query_one(Composer)
        if conversation.peer is None or composer.disabled or not conversation.display:
            return
        composer.focus()
        composer.insert(event.character)

    def action_next_unread(self) -> None:
        """Open the next conversation with unread messages, after the open one, in list order."""
        entries = self.contact_entries()
        current = self.query_one(ConversationView).peer_address
        addresses = [e.peer_address for e in entries]
        start = addresses.index(current) + 1 if current in addresses else 0
        for entry in entries[start:] + entries[:start]:
            if entry.unread and entry.peer_address != current:
                self.query_one(ContactList).select_address(entry.peer_address)
                self.post_message(ConversationOpened(entry.peer_address))
                return
        self.notify("No unread messages.")

    def action_search(self) -> None:
        self.push_screen(SearchScreen(self.profile.db.search), self._open_hit)

    async def _open_hit(self, hit: SearchHit | None) -> None:
        """Open a search result in its conversation, the message selected."""
        if hit is None:
            return
        self.refresh_contacts()
        contacts = self.query_one(ContactList)
        entry = contacts.entry(hit.row.peer_address)
        if entry is None:  # an ignored request: its conversation is hidden
            self.notify("That conversation is a request you ignored.", severity="warning")
            return
        contacts.select_address(entry.peer_address)
        self.list_shown = False
        self._arrange(self.size.width)
        await self.query_one(ConversationView).open_at(entry, hit.row.id)
        self.refresh_bindings()

    def action_toggle_mute(self) -> None:
        entry = self._target()
        if entry is None or entry.is_request:
            return
        self.profile.db.set_muted(entry.peer_address, not entry.muted)
        self.refresh_contacts()
        state = "unmuted" if entry.muted else "muted: no bell or desktop notification"
        self.notify(f"{entry.title} {state}.")

    def action_toggle_relay(self) -> None:
        """Switch relaying for others (docs/PROTOCOL.md, "12.3"), remembered in the config.

        Saved first: a setting the file does not hold would come back at the next start.
        """
        self.profile.config.relay = not self.profile.config.relay
        try:
            save_config(self.profile.paths.config_file, self.profile.config)
        except UserError as err:
            self.profile.config.relay = not self.profile.config.relay
            self.notify(str(err), severity="error")
            return
        if self.runner is not None and self.node_bound is not None:
            # A node still starting has it from the config file, at the next start at the
            # latest (as before the node had its own thread).
            self._after(self.runner.set_relaying(self.profile.config.relay), _ignore)
        self.notify(
            "Relaying for others: on."
            if self.profile.config.relay
            else "Relaying for others: off. Your own texts still go through others."
        )

    def action_help(self) -> None:
        sections = [
            ("Everywhere", binding_rows(self.BINDINGS)),
            ("Contact list", LIST_KEYS + binding_rows(ContactList.BINDINGS)),
            ("Composer", COMPOSER_KEYS + binding_rows(Composer.BINDINGS)),
            ("History", binding_rows(MessageLog.BINDINGS)),
        ]
        self.push_screen(HelpScreen(sections))

    @on(ConversationOpened)
    async def _open(self, event: ConversationOpened) -> None:
        entry = self.query_one(ContactList).entry(event.peer_address)
        if entry is None:
            return
        conversation = self.query_one(ConversationView)
        await conversation.open(entry)
        if entry.unread:
            self._mark_read(entry.peer_address)
        self.list_shown = False
        self._arrange(self.size.width)
        if event.focus_input:
            conversation.focus_input()
        self.refresh_bindings()

    def _mark_read(self, peer_address: bytes) -> None:
        """The user saw a conversation: mark it read, with a read receipt if they chose to
        send them to this contact (docs/PROTOCOL.md, "7.1.1"). The list shows it read
        once that is committed."""
        if self.node_bound is not None and self.runner is not None:
            self._after(self.runner.conversation_read(peer_address), self._contacts_stale)
        else:
            self.profile.db.mark_read(peer_address)
            self.refresh_contacts()

    def _contacts_stale(self, _: object = None) -> None:
        if self.screen_stack:  # not while the app closes
            self.refresh_contacts()

    def action_toggle_receipts(self) -> None:
        entry = self._target()
        if entry is None or entry.is_request:
            return
        self.profile.db.set_receipts(entry.peer_address, not entry.receipts)
        self.refresh_contacts()
        state = "off" if entry.receipts else "on: they see when you read their texts"
        self.notify(f"Read receipts for {entry.title} {state}.")

    @on(SendRequested)
    def _send(self, event: SendRequested) -> None:
        """Hand the text to the node; show it once it is committed (never before: a text
        shown as sent survives a crash), or give it back to the composer if it failed."""
        contact = self.profile.db.contact_by_address(event.peer_address)
        if contact is None:
            self.notify("Add this sender as a contact to reply.", severity="warning")
            return
        if self.runner is None or self.node_bound is None:
            self.notify("The node is still starting; try again in a moment.", severity="warning")
            self._give_back(event)
            return

        async def sent(row: HistoryRow) -> None:
            if not self.screen_stack:  # the app closed meanwhile; the row is on disk
                return
            conversation = self.query_one(ConversationView)
            if conversation.peer_address == row.peer_address:
                await conversation.add_row(row)
            self.refresh_contacts()

        def failed(err: BaseException) -> None:
            self.notify(str(err), title="Not sent", severity="error")
            if self.screen_stack:
                self._give_back(event)

        self._after(self.runner.send_text(PublicIdentity(contact.key), event.text), sent, failed)

    def _give_back(self, event: SendRequested) -> None:
        """A text that could not be sent goes back into its conversation's composer."""
        if self.query_one(ConversationView).peer_address == event.peer_address:
            self.query_one(Composer).restore(event.text)

    @on(RequestAnswered)
    def _answered(self, event: RequestAnswered) -> None:
        entry = self.query_one(ContactList).entry(event.peer_address)
        if entry is not None:
            self._accept(entry) if event.accept else self._ignore_entry(entry)

    def _save_contact(self, name: str, card: Card) -> None:
        identity = card.identity
        with self.profile.db.transaction():
            self.profile.db.add_contact(name, identity.key, identity.address, time.time())
            # docs/PROTOCOL.md, "13.2": where to find them when nothing else is known.
            self.profile.db.save_card_hints(identity.key, card.hints, card.issued)
            if card.name is not None:
                # docs/PROTOCOL.md, "13.2.1": the card's name is their claim, beside ours.
                self.profile.db.claim_name(identity.key, card.name, card.name_version, time.time())
        if self.runner is not None and self.node_bound is not None:
            self._after(self.runner.contact_added(identity.key, card.hints), _ignore)

    def _contact_added(self, name: str | None) -> None:
        if name is None:
            return
        self.refresh_contacts()
        contact = self.profile.db.contact_by_name(name)
        if contact is not None:
            self.query_one(ContactList).select_address(contact.address)
            self.post_message(ConversationOpened(contact.address))
        self.notify(f"{name} added to your contacts.")

    def action_add_contact(self) -> None:
        self.push_screen(AddContactScreen(self._save_contact), self._contact_added)

    def _accept(self, entry: ContactEntry) -> None:
        if entry.peer_key is None:
            return
        card = encode_card(PublicIdentity(entry.peer_key))
        screen = AddContactScreen(
            self._save_contact,
            card=card,
            title="Accept message request",
            name=entry.claimed_name or "",
        )
        self.push_screen(screen, self._contact_added)

    def action_accept_request(self) -> None:
        entry = self._target()
        if entry is not None and entry.is_request:
            self._accept(entry)

    def _ignore_entry(self, entry: ContactEntry) -> None:
        self._ignore(entry.peer_address)
        self._close_if_open(entry.peer_address)
        self.refresh_contacts()
        self.notify("Request ignored. It comes back if they write again.")

    def action_ignore_request(self) -> None:
        entry = self._target()
        if entry is not None and entry.is_request:
            self._ignore_entry(entry)

    def _close_if_open(self, peer_address: bytes) -> None:
        conversation = self.query_one(ConversationView)
        if conversation.peer_address == peer_address:
            close: WorkType[None] = conversation.close
            self.run_worker(close, group="ui")
            self.action_focus_contacts()

    def action_rename_contact(self) -> None:
        entry = self._target()
        if entry is None or entry.name is None:
            return
        old = entry.name

        def rename(new: str) -> None:
            self.profile.db.rename_contact(old, new)

        def renamed(new: str | None) -> None:
            if new is not None:
                self.refresh_contacts()

        self.push_screen(RenameScreen(old, rename), renamed)

    def action_remove_contact(self) -> None:
        entry = self._target()
        if entry is None or entry.name is None:
            return
        name = entry.name

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.profile.db.remove_contact(name)
            except UserError as err:
                self.notify(str(err), severity="error")
                return
            if self.runner is not None and self.node_bound is not None:
                self._after(self.runner.contacts_changed(), _ignore)
            # Their history stays on disk; do not bring them back as a request.
            self._ignore(entry.peer_address)
            self._close_if_open(entry.peer_address)
            self.refresh_contacts()
            self.notify(f"{name} removed.")

        question = (
            f"Remove {name} from your contacts?\n"
            "The conversation is kept; a new message from them shows as a request."
        )
        self.push_screen(ConfirmScreen(question, yes="Remove"), answered)

    def action_focus_contacts(self) -> None:
        """Escape: close the panel opened over the conversation, else go to the list."""
        if self.status_over and self.size.width < WIDE_FROM:
            self.action_toggle_status()
            return
        self.list_shown = True
        self._arrange(self.size.width)
        self.query_one(ContactList).focus()

    # ------------------------------------------------------------------ identity

    def _named(self, name: str | None) -> None:
        if name is None:
            return
        self.profile.config.nickname = name
        try:
            save_config(self.profile.paths.config_file, self.profile.config)
        except UserError as err:
            self.notify(str(err), severity="error")
            return
        if self.runner is not None and self.node_bound is not None:
            # docs/PROTOCOL.md, "7.1.1": renames reach contacts.
            self._after(self.runner.set_display_name(name), _ignore)
        self._update_subtitle()
        self.notify(f"Hello, {name}! Share your card (ctrl+g) so people can add you.")

    def action_rename_self(self) -> None:
        """Rename yourself: a dialog pre-filled with the name your card carries now."""
        own = self.profile.db.own_display_name()
        current = self.profile.config.nickname or (own[0] if own is not None else "")
        self.push_screen(OwnNameScreen(current), self._rename_self)

    def _rename_self(self, name: str | None) -> None:
        """Take the new name: into config.toml first (the node takes the config's name at
        every start, so a name only in the database would be undone), then the node signs
        it into the card and sends it to contacts (docs/PROTOCOL.md, "7.1.1", "13.2.1")."""
        if name is None or name == self.profile.config.nickname:
            return
        config = dataclasses.replace(self.profile.config, nickname=name)
        path = self.profile.paths.config_file
        runner = self.runner
        if runner is not None and self.node_bound is not None:

            def rename(service: NodeService) -> bool:
                save_config(path, config)
                return service.set_display_name(name)

            # On the node thread: the config's and the database's fsyncs, and the name
            # letters, never hold up a key press.
            self._after(runner.submit(rename), lambda done: self._renamed_self(name, done))
            return
        # No node to ask (starting, failed, stopped): the node takes the config's name when
        # it starts; the card shown changes now, from the profile's database.
        try:
            save_config(path, config)
            self.profile.db.set_own_display_name(name)
        except UserError as err:
            self.notify(str(err), severity="error")
            return
        self._renamed_self(name, True)

    def _renamed_self(self, name: str, done: bool) -> None:
        if not done:  # the dialog checks the same rule: a name the node refuses is a bug
            self.notify(f"The node refused the name {name!r}.", severity="error")
            return
        self.profile.config.nickname = name
        self._update_subtitle()
        self._tick()  # the status panel's card, signed again with the name
        self.notify(f"You are now \u2018{name}\u2019, in your card and to your contacts.")

    def action_toggle_status(self) -> None:
        """Show or hide the panel: beside the conversation when wide, else over it."""
        panel = self.query_one(StatusPanel)
        over = self.size.width < WIDE_FROM
        if over:
            self.status_over = not self.status_over
        else:
            self.status_in_wide = not self.status_in_wide
            self.profile.db.set_meta(STATUS_META_KEY, "shown" if self.status_in_wide else "hidden")
        had_focus = panel.has_focus_within
        self._arrange(self.size.width)
        if over and panel.display:
            panel.focus()
        elif had_focus and not panel.display:
            conversation = self.query_one(ConversationView)
            if conversation.peer is None:
                self.query_one(ContactList).focus()
            else:
                conversation.focus_input()

    @property
    def card(self) -> str:
        """Our card: with endpoint hints once the node has published one (docs/PROTOCOL.md,
        "13.2"), and our display name once we have one ("13.2.1"). Read from the profile's
        database, where the node publishes it: the node is not asked, and a rename shows at
        once."""
        return current_card(self.profile.identity, self.profile.db)[0]

    def action_copy_card(self) -> None:
        self.copy_to_clipboard(self.card)
        self.notify("Your card is on the clipboard.", title="Copied")

    def action_show_card(self) -> None:
        self.push_screen(
            CardScreen(self.card, self.profile.identity.address.hex(), ascii=self.ascii)
        )

    def action_export_identity(self) -> None:
        default = Path.home() / f"comm-tui-{short_address(self.profile.identity.address)}.key"

        def exported(path: Path | None) -> None:
            if path is not None:
                self.notify(f"Identity exported to {path}", title="Exported")

        self.push_screen(ExportScreen(self.profile.identity, default), exported)

    def action_import_identity(self) -> None:
        def imported(result: ImportResult | None) -> None:
            if result is None:
                return
            backup = f" The old one is saved as {result.backup}." if result.backup else ""
            protection = (
                "It stays protected by its passphrase."
                if result.protected
                else "It is not protected by a passphrase (comm-tui keys protect)."
            )
            self.notify(
                f"Identity {result.address_hex[:8]}… imported. {protection}{backup}"
                " Restart comm-tui to use it.",
                title="Restart needed",
                severity="warning",
                timeout=60,
            )

        self.push_screen(
            ImportScreen(self.profile.paths.identity_file, self.profile.identity), imported
        )

    def action_identity_passphrase(self) -> None:
        def done(sentence: str | None) -> None:
            if sentence is not None:
                self.notify(sentence, title="Passphrase")

        try:
            screen = PassphraseScreen(self.profile.paths.identity_file, self.profile.identity)
        except UserError as err:  # the file is unreadable now
            self.notify(str(err), severity="error")
            return
        self.push_screen(screen, done)

    # ------------------------------------------------------------------ palette

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        commands = [
            ("Add contact", "Add someone by their card", self.action_add_contact),
            ("Rename contact", "Rename the selected contact", self.action_rename_contact),
            (
                "Rename yourself",
                "Change the name your card carries and your contacts see",
                self.action_rename_self,
            ),
            ("Remove contact", "Remove the selected contact", self.action_remove_contact),
            ("Accept request", "Add the selected sender as a contact", self.action_accept_request),
            ("Ignore request", "Hide the selected message request", self.action_ignore_request),
            ("Toggle status panel", "Show or hide the network panel", self.action_toggle_status),
            (
                "Next unread",
                "Open the next conversation with unread messages",
                self.action_next_unread,
            ),
            ("Keys", "Every key the app answers to", self.action_help),
            ("Search", "Search every conversation", self.action_search),
            ("Mute contact", "Mute or unmute the selected contact", self.action_toggle_mute),
            (
                "Relay for others on/off",
                "Store and forward mail for others, or only your own (remembered)",
                self.action_toggle_relay,
            ),
            (
                "Read receipts",
                "Read receipts on/off for the selected contact",
                self.action_toggle_receipts,
            ),
            ("Send again", "Resend the last text that expired", self.action_resend_expired),
            ("Copy my card", "Put your contact card on the clipboard", self.action_copy_card),
            ("Show my card", "Your card as text and QR code", self.action_show_card),
            ("Export identity", "Save your key to a passphrase file", self.action_export_identity),
            ("Import identity", "Replace your key from a file", self.action_import_identity),
            (
                "Identity passphrase",
                "Protect your key with a passphrase, change or remove it",
                self.action_identity_passphrase,
            ),
        ]
        for title, help_text, callback in commands:
            yield SystemCommand(title, help_text, callback)


def _ignore(_: object) -> None:
    """For commands whose result the screen does not show (their failure is shown)."""
