"""A lookup goes past a node that timed out (docs/PROTOCOL.md, "Lookups").

A node that never answers must not hold one of the k places of a lookup's frontier:
else k silent Sybils next to a target end every lookup for it with nobody asked beyond
them. ``Lookup.on_timeout`` drops it from the frontier, so the next nearest is asked.
Mutation testing found that forgetting which node failed went unnoticed
(bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol.lookup import Candidate, Lookup


def _candidate(first_byte: int) -> Candidate:
    return Candidate(
        bytes([first_byte]) * 32, bytes([first_byte]) + bytes(19), ("10.0.0.1", first_byte)
    )


def test_a_node_that_timed_out_leaves_its_place_to_the_next_nearest() -> None:
    near, middle, far = _candidate(1), _candidate(2), _candidate(4)
    lookup = Lookup(bytes(20), [far, middle, near], k=2, alpha=1, paths=1)
    assert lookup.next_queries() == [(0, near)]
    lookup.on_timeout(0, near)
    assert lookup.next_queries() == [(0, middle)]
    lookup.on_response(0, middle, [])
    assert lookup.next_queries() == [(0, far)]  # near failed: far is among the k now
    assert not lookup.done
    lookup.on_response(0, far, [])
    assert lookup.done and lookup.result() == [middle, far]
