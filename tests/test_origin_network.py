"""An item is held under the network it came from, once its sender proved its address
(docs/PROTOCOL.md, "8.1 Local caps": per-network quotas).

The relay store's quotas and fair eviction share its space by network of origin (an
IPv4 /24): a peer that proved it receives at its endpoint is counted under that
endpoint's network, and unproven sources all share one "unvalidated" origin. If every
item fell into the unvalidated share, one network's flood would crowd out every other
network's mail. Mutation testing found the node's choice of origin unpinned
(bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol.node import NodeConfig
from comm_tui.protocol.routing import origin_network
from tests.wire import T0, Wire


def test_a_relay_holds_a_validated_peers_text_under_the_peers_network() -> None:
    wire = Wire()
    config = NodeConfig(backoff_base_s=1.0, backoff_max_s=8.0, max_relay_attempts=6)
    a, relay, b = wire.add(1, config), wire.add(2, config), wire.add(3, config)
    wire.connect(a, relay)
    wire.connect(b, relay)
    wire.offline.add(wire.endpoint(b))
    a.send_text(b.identity.public, "for later", T0)
    wire.pump(T0 + 1)
    origins = dict(relay.relay_usage().origins)
    assert list(origins) == [origin_network(wire.endpoint(a))] == ["10.1.0.0/24"]
    assert origins["10.1.0.0/24"] == relay.relay_usage().bytes_held > 0
