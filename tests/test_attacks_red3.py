"""The third red-team review (h-red3) of the last two sessions' rules, attack by attack.

Each test replays one attack against the real core (sans-IO ``Node`` and ``Codec``
objects, datagrams handed over by hand with the source addresses the attacker writes)
and asserts the property the spec promises; each failed before its fix.
"""

from __future__ import annotations

import pytest

from comm_tui import cli
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.prekeys import PublicBundle
from comm_tui.crypto.records import RECORD_LIFETIME_S, sign_record
from comm_tui.net.service import PortMappingChanged
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import RECEIPT_TIMEOUT_S, SEALED_BYTES, Node
from comm_tui.protocol.reachability_agent import seen_endpoint
from comm_tui.protocol.receipts import (
    RECEIPT_TIMEOUT_MAX_S,
    TIMED_OUT_PAIRS_MAX,
    TIMED_OUT_PAIRS_PER_NETWORK,
    ReceiptWaits,
)
from comm_tui.protocol.relay_store import Entry, Kind
from comm_tui.protocol.routing import Endpoint, RoutingTable
from comm_tui.sim.internals import forged_expiry_ms
from tests.test_reachability_agent import (
    BOUND_AT,
    LOCAL_AT,
    MAPPED_AT,
    NAT_AT,
    STRANGER_AT,
    Recorder,
    agent_with,
    bound_agent,
    near,
    probe,
    requests_of,
)
from tests.wire import T0, Wire

NODES = 12
SYBILS = 4
K1 = b"\x01" * 33


def _distance(address: bytes, target: bytes) -> int:
    return int.from_bytes(address, "big") ^ int.from_bytes(target, "big")


def _closer(target: bytes, than: bytes, count: int, seed: int = 5000) -> list[Identity]:
    """``count`` identities nearer ``target`` than ``than`` (keys are free: ground)."""
    found: list[Identity] = []
    while len(found) < count:
        identity = Identity.from_seed(seed.to_bytes(32, "big"))
        if _distance(identity.address, target) < _distance(than, target):
            found.append(identity)
        seed += 1
    return found


class FarRelay:
    """A relay of a 12-node network far from an item's target (not among the k nearest
    it knows), with a peer of its table farther from the target than itself, and the
    item: a message to the target, or the target's prekey record (``kind``). Nothing
    reaches the relay from the network once it is ``isolate``d: its hops' receipts are
    lost, so its holders are only those the test makes."""

    def __init__(self, kind: str = "message") -> None:
        self.kind = kind
        self.wire = Wire()
        nodes = [self.wire.add(seed) for seed in range(1, NODES + 1)]
        self.relay = nodes[0]
        for node in nodes[1:]:
            self.wire.connect(node, self.relay)
        table = [peer for peer in nodes[1:] if peer.address in self.relay._table]
        seed = 1000
        while True:
            target = Identity.from_seed(seed.to_bytes(32, "big"))
            seed += 1
            ours = _distance(self.relay.address, target.address)
            nearer = [p for p in table if _distance(p.address, target.address) < ours]
            farther = [p for p in table if _distance(p.address, target.address) > ours]
            if len(nearer) >= self.relay.config.k + 1 and farther:
                break
        self.target = target
        self.peer = farther[0]
        if kind == "message":
            self.frame = pb.Frame(
                message=pb.Message(
                    recipient=target.address,
                    expires_ms=forged_expiry_ms(T0),
                    sealed=bytes(SEALED_BYTES),
                )
            )
        else:
            bundle = PublicBundle(target.key, 7, bytes(32), ((100, bytes(range(32))),))
            issued_ms = int(T0 * 1000)
            record = sign_record(
                target, bundle, issued_ms, issued_ms + int(RECORD_LIFETIME_S * 1000)
            )
            self.frame = pb.Frame(record=pb.Record(bundle=record))

    def isolate(self) -> None:
        relay_end = self.wire.endpoint(self.relay)
        self.wire.drop = lambda source, dest, data: dest == relay_end

    def hand(self, sender: Identity | Node, source: tuple[str, int], now: float) -> None:
        """``sender`` hands the relay a copy of the item (a message with ``stem`` unset, as
        a relay's fluff; a record pushed for storage)."""
        codec = sender._codec if isinstance(sender, Node) else Codec(sender)
        self.relay.receive_datagram(
            codec.encode_frame(self.relay.identity.key, self.frame, now), source, now
        )

    def entry(self) -> Entry:
        kind = Kind.MESSAGE if self.kind == "message" else Kind.RECORD
        (entry,) = [e for e in self.relay._store if e.kind is kind]
        return entry

    def sent(self) -> int:
        return self.relay.stats.sent_by_kind[self.kind]


def _copies_after_the_peer(kind: str, sybils: int) -> tuple[set[bytes], int]:
    """The peer hands the far relay the item; then ``sybils`` keys nearer the target,
    never sent it, each hand it a copy (one colluder it passed through gave them its
    bytes). Returns the holders after them and the copies the relay sent at the item's
    first retry."""
    far = FarRelay(kind)
    far.isolate()
    far.hand(far.peer, far.wire.endpoint(far.peer), T0)
    far.wire.pump(T0)
    assert far.entry().holders == {far.peer.address} and far.sent() > 0
    for i, sybil in enumerate(_closer(far.target.address, far.relay.address, sybils)):
        far.hand(sybil, (f"198.18.{i}.1", 7000), T0 + 0.5)
    far.wire.pump(T0 + 0.5)
    holders = set(far.entry().holders)
    before = far.sent()
    far.wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)  # the item's first retry
    return holders, far.sent() - before


@pytest.mark.parametrize("kind", ["message", "record"])
def test_sybil_copies_of_an_item_never_sent_to_them_leave_its_replication_unchanged(
    kind: str,
) -> None:
    """The receipt rule (spec 7.2, "A receipt counts only for an item sent") stops Sybils
    near the target from claiming an item with a ``Receipt``. A colluder that was sent the
    item can as cheaply give them its bytes (1,061 sealed bytes, public to every relay on
    its way): each Sybil then hands the relay a copy, which made it a holder, nearer the
    target than the relay, so the relay stopped relaying (the silencing the rule was
    written against)."""
    holders, retried = _copies_after_the_peer(kind, 0)
    attacked_holders, attacked_retried = _copies_after_the_peer(kind, SYBILS)
    assert attacked_holders == holders
    assert retried > 0 and attacked_retried == retried


def _first_copy_from(kind: str, sender: str) -> tuple[int, int]:
    """The far relay's first copy of the message comes from the honest farther peer, or
    from a Sybil key nearer the target (a colluder sprays it ahead of the honest fluff,
    from any source: a message needs no validated address). Returns the copies the relay
    sent on arrival and at its first retry."""
    far = FarRelay(kind)
    far.isolate()
    if sender == "peer":
        far.hand(far.peer, far.wire.endpoint(far.peer), T0)
    else:
        (sybil,) = _closer(far.target.address, far.relay.address, 1)
        far.hand(sybil, ("198.18.9.1", 7000), T0)
    far.wire.pump(T0)
    on_arrival = far.sent()
    far.wire.tick(T0 + RECEIPT_TIMEOUT_S + 0.1)
    return on_arrival, far.sent() - on_arrival


@pytest.mark.parametrize("kind", ["message", "record"])
def test_a_sybil_handing_a_far_relay_the_item_first_does_not_stop_its_relaying(
    kind: str,
) -> None:
    """A far relay forwards an item toward the target until a node it sent it to holds it
    (spec 7.2, "Relaying"). The node that handed it the item proves no progress: keys are
    free, so one ground next to the target, spraying the message (given by one colluder on
    its way) to the relays ahead of the honest copies, made every relay it reached stop."""
    honest = _first_copy_from(kind, "peer")
    attacked = _first_copy_from(kind, "sybil")
    assert honest[0] > 0 and honest[1] > 0
    assert attacked[0] > 0 and attacked[1] > 0


# ---------------------------------------------------------------- 12.2 probe helpers

HONEST_NETWORKS = 12


def _neighbourhood_held_by_one_network() -> tuple[RoutingTable, list[tuple[Identity, Endpoint]]]:
    """Our table (the default one: at most 2 nodes of a /24 per bucket): 12 honest nodes of
    12 networks, 6 far and 6 near us (their common prefix with us exactly 150 bits), and 4
    keys of one /24 ground nearer our address than any of them: two nearer still, which
    with the 6 near ones fill our last bucket, and two whose arrival splits it, in the
    bucket of the 6 near ones (it has room) but nearer than they. Returns the table and
    the attacker's (identity, endpoint)s."""
    me = Identity.from_seed(b"\x01" * 32).address
    table = RoutingTable(me)
    for i in range(HONEST_NETWORKS):
        honest = Identity.from_seed(bytes([60 + i]) * 32)
        distance = 1 << (100 + i) if i < HONEST_NETWORKS // 2 else 900 + 8 * i
        table.observe(honest.key, near(me, distance), (f"198.18.{60 + i}.1", 4000), T0)
    sybils = []
    for d in (2, 3, 512, 513):
        sybil, at = Identity.from_seed(bytes([200 + d % 256]) * 32), ("198.18.50.1", 4000 + d)
        table.observe(sybil.key, near(me, d), at, T0)
        sybils.append((sybil, at))
    nearest = {n.key for n in table.closest(me, 4)}
    assert nearest == {s.key for s, _ in sybils} and len(table) == HONEST_NETWORKS + 4
    return table, sybils


def test_one_network_holding_our_4_nearest_cannot_confirm_a_mapping_alone() -> None:
    """Spec 12.2, "What a false vouch costs": "one network alone, whatever its keys, cannot
    confirm a mapping". Helpers were drawn among our 4 nearest, of distinct networks: keys
    of one /24 ground nearer us than anyone made every round ask that network alone, and
    its helper's own probe of the mapped port (a false vouch: to the port our datagrams
    leave from) made us public at an endpoint strangers cannot reach, though 12 other
    networks were in our table to be asked."""
    table, sybils = _neighbourhood_held_by_one_network()
    recorder = Recorder()
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([LOCAL_AT], T0)
    for node in table:  # every network sees us at our NAT's port 4000
        pong = pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(NAT_AT))
        agent.note_observed(pong, node.endpoint, T0)
    agent.note_port_mapping(MAPPED_AT, T0)
    assert agent.client
    now = T0 + 1
    for _ in range(4):  # rounds: the Sybils answer everything they are asked
        recorder.frames.clear()
        agent.tick(now)
        for (key, _), nonce in requests_of(recorder).items():
            for sybil, at in sybils:
                if sybil.key == key:
                    probe(agent, sybil, at, nonce, now + 0.5)
        now = max(agent.next_due(), now + 1)
    assert agent.client and agent.reach.kind != "public"


def test_one_network_holding_our_4_nearest_cannot_fail_our_probes_alone() -> None:
    """Spec 12.2: a failed round is followed by one asking other helpers, "so one helper
    that drops requests cannot fail every round". With the helpers drawn among our 4
    nearest, a /24 holding them all was every helper of every round: dropping the requests
    made a node bound where peers see it (no NAT) `firewalled`, a client, while the other
    networks of its table would have had it probed."""
    table, sybils = _neighbourhood_held_by_one_network()
    recorder = Recorder()
    agent = agent_with(recorder, table)
    agent.set_local_endpoints([BOUND_AT], T0)
    for node in table:
        pong = pb.Pong(challenge=b"c" * 16, observed=seen_endpoint(BOUND_AT))
        agent.note_observed(pong, node.endpoint, T0)
    sybil_keys = {s.key for s, _ in sybils}
    stranger = Identity.from_seed(b"\x77" * 32)
    now = T0 + 1
    for _ in range(4):
        recorder.frames.clear()
        agent.tick(now)
        for (key, _), nonce in requests_of(recorder).items():
            if key not in sybil_keys:  # an honest helper has a stranger dial us back
                probe(agent, stranger, ("198.18.99.1", 4000), nonce, now + 0.5)
        now = max(agent.next_due(), now + 1)
    assert agent.reach.kind == "public" and not agent.client


# ---------------------------------------------------------------- 7.2 timed-out pairs


def test_one_network_that_never_answers_cannot_flush_the_late_receipts_of_others() -> None:
    """Spec 7.2, "Receipt wait": a late receipt counts while its (peer, item) pair is among
    the timed-out pairs remembered. They were bounded only in all (4,096, oldest first):
    one network whose nodes never answer (the targets of messages its keys made us store
    go to them first: about 2,400 items under its 5 % of the store) pushed every honest
    pair out, and the honest peer's late receipt then counted for nothing (its item went
    to it again). Now each network keeps its last ``TIMED_OUT_PAIRS_PER_NETWORK``."""
    waits = ReceiptWaits()
    honest, hostile = b"h" * 20, b"x" * 20
    waits.sent(honest, K1, T0, None, ("198.51.100.7", 4000))
    assert waits.overdue(T0 + RECEIPT_TIMEOUT_S) == [honest]
    for i in range(TIMED_OUT_PAIRS_MAX + 1):  # from one /24, many ports and keys
        peer = hostile + i.to_bytes(4, "big")
        waits.sent(peer, i.to_bytes(33, "big"), T0 + 5, None, ("203.0.113.9", 1024 + i % 60000))
    assert len(waits.overdue(T0 + 5 + RECEIPT_TIMEOUT_MAX_S)) == TIMED_OUT_PAIRS_MAX + 1
    assert waits.received(honest, K1, T0 + 100)  # late, and still counted
    # The hostile network keeps exactly its last TIMED_OUT_PAIRS_PER_NETWORK pairs.
    last = TIMED_OUT_PAIRS_MAX
    for i, counted in (
        (last, True),
        (last - TIMED_OUT_PAIRS_PER_NETWORK + 1, True),
        (last - TIMED_OUT_PAIRS_PER_NETWORK, False),
    ):
        peer = hostile + i.to_bytes(4, "big")
        assert waits.received(peer, i.to_bytes(33, "big"), T0 + 100) is counted


# ---------------------------------------------------------------- 12.2 arrivals


def test_a_peer_we_talk_to_cannot_hide_a_strangers_arrival_by_talking_fast() -> None:
    """Spec 12.2, "Arrivals without probes": probes can be made to fail from outside; an
    arrival (a datagram from an IP we did not send to in 300 s) cannot be forged, so it
    decides. The look for one was taken by the first datagram of each second, whoever
    sent it: a peer we talk to (its datagrams prove nothing) sending 1,000 a second took
    nearly every look, and a stranger's datagram between two of them went unseen, so
    failed probes decided (a node bound where its peers see it turned `firewalled`, a
    client). Datagrams from a host we sent to lately no longer take the look."""
    agent = bound_agent()
    neighbour = ("198.18.40.1", 4000)
    agent.sent(neighbour, T0)
    now = T0
    for i in range(3000):  # 3 s of a datagram a millisecond from the neighbour
        now = T0 + 1 + i / 1000
        agent.heard(neighbour, now)
        if i == 1500:
            agent.heard(STRANGER_AT, now + 0.0005)
    assert agent.reach.kind == "public" and not agent.client


# ---------------------------------------------------------------- the CLI's node log


def test_a_routers_words_reach_the_node_log_without_terminal_controls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``comm-tui node`` prints each port-mapping change on the terminal and in its log.
    A refusal's reason carries the router's own UPnP error description, any text at all:
    written raw, its ESC and BEL sequences retitled, cleared or recoloured the user's
    terminal (as a peer's text could, which ``_one_line`` escapes). Now escaped too."""
    why = "UPnP: error 718 \x1b]0;owned\x07\x1b[2J\x1b[31mconflict\r\nforged line"
    cli._log_event(cli._NodeLog(), None, PortMappingChanged(None, why))  # type: ignore[arg-type]
    (line,) = capsys.readouterr().out.splitlines()
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert line.endswith(
        "port mapping: none (UPnP: error 718 \\x1b]0;owned\\x07\\x1b[2J"
        "\\x1b[31mconflict\\r\\nforged line)"
    )


# ---------------------------------------------------------------- 8.1 relay bandwidth


def _first_relay_delay(fetch_flood: bool) -> float:
    """The far relay holds ~1,550 items (its 2 MiB per target) that 8 fresh keys made it
    store for a node of its table, which never sends a receipt; with ``fetch_flood``, that
    node also sends a ``Fetch`` every 10 ms (1 KB/s of requests). An honest message then
    comes; returns how long it waits for its first relay (up to 20 s)."""
    far = FarRelay()
    far.isolate()
    relay = far.relay
    hostile = next(n for n in far.wire.nodes.values() if n not in (relay, far.peer))
    hostile_at = far.wire.endpoint(hostile)
    for k in range(8):
        storer = Codec(Identity.from_seed((9000 + k).to_bytes(32, "big")))
        for i in range(200):
            sealed = (k * 200 + i).to_bytes(4, "big") * (SEALED_BYTES // 4) + b"x"
            msg = pb.Message(
                recipient=hostile.address, expires_ms=forged_expiry_ms(T0), sealed=sealed
            )
            data = storer.encode_frame(relay.identity.key, pb.Frame(message=msg), T0)
            relay.receive_datagram(data, (f"198.18.{100 + k}.1", 7000), T0)
    relay.datagrams_to_send()
    fetch = pb.Frame(fetch=pb.Fetch())
    now, arrived = T0, T0 + 6
    honest: Entry | None = None
    while now < arrived + 20 and (honest is None or honest.attempts == 0):
        now = round(now + 0.01, 2)
        if fetch_flood:
            data = hostile._codec.encode_frame(relay.identity.key, fetch, now)
            relay.receive_datagram(data, hostile_at, now)
        if now == arrived:
            far.hand(far.peer, far.wire.endpoint(far.peer), now)
            (honest,) = [e for e in relay._store if e.target == far.target.address]
        if relay.get_timer() <= now:
            relay.handle_timer(now)
        relay.datagrams_to_send()
    return now - arrived


def test_a_peer_fetching_fast_cannot_take_a_relays_whole_bandwidth() -> None:
    """Spec 8.1, "Bandwidth", and 7.2, "Receipt wait": the relay bandwidth bounds what a
    relay sends for others, fairly or not; items are deferred, never dropped. A peer that
    makes the relay hold items for it (fresh keys, its 2 MiB per target) and fetches them
    100 times a second without a receipt had them all pushed at every Fetch while the
    balance lasted: the relay's relaying of everyone else's items stopped (measured: an
    honest item not relayed 115 s after it came, 34 MB pushed to the fetcher meanwhile)."""
    quiet = _first_relay_delay(fetch_flood=False)
    flooded = _first_relay_delay(fetch_flood=True)
    assert flooded <= max(quiet, 1.0) + 1.0


# ---------------------------------------------------------------- 5.4 rate limits

FORGED_SOURCES = 8
PER_SOURCE = 250


def test_one_key_writing_many_source_addresses_gets_one_keys_allowance() -> None:
    """Spec 5.4: 500 datagrams/s (burst 1,000) per key, counted after authentication, for a
    known key at its validated endpoint; per source endpoint, before anything but a parse,
    for everything else, since "a source address is not something a sender can be held
    to". The same holds the other way: a key is what it can be held to once its box
    opened. One key writing 8 forged source addresses sent 2,000 messages addressed to the
    node in a tenth of a second, each opened (a sealed box: an X25519 agreement, 30 times
    a box's cost), twice the key's burst; with more addresses, without bound."""
    node = Node(Identity.from_seed(b"\x01" * 32), T0)
    flooder = Codec(Identity.from_seed(b"\x02" * 32))
    node.receive_datagram(
        flooder.encode_frame(node.identity.key, pb.Frame(ping=pb.Ping(challenge=b"c" * 16)), T0),
        ("198.18.1.1", 4000),
        T0,
    )
    msg = pb.Message(
        recipient=node.address, expires_ms=forged_expiry_ms(T0), sealed=bytes(SEALED_BYTES)
    )
    for i in range(FORGED_SOURCES * PER_SOURCE):
        now = T0 + i / (10 * FORGED_SOURCES * PER_SOURCE)
        data = flooder.encode_frame(node.identity.key, pb.Frame(message=msg), now)
        node.receive_datagram(data, (f"198.18.{10 + i % FORGED_SOURCES}.1", 4000), now)
    opened = node.stats.rejected["bad_seal"]
    config = node.config  # what one key may send in that tenth of a second
    assert opened <= config.datagram_burst + config.datagram_rate_per_s * 0.1
