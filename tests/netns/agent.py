"""A real node driven by JSON lines: the end hosts (Alice, Bob) of the namespace tests.

``comm-tui node`` cannot be told to send a text while it runs, and its log names texts
but not when they arrived to the millisecond; this driver runs the same
:class:`~comm_tui.net.service.NodeService` on a real profile (``start_service``, as the
CLI does) and speaks JSON on stdin/stdout, one object a line. It uses the service's and
node's public API only, so it runs on any branch.

Commands (stdin): ``{"cmd": "add_contact", "name": N, "card": C}``,
``{"cmd": "send", "to": CARD, "text": T}``, ``{"cmd": "status"}``, ``{"cmd": "quit"}``.

Events (stdout), each with ``"t": time.time()`` when it happened: ``ready`` (address,
card, bound endpoint), ``contact_added``, ``sent`` (text_id; ``t`` is taken just before
``send_text``), ``state`` (text_id, state: sent/delivered/expired), ``received``
(text_id, sender address), ``peers`` (count), ``reachability`` (when the node has one
and it changes), ``status`` (with the current card), ``error``, ``failed``, ``stopped``;
other service events of this build by class name (``PortMappingChanged``, say).

    python tests/netns/agent.py --data-dir D --listen 0.0.0.0:7400 --bootstrap IP:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from comm_tui.crypto import card as card_module
from comm_tui.crypto.card import decode_card, encode_card
from comm_tui.errors import UserError
from comm_tui.net.service import (
    IncomingText,
    NodeFailed,
    NodeService,
    OutgoingUpdated,
    PeersChanged,
    ServiceEvent,
)
from comm_tui.profile import Profile, open_profile, start_service

POLL_S = 0.5


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"ev": event, "t": time.time(), **fields}, default=_plain), flush=True)


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _jsonable(value: object) -> object:
    """A dataclass (a Reachability, say) as plain JSON values; anything else as a string."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _reachability(service: NodeService) -> object:
    """The node's reachability where this build has one (docs/PROTOCOL.md, "12")."""
    return _jsonable(getattr(service.node, "reachability", None))


def _punched(service: NodeService) -> dict[str, list[object]]:
    """Contacts reached through a punched hole, by address (docs/PROTOCOL.md, "12.6")."""
    punched = getattr(service.node, "punched_peers", dict)()
    return {address.hex(): list(endpoint) for address, endpoint in punched.items()}


def _status(service: NodeService) -> dict[str, Any]:
    stats = service.node.stats
    return {
        "peers": service.node.peer_count,
        "client": getattr(service.node, "client_mode", None),
        "punched": _punched(service),
        "state": str(service.node.state),
        "bound": list(service.bound) if service.bound else None,
        "reachability": _reachability(service),
        # docs/PROTOCOL.md, "12.4"-"12.5", where this build has them.
        "client_mode": getattr(service.node, "client_mode", None),
        "keepalive_interval": getattr(service.node, "keepalive_interval", None),
        "stats": {
            "datagrams_in": stats.datagrams_in,
            "datagrams_out": stats.datagrams_out,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "texts_received": stats.texts_received,
            "texts_delivered": stats.texts_delivered,
            "sent_by_kind": dict(stats.sent_by_kind),
            "rejected": dict(stats.rejected),
        },
    }


def _read_stdin(loop: asyncio.AbstractEventLoop, commands: asyncio.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            command = {"cmd": "invalid", "line": line[:200]}
        loop.call_soon_threadsafe(commands.put_nowait, command)
    loop.call_soon_threadsafe(commands.put_nowait, {"cmd": "quit"})


def _current_card(profile: Profile, service: NodeService) -> str:
    """Our card: with endpoint hints where this build writes them (docs/PROTOCOL.md, "13.2")."""
    publish = getattr(service, "publish_card", None)
    return str(publish()) if publish is not None else encode_card(profile.identity.public)


def _add_contact(profile: Profile, service: NodeService, name: str, text: str) -> bytes:
    """What ``comm-tui contacts add`` does, and the running node told, as the app does.

    A build whose cards carry endpoint hints (``read_card``) keeps them with the contact
    and hands them to the node (``contact_added(key, hints)``), so a fresh profile can
    join through them.
    """
    read_card = getattr(card_module, "read_card", None)
    if read_card is None:
        public = decode_card(text)
        profile.db.add_contact(name, public.key, public.address, time.time())
        service.contact_added(public.key)
        return public.address
    card = read_card(text)
    public = card.identity
    with profile.db.transaction():
        profile.db.add_contact(name, public.key, public.address, time.time())
        profile.db.save_card_hints(public.key, card.hints, card.issued)
    service.contact_added(public.key, card.hints)
    return public.address


def _handle(profile: Profile, service: NodeService, command: dict[str, Any]) -> None:
    cmd = command.get("cmd")
    if cmd == "add_contact":
        address = _add_contact(profile, service, str(command["name"]), str(command["card"]))
        emit("contact_added", address=address)
    elif cmd == "send":
        recipient = decode_card(str(command["to"]))
        stamp = time.time()
        row = service.send_text(recipient, str(command["text"]))
        emit("sent", text_id=row.text_id, stamp=stamp)
    elif cmd == "status":
        emit("status", card=_current_card(profile, service), **_status(service))
    else:
        emit("error", message=f"unknown command {cmd!r}")


async def run(args: argparse.Namespace) -> None:
    profile = open_profile("default", args.data_dir, lock_as="netns agent")
    if hasattr(profile.config, "test_networks"):
        # The emulated internet is made of 198.18.0.0/15: public here (docs/PROTOCOL.md, 13.2).
        profile.config.test_networks = True
    try:
        service = await start_service(profile, args.listen, args.bootstrap or None)
        stop = asyncio.Event()

        def on_event(event: ServiceEvent) -> None:
            if isinstance(event, IncomingText):
                emit("received", text_id=event.row.text_id, sender=event.row.peer_address)
            elif isinstance(event, OutgoingUpdated):
                emit("state", text_id=event.row.text_id, state=event.row.state)
            elif isinstance(event, PeersChanged):
                emit("peers", count=event.count)
            elif isinstance(event, NodeFailed):
                emit("failed", message=event.message)
                stop.set()
            else:
                # Events of features this build may have (a port mapping, say), by name.
                fields = _jsonable(event)
                emit(type(event).__name__, **(fields if isinstance(fields, dict) else {}))

        service.subscribe(on_event)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        threading.Thread(target=_read_stdin, args=(loop, commands), daemon=True).start()
        emit(
            "ready",
            address=profile.identity.address,
            key=profile.identity.key,
            card=_current_card(profile, service),
            bound=list(service.bound) if service.bound else None,
        )
        reach = _reachability(service)
        try:
            while not stop.is_set():
                command: dict[str, Any] | None = None
                with contextlib.suppress(TimeoutError):
                    command = await asyncio.wait_for(commands.get(), POLL_S)
                if command is not None:
                    if command.get("cmd") == "quit":
                        break
                    try:
                        _handle(profile, service, command)
                    except (UserError, ValueError, KeyError) as exc:
                        emit("error", message=f"{type(exc).__name__}: {exc}")
                now_reach = _reachability(service)
                if now_reach != reach:
                    reach = now_reach
                    emit("reachability", reachability=reach)
        finally:
            await service.stop()
    finally:
        profile.close()
    emit("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--bootstrap", action="append", metavar="HOST:PORT")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
