"""The reachability agent driven alone, through its ``ReachabilityHost`` face only: a
relay's side of attach (docs/PROTOCOL.md, "12.4") and the switch to client mode ("12.3")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.reachability import ECHO_MAX_DELAY_S
from comm_tui.protocol.reachability_agent import ReachabilityAgent, ReachabilityHost, seen_endpoint
from comm_tui.protocol.routing import Endpoint, RoutingTable
from comm_tui.protocol.stats import NodeStats
from tests.wire import T0

CLIENT_AT: Endpoint = ("198.18.0.9", 4000)


@dataclass
class Recorder:
    """What the agent asked its node to do."""

    frames: list[tuple[bytes, Endpoint, pb.Frame]] = field(default_factory=list)
    pushed: list[bytes] = field(default_factory=list)
    pinged: list[bytes] = field(default_factory=list)

    def send_frame(
        self, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float, *, probe: bool = False
    ) -> bool:
        self.frames.append((key, endpoint, frame))
        return True


def agent_with(recorder: Recorder, table: RoutingTable | None = None) -> ReachabilityAgent:
    identity = Identity.from_seed(b"\x01" * 32)
    host = ReachabilityHost(
        identity=identity,
        table=table or RoutingTable(identity.address),
        stats=NodeStats(),
        rng=random.Random(1),
        send_frame=recorder.send_frame,
        pong=lambda challenge, addr: pb.Frame(pong=pb.Pong(challenge=challenge)),
        ping=lambda key, endpoint, now: recorder.pinged.append(key),
        lookup=lambda target, now: None,
        push_waiting=lambda address, key, endpoint, now: recorder.pushed.append(address),
        attach_query=lambda challenge, key, endpoint, frame, now: None,
        no_helpers_retry_s=5.0,
    )
    return ReachabilityAgent(host, T0, relaying=True)


def test_an_attach_is_answered_now_and_its_mail_pushed() -> None:
    recorder = Recorder()
    agent = agent_with(recorder)
    client = Identity.from_seed(b"\x02" * 32).public
    agent.on_attach(client, pb.Attach(challenge=b"c" * 16, interval_s=20), CLIENT_AT, T0)
    ((key, endpoint, frame),) = recorder.frames
    assert (key, endpoint, frame.pong.challenge) == (client.key, CLIENT_AT, b"c" * 16)
    assert recorder.pushed == [client.address]
    assert agent.attached_client(client.address, T0 + 1) == (client.key, CLIENT_AT)


def test_a_delayed_echo_waits_for_its_time_and_no_longer_than_the_cap() -> None:
    recorder = Recorder()
    agent = agent_with(recorder)
    client = Identity.from_seed(b"\x02" * 32).public
    attach = pb.Attach(challenge=b"e" * 16, interval_s=20, echo_after_s=10_000)
    agent.on_attach(client, attach, CLIENT_AT, T0)
    assert recorder.frames == [] and agent.next_due() == T0 + ECHO_MAX_DELAY_S
    agent.tick(T0 + ECHO_MAX_DELAY_S - 1)
    assert recorder.frames == []
    agent.tick(T0 + ECHO_MAX_DELAY_S)
    ((_, endpoint, frame),) = recorder.frames
    assert endpoint == CLIENT_AT and frame.pong.challenge == b"e" * 16


def test_relaying_off_makes_a_client_that_refuses_attach_and_leaves_tables() -> None:
    recorder = Recorder()
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    peer = Identity.from_seed(b"\x03" * 32)
    table.observe(peer.key, peer.address, ("198.18.0.3", 4000), T0)
    agent = agent_with(recorder, table)
    assert not agent.client
    agent.set_relaying(False, T0)
    assert agent.client and recorder.pinged == [peer.key]  # each drops us at once
    client = Identity.from_seed(b"\x02" * 32).public
    with pytest.raises(Rejected, match="not_relay"):
        agent.on_attach(client, pb.Attach(challenge=b"c" * 16), CLIENT_AT, T0)


def test_a_dial_back_with_any_field_out_of_shape_is_malformed_and_sends_nothing() -> None:
    """docs/PROTOCOL.md, "12.2": a DialBack's nonce is CHALLENGE_BYTES, its key 32 bytes,
    its target an endpoint; each out of shape alone is ``malformed``, and no probe goes."""
    asker = Identity.from_seed(b"\x02" * 32).public
    helped = Identity.from_seed(b"\x04" * 32).public
    target = seen_endpoint(("198.18.0.50", 5000))
    assert target is not None
    good = pb.DialBack(nonce=b"n" * 16, key=helped.key, target=target)
    recorder = Recorder()
    agent = agent_with(recorder)
    agent.on_dial_back(asker, good, CLIENT_AT, T0)  # the well-formed one is served
    ((key, endpoint, frame),) = recorder.frames
    assert (key, endpoint, frame.probe.nonce) == (helped.key, ("198.18.0.50", 5000), b"n" * 16)
    for bad in (
        pb.DialBack(nonce=b"n" * 15, key=helped.key, target=target),
        pb.DialBack(nonce=b"n" * 16, key=helped.key[:31], target=target),
        pb.DialBack(nonce=b"n" * 16, key=helped.key),  # no target
    ):
        recorder = Recorder()
        agent = agent_with(recorder)
        with pytest.raises(Rejected) as refused:
            agent.on_dial_back(asker, bad, CLIENT_AT, T0)
        assert refused.value.reason == "malformed"
        assert recorder.frames == []


def test_an_attach_whose_challenge_is_out_of_shape_is_malformed() -> None:
    recorder = Recorder()
    agent = agent_with(recorder)
    client = Identity.from_seed(b"\x02" * 32).public
    with pytest.raises(Rejected) as refused:
        agent.on_attach(client, pb.Attach(challenge=b"c" * 15, interval_s=20), CLIENT_AT, T0)
    assert refused.value.reason == "malformed"
    assert recorder.frames == [] and agent.attached_client(client.address, T0) is None
