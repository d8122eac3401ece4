"""Probes go only where the rules allow (docs/PROTOCOL.md, "12.2").

A probe request never aims a probe at a multicast, broadcast or unspecified address.

docs/PROTOCOL.md, "12.2": the node asked for a probe sends it to the requester's source
as it sees it, only to a unicast address of the requester's own scope; otherwise it
declines with a Probe of its own. A forged source such as 255.255.255.255 or 224.0.0.9
must not make a helper's probe go to every host of a network. The helper checks the
target too (``_on_dial_back``), but the node asked must not pass the request on at all.
Mutation testing found that ``seen is None or not probe_target_allowed(...)`` could
become ``and`` unnoticed (bench/MUTATION.md).
"""

from __future__ import annotations

import random

import pytest

from comm_tui.crypto.identity import Identity, is_valid_public_key
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import Node
from comm_tui.protocol.reachability import PROBE_RETRY_S
from comm_tui.protocol.reachability_agent import seen_endpoint
from comm_tui.protocol.routing import Endpoint
from tests.test_reachability import nat_network, validated_send
from tests.wire import T0


def _ask(source: Endpoint, seed: int) -> tuple[list[str | None], int]:
    """A probe request from ``source`` to a relay with helpers of other networks: the
    kinds of the frames it answers the source with, and the dial-backs it sent."""
    _, relays, _ = nat_network(6, {})
    relay = relays[0]
    before = relay.stats.sent_by_kind["dial_back"]
    asker = Codec(Identity.from_seed(bytes([seed]) * 32))
    frame = pb.Frame(probe_request=pb.ProbeRequest(nonce=bytes([seed]) * 16))
    answers = validated_send(asker, relay, frame, source, T0 + 21)
    return [a.WhichOneof("body") for a in answers], relay.stats.sent_by_kind["dial_back"] - before


def test_a_probe_request_from_a_unicast_source_is_passed_to_a_helper() -> None:
    """The control: this network has helpers, so a declined request below is the rule."""
    assert _ask(("203.0.113.7", 6000), 60) == ([], 1)


@pytest.mark.parametrize(
    "source",
    [("224.0.0.9", 6000), ("255.255.255.255", 6000), ("0.0.0.0", 6000), ("ff02::1", 6000)],
)
def test_a_probe_request_from_a_non_unicast_source_is_declined(source: Endpoint) -> None:
    assert _ask(source, 61) == (["probe"], 0)


def test_a_dial_back_for_our_own_key_or_an_invalid_key_is_refused() -> None:
    """A dial-back names the requester's key, which its probe is boxed to: never ours (we
    would probe ourselves for a stranger) and never a key that is no curve point."""
    prober = Node(Identity.from_seed(b"\x02" * 32), T0, rng=random.Random(2))
    seen = seen_endpoint(("198.19.66.1", 4000))
    assert seen is not None
    invalid = bytes(32)  # the identity point: not a valid Ed25519 public key
    assert not is_valid_public_key(invalid)
    for i, key in enumerate((prober.identity.key, invalid, Identity.from_seed(b"\x66" * 32).key)):
        asker = Codec(Identity.from_seed(bytes([80 + i]) * 32))
        frame = pb.Frame(dial_back=pb.DialBack(key=key, target=seen, nonce=bytes([i]) * 16))
        validated_send(asker, prober, frame, ("198.18.55.1", 4000 + i), T0)
    assert prober.stats.rejected["bad_key"] == 2
    assert prober.stats.sent_by_kind["probe"] == 1  # only the third, a valid stranger's key


def test_a_round_whose_last_helper_declines_ends_and_is_retried_later() -> None:
    """docs/PROTOCOL.md, "12.2": a helper that knows nobody of another network declines
    with a Probe of its own. That proves nothing either way: the round ends without an
    outcome and the next is PROBE_RETRY_S later. Mutation testing found that a decline
    ending the round could be handled with no time (a TypeError, swallowed as an
    internal error) unnoticed (bench/MUTATION.md)."""
    wire, relays, clients = nat_network(1, {"c": "full_cone"})
    client, helper = clients["c"], relays[0]
    now = T0 + 21
    while helper.stats.sent_by_kind["probe"] == 0:
        assert now < T0 + 120, "the client never asked its only relay for a probe"
        now += 1.0
        wire.tick(now)
    assert client.stats.sent_by_kind["probe_request"] == 1
    assert not client.stats.rejected  # the decline was taken, not refused or raised on
    assert client._reachability.prober.outcome == "none"
    assert client._reachability.prober.next_at == now + PROBE_RETRY_S


@pytest.mark.parametrize("nonce", [b"n" * 15, b"n" * 17])
def test_a_probe_request_with_a_nonce_of_another_length_is_malformed(nonce: bytes) -> None:
    """docs/PROTOCOL.md, "12.2": a ProbeRequest's nonce is CHALLENGE_BYTES; any other
    length is refused and counted as malformed, and nobody is asked to probe."""
    _, relays, _ = nat_network(6, {})
    relay = relays[0]
    asker = Codec(Identity.from_seed(b"\x61" * 32))
    dial_backs = relay.stats.sent_by_kind["dial_back"]
    frame = pb.Frame(probe_request=pb.ProbeRequest(nonce=nonce))
    answers = validated_send(asker, relay, frame, ("203.0.113.7", 6000), T0 + 21)
    assert answers == []
    assert relay.stats.rejected["malformed"] == 1
    assert relay.stats.sent_by_kind["dial_back"] == dial_backs
