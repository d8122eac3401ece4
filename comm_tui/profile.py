"""Opening a profile: its directories, identity, database, config and lock.

Every entry point (the app, ``node``, ``send``, the read-only commands) opens a
profile through here, so they agree on where things live, which commands take the
profile lock, and how listen and bootstrap flags are merged into the config.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import PassphraseRequired, load_or_create_identity
from comm_tui.net.discovery import LocalDirectory
from comm_tui.net.lan import LanOptions
from comm_tui.net.portmap import PortMapper
from comm_tui.net.runner import ServiceStarter
from comm_tui.net.service import NodeService
from comm_tui.protocol.node import NodeConfig
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.config import Config, load_config, parse_endpoint, save_config
from comm_tui.store.db import Database
from comm_tui.store.lock import ProfileLock
from comm_tui.store.paths import ProfilePaths, ensure_dirs, profile_paths
from comm_tui.unlock import Unlock

DEFAULT_PORT = 7400
KIB = 1024
MIB = 1024 * 1024


@dataclass
class Profile:
    paths: ProfilePaths
    identity: Identity
    db: Database
    config: Config
    created: bool
    lock: ProfileLock | None = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.db.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Profile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_profile(
    profile: str = "default",
    data_dir: Path | None = None,
    *,
    lock_as: str | None = None,
    unlock: Unlock | None = None,
) -> Profile:
    """Open (creating on first use) a profile; ``lock_as`` takes the node lock.

    A passphrase-protected identity is opened by ``unlock`` (see comm_tui.unlock), after
    the lock is taken and before the database is opened, so a wrong passphrase leaves
    everything as it was. Without ``unlock`` a protected identity raises
    PassphraseRequired. A new identity is created unprotected (``created`` says so;
    callers tell the user how to protect it).

    Raises UserError subclasses with one line for the user: a locked profile, an
    unwritable directory, a damaged database, a wrong passphrase.
    """
    paths = profile_paths(profile, data_dir)
    ensure_dirs(paths)
    lock = None
    if lock_as is not None:
        lock = ProfileLock(paths, lock_as)
        lock.acquire()
    try:
        config = load_config(paths.config_file)
        try:
            identity, created = load_or_create_identity(paths.identity_file)
        except PassphraseRequired:
            if unlock is None:
                raise
            identity, created = unlock(paths.identity_file), False
        db = Database.open(paths.database)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return Profile(paths, identity, db, config, created, lock)


def default_listen_host() -> str:
    """``::``, one socket for IPv6 and IPv4 (docs/PROTOCOL.md, "13.4 Dual stack"), where
    the host has IPv6; ``0.0.0.0`` where it has not (IPv6 disabled, or v6-only sockets)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
    except OSError:
        return "0.0.0.0"
    return "::"


def network_settings(
    profile: Profile, listen: str | None, bootstrap: list[str] | None, *, save: bool = True
) -> tuple[Endpoint, list[Endpoint], bool]:
    """Merge flags with the config and remember the flags for the next run.

    Returns (listen, bootstrap, listen_is_default). Flags win over the config, and
    given flags are saved (unless ``save`` is false: ``start_service`` saves them only
    once the port is bound, so a refused start writes nothing), so a second run needs none.
    """
    changed = False
    if listen is not None:
        parse_endpoint(listen, allow_port_zero=True)
        if profile.config.listen != listen:
            profile.config.listen = listen
            changed = True
    if bootstrap:
        for text in bootstrap:
            parse_endpoint(text)
        merged = list(dict.fromkeys([*bootstrap, *profile.config.bootstrap]))
        if merged != profile.config.bootstrap:
            profile.config.bootstrap = merged
            changed = True
    if changed and save:
        save_config(profile.paths.config_file, profile.config)
    chosen = profile.config.listen
    endpoint = (
        parse_endpoint(chosen, allow_port_zero=True)
        if chosen
        else (default_listen_host(), DEFAULT_PORT)
    )
    return endpoint, [parse_endpoint(b) for b in profile.config.bootstrap], chosen is None


def node_config(config: Config, base: NodeConfig | None = None) -> NodeConfig:
    """``base`` (default: a real node's) with the relay settings of the profile's config
    (docs/PROTOCOL.md, "8.1 Local caps" and "12.3")."""
    return replace(
        base or NodeConfig(),
        relay=config.relay,
        store_total_bytes=config.relay_store_mb * MIB,
        store_max_items=config.relay_store_items,
        store_max_days=float(config.relay_store_days),
        relay_bandwidth_bytes_s=config.relay_bandwidth_kib_s * KIB,
    )


def make_service(
    profile: Profile,
    listen: str | None = None,
    bootstrap: list[str] | None = None,
    *,
    config: NodeConfig | None = None,
    save: bool = True,
    map_port: bool = True,
    db: Database | None = None,
) -> tuple[NodeService, bool]:
    """A NodeService for this profile; the flag says the listen address is the default.

    With the default address the caller should fall back to any free port if the
    default port is taken (see ``start_service``). ``map_port`` false: no port mapping
    whatever the config says (a node that lives seconds would remove it as it is made).
    ``db``: the service's own connection to the profile's database, for a node on a
    thread of its own (comm_tui/net/runner.py: SQLite connections stay on their thread);
    by default the profile's.
    """
    endpoint, bootstrap_endpoints, default = network_settings(profile, listen, bootstrap, save=save)
    discovery = LocalDirectory(profile.paths.runtime_dir) if profile.config.lan_discovery else None
    service = NodeService(
        profile.identity,
        db if db is not None else profile.db,
        listen=endpoint,
        bootstrap=bootstrap_endpoints,
        discovery=discovery,
        config=node_config(profile.config, config),
        lan=LanOptions() if profile.config.lan_discovery else None,
        test_networks=profile.config.test_networks,
        port_mapper=PortMapper if map_port and profile.config.port_mapping else None,
        display_name=profile.config.nickname,
    )
    return service, default


async def start_service(
    profile: Profile,
    listen: str | None = None,
    bootstrap: list[str] | None = None,
    *,
    config: NodeConfig | None = None,
    map_port: bool = True,
    db: Database | None = None,
) -> NodeService:
    """Create and start the profile's node, falling back from the default port if taken.

    ``db`` as for ``make_service``."""
    from comm_tui.errors import UserError

    service, default = make_service(
        profile, listen, bootstrap, config=config, save=False, map_port=map_port, db=db
    )
    try:
        await service.start()
    except UserError:
        if not default:
            raise
        service.listen = (service.listen[0], 0)
        await service.start()
    if listen is not None or bootstrap:
        try:
            save_config(profile.paths.config_file, profile.config)
        except BaseException:
            await service.stop()
            raise
    return service


def node_starter(
    profile: Profile,
    listen: str | None = None,
    bootstrap: list[str] | None = None,
    *,
    map_port: bool = True,
) -> ServiceStarter:
    """How a NodeRunner starts this profile's node, on its own thread.

    The node gets its own connection to the profile's database, opened there and closed
    after the node stops (SQLite connections stay on the thread that opened them); the
    profile's connection stays with the caller, for its reads.
    """

    async def start(stack: contextlib.AsyncExitStack) -> NodeService:
        db = Database.open(profile.paths.database)
        stack.callback(db.close)
        return await start_service(profile, listen, bootstrap, map_port=map_port, db=db)

    return start
