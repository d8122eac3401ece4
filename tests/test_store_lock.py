"""The profile lock: one node per profile, the holder named, released when the holder dies."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import comm_tui
from comm_tui.errors import ProfileLocked
from comm_tui.store.lock import ProfileLock, lock_holder
from comm_tui.store.paths import ProfilePaths, ensure_dirs, profile_paths

HOLDER_SLEEP_S = 60  # upper bound only: every test kills its holder long before
HOLDER_SCRIPT = """
import sys, time
from pathlib import Path
from comm_tui.store.lock import ProfileLock
from comm_tui.store.paths import profile_paths
lock = ProfileLock(profile_paths("alice", Path(sys.argv[1])), "test holder")
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def paths(tmp_path: Path) -> ProfilePaths:
    paths = profile_paths("alice", tmp_path)
    ensure_dirs(paths)
    return paths


@pytest.fixture
def holder(tmp_path: Path, paths: ProfilePaths) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock of ``paths`` until it is killed."""
    package_root = Path(comm_tui.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(tmp_path), str(HOLDER_SLEEP_S)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"  # waits until it holds the lock
        yield process
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_acquire_writes_the_holder_line_and_release_clears_it(paths: ProfilePaths) -> None:
    lock = ProfileLock(paths, "comm-tui node")
    lock.acquire()
    assert lock.held
    assert paths.lock_file.read_text() == f"{os.getpid()} comm-tui node\n"
    lock.release()
    assert not lock.held
    assert paths.lock_file.read_text() == ""
    lock.release()  # releasing twice is harmless


def test_lock_can_be_taken_again_after_release(paths: ProfilePaths) -> None:
    with ProfileLock(paths):
        pass
    with ProfileLock(paths) as lock:
        assert lock.held


def test_second_lock_in_the_same_process_is_refused(paths: ProfilePaths) -> None:
    with ProfileLock(paths, "comm-tui tui"), pytest.raises(ProfileLocked) as info:
        ProfileLock(paths).acquire()
    assert str(info.value) == f"profile 'alice' is in use by comm-tui tui (pid {os.getpid()})"


def test_another_process_holding_the_lock_is_named(
    paths: ProfilePaths, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(ProfileLocked) as info:
        ProfileLock(paths).acquire()
    assert str(info.value) == f"profile 'alice' is in use by test holder (pid {holder.pid})"
    assert lock_holder(paths) == f"test holder (pid {holder.pid})"


def test_lock_is_released_when_the_holder_is_killed(
    paths: ProfilePaths, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(ProfileLocked):
        ProfileLock(paths).acquire()
    holder.kill()
    holder.wait()
    # The dead holder's line is still in the file, but flock decides: nobody holds it.
    assert paths.lock_file.read_text() == f"{holder.pid} test holder\n"
    assert lock_holder(paths) is None
    with ProfileLock(paths) as lock:
        assert lock.held


def test_lock_holder_without_a_lock_file_creates_nothing(tmp_path: Path) -> None:
    paths = profile_paths("nobody", tmp_path)
    assert lock_holder(paths) is None
    assert not paths.root.exists()


def test_lock_holder_probe_does_not_block_acquire(paths: ProfilePaths) -> None:
    assert lock_holder(paths) is None
    with ProfileLock(paths) as lock:
        assert lock_holder(paths) == f"comm-tui node (pid {os.getpid()})"
        assert lock.held


def test_a_lingering_shared_lock_is_reported_without_a_name(paths: ProfilePaths) -> None:
    paths.lock_file.write_text("garbage")
    fd = os.open(paths.lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with pytest.raises(ProfileLocked, match=r"is in use by another process$"):
            ProfileLock(paths).acquire()
    finally:
        os.close(fd)
