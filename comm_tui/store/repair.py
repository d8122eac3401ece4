"""Recovering from a damaged database without deleting anything.

The damaged file (with its WAL and shared-memory files) is renamed aside, never
removed; a fresh database takes its place, and every row that can still be read
from the damaged copy is copied over table by table, so a single bad page costs
only the rows on it. The user keeps the damaged copy for any deeper rescue.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from comm_tui.store.db import Database

# Tables in the order they are salvaged; relay items and peers last, they matter least.
SALVAGED_TABLES = (
    "contacts",
    "messages",
    "meta",
    "relay_items",
    "peers",
    "card_hints",
    "claimed_names",
)
SIDE_FILES = ("-wal", "-shm")


@dataclass
class SalvageReport:
    damaged_copy: Path
    copied: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def _aside_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
    return candidate


def repair_database(path: Path) -> SalvageReport:
    """Set ``path`` aside, create a fresh database there, and copy what can be read.

    The caller must hold the profile lock. Raises StorageError if the fresh
    database cannot be created (the damaged one is then already aside, intact).
    """
    aside = _aside_path(path)
    os.replace(path, aside)
    for suffix in SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{aside}{suffix}"))
    with Database.open(path) as fresh:
        copied, unreadable = fresh.salvage_from(aside, SALVAGED_TABLES)
    return SalvageReport(aside, copied, unreadable)
