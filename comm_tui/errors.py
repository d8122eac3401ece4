"""Errors a user can cause, each with a message written for that user.

The CLI catches :class:`UserError` in one place and turns it into one line on
stderr and exit code 2; the app shows the same text in a notification.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user asked for cannot be done; ``str(err)`` says why."""


class CardError(UserError):
    """A contact card is malformed, mistyped or for the wrong network version."""


class KeyFileError(UserError):
    """An identity or exported key file is unreadable, tampered, or the passphrase is wrong."""


class ProfileLocked(UserError):
    """Another process runs a node on this profile."""


class StorageError(UserError):
    """The data directory or database cannot be used."""
