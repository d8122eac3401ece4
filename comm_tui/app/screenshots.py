"""Make the README's screenshots from the real app in demo mode.

Run ``python -m comm_tui.app.screenshots [OUT_DIR]`` (default ``screenshots/``). The
demo identities come from fixed seeds, so the cards, addresses, QR code and texts
are the same on every run; clock times, ports and traffic counters are live.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from comm_tui.app import CommApp, app_session
from comm_tui.app.demo import ECHO_NAME
from comm_tui.app.widgets.composer import Composer
from comm_tui.app.widgets.contact_list import ContactList
from comm_tui.app.widgets.conversation import ConversationView
from comm_tui.app.widgets.status_panel import StatusPanel

SCREEN_SIZE = (140, 45)
SMALL_SCREEN_SIZE = (80, 24)
WAIT_S = 20.0
FIRST_TEXT = "Hello echo! Is anybody out there?"


async def wait_for(pilot: Pilot[int], condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` for up to WAIT_S seconds; raise naming ``what`` if it never holds."""
    for _ in range(int(WAIT_S / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _echo_replied(app: CommApp) -> bool:
    rows = app.profile.db.history(app.profile.db.contact_by_name(ECHO_NAME).address)  # type: ignore[union-attr]
    return any(r.text == f"echo: {FIRST_TEXT}" for r in rows) and any(
        r.text == FIRST_TEXT and r.state == "delivered" for r in rows
    )


async def take_screenshots(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def save(app: CommApp, name: str) -> None:
        saved.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(out_dir))))

    with app_session(demo=True) as app:
        async with app.run_test(size=SCREEN_SIZE) as pilot:
            contacts = app.query_one(ContactList)
            await wait_for(
                pilot,
                lambda: (
                    len(app.contact_entries()) >= 2
                    and all(e.last_time for e in app.contact_entries())
                ),
                "the demo greeting and request",
            )
            await pilot.pause(0.5)
            echo = app.profile.db.contact_by_name(ECHO_NAME)
            assert echo is not None
            contacts.select_address(echo.address)
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: app.query_one(ConversationView).peer_address == echo.address,
                "the echo conversation",
            )
            app.query_one(Composer).load_text(FIRST_TEXT)
            await pilot.press("enter")
            await wait_for(pilot, lambda: _echo_replied(app), "the echo reply")
            await pilot.pause(1.5)
            app.action_toggle_status()
            await pilot.pause()
            save(app, "main")
            app.action_toggle_status()
            await wait_for(
                pilot,
                lambda: (
                    (s := app.query_one(StatusPanel).snapshot) is not None and s.state == "online"
                ),
                "the node to be online",
            )
            await pilot.pause(1.2)
            save(app, "status")
            app.action_add_contact()
            await pilot.pause()
            await pilot.press(*"Grace")
            await pilot.press("tab")
            await pilot.press(*"comm1typo")
            await pilot.pause()
            save(app, "add-contact")
            await pilot.press("escape")
            app.action_export_identity()
            await pilot.pause()
            app.screen.query_one("#path", Input).value = "~/comm-tui-newcomer.key"
            await pilot.pause()
            save(app, "export")
            await pilot.press("escape")
            # The most common default terminal: the panel opens over the conversation.
            await pilot.resize_terminal(*SMALL_SCREEN_SIZE)
            app.query_one(Composer).focus()
            await pilot.pause(0.5)
            save(app, "main-80x24")
            app.action_toggle_status()
            await pilot.pause(0.5)
            save(app, "status-80x24")
    return saved


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else Path("screenshots")
    os.environ.setdefault("TZ", "UTC")
    for path in asyncio.run(take_screenshots(out_dir)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
