"""A profile's settings file (TOML): listen address, bootstrap nodes, nickname, LAN discovery,
port mapping, whether the app draws with ASCII alone, how it notifies, and whether and how
much it relays for others.

The file is meant to be edited by hand as well as by the app, so reading it names the file
and the exact problem, and unknown keys are refused rather than silently ignored (a typo
would otherwise look like a setting that does nothing). Writing goes through a temporary
file and ``os.replace`` so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from comm_tui.errors import StorageError, UserError

DEFAULT_LISTEN_HOST = "0.0.0.0"
NOTIFICATION_MODES = ("auto", "desktop", "bell", "off")
MAX_PORT = 65535
MAX_HOSTNAME_CHARS = 253
# docs/PROTOCOL.md, "8.1 Local caps": defaults and the bounds a value must keep to.
# 64 MiB and 50,000 items: the store's size before the caps were settable, and about as
# many items of the largest kind (1.3 KB each) as that holds. 7 days: the TTL, so no
# cap. 256 KiB/s: a relay's share on a home uplink that leaves room for the user's own.
DEFAULT_RELAY_STORE_MB = 64
DEFAULT_RELAY_STORE_ITEMS = 50_000
DEFAULT_RELAY_STORE_DAYS = 7
DEFAULT_RELAY_BANDWIDTH_KIB_S = 256
MAX_RELAY_STORE_MB = 1024 * 1024  # 1 TiB
MAX_RELAY_STORE_ITEMS = 100_000_000
MAX_RELAY_STORE_DAYS = 7  # the protocol's TTL: a longer cap would mean nothing
MAX_RELAY_BANDWIDTH_KIB_S = 10 * 1024 * 1024  # 10 GiB/s
# The bandwidth cap's first key. Its name said kilobits while it always meant KiB/s (8.192
# times more): still read, with that meaning (what the documentation said, so what users
# wrote), and a notice; written back under the new key.
OLD_RELAY_BANDWIDTH_KEY = "relay_bandwidth_kbps"

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


@dataclass
class Config:
    """The settings of one profile; a missing file means all defaults."""

    listen: str | None = None
    bootstrap: list[str] = field(default_factory=list)
    nickname: str | None = None
    lan_discovery: bool = True
    # Ask the router to forward our UDP port (docs/PROTOCOL.md, "14. Port mapping").
    port_mapping: bool = True
    # Treat the benchmarking ranges (198.18.0.0/15, 2001:2::/48) as public addresses, for
    # the card's endpoint hints: only emulated networks (tests) use them.
    test_networks: bool = False
    # None: detect whether the terminal can draw the marks (app.format.ascii_only).
    ascii: bool | None = None
    # A text arriving in a conversation that is not open: "auto" (a desktop notification
    # where the terminal shows one, else the bell), "desktop", "bell" or "off".
    notifications: str = "auto"
    # docs/PROTOCOL.md, "12.3": false makes the node a client (it stores and forwards
    # nothing for others; its own texts still go through others).
    relay: bool = True
    # docs/PROTOCOL.md, "8.1 Local caps": what we hold for others (MiB, items, the longest
    # remaining life in days) and what we send on their behalf (KiB per second).
    relay_store_mb: int = DEFAULT_RELAY_STORE_MB
    relay_store_items: int = DEFAULT_RELAY_STORE_ITEMS
    relay_store_days: float = DEFAULT_RELAY_STORE_DAYS
    relay_bandwidth_kib_s: int = DEFAULT_RELAY_BANDWIDTH_KIB_S
    # One line each about what the file says that still works but should change (an old
    # key); shown by the command or the app that read it, never written to the file.
    notices: list[str] = field(default_factory=list, compare=False)


def load_config(path: Path) -> Config:
    """Read ``path``; raise :class:`UserError` naming the file if it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as err:
        raise StorageError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"config file {path} is not UTF-8 text: {err.reason}") from err
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from err

    config = Config()
    for key, value in data.items():
        if key == "listen":
            config.listen = _string(path, key, value)
            _check_endpoint(path, key, config.listen, allow_port_zero=True)
        elif key == "bootstrap":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"config file {path}: 'bootstrap' must be a list of strings")
            for endpoint in value:
                _check_endpoint(path, key, endpoint, allow_port_zero=False)
            config.bootstrap = list(value)
        elif key == "nickname":
            config.nickname = _string(path, key, value)
        elif key == "lan_discovery":
            config.lan_discovery = _bool(path, key, value)
        elif key == "port_mapping":
            config.port_mapping = _bool(path, key, value)
        elif key == "test_networks":
            config.test_networks = _bool(path, key, value)
        elif key == "ascii":
            config.ascii = _bool(path, key, value)
        elif key == "notifications":
            if value not in NOTIFICATION_MODES:
                modes = ", ".join(NOTIFICATION_MODES)
                raise UserError(f"config file {path}: 'notifications' must be one of {modes}")
            config.notifications = value
        elif key == "relay":
            config.relay = _bool(path, key, value)
        elif key == "relay_store_mb":
            config.relay_store_mb = _whole(path, key, value, MAX_RELAY_STORE_MB, "MiB")
        elif key == "relay_store_items":
            config.relay_store_items = _whole(path, key, value, MAX_RELAY_STORE_ITEMS, "items")
        elif key == "relay_store_days":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= MAX_RELAY_STORE_DAYS
            ):
                raise UserError(
                    f"config file {path}: 'relay_store_days' must be a number of days above 0"
                    f" and at most {MAX_RELAY_STORE_DAYS} (the time to live of a message)"
                )
            config.relay_store_days = value
        elif key in ("relay_bandwidth_kib_s", OLD_RELAY_BANDWIDTH_KEY):
            if "relay_bandwidth_kib_s" in data and OLD_RELAY_BANDWIDTH_KEY in data:
                raise UserError(
                    f"config file {path}: set 'relay_bandwidth_kib_s' only"
                    f" ({OLD_RELAY_BANDWIDTH_KEY!r} is its old name)"
                )
            config.relay_bandwidth_kib_s = _whole(
                path, key, value, MAX_RELAY_BANDWIDTH_KIB_S, "KiB per second"
            )
            if key == OLD_RELAY_BANDWIDTH_KEY:
                config.notices.append(
                    f"config file {path}: {OLD_RELAY_BANDWIDTH_KEY} = {value} is read as"
                    f" {value} KiB/s, as before; rename it relay_bandwidth_kib_s"
                    " (it never meant kilobits)"
                )
        else:
            known = (
                "listen, bootstrap, nickname, lan_discovery, port_mapping, test_networks, ascii,"
                " notifications, relay, relay_store_mb, relay_store_items, relay_store_days,"
                " relay_bandwidth_kib_s"
            )
            raise UserError(f"config file {path}: unknown setting {key!r} (known: {known})")
    return config


def save_config(path: Path, config: Config) -> None:
    """Write ``config`` to ``path`` atomically: readers see the old file or the new one."""
    lines = ["# comm-tui profile settings"]
    if config.listen is not None:
        lines.append(f"listen = {_toml_string(config.listen)}")
    lines.append(f"bootstrap = [{', '.join(_toml_string(b) for b in config.bootstrap)}]")
    if config.nickname is not None:
        lines.append(f"nickname = {_toml_string(config.nickname)}")
    lines.append(f"lan_discovery = {'true' if config.lan_discovery else 'false'}")
    lines.append(f"port_mapping = {'true' if config.port_mapping else 'false'}")
    if config.test_networks:
        lines.append("test_networks = true")
    if config.ascii is not None:
        lines.append(f"ascii = {'true' if config.ascii else 'false'}")
    lines.append(f"notifications = {_toml_string(config.notifications)}")
    # The relay settings only when changed, so a default file stays short.
    if not config.relay:
        lines.append("relay = false")
    defaults = Config()
    for key in ("relay_store_mb", "relay_store_items", "relay_store_days", "relay_bandwidth_kib_s"):
        value = getattr(config, key)
        if value != getattr(defaults, key):
            lines.append(f"{key} = {value!r}")
    try:
        content = ("\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError as err:
        raise UserError(f"cannot save config file {path}: the text has {err.reason}") from err
    try:
        _write_atomically(path, content)
    except OSError as err:
        raise StorageError(f"cannot write config file {path}: {err.strerror or err}") from err


def parse_endpoint(
    text: str, default_host: str = DEFAULT_LISTEN_HOST, *, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT``, ``PORT`` or ``[IPv6]:PORT`` into ``(host, port)``.

    IPv6 hosts come back without brackets. Port 0 ("any free port") only makes sense for
    listening, so it is refused unless ``allow_port_zero``.
    """
    spec = text.strip()
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket:
            raise _bad_endpoint(text, "missing ']' after the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad_endpoint(text, f"{host!r} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise _bad_endpoint(text, "missing port after ']', like [::1]:7000")
        port_text = rest[1:]
    elif spec.count(":") > 1:
        raise _bad_endpoint(text, "put an IPv6 address in brackets, like [::1]:7000")
    elif ":" in spec:
        host, _, port_text = spec.partition(":")
        if not host:
            host = default_host
        else:
            _check_host(text, host)
    elif spec.isdecimal():
        host, port_text = default_host, spec
    else:
        raise _bad_endpoint(text, "missing port, use HOST:PORT or PORT")
    return host, _port(text, port_text, allow_port_zero)


def _bool(path: Path, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"config file {path}: '{key}' must be true or false")
    return value


def _string(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise UserError(f"config file {path}: {key!r} must be a string")
    return value


def _whole(path: Path, key: str, value: object, maximum: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise UserError(
            f"config file {path}: {key!r} must be a whole number of {unit} from 1 to {maximum:,}"
        )
    return value


def _check_endpoint(path: Path, key: str, endpoint: str, *, allow_port_zero: bool) -> None:
    try:
        parse_endpoint(endpoint, allow_port_zero=allow_port_zero)
    except UserError as err:
        raise UserError(f"config file {path}: {key!r}: {err}") from err


def _check_host(text: str, host: str) -> None:
    labels = host.rstrip(".").split(".")
    if all(label.isdecimal() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad_endpoint(text, f"{host!r} is not an IPv4 address") from None
    elif len(host) > MAX_HOSTNAME_CHARS or not _HOSTNAME.fullmatch(host):
        raise _bad_endpoint(text, f"{host!r} is not a host name or IP address")


def _port(text: str, port_text: str, allow_port_zero: bool) -> int:
    if not port_text:
        raise _bad_endpoint(text, "missing port")
    if not (port_text.isascii() and port_text.isdecimal()):
        raise _bad_endpoint(text, f"port {port_text!r} is not a number")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= MAX_PORT:
        raise _bad_endpoint(text, f"port must be between {lowest} and {MAX_PORT}")
    return port


def _bad_endpoint(text: str, reason: str) -> UserError:
    return UserError(f"invalid address {text!r}: {reason}")


def _toml_string(text: str) -> str:
    """Quote ``text`` as a TOML basic string."""
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _write_atomically(path: Path, content: bytes) -> None:
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(content)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
