"""The lookup's bookkeeping (protocol/lookup.py) against a brute-force model.

A lookup keeps each path's shortlist sorted as candidates arrive instead of sorting it
on every answer; these tests drive lookups with random answers and timeouts and check,
after every step, that each path's frontier is what sorting everything would give,
that no node is asked by two paths (S/Kademlia's disjointness), and that the result is
the k nearest that answered (docs/PROTOCOL.md, "6.2 Lookups").
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from comm_tui.crypto.identity import address_of
from comm_tui.protocol.lookup import LOOKUP_MAX_QUERIES, Candidate, Lookup, _Path

K = 8


def candidate(rng: random.Random) -> Candidate:
    key = rng.randbytes(32)
    return Candidate(key, address_of(key), ("127.0.0.1", rng.randrange(1, 65536)))


def brute_frontier(lookup: Lookup, path: _Path) -> list[Candidate]:
    """What the frontier was before it was kept sorted: sort the alive shortlist."""
    target = int.from_bytes(lookup.target, "big")
    alive = [c for c in path.shortlist.values() if c.address not in lookup._failed]
    ordered = sorted(alive, key=lambda c: int.from_bytes(c.address, "big") ^ target)
    return ordered if lookup.until_found else ordered[: lookup.k]


def brute_next_queries(lookup: Lookup) -> list[tuple[int, Candidate]] | None:
    """What ``next_queries`` must send, from the sorted model: per path, its frontier's
    nearest not yet asked, until the path has ``alpha`` in flight or the budget is spent.
    None while a lead to the target waits (those go first, past alpha)."""
    if not lookup._target_leads.keys() <= lookup._target_tried:
        return None
    out: list[tuple[int, Candidate]] = []
    asked = set(lookup._queried)
    sent = lookup.queries_sent
    for index, path in enumerate(lookup._paths):
        in_flight = path.in_flight
        for candidate in brute_frontier(lookup, path):
            if in_flight >= lookup.alpha or sent >= LOOKUP_MAX_QUERIES:
                break
            if candidate.address not in asked:
                asked.add(candidate.address)
                in_flight += 1
                sent += 1
                out.append((index, candidate))
    return out


def brute_done(lookup: Lookup) -> bool:
    """When a lookup is over, from the sorted model: nothing in flight, and the budget
    spent or every path's frontier asked and every lead to the target tried."""
    if any(path.in_flight for path in lookup._paths):
        return False
    if lookup.queries_sent >= LOOKUP_MAX_QUERIES:
        return True
    asked = all(
        c.address in lookup._queried for path in lookup._paths for c in brute_frontier(lookup, path)
    )
    return asked and lookup._target_leads.keys() <= lookup._target_tried


def check(lookup: Lookup) -> None:
    assert lookup.done == brute_done(lookup)
    for path in lookup._paths:
        assert lookup._frontier(path) == brute_frontier(lookup, path)
        assert sorted(path.order) == path.order
        assert {address for _, address in path.order} == set(path.shortlist)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), until_found=st.booleans(), paths=st.integers(1, 3))
def test_frontiers_match_sorting_everything_and_paths_stay_disjoint(
    seed: int, until_found: bool, paths: int
) -> None:
    rng = random.Random(seed)
    network = [candidate(rng) for _ in range(80)]
    target = rng.randbytes(20)
    lookup = Lookup(
        target, rng.sample(network, 12), k=K, alpha=3, paths=paths, until_found=until_found
    )
    check(lookup)
    asked_by: dict[bytes, int] = {}
    pending: list[tuple[int, Candidate]] = []
    for _ in range(200):
        expected = brute_next_queries(lookup)
        sent = lookup.next_queries()
        if expected is not None:
            assert sent == expected
        for index, asked in sent:
            assert asked_by.setdefault(asked.address, index) == index  # one path each
            pending.append((index, asked))
        check(lookup)
        if not pending:
            break
        index, asked = pending.pop(rng.randrange(len(pending)))
        if rng.random() < 0.2:
            lookup.on_timeout(index, asked)
        else:
            lookup.on_response(index, asked, rng.sample(network, 8))
        check(lookup)
    assert lookup.done
    assert lookup.queries_sent <= LOOKUP_MAX_QUERIES
    nearest = sorted(
        lookup.responded.values(),
        key=lambda c: int.from_bytes(c.address, "big") ^ int.from_bytes(target, "big"),
    )[:K]
    assert lookup.result() == nearest


def test_the_frontier_skips_failed_nodes_and_holds_k() -> None:
    rng = random.Random(7)
    seeds = [candidate(rng) for _ in range(12)]
    lookup = Lookup(rng.randbytes(20), seeds, k=4, alpha=3, paths=1)
    path = lookup._paths[0]
    nearest = lookup._frontier(path)
    assert len(nearest) == 4
    lookup._failed.add(nearest[0].address)
    after = lookup._frontier(path)
    assert nearest[0] not in after and after[:3] == nearest[1:] and len(after) == 4
    # A candidate named twice is kept once.
    (index, asked), *_ = lookup.next_queries()
    lookup.on_response(index, asked, [seeds[1], seeds[1]])
    assert len(path.order) == len(path.shortlist) == 12


def test_a_full_path_is_not_walked() -> None:
    """``next_queries`` after an answer on one path does not walk the frontiers of the
    paths that still have ``alpha`` in flight: that walk was most of its cost."""
    rng = random.Random(11)
    network = [candidate(rng) for _ in range(40)]
    lookup = Lookup(rng.randbytes(20), network[:12], k=K, alpha=3, paths=2)
    first = lookup.next_queries()
    assert [i for i, _ in first].count(0) == 3 and [i for i, _ in first].count(1) == 3
    walked: list[int] = []
    fill = lookup._fill

    def counting(index: int, path: _Path, out: list[tuple[int, Candidate]]) -> None:
        walked.append(lookup._paths.index(path))
        fill(index, path, out)

    lookup._fill = counting  # type: ignore[method-assign]
    assert lookup.next_queries() == []  # every path is full
    index, asked = next((i, c) for i, c in first if i == 0)
    lookup.on_response(index, asked, network[12:20])
    (sent,) = lookup.next_queries()
    assert sent[0] == 0 and walked == [0]  # path 1, still full, was not walked
