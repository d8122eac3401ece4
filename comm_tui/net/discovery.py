"""Same-machine discovery through the user's runtime directory.

Every running node drops a small file naming its key and port into a shared
directory; a node that starts reads the others' files and pings them. That is how
two profiles on one machine (or the demo network) find each other without any
bootstrap address. A stale file costs one unanswered ping; files are removed when
their node stops, and files of dead processes are ignored and cleaned up.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from comm_tui.protocol.routing import Endpoint

DISCOVERY_SUBDIR = "nodes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalDirectory:
    def __init__(self, runtime_dir: Path) -> None:
        self.directory = runtime_dir / DISCOVERY_SUBDIR
        self._own: Path | None = None

    def announce(self, key: bytes, endpoint: Endpoint) -> None:
        host = "127.0.0.1" if endpoint[0] in ("0.0.0.0", "") else endpoint[0]
        if host not in ("127.0.0.1", "::1", "localhost"):
            host = "127.0.0.1"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / f"{key.hex()}.peer"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(f"{key.hex()} {host} {endpoint[1]} {os.getpid()}\n")
            tmp.replace(path)
        except OSError:
            return  # discovery is best effort; the node works without it
        self._own = path

    def peers(self, own_key: bytes) -> list[tuple[bytes, Endpoint]]:
        found: list[tuple[bytes, Endpoint]] = []
        try:
            files = list(self.directory.glob("*.peer"))
        except OSError:
            return found
        for path in files:
            try:
                key_hex, host, port, pid = path.read_text().split()
                key = bytes.fromhex(key_hex)
                if len(key) != 32 or key == own_key:
                    continue
                if not _alive(int(pid)):
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                found.append((key, (host, int(port))))
            except (OSError, ValueError):
                continue
        return found

    def withdraw(self) -> None:
        if self._own is not None:
            with contextlib.suppress(OSError):
                self._own.unlink()
            self._own = None
