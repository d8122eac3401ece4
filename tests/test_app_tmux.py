"""Two real ``comm-tui`` processes in 80x24 tmux windows, driven by send-keys as a person types.

They exchange texts (one of two lines), one searches for what it sent and opens the
result, and a text arriving while the other's contact list has focus leaves the
highlighted row where it was.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.app_helpers import make_profile

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]
WAIT_S = 30.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _comm_tui() -> list[str]:
    script = Path(sys.executable).with_name("comm-tui")
    return [str(script)] if script.exists() else [sys.executable, "-m", "comm_tui"]


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., str]]:
    server = f"comm-tui-test-{os.getpid()}"

    def run(*args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout

    yield run
    subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=10)


def _wait_for_line(tmux: Callable[..., str], session: str, *parts: str) -> str:
    """Wait for one screen line holding every one of ``parts`` (drawn together)."""
    deadline = time.monotonic() + WAIT_S
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if any(all(part in line for part in parts) for line in screen.splitlines()):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"no line with {parts!r} in {session}:\n{screen}")


def _wait_for_screen(tmux: Callable[..., str], session: str, text: str) -> str:
    return _wait_for_line(tmux, session, text)


def _wait_until_gone(tmux: Callable[..., str], session: str, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text not in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} stayed on {session}:\n{screen}")


def _row_of(tmux: Callable[..., str], session: str, text: str) -> int:
    """The screen line where ``text`` first appears (it must be on screen)."""
    lines = _wait_for_screen(tmux, session, text).splitlines()
    return next(i for i, line in enumerate(lines) if text in line)


def test_two_processes_exchange_a_message(tmp_path: Path, tmux: Callable[..., str]) -> None:
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    alice, bob = make_profile(dir_a, nickname="alice"), make_profile(dir_b, nickname="bob")
    carol, dave = Identity.generate(), Identity.generate()
    now = time.time()
    for data_dir, name, other in ((dir_a, "bob", bob), (dir_b, "alice", alice)):
        with Database.open(profile_paths("default", data_dir).database) as db:
            db.add_contact(name, other.key, other.address, now - 100)
    # Bob's list, newest first: carol, dave, alice (who has written nothing yet).
    with Database.open(profile_paths("default", dir_b).database) as db:
        for name, other, when in (("carol", carol, now - 10), ("dave", dave, now - 20)):
            db.add_contact(name, other.key, other.address, when)
            db.add_incoming(os.urandom(16), other.key, other.address, f"hi from {name}", 1, when)
            db.mark_read(other.address)
    port_a = _free_udp_port()
    env = {**os.environ, "TERM": "xterm-256color"}
    base = " ".join(_comm_tui())
    command_a = f"{base} --data-dir {dir_a} --listen 127.0.0.1:{port_a}"
    command_b = f"{base} --data-dir {dir_b} --listen 127.0.0.1:0 --bootstrap 127.0.0.1:{port_a}"
    for session, command in (("a", command_a), ("b", command_b)):
        subprocess.run(
            ["tmux", "-L", f"comm-tui-test-{os.getpid()}", "new-session", "-d", "-s", session,
             "-x", "80", "-y", "24", command],
            check=True, env=env, timeout=10,
        )  # fmt: skip
    assert tmux("display-message", "-p", "-t", "a", "#{window_width}x#{window_height}") == "80x24\n"
    _wait_for_screen(tmux, "b", "online")
    _wait_for_screen(tmux, "a", "online")
    # Bob's list has the focus, on dave (the second row); alice's text moves nothing.
    tmux("send-keys", "-t", "b", "Down")
    before = _row_of(tmux, "b", "dave")
    tmux("send-keys", "-t", "a", "Enter")
    _wait_for_screen(tmux, "a", "Message bob")
    tmux("send-keys", "-t", "a", "-l", "hello from tmux")
    tmux("send-keys", "-t", "a", "C-j")
    tmux("send-keys", "-t", "a", "-l", "on two lines")
    tmux("send-keys", "-t", "a", "Enter")
    _wait_for_screen(tmux, "b", "hello from tmux")  # alice's row shows it, unread
    assert _row_of(tmux, "b", "dave") == before
    screen = _wait_for_screen(tmux, "a", "✓✓")
    assert "hello from tmux" in screen and "on two lines" in screen
    # Alice searches for what she sent and opens it in its conversation.
    tmux("send-keys", "-t", "a", "C-f")
    _wait_for_screen(tmux, "a", "Search messages")
    tmux("send-keys", "-t", "a", "-l", "two lin")
    _wait_for_screen(tmux, "a", "1 message: Enter opens")
    tmux("send-keys", "-t", "a", "Enter")
    _wait_until_gone(tmux, "a", "Search messages")
    # The result opened: its text inside the history's heavy border, the focus that
    # open_at gives it (before the search the composer had the focus, and the same text
    # stood in the history's rounded border, so the text alone proves nothing).
    _wait_for_line(tmux, "a", "\u2503", "on two lines")
    tmux("send-keys", "-t", "b", "Enter")  # the highlighted row: dave, still
    _wait_for_screen(tmux, "b", "Message dave")
    tmux("send-keys", "-t", "b", "Escape")
    # A lone ESC is told from the start of an alt+key or arrow sequence by the pause after
    # it, as a person's typing has: without one, ESC and Up read as alt+up.
    time.sleep(0.5)
    tmux("send-keys", "-t", "b", "Up", "Enter")
    _wait_for_screen(tmux, "b", "Message alice")
    screen = _wait_for_screen(tmux, "b", "on two lines")
    assert "hello from tmux" in screen
    tmux("send-keys", "-t", "b", "-l", "hi alice")
    tmux("send-keys", "-t", "b", "Enter")
    _wait_for_screen(tmux, "a", "hi alice")
    tmux("send-keys", "-t", "a", "C-q")
    tmux("send-keys", "-t", "b", "C-q")
    deadline = time.monotonic() + WAIT_S
    while tmux("list-sessions") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tmux("list-sessions"), "the apps did not quit on ctrl+q"
