"""``Node.peers()`` says when each peer was last heard from (comm_tui/protocol/views.py).

The status panel's peer list and ``comm-tui node`` show it; the fast core tests read
only keys and addresses from the views, so a view that lost the time survived mutation
testing (bench/MUTATION.md).
"""

from __future__ import annotations

from tests.wire import T0, Wire


def test_a_peer_view_carries_the_time_the_peer_was_last_heard_from() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b, now=T0 + 5)
    (view,) = a.peers()
    assert (view.key, view.address, view.last_seen) == (b.identity.key, b.address, T0 + 5)
    assert view.endpoint == wire.endpoint(b)
    assert a.closest_peers(b.address, 1) == (view,)
