"""The comm-tui terminal app; ``run_app`` is what ``comm-tui`` (no subcommand) calls."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from comm_tui.app.app import CommApp
from comm_tui.app.demo import add_echo_contact, prepare_demo_profile
from comm_tui.app.screens.unlock import UnlockApp
from comm_tui.crypto.identity import Identity
from comm_tui.profile import open_profile
from comm_tui.unlock import PassphraseSource, PromptCancelled, Unlock, unlock_identity

LOCK_HOLDER = "comm-tui app"

__all__ = ["CommApp", "app_session", "run_app"]


def screen_unlocker(profile: str, source: PassphraseSource) -> Unlock:
    """Unlock with the passphrase a script gave (fd or environment), else the passphrase
    screen; quitting the screen raises PromptCancelled (exit 130, nothing opened)."""

    def unlock(path: Path) -> Identity:
        if source.given() is not None:
            return unlock_identity(path, source)
        identity = UnlockApp(path, profile).run()
        if identity is None:
            raise PromptCancelled
        return identity

    return unlock


@contextlib.contextmanager
def app_session(
    *,
    profile: str = "default",
    data_dir: Path | None = None,
    listen: str | None = None,
    bootstrap: list[str] | None = None,
    demo: bool = False,
    unlock: Unlock | None = None,
) -> Iterator[CommApp]:
    """Open the profile (taking its lock), yield the app, then close everything.

    ``unlock`` opens a protected identity (see ``open_profile``). With ``demo`` and no
    ``data_dir`` the profile lives in a temporary directory that is removed afterwards.
    """
    temporary: Path | None = None
    if demo:
        if data_dir is None:
            temporary = data_dir = Path(tempfile.mkdtemp(prefix="comm-tui-demo-profile-"))
        prepare_demo_profile(profile, data_dir)
    try:
        opened = open_profile(profile, data_dir, lock_as=LOCK_HOLDER, unlock=unlock)
        try:
            if demo:
                add_echo_contact(opened)
            yield CommApp(opened, listen=listen, bootstrap=bootstrap, demo=demo)
        finally:
            opened.close()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def run_app(
    *,
    profile: str,
    data_dir: Path | None,
    listen: str | None,
    bootstrap: list[str],
    demo: bool,
    passphrase: PassphraseSource,
) -> int:
    """Run the app until the user quits; returns the exit code."""
    with app_session(
        profile=profile,
        data_dir=data_dir,
        listen=listen,
        bootstrap=bootstrap,
        demo=demo,
        unlock=screen_unlocker(profile, passphrase),
    ) as app:
        result = app.run()
    return result if isinstance(result, int) else (app.return_code or 0)
