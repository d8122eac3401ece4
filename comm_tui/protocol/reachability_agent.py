"""The node's side of reachability: how peers see us, whether we are a relay or a client,
the bindings a client keeps with its relays, and what a relay serves of attach and
dial-back probes (docs/PROTOCOL.md, "12. Reachability": 12.1 observed endpoints, 12.2
dial-back probes, 12.3 relay or client, 12.4 attach, 12.5 keep-alives and re-announce).

``ReachabilityAgent`` owns that state: the tallies of what peers observed, our local
endpoints and port mapping, the prober, our current ``Reachability`` and client flag,
the client's bindings, the relay's attached clients, the endpoints we sent to lately
(a probe from one of them proves nothing) and the rate limits of probe serving. The
rules themselves (classification, the interval learner, the attach table's bounds) are
pure and live in ``reachability.py``; this file turns frames into calls of them and
their outcomes into frames. No I/O and no clock of its own: the node calls it with
``now`` (Unix seconds, the driver's clock) and it acts through ``ReachabilityHost``.
"""

from __future__ import annotations

import math
import os
import random
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from comm_tui.crypto.identity import Identity, PublicIdentity, is_valid_public_key
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES
from comm_tui.protocol.codec import Rejected
from comm_tui.protocol.faces import SendFrame
from comm_tui.protocol.ratelimit import RateLimiter, TokenBucket
from comm_tui.protocol.reachability import (
    ATTACH_RELAYS,
    BINDING_CANDIDATES,
    DIAL_BACK_BURST,
    DIAL_BACK_RATE_PER_S,
    ECHO_MAX_DELAY_S,
    INBOUND_REFRESH_S,
    PROBE_HELPERS,
    PROBE_RECHECK_S,
    PROBE_REQUEST_BURST,
    PROBE_REQUEST_RATE_PER_S,
    PROBE_SERVE_BURST,
    PROBE_SERVE_RATE_PER_S,
    PROBE_SOLICITED_S,
    REANNOUNCE_MIN_S,
    AttachTable,
    Binding,
    ClientBindings,
    FamilyTallies,
    Prober,
    Reachability,
    canonical,
    family_of,
    is_loopback,
    judge,
    mapping_is_seen,
    probe_target_allowed,
    solicitation_key,
    tally_network,
    vouches_for,
)
from comm_tui.protocol.routing import Endpoint, NodeEntry, RoutingTable, origin_network
from comm_tui.protocol.stats import NodeStats

# Endpoints we sent to lately, by what a NAT filters on (docs/PROTOCOL.md, "12.2"): a
# probe from one of them proves nothing. The least recently used forgotten first.
SENT_TO_MAX = 4096


def packed_ip(host: str) -> bytes | None:
    """The 4 or 16 bytes of an IP address, or None for a host that is no IP address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_pton(family, host)
    except OSError:
        return None


def _unpacked_ip(ip: bytes) -> str | None:
    if len(ip) not in (4, 16):
        return None
    return socket.inet_ntop(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, ip)


def ipv6_prefix(host: str) -> bytes | None:
    """The first 8 bytes (the /64) of an IPv6 host, or None for anything else."""
    ip = packed_ip(host)
    return ip[:8] if ip is not None and len(ip) == 16 else None


def seen_endpoint(endpoint: Endpoint) -> pb.SeenEndpoint | None:
    """An endpoint as ``Pong.observed`` carries it, or None for a host that is no IP."""
    packed = packed_ip(canonical(endpoint)[0])
    return None if packed is None else pb.SeenEndpoint(ip=packed, port=endpoint[1])


def parse_seen(seen: pb.SeenEndpoint) -> Endpoint | None:
    """The endpoint a ``SeenEndpoint`` names, or None when out of shape."""
    host = _unpacked_ip(seen.ip)
    if host is None or not 0 < seen.port < 65536:
        return None
    return canonical((host, seen.port))


@dataclass(frozen=True)
class ReachabilityHost:
    """What the agent asks of its node: the whole face between the two."""

    identity: Identity
    # Read only: the neighbourhood we ask for probes and attach to, and leave as a client.
    table: RoutingTable
    stats: NodeStats
    # The node's choices (probe helpers): the same generator, so a seeded run is the same.
    rng: random.Random
    send_frame: SendFrame
    # A Pong echoing a challenge and telling where its request came from.
    pong: Callable[[bytes, Endpoint], pb.Frame]
    # A liveness ping of a table node (our own query).
    ping: Callable[[bytes, Endpoint, float], None]
    # An iterative lookup of an address (ourselves: re-announce, and Fetch what waits).
    lookup: Callable[[bytes, float], None]
    # Hand a node everything we hold for it (a client that attached).
    push_waiting: Callable[[bytes, bytes, Endpoint, float], None]
    # Send an Attach as our own query, answered by a Pong (bounded by the query table).
    attach_query: Callable[[bytes, bytes, Endpoint, pb.Frame, float], None]
    # Pin an attached client's boxes while it is attached, and let them go when it
    # leaves (docs/PROTOCOL.md, "5.3"): fresh keys must not push them out of the cache.
    pin_client: Callable[[bytes], None]
    unpin_client: Callable[[bytes, float], None]
    # Probe rounds with no helper to ask wait this long (the node's rebootstrap tick).
    no_helpers_retry_s: float


class ReachabilityAgent:
    """Reachability and client mode (docs/PROTOCOL.md, "12"), driven by the node."""

    def __init__(self, host: ReachabilityHost, now: float, *, relaying: bool) -> None:
        self._host = host
        self._table = host.table
        self.address = host.identity.address
        # What peers see of us, our local endpoints (told by the driver; without them we
        # never call ourselves a client), dial-back probes.
        self.tally = FamilyTallies()
        self._inbound_checked_at = float("-inf")  # last look for an unsolicited arrival
        self._local: frozenset[Endpoint] = frozenset()
        # The /64s of our own IPv6 endpoints, as 8 raw bytes: our machine and our LAN,
        # global addresses that only scope rules cannot tell apart (``Node._parse_nodes``).
        self.own_prefixes: frozenset[bytes] = frozenset()
        self._mapping: Endpoint | None = None
        self.prober = Prober()
        # The keys asked in the last round: the next round asks others first, so one
        # helper that drops our requests cannot fail every round of a check ("12.2").
        self._last_helpers: frozenset[bytes] = frozenset()
        self.reach = Reachability("unknown", None, 0.0)
        # Relaying for others (docs/PROTOCOL.md, "12.3"); off makes us a client.
        self.relaying = relaying
        self.client = not relaying
        # As a client: the bindings we keep with our relays.
        self.bindings = ClientBindings()
        self._reannounced_at = float("-inf")
        self._sent_to: OrderedDict[str, float] = OrderedDict()
        # As a relay: attached clients, and what we serve of probes.
        self.attached = AttachTable(left=host.unpin_client)
        self._probe_requests = RateLimiter(PROBE_REQUEST_RATE_PER_S, PROBE_REQUEST_BURST)
        self._probes_served = TokenBucket(
            PROBE_SERVE_RATE_PER_S, PROBE_SERVE_BURST, PROBE_SERVE_BURST, now
        )
        self._dial_backs = RateLimiter(DIAL_BACK_RATE_PER_S, DIAL_BACK_BURST)
        self._dial_backs_sent = TokenBucket(
            PROBE_SERVE_RATE_PER_S, PROBE_SERVE_BURST, PROBE_SERVE_BURST, now
        )

    # ------------------------------------------------------------------ what the driver says

    def set_relaying(self, on: bool, now: float) -> None:
        """Switch relaying for others on or off (see ``Node.set_relaying``)."""
        self.relaying = on
        self._reclassify(now)

    @property
    def keepalive_interval(self) -> float | None:
        """The keep-alive interval in use (learned, "12.5"), or None when not a client."""
        return self.bindings.learner.interval if self.client else None

    def set_local_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        """The endpoints our socket is bound to (see ``Node.set_local_endpoints``)."""
        local = frozenset(canonical(e) for e in endpoints)
        if local != self._local:
            self._local = local
            self.own_prefixes = frozenset(
                prefix for prefix in map(ipv6_prefix, (host for host, _ in local)) if prefix
            )
            self.prober.reset(now)
            self._reclassify(now)

    def note_port_mapping(self, endpoint: Endpoint | None, now: float) -> None:
        """The local router mapped ``endpoint`` to our socket (see ``Node.note_port_mapping``)."""
        mapping = None if endpoint is None else canonical(endpoint)
        if mapping != self._mapping:
            self._mapping = mapping
            self.prober.reset(now)
            self._reclassify(now)

    def attached_client(self, address: bytes, now: float) -> tuple[bytes, Endpoint] | None:
        """A client attached to us (docs/PROTOCOL.md, "12.4"): its key and the endpoint
        we reach it at, or None."""
        client = self.attached.get(address, now)
        return None if client is None else (client.key, client.endpoint)

    # ------------------------------------------------------------------ traffic

    def heard(self, addr: Endpoint, now: float) -> None:
        """An authentic datagram came from ``addr``: if no mapping of ours let it in, that
        is evidence of inbound reachability (docs/PROTOCOL.md, "12.2"). Looked at most
        once a second: the check parses the source address (the hot path). A datagram
        from a host we sent to lately, found without parsing (its host is its key, as for
        every source off loopback in canonical form), proves nothing and takes no look:
        else a peer we talk to, sending fast, took nearly every look, and a stranger's
        arrival between two of them went unseen."""
        if not self._local:
            return
        last = self._sent_to.get(addr[0])
        if last is not None and now - last < PROBE_SOLICITED_S:
            return
        if now - self._inbound_checked_at >= INBOUND_REFRESH_S:
            self._inbound_checked_at = now
            if self._unsolicited(addr, now) and self.prober.inbound(now):
                self._reclassify(now)

    def sent(self, endpoint: Endpoint, now: float) -> None:
        """We sent to ``endpoint``: note it (by what a NAT filters on), so a dial-back
        probe from it later proves nothing (docs/PROTOCOL.md, "12.2"), and as traffic
        that keeps a binding's mapping alive."""
        sent_to = solicitation_key(endpoint)
        self._sent_to.pop(sent_to, None)
        self._sent_to[sent_to] = now
        if len(self._sent_to) > SENT_TO_MAX:
            self._sent_to.popitem(last=False)
        self.bindings.traffic(endpoint)

    def _unsolicited(self, addr: Endpoint, now: float) -> bool:
        """Did an authentic datagram come from an IP we have not sent to lately? Then no
        mapping of ours let it in: strangers reach us (docs/PROTOCOL.md, "12.2"). Never
        on loopback, where every node shares our host."""
        if is_loopback(addr[0]):
            return False
        last = self._sent_to.get(solicitation_key(addr))
        return last is None or now - last >= PROBE_SOLICITED_S

    # ------------------------------------------------------------------ classification

    def note_observed(
        self, pong: pb.Pong, addr: Endpoint, now: float, *, relay: bytes | None = None
    ) -> None:
        """Count where a peer that answered our challenge saw us (docs/PROTOCOL.md, "12.1").

        Only answers from the endpoint we sent the challenge to reach here, so the
        network counted is one the peer really receives at. ``relay``: an Attach was
        answered; a relay that now sees us elsewhere means our endpoint changed.
        """
        if not pong.HasField("observed"):
            return
        seen = parse_seen(pong.observed)
        if seen is None:
            return
        before = self.tally.evidence(self._local, now)
        self.tally.add(addr, seen, now)  # in the tally of addr's family (12.1)
        after = self.tally.evidence(self._local, now)
        if after[1] != before[1] or (before[0] is not None and after[0] != before[0]):
            self.prober.reset(now)  # the evidence changed: check again
        binding = self.bindings.bindings.get(relay) if relay is not None else None
        if binding is not None:
            moved = binding.observed is not None and binding.observed != seen
            binding.observed = seen
            if moved:
                self._endpoint_changed(now)
        self._reclassify(now)

    def _reclassify(self, now: float) -> None:
        """Decide our kind again from the evidence; switch client mode when it changes."""
        self._confirm_mapping_by_arrival(now)
        judged = judge(self.tally, self._local, self.prober.outcome, self.prober.mapping_ok, now)
        kind = judged.kind
        public = self._mapping if self.prober.mapping_ok else judged.agreed
        if (kind, public) != (self.reach.kind, self.reach.public_endpoint):
            self.reach = Reachability(kind, public, now)
        # Not yet known: a client only if peers see us elsewhere than we are bound, so a
        # public node is visible from its first datagram and a NATed one never is.
        client = not self.relaying or (
            kind != "public" and (kind != "unknown" or judged.nat_suspected)
        )
        if client != self.client:
            self.client = client
            if client:
                self._leave_tables(now)
            else:
                self.bindings.clear()

    def _confirm_mapping_by_arrival(self, now: float) -> None:
        """A stranger reached us lately (an arrival, "12.2") while most networks see us at
        the mapped endpoint itself: it came in there, and the router keeps that endpoint
        open for us, so the mapping is confirmed (docs/PROTOCOL.md, "12.2", "Port
        mappings"). No probe can show it: a helper's probe of that endpoint comes in
        through the mapping our datagrams to the helper opened."""
        mapping = self._mapping
        if (
            mapping is not None
            and not self.prober.mapping_ok
            and now - self.prober.last_inbound < PROBE_RECHECK_S
            and mapping_is_seen(self.tally.family(family_of(mapping[0])), mapping, now)
        ):
            self.prober.mapping_ok = True

    def _leave_tables(self, now: float) -> None:
        """We just became a client: ping every node of our table now. The ping carries
        ``client``, so each drops us at once rather than at our next frame to it, which
        may be minutes away (docs/PROTOCOL.md, "12.3")."""
        for entry in list(self._table):
            self._host.ping(entry.key, entry.endpoint, now)

    def _endpoint_changed(self, now: float) -> None:
        """Our observed endpoint moved (a router reboot, a new network): attach again at
        once everywhere and look ourselves up, which re-announces us and ends in a Fetch
        of what waits (docs/PROTOCOL.md, "12.5"). At most once per ``REANNOUNCE_MIN_S``:
        one relay that lies about it costs us no more than that."""
        if now - self._reannounced_at < REANNOUNCE_MIN_S:
            return
        self._reannounced_at = now
        self._host.stats.reannounced += 1
        self.prober.reset(now)
        self.bindings.all_due_now(now)
        for address, binding, delay in self.bindings.due(now):
            self._send_attach(address, binding, delay, now)
        if len(self._table):
            self._host.lookup(self.address, now)

    # ------------------------------------------------------------------ timer

    def next_due(self) -> float:
        """When reachability next needs the timer: a probe, a keep-alive, an echo
        (``inf``: nothing). Plain comparisons, not ``min()``: a node asks after every
        datagram it handles (``Node.get_timer``)."""
        due = math.inf
        if self._local:
            deadline = self.prober.next_deadline()
            due = self.prober.next_at if deadline is None else deadline
        if self.client:
            binding = self.bindings.next_due()
            if binding and binding < due:
                due = binding
        echo = self.attached.next_echo()
        return due if echo is None or echo >= due else echo

    def tick(self, now: float) -> None:
        """Probe rounds, a client's keep-alives and echo tests, a relay's delayed echoes."""
        self.prober.expire(now)
        if self._local and self.prober.due(now):
            self._start_probe_round(now)
        self._reclassify(now)
        if self.client:
            relays = self.binding_relays()
            self.bindings.choose([(n.address, n.key, n.endpoint) for n in relays], now)
            self.bindings.expire(now)
            for address, binding, delay in self.bindings.due(now):
                self._send_attach(address, binding, delay, now)
        for key, endpoint, challenge in self.attached.echoes_due(now):
            self._host.send_frame(key, endpoint, self._host.pong(challenge, endpoint), now)

    # ------------------------------------------------------------------ a client's bindings

    def binding_relays(self) -> list[NodeEntry]:
        """The relays a client keeps bindings with: the nearest to its address, at most
        one per network of origin (docs/PROTOCOL.md, "12.4"), so that keys ground near
        our address from one or two networks cannot hold all our bindings."""
        chosen: list[NodeEntry] = []
        networks: set[str] = set()
        for node in self._table.closest(self.address, BINDING_CANDIDATES):
            network = origin_network(node.endpoint)
            if network not in networks:
                networks.add(network)
                chosen.append(node)
                if len(chosen) == ATTACH_RELAYS:
                    break
        return chosen

    def _send_attach(self, address: bytes, binding: Binding, delay: float, now: float) -> None:
        """Attach (or keep the binding) with a relay; ``delay``: as an echo test."""
        challenge = os.urandom(CHALLENGE_BYTES)
        attach = pb.Attach(
            challenge=challenge,
            interval_s=int(self.bindings.learner.interval),
            echo_after_s=int(delay),
        )
        frame = pb.Frame(attach=attach)
        if delay:
            self._host.send_frame(binding.key, binding.endpoint, frame, now, probe=True)
            test = self.bindings.test
            if test is not None and test.relay == address:
                test.challenge = challenge  # from now on, other traffic spoils it
            return
        self._host.attach_query(challenge, binding.key, binding.endpoint, frame, now)

    def echo_answered(
        self, sender: PublicIdentity, pong: pb.Pong, addr: Endpoint, now: float
    ) -> bool:
        """Is this Pong the delayed echo of our test? It proves the idle mapping lived."""
        test = self.bindings.test
        binding = self.bindings.bindings.get(sender.address)
        if test is None or test.relay != sender.address or binding is None:
            return False
        if binding.endpoint != addr or not self.bindings.echo_answered(pong.challenge, now):
            return False
        self.note_observed(pong, addr, now, relay=sender.address)
        return True

    # ------------------------------------------------------------------ frames

    def on_attach(
        self, sender: PublicIdentity, attach: pb.Attach, addr: Endpoint, now: float
    ) -> None:
        """A client keeps its binding with us: hold it attached, answer, push its mail.

        Only from a validated pair (the node's ``_NEEDS_VALIDATION``): the answer is
        larger. docs/PROTOCOL.md, "12.4".
        """
        if self.client:
            raise Rejected("not_relay")
        if len(attach.challenge) != CHALLENGE_BYTES:
            raise Rejected("malformed")
        evicted = self.attached.evicted
        self.attached.attach(
            sender.address, sender.key, addr, origin_network(addr), attach.interval_s, now
        )
        self._host.stats.attach_evicted += self.attached.evicted - evicted
        if self.attached.get(sender.address, now) is None:
            return  # evicted at once: its network is full of fresher clients
        self._host.pin_client(sender.key)
        if attach.echo_after_s:
            delay = min(float(attach.echo_after_s), ECHO_MAX_DELAY_S)
            self.attached.owe_echo(sender.address, attach.challenge, now + delay)
        else:
            self._host.send_frame(sender.key, addr, self._host.pong(attach.challenge, addr), now)
        self._host.push_waiting(sender.address, sender.key, addr, now)

    def _start_probe_round(self, now: float) -> None:
        """Ask a few peers of other networks to have our endpoint probed ("12.2").

        Among our neighbourhood (the nodes nearest our address, which we talk to anyway):
        asking far nodes would make them nodes we sent to, whose probes prove nothing.
        The candidates are the relays a client binds, one per network among our 16
        nearest (``binding_relays``), not our 4 nearest: keys of one network ground near
        our address could hold all 4 nearest (the table's /24 bound is per bucket), and
        be every helper of every round, to confirm a mapping alone or fail every round.
        """
        peers = self.binding_relays()
        self._host.rng.shuffle(peers)
        peers.sort(key=lambda peer: peer.key in self._last_helpers)  # others first
        helpers = peers[:PROBE_HELPERS]  # of distinct networks, as every candidate is
        if not helpers:
            self.prober.next_at = now + self._host.no_helpers_retry_s
            return
        self._last_helpers = frozenset(h.key for h in helpers)
        for helper in helpers:
            self._ask_for_probe(helper, 0, now)
        mapping = self._mapping
        seen = self.tally.recent(now)
        if mapping is None or mapping[0] not in {host for host, _ in seen.values()}:
            return  # none, or an IP nobody sees us at: a router behind another NAT, say
        # Each helper is asked for the mapped port too, at every round (a confirmed
        # mapping too: one the router dropped, or a helper's false word, does not last):
        # one that sees us at another port probes it itself, and the mapping holds if
        # every one of them did ("12.2").
        for helper in helpers:
            vouch = vouches_for(seen.get(tally_network(helper.endpoint)), mapping)
            self._ask_for_probe(helper, mapping[1], now, vouch=vouch)

    def _ask_for_probe(
        self, helper: NodeEntry, port: int, now: float, *, vouch: bool = False
    ) -> None:
        nonce = os.urandom(CHALLENGE_BYTES)
        self.prober.asked(nonce, helper.key, now, mapping=bool(port), vouch=vouch)
        frame = pb.Frame(probe_request=pb.ProbeRequest(nonce=nonce, port=port))
        self._host.send_frame(helper.key, helper.endpoint, frame, now, probe=True)

    def on_probe_request(
        self, sender: PublicIdentity, request: pb.ProbeRequest, addr: Endpoint, now: float
    ) -> None:
        """Have a node of another network probe the requester where we see it.

        The target is always the requester's source as we see it (only its port may be a
        candidate mapping's): never an address the requester names. Rate limited per
        network of origin and in all; declined, smaller than the request, when we know
        nobody of another network (docs/PROTOCOL.md, "12.2").
        """
        if self.client:
            raise Rejected("not_relay")
        if len(request.nonce) != CHALLENGE_BYTES or request.port > 65535:
            raise Rejected("malformed")
        network = origin_network(addr)
        if not self._probe_requests.allow(network, now) or not self._probes_served.take(now):
            raise Rejected("probe_rate")
        target = (addr[0], request.port or addr[1])
        if request.port and request.port != addr[1]:
            # A candidate mapping on another port than the one the requester's datagrams
            # leave from: our own probe cannot come in through a mapping the requester
            # opened to us, so we send it ourselves, to the requester's IP as we see it
            # ("12.2", "Port mappings"; smaller than the request).
            probe = pb.Frame(probe=pb.Probe(nonce=request.nonce))
            self._host.send_frame(sender.key, target, probe, now, probe=True)
            return
        # Of the nodes of other networks, the half farthest from the requester's address:
        # it talks most to those nearest it, and a probe from one of them proves nothing.
        helpers = [
            n
            for n in self._table.closest(sender.address, len(self._table))
            if n.failures == 0 and n.key != sender.key and origin_network(n.endpoint) != network
        ]
        helpers = helpers[len(helpers) // 2 :]
        seen = seen_endpoint(target)
        if not helpers or seen is None or not probe_target_allowed(target, addr):
            # From us, the node asked, a Probe declines; no larger than the request.
            declined = pb.Frame(probe=pb.Probe(nonce=request.nonce))
            self._host.send_frame(sender.key, addr, declined, now)
            return
        helper = self._host.rng.choice(helpers)
        dial = pb.DialBack(key=sender.key, target=seen, nonce=request.nonce)
        self._host.send_frame(helper.key, helper.endpoint, pb.Frame(dial_back=dial), now)

    def on_dial_back(
        self, sender: PublicIdentity, dial: pb.DialBack, addr: Endpoint, now: float
    ) -> None:
        """Send a probe, smaller than this request, to the endpoint a peer saw its
        requester at (docs/PROTOCOL.md, "12.2"); rate limited per asker's network and in
        all, to unicast addresses only, to loopback only for a loopback asker. A client
        serves it too: the probe goes out, nothing needs to come in."""
        if len(dial.nonce) != CHALLENGE_BYTES or len(dial.key) != 32:
            raise Rejected("malformed")
        target = parse_seen(dial.target)
        if target is None:
            raise Rejected("malformed")
        if dial.key == self._host.identity.key or not is_valid_public_key(dial.key):
            raise Rejected("bad_key")
        if not probe_target_allowed(target, addr):
            raise Rejected("bad_target")
        if not self._dial_backs.allow(origin_network(addr), now) or not self._dial_backs_sent.take(
            now
        ):
            raise Rejected("probe_rate")
        frame = pb.Frame(probe=pb.Probe(nonce=dial.nonce))
        # Not validated, and never will be: bounded by the rate limits above instead.
        self._host.send_frame(dial.key, target, frame, now, probe=True)

    def on_probe(self, sender: PublicIdentity, probe: pb.Probe, addr: Endpoint, now: float) -> None:
        """A dial-back probe (or a helper declining to arrange one) for a request of ours.

        It proves inbound reachability only if it comes from an IP we have not sent to
        lately: otherwise our NAT may have let it in through a mapping we opened.
        """
        if self.prober.helper_of(probe.nonce) == sender.key:
            # The node asked sends it: it declines, or vouches for our mapped port.
            self.prober.from_helper(probe.nonce, now)
        else:
            last = self._sent_to.get(solicitation_key(addr))
            solicited = last is not None and now - last < PROBE_SOLICITED_S
            if not self.prober.arrived(probe.nonce, solicited, now):
                raise Rejected("unsolicited")
        self._reclassify(now)
