"""``Node.status()`` is a snapshot all the way down (comm_tui/protocol/views.py).

The status panel and the benchmarks compare one status with a later one; if the copy
shared the node's counters by reason (``rejected``, ``sent_by_kind``), both would move
together and every difference would read 0. A shallow copy passed the integer counters'
test (tests/test_node_face.py) and survived mutation testing (bench/MUTATION.md).
"""

from __future__ import annotations

from tests.wire import T0, Wire


def test_the_counters_by_reason_and_kind_of_a_status_do_not_move() -> None:
    wire = Wire()
    a, b = wire.add(1), wire.add(2)
    wire.connect(a, b)
    status = a.status()
    rejected, sent = dict(status.stats.rejected), dict(status.stats.sent_by_kind)
    a.receive_datagram(b"junk", ("10.2.0.1", 4000), T0)
    a.lookup(b"\x55" * 20, T0)
    wire.pump(T0)
    assert a.stats.rejected_total == sum(rejected.values()) + 1
    assert a.stats.sent_by_kind != sent
    assert (dict(status.stats.rejected), dict(status.stats.sent_by_kind)) == (rejected, sent)


def test_a_status_carries_the_nodes_reachability_and_mode() -> None:
    """The status panel shows what the node knows of its reachability ("12.3"); a
    status built without it survived mutation testing (bench/MUTATION.md)."""
    wire = Wire()
    a = wire.add(1)
    status = a.status()
    assert status.reachability == a.reachability
    assert status.reachability.kind == "unknown"
    assert status.client_mode == a.client_mode
