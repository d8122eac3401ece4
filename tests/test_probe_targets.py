"""A probe request never aims a probe at a multicast, broadcast or unspecified address.

docs/PROTOCOL.md, "12.2": the node asked for a probe sends it to the requester's source
as it sees it, only to a unicast address of the requester's own scope; otherwise it
declines with a Probe of its own. A forged source such as 255.255.255.255 or 224.0.0.9
must not make a helper's probe go to every host of a network. The helper checks the
target too (``_on_dial_back``), but the node asked must not pass the request on at all.
Mutation testing found that ``seen is None or not probe_target_allowed(...)`` could
become ``and`` unnoticed (bench/MUTATION.md).
"""

from __future__ import annotations

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
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
