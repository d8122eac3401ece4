"""Dialogs about our own identity: show the card as a QR code, export and import the key.

Argon2id is slow on purpose (about a second, 256 MiB), so export and import run it
in a thread worker and the dialog stays responsive meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, LoadingIndicator, Static

from comm_tui.app.format import shown
from comm_tui.app.widgets.qr import QRCode
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import (
    export_strength,
    is_passphrase_protected,
    read_identity_file,
    replace_identity,
    write_identity_file,
)
from comm_tui.errors import UserError

MIN_PASSPHRASE_CHARS = 8


def new_passphrase_problem(first: str, second: str) -> str | None:
    """What is wrong with a new passphrase typed twice (export, protect), or None."""
    if len(first) < MIN_PASSPHRASE_CHARS:
        return f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"
    if first != second:
        return "the two passphrases differ"
    return None


ResultT = TypeVar("ResultT")


class CardScreen(ModalScreen[None]):
    """Our card as text and as a QR code, with a copy button."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("ctrl+y,c", "app.copy_card", "Copy card"),
    ]

    def __init__(self, card: str, address_hex: str, *, ascii: bool = False) -> None:
        super().__init__()
        self.card = card
        self.address_hex = address_hex
        self.ascii = ascii

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="card-dialog"):
            yield Static("My contact card", classes="dialog-title")
            yield QRCode(self.card, id="card-qr", ascii=self.ascii)
            yield Static(self.card, id="card-text", classes="dialog-text")
            yield Static(f"address {self.address_hex}", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy card", id="copy", variant="primary")
                yield Button("Close", id="close")

    @on(Button.Pressed, "#copy")
    async def _copy(self) -> None:
        await self.app.run_action("copy_card")

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class _KeyDialog(ModalScreen[ResultT]):
    """Shared behaviour: an error line, a busy indicator, buttons disabled while working."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def show_error(self, text: str) -> None:
        self.query_one("#error", Static).update(Content(shown(text)))

    def set_busy(self, busy: bool) -> None:
        self.query_one(LoadingIndicator).display = busy
        for button in self.query(Button):
            button.disabled = busy

    def action_cancel(self) -> None:
        if not self.query_one(LoadingIndicator).display:
            self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()


class ExportScreen(_KeyDialog[Path | None]):
    """Writes our identity to a passphrase-protected file; returns its path."""

    def __init__(self, identity: Identity, default_path: Path) -> None:
        super().__init__()
        self.identity = identity
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="export-dialog"):
            yield Static("Export my identity", classes="dialog-title")
            yield Static(
                "Anyone with this file and its passphrase can read your messages and\n"
                "write as you. Keep both apart and safe.",
                classes="dialog-text",
            )
            yield Label("File")
            yield Input(str(self.default_path), id="path")
            yield Label(f"Passphrase (at least {MIN_PASSPHRASE_CHARS} characters)")
            yield Input(password=True, id="passphrase")
            yield Label("Passphrase again")
            yield Input(password=True, id="passphrase2")
            yield Static("", id="error", classes="dialog-error")
            yield LoadingIndicator()
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.set_busy(False)
        self.query_one("#passphrase", Input).focus()

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        if event.input.id == "passphrase2":
            self._export()
        else:
            self.focus_next()

    @on(Button.Pressed, "#export")
    def _export(self) -> None:
        path = Path(self.query_one("#path", Input).value.strip()).expanduser()
        first = self.query_one("#passphrase", Input).value
        second = self.query_one("#passphrase2", Input).value
        if not str(path) or path == Path():
            self.show_error("choose a file to write")
        elif path.exists():
            self.show_error(f"{path} exists; choose a new file name")
        elif problem := new_passphrase_problem(first, second):
            self.show_error(problem)
        else:
            self.show_error("")
            self.set_busy(True)
            self._write(path, first.encode("utf-8"))

    @work(thread=True, exclusive=True)
    def _write(self, path: Path, passphrase: bytes) -> None:
        try:
            write_identity_file(path, self.identity, passphrase, export_strength())
        except UserError as err:
            self.app.call_from_thread(self._failed, str(err))
        else:
            self.app.call_from_thread(self.dismiss, path)

    def _failed(self, text: str) -> None:
        self.set_busy(False)
        self.show_error(text)


@dataclass(frozen=True)
class ImportResult:
    address_hex: str
    backup: Path | None
    protected: bool


class ImportScreen(_KeyDialog[ImportResult | None]):
    """Reads a key file and, once confirmed, makes it this profile's identity."""

    def __init__(self, identity_file: Path, current: Identity) -> None:
        super().__init__()
        self.identity_file = identity_file
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="import-dialog"):
            yield Static("Import an identity", classes="dialog-title")
            yield Static(
                "This replaces the identity of this profile. The current one is kept\n"
                "as a backup file beside it. Restart comm-tui afterwards.",
                classes="dialog-text",
            )
            yield Label("Key file")
            yield Input(placeholder="path of an exported key file", id="path")
            yield Label("Passphrase (empty if the file has none)")
            yield Input(password=True, id="passphrase")
            yield Checkbox("Replace my current identity (a backup is kept)", id="confirm")
            yield Static("", id="error", classes="dialog-error")
            yield LoadingIndicator()
            with Horizontal(classes="dialog-buttons"):
                yield Button("Import", id="import", variant="error")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.set_busy(False)
        self.query_one("#path", Input).focus()

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        self.focus_next()

    @on(Button.Pressed, "#import")
    def _import(self) -> None:
        path = Path(self.query_one("#path", Input).value.strip()).expanduser()
        passphrase = self.query_one("#passphrase", Input).value
        if not self.query_one("#path", Input).value.strip():
            self.show_error("enter the path of the key file")
        elif not self.query_one("#confirm", Checkbox).value:
            self.show_error("tick the box to confirm that your identity is replaced")
        else:
            self.show_error("")
            self.set_busy(True)
            self._read(path, passphrase.encode("utf-8") if passphrase else None)

    @work(thread=True, exclusive=True)
    def _read(self, path: Path, passphrase: bytes | None) -> None:
        try:
            identity = read_identity_file(path, passphrase)
            if identity.address == self.current.address:
                raise UserError("that key file holds the identity this profile already has")
            # A protected file stays protected, by the same passphrase: importing must not
            # strip what the user chose (`comm-tui keys unprotect` removes it on purpose).
            keep = passphrase if is_passphrase_protected(path) else None
            backup = replace_identity(self.identity_file, identity, keep, export_strength())
        except UserError as err:
            self.app.call_from_thread(self._failed, str(err))
        else:
            result = ImportResult(identity.address.hex(), backup, keep is not None)
            self.app.call_from_thread(self.dismiss, result)

    def _failed(self, text: str) -> None:
        self.set_busy(False)
        self.show_error(text)


class PassphraseScreen(_KeyDialog[str | None]):
    """Protects the profile's identity file with a passphrase, changes it, or removes it.

    The key itself does not change, only how its file is stored (one atomic rewrite, see
    keys/README.md, "The profile's identity"). A protected file's current passphrase is
    asked for first, so that someone at an unlocked, unattended screen cannot take the
    protection off or lock the owner out. Returns a sentence saying what was done.
    """

    def __init__(self, identity_file: Path, identity: Identity) -> None:
        super().__init__()
        self.identity_file = identity_file
        self.identity = identity
        self.protected = is_passphrase_protected(identity_file)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="passphrase-dialog"):
            yield Static("Passphrase of my identity", classes="dialog-title")
            if self.protected:
                state = "Your identity is protected by a passphrase."
            else:
                state = (
                    "Your identity is NOT protected by a passphrase: anyone who can read\n"
                    "its file can read your messages and write as you."
                )
            yield Static(state, id="passphrase-state", classes="dialog-text")
            if self.protected:
                yield Label("Current passphrase")
                yield Input(password=True, id="current")
            yield Label(f"New passphrase (at least {MIN_PASSPHRASE_CHARS} characters)")
            yield Input(password=True, id="new")
            yield Label("New passphrase again")
            yield Input(password=True, id="new2")
            yield Static("", id="error", classes="dialog-error")
            yield LoadingIndicator()
            with Horizontal(classes="dialog-buttons"):
                yield Button("Set passphrase", id="protect", variant="primary")
                if self.protected:
                    yield Button("Remove it", id="unprotect", variant="error")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.set_busy(False)
        self.query_one("#current" if self.protected else "#new", Input).focus()

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        if event.input.id == "new2":
            self._protect()
        else:
            self.focus_next()

    def _current(self) -> bytes | None:
        if not self.protected:
            return None
        return self.query_one("#current", Input).value.encode("utf-8")

    @on(Button.Pressed, "#protect")
    def _protect(self) -> None:
        first = self.query_one("#new", Input).value
        second = self.query_one("#new2", Input).value
        if problem := new_passphrase_problem(first, second):
            self.show_error(problem)
        else:
            self.show_error("")
            self.set_busy(True)
            self._rewrite(self._current(), first.encode("utf-8"))

    @on(Button.Pressed, "#unprotect")
    def _unprotect(self) -> None:
        self.show_error("")
        self.set_busy(True)
        self._rewrite(self._current(), None)

    @work(thread=True, exclusive=True)
    def _rewrite(self, current: bytes | None, new: bytes | None) -> None:
        try:
            # Checks the current passphrase; the key in memory is the one written.
            if (
                current is not None
                and read_identity_file(self.identity_file, current).key != self.identity.key
            ):
                raise UserError("the identity file changed on disk; restart comm-tui")
            write_identity_file(self.identity_file, self.identity, new, export_strength())
        except UserError as err:
            self.app.call_from_thread(self._failed, str(err))
        else:
            if new is None:
                done = "Your identity is no longer protected by a passphrase."
            elif self.protected:
                done = "The passphrase of your identity is changed."
            else:
                done = "Your identity is now protected by a passphrase."
            self.app.call_from_thread(self.dismiss, done)

    def _failed(self, text: str) -> None:
        self.set_busy(False)
        self.show_error(text)
