"""Real ``comm-tui`` subprocesses for tests: started, read line by line, always killed."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time

LINE_TIMEOUT_S = 15.0
PROCESS_TIMEOUT_S = 30.0


class Proc:
    """A ``comm-tui`` subprocess whose stdout lines are read by a thread, with timeouts."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        pass_fds: tuple[int, ...] = (),
        command: tuple[str, ...] = (sys.executable, "-m", "comm_tui"),
    ) -> None:
        """``command``: what runs ``comm-tui`` (a test may run it with a setting changed)."""
        self.popen = subprocess.Popen(
            [*command, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            pass_fds=pass_fds,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        # Set once every line is in ``lines``. The process may have exited while its
        # last lines are still in the pipe, not yet read: "exited and nothing queued"
        # gave up on a line that was on its way (a flake of every wait after exit).
        self._read_all = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        try:
            for line in self.popen.stdout:
                self.lines.put(line.rstrip("\n"))
        finally:
            self._read_all.set()

    def wait_for_line(self, pattern: str, timeout_s: float = LINE_TIMEOUT_S) -> re.Match[str]:
        """The first line (seen so far or still to come) matching ``pattern``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.seen:
                if match := re.search(pattern, line):
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._read_all.is_set() and self.lines.empty()):
                raise AssertionError(f"no line matching {pattern!r} in {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                continue

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=PROCESS_TIMEOUT_S)


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run one ``comm-tui`` command to completion, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "comm_tui", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
