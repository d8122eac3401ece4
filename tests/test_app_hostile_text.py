"""Hostile text from peers: the app stays up and shows it as written (issue #8, finding 3).

A stranger can send anyone a text. Before, a received ``hi [/] there`` reached
``notify()`` as Textual markup, raised MarkupError and closed the app; action links
and terminal escapes went through too. Here every hostile string, and arbitrary
text from hypothesis, goes through the real app as a message request and as a
contact's message, and the screen must show it literally: the notification and the
conversation, with control and bidi characters replaced by visible marks.
``run_test`` leaves toasts out unless asked (``notifications=True``), and the crash
was in drawing the toast, so every test here asks.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets._toast import Toast

from comm_tui.app import CommApp, app_session
from comm_tui.app.app import NOTIFY_PREVIEW_CHARS
from comm_tui.app.format import one_line, shown
from comm_tui.app.messages import ConversationOpened, NodeEvent
from comm_tui.app.widgets.conversation import ConversationView, MessageLog
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import FAST_KDF_ENV
from comm_tui.net.service import IncomingText, NodeService
from comm_tui.store.db import Database
from tests.app_helpers import SIZE, WAIT_S, make_profile, wait_until

pytestmark = pytest.mark.timeout(90)

HOSTILE_TEXTS = [
    "hi [/] there",
    "[/]",
    "[",
    "]]][[[",
    "[@click=app.quit]press me[/]",
    "[link=https://example.com]harmless[/link]",
    "[b red on white]shouting[/] \\[escaped] \\\\[/]",
    "$text-error [$accent]variables[/]",
    "\x1b[31mred\x1b[0m and \x1b[2J cleared",
    "\x1b]0;new title\x07 and \x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\",
    "\x9b31m one-byte CSI, \x07 bell, \b\b\b backspaces, \r carriage return",
    "abc \u202edcba\u202c \u2067isolated\u2069 \u202aembed\u202c",
    "zero\u200bwidth\u200d\u200c joiners\ufeff and e\u0301\u0301\u0301 combining",
    "line one\nline two\n\n\ttabbed",
    "x" * 65_536,
]
HOSTILE_NAMES = ["[/]", "[@click=app.quit]bob", "\u202eevil\u202c", "[link=https://x]y"]
ids = itertools.count()


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")


def _flat(text: str) -> str:
    """Text with its whitespace removed: wrapping may break or drop spaces, nothing else."""
    return "".join(char for char in text if not char.isspace())


def screen_text(app: CommApp, widget: Widget) -> str:
    """What the terminal shows inside ``widget``'s content, clipped to its container and
    to the screen (a toast being stacked or dismissed lies partly below the last row)."""
    region = widget.content_region.intersection(app.screen.region)
    container = widget.parent
    while container is not None and not isinstance(container, MessageLog | CommApp):
        container = container.parent
    if isinstance(container, MessageLog):
        region = region.intersection(container.content_region)
    strips = app.screen._compositor.render_strips()
    return "\n".join(_columns(strips[y], region.x, region.right) for y in region.line_range)


def _columns(strip: Strip, left: int, right: int) -> str:
    """The characters written in columns ``left`` to ``right`` of ``strip``.

    Not ``strip.crop(left, right)``: that drops a zero-width character (a combining
    mark) written at ``left``, as part of the column before. A text that starts with
    one (``"\u2dff"``) has it written first in the widget's content, and the terminal
    draws it over the cell before, the widget's own padding: the user sees it, so it
    is read here with the content. One written at ``right`` follows the last column's
    character and is read with it.
    """
    x = 0
    written = []
    for segment in strip:
        for char in segment.text:
            width = cell_len(char)
            if left <= x < right or (width == 0 and x == right):
                written.append(char)
            x += width
    return "".join(written)


async def _until_shown(pilot: Pilot[int], shown_now: Callable[[], str], expected: str) -> None:
    """Wait (the screen settles asynchronously) until ``shown_now()`` is ``expected``."""
    deadline = time.monotonic() + WAIT_S
    seen = {shown_now()}
    while expected not in seen and time.monotonic() < deadline:
        await pilot.pause(0.02)
        seen.add(shown_now())
    # A toast goes after 5 s: a wrong one is gone (shows '') before the wait ends.
    assert expected in seen, f"shown instead: {seen - {''}}"


async def _receive(
    pilot: Pilot[int], app: CommApp, text: str, sender: Identity, name: str | None
) -> None:
    """``sender`` (a contact named ``name``, or a stranger) sends ``text``; check the screen."""
    db = app.profile.db
    if name is not None:
        db.add_contact(name, sender.key, sender.address, time.time())
    row = db.add_incoming(
        next(ids).to_bytes(16, "big"), sender.key, sender.address, text, 1, time.time()
    )
    assert row is not None
    app.clear_notifications()
    app.post_message(NodeEvent(IncomingText(row)))
    title = "Message request" if name is None else name
    preview = one_line(text, NOTIFY_PREVIEW_CHARS)
    await _until_shown(
        pilot,
        lambda: "".join(_flat(screen_text(app, toast)) for toast in app.screen.query(Toast)),
        _flat(shown(title) + preview),
    )
    app.clear_notifications()  # the toast would cover the conversation

    app.post_message(ConversationOpened(sender.address, focus_input=False))
    conversation = app.query_one(ConversationView)
    await wait_until(pilot, lambda: conversation.row_widget(row.id), "the message", 0.02)
    widget = conversation.row_widget(row.id)
    assert widget is not None
    log = conversation.query_one(MessageLog)
    log.scroll_to_widget(widget, animate=False, top=True, immediate=True)
    expected = _flat(shown(text))
    if widget.region.height <= log.content_region.height:
        await _until_shown(
            pilot, lambda: _flat(screen_text(app, widget.query_one(".body"))), expected
        )
    else:  # taller than the pane: what shows is a part of it, as written
        await pilot.pause()
        visible = _flat(screen_text(app, widget.query_one(".body")))
        assert visible and visible in expected
    title_bar = conversation.query_one("#conversation-title")
    await _until_shown(
        pilot,
        lambda: _flat(screen_text(app, title_bar))[: len(_flat(shown(name or "request")))],
        _flat(shown(name or "request")),
    )
    assert app.is_running


async def _receive_all(data_dir: Path, texts: list[str], first: int = 0) -> None:
    """Each text once from a new stranger and once from a new contact, in one app
    (``first``: the index of the first text, which picks the contacts' names)."""
    make_profile(data_dir)
    with app_session(data_dir=data_dir, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            for i, text in enumerate(texts, start=first):
                await _receive(pilot, app, text, Identity.generate(), None)
                name = f"{HOSTILE_NAMES[i % len(HOSTILE_NAMES)]} {i}"
                await _receive(pilot, app, text, Identity.generate(), name)
        assert app.return_code in (None, 0)


def test_shown_leaves_no_control_or_bidi_character() -> None:
    every = "".join(chr(c) for c in range(0x2100)) + "\ud800\udfff"
    result = shown(every)
    assert len(result) == len(every)
    for char in result:
        code = ord(char)
        assert char in "\n\t" or not (code < 0x20 or 0x7F <= code < 0xA0)
        assert not (0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069)
        assert not 0xD800 <= code <= 0xDFFF
    assert shown("\x1b[31m") == "\u241b[31m"
    assert shown("a [/] b\n\te\u0301\u200b") == "a [/] b\n\te\u0301\u200b"


# Four texts an app: all fifteen in one took over 90 s under a load of 12 on 2 cores
# (10 s of CPU), and pytest-timeout stopped it while the app closed (soak, issue 14).
HOSTILE_CHUNK = 4


@pytest.mark.parametrize("first", range(0, len(HOSTILE_TEXTS), HOSTILE_CHUNK))
async def test_hostile_texts_and_names_are_shown_literally(tmp_path: Path, first: int) -> None:
    await _receive_all(tmp_path, HOSTILE_TEXTS[first : first + HOSTILE_CHUNK], first)


# Four apps (two examples, two drawn), each text received twice: 196 s under a load of
# 11 on 2 cores with five texts a list (soak, issue 14); three texts, and its own bound.
@pytest.mark.timeout(240)
@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.text(min_size=1, max_size=300), min_size=3, max_size=3))
# A wide character over a panel's edge under the toast was drawn as two spaces.
@example(["Ù\U000741bc\x92Ð!Äe\x14#Þzrâ¡t縀R¦Q𭷛ª"])
# A leading combining mark is drawn over the padding before the toast's text.
@example(["\u2dff"])
def test_arbitrary_texts_are_shown_literally(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        asyncio.run(_receive_all(Path(data_dir), texts))


async def test_stranger_markup_text_cannot_crash_the_app(tmp_path: Path) -> None:
    """A non-contact's node sends markup over real UDP; the app shows it and stays up."""
    me = make_profile(tmp_path / "me")
    attack = "hi [/] there [@click=app.quit]x[/] [link=https://x]y \x1b]0;owned\x07"
    with app_session(data_dir=tmp_path / "me", listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node to start")
            assert app.node_bound is not None
            db = Database.open(tmp_path / "stranger.db")
            stranger = NodeService(
                Identity.generate(), db, listen=("127.0.0.1", 0), bootstrap=[app.node_bound]
            )
            await stranger.start()
            try:
                await wait_until(pilot, lambda: stranger.node.state == "online", "stranger joins")
                stranger.send_text(me.public, attack)
                expected = "Message request" + one_line(attack, NOTIFY_PREVIEW_CHARS)
                await _until_shown(
                    pilot,
                    lambda: "".join(_flat(screen_text(app, t)) for t in app.screen.query(Toast)),
                    _flat(expected),
                )
                # The toast was rendered (read off the screen above); a markup error would
                # have been raised there. Whatever that render queued is handled, then:
                await pilot.pause()
                assert app.is_running
            finally:
                await stranger.stop()
                db.close()
        assert app.return_code in (None, 0)
