"""The app's passphrase screen: shown before a protected profile opens, retried, quittable.

Pilot drives :class:`UnlockApp` itself; a tmux test runs the real ``comm-tui`` in a
terminal, where the passphrase screen is followed by the main app.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, Static
from textual.worker import WorkerFailed

from comm_tui.app import app_session, screen_unlocker
from comm_tui.app.screens.identity_dialogs import PassphraseScreen
from comm_tui.app.screens.unlock import WRONG_LINE, UnlockApp
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import (
    FAST_KDF_ENV,
    KdfStrength,
    is_passphrase_protected,
    read_identity_file,
    write_identity_file,
)
from comm_tui.errors import KeyFileError
from comm_tui.store.paths import profile_paths
from comm_tui.unlock import PASSPHRASE_ENV, PassphraseSource, PromptCancelled
from tests.app_helpers import SIZE, make_profile, wait_until

pytestmark = pytest.mark.timeout(90)

PASSPHRASE = "open sesame 42"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def protected_profile(data_dir: Path) -> tuple[Identity, Path]:
    identity = make_profile(data_dir, nickname="alice")
    path = profile_paths("default", data_dir).identity_file
    write_identity_file(path, identity, PASSPHRASE.encode(), KdfStrength.MIN)
    return identity, path


def error_text(app: UnlockApp) -> str:
    return str(app.query_one("#unlock-error", Static).render())


async def test_a_wrong_passphrase_gives_one_line_and_another_try(tmp_path: Path) -> None:
    identity, path = protected_profile(tmp_path)
    app = UnlockApp(path, "default")
    async with app.run_test(size=SIZE) as pilot:
        field = app.query_one("#unlock-passphrase", Input)
        assert field.password and app.focused is field
        await pilot.press("enter")
        assert "Type the passphrase" in error_text(app)
        for attempt in (1, 2, 3):
            await pilot.press(*"wrong")
            await pilot.press("enter")
            await wait_until(pilot, lambda n=attempt: app.tries == n, f"attempt {attempt}")
            assert error_text(app) == WRONG_LINE
            assert field.value == ""
            assert not field.disabled
        await pilot.press(*PASSPHRASE, "enter")
        await wait_until(pilot, lambda: app.return_value is not None, "the identity")
    assert isinstance(app.return_value, Identity)
    assert app.return_value.key == identity.key


@pytest.mark.parametrize("key", ["ctrl+q", "escape"])
async def test_quitting_the_passphrase_screen_opens_nothing(tmp_path: Path, key: str) -> None:
    _, path = protected_profile(tmp_path)
    app = UnlockApp(path, "default")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"half typed")
        await pilot.press(key)
        await wait_until(pilot, lambda: not app.is_running, "the app to quit")
    assert app.return_value is None


async def test_a_damaged_identity_file_says_so_instead_of_wrong_passphrase(
    tmp_path: Path,
) -> None:
    _, path = protected_profile(tmp_path)
    path.write_text(path.read_text()[:40])  # truncated, as by a full disk without atomic writes
    app = UnlockApp(path, "default")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*PASSPHRASE, "enter")
        await wait_until(pilot, lambda: "not a comm-tui key file" in error_text(app), "the error")
        assert app.tries == 0
        assert error_text(app).endswith("Press ctrl+q to quit.")


def test_the_app_unlocks_from_a_script_channel_without_the_screen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity, _ = protected_profile(tmp_path)

    def no_screen(self: UnlockApp) -> None:
        raise AssertionError("the screen must not be shown when a passphrase was given")

    monkeypatch.setattr(UnlockApp, "run", no_screen)
    source = PassphraseSource(environ={PASSPHRASE_ENV: PASSPHRASE}, prompt=None)
    unlock = screen_unlocker("default", source)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0", unlock=unlock) as app:
        assert app.profile.identity.key == identity.key
    wrong = PassphraseSource(environ={PASSPHRASE_ENV: "wrong"}, prompt=None)
    with (
        pytest.raises(KeyFileError, match="wrong passphrase"),
        app_session(data_dir=tmp_path, unlock=screen_unlocker("default", wrong)),
    ):
        pass


def test_quitting_the_screen_leaves_the_profile_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    protected_profile(tmp_path)
    monkeypatch.setattr(UnlockApp, "run", lambda self: None)
    unlock = screen_unlocker("default", PassphraseSource(environ={}, prompt=None))
    with pytest.raises(PromptCancelled), app_session(data_dir=tmp_path, unlock=unlock):
        pass
    # The lock was released: the profile opens again at once.
    source = PassphraseSource(environ={PASSPHRASE_ENV: PASSPHRASE}, prompt=None)
    with app_session(data_dir=tmp_path, unlock=screen_unlocker("default", source)):
        pass


# ---------------------------------------------------------------------------- real terminal


@pytest.fixture
def tmux() -> Iterator[Callable[..., str]]:
    server = f"comm-tui-unlock-{os.getpid()}"

    def run(*args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout

    yield run
    subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=10)


def _wait_for_screen(tmux: Callable[..., str], text: str, wait_s: float = 30.0) -> str:
    deadline = time.monotonic() + wait_s
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "u")
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared:\n{screen}")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_real_app_asks_for_the_passphrase_then_opens(
    tmp_path: Path, tmux: Callable[..., str]
) -> None:
    protected_profile(tmp_path)
    script = Path(sys.executable).with_name("comm-tui")
    base = str(script) if script.exists() else f"{sys.executable} -m comm_tui"
    command = f"{base} --data-dir {tmp_path} --listen 127.0.0.1:0; echo EXIT=$?; sleep 60"
    env = {**os.environ, "TERM": "xterm-256color", FAST_KDF_ENV: "1"}
    env.pop(PASSPHRASE_ENV, None)
    subprocess.run(
        ["tmux", "-L", f"comm-tui-unlock-{os.getpid()}", "new-session", "-d", "-s", "u",
         "-x", "80", "-y", "24", command],
        check=False, env=env, timeout=10,
    )  # fmt: skip
    _wait_for_screen(tmux, "Profile 'default' is locked")
    tmux("send-keys", "-t", "u", "-l", "not it")
    tmux("send-keys", "-t", "u", "Enter")
    _wait_for_screen(tmux, "Wrong passphrase. Try again")
    tmux("send-keys", "-t", "u", "-l", PASSPHRASE)
    tmux("send-keys", "-t", "u", "Enter")
    screen = _wait_for_screen(tmux, "alice")
    assert PASSPHRASE not in screen
    tmux("send-keys", "-t", "u", "C-q")
    _wait_for_screen(tmux, "EXIT=0")


async def test_a_crash_report_shows_no_local_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Textual prints crash tracebacks with every frame's locals; ours must not."""
    _, path = protected_profile(tmp_path)

    def broken(path: Path, passphrase: bytes | None = None) -> Identity:
        raise RuntimeError("a bug while unlocking")

    monkeypatch.setattr("comm_tui.app.screens.unlock.read_identity_file", broken)
    app = UnlockApp(path, "default")
    reports: list[object] = []

    def reported() -> bool:
        reports[:] = app._exit_renderables  # printed and cleared as the app exits
        return bool(reports)

    with pytest.raises(WorkerFailed, match="a bug while unlocking"):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(*PASSPHRASE, "enter")
            await wait_until(pilot, reported, "the crash report")
    [report] = reports
    text = "".join(segment.text for segment in report.segments)  # type: ignore[attr-defined]
    assert "a bug while unlocking" in text  # the report is there
    assert PASSPHRASE not in text  # the worker's `passphrase` argument is not


# ---------------------------------------------------------------------------- passphrase dialog


async def _passphrase_dialog(pilot, app) -> PassphraseScreen:  # type: ignore[no-untyped-def]
    app.action_identity_passphrase()
    await wait_until(
        pilot,
        lambda: isinstance(app.screen, PassphraseScreen) and app.screen.query("#new"),
        "the dialog",
    )
    screen = app.screen
    assert isinstance(screen, PassphraseScreen)
    return screen


def _fill(screen: PassphraseScreen, **values: str) -> None:
    for name, value in values.items():
        screen.query_one(f"#{name}", Input).value = value


async def test_the_app_protects_changes_and_removes_the_passphrase(tmp_path: Path) -> None:
    identity = make_profile(tmp_path, nickname="alice")
    path = profile_paths("default", tmp_path).identity_file
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            screen = await _passphrase_dialog(pilot, app)
            state = str(screen.query_one("#passphrase-state", Static).render())
            assert "NOT protected by a passphrase" in state
            assert not screen.query("#current") and not screen.query("#unprotect")
            error = screen.query_one("#error", Static)
            _fill(screen, new="short", new2="short")
            await pilot.click("#protect")
            assert "at least 8 characters" in str(error.render())
            _fill(screen, new=PASSPHRASE, new2=PASSPHRASE + "!")
            screen._protect()
            assert "differ" in str(error.render())
            _fill(screen, new2=PASSPHRASE)
            screen._protect()
            await wait_until(pilot, lambda: app.screen is not screen, "the rewrite")
            # The dialog closes first; its result reaches the app (and its notice) after.
            await wait_until(
                pilot,
                lambda: any("now protected" in n.message for n in app._notifications),
                "the notice",
            )
            assert is_passphrase_protected(path)
            assert path.stat().st_mode & 0o777 == 0o600

            # Protected now: the current passphrase is asked for, and checked.
            screen = await _passphrase_dialog(pilot, app)
            assert "is protected by a passphrase" in str(
                screen.query_one("#passphrase-state", Static).render()
            )
            before = path.read_bytes()
            _fill(screen, current="wrong", new="a new passphrase", new2="a new passphrase")
            screen._protect()
            error = screen.query_one("#error", Static)
            await wait_until(pilot, lambda: "wrong passphrase" in str(error.render()), "refusal")
            assert path.read_bytes() == before
            _fill(screen, current=PASSPHRASE)
            screen._protect()
            await wait_until(pilot, lambda: app.screen is not screen, "the change")
            assert read_identity_file(path, b"a new passphrase").key == identity.key

            screen = await _passphrase_dialog(pilot, app)
            _fill(screen, current="a new passphrase")
            screen._unprotect()
            await wait_until(pilot, lambda: app.screen is not screen, "the removal")
            await wait_until(
                pilot,
                lambda: any("no longer protected" in n.message for n in app._notifications),
                "the notice",
            )
    assert not is_passphrase_protected(path)
    assert read_identity_file(path).key == identity.key
