"""The passphrase screen shown before the app opens a protected profile.

It is its own small App: the main app needs an open profile (database, identity) to be
built, and a protected identity is exactly what cannot be had before the passphrase.
``run_app`` runs this first, then the main app with the unlocked identity.

Argon2id takes about a second and 256 MiB on purpose, so each try runs in a thread
worker and the screen stays responsive (and says it is working). A wrong passphrase
gives one line and the field is cleared for another try; ctrl+q or escape quits.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input, LoadingIndicator, Static

from comm_tui.app.crash import report_crash_without_locals
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import WrongPassphrase, read_identity_file
from comm_tui.errors import UserError

WRONG_LINE = "Wrong passphrase. Try again, or press ctrl+q to quit."


class UnlockApp(App[Identity | None]):
    """Asks for the passphrase of ``identity_file``; returns the identity, or None on quit."""

    TITLE = "comm-tui"
    BINDINGS = [
        Binding("ctrl+q", "quit_unlock", "Quit", priority=True),
        Binding("escape", "quit_unlock", "Quit"),
    ]
    DEFAULT_CSS = """
    #unlock { width: 64; height: auto; border: round $primary; padding: 1 2; }
    Screen { align: center middle; }
    #unlock-error { color: $error; height: auto; }
    #unlock-busy { height: 1; }
    """

    def __init__(self, identity_file: Path, profile: str) -> None:
        super().__init__()
        self.identity_file = identity_file
        self.profile_name = profile
        self.tries = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="unlock"):
            yield Static(f"Profile '{self.profile_name}' is locked", id="unlock-title")
            yield Static("Its identity is protected by a passphrase. Enter it to open it.")
            yield Input(password=True, id="unlock-passphrase", placeholder="passphrase")
            yield Static("", id="unlock-error")
            yield LoadingIndicator(id="unlock-busy")

    def on_mount(self) -> None:
        self.theme = "textual-dark"
        self._set_busy(False)
        self.query_one(Input).focus()

    def _set_busy(self, busy: bool) -> None:
        self.query_one(LoadingIndicator).display = busy
        self.query_one(Input).disabled = busy

    def _show_error(self, text: str) -> None:
        self.query_one("#unlock-error", Static).update(Content(text))

    @on(Input.Submitted, "#unlock-passphrase")
    def _submit(self, event: Input.Submitted) -> None:
        if not event.value:
            self._show_error("Type the passphrase, or press ctrl+q to quit.")
            return
        self._show_error("")
        self._set_busy(True)
        self._try(event.value.encode("utf-8"))

    @work(thread=True, exclusive=True)
    def _try(self, passphrase: bytes) -> None:
        try:
            identity = read_identity_file(self.identity_file, passphrase)
        except WrongPassphrase:
            self.call_from_thread(self._wrong)
        except UserError as err:  # a damaged file: no passphrase will help
            self.call_from_thread(self._failed, str(err))
        else:
            self.call_from_thread(self.exit, identity)

    def _wrong(self) -> None:
        self.tries += 1
        self._set_busy(False)
        self.query_one(Input).value = ""
        self.query_one(Input).focus()
        self._show_error(WRONG_LINE)

    def _failed(self, text: str) -> None:
        self._set_busy(False)
        self._show_error(f"{text}. Press ctrl+q to quit.")

    def _fatal_error(self) -> None:
        report_crash_without_locals(self)  # a crash must not print the passphrase

    def action_quit_unlock(self) -> None:
        if not self.query_one(LoadingIndicator).display:
            self.exit(None)
