"""The ``comm-tui`` command: the TUI by default, and scriptable subcommands.

Every subcommand takes ``--profile``, ``--data-dir`` and ``--passphrase-fd``. Commands
that run a node (the TUI, ``node``, ``send``) or rewrite the identity file (``keys
import``, ``keys protect``, ``keys unprotect``) take the profile lock; the others
only read or make small database writes, which SQLite's WAL mode lets them do
while a node runs. Errors the user can cause arrive as :class:`UserError` and are
turned into one line on stderr and exit code 2 in :func:`main`, nowhere else.

A passphrase-protected identity is unlocked by one function,
``comm_tui.unlock.unlock_identity``, reached through :func:`_open` (``open_profile``) for
every command that needs the key, and directly by ``keys protect/unprotect``: from
``--passphrase-fd N``, ``COMM_TUI_PASSPHRASE`` or the terminal. Commands that need only
the database (contacts, history) do not ask: see :func:`_open_records`.

What the node prints and logs names peers and texts by id, never a text's content: a log
file outlives the conversation and may be shared in a bug report.

Exit codes: 0 success, 2 bad input, unusable profile or wrong passphrase, 3 ``send`` gave
up waiting (the text stays in the outbox), 130 interrupted at a prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import queue
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from comm_tui import __version__
from comm_tui.crypto.card import Card, decode_card, encode_card, looks_like_card, read_card
from comm_tui.crypto.identity import ADDRESS_BYTES, Identity, PublicIdentity
from comm_tui.crypto.keyfile import (
    FAST_KDF_ENV,
    export_strength,
    is_passphrase_protected,
    key_file_address,
    read_identity_file,
    replace_identity,
    unprotected_backups,
    write_identity_file,
)
from comm_tui.errors import KeyFileError, StorageError, UserError
from comm_tui.logs import LOG_LEVELS, file_logger
from comm_tui.net.runner import STOP_TIMEOUT_S, NodeRunner
from comm_tui.net.service import (
    IncomingText,
    NodeFailed,
    NodeService,
    NoticeAdded,
    OutgoingUpdated,
    PortMappingChanged,
    ServiceEvent,
    current_card,
)
from comm_tui.profile import Profile, node_starter, open_profile
from comm_tui.protocol.custody import custody_json, custody_of
from comm_tui.protocol.letters import MAX_TEXT_BYTES, display_name
from comm_tui.protocol.node import Node
from comm_tui.protocol.relay_store import Entry, RelayUsage
from comm_tui.store.db import (
    SEARCH_LIMIT,
    Database,
    DatabaseDamaged,
    HistoryRow,
    RequestOutcome,
    fts_query,
)
from comm_tui.store.lock import ProfileLock
from comm_tui.store.paths import DEFAULT_PROFILE, ProfilePaths, ensure_dirs, profile_paths
from comm_tui.store.repair import repair_database
from comm_tui.unlock import (
    PASSPHRASE_ENV,
    PassphraseSource,
    PromptCancelled,
    read_passphrase_fd,
    unlocker,
)

PROG = "comm-tui"
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_GAVE_UP = 3
EXIT_NOT_FOUND = 1  # search: no message matched (as grep says it)
EXIT_INTERRUPTED = 130

T = TypeVar("T")
# Without --wait, `send` waits this long for a node to take the text.
SEND_HANDOFF_TIMEOUT_S = 10.0
NODE_STATS_INTERVAL_S = 60.0
HISTORY_DEFAULT_LIMIT = 100
CONVERSATION_PREVIEW_CHARS = 60
# What `keys import --protection` accepts: keep the file's passphrase, choose a new one, none.
IMPORT_PROTECTIONS = ("keep", "new", "none")

_HEX_ADDRESS = re.compile(rf"[0-9a-fA-F]{{{ADDRESS_BYTES * 2}}}")


# ---------------------------------------------------------------------------- arguments


def _build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before and after the subcommand; SUPPRESS keeps a
    # subcommand's unset copy from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--profile",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help=f"profile to use (default: {DEFAULT_PROFILE})",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="keep all profiles under DIR instead of the platform's user directories",
    )
    common.add_argument(
        "--passphrase-fd",
        type=_fd_number,
        default=argparse.SUPPRESS,
        metavar="N",
        help="read the identity's passphrase from file descriptor N (one line); "
        f"else {PASSPHRASE_ENV}, else the terminal asks",
    )
    network = argparse.ArgumentParser(add_help=False)
    network.add_argument(
        "--listen",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="UDP address to listen on (remembered in the profile's config)",
    )
    network.add_argument(
        "--bootstrap",
        action="append",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="a node to join the network through; repeatable (remembered)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common, network],
        description="Decentralized, end-to-end encrypted messenger. "
        "Without a command, opens the terminal app.",
        epilog=f"{PASSPHRASE_ENV}: the identity's passphrase for scripts. Other processes of "
        "the same user can read a process's environment; prefer --passphrase-fd N.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start a private loopback network with an echo contact (app only)",
    )
    parser.set_defaults(handler=_cmd_app)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    cmd = commands.add_parser(
        "id", parents=[common], help="show this profile's address and card (creates it)"
    )
    cmd.add_argument(
        "--plain",
        action="store_true",
        help="the 65-character card without name or hints, for a comm-tui that reads no other",
    )
    cmd.set_defaults(handler=_cmd_id)

    cmd = commands.add_parser(
        "node",
        parents=[common, network],
        help="run a headless node until SIGINT/SIGTERM",
        epilog="The node's output and log file name texts by id, never by content.",
    )
    cmd.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="debug also sends every library's log records to the node's log file",
    )
    cmd.set_defaults(handler=_cmd_node)

    cmd = commands.add_parser("contacts", parents=[common], help="manage contacts")
    contacts = cmd.add_subparsers(title="actions", metavar="ACTION", required=True)
    sub = contacts.add_parser(
        "add",
        parents=[common],
        help="add a contact from their card",
        usage="%(prog)s [NAME] CARD",
        epilog="Without NAME, the contact is called by the name their card carries.",
    )
    sub.add_argument("name", metavar="NAME", help="what to call them (default: their card's name)")
    sub.add_argument("card", metavar="CARD", nargs="?")
    sub.set_defaults(handler=_cmd_contacts_add)
    sub = contacts.add_parser("list", parents=[common], help="list contacts")
    sub.set_defaults(handler=_cmd_contacts_list)
    sub = contacts.add_parser("remove", parents=[common], help="forget a contact (history stays)")
    sub.add_argument("name")
    sub.set_defaults(handler=_cmd_contacts_remove)
    sub = contacts.add_parser("rename", parents=[common], help="rename a contact")
    sub.add_argument("old")
    sub.add_argument("new")
    sub.set_defaults(handler=_cmd_contacts_rename)
    sub = contacts.add_parser(
        "receipts",
        parents=[common],
        help="send read receipts to a contact or not (off unless turned on)",
    )
    sub.add_argument("name")
    sub.add_argument("state", choices=("on", "off"))
    sub.set_defaults(handler=_cmd_contacts_receipts)

    cmd = commands.add_parser(
        "send",
        parents=[common, network],
        help="send a text; exit 0 once a node holds it (or, with --wait, once delivered)",
    )
    cmd.add_argument("to", metavar="TO", help="contact name or card")
    cmd.add_argument(
        "text",
        metavar="TEXT",
        help="the text, or - to read it from standard input (other local users can read "
        "a process's arguments, not its input)",
    )
    cmd.add_argument(
        "--wait",
        type=_positive_seconds,
        metavar="SECONDS",
        help="wait up to SECONDS for the recipient's signed ack; exit 3 if it does not come",
    )
    cmd.set_defaults(handler=_cmd_send)

    cmd = commands.add_parser(
        "history", parents=[common], help="show the conversation with a contact or address"
    )
    cmd.add_argument("who", metavar="WHO", help="contact name, card or 40-hex address")
    cmd.add_argument("--json", action="store_true", help="print a JSON array")
    cmd.add_argument(
        "--limit",
        type=_positive_int,
        default=HISTORY_DEFAULT_LIMIT,
        metavar="N",
        help=f"show the newest N messages (default {HISTORY_DEFAULT_LIMIT})",
    )
    cmd.set_defaults(handler=_cmd_history)

    cmd = commands.add_parser(
        "search",
        parents=[common],
        help="search every conversation's history for words",
        description="Finds messages with a word starting with each word of QUERY (case and"
        " accents do not matter), newest first.",
    )
    cmd.add_argument("query", metavar="QUERY", help="the words to find")
    cmd.add_argument("--with", dest="who", metavar="WHO", help="only the conversation with WHO")
    cmd.add_argument("--json", action="store_true", help="print a JSON array")
    cmd.add_argument(
        "--limit",
        type=_positive_int,
        default=SEARCH_LIMIT,
        metavar="N",
        help=f"show at most N messages (default {SEARCH_LIMIT})",
    )
    cmd.set_defaults(handler=_cmd_search)

    cmd = commands.add_parser(
        "conversations", parents=[common], help="list conversations with unread counts"
    )
    cmd.add_argument("--json", action="store_true", help="print a JSON array")
    cmd.set_defaults(handler=_cmd_conversations)

    cmd = commands.add_parser(
        "keys",
        parents=[common],
        help="show, protect, export or import this profile's identity",
        epilog=f"For tests only: {FAST_KDF_ENV}=1 makes export and protect use the weakest "
        "key derivation, so that tests run fast. Never set it for a key you keep.",
    )
    keys = cmd.add_subparsers(title="actions", metavar="ACTION", required=True)
    sub = keys.add_parser(
        "show",
        parents=[common],
        help="the identity's address, file, and whether a passphrase protects it",
    )
    sub.set_defaults(handler=_cmd_keys_show)
    sub = keys.add_parser(
        "protect",
        parents=[common],
        help="protect the identity with a passphrase, or change its passphrase",
    )
    sub.add_argument(
        "--new-passphrase-fd",
        type=_fd_number,
        metavar="N",
        help="read the new passphrase from file descriptor N (one line) instead of asking",
    )
    sub.set_defaults(handler=_cmd_keys_protect)
    sub = keys.add_parser(
        "unprotect",
        parents=[common],
        help="store the identity without a passphrase (anyone who can read it can use it)",
    )
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.set_defaults(handler=_cmd_keys_unprotect)
    sub = keys.add_parser(
        "export",
        parents=[common],
        help="write the identity to a passphrase-protected file",
        epilog=f"For tests only: {FAST_KDF_ENV}=1 uses the weakest key derivation.",
    )
    sub.add_argument("file", type=Path, metavar="FILE")
    sub.add_argument(
        "--passphrase-file", type=Path, metavar="F", help="read it from F's first line"
    )
    sub.set_defaults(handler=_cmd_keys_export)
    sub = keys.add_parser(
        "import",
        parents=[common],
        help="replace the identity with one from a file (the old one is backed up)",
    )
    sub.add_argument("file", type=Path, metavar="FILE")
    sub.add_argument(
        "--passphrase-file", type=Path, metavar="F", help="read it from F's first line"
    )
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_argument(
        "--protection",
        choices=IMPORT_PROTECTIONS,
        help="keep: protect it with the file's passphrase (the default for a protected file); "
        "new: with a new passphrase; none: without one (the default for an unprotected file). "
        "Asked on a terminal when not given",
    )
    sub.add_argument(
        "--new-passphrase-fd",
        type=_fd_number,
        metavar="N",
        help="with --protection new: read the new passphrase from file descriptor N",
    )
    sub.set_defaults(handler=_cmd_keys_import)

    cmd = commands.add_parser(
        "repair",
        parents=[common],
        help="set a damaged database aside (kept) and salvage what can be read into a new one",
    )
    cmd.set_defaults(handler=_cmd_repair)
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _fd_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file descriptor number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


@dataclass(frozen=True)
class _Globals:
    profile: str
    data_dir: Path | None
    listen: str | None
    bootstrap: list[str]
    passphrase: PassphraseSource
    # Said on stderr once the command has succeeded (an error stays one line).
    notices: list[str] = field(default_factory=list)


def _globals(args: argparse.Namespace) -> _Globals:
    data_dir: Path | None = getattr(args, "data_dir", None)
    return _Globals(
        profile=getattr(args, "profile", DEFAULT_PROFILE),
        data_dir=data_dir.expanduser() if data_dir is not None else None,
        listen=getattr(args, "listen", None),
        bootstrap=list(getattr(args, "bootstrap", [])),
        passphrase=PassphraseSource(fd=getattr(args, "passphrase_fd", None)),
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; UserError becomes one line on stderr and exit code 2."""
    args = _build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, _Globals], int] = args.handler
    g = _globals(args)
    try:
        code = handler(args, g)
    except UserError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, EOFError, PromptCancelled):
        # Ctrl-C or Ctrl-D at a prompt; a running node handles SIGINT itself.
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    if code == EXIT_OK:
        for notice in g.notices:
            print(f"{PROG}: {notice}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- helpers


def _open(g: _Globals, *, lock_as: str | None = None) -> Profile:
    """Open the profile, unlocking a protected identity; the one way commands load it."""
    profile = open_profile(g.profile, g.data_dir, lock_as=lock_as, unlock=unlocker(g.passphrase))
    if profile.created:
        g.notices.append(_created_notice(profile))
    g.notices.extend(profile.config.notices)
    return profile


@dataclass
class _Records:
    """The database and our address: all that the contact and history commands need."""

    address: bytes
    db: Database


@contextlib.contextmanager
def _open_records(g: _Globals) -> Iterator[_Records]:
    """The profile's database without its private key.

    Contacts, history and conversations need no key, and the passphrase does not protect
    the database (it is not encrypted with it), so asking for it here would protect nothing
    and stop scripts while a headless node runs. Our address comes from the identity file,
    where it is public. A profile without a usable unprotected identity goes through
    :func:`_open` (which creates one on first use, or reports the damage).
    """
    paths = profile_paths(g.profile, g.data_dir)
    if paths.identity_file.exists() and is_passphrase_protected(paths.identity_file):
        ensure_dirs(paths)
        address = key_file_address(paths.identity_file)
        with Database.open(paths.database) as db:
            yield _Records(address, db)
        return
    with _open(g) as profile:
        yield _Records(profile.identity.address, profile.db)


def _created_notice(profile: Profile) -> str:
    """First run says plainly that the new identity has no passphrase, and how to add one."""
    return (
        f"created a new identity for profile '{profile.paths.profile}'; it is not protected "
        f"by a passphrase (to protect it: {PROG} keys protect)"
    )


def _now_text() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).astimezone().isoformat(timespec="seconds")


def _one_line(text: str) -> str:
    """Escape newlines and control characters: a peer's text must not forge log lines or
    send escape sequences to the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _display_name(db: Database, address: bytes) -> str:
    contact = db.contact_by_address(address)
    return contact.name if contact is not None else address.hex()


@dataclass(frozen=True)
class _Peer:
    """Whom a command refers to; ``key`` is None for an address we hold no key for."""

    address: bytes
    key: bytes | None
    name: str | None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else self.address.hex()


def _resolve_peer(db: Database, who: str) -> _Peer:
    """A contact name, a card, or a 40-hex address, checked in that order of intent."""
    if looks_like_card(who):
        public = decode_card(who)
        contact = db.contact_by_address(public.address)
        return _Peer(public.address, public.key, contact.name if contact else None)
    contact = db.contact_by_name(who)
    if contact is not None:
        return _Peer(contact.address, contact.key, contact.name)
    if _HEX_ADDRESS.fullmatch(who):
        address = bytes.fromhex(who)
        contact = db.contact_by_address(address)
        if contact is not None:
            return _Peer(address, contact.key, contact.name)
        key = next((c.peer_key for c in db.conversations() if c.peer_address == address), None)
        return _Peer(address, key, None)
    raise UserError(f"no contact named {who!r}")


def _read_passphrase_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            line = file.readline()
    except OSError as err:
        raise UserError(f"cannot read passphrase file {path}: {err.strerror or err}") from None
    return line.removesuffix(b"\n").removesuffix(b"\r")


def _prompt_passphrase(prompt: str) -> bytes:
    return getpass.getpass(prompt).encode("utf-8")


def _new_passphrase(fd: int | None, what: str) -> bytes:
    """A new passphrase: one line from ``fd``, or typed twice on the terminal."""
    if fd is not None:
        return read_passphrase_fd(fd)
    if not sys.stdin.isatty():
        raise UserError(
            f"not asking without a terminal: give the {what} with --new-passphrase-fd N"
        )
    passphrase = _prompt_passphrase(f"New passphrase for the {what}: ")
    if not passphrase:
        raise UserError("the passphrase is empty; nothing was changed")
    if _prompt_passphrase("Repeat the new passphrase: ") != passphrase:
        raise UserError("the passphrases do not match; nothing was changed")
    return passphrase


def _ask_yes_no(question: str, default: bool) -> bool:
    answer = input(f"{question} [{'Y/n' if default else 'y/N'}] ").strip().lower()
    return default if not answer else answer in ("y", "yes")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("not asking without a terminal: pass --yes to confirm")
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


# ---------------------------------------------------------------------------- commands


def _cmd_app(args: argparse.Namespace, g: _Globals) -> int:
    # Imported here so that the scriptable commands start fast and work without Textual.
    from comm_tui.app import run_app

    return run_app(
        profile=g.profile,
        data_dir=g.data_dir,
        listen=g.listen,
        bootstrap=g.bootstrap,
        demo=bool(args.demo),
        passphrase=g.passphrase,
    )


def _cmd_id(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        nickname = display_name(profile.config.nickname or "")
        if nickname is not None:
            # What the node takes at start (docs/PROTOCOL.md, "7.1.1"), recorded now so the
            # card and the name letters give this name one version ("13.2.1").
            profile.db.set_own_display_name(nickname)
        text, card = current_card(profile.identity, profile.db)
        if args.plain:
            text, card = encode_card(profile.identity.public), Card(profile.identity.public)
        print(f"address: {profile.identity.address.hex()}")
        print(f"card: {text}")
        if card.name is not None:
            print(f"name in card: {card.name} (your nickname; contacts may call you otherwise)")
        if card.hints:
            hints = " ".join(_endpoint_text(hint) for hint in card.hints)
            issued = datetime.fromtimestamp(card.issued, UTC).strftime("%Y-%m-%d %H:%M UTC")
            print(f"endpoint hints: {hints} (as of {issued})")
    return EXIT_OK


def _endpoint_text(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cmd_contacts_add(args: argparse.Namespace, g: _Globals) -> int:
    """``contacts add [NAME] CARD``: without NAME, the name the card claims is the contact's.

    docs/PROTOCOL.md, "13.2.1": the card's name is kept as the contact's claimed name, as
    if its name letter had come; a name the user gives is theirs and stays.
    """
    text, name = (args.name, None) if args.card is None else (args.card, args.name)
    card = read_card(text)
    public = card.identity
    if name is None:
        if card.name is None:
            raise UserError(f"this card carries no name: give one ({PROG} contacts add NAME CARD)")
        name = card.name
    with _open_records(g) as profile:
        if public.address == profile.address:
            raise UserError("that is this profile's own card")
        now = time.time()
        with profile.db.transaction():
            contact = profile.db.add_contact(name, public.key, public.address, now)
            # docs/PROTOCOL.md, "13.2": where to find them when nothing else is known.
            profile.db.save_card_hints(public.key, card.hints, card.issued)
            if card.name is not None:
                profile.db.claim_name(public.key, card.name, card.name_version, now)
            claimed = profile.db.claimed_name(public.key)
    calls = "" if claimed is None else f", who calls themselves \u2018{claimed}\u2019"
    print(f"added {contact.name} ({contact.address.hex()}){calls}")
    return EXIT_OK


def _cmd_contacts_list(args: argparse.Namespace, g: _Globals) -> int:
    with _open_records(g) as profile:
        for contact in profile.db.contacts():
            card = encode_card(PublicIdentity(contact.key))
            print(f"{contact.name}\t{contact.address.hex()}\t{card}")
    return EXIT_OK


def _cmd_contacts_remove(args: argparse.Namespace, g: _Globals) -> int:
    with _open_records(g) as profile:
        profile.db.remove_contact(args.name)
    print(f"removed {args.name}")
    return EXIT_OK


def _cmd_contacts_rename(args: argparse.Namespace, g: _Globals) -> int:
    with _open_records(g) as profile:
        contact = profile.db.rename_contact(args.old, args.new)
    print(f"renamed {args.old} to {contact.name}")
    return EXIT_OK


def _cmd_contacts_receipts(args: argparse.Namespace, g: _Globals) -> int:
    """docs/PROTOCOL.md, "7.1.1": read receipts go only to contacts the user chose."""
    with _open_records(g) as profile:
        contact = profile.db.contact_by_name(args.name)
        if contact is None:
            raise UserError(f"no contact named {args.name!r}")
        profile.db.set_receipts(contact.address, args.state == "on")
    print(f"read receipts to {contact.name}: {args.state}")
    return EXIT_OK


def _history_json(
    profile: _Records,
    peer: _Peer,
    row: HistoryRow,
    outbox: list[Entry],
    claimed_name: str | None = None,
) -> dict[str, Any]:
    me = profile.address.hex()
    them = peer.label
    return {
        "direction": row.direction,
        "text": row.text,
        "state": row.state,
        "time": _iso(row.created_at),
        "sent_time": None if row.sent_ms is None else _iso(row.sent_ms / 1000),
        # A notice (a session re-established) is ours to show, neither sent nor received.
        "from": None if row.direction == "notice" else them if row.direction == "in" else me,
        "to": None if row.direction == "notice" else me if row.direction == "in" else them,
        "peer_address": row.peer_address.hex(),
        # What the peer calls itself (docs/PROTOCOL.md, "7.1.1"): a claim, not our name.
        "claimed_name": claimed_name,
        # When the recipient said it read our text (its read receipt); else null.
        "read_time": None if row.read_at is None else _iso(row.read_at),
        "id": row.text_id.hex(),
        # Where an undelivered text of ours is (comm_tui/protocol/custody.py); else null.
        "custody": custody_json(custody_of(outbox, row.text_id))
        if row.direction == "out"
        else None,
    }


def _has_undelivered(rows: list[HistoryRow]) -> bool:
    return any(r.direction == "out" and r.state in ("queued", "sent") for r in rows)


def _saved_outbox(db: Database) -> list[Entry]:
    """Our own undelivered parts as the node saved them (damaged entries are skipped)."""
    entries = []
    for blob in db.relay_blobs(int(time.time() * 1000)):
        try:
            entry = Entry.deserialize(blob)
        except ValueError:
            continue
        if entry.own_text_id:
            entries.append(entry)
    return entries


def _cmd_history(args: argparse.Namespace, g: _Globals) -> int:
    with _open_records(g) as profile:
        peer = _resolve_peer(profile.db, args.who)
        rows = profile.db.history(peer.address, limit=args.limit)
        if args.json:
            outbox = _saved_outbox(profile.db) if _has_undelivered(rows) else []
            claimed = None if peer.key is None else profile.db.claimed_name(peer.key)
            rows_json = [_history_json(profile, peer, row, outbox, claimed) for row in rows]
            json.dump(rows_json, sys.stdout, indent=2)
            print()
            return EXIT_OK
        for row in rows:
            if row.direction == "notice":
                print(f"{_iso(row.created_at)} notice: {_one_line(row.text)}")
                continue
            arrow = f"from {peer.label}" if row.direction == "in" else f"to {peer.label}"
            state = "" if row.direction == "in" else f" [{row.state}]"
            print(f"{_iso(row.created_at)} {arrow}: {_one_line(row.text)}{state}")
    return EXIT_OK


def _cmd_search(args: argparse.Namespace, g: _Globals) -> int:
    if fts_query(args.query) is None:
        raise UserError("the query has no word to search for")
    with _open_records(g) as profile:
        peer = _resolve_peer(profile.db, args.who) if args.who is not None else None
        hits = profile.db.search(
            args.query, peer_address=None if peer is None else peer.address, limit=args.limit
        )
        if args.json:
            items = [
                _history_json(
                    profile, _Peer(hit.row.peer_address, None, hit.contact_name), hit.row, []
                )
                for hit in hits
            ]
            json.dump(items, sys.stdout, indent=2)
            print()
            return EXIT_OK if hits else EXIT_NOT_FOUND
        for hit in hits:
            row = hit.row
            label = hit.contact_name or f"request {row.peer_address.hex()}"
            arrow = f"from {label}" if row.direction == "in" else f"to {label}"
            print(f"{_iso(row.created_at)} {arrow}: {_one_line(row.text)}")
        if not hits:
            print(f"{PROG}: no message has all of: {args.query}", file=sys.stderr)
            return EXIT_NOT_FOUND
    return EXIT_OK


def _cmd_conversations(args: argparse.Namespace, g: _Globals) -> int:
    with _open_records(g) as profile:
        conversations = profile.db.visible_conversations()
    if args.json:
        items = [
            {
                "name": c.name,
                "address": c.peer_address.hex(),
                "claimed_name": c.claimed_name,
                "unread": c.unread,
                "last_text": c.last_text,
                "last_time": None if c.last_time is None else _iso(c.last_time),
            }
            for c in conversations
        ]
        json.dump(items, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for c in conversations:
        label = c.name if c.name is not None else f"{c.peer_address.hex()} (not a contact)"
        if c.claimed_name is not None and c.claimed_name != c.name:
            label += f" (calls themselves {_one_line(c.claimed_name)})"
        when = "-" if c.last_time is None else _iso(c.last_time)
        preview = _one_line(c.last_text or "")[:CONVERSATION_PREVIEW_CHARS]
        print(f"{label}\tunread {c.unread}\t{when}\t{preview}")
    return EXIT_OK


def _cmd_keys_export(args: argparse.Namespace, g: _Globals) -> int:
    target: Path = args.file
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} already exists: choose another file name")
    # The identity (and its own passphrase, if protected) first, then the export's.
    with _open(g) as profile:
        if args.passphrase_file is not None:
            passphrase = _read_passphrase_file(args.passphrase_file)
        else:
            passphrase = _prompt_passphrase("Passphrase for the exported key: ")
            if _prompt_passphrase("Repeat the passphrase: ") != passphrase:
                raise UserError("the passphrases do not match; nothing was written")
        if not passphrase:
            raise UserError("the passphrase is empty; nothing was written")
        write_identity_file(target, profile.identity, passphrase, export_strength())
        address = profile.identity.address.hex()
    print(f"exported identity {address} to {target}")
    return EXIT_OK


def _import_passphrase(args: argparse.Namespace, file_passphrase: bytes | None) -> bytes | None:
    """The passphrase that will protect the imported identity, or None for none.

    A protected file stays protected unless the user says otherwise: its protection is
    the default, asked about on a terminal (keep it, with the same passphrase or a new
    one), and chosen by ``--protection`` in scripts.
    """
    choice: str | None = args.protection
    if choice is None and args.new_passphrase_fd is not None:
        choice = "new"
    if choice is None:
        protected = file_passphrase is not None
        if args.yes or not sys.stdin.isatty():
            choice = "keep" if protected else "none"
        elif protected:
            if not _ask_yes_no("Keep the imported identity protected by a passphrase?", True):
                choice = "none"
            elif _ask_yes_no("Use the same passphrase as the file?", True):
                choice = "keep"
            else:
                choice = "new"
        else:
            choice = "new" if _ask_yes_no("Protect it with a passphrase?", True) else "none"
    if choice == "keep":
        if file_passphrase is None:
            raise UserError(
                "the file has no passphrase to keep: use --protection new or --protection none"
            )
        return file_passphrase
    if choice == "new":
        return _new_passphrase(args.new_passphrase_fd, "imported identity")
    return None


def _cmd_keys_import(args: argparse.Namespace, g: _Globals) -> int:
    source: Path = args.file
    # Read and check the file before touching the profile: a bad file changes nothing.
    file_passphrase: bytes | None = None
    if is_passphrase_protected(source):
        if args.passphrase_file is not None:
            file_passphrase = _read_passphrase_file(args.passphrase_file)
        else:
            file_passphrase = _prompt_passphrase(f"Passphrase for {source}: ")
    new = read_identity_file(source, file_passphrase)
    paths = profile_paths(g.profile, g.data_dir)
    ensure_dirs(paths)
    if _current_address(paths.identity_file) == new.address:
        print(f"identity {new.address.hex()} is already this profile's; nothing changed")
        return EXIT_OK
    passphrase = _import_passphrase(args, file_passphrase)
    # The profile's identity file is replaced directly, without opening (or unlocking) the
    # profile, so that importing also repairs a profile whose own key file is damaged or
    # whose passphrase is lost.
    with ProfileLock(paths, "comm-tui keys import"):
        old = _current_address(paths.identity_file)
        if old == new.address:
            print(f"identity {new.address.hex()} is already this profile's; nothing changed")
            return EXIT_OK
        if not args.yes:
            current = "no identity" if old is None else f"identity {old.hex()}"
            question = f"Replace {current} of profile '{paths.profile}' with {new.address.hex()}?"
            if not _confirm(question):
                print("nothing changed")
                return EXIT_OK
        backup = replace_identity(paths.identity_file, new, passphrase, export_strength())
    print(f"imported identity {new.address.hex()}")
    print(_protection_line(passphrase is not None))
    if backup is not None:
        print(f"the previous identity is kept in {backup}")
    return EXIT_OK


def _current_address(path: Path) -> bytes | None:
    """The address the profile's identity file names, or None if it has none or is unreadable.

    Read without the passphrase: it only names the identity to the user and avoids a
    pointless replacement.
    """
    if not path.exists():
        return None
    try:
        return key_file_address(path)
    except KeyFileError:
        return None


def _protection_line(protected: bool) -> str:
    """How the identity is stored, said plainly: the one wording for show, import, unprotect."""
    if protected:
        return "identity protected by a passphrase"
    return (
        "identity not protected by a passphrase: anyone who can read its file can read your "
        f"messages and write as you (to protect it: {PROG} keys protect)"
    )


def _existing_identity_file(paths: ProfilePaths) -> Path:
    path = paths.identity_file
    if not path.exists():
        raise UserError(f"profile '{paths.profile}' has no identity yet ({PROG} id creates one)")
    return path


def _cmd_keys_show(args: argparse.Namespace, g: _Globals) -> int:
    paths = profile_paths(g.profile, g.data_dir)
    path = _existing_identity_file(paths)
    print(f"address: {key_file_address(path).hex()}")
    print(f"file: {path}")
    print(_protection_line(is_passphrase_protected(path)))
    for backup in unprotected_backups(path):
        print(f"warning: the backup {backup} holds a key without a passphrase")
    return EXIT_OK


def _load_for_change(paths: ProfilePaths, g: _Globals) -> tuple[Identity, bool]:
    """The profile's identity (unlocked if protected) and whether it was protected."""
    path = _existing_identity_file(paths)
    if is_passphrase_protected(path):
        return unlocker(g.passphrase)(path), True
    return read_identity_file(path), False


def _cmd_keys_protect(args: argparse.Namespace, g: _Globals) -> int:
    paths = profile_paths(g.profile, g.data_dir)
    ensure_dirs(paths)
    # The lock serializes rewrites of the identity file with `keys import` and the nodes.
    with ProfileLock(paths, "comm-tui keys protect"):
        identity, was_protected = _load_for_change(paths, g)
        passphrase = _new_passphrase(args.new_passphrase_fd, "identity")
        # One atomic replace (temp file, fsync, rename): the old or the new file, never a
        # mix. No backup of the old form is kept: the key is unchanged, and a copy under
        # no (or the old) passphrase would undo what the user asked for.
        write_identity_file(paths.identity_file, identity, passphrase, export_strength())
    done = "passphrase changed" if was_protected else "now protected by a passphrase"
    print(f"identity {identity.address.hex()}: {done}")
    for backup in unprotected_backups(paths.identity_file):
        print(
            f"warning: the backup {backup} still holds a key without a passphrase; "
            "delete it unless you need that identity"
        )
    return EXIT_OK


def _cmd_keys_unprotect(args: argparse.Namespace, g: _Globals) -> int:
    paths = profile_paths(g.profile, g.data_dir)
    ensure_dirs(paths)
    with ProfileLock(paths, "comm-tui keys unprotect"):
        identity, was_protected = _load_for_change(paths, g)
        if not was_protected:
            print(f"identity {identity.address.hex()} has no passphrase; nothing changed")
            return EXIT_OK
        if not args.yes and not _confirm(
            f"Store identity {identity.address.hex()} without a passphrase? Anyone who can "
            f"read {paths.identity_file} could then read your messages and write as you."
        ):
            print("nothing changed")
            return EXIT_OK
        write_identity_file(paths.identity_file, identity)
    print(f"identity {identity.address.hex()}: {_protection_line(False)}")
    return EXIT_OK


def _cmd_repair(args: argparse.Namespace, g: _Globals) -> int:
    paths = profile_paths(g.profile, g.data_dir)
    if not paths.database.exists():
        raise UserError(f"profile '{paths.profile}' has no database to repair")
    with ProfileLock(paths, "comm-tui repair"):
        try:
            with Database.open(paths.database) as db:
                intact = db.is_intact()
        except DatabaseDamaged:
            intact = False
        if intact:
            print(f"database {paths.database} is intact; nothing to repair")
            return EXIT_OK
        report = repair_database(paths.database)
    print(f"the damaged database is kept as {report.damaged_copy}")
    print("salvaged: " + ", ".join(f"{table} {n}" for table, n in report.copied.items()))
    if report.unreadable:
        print("not readable to the end: " + ", ".join(report.unreadable))
    return EXIT_OK


# ---------------------------------------------------------------------------- node and send


def _cmd_node(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g, lock_as="comm-tui node") as profile:
        return _run_node(profile, g, debug=args.log_level == "debug")


class _Inbox:
    """What the main thread of ``node`` and ``send`` waits on: the node's events (put by
    the node thread) and a stop asked by SIGINT or SIGTERM (put by the signal handler).

    Python runs a signal handler on the main thread at almost any point of its Python
    code, also while that thread holds a lock: inside ``queue.Queue.get`` it holds the
    queue's mutex, and a handler calling ``Queue.put`` there waits for that mutex
    forever (a headless node hung after SIGINT in CI, tests/test_relay_settings.py; the
    same holds for ``threading.Event.set``). So the handler takes no lock: it sets a bool
    and puts on a ``queue.SimpleQueue``, whose ``put`` is reentrant (its C code holds no
    lock a handler could wait on).
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[ServiceEvent | None] = queue.SimpleQueue()
        self.stop_requested = False

    def put(self, event: ServiceEvent) -> None:
        """The runner's ``on_event`` (on the node thread)."""
        self._queue.put(event)

    def request_stop(self) -> None:
        """The signal handler: safe at any bytecode of the main thread (see the class)."""
        self.stop_requested = True
        self._queue.put(None)  # wakes a wait in get()

    def get(self, timeout: float) -> ServiceEvent | None:
        """The next event, or None for a stop; raises ``queue.Empty`` after ``timeout`` s."""
        return self._queue.get(timeout=timeout)

    def drain(self) -> list[ServiceEvent]:
        """The events waiting now, without waiting (what the node said as it stopped)."""
        events: list[ServiceEvent] = []
        while not self._queue.empty():
            if (event := self._queue.get_nowait()) is not None:
                events.append(event)
        return events


@contextlib.contextmanager
def _stop_signals(inbox: _Inbox) -> Iterator[None]:
    """SIGINT and SIGTERM ask for a clean shutdown while the block runs.

    The node runs on its own thread (comm_tui/net/runner.py); the main thread, which
    Python delivers signals to, only waits on ``inbox``, so a handler that asks the inbox
    to stop is enough, and the node flushes and closes in ``NodeRunner.join``. The
    handler is installed before the node starts: a signal at any moment of its start-up
    is kept and stops it once it is bound. (Before that, while the profile opens or a
    passphrase is asked, SIGINT is Python's KeyboardInterrupt: exit code 130.)
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {
        signum: signal.signal(signum, lambda *_: inbox.request_stop()) for signum in signals
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _NodeLog:
    """What a running node says: one timestamped line on stdout, and in its log file."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger

    def __call__(self, line: str) -> None:
        print(f"{_now_text()} {line}", flush=True)
        if self.logger is not None:
            self.logger.info(line)


def _text_ref(row: HistoryRow) -> str:
    """How the node's output names a text: its id (as ``history --json`` shows it) and
    size, never its content, which stays in the database only."""
    return f"text {row.text_id.hex()} ({len(row.text.encode('utf-8', 'surrogatepass'))} bytes)"


def _log_event(log: _NodeLog, db: Database, event: ServiceEvent) -> None:
    """One line for an event the node reported; run on the main thread, which owns ``db``."""
    if isinstance(event, IncomingText):
        row = event.row
        log(f"from {_display_name(db, row.peer_address)}: received {_text_ref(row)}")
    elif isinstance(event, OutgoingUpdated):
        row = event.row
        log(f"to {_display_name(db, row.peer_address)}: {row.state}: {_text_ref(row)}")
    elif isinstance(event, NoticeAdded):
        # Our own words about the session (docs/PROTOCOL.md, "Session reset"), no text.
        log(f"{_display_name(db, event.row.peer_address)}: {event.row.text}")
    elif isinstance(event, PortMappingChanged):
        log(f"port mapping: {_port_mapping_text(event)}")


def _port_mapping_text(event: PortMappingChanged) -> str:
    """docs/PROTOCOL.md, "14. Port mapping": what the user is told about the router."""
    if event.mapping is not None:
        return event.mapping.describe()
    # The reason may quote the router's own words (a UPnP error description): any text,
    # escaped like a peer's, so it can neither forge a log line nor drive the terminal.
    return "removed" if event.why == "removed" else f"none ({_one_line(event.why)})"


def _stats_line(service: NodeService) -> str:
    status = service.node.status()
    stats = status.stats
    rejected = " ".join(f"{reason}={n}" for reason, n in sorted(stats.rejected.items()))
    return (
        f"stats: state={status.state} peers={status.peers} stored_items={status.stored_items}"
        f" in={stats.datagrams_in}/{stats.bytes_in}B out={stats.datagrams_out}/{stats.bytes_out}B"
        f" relayed={stats.messages_relayed} acks_seen={stats.acks_seen}"
        f" received={stats.texts_received} delivered={stats.texts_delivered}"
        f" expired={stats.expired} rejected={stats.rejected_total}"
        + (f" ({rejected})" if rejected else "")
        + _reach_text(service.node)
        + _relay_text(status.relay_usage)
        + _requests_text(service.db.requests)
    )


def _requests_text(requests: Mapping[RequestOutcome, int]) -> str:
    """docs/PROTOCOL.md, "7.1", "Message requests": strangers' texts not kept (acknowledged
    all the same) and those removed to bound requests, since start; never their words."""
    return (
        f" requests_dropped={requests.get('dropped', 0)}"
        f" requests_evicted={requests.get('evicted_text', 0)}"
        f"/{requests.get('evicted_conversation', 0)}conv"
    )


def _relay_text(usage: RelayUsage) -> str:
    """docs/PROTOCOL.md, "8.1 Local caps": use against each cap, the networks of origin
    holding the most, what each cap refused, and what waits in the bandwidth's lines."""
    origins = ",".join(
        f"{net}:{100 * held // max(1, usage.bytes_held)}%" for net, held in usage.origins
    )
    refused = " ".join(f"{cap.replace(' ', '_')}={n}" for cap, n in usage.refused)
    waiting = ",".join(f"{net}:{items}" for net, items in usage.waiting_top)
    return (
        f" relay={'on' if usage.relaying else 'off'}"
        f" relay_bytes={usage.bytes_held}/{usage.bytes_cap}"
        f" relay_items={usage.items_held}/{usage.items_cap}"
        f" relay_days={usage.days_cap:g}"
        f" relay_sent={usage.sent_bytes}B relay_bandwidth={usage.bandwidth_cap}B/s"
        f" relay_deferred={usage.deferred}"
        f" relay_waiting={usage.waiting} relay_waiting_networks={usage.waiting_networks}"
        + (f" waiting_top={waiting}" if waiting else "")
        + (f" origins={origins}" if origins else "")
        + f" refused_by_cap=({refused})"
    )


def _reach_text(node: Node) -> str:
    """docs/PROTOCOL.md, "12": kind, public endpoint, client mode and keep-alive interval."""
    reach = node.reachability
    public = "unknown"
    if reach.public_endpoint is not None:
        host, port = reach.public_endpoint
        public = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    interval = node.keepalive_interval
    return (
        f" reachability={reach.kind} public={public} client={'yes' if node.client_mode else 'no'}"
        + (f" keepalive={interval:.0f}s" if interval is not None else "")
    )


def _start_lines(service: NodeService, profile: Profile) -> list[str]:
    """What the node says once it is bound (taken on the node thread: it reads the node)."""
    lines = [
        f"node of profile '{profile.paths.profile}' listening"
        f" {_endpoint_text(service.bound or service.listen)}"
        f" address {profile.identity.address.hex()}",
        f"card: {service.publish_card()}",
    ]
    if not profile.config.port_mapping:
        lines.append("port mapping: off (port_mapping = false in the config)")
    elif service.port_mapper is None:
        host = (service.bound or service.listen)[0]
        lines.append(f"port mapping: off (listening on {host}: no router forwards there)")
    return lines


def _run_node(profile: Profile, g: _Globals, *, debug: bool = False) -> int:
    """``comm-tui node``: run the profile's node until SIGINT/SIGTERM or a disk failure.

    The node runs on a NodeRunner's thread; this thread logs its events (with names read
    from the profile's own database connection) and a stats line every minute.
    """
    logger = file_logger(profile.paths, "node", debug=debug)
    log = _NodeLog(logger)
    inbox = _Inbox()
    runner = NodeRunner(node_starter(profile, g.listen, g.bootstrap), inbox.put, name="node")
    failures: list[str] = []
    with _stop_signals(inbox):
        try:
            runner.start().result()
            for line in _on_node(runner, lambda service: _start_lines(service, profile)):
                log(line)
            # A node runs for days: it says its notices at start, in its log, not at exit.
            for notice in g.notices:
                log(notice)
            g.notices.clear()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    f"debug log: bootstrap {profile.config.bootstrap}, lan discovery"
                    f" {profile.config.lan_discovery}, data in {profile.paths.root}"
                )
            damaged = _on_node(runner, lambda service: service.damaged_entries)
            if damaged:
                log(f"skipped {damaged} damaged relay-store entries")
            next_stats = time.monotonic() + NODE_STATS_INTERVAL_S
            while not (inbox.stop_requested or failures):
                try:
                    event = inbox.get(timeout=max(0.0, next_stats - time.monotonic()))
                except queue.Empty:
                    log(_on_node(runner, _stats_line))
                    next_stats += NODE_STATS_INTERVAL_S
                    continue
                if event is not None:
                    _log_event(log, profile.db, event)
                if isinstance(event, NodeFailed):
                    failures.append(event.message)
            log(_on_node(runner, _stats_line))
        finally:
            stopped = runner.join()
            for event in inbox.drain():  # what the node said as it stopped (a port unmapped)
                _log_event(log, profile.db, event)
    if failures:
        raise StorageError(failures[0])
    if not stopped:
        raise StorageError(f"the node did not stop within {STOP_TIMEOUT_S:g} s")
    log("stopped")
    return EXIT_OK


def _on_node(runner: NodeRunner, read: Callable[[NodeService], T]) -> T:
    """A read-out taken on the node thread, waited for here (the CLI has no screen)."""
    return runner.submit(read).result(STOP_TIMEOUT_S)


def _cmd_send(args: argparse.Namespace, g: _Globals) -> int:
    text: str = sys.stdin.read() if args.text == "-" else args.text
    if args.text == "-":
        text = text.removesuffix("\n")
    if not text:
        raise UserError("the text is empty: nothing to send")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise UserError(f"the text is {size} bytes; the limit is {MAX_TEXT_BYTES}")
    # A bad card is refused before the profile is touched; a good one's hints are tried.
    hints = read_card(args.to).hints if looks_like_card(args.to) else ()
    with _open(g, lock_as="comm-tui send") as profile:
        peer = _resolve_peer(profile.db, args.to)
        if peer.key is None:
            raise UserError(f"no key known for {peer.label}: add them as a contact with their card")
        if peer.key == profile.identity.key:
            raise UserError("cannot send a text to this profile's own identity")
        recipient = PublicIdentity(peer.key)
        return _send(profile, g, recipient, peer.label, text, args.wait, hints)


def _send(
    profile: Profile,
    g: _Globals,
    recipient: PublicIdentity,
    label: str,
    text: str,
    wait_s: float | None,
    hints: tuple[tuple[str, int], ...] = (),
) -> int:
    """Run a node until the text reaches the wanted state, the time is up, or a signal."""
    inbox = _Inbox()
    # docs/PROTOCOL.md, "14. Port mapping": a one-shot send asks no router.
    starter = node_starter(profile, g.listen, g.bootstrap, map_port=False)
    runner = NodeRunner(starter, inbox.put, name="send")
    with _stop_signals(inbox):
        try:
            runner.start().result()
            if hints:
                runner.contact_added(recipient.key, hints).result(STOP_TIMEOUT_S)
            try:
                # Returns once the text is committed: from here a crash loses nothing.
                row = runner.send_text(recipient, text).result(STOP_TIMEOUT_S)
            except ValueError as err:
                raise UserError(str(err)) from None
            wanted = ("delivered",) if wait_s is not None else ("sent", "delivered")
            timeout_s = wait_s if wait_s is not None else SEND_HANDOFF_TIMEOUT_S
            deadline = time.monotonic() + timeout_s
            state = row.state
            while True:
                remaining = deadline - time.monotonic()
                if state in wanted or state == "expired" or inbox.stop_requested or remaining <= 0:
                    break
                with contextlib.suppress(queue.Empty):
                    event = inbox.get(timeout=remaining)
                    if isinstance(event, OutgoingUpdated) and event.row.text_id == row.text_id:
                        state = event.row.state
            alone, tried_endpoints = _on_node(
                runner, lambda service: (service.node.peer_count == 0, service.bootstrap_endpoints)
            )
        finally:
            runner.join()
    if state in wanted:
        print(f"{state} to {label}", flush=True)
        return EXIT_OK
    stays = "the text stays in the outbox and is sent again whenever a node runs on this profile"
    if state == "expired":
        print(f"{PROG}: the text to {label} expired undelivered", file=sys.stderr)
        return EXIT_GAVE_UP
    if inbox.stop_requested:
        print(f"{PROG}: interrupted (state: {state}); {stays}", file=sys.stderr)
        return EXIT_INTERRUPTED
    goal = "delivered" if wait_s is not None else "handed to any node"
    why = ""
    if alone:
        tried = ", ".join(f"{host}:{port}" for host, port in tried_endpoints)
        why = f"; no node answered at {tried}" if tried else "; no node known: pass --bootstrap"
    print(
        f"{PROG}: not {goal} within {timeout_s:g} s (state: {state}{why}); {stays}",
        file=sys.stderr,
    )
    return EXIT_GAVE_UP
