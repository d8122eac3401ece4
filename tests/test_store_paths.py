"""Profile paths: where files go, which names are allowed, and private directories."""

from __future__ import annotations

import stat
from pathlib import Path

import platformdirs
import pytest

from comm_tui.errors import StorageError, UserError
from comm_tui.store.paths import ProfilePaths, ensure_dirs, profile_paths


def test_data_dir_puts_everything_under_it(tmp_path: Path) -> None:
    paths = profile_paths("alice", tmp_path)
    root = tmp_path / "profiles" / "alice"
    assert paths == ProfilePaths("alice", root, root / "logs", tmp_path / "run")
    assert paths.identity_file == root / "identity.key"
    assert paths.database == root / "comm.db"
    assert paths.config_file == root / "config.toml"
    assert paths.lock_file == root / "node.lock"


def test_profiles_under_one_data_dir_share_the_runtime_dir(tmp_path: Path) -> None:
    alice, bob = profile_paths("alice", tmp_path), profile_paths("bob", tmp_path)
    assert alice.root != bob.root
    assert alice.runtime_dir == bob.runtime_dir


def test_default_profile_follows_platformdirs() -> None:
    paths = profile_paths()
    assert paths.profile == "default"
    assert paths.root == platformdirs.user_data_path("comm-tui") / "profiles" / "default"
    assert paths.log_dir == platformdirs.user_log_path("comm-tui") / "default"
    assert paths.runtime_dir.name == "comm-tui"


def test_profile_paths_creates_nothing(tmp_path: Path) -> None:
    profile_paths("alice", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["default", "a", "Work_2", "x-y", "z" * 64])
def test_valid_profile_names(name: str, tmp_path: Path) -> None:
    assert profile_paths(name, tmp_path).profile == name


@pytest.mark.parametrize("name", ["", "z" * 65, "../etc", "a b", "a/b", ".", "é", "a\n"])
def test_invalid_profile_names_are_refused_in_one_line(name: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        profile_paths(name, tmp_path)
    assert "invalid profile name" in str(info.value)
    assert "\n" not in str(info.value)


def test_ensure_dirs_creates_a_private_profile_dir(tmp_path: Path) -> None:
    paths = profile_paths("alice", tmp_path)
    ensure_dirs(paths)
    ensure_dirs(paths)  # idempotent
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    assert paths.log_dir.is_dir()


def test_ensure_dirs_reports_an_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot write to data directory") as info:
        ensure_dirs(profile_paths("alice", blocker))
    assert "\n" not in str(info.value)
