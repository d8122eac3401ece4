"""The ``comm-tui`` command: the TUI by default, and scriptable subcommands.

Every subcommand takes ``--profile`` and ``--data-dir``. Commands that run a node
(the TUI, ``node``, ``send``, ``keys import``) take the profile lock; the others
only read or make small database writes, which SQLite's WAL mode lets them do
while a node runs. Errors the user can cause arrive as :class:`UserError` and are
turned into one line on stderr and exit code 2 in :func:`main`, nowhere else.

Exit codes: 0 success, 2 bad input or unusable profile, 3 ``send`` gave up
waiting (the text stays in the outbox), 130 interrupted at a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comm_tui import __version__
from comm_tui.crypto.card import decode_card, encode_card, looks_like_card
from comm_tui.crypto.identity import ADDRESS_BYTES, Identity, PublicIdentity
from comm_tui.crypto.keyfile import (
    FAST_KDF_ENV,
    export_strength,
    is_passphrase_protected,
    read_identity_file,
    replace_identity,
    write_identity_file,
)
from comm_tui.errors import KeyFileError, StorageError, UserError
from comm_tui.logs import file_logger
from comm_tui.net.service import (
    IncomingText,
    NodeFailed,
    NodeService,
    NoticeAdded,
    OutgoingUpdated,
    ServiceEvent,
)
from comm_tui.profile import Profile, open_profile, start_service
from comm_tui.protocol.letters import MAX_TEXT_BYTES
from comm_tui.store.db import Database, DatabaseDamaged, HistoryRow
from comm_tui.store.lock import ProfileLock
from comm_tui.store.paths import DEFAULT_PROFILE, ensure_dirs, profile_paths
from comm_tui.store.repair import repair_database

PROG = "comm-tui"
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_GAVE_UP = 3
EXIT_INTERRUPTED = 130
# Without --wait, `send` waits this long for a node to take the text.
SEND_HANDOFF_TIMEOUT_S = 10.0
NODE_STATS_INTERVAL_S = 60.0
HISTORY_DEFAULT_LIMIT = 100
CONVERSATION_PREVIEW_CHARS = 60
# Tests set this to make key export cheap; real key files must use the default strength.

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
    cmd.set_defaults(handler=_cmd_id)

    cmd = commands.add_parser(
        "node", parents=[common, network], help="run a headless node until SIGINT/SIGTERM"
    )
    cmd.set_defaults(handler=_cmd_node)

    cmd = commands.add_parser("contacts", parents=[common], help="manage contacts")
    contacts = cmd.add_subparsers(title="actions", metavar="ACTION", required=True)
    sub = contacts.add_parser("add", parents=[common], help="add a contact from their card")
    sub.add_argument("name")
    sub.add_argument("card")
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

    cmd = commands.add_parser(
        "send",
        parents=[common, network],
        help="send a text; exit 0 once a node holds it (or, with --wait, once delivered)",
    )
    cmd.add_argument("to", metavar="TO", help="contact name or card")
    cmd.add_argument("text", metavar="TEXT")
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
        "conversations", parents=[common], help="list conversations with unread counts"
    )
    cmd.add_argument("--json", action="store_true", help="print a JSON array")
    cmd.set_defaults(handler=_cmd_conversations)

    cmd = commands.add_parser(
        "keys",
        parents=[common],
        help="export or import this profile's identity",
        epilog=f"For tests only: {FAST_KDF_ENV}=1 makes export use the weakest key "
        "derivation, so that tests run fast. Never set it for a key you keep.",
    )
    keys = cmd.add_subparsers(title="actions", metavar="ACTION", required=True)
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


def _globals(args: argparse.Namespace) -> _Globals:
    data_dir: Path | None = getattr(args, "data_dir", None)
    return _Globals(
        profile=getattr(args, "profile", DEFAULT_PROFILE),
        data_dir=data_dir.expanduser() if data_dir is not None else None,
        listen=getattr(args, "listen", None),
        bootstrap=list(getattr(args, "bootstrap", [])),
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; UserError becomes one line on stderr and exit code 2."""
    args = _build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, _Globals], int] = args.handler
    try:
        return handler(args, _globals(args))
    except UserError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, EOFError):
        # Ctrl-C or Ctrl-D at a prompt; a running node handles SIGINT itself.
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------------- helpers


def _open(g: _Globals, *, lock_as: str | None = None) -> Profile:
    return open_profile(g.profile, g.data_dir, lock_as=lock_as)


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
    )


def _cmd_id(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        print(f"address: {profile.identity.address.hex()}")
        print(f"card: {encode_card(profile.identity.public)}")
    return EXIT_OK


def _cmd_contacts_add(args: argparse.Namespace, g: _Globals) -> int:
    public = decode_card(args.card)
    with _open(g) as profile:
        if public.key == profile.identity.key:
            raise UserError("that is this profile's own card")
        contact = profile.db.add_contact(args.name, public.key, public.address, time.time())
    print(f"added {contact.name} ({contact.address.hex()})")
    return EXIT_OK


def _cmd_contacts_list(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        for contact in profile.db.contacts():
            card = encode_card(PublicIdentity(contact.key))
            print(f"{contact.name}\t{contact.address.hex()}\t{card}")
    return EXIT_OK


def _cmd_contacts_remove(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        profile.db.remove_contact(args.name)
    print(f"removed {args.name}")
    return EXIT_OK


def _cmd_contacts_rename(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        contact = profile.db.rename_contact(args.old, args.new)
    print(f"renamed {args.old} to {contact.name}")
    return EXIT_OK


def _history_json(profile: Profile, peer: _Peer, row: HistoryRow) -> dict[str, Any]:
    me = profile.identity.address.hex()
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
        "id": row.text_id.hex(),
    }


def _cmd_history(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        peer = _resolve_peer(profile.db, args.who)
        rows = profile.db.history(peer.address, limit=args.limit)
        if args.json:
            json.dump([_history_json(profile, peer, row) for row in rows], sys.stdout, indent=2)
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


def _cmd_conversations(args: argparse.Namespace, g: _Globals) -> int:
    with _open(g) as profile:
        conversations = profile.db.conversations()
    if args.json:
        items = [
            {
                "name": c.name,
                "address": c.peer_address.hex(),
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
        when = "-" if c.last_time is None else _iso(c.last_time)
        preview = _one_line(c.last_text or "")[:CONVERSATION_PREVIEW_CHARS]
        print(f"{label}\tunread {c.unread}\t{when}\t{preview}")
    return EXIT_OK


def _cmd_keys_export(args: argparse.Namespace, g: _Globals) -> int:
    target: Path = args.file
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} already exists: choose another file name")
    if args.passphrase_file is not None:
        passphrase = _read_passphrase_file(args.passphrase_file)
    else:
        passphrase = _prompt_passphrase("Passphrase for the exported key: ")
        if _prompt_passphrase("Repeat the passphrase: ") != passphrase:
            raise UserError("the passphrases do not match; nothing was written")
    if not passphrase:
        raise UserError("the passphrase is empty; nothing was written")
    with _open(g) as profile:
        write_identity_file(target, profile.identity, passphrase, export_strength())
        address = profile.identity.address.hex()
    print(f"exported identity {address} to {target}")
    return EXIT_OK


def _cmd_keys_import(args: argparse.Namespace, g: _Globals) -> int:
    source: Path = args.file
    # Read and check the file before touching the profile: a bad file changes nothing.
    passphrase: bytes | None = None
    if is_passphrase_protected(source):
        if args.passphrase_file is not None:
            passphrase = _read_passphrase_file(args.passphrase_file)
        else:
            passphrase = _prompt_passphrase(f"Passphrase for {source}: ")
    new = read_identity_file(source, passphrase)
    paths = profile_paths(g.profile, g.data_dir)
    ensure_dirs(paths)
    # The profile's identity file is replaced directly, without opening the profile, so that
    # importing also repairs a profile whose own key file is damaged.
    with ProfileLock(paths, "comm-tui keys import"):
        old = _current_identity(paths.identity_file)
        if old is not None and old.key == new.key:
            print(f"identity {new.address.hex()} is already this profile's; nothing changed")
            return EXIT_OK
        if not args.yes:
            current = "no identity" if old is None else f"identity {old.address.hex()}"
            question = f"Replace {current} of profile '{paths.profile}' with {new.address.hex()}?"
            if not _confirm(question):
                print("nothing changed")
                return EXIT_OK
        backup = replace_identity(paths.identity_file, new)
    print(f"imported identity {new.address.hex()}")
    if backup is not None:
        print(f"the previous identity is kept in {backup}")
    return EXIT_OK


def _current_identity(path: Path) -> Identity | None:
    """The identity the profile has now, or None if it has none or it cannot be read."""
    if not path.exists():
        return None
    try:
        return read_identity_file(path)
    except KeyFileError:
        return None


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
        return asyncio.run(_run_node(profile, g))


def _install_stop_signals(on_signal: Callable[[], None]) -> Callable[[], None]:
    """SIGINT and SIGTERM ask for a clean shutdown; returns a function to undo that."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal)

    def remove() -> None:
        for signum in signals:
            loop.remove_signal_handler(signum)

    return remove


_node_log: logging.Logger | None = None


def _log(line: str) -> None:
    print(f"{_now_text()} {line}", flush=True)
    if _node_log is not None:
        _node_log.info(line)


def _event_logger(db: Database) -> Callable[[ServiceEvent], None]:
    def log_event(event: ServiceEvent) -> None:
        if isinstance(event, IncomingText):
            row = event.row
            _log(f"from {_display_name(db, row.peer_address)}: {_one_line(row.text)}")
        elif isinstance(event, OutgoingUpdated):
            row = event.row
            name = _display_name(db, row.peer_address)
            _log(f"to {name}: {row.state}: {_one_line(row.text)}")
        elif isinstance(event, NoticeAdded):
            _log(f"{_display_name(db, event.row.peer_address)}: {event.row.text}")

    return log_event


def _stats_line(service: NodeService) -> str:
    node = service.node
    stats = node.stats
    rejected = " ".join(f"{reason}={n}" for reason, n in sorted(stats.rejected.items()))
    return (
        f"stats: state={node.state} peers={len(node.table)} stored_items={len(node.store)}"
        f" in={stats.datagrams_in}/{stats.bytes_in}B out={stats.datagrams_out}/{stats.bytes_out}B"
        f" relayed={stats.messages_relayed} acks_seen={stats.acks_seen}"
        f" received={stats.texts_received} delivered={stats.texts_delivered}"
        f" expired={stats.expired} rejected={stats.rejected_total}"
        + (f" ({rejected})" if rejected else "")
    )


async def _run_node(profile: Profile, g: _Globals) -> int:
    global _node_log
    _node_log = file_logger(profile.paths, "node")
    stop = asyncio.Event()
    remove_signals = _install_stop_signals(stop.set)
    try:
        service = await start_service(profile, g.listen, g.bootstrap)
        failures: list[str] = []

        def on_failure(event: ServiceEvent) -> None:
            if isinstance(event, NodeFailed):
                failures.append(event.message)
                stop.set()

        try:
            service.subscribe(_event_logger(profile.db))
            service.subscribe(on_failure)
            host, port = service.bound or service.listen
            _log(
                f"node of profile '{profile.paths.profile}' listening {host}:{port}"
                f" address {profile.identity.address.hex()}"
            )
            _log(f"card: {encode_card(profile.identity.public)}")
            if service.damaged_entries:
                _log(f"skipped {service.damaged_entries} damaged relay-store entries")
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), NODE_STATS_INTERVAL_S)
                    break
                _log(_stats_line(service))
            _log(_stats_line(service))
        finally:
            await service.stop()
    finally:
        remove_signals()
    if failures:
        raise StorageError(failures[0])
    _log("stopped")
    return EXIT_OK


def _cmd_send(args: argparse.Namespace, g: _Globals) -> int:
    text: str = args.text
    if not text:
        raise UserError("the text is empty: nothing to send")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise UserError(f"the text is {size} bytes; the limit is {MAX_TEXT_BYTES}")
    if looks_like_card(args.to):
        decode_card(args.to)  # a bad card is refused before the profile is touched
    with _open(g, lock_as="comm-tui send") as profile:
        peer = _resolve_peer(profile.db, args.to)
        if peer.key is None:
            raise UserError(f"no key known for {peer.label}: add them as a contact with their card")
        if peer.key == profile.identity.key:
            raise UserError("cannot send a text to this profile's own identity")
        recipient = PublicIdentity(peer.key)
        return asyncio.run(_send(profile, g, recipient, peer.label, text, args.wait))


async def _send(
    profile: Profile,
    g: _Globals,
    recipient: PublicIdentity,
    label: str,
    text: str,
    wait_s: float | None,
) -> int:
    """Run a node until the text reaches the wanted state, the time is up, or a signal."""
    wake = asyncio.Event()
    interrupted = asyncio.Event()
    states: dict[bytes, str] = {}

    def on_signal() -> None:
        interrupted.set()
        wake.set()

    def on_event(event: ServiceEvent) -> None:
        if isinstance(event, OutgoingUpdated):
            states[event.row.text_id] = event.row.state
            wake.set()

    remove_signals = _install_stop_signals(on_signal)
    try:
        service = await start_service(profile, g.listen, g.bootstrap)
        try:
            service.subscribe(on_event)
            try:
                row = service.send_text(recipient, text)
            except ValueError as err:
                raise UserError(str(err)) from None
            wanted = ("delivered",) if wait_s is not None else ("sent", "delivered")
            timeout_s = wait_s if wait_s is not None else SEND_HANDOFF_TIMEOUT_S
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            state = row.state
            while True:
                state = states.get(row.text_id, state)
                remaining = deadline - loop.time()
                if state in wanted or state == "expired" or interrupted.is_set() or remaining <= 0:
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
            alone = len(service.node.table) == 0
        finally:
            await service.stop()
    finally:
        remove_signals()
    if state in wanted:
        print(f"{state} to {label}", flush=True)
        return EXIT_OK
    stays = "the text stays in the outbox and is sent again whenever a node runs on this profile"
    if state == "expired":
        print(f"{PROG}: the text to {label} expired undelivered", file=sys.stderr)
        return EXIT_GAVE_UP
    if interrupted.is_set():
        print(f"{PROG}: interrupted (state: {state}); {stays}", file=sys.stderr)
        return EXIT_INTERRUPTED
    goal = "delivered" if wait_s is not None else "handed to any node"
    why = ""
    if alone:
        tried = ", ".join(f"{host}:{port}" for host, port in service.bootstrap_endpoints)
        why = f"; no node answered at {tried}" if tried else "; no node known: pass --bootstrap"
    print(
        f"{PROG}: not {goal} within {timeout_s:g} s (state: {state}{why}); {stays}",
        file=sys.stderr,
    )
    return EXIT_GAVE_UP
