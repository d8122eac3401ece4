"""A rule of ``Lookup.done`` the mutation round could not reach (bench/MUTATION.md,
"Seventh round (h-mut7)").

``done`` is a property, and mutmut 3 does not mutate decorated functions, so its rules
were checked by hand mutations instead; one of them, dropping the "every lead to the
target tried" condition, survived every lookup test: the model-checked random lookups
never name the target (it is drawn outside their network), and the direct tests of
leads read ``next_queries`` without asking ``done`` in between.
"""

from __future__ import annotations

from comm_tui.protocol.lookup import Candidate, Lookup


def _candidate(first_byte: int, port: int | None = None) -> Candidate:
    return Candidate(
        bytes([first_byte]) * 32,
        bytes([first_byte]) + bytes(19),
        ("10.0.0.1", first_byte if port is None else port),
    )


def test_a_lookup_until_found_is_not_done_while_a_lead_to_the_target_is_untried() -> None:
    """docs/PROTOCOL.md, "Lookups": the last answer of a lookup ``until_found`` names the
    target when every other node was asked and nothing is in flight; the lookup is not
    over until the target itself was tried there (else the node ends it, asking
    ``done`` after every answer, one query short of the prize)."""
    target = _candidate(9)
    source = _candidate(1)
    lookup = Lookup(target.address, [source], k=4, alpha=2, paths=1, until_found=True)
    assert lookup.next_queries() == [(0, source)]
    lookup.on_response(0, source, [target])
    assert not lookup.done  # nothing in flight, the frontier asked, but a lead untried
    assert lookup.next_queries() == [(0, target)]
    assert not lookup.done  # the target's query is in flight
    lookup.on_response(0, target, [])
    assert lookup.done and lookup.result() == [target, source]


def test_a_lead_tried_at_one_endpoint_leaves_the_lookup_open_for_another() -> None:
    """Each answer naming the target leads to one endpoint; a second answer naming it
    elsewhere (the honest one, past a Sybil's) is tried before the lookup is done."""
    target = _candidate(9)
    elsewhere = _candidate(9, port=4000)
    first, second = _candidate(1), _candidate(2)
    lookup = Lookup(target.address, [first, second], k=4, alpha=1, paths=1, until_found=True)
    assert lookup.next_queries() == [(0, first)]
    lookup.on_response(0, first, [target])
    assert lookup.next_queries() == [(0, target)]
    lookup.on_timeout(0, target)  # the Sybil's endpoint: nobody answers
    assert lookup.next_queries() == [(0, second)]
    lookup.on_response(0, second, [elsewhere])
    assert not lookup.done  # a new endpoint of the target is named, not yet tried
    assert lookup.next_queries() == [(0, elsewhere)]
    lookup.on_response(0, elsewhere, [])
    assert lookup.done
