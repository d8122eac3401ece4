"""The user's relay switch and the caps it shows are what the node uses (docs/PROTOCOL.md,
"8.1 Local caps", "12.3").

``Node.relaying`` and ``Node.relay_usage()`` feed the status panel and ``comm-tui node``:
a switch that does not read back as set, or a cap shown as another than the one enforced,
would tell the user something false about what their node does for others. Mutation
testing found both unpinned by the fast core tests (bench/MUTATION.md).
"""

from __future__ import annotations

import random

from comm_tui.crypto.identity import Identity
from comm_tui.protocol.node import Node, NodeConfig
from tests.wire import T0


def test_the_relay_switch_reads_back_as_set() -> None:
    node = Node(Identity.from_seed(b"\x07" * 32), T0, rng=random.Random(7))
    assert node.relaying is True
    node.set_relaying(False, T0 + 1)
    assert node.relaying is False and node.relay_usage().relaying is False
    node.set_relaying(True, T0 + 2)
    assert node.relaying is True and node.relay_usage().relaying is True


def test_relay_usage_shows_the_configured_caps() -> None:
    config = NodeConfig(store_max_days=3.5, relay_bandwidth_bytes_s=12_345)
    node = Node(Identity.from_seed(b"\x08" * 32), T0, config=config, rng=random.Random(8))
    usage = node.relay_usage()
    assert (usage.days_cap, usage.bandwidth_cap) == (3.5, 12_345)
    assert (usage.bytes_held, usage.items_held, usage.sent_bytes, usage.deferred) == (0, 0, 0, 0)
