"""SIGINT and SIGTERM stop a headless node at any moment, promptly, with exit code 0.

A real ``comm-tui node`` in a subprocess, signalled the moment its handler is installed
(its node still starting); and the handler itself run at every line of Python the
main thread executes while it waits, which is where Python may run it: a handler that
took a lock the waiting thread held hung the node forever (a CI failure of
tests/test_relay_settings.py, reproduced under load).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from comm_tui.store.config import Config, save_config
from comm_tui.store.paths import ensure_dirs, profile_paths
from tests.node_procs import PROCESS_TIMEOUT_S, Proc

# A stop takes milliseconds; this bound is far above it and far below a hang.
STOP_BOUND_S = 15.0
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)  # in /proc/<pid>/status "SigCgt" (signals caught)


def _catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM: Python installs none by itself, so this is
    the command's own, installed by ``_stop_signals`` before the node starts."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_the_moment_the_handler_is_installed_stops_the_node_cleanly(
    tmp_path: Path, procs: list[Proc], signum: signal.Signals
) -> None:
    paths = profile_paths("default", tmp_path)
    ensure_dirs(paths)
    save_config(paths.config_file, Config(lan_discovery=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Proc(["--data-dir", str(tmp_path), "node", "--listen", "127.0.0.1:0"], env)
    procs.append(proc)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    # Polled without a pause: the signal goes as soon after the install as can be.
    while not _catches_sigterm(proc.popen.pid):
        assert proc.popen.poll() is None, "the node ended before it handled signals"
        assert time.monotonic() < deadline, "the node never installed its handler"
    proc.popen.send_signal(signum)
    assert proc.popen.wait(timeout=STOP_BOUND_S) == 0
    # It started, said where, and stopped with its stats: a signal is kept, not lost.
    proc.wait_for_line(r"listening 127\.0\.0\.1:\d+")
    proc.wait_for_line(r"stats: state=")
    proc.wait_for_line(r" stopped$")
    assert proc.popen.stderr is not None
    assert proc.popen.stderr.read() == ""


# Run in a child: a handler that waits for a lock its own thread holds never returns.
_HANDLER_AT_EVERY_LINE = textwrap.dedent(
    """
    import queue, signal, sys, threading
    from comm_tui import cli

    inbox = cli._Inbox()
    waits = 0
    signals = 0
    with cli._stop_signals(inbox):
        handler = signal.getsignal(signal.SIGINT)

        def at_every_line(frame, event, arg):
            # Python may run the handler wherever the main thread runs Python code
            # (a call, a loop): here it runs at each of those points in turn, as a
            # signal would, for as many as a burst of signals (each puts a wake-up,
            # so drain would never end under an endless burst).
            global signals
            if event in ("call", "line") and signals < 20_000:
                signals += 1
                handler(signal.SIGINT, frame)
            return at_every_line

        node = threading.Thread(target=lambda: [inbox.put(n) for n in range(200)])
        node.start()
        sys.settrace(at_every_line)
        got = []
        for _ in range(300):
            try:
                got.append(inbox.get(timeout=0.01))
            except queue.Empty:
                waits += 1
        drained = inbox.drain()
        sys.settrace(None)
        node.join()
    events = [e for e in got if e is not None] + drained
    assert inbox.stop_requested
    assert sorted(events) == list(range(200)), events
    print("ok", waits, signals)
    """
)


def test_the_stop_handler_never_waits_for_the_thread_it_interrupts() -> None:
    """The handler runs inside ``get`` and ``drain`` at every line: it must take no lock
    (a ``queue.Queue`` holds its mutex there; its ``put`` would wait forever)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HANDLER_AT_EVERY_LINE],
            capture_output=True,
            text=True,
            timeout=STOP_BOUND_S,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the handler waited for a lock the interrupted thread held: a hang")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
