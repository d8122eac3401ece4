"""The reachability agent driven alone, through its ``ReachabilityHost`` face only: a
relay's side of attach (docs/PROTOCOL.md, "12.4") and the switch to client mode ("12.3")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.reachability import (
    ATTACH_PER_NETWORK,
    DIAL_BACK_BURST,
    ECHO_MAX_DELAY_S,
    PROBE_REQUEST_BURST,
    PROBE_RETRY_S,
    PROBE_SOLICITED_S,
    PROBE_TIMEOUT_S,
    REANNOUNCE_MIN_S,
    Reachability,
)
from comm_tui.protocol.reachability_agent import (
    SENT_TO_MAX,
    ReachabilityAgent,
    ReachabilityHost,
    parse_seen,
    seen_endpoint,
)
from comm_tui.protocol.routing import Endpoint, K, RoutingTable
from comm_tui.protocol.stats import NodeStats
from tests.wire import T0

CLIENT_AT: Endpoint = ("198.18.0.9", 4000)


@dataclass
class Recorder:
    """What the agent asked its node to do."""

    frames: list[tuple[bytes, Endpoint, pb.Frame]] = field(default_factory=list)
    pushed: list[bytes] = field(default_factory=list)
    pinged: list[bytes] = field(default_factory=list)
    attaches: list[tuple[bytes, Endpoint, pb.Frame]] = field(default_factory=list)  # queries
    lookups: list[tuple[bytes, float]] = field(default_factory=list)
    own: list[bool] = field(default_factory=list)  # each frame's ``probe``: our own request
    pinned: set[bytes] = field(default_factory=set)  # attached clients' keys pinned
    stats: NodeStats = field(default_factory=NodeStats)

    def send_frame(
        self, key: bytes, endpoint: Endpoint, frame: pb.Frame, now: float, *, probe: bool = False
    ) -> bool:
        self.frames.append((key, endpoint, frame))
        self.own.append(probe)
        return True


def agent_with(recorder: Recorder, table: RoutingTable | None = None) -> ReachabilityAgent:
    identity = Identity.from_seed(b"\x01" * 32)
    host = ReachabilityHost(
        identity=identity,
        table=table or RoutingTable(identity.address),
        stats=recorder.stats,
        rng=random.Random(1),
        send_frame=recorder.send_frame,
        pong=lambda challenge, addr: pb.Frame(pong=pb.Pong(challenge=challenge)),
        ping=lambda key, endpoint, now: recorder.pinged.append(key),
        lookup=lambda target, now: recorder.lookups.append((target, now)),
        push_waiting=lambda address, key, endpoint, now: recorder.pushed.append(address),
        attach_query=lambda challenge, key, endpoint, frame, now: recorder.attaches.append(
            (key, endpoint, frame)
        ),
        pin_client=recorder.pinned.add,
        unpin_client=lambda key, now: recorder.pinned.discard(key),
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


def test_an_attached_clients_boxes_are_pinned_until_it_leaves() -> None:
    """docs/PROTOCOL.md, "5.3", "12.4" (red5, finding 6): while a client is attached its
    boxes are pinned, as a table peer's are, so fresh keys cannot push them out of the
    cache and make its datagrams wait for the new-key budget; they go back to the cache
    when it leaves, expired or evicted (the pins are bounded by the table's bound)."""
    recorder = Recorder()
    agent = agent_with(recorder)
    first = Identity.from_seed(b"\x02" * 32).public
    attach = pb.Attach(challenge=b"c" * 16, interval_s=20)
    agent.on_attach(first, attach, CLIENT_AT, T0)
    assert recorder.pinned == {first.key}
    agent.attached.expire(T0 + 3 * 20)
    assert recorder.pinned == set()
    later = T0 + 100
    agent.on_attach(first, attach, CLIENT_AT, later)
    others = [Identity.from_seed(bytes([10 + i]) * 32).public for i in range(ATTACH_PER_NETWORK)]
    for i, client in enumerate(others):  # the last evicts the first, of the same network
        agent.on_attach(client, attach, (CLIENT_AT[0], CLIENT_AT[1] + 1 + i), later + 1)
    assert agent.attached_client(first.address, later + 1) is None
    assert recorder.pinned == {client.key for client in others}


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


# ---------------------------------------------------------------- 12.2 probes of a port mapping

LOCAL_AT: Endpoint = ("10.0.0.2", 4000)  # where our socket is bound, behind the NAT
NAT_AT: Endpoint = ("198.19.0.1", 4000)  # where our NAT shows our datagrams
MAPPED_AT: Endpoint = ("198.19.0.1", 5000)  # the port our router mapped to us


def helper(seed: int) -> tuple[Identity, Endpoint]:
    """A node of a network of its own (198.18.<seed>.0/24)."""
    return Identity.from_seed(bytes([seed]) * 32), (f"198.18.{seed}.1", 4000)


def probing_agent(
    recorder: Recorder, seen_by: list[tuple[Identity, Endpoint, Endpoint]]
) -> ReachabilityAgent:
    """An agent behind a NAT whose table holds the helpers of ``seen_by`` (identity,
    endpoint, where it sees us), each having told us where it sees us, and that has been
    told of the mapping ``MAPPED_AT``; its next tick starts a probe round."""
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    for identity, endpoint, _ in seen_by:
        table.observe(identity.key, identity.address, endpoint, T0)
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([LOCAL_AT], T0)
    for _, endpoint, seen in seen_by:
        agent.note_observed(
            pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(seen)), endpoint, T0
        )
    agent.note_port_mapping(MAPPED_AT, T0)
    return agent


def requests_of(recorder: Recorder) -> dict[tuple[bytes, int], bytes]:
    """(helper key, port) -> nonce of every ProbeRequest the agent sent."""
    return {
        (key, frame.probe_request.port): frame.probe_request.nonce
        for key, _, frame in recorder.frames
        if frame.HasField("probe_request")
    }


def probe(
    agent: ReachabilityAgent, sender: Identity, addr: Endpoint, nonce: bytes, now: float
) -> None:
    agent.on_probe(sender.public, pb.Probe(nonce=nonce), addr, now)


@pytest.mark.parametrize("helpers", [1, 2])
def test_every_helper_probing_the_mapped_port_itself_confirms_it(helpers: int) -> None:
    """docs/PROTOCOL.md, "12.2", "Port mappings": each helper of the round sees us at our
    NAT's port 4000 and is asked for the mapped port 5000 too; its own probe of 5000
    counts (it cannot come in through the mapping our datagrams to it opened, on 4000).
    With every helper's, the mapping is confirmed: public at it, not a client. With one
    network in our neighbourhood (one peer), its helper's alone is enough."""
    nodes = [helper(seed) for seed in (10, 20)[:helpers]]
    recorder = Recorder()
    agent = probing_agent(recorder, [(i, e, NAT_AT) for i, e in nodes])
    assert agent.client and agent.reach.kind == "unknown"
    agent.tick(T0 + 1)
    asked = requests_of(recorder)
    own = [
        o
        for (_, _, f), o in zip(recorder.frames, recorder.own, strict=True)
        if f.probe_request.nonce
    ]
    assert own == [True] * len(asked)  # our own requests: the query table bounds them
    assert sorted(asked) == sorted((i.key, port) for i, _ in nodes for port in (0, MAPPED_AT[1]))
    for identity, endpoint in nodes:
        probe(agent, identity, endpoint, asked[(identity.key, 0)], T0 + 2)  # declines
    assert agent.client
    for identity, endpoint in nodes[:-1]:
        probe(agent, identity, endpoint, asked[(identity.key, MAPPED_AT[1])], T0 + 2)
        assert agent.client  # not before every helper probed it
    last, last_at = nodes[-1]
    probe(agent, last, last_at, asked[(last.key, MAPPED_AT[1])], T0 + 3)
    assert agent.reach == Reachability("public", MAPPED_AT, T0 + 3)
    assert not agent.client


def test_a_helper_that_does_not_probe_the_mapped_port_leaves_it_unconfirmed() -> None:
    """Two networks: one helper's own probe of the mapped port is not enough, however
    it came (one helper alone could claim it): when the other's never comes, the
    mapping stays a candidate and we stay a client."""
    (one, one_at), (other, other_at) = helper(10), helper(20)
    recorder = Recorder()
    agent = probing_agent(recorder, [(one, one_at, NAT_AT), (other, other_at, NAT_AT)])
    agent.tick(T0 + 1)
    asked = requests_of(recorder)
    probe(agent, one, one_at, asked[(one.key, 0)], T0 + 2)
    probe(agent, other, other_at, asked[(other.key, 0)], T0 + 2)
    probe(agent, one, one_at, asked[(one.key, MAPPED_AT[1])], T0 + 2)
    agent.tick(T0 + 1 + PROBE_TIMEOUT_S)  # the other's request for 5000 times out
    assert agent.client and agent.reach.kind == "unknown"


def test_a_helper_that_sees_us_at_the_mapped_port_cannot_confirm_it() -> None:
    """Our NAT shows our datagrams at the mapped port itself: the helper's own probe of
    it would come in through the mapping we opened to it, whatever the router forwards,
    so from it a Probe declines; only a stranger's (a DialBack) confirms the mapping."""
    (one, one_at) = helper(10)
    recorder = Recorder()
    agent = probing_agent(recorder, [(one, one_at, MAPPED_AT)])
    agent.tick(T0 + 1)
    asked = requests_of(recorder)
    for port in (0, MAPPED_AT[1]):
        probe(agent, one, one_at, asked[(one.key, port)], T0 + 2)
    assert agent.client and agent.reach.kind == "unknown"
    recorder.frames.clear()
    agent.tick(T0 + 2 + PROBE_RETRY_S - 1)
    assert requests_of(recorder) == {}  # the round gave no evidence: the next in 300 s
    agent.tick(T0 + 2 + PROBE_RETRY_S)
    asked = requests_of(recorder)
    stranger = Identity.from_seed(b"\x30" * 32)
    probe(agent, stranger, ("198.18.30.1", 4000), asked[(one.key, MAPPED_AT[1])], T0 + 303)
    assert agent.reach.kind == "public" and not agent.client


def test_a_mapped_port_other_than_the_source_is_probed_by_the_helper_itself() -> None:
    """The helper's side ("12.2"): a request for another port than the one the requester
    speaks from gets our own Probe there, at the requester's IP as we see it, and no
    DialBack; for the port it speaks from (or none), a node of another network is asked."""
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    far, far_at = helper(40)
    table.observe(far.key, far.address, far_at, T0)
    asker = Identity.from_seed(b"\x02" * 32).public
    for port, dial_back in ((CLIENT_AT[1] + 1, False), (CLIENT_AT[1], True), (0, True)):
        recorder = Recorder()
        agent = agent_with(recorder, table)
        agent.on_probe_request(asker, pb.ProbeRequest(nonce=b"n" * 16, port=port), CLIENT_AT, T0)
        ((key, endpoint, frame),) = recorder.frames
        if dial_back:
            assert (key, endpoint, frame.dial_back.nonce) == (far.key, far_at, b"n" * 16)
            assert parse_seen(frame.dial_back.target) == (CLIENT_AT[0], port or CLIENT_AT[1])
        else:
            assert (key, endpoint, frame.probe.nonce) == (
                asker.key,
                (CLIENT_AT[0], port),
                b"n" * 16,
            )


# ---------------------------------------------------------------- 12.2 arrivals without probes

BOUND_AT: Endpoint = ("198.18.5.1", 4000)  # a host bound where its peers see it
STRANGER_AT: Endpoint = ("198.18.77.1", 4000)


def bound_agent(bound: Endpoint = BOUND_AT) -> ReachabilityAgent:
    """An agent whose one peer sees it where it is bound (no NAT suspected) and which has
    no probe outcome yet: ``unknown`` until an arrival shows strangers reach it."""
    agent = agent_with(Recorder())
    agent.set_local_endpoints([bound], T0)
    seen = seen_endpoint(bound)
    agent.note_observed(pb.Pong(challenge=b"c" * 16, observed=seen), ("198.18.9.1", 4000), T0)
    assert agent.reach.kind == "unknown" and not agent.client
    return agent


def test_a_datagram_from_an_ip_we_sent_to_is_no_arrival_until_300_s_later() -> None:
    """docs/PROTOCOL.md, "12.2": from an IP we sent anything to in the last 300 s a
    datagram may have come in through the mapping we opened; from then on it is an
    arrival (strangers reach us: public, no NAT being suspected)."""
    agent = bound_agent()
    agent.sent(STRANGER_AT, T0)
    agent.heard(STRANGER_AT, T0 + PROBE_SOLICITED_S - 1)
    assert agent.reach.kind == "unknown"
    agent.heard(STRANGER_AT, T0 + PROBE_SOLICITED_S)
    assert agent.reach.kind == "public"


def test_on_loopback_no_datagram_is_an_arrival() -> None:
    """Every node on loopback shares our host: nothing it sends proves a way in."""
    agent = bound_agent(("127.0.0.1", 4000))
    agent.heard(("127.0.0.1", 5000), T0 + 1)
    assert agent.reach.kind == "unknown"
    agent = bound_agent()
    agent.heard(STRANGER_AT, T0 + 1)  # the control: off loopback, a stranger is one
    assert agent.reach.kind == "public"


def test_the_endpoints_sent_to_are_bounded_the_least_recent_forgotten_first() -> None:
    """At most SENT_TO_MAX IPs are remembered as sent to: one more forgets the least
    recently sent to, whose next datagram is then an arrival; sending again to an IP
    makes it the most recent."""
    others = [(f"203.0.{i >> 8}.{i & 255}", 4000) for i in range(SENT_TO_MAX)]
    for refreshed in (False, True):
        agent = bound_agent()
        agent.sent(STRANGER_AT, T0)
        for other in others[:-1]:
            agent.sent(other, T0)
        agent.heard(STRANGER_AT, T0 + 1)  # SENT_TO_MAX remembered, it among them
        assert agent.reach.kind == "unknown"
        if refreshed:
            agent.sent(STRANGER_AT, T0 + 1)
        agent.sent(others[-1], T0 + 1)  # one more: the least recent goes
        agent.heard(STRANGER_AT, T0 + 2)
        assert agent.reach.kind == ("unknown" if refreshed else "public")


# ---------------------------------------------------------------- 12.5 a client's echo test


def client_with_two_relays(
    recorder: Recorder,
) -> tuple[ReachabilityAgent, list[tuple[Identity, Endpoint]]]:
    """A client (relaying off) whose table holds two relays of two networks: its first
    tick attaches to both, one of them as a delayed-echo test (docs/PROTOCOL.md, "12.5")."""
    relays = [helper(10), helper(20)]
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    for identity, endpoint in relays:
        table.observe(identity.key, identity.address, endpoint, T0)
    agent = agent_with(recorder, table)
    agent.set_relaying(False, T0)
    agent.tick(T0)
    return agent, relays


def test_a_client_attaches_to_each_relay_one_of_them_as_an_echo_test() -> None:
    """Every Attach says the interval in use (20 s at first); the echo test's asks for
    an answer 1.5 intervals later, sent as our own datagram (no query: the relay answers
    late), the others' for none, sent as queries."""
    recorder = Recorder()
    agent, relays = client_with_two_relays(recorder)
    ((echo_key, echo_at, echo),) = [f for f in recorder.frames if f[2].HasField("attach")]
    assert recorder.own == [True]  # our own request: the 3x limit does not hold it back
    ((plain_key, plain_at, plain),) = recorder.attaches
    assert {(echo_key, echo_at), (plain_key, plain_at)} == {(i.key, e) for i, e in relays}
    assert (echo.attach.interval_s, echo.attach.echo_after_s) == (20, 30)
    assert (plain.attach.interval_s, plain.attach.echo_after_s) == (20, 0)
    assert len(echo.attach.challenge) == len(plain.attach.challenge) == 16
    assert agent.keepalive_interval == 20.0


def test_only_the_echo_from_the_tested_relay_at_its_endpoint_answers_the_test() -> None:
    """The delayed echo proves the idle mapping lived only if it is the Pong of the relay
    under test, from the endpoint we attached to it at, with the test's challenge; then
    the interval grows to 0.9 of the delay survived (docs/PROTOCOL.md, "12.5")."""
    recorder = Recorder()
    agent, relays = client_with_two_relays(recorder)
    ((echo_key, echo_at, echo),) = [f for f in recorder.frames if f[2].HasField("attach")]
    tested = next(identity for identity, _ in relays if identity.key == echo_key)
    other, other_at = next(r for r in relays if r[0].key != echo_key)
    challenge = echo.attach.challenge
    answer = pb.Pong(challenge=challenge, observed=seen_endpoint(NAT_AT))
    agent.note_observed(  # its answer to our last plain Attach, where it saw us then
        pb.Pong(challenge=b"p" * 16, observed=seen_endpoint(("198.19.0.1", 4999))),
        echo_at,
        T0 + 1,
        relay=tested.address,
    )
    later = T0 + 30
    assert not agent.echo_answered(other.public, answer, other_at, later)
    assert not agent.echo_answered(tested.public, answer, ("198.18.10.2", 4000), later)
    assert not agent.echo_answered(tested.public, pb.Pong(challenge=b"x" * 16), echo_at, later)
    assert agent.keepalive_interval == 20.0
    assert agent.echo_answered(tested.public, answer, echo_at, later)
    assert agent.keepalive_interval == pytest.approx(27.0)
    # It sees us elsewhere than at that answer: our endpoint moved, we look ourselves up.
    assert recorder.lookups == [(agent.address, later)]
    assert not agent.echo_answered(tested.public, answer, echo_at, later)  # once


def test_a_moved_endpoint_makes_a_client_attach_everywhere_and_look_itself_up() -> None:
    """docs/PROTOCOL.md, "12.5": a relay answering our Attach sees us elsewhere than it
    did: we attach to every binding at once and look our own address up, at most once
    every 10 s (one lying relay costs no more), each time counted."""
    recorder = Recorder()
    agent, relays = client_with_two_relays(recorder)
    (relay, relay_at) = relays[0]

    def answer(seen: Endpoint, now: float) -> None:
        pong = pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(seen))
        agent.note_observed(pong, relay_at, now, relay=relay.address)

    answer(NAT_AT, T0 + 1)  # the first answer: where it sees us, nothing moved
    recorder.frames.clear()
    recorder.attaches.clear()
    answer(("198.19.0.1", 4001), T0 + 2)
    attached = {key for key, _, _ in recorder.attaches} | {
        key for key, _, frame in recorder.frames if frame.HasField("attach")
    }
    assert attached == {identity.key for identity, _ in relays}
    assert recorder.lookups == [(agent.address, T0 + 2)]
    assert recorder.stats.reannounced == 1
    answer(("198.19.0.1", 4002), T0 + 2 + REANNOUNCE_MIN_S - 1)
    assert len(recorder.lookups) == 1  # not within 10 s
    answer(("198.19.0.1", 4003), T0 + 2 + REANNOUNCE_MIN_S)
    assert recorder.lookups[1:] == [(agent.address, T0 + 2 + REANNOUNCE_MIN_S)]
    assert recorder.stats.reannounced == 2


def test_probe_requests_are_served_per_network_and_never_sent_from_the_askers() -> None:
    """docs/PROTOCOL.md, "12.2": the node that sends the probe is of another network than
    the requester (a node of its own network proves nothing: the requester may share its
    NAT), so with only such a node we decline; the rate is per network of the requester,
    so one network's burst spent leaves another's requests served."""
    neighbour = Identity.from_seed(b"\x05" * 32)
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    table.observe(neighbour.key, neighbour.address, ("198.18.0.50", 4000), T0)  # CLIENT_AT's /24
    recorder = Recorder()
    agent = agent_with(recorder, table)
    asker = Identity.from_seed(b"\x02" * 32).public
    agent.on_probe_request(asker, pb.ProbeRequest(nonce=b"n" * 16), CLIENT_AT, T0)
    ((key, endpoint, frame),) = recorder.frames
    assert (key, endpoint, frame.probe.nonce) == (asker.key, CLIENT_AT, b"n" * 16)  # declined
    far, far_at = helper(40)
    table.observe(far.key, far.address, far_at, T0)
    agent = agent_with(recorder, table)
    for i in range(int(PROBE_REQUEST_BURST)):
        agent.on_probe_request(asker, pb.ProbeRequest(nonce=bytes([i]) * 16), CLIENT_AT, T0)
    with pytest.raises(Rejected) as refused:
        agent.on_probe_request(asker, pb.ProbeRequest(nonce=b"x" * 16), CLIENT_AT, T0)
    assert refused.value.reason == "probe_rate"
    recorder.frames.clear()
    elsewhere: Endpoint = ("198.18.60.9", 4000)
    agent.on_probe_request(asker, pb.ProbeRequest(nonce=b"y" * 16), elsewhere, T0)
    ((key, _, frame),) = recorder.frames
    assert key in (far.key, neighbour.key) and frame.dial_back.nonce == b"y" * 16  # served


def test_a_probe_for_no_request_of_ours_is_unsolicited() -> None:
    recorder = Recorder()
    agent = agent_with(recorder)
    stranger, stranger_at = helper(50)
    with pytest.raises(Rejected) as refused:
        agent.on_probe(stranger.public, pb.Probe(nonce=b"z" * 16), stranger_at, T0)
    assert refused.value.reason == "unsolicited"


def test_the_dial_back_goes_to_the_half_of_the_whole_table_farthest_from_the_requester() -> None:
    """docs/PROTOCOL.md, "12.2": Q is drawn among the half of our usable table farthest
    from the requester's address (it talks most to the nodes near it), the whole table,
    not only its k nearest."""
    me = Identity.from_seed(b"\x01" * 32)
    table = RoutingTable(me.address)
    for seed in range(100, 180):
        identity, endpoint = Identity.from_seed(bytes([seed]) * 32), (f"198.18.{seed}.1", 4000)
        table.observe(identity.key, identity.address, endpoint, T0)
    asker = Identity.from_seed(b"\x02" * 32).public
    ranked = [n.key for n in table.closest(asker.address, len(table))]
    farther = set(ranked[len(ranked) // 2 :])
    assert len(ranked) > 2 * K
    for i in range(int(PROBE_REQUEST_BURST)):
        recorder = Recorder()
        agent = agent_with(recorder, table)
        agent.on_probe_request(asker, pb.ProbeRequest(nonce=bytes([i]) * 16), CLIENT_AT, T0)
        ((key, _, frame),) = recorder.frames
        assert frame.HasField("dial_back") and key in farther


def near(me: bytes, distance: int) -> bytes:
    """The address at XOR ``distance`` from ``me``: the smaller, the nearer."""
    return (int.from_bytes(me, "big") ^ distance).to_bytes(len(me), "big")


def test_a_client_binds_one_relay_per_network_among_its_16_nearest() -> None:
    """docs/PROTOCOL.md, "12.4": its 8 nearest nodes all of one network (keys ground near
    its address), a client still binds 4 relays of 4 networks: it looks among its 16
    nearest, one per network, so that network holds one binding, not all."""
    me = Identity.from_seed(b"\x01" * 32).address
    table = RoutingTable(me, ip_prefix_limit=16)
    for d in range(1, 17):
        endpoint = ("198.18.50.1", 4000 + d) if d <= 8 else (f"198.18.{50 + d}.1", 4000)
        table.observe(bytes([d]) * 32, near(me, d), endpoint, T0)
    agent = agent_with(Recorder(), table)
    relays = agent.binding_relays()
    assert [r.address for r in relays] == [near(me, d) for d in (1, 9, 10, 11)]


def test_probe_helpers_are_drawn_among_our_4_nearest_of_distinct_networks() -> None:
    """docs/PROTOCOL.md, "12.2": each round asks 2 helpers of distinct networks among the
    4 nodes nearest our address (nodes we talk to anyway), never a farther one."""
    me = Identity.from_seed(b"\x01" * 32).address
    table = RoutingTable(me)
    nodes = {}
    for d in range(1, 9):
        identity, endpoint = Identity.from_seed(bytes([100 + d]) * 32), (f"198.18.{d}.1", 4000)
        table.observe(identity.key, near(me, d), endpoint, T0)
        nodes[identity.key] = (identity, endpoint)
    nearest = {key for key, (_, endpoint) in nodes.items() if int(endpoint[0].split(".")[2]) <= 4}
    recorder = Recorder()
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([BOUND_AT], T0)
    now = T0
    for _ in range(10):  # ten rounds, each declined by its helpers: no evidence
        recorder.frames.clear()
        agent.tick(now)
        asked = requests_of(recorder)
        assert len(asked) == 2 and {key for key, _ in asked} <= nearest
        for (key, _), nonce in asked.items():
            probe(agent, *nodes[key], nonce, now)
        now += PROBE_RETRY_S


def test_a_failed_round_is_followed_by_one_asking_the_other_helpers() -> None:
    """docs/PROTOCOL.md, "12.2": after a failed round the next asks the candidates the last
    round did not, so one helper dropping our requests cannot fail every round of a check
    (a deafening attempt: a node that believes itself unreachable turns client)."""
    me = Identity.from_seed(b"\x01" * 32).address
    table = RoutingTable(me)
    nodes = {}
    for d in range(1, 5):  # exactly our 4 nearest, each its own network
        identity, endpoint = Identity.from_seed(bytes([100 + d]) * 32), (f"198.18.{d}.1", 4000)
        table.observe(identity.key, near(me, d), endpoint, T0)
        nodes[identity.key] = (identity, endpoint)
    recorder = Recorder()
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([BOUND_AT], T0)
    now, last = T0, set[bytes]()
    rounds = 0
    for _ in range(9):  # each round times out: failed, and the next starts at once
        recorder.frames.clear()
        agent.tick(now)  # the last round's requests expire, and the next round starts
        asked = {key for key, _ in requests_of(recorder)}
        if asked:
            assert len(asked) == 2 and not asked & last
            last, rounds = asked, rounds + 1
        else:  # the second failed round ended the check; the next is 600 s later
            assert agent.prober.outcome == "failed"
        now = agent.next_due()
    assert rounds == 6


def test_a_whole_check_of_one_requester_fits_a_helpers_budget() -> None:
    """docs/PROTOCOL.md, "12.2": a helper's per-network burst holds a requester's whole
    check asked of it alone (one network in its neighbourhood): 2 rounds back to back,
    each asking for the observed endpoint and the mapped port. A smaller burst would
    refuse the second round's requests, and a check could fail on honest helpers."""
    one, one_at = helper(10)
    recorder = Recorder()
    agent = probing_agent(recorder, [(one, one_at, NAT_AT)])
    sent: list[tuple[bytes, float]] = []
    now = T0 + 1
    while len(sent) < 4:  # the first round times out: the second is asked at once
        recorder.frames.clear()
        agent.tick(now)
        sent += [(nonce, now) for nonce in requests_of(recorder).values()]
        now = agent.next_due()
    assert len(sent) == 4 and now - T0 - 1 <= 2 * PROBE_TIMEOUT_S
    table = RoutingTable(one.address)
    far, far_at = helper(40)
    table.observe(far.key, far.address, far_at, T0)
    served = Recorder()
    helping = agent_with(served, table)
    requester = Identity.from_seed(b"\x01" * 32).public
    for nonce, at in sent:
        port = MAPPED_AT[1] if len(served.frames) % 2 else 0
        helping.on_probe_request(requester, pb.ProbeRequest(nonce=nonce, port=port), NAT_AT, at)
    assert len(served.frames) == 4 and served.stats.rejected["probe_rate"] == 0


def test_an_observation_that_changes_the_nat_suspicion_restarts_the_probes() -> None:
    """docs/PROTOCOL.md, "12.2": a decided or running check starts again at once when the
    evidence changes, a NAT suspected or no longer being evidence on its own."""
    one, one_at = helper(10)
    table = RoutingTable(Identity.from_seed(b"\x01" * 32).address)
    table.observe(one.key, one.address, one_at, T0)
    recorder = Recorder()
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([LOCAL_AT], T0)
    agent.tick(T0)
    assert len(requests_of(recorder)) == 1  # a round runs, its request pending
    recorder.frames.clear()
    agent.note_observed(pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(NAT_AT)), one_at, T0)
    agent.tick(T0 + 1)
    assert len(requests_of(recorder)) == 1  # NAT suspected now: a new round at once


@pytest.mark.parametrize(
    ("local", "mapping", "seen", "public"),
    [
        (LOCAL_AT, NAT_AT, NAT_AT, True),
        (("2001:2:1::2", 4000), ("2001:2:ff::1", 4000), ("2001:2:ff::1", 4000), True),
        (LOCAL_AT, MAPPED_AT, NAT_AT, False),  # came in at 4000: nothing about 5000
    ],
)
def test_a_stranger_arriving_confirms_a_mapping_where_peers_see_us(
    local: Endpoint, mapping: Endpoint, seen: Endpoint, public: bool
) -> None:
    """docs/PROTOCOL.md, "12.2", "Port mappings": most networks of the mapping's family
    see us at the mapped endpoint itself; a stranger's datagram reaching us came in
    there, so it confirms the mapping (public at it). When they see us at another port,
    it says nothing of the mapped one: a full cone, a client."""
    agent = agent_with(Recorder())
    agent.set_local_endpoints([local], T0)
    agent.note_port_mapping(mapping, T0)
    peer_at: Endpoint = ("2001:3::1", 4000) if ":" in local[0] else ("198.18.3.1", 4000)
    pong = pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(seen))
    agent.note_observed(pong, peer_at, T0)
    assert agent.client and agent.reach.kind == "unknown"
    stranger_at: Endpoint = ("2001:4::1", 4000) if ":" in local[0] else STRANGER_AT
    agent.heard(stranger_at, T0 + 1)
    if public:
        assert agent.reach == Reachability("public", mapping, T0 + 1) and not agent.client
    else:
        assert agent.reach.kind == "cone" and agent.client


def test_a_port_mapping_the_router_drops_is_no_longer_our_public_endpoint() -> None:
    """docs/PROTOCOL.md, "12.2", "Port mappings": the driver says the router's mapping
    is gone (None): a mapping a probe confirmed is forgotten at once, and we are a client
    again until a new round says otherwise."""
    node, node_at = helper(10)
    recorder = Recorder()
    agent = probing_agent(recorder, [(node, node_at, NAT_AT)])
    agent.tick(T0 + 1)
    asked = requests_of(recorder)
    probe(agent, node, node_at, asked[(node.key, 0)], T0 + 2)
    probe(agent, node, node_at, asked[(node.key, MAPPED_AT[1])], T0 + 2)
    assert agent.reach == Reachability("public", MAPPED_AT, T0 + 2) and not agent.client
    agent.note_port_mapping(None, T0 + 3)
    assert agent.reach.public_endpoint != MAPPED_AT and agent.reach.kind != "public"
    assert agent.client


def test_dial_backs_are_limited_per_askers_network_not_for_all_networks_at_once() -> None:
    """docs/PROTOCOL.md, "12.2": dial-backs are rate limited per asker's network (and
    in all, at a larger bound): one network spending its burst leaves another's intact."""
    helped = Identity.from_seed(b"\x04" * 32).public
    target = seen_endpoint(("198.18.0.50", 5000))
    assert target is not None
    recorder = Recorder()
    agent = agent_with(recorder)
    burst = int(DIAL_BACK_BURST)
    for i in range(burst + 1):
        asker = Identity.from_seed(bytes([40 + i]) * 32).public
        dial = pb.DialBack(nonce=bytes([i]) * 16, key=helped.key, target=target)
        if i < burst:
            agent.on_dial_back(asker, dial, ("198.18.5.1", 4000 + i), T0)
        else:
            with pytest.raises(Rejected, match="probe_rate"):
                agent.on_dial_back(asker, dial, ("198.18.5.1", 4000 + i), T0)
    assert len(recorder.frames) == burst
    other = Identity.from_seed(b"\x60" * 32).public
    dial = pb.DialBack(nonce=b"o" * 16, key=helped.key, target=target)
    agent.on_dial_back(other, dial, ("198.18.6.1", 4000), T0)  # another /24: served
    assert recorder.frames[-1][2].probe.nonce == b"o" * 16 and len(recorder.frames) == burst + 1
