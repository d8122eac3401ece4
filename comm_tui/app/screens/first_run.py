"""First run: the identity was just created; ask the user what to be called."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Length
from textual.widgets import Button, Input, Label, Static

NICKNAME_MAX_CHARS = 64


class NicknameScreen(ModalScreen[str | None]):
    """Returns the chosen display name, or None if the user skipped."""

    BINDINGS = [Binding("escape", "skip", "Skip")]

    def __init__(self, address_hex: str) -> None:
        super().__init__()
        self.address_hex = address_hex

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Welcome to comm-tui", classes="dialog-title")
            yield Static(
                "A new identity was created for you. Your address is\n"
                f"{self.address_hex}\n"
                "Choose a display name for this profile (you can change it in the config).\n"
                "Your identity is not protected by a passphrase; to protect it, quit and\n"
                "run: comm-tui keys protect",
                classes="dialog-text",
            )
            yield Label("Display name")
            yield Input(
                placeholder="e.g. Ada",
                id="nickname",
                validators=[Length(1, NICKNAME_MAX_CHARS)],
                max_length=NICKNAME_MAX_CHARS,
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Skip", id="skip")

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#nickname")
    def _save(self) -> None:
        name = " ".join(self.query_one("#nickname", Input).value.split())
        if name:
            self.dismiss(name)

    @on(Button.Pressed, "#skip")
    def action_skip(self) -> None:
        self.dismiss(None)
