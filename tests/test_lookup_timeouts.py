"""A lookup goes past a node that timed out (docs/PROTOCOL.md, "Lookups").

A node that never answers must not hold one of the k places of a lookup's frontier:
else k silent Sybils next to a target end every lookup for it with nobody asked beyond
them. ``Lookup.on_timeout`` drops it from the frontier, so the next nearest is asked.
Mutation testing found that forgetting which node failed went unnoticed
(bench/MUTATION.md).
"""

from __future__ import annotations

from comm_tui.protocol.lookup import LOOKUP_MAX_QUERIES, Candidate, Lookup


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


# The rules of ``Lookup`` the node's tests reach only through slow simulations
# (bench/MUTATION.md: survivors of the seeded sample of lookup.py).


def test_a_lookup_ends_with_the_k_nearest_that_answered() -> None:
    seeds = [_candidate(b) for b in (1, 2, 4, 8)]
    lookup = Lookup(bytes(20), seeds, k=2, alpha=8, paths=1)
    assert lookup.next_queries() == [(0, seeds[0]), (0, seeds[1])]  # only the k nearest
    for seed in seeds[:2]:
        lookup.on_response(0, seed, [])
    assert lookup.done and lookup.result() == seeds[:2]


def test_a_lookup_sends_at_most_its_query_budget() -> None:
    seeds = [_candidate(b) for b in range(1, LOOKUP_MAX_QUERIES + 10)]
    target = Candidate(b"\xee" * 32, bytes(20), ("10.0.0.2", 1))
    lookup = Lookup(target.address, seeds, k=2, alpha=1000, paths=1, until_found=True)
    sent = lookup.next_queries()
    assert len(sent) == LOOKUP_MAX_QUERIES
    lookup.on_response(0, sent[0][1], [target])  # the prize, named once the budget is spent
    assert lookup.next_queries() == []


def test_every_node_an_answer_names_joins_the_shortlist() -> None:
    source = _candidate(1)
    named = [_candidate(b) for b in (2, 3, 4)]
    lookup = Lookup(bytes(20), [source], k=4, alpha=3, paths=1)
    assert lookup.next_queries() == [(0, source)]
    lookup.on_response(0, source, named)
    assert lookup.next_queries() == [(0, n) for n in named]


def test_until_found_the_target_is_tried_at_one_endpoint_per_answer_first() -> None:
    """docs/PROTOCOL.md, "Lookups": the target named in an answer is tried first, at one
    endpoint per answer (a Sybil naming it at many would spend the budget), and the
    other nodes of that answer still join the shortlist."""
    target = _candidate(9)
    at_two = Candidate(target.key, target.address, ("10.0.0.2", 9))
    source, other = _candidate(1), _candidate(2)
    lookup = Lookup(target.address, [source], k=4, alpha=2, paths=1, until_found=True)
    assert lookup.next_queries() == [(0, source)]
    lookup.on_response(0, source, [target, at_two, other])
    assert lookup.next_queries() == [(0, target), (0, other)]


def test_a_query_to_the_target_counts_in_flight_and_against_the_budget() -> None:
    """The prize goes past alpha, but it is a query like any other: in flight on its
    path (so the path asks nobody else until an answer comes) and one of the budget."""
    target = _candidate(9)
    first, second, other = _candidate(1), _candidate(2), _candidate(3)
    lookup = Lookup(target.address, [first, second], k=4, alpha=2, paths=1, until_found=True)
    assert lookup.next_queries() == [(0, first), (0, second)]
    lookup.on_response(0, first, [target, other])
    assert lookup.next_queries() == [(0, target)]  # alpha in flight: ``other`` waits
    assert lookup.queries_sent == 3
    lookup.on_response(0, second, [])
    assert lookup.next_queries() == [(0, other)]
