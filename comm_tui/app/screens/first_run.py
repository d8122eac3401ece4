"""Our own display name: asked at first run, changed later ("Rename yourself")."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.validation import Length
from textual.widgets import Button, Input, Label, Static

from comm_tui.protocol.letters import DISPLAY_NAME_MAX_BYTES, display_name

NICKNAME_MAX_CHARS = 64
# One line even in the narrowest dialog (54 columns at 60x20): direction overrides and
# zero-width joiners are the invisible ones.
NAME_RULE = "At most 64 bytes, no invisible or control characters."


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be our display name, or None if it can.

    The rule the node applies before the name travels (``display_name``, docs/PROTOCOL.md,
    "7.1.1"): a name it would refuse is refused here, in one line, not dropped later.
    """
    if not text.strip():
        return "Type a name."
    return None if display_name(text) is not None else NAME_RULE


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
                "Choose a display name for this profile (alt+n changes it later).\n"
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
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Skip", id="skip")

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#nickname")
    def _save(self) -> None:
        text = self.query_one("#nickname", Input).value
        if not text.strip():
            return  # Skip is the way to have no name
        _dismiss_with_name(self, text)

    @on(Button.Pressed, "#skip")
    def action_skip(self) -> None:
        self.dismiss(None)


class OwnNameScreen(ModalScreen[str | None]):
    """Rename yourself: returns the new display name (normalized), or None if cancelled.

    Pre-filled with the current name. A name the node would refuse keeps the dialog open,
    with the text as typed and one line saying why.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="own-name"):
            yield Static("Rename yourself", classes="dialog-title")
            yield Static(
                "Your card carries this name, and your contacts get it with your next"
                " text or at once. What they call you is still theirs to choose.",
                classes="dialog-text",
            )
            yield Label("Display name")
            # Plain text in an Input: the name is never read as markup.
            yield Input(value=self.current, id="own-name-input", max_length=DISPLAY_NAME_MAX_BYTES)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Rename", id="rename", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Changed)
    def _typed(self) -> None:
        self.query_one("#error", Static).update("")

    @on(Button.Pressed, "#rename")
    @on(Input.Submitted)
    def _rename(self) -> None:
        _dismiss_with_name(self, self.query_one("#own-name-input", Input).value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def _dismiss_with_name(screen: ModalScreen[str | None], text: str) -> None:
    """Close a name dialog with the normalized name, or keep it open with one line saying
    why the node would refuse it (the one rule: ``letters.is_display_name``)."""
    problem = name_problem(text)
    if problem is not None:
        screen.query_one("#error", Static).update(Content(problem))
        return
    screen.dismiss(display_name(text))
