"""Iterative FIND_NODE lookups over disjoint paths (S/Kademlia).

A lookup keeps ``paths`` independent shortlists. A node queried by one path is
never queried by another, so an adversary who answers one path with its own
friends cannot capture the others. The node drives it: it asks which queries to
send, reports answers and timeouts, and reads the result when ``done``.

A lookup ``until_found`` wants the target node itself, not its k nearest: it goes
on past the k nearest (in order of distance, within the query budget). Sybils
brute-forced next to a target fill any k-closest set and name only each other, so a
lookup that stopped there would never meet the honest nodes just beyond them, which
know the target. The target is tried at every endpoint it is named at (one per
answer): the first to name it is likely a Sybil, which could name it at an endpoint
where nobody answers, or at one of its own that relays to the target and drops what
it is sent. For the same reason the lookup does not end when the target first
answers: it goes on until its frontier or budget is spent, so that the target's own
endpoint, named by honest nodes further out, is met too (docs/PROTOCOL.md, "Lookups").
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field

from comm_tui.protocol.routing import Endpoint

LOOKUP_MAX_QUERIES = 64
# docs/PROTOCOL.md, "5.1 Address validation", "First contact": a FindNode to a node that
# may not have validated us is padded to this size, so that the largest Nodes answer (8
# IPv6 entries, the client flag and a cookie: 585 bytes) fits in 3x it and is sent at
# once instead of after a validation round trip. 77 zero bytes in ``FindNode.padding``
# bring a FindNode without cookie or client flag (120 bytes bare) to exactly 200;
# tests/test_first_contact.py holds both sizes.
FIND_NODE_FIRST_CONTACT_BYTES = 200
FIND_NODE_PADDING = bytes(77)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node a lookup may ask. Slotted: every entry of every Nodes answer is one (memoized
    per node), and each stays in the young heap until the next collection walks it."""

    key: bytes
    address: bytes
    endpoint: Endpoint


@dataclass(slots=True)
class _Path:
    shortlist: dict[bytes, Candidate] = field(default_factory=dict)
    # The shortlist's addresses by distance to the target, kept sorted as they come
    # (distinct addresses are never at the same distance): a lookup asks for its
    # frontier after every answer, and sorting the whole shortlist each time was most
    # of its bookkeeping.
    order: list[tuple[int, bytes]] = field(default_factory=list)
    in_flight: int = 0


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: list[Candidate],
        *,
        k: int,
        alpha: int,
        paths: int,
        until_found: bool = False,
    ) -> None:
        self.target = target
        self.until_found = until_found
        self.k = k
        self.alpha = alpha
        self._target_int = int.from_bytes(target, "big")
        self._paths = [_Path() for _ in range(max(1, min(paths, len(seeds))))]
        for i, seed in enumerate(sorted(seeds, key=self._distance)):
            self._add(self._paths[i % len(self._paths)], seed)
        self._queried: set[bytes] = set()
        self._failed: set[bytes] = set()
        self.responded: dict[bytes, Candidate] = {}
        # until_found: where the target was named, with the path that learnt of it.
        self._target_leads: dict[Endpoint, tuple[int, Candidate]] = {}
        self._target_tried: set[Endpoint] = set()
        self.queries_sent = 0

    def _distance(self, candidate: Candidate) -> int:
        return int.from_bytes(candidate.address, "big") ^ self._target_int

    def _add(self, path: _Path, candidate: Candidate) -> None:
        """Put ``candidate`` on ``path``'s shortlist unless it is there already."""
        if candidate.address not in path.shortlist:
            path.shortlist[candidate.address] = candidate
            insort(path.order, (self._distance(candidate), candidate.address))

    def next_queries(self) -> list[tuple[int, Candidate]]:
        """Queries to send now: up to ``alpha`` in flight per path, closest first."""
        out: list[tuple[int, Candidate]] = []
        for endpoint, (index, lead) in self._target_leads.items():
            # The prize itself comes first, past alpha: at most one lead per answer.
            if endpoint in self._target_tried or self.queries_sent >= LOOKUP_MAX_QUERIES:
                continue
            self._target_tried.add(endpoint)
            self._paths[index].in_flight += 1
            self.queries_sent += 1
            out.append((index, lead))
        for index, path in enumerate(self._paths):
            if path.in_flight >= self.alpha or self.queries_sent >= LOOKUP_MAX_QUERIES:
                # Nothing to send on this path: do not walk its frontier. After an answer
                # on one path the others are mostly still full, so this skips most walks.
                continue
            self._fill(index, path, out)
        return out

    def _fill(self, index: int, path: _Path, out: list[tuple[int, Candidate]]) -> None:
        """Append to ``out`` the nearest of ``path``'s frontier not yet asked, until it has
        ``alpha`` in flight or the budget is spent. The frontier (``_frontier``) is walked
        in place rather than built as a list: this runs after every answer."""
        queried, failed, alpha = self._queried, self._failed, self.alpha
        limit = None if self.until_found else self.k
        seen = 0
        for _, address in path.order:
            if address in failed:
                continue
            if address not in queried:
                queried.add(address)
                path.in_flight += 1
                self.queries_sent += 1
                out.append((index, path.shortlist[address]))
                if path.in_flight >= alpha or self.queries_sent >= LOOKUP_MAX_QUERIES:
                    return
            seen += 1
            if seen == limit:
                return

    def _frontier(self, path: _Path) -> list[Candidate]:
        """The path's nearest candidates that did not fail, nearest first: the k nearest,
        or all of them for a lookup ``until_found``."""
        limit = len(path.order) if self.until_found else self.k
        frontier: list[Candidate] = []
        for _, address in path.order:
            if address not in self._failed:
                frontier.append(path.shortlist[address])
                if len(frontier) == limit:
                    break
        return frontier

    def on_response(self, path_index: int, source: Candidate, nodes: list[Candidate]) -> None:
        path = self._paths[path_index]
        path.in_flight -= 1
        self.responded[source.address] = source
        named_target = False
        for node in nodes:
            if self.until_found and node.address == self.target:
                if not named_target:
                    named_target = True
                    self._target_leads.setdefault(node.endpoint, (path_index, node))
                continue
            if node.address not in self._queried:
                self._add(path, node)

    def on_timeout(self, path_index: int, source: Candidate) -> None:
        self._paths[path_index].in_flight -= 1
        self._failed.add(source.address)

    @property
    def done(self) -> bool:
        """No query in flight on any path, and nothing left to ask: the budget is spent,
        or every path's frontier was asked and every lead to the target tried."""
        for path in self._paths:
            if path.in_flight:
                # The common case after an answer (asked after every one): no frontier walk.
                return False
        if self.queries_sent >= LOOKUP_MAX_QUERIES:
            return True
        queried = self._queried
        return (
            all(c.address in queried for path in self._paths for c in self._frontier(path))
            and self._target_leads.keys() <= self._target_tried
        )

    def result(self) -> list[Candidate]:
        return sorted(self.responded.values(), key=self._distance)[: self.k]
