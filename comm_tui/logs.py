"""Log files under the profile's log directory (platformdirs' user log dir).

A headless node is often run under a supervisor that drops stdout, and the app
cannot print at all, so both also write a small rotating log file. Nothing secret
is ever logged: identities appear as addresses and cards only, texts as ids and sizes
(comm_tui/cli.py, ``_text_ref``), and no passphrase, seed or private key reaches a log
record (tests/test_secrets_at_rest.py runs real nodes at DEBUG and searches every output).
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler

from comm_tui.store.paths import ProfilePaths

LOG_FILE_BYTES = 1024 * 1024
LOG_FILE_BACKUPS = 3
LOG_LEVELS = ("info", "debug")


def file_logger(paths: ProfilePaths, name: str, *, debug: bool = False) -> logging.Logger:
    """A logger writing to ``<log dir>/<name>.log``; a no-op if the directory is unusable.

    With ``debug`` the file also takes every library's records (asyncio, ...) at DEBUG
    through the root logger, for diagnosing a node without a debugger.
    """
    logger = logging.getLogger(f"comm_tui.{paths.profile}.{name}")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    if logger.handlers:
        return logger
    try:
        paths.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = paths.log_dir / f"{name}.log"
        handler = RotatingFileHandler(
            path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
        os.chmod(path, 0o600)
    except OSError:
        logger.addHandler(logging.NullHandler())
        return logger
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger.addHandler(handler)
    if debug:
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(handler)
    return logger
