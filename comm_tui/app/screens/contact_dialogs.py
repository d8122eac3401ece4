"""Dialogs about contacts: add (with the card checked as it is typed), rename, confirm."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from comm_tui.app.format import shown
from comm_tui.crypto.card import Card, read_card
from comm_tui.errors import CardError, UserError

CARD_HINT = (
    "A card starts with comm1 and is 65 characters, more with a name or endpoint hints;"
    " spaces and dashes are ignored."
)


def card_problem(text: str) -> str | None:
    """Why ``text`` is not a valid card, or None if it is one."""
    return _checked(text)[1]


def _checked(text: str) -> tuple[Card | None, str | None]:
    """The card in ``text``, or why there is none."""
    if not text.strip():
        return None, "paste the card your contact shared with you"
    try:
        return read_card(text), None
    except CardError as err:
        return None, str(err)


class AddContactScreen(ModalScreen[str | None]):
    """Takes a name and a card; ``save`` stores it or raises UserError, shown in the dialog.

    ``save`` gets the whole card: its endpoint hints may be how a new node joins, and its
    name is their claim. A card with a name fills the name field while the user has not
    typed one of their own (docs/PROTOCOL.md, "13.2.1"): what is there when they press
    Add is their name for the contact.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        save: Callable[[str, Card], None],
        *,
        card: str = "",
        title: str = "Add a contact",
        name: str = "",
    ) -> None:
        super().__init__()
        self.save = save
        self.initial_card = card
        self.initial_name = name
        self.title_text = title
        self.filled_name = ""  # what a card put in the name field, while left as it was

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-contact"):
            yield Static(Content(shown(self.title_text)), classes="dialog-title")
            yield Label("Name")
            # Pre-filled with what a request calls itself: plain text in an Input, never
            # markup, and the user's to keep or change (docs/PROTOCOL.md, "7.1.1").
            yield Input(
                placeholder="what to call them",
                id="name",
                max_length=64,
                value=self.initial_name,
            )
            yield Label("Card")
            yield Input(placeholder="comm1…", id="card", value=self.initial_card)
            yield Static(CARD_HINT, id="card-status", classes="dialog-hint")
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Add", id="add", variant="primary", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()
        self._check()

    @on(Input.Changed)
    def _check(self, event: Input.Changed | None = None) -> None:
        name_input = self.query_one("#name", Input)
        card = self.query_one("#card", Input).value
        parsed, problem = _checked(card)
        status = self.query_one("#card-status", Static)
        if parsed is not None and parsed.name is not None:
            # Only a new card fills the field: a name the user cleared stays cleared.
            card_changed = event is None or event.input.id == "card"
            if card_changed and name_input.value in ("", self.filled_name):
                self.filled_name = name_input.value = parsed.name
            # Their words, drawn literally: markup in a name stays text.
            claim = f"✓ valid card; they call themselves \u2018{parsed.name}\u2019"
            status.update(Content(shown(claim)))
            status.set_classes("dialog-ok")
        elif problem is None:
            status.update("✓ valid card")
            status.set_classes("dialog-ok")
        else:
            status.update(Content(shown(problem)) if card.strip() else CARD_HINT)
            status.set_classes("dialog-error" if card.strip() else "dialog-hint")
        self.query_one("#card", Input).set_class(
            problem is not None and bool(card.strip()), "-invalid"
        )
        self.query_one("#error", Static).update("")
        self.query_one("#add", Button).disabled = (
            problem is not None or not name_input.value.strip()
        )

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "name":
            self.query_one("#card", Input).focus()
        else:
            self._add()

    @on(Button.Pressed, "#add")
    def _add(self) -> None:
        name = self.query_one("#name", Input).value
        card = self.query_one("#card", Input).value
        try:
            self.save(name, read_card(card))
        except UserError as err:
            self.query_one("#error", Static).update(Content(shown(str(err))))
            return
        self.dismiss(name.strip())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RenameScreen(ModalScreen[str | None]):
    """Asks for a new name; ``rename`` applies it or raises UserError, shown in the dialog."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, old: str, rename: Callable[[str], None]) -> None:
        super().__init__()
        self.old = old
        self.rename = rename

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Content(f"Rename {shown(self.old)}"), classes="dialog-title")
            yield Input(value=self.old, id="new-name", max_length=64)
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Rename", id="rename", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#rename")
    @on(Input.Submitted)
    def _rename(self) -> None:
        new = self.query_one("#new-name", Input).value
        try:
            self.rename(new)
        except UserError as err:
            self.query_one("#error", Static).update(Content(shown(str(err))))
            return
        self.dismiss(new.strip())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No is focused so that Enter does no harm."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Content(shown(self.question)), classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error")
                yield Button("No", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
