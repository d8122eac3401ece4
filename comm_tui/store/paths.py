"""Where a profile's files live, so no other module builds a path by hand.

Paths follow the platform's conventions through platformdirs; ``--data-dir`` puts everything
of every profile under one directory instead, which keeps tests and portable installs out of
the user's real profile.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from comm_tui.errors import StorageError, UserError

APP_NAME = "comm-tui"
DEFAULT_PROFILE = "default"
PROFILE_NAME_MAX_CHARS = 64
PRIVATE_DIR_MODE = 0o700

_PROFILE_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{PROFILE_NAME_MAX_CHARS}}}")


@dataclass(frozen=True)
class ProfilePaths:
    """The files and directories of one profile.

    ``runtime_dir`` is shared by all profiles under the same root, so that nodes of different
    profiles on one machine can find each other there.
    """

    profile: str
    root: Path
    log_dir: Path
    runtime_dir: Path

    @property
    def identity_file(self) -> Path:
        return self.root / "identity.key"

    @property
    def database(self) -> Path:
        return self.root / "comm.db"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def lock_file(self) -> Path:
        return self.root / "node.lock"


def profile_paths(profile: str = DEFAULT_PROFILE, data_dir: Path | None = None) -> ProfilePaths:
    """Return the paths of ``profile``, under ``data_dir`` if given; creates nothing."""
    if not _PROFILE_NAME.fullmatch(profile):
        raise UserError(
            f"invalid profile name {profile!r}: use 1 to {PROFILE_NAME_MAX_CHARS} letters, "
            "digits, '-' or '_'"
        )
    if data_dir is not None:
        root = data_dir / "profiles" / profile
        return ProfilePaths(profile, root, root / "logs", data_dir / "run")
    try:
        # Without XDG_RUNTIME_DIR platformdirs falls back to a private temporary directory,
        # which serves discovery as well; its warning would only garble the terminal UI.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", platformdirs.RuntimeDirWarning)
            runtime_dir = platformdirs.user_runtime_path(APP_NAME, appauthor=False)
    except OSError as err:
        raise StorageError(f"cannot use the runtime directory: {err}") from err
    return ProfilePaths(
        profile=profile,
        root=platformdirs.user_data_path(APP_NAME, appauthor=False) / "profiles" / profile,
        log_dir=platformdirs.user_log_path(APP_NAME, appauthor=False) / profile,
        runtime_dir=runtime_dir,
    )


def ensure_dirs(paths: ProfilePaths) -> None:
    """Create the profile directory (private to the user) and the log directory."""
    for directory in (paths.root, paths.log_dir):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as err:
            raise _cannot_write(directory, err) from err
    try:
        # mkdir honours the umask and leaves an existing directory as it was.
        paths.root.chmod(PRIVATE_DIR_MODE)
    except OSError as err:
        raise _cannot_write(paths.root, err) from err


def _cannot_write(directory: Path, err: OSError) -> StorageError:
    return StorageError(f"cannot write to data directory {directory}: {err.strerror or err}")
