"""``comm-tui --demo``: a private loopback network in the app's own process.

A few relay nodes, an "echo" contact that answers every text with ``echo: <text>``
and a stranger who sends one message request, all bound to 127.0.0.1 with their
own temporary databases. The identities come from fixed seeds so that the demo
(and the screenshots made from it) look the same on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from nacl.encoding import RawEncoder
from nacl.hash import blake2b

from comm_tui.crypto.identity import Identity, PublicIdentity
from comm_tui.crypto.keyfile import write_identity_file
from comm_tui.errors import UserError
from comm_tui.net.service import IncomingText, NodeService, ServiceEvent
from comm_tui.profile import Profile
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.config import Config, save_config
from comm_tui.store.db import Database
from comm_tui.store.paths import ensure_dirs, profile_paths

DEMO_HOST = "127.0.0.1"
DEMO_RELAYS = 3
ECHO_NAME = "echo"
DEMO_NICKNAME = "newcomer"
ECHO_DELAY_S = 0.4
GREETING_DELAY_S = 1.0
GREETING = (
    "Hi! I am echo, a demo contact running inside this app. Write me anything and I will "
    "send it back. Watch your message go from ◷ queued to ✓ sent to ✓✓ delivered, and "
    "press ctrl+s to see the network at work."
)
STRANGER_TEXT = "Hello, we met at the meetup. This is my comm-tui; add me if you like!"


def _send(service: NodeService, recipient: PublicIdentity, text: str) -> None:
    """Send if the node still runs; a demo node has nothing useful to do with an error."""
    if service.protocol is None:
        return
    with contextlib.suppress(ValueError, UserError):
        service.send_text(recipient, text)


def demo_identity(name: str) -> Identity:
    """A fixed identity for a demo participant, the same on every run."""
    return Identity.from_seed(
        blake2b(f"comm-tui demo {name}".encode(), digest_size=32, encoder=RawEncoder)
    )


def prepare_demo_profile(profile: str, data_dir: Path) -> None:
    """Give a new demo profile its fixed identity and a nickname, so no first-run prompt."""
    paths = profile_paths(profile, data_dir)
    ensure_dirs(paths)
    if not paths.identity_file.exists():
        write_identity_file(paths.identity_file, demo_identity("you"))
        save_config(paths.config_file, Config(nickname=DEMO_NICKNAME, lan_discovery=False))


def add_echo_contact(profile: Profile) -> None:
    echo = demo_identity(ECHO_NAME)
    if profile.db.contact_by_address(echo.address) is None:
        with contextlib.suppress(Exception):
            profile.db.add_contact(ECHO_NAME, echo.key, echo.address, time.time())


class DemoNetwork:
    """Relays, the echo contact and a stranger, on loopback, in the running event loop."""

    def __init__(self, relays: int = DEMO_RELAYS) -> None:
        self.relay_count = relays
        self.directory = Path(tempfile.mkdtemp(prefix="comm-tui-demo-"))
        self.services: list[NodeService] = []
        self.echo: NodeService | None = None
        self.stranger: NodeService | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handles: list[asyncio.TimerHandle] = []

    async def start(self) -> list[Endpoint]:
        """Start every demo node; returns the endpoints to bootstrap from."""
        names = [f"relay {i}" for i in range(self.relay_count)] + [ECHO_NAME, "stranger"]
        for name in names:
            db = Database.open(self.directory / f"{name.replace(' ', '-')}.db")
            bootstrap = [self.services[0].bound] if self.services and self.services[0].bound else []
            service = NodeService(
                demo_identity(name), db, listen=(DEMO_HOST, 0), bootstrap=bootstrap
            )
            await service.start()
            self.services.append(service)
        self.echo, self.stranger = self.services[-2], self.services[-1]
        self.echo.subscribe(self._echo_back)
        return [s.bound for s in self.services[: self.relay_count] if s.bound is not None]

    def greet(self, user: PublicIdentity) -> None:
        """Soon after the user's node is up: echo says hello, the stranger asks to talk."""
        loop = asyncio.get_running_loop()
        assert self.echo is not None and self.stranger is not None
        echo, stranger = self.echo, self.stranger
        self._handles.append(loop.call_later(GREETING_DELAY_S, _send, echo, user, GREETING))
        self._handles.append(
            loop.call_later(GREETING_DELAY_S * 3, _send, stranger, user, STRANGER_TEXT)
        )

    def _echo_back(self, event: ServiceEvent) -> None:
        if not isinstance(event, IncomingText) or event.row.peer_key is None:
            return
        assert self.echo is not None
        sender = PublicIdentity(event.row.peer_key)
        # Answer after the current receive is persisted, and a little later, so it reads.
        self._handles.append(
            asyncio.get_running_loop().call_later(
                ECHO_DELAY_S, _send, self.echo, sender, f"echo: {event.row.text}"
            )
        )

    async def stop(self) -> None:
        for handle in self._handles:
            handle.cancel()
        for service in self.services:
            with contextlib.suppress(Exception):
                await service.stop()
            service.db.close()
        self.services.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
