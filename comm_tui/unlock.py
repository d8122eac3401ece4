"""Where the identity's passphrase comes from, and the one function that unlocks it.

Every entry point that needs the profile's private key (the app, ``node``, ``send``,
``id``, ``keys export``...) loads it through :func:`comm_tui.profile.open_profile`, which
calls :func:`unlock_identity` for a protected file. The passphrase comes from, in order:

1. a file descriptor (``--passphrase-fd N``): one line is read from it. The safest way
   for scripts: nothing is left in the environment or in the process's arguments.
2. the ``COMM_TUI_PASSPHRASE`` environment variable, removed from this process's
   environment once read so that no child inherits it. It is still readable by the
   same user (``/proc/PID/environ``) and by whoever started the process; see README.
3. a prompt on the terminal (``getpass``), retried up to :data:`PROMPT_ATTEMPTS` times;
   the app shows its own passphrase screen instead.

A passphrase given by fd or environment is tried once: a wrong one is an error, never
a loop, so a script fails fast with one line and exit code 2.

The passphrase itself never appears in an exception message or a log line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import PassphraseRequired, WrongPassphrase, read_identity_file
from comm_tui.errors import UserError

PASSPHRASE_ENV = "COMM_TUI_PASSPHRASE"
# A passphrase is a line a person can type; refuse to read more from a descriptor than
# this, so that an fd connected to an endless stream cannot make us allocate without bound.
MAX_PASSPHRASE_BYTES = 4096
PROMPT_ATTEMPTS = 3

Prompt = Callable[[str], str]
Unlock = Callable[[Path], Identity]


class PromptCancelled(Exception):
    """The user quit at a passphrase prompt or screen; nothing was opened or changed."""


def read_passphrase_fd(fd: int) -> bytes:
    """One line from ``fd`` without its line ending; one byte at a time, so that no more
    than that line is consumed from a descriptor the caller may keep using."""
    data = bytearray()
    while len(data) <= MAX_PASSPHRASE_BYTES:
        try:
            byte = os.read(fd, 1)
        except OSError as err:
            raise UserError(
                f"cannot read the passphrase from file descriptor {fd}: {err.strerror or err}"
            ) from None
        if not byte or byte == b"\n":
            break
        data += byte
    else:
        raise UserError(
            f"the passphrase on file descriptor {fd} is longer than {MAX_PASSPHRASE_BYTES} bytes"
        )
    passphrase = bytes(data.removesuffix(b"\r"))
    if not passphrase:
        raise UserError(f"the passphrase read from file descriptor {fd} is empty")
    return passphrase


def _terminal_prompt() -> Prompt | None:
    """getpass when a person can answer, else None (a script gets an error, not a hang)."""
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass
    return None


@dataclass
class PassphraseSource:
    """The passphrase channels a command was given; each is read at most once.

    ``environ`` is the environment to take :data:`PASSPHRASE_ENV` from (and remove it
    from); ``prompt`` asks a person, or is None when nobody can answer.
    """

    fd: int | None = None
    environ: MutableMapping[str, str] = field(default_factory=lambda: os.environ)
    prompt: Prompt | None = field(default_factory=_terminal_prompt)
    _given: bytes | None = field(default=None, repr=False)

    def given(self) -> bytes | None:
        """The passphrase from the fd or the environment, or None if neither was given."""
        if self._given is None:
            if self.fd is not None:
                self._given = read_passphrase_fd(self.fd)
            elif PASSPHRASE_ENV in self.environ:
                value = self.environ.pop(PASSPHRASE_ENV)
                if not value:
                    raise UserError(f"{PASSPHRASE_ENV} is set but empty")
                self._given = value.encode("utf-8")
        return self._given

    def ask(self, question: str) -> bytes:
        """Ask a person; :class:`PassphraseRequired` if nobody can be asked."""
        if self.prompt is None:
            raise PassphraseRequired(
                "the identity of this profile is protected by a passphrase: run on a "
                f"terminal, or give --passphrase-fd N or set {PASSPHRASE_ENV}"
            )
        return self.prompt(question).encode("utf-8")


def unlock_identity(path: Path, source: PassphraseSource) -> Identity:
    """The identity in the protected file ``path``, with the passphrase from ``source``.

    Raises :class:`WrongPassphrase` after one wrong passphrase from a script channel or
    :data:`PROMPT_ATTEMPTS` wrong ones typed at the prompt; other KeyFileErrors (a
    damaged file) are not retried.
    """
    given = source.given()
    if given is not None:
        return read_identity_file(path, given)
    for attempt in range(1, PROMPT_ATTEMPTS + 1):
        passphrase = source.ask("Passphrase of this profile's identity: ")
        try:
            return read_identity_file(path, passphrase)
        except WrongPassphrase:
            if attempt == PROMPT_ATTEMPTS:
                break
            print("wrong passphrase, try again", file=sys.stderr)
    raise WrongPassphrase(f"wrong passphrase {PROMPT_ATTEMPTS} times; nothing was opened")


def unlocker(source: PassphraseSource) -> Unlock:
    """:func:`unlock_identity` bound to ``source``, as :func:`open_profile` takes it."""
    return lambda path: unlock_identity(path, source)
