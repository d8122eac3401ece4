"""Two ways to bring a simulated network up: through the protocol, or warm from a snapshot.

``join_via_protocol`` is what really happens: every node bootstraps from one known
node and looks itself up. It is the honest test of joining, but at 1,000 nodes it
costs ~250,000 datagrams and most of a minute of wall time before the first message,
so benchmarks of the message path would mostly measure joining.

``warm_start`` fills every routing table as a converged Kademlia network would hold
it (the k nearest nodes, and up to k random nodes for every shared-prefix length),
the usual shortcut of overlay simulators; each node keeps the first node as its
bootstrap address, as a configured app would. Nothing else is touched: no boxes are
precomputed, no messages are stored, and everything after it goes over the wire.
"""

from __future__ import annotations

import bisect
import random

from comm_tui.protocol.routing import ADDRESS_BITS
from comm_tui.sim.internals import seed_table
from comm_tui.sim.network import SimNetwork, SimNode

JOIN_SPACING_S = 0.2
JOIN_SETTLE_S = 60.0


def join_via_protocol(
    net: SimNetwork,
    nodes: list[SimNode],
    *,
    spacing_s: float = JOIN_SPACING_S,
    settle_s: float = JOIN_SETTLE_S,
) -> None:
    """Bootstrap every node but the first from the first, one every ``spacing_s``."""
    bootstrap = nodes[0].endpoint
    for sim in nodes[1:]:
        net.do(sim, lambda n: n.bootstrap(bootstrap, net.now))
        net.run_for(spacing_s)
    net.run_for(settle_s)


def warm_start(net: SimNetwork, nodes: list[SimNode], rng: random.Random) -> None:
    """Fill routing tables as a network that has run for a while would have them."""
    ordered = sorted(nodes, key=lambda s: s.node.address)
    ints = [int.from_bytes(s.node.address, "big") for s in ordered]
    k = max(s.node.config.k for s in nodes)
    for index, sim in enumerate(ordered):
        own = ints[index]
        chosen: dict[int, SimNode] = {}
        # The k nearest by XOR are among the 2k nearest in sorted order.
        window = range(max(0, index - 2 * k), min(len(ordered), index + 2 * k + 1))
        nearest = sorted((i for i in window if i != index), key=lambda i: ints[i] ^ own)[:k]
        chosen.update((i, ordered[i]) for i in nearest)
        for shared in range(ADDRESS_BITS):
            span_bits = ADDRESS_BITS - shared - 1
            # Addresses that share exactly ``shared`` leading bits with ours.
            low = ((own >> span_bits) ^ 1) << span_bits
            first = bisect.bisect_left(ints, low)
            last = bisect.bisect_left(ints, low + (1 << span_bits))
            picks = range(first, last)
            for i in rng.sample(picks, min(k, len(picks))):
                chosen[i] = ordered[i]
            # Stop once no other node shares a longer prefix with us.
            mine_low = (own >> span_bits) << span_bits
            mine_high = mine_low + (1 << span_bits)
            if bisect.bisect_left(ints, mine_high) - bisect.bisect_left(ints, mine_low) <= 1:
                break
        node = sim.node
        for i in sorted(chosen):
            peer = chosen[i]
            seed_table(node, peer.node.identity.key, peer.endpoint, net.now)
        node.joined = True
        if sim is not nodes[0]:
            node.bootstrap_endpoints.append(nodes[0].endpoint)
