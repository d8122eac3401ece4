"""One node per profile: an advisory ``flock`` on the profile's lock file.

Two nodes on one profile would fight over the database and the UDP identity, so the TUI,
``node`` and ``send`` take this lock and a second one is refused with a message naming the
holder. ``flock`` belongs to the open file, so the kernel releases it when the holder exits,
however it exits: a crashed node never leaves a stale lock behind. The holder's pid and
description are written into the file only to name it; whether the profile is locked is
always decided by ``flock`` itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from types import TracebackType
from typing import Self

from comm_tui.errors import ProfileLocked, StorageError
from comm_tui.store.paths import ProfilePaths

DEFAULT_DESCRIPTION = "comm-tui node"
LOCK_FILE_MODE = 0o600
HOLDER_LINE_MAX_BYTES = 512
# lock_holder() probes with a shared lock for a few microseconds; acquire() waits out such
# probes instead of reporting them as the holder.
PROBE_RETRY_COUNT = 20
PROBE_RETRY_DELAY_S = 0.005


class ProfileLock:
    """The exclusive lock on one profile, held from ``acquire()`` to ``release()``."""

    def __init__(self, paths: ProfilePaths, description: str = DEFAULT_DESCRIPTION) -> None:
        self.paths = paths
        self.description = description
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`ProfileLocked` naming the process that has it."""
        if self._fd is not None:
            raise RuntimeError("profile lock is already held by this object")
        lock_file = self.paths.lock_file
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
        except OSError as err:
            raise StorageError(f"cannot open lock file {lock_file}: {err.strerror}") from err
        try:
            self._lock_exclusive(fd)
            line = f"{os.getpid()} {self.description}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, line, 0)
        except OSError as err:
            os.close(fd)
            raise StorageError(f"cannot write lock file {lock_file}: {err.strerror}") from err
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; does nothing if it is not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # Clear the holder's line so that nobody reads it as current; the line only names the
        # holder, so failing to clear it must not keep the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _lock_exclusive(self, fd: int) -> None:
        for _ in range(PROBE_RETRY_COUNT):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                break  # an exclusive holder: a running node
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(PROBE_RETRY_DELAY_S)
        raise ProfileLocked(f"profile '{self.paths.profile}' is in use by {_read_holder(fd)}")


def lock_holder(paths: ProfilePaths) -> str | None:
    """Say who holds the profile, like ``"comm-tui node (pid 42)"``, or None if nobody does.

    For read-only commands, which work while a node runs; creates nothing.
    """
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageError(f"cannot open lock file {paths.lock_file}: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    """Describe the holder from its ``"<pid> <description>"`` line, as well as it can."""
    try:
        raw = os.pread(fd, HOLDER_LINE_MAX_BYTES, 0)
    except OSError:
        raw = b""
    pid, _, description = raw.decode("utf-8", "replace").partition("\n")[0].partition(" ")
    description = description.strip()
    if not pid.isdecimal() or not description or not description.isprintable():
        # The holder has not written its line yet, or something else wrote the file.
        return "another process"
    return f"{description} (pid {int(pid)})"
