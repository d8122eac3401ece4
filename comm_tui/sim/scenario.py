"""One benchmark run: a network, a workload, churn and attackers, and what came out of it.

The figures are the ones issue 4 asks for, so that ``bench/simulate.py``, the plots
and the tests all measure the same thing in the same way:

- a message is *delivered* when its recipient's node reports the whole text;
- latency is virtual time from ``send_text`` to that report, for recipients that were
  online when it was sent; rejoin delivery time is measured from the moment an offline
  recipient came back;
- datagrams per message count every datagram put on the wire during the message window
  (from the first send until the network has been quiet for a while), minus the
  background rate measured over a quiet window before it.

Everything random draws from generators seeded by ``Scenario.seed``, so a run is
reproducible figure for figure.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from comm_tui.protocol.events import Event, TextReceived, TextStateChanged
from comm_tui.protocol.node import NodeConfig, Policy
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim import internals
from comm_tui.sim.adversary import (
    ECLIPSE_PREFIX_BITS,
    Adversary,
    DropAdversary,
    EclipseAdversary,
    FillAdversary,
    ForgeAckAdversary,
    HelloFloodAdversary,
    SybilAdversary,
    TamperAdversary,
    identities_near,
)
from comm_tui.sim.network import LinkModel, SimNetwork, SimNode
from comm_tui.sim.topology import join_via_protocol, warm_start

AdversaryKind = Literal["drop", "forge-ack", "eclipse", "tamper", "fill", "sybil", "hello-flood"]
# Adversaries that send on their own at a rate (they start before the first text).
FLOODS: frozenset[str] = frozenset({"fill", "hello-flood"})
# Adversaries with one victim: half the texts go to it, half come from it.
TARGETED: frozenset[str] = frozenset({"eclipse", "hello-flood"})
JoinMode = Literal["warm", "protocol"]

SETTLE_S = 30.0
BACKGROUND_WINDOW_S = 30.0
SEND_INTERVAL_S = 0.05
OFFLINE_MIN_S = 60.0
OFFLINE_MAX_S = 240.0
CHURN_MEAN_OFFLINE_S = 60.0
STORE_SAMPLE_INTERVAL_S = 5.0
# The message window ends once this long passes with no more than background traffic.
QUIET_S = 120.0
# ...or at this horizon after the last scheduled event, whichever comes first.
DRAIN_MAX_S = 1800.0
# Checked only every so often, so the quiet test costs nothing per datagram.
QUIET_CHECK_INTERVAL_S = 10.0
MESSAGE_FRAME_KINDS = ("message", "ack", "receipt")


@dataclass
class Scenario:
    nodes: int = 100
    messages: int = 50
    seed: int = 0
    policy: Policy = "ours"
    adversary: AdversaryKind = "drop"
    adversaries: float = 0.0  # share of all nodes that are adversarial
    churn_per_min: float = 0.0  # share of honest nodes that go offline per minute
    offline: float = 0.0  # share of messages whose recipient is offline when it is sent
    join: JoinMode = "warm"
    link: LinkModel = field(default_factory=LinkModel)
    eclipse_prefix_bits: int = ECLIPSE_PREFIX_BITS
    # Divides every relay-store quota (total, per target, per peer), so that a `fill`
    # flood fills stores in seconds of virtual time instead of minutes.
    store_scale: int = 1
    fill_rate_per_s: float = 2000.0  # junk datagrams per second from each `fill` node
    hello_rate_per_s: float = 5000.0  # hellos per second at the victim, all `hello-flood` nodes
    sybil_pool: int = 2048  # keys each `sybil` node generates
    sybil_per_victim: int = 8  # of which it sends this many, the nearest, to each honest node
    # Floods start this long before the first text and go on this long after the last
    # (then the network drains). Other adversaries are unaffected.
    attack_lead_s: float = 10.0
    attack_tail_s: float = 30.0


@dataclass
class Results:
    nodes: int
    messages: int
    policy: str
    adversary: str
    adversaries: float
    churn_per_min: float
    offline: float
    join: str
    delivered_ratio: float
    acked_ratio: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    datagrams_per_message: float
    message_frames_per_message: float
    background_datagrams_per_s: float
    rejoin_delivery_p50_s: float | None
    rejoin_delivery_p99_s: float | None
    stored_bytes_per_node_p99: float | None
    forged_acks_rejected: int
    eclipse_to_target_delivered: float | None
    eclipse_from_target_delivered: float | None
    # What the adversaries injected (not their nodes' honest-looking traffic).
    attacker_datagrams: int
    attacker_bytes: int
    attack: dict[str, float]  # figures of the adversary kind (see _Run.attack_figures)
    virtual_s: float
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    rejoin_delays_s: list[float] = field(repr=False)

    def figures(self) -> dict[str, object]:
        """Everything but the raw samples, as JSON-ready values."""
        out = asdict(self)
        del out["latencies_ms"], out["rejoin_delays_s"]
        out["attack"] = {k: round(v, 4) for k, v in self.attack.items()}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _Sent:
    sender: SimNode
    recipient: SimNode
    at: float
    offline: bool


class RefusalMeter:
    """Counts what a node refuses of datagrams from honest endpoints, by reason, and
    apart from those what it refuses of its established peers (in its routing table
    when the datagram arrives): issue 8 asks that those are never refused."""

    def __init__(self, net: SimNetwork, sim: SimNode, honest: set[Endpoint]) -> None:
        self.net = net
        self.honest = honest
        self.honest_datagrams = 0
        self.refused: dict[str, int] = {}
        self.established_datagrams = 0
        self.refused_established = 0
        sim.intercept = self.intercept

    def intercept(self, sim: SimNode, data: bytes, source: Endpoint) -> bool:
        if source not in self.honest:
            self.net.receive(sim, data, source)
            return True
        established = source in internals.table_endpoints(sim.node)
        before = internals.rejections(sim.node)
        self.net.receive(sim, data, source)
        self.honest_datagrams += 1
        self.established_datagrams += established
        for reason, count in internals.rejections(sim.node).items():
            if count > before.get(reason, 0):
                self.refused[reason] = self.refused.get(reason, 0) + count - before.get(reason, 0)
                self.refused_established += established * (count - before.get(reason, 0))
        return True


class _Run:
    """The state of one scenario while it runs."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rng = random.Random(f"scenario-{scenario.seed}")
        self.net = SimNetwork(scenario.seed, link=scenario.link)
        self.net.on_event = self._on_event
        self.received: dict[bytes, float] = {}
        self.acked: dict[bytes, float] = {}
        self.sent: dict[bytes, _Sent] = {}
        self.rejoined_at: dict[SimNode, float] = {}
        self.store_peak: dict[SimNode, int] = {}
        self.adversaries: list[Adversary] = []
        self.churned: set[SimNode] = set()
        self.churning = False
        self.sampling = False
        self.eclipse_target: SimNode | None = None  # the victim of a targeted adversary
        self.honest: list[SimNode] = []
        self.meter: RefusalMeter | None = None
        self.forged_bytes = 0  # sent by honest nodes to endpoints where no node lives
        self.sybil_share_peak = 0.0

    # ------------------------------------------------------------------ setup

    def build(self) -> None:
        s = self.s
        scale = max(1, s.store_scale)
        defaults = NodeConfig()
        config = NodeConfig(
            policy=s.policy,
            store_total_bytes=defaults.store_total_bytes // scale,
            store_per_target_bytes=defaults.store_per_target_bytes // scale,
            store_per_peer_bytes=defaults.store_per_peer_bytes // scale,
        )
        bad = round(s.nodes * s.adversaries)
        self.honest = [self.net.add_node(config=config) for _ in range(s.nodes - bad)]
        if bad and s.adversary in ("fill", "sybil", "tamper", "hello-flood"):
            self._build_new_kind(s.adversary, bad, config)
        elif bad and s.adversary == "eclipse":
            target = self.eclipse_target = self.honest[1]
            identities = identities_near(target.node.address, bad, s.eclipse_prefix_bits, self.rng)
            group = [self.net.add_node(identity, config) for identity in identities]
            for sim in group:
                seed = self.rng.getrandbits(32)
                self.adversaries.append(
                    EclipseAdversary(self.net, sim, group, target.node.address, seed=seed)
                )
        else:
            kind: type[DropAdversary | ForgeAckAdversary] = (
                DropAdversary if s.adversary == "drop" else ForgeAckAdversary
            )
            for _ in range(bad):
                sim = self.net.add_node(config=config)
                self.adversaries.append(kind(self.net, sim, seed=self.rng.getrandbits(32)))
        everyone = self.honest + [a.sim for a in self.adversaries]
        if s.join == "warm":
            warm_start(self.net, everyone, self.rng)
        else:
            join_via_protocol(self.net, everyone)
        self.net.tap = self._tap
        for adversary in self.adversaries:
            if adversary.starts_early:
                adversary.start(math.inf)
        self.net.run_for(SETTLE_S)

    def _build_new_kind(self, kind: str, bad: int, config: NodeConfig) -> None:
        s = self.s
        sims = [self.net.add_node(config=config) for _ in range(bad)]
        # What a crawl of the network finds: every honest node's key and endpoint.
        crawl = [(h.node.identity.key, h.endpoint) for h in self.honest]
        adversary: Adversary
        tampered: set[bytes] = set()  # items the tamperers made, shared as colluders would
        for index, sim in enumerate(sims):
            seed = self.rng.getrandbits(32)
            if kind == "tamper":
                adversary = TamperAdversary(self.net, sim, seed=seed, made=tampered)
            elif kind == "fill":
                adversary = FillAdversary(
                    self.net, sim, crawl, seed=seed, rate_per_s=s.fill_rate_per_s
                )
            elif kind == "sybil":
                victims = [(h.node.identity.key, h.node.address, h.endpoint) for h in self.honest]
                adversary = SybilAdversary(
                    self.net,
                    sim,
                    victims,
                    seed=seed,
                    first_index=index * s.sybil_pool,
                    pool=s.sybil_pool,
                    per_victim=s.sybil_per_victim,
                )
            else:
                target = self.eclipse_target = self.honest[1]
                adversary = HelloFloodAdversary(
                    self.net, sim, target.endpoint, seed=seed, rate_per_s=s.hello_rate_per_s / bad
                )
            self.adversaries.append(adversary)
        if kind == "hello-flood" and self.eclipse_target is not None:
            honest = {h.endpoint for h in self.honest}
            self.meter = RefusalMeter(self.net, self.eclipse_target, honest)

    def _tap(self, data: bytes, source: Endpoint, dest: Endpoint) -> None:
        if dest not in self.net.nodes:
            self.forged_bytes += len(data)

    def plan(self) -> list[tuple[SimNode, SimNode, bool]]:
        """Who sends to whom; offline recipients are nodes that take no other part."""
        s = self.s
        pool = [sim for sim in self.honest[1:] if sim is not self.eclipse_target]
        offline_count = round(s.messages * s.offline)
        offline_pool = self.rng.sample(pool, min(offline_count, len(pool) // 2))
        excluded = {*offline_pool, self.eclipse_target}
        online_pool = [sim for sim in self.honest if sim not in excluded]
        offline_flags = [True] * offline_count + [False] * (s.messages - offline_count)
        self.rng.shuffle(offline_flags)
        pairs: list[tuple[SimNode, SimNode, bool]] = []
        for i, offline in enumerate(offline_flags):
            sender, recipient = self.rng.sample(online_pool, 2)
            if offline and offline_pool:
                recipient = offline_pool[i % len(offline_pool)]
            elif self.eclipse_target is not None:
                # Half the traffic to the eclipsed node, half from it.
                if i % 2:
                    sender = self.eclipse_target
                else:
                    recipient = self.eclipse_target
            pairs.append((sender, recipient, offline and bool(offline_pool)))
        return pairs

    # ------------------------------------------------------------------ workload

    def run(self) -> Results:
        wall_start = time.perf_counter()
        self.build()
        net = self.net
        background_start = net.datagrams_sent
        net.run_for(BACKGROUND_WINDOW_S)
        background_rate = (net.datagrams_sent - background_start) / BACKGROUND_WINDOW_S

        pairs = self.plan()
        for sim in {r for _, r, offline in pairs if offline}:
            net.set_online(sim, False)
        window_start = net.now
        flooding = self.s.adversary in FLOODS and bool(self.adversaries)
        for adversary in self.adversaries:
            if flooding and not adversary.starts_early:
                adversary.start(math.inf)
        if flooding:
            net.run_for(self.s.attack_lead_s)
            window_start = net.now
        datagrams_start = net.datagrams_sent
        frames_start = self._message_frames()
        last_event = window_start
        rejoin_at: dict[SimNode, float] = {}
        for i, (sender, recipient, offline) in enumerate(pairs):
            at = window_start + i * SEND_INTERVAL_S
            net.call_at(at, self._sender(sender, recipient, offline))
            if offline:
                back = at + self.rng.uniform(OFFLINE_MIN_S, OFFLINE_MAX_S)
                rejoin_at[recipient] = max(back, rejoin_at.get(recipient, back))
        for sim, at in sorted(rejoin_at.items(), key=lambda item: item[1]):
            net.call_at(at, self._rejoiner(sim))
            last_event = max(last_event, at)
        last_event = max(last_event, window_start + len(pairs) * SEND_INTERVAL_S)
        churn_end = last_event if rejoin_at else last_event + OFFLINE_MIN_S
        attack_end = last_event + self.s.attack_tail_s
        for adversary in self.adversaries:
            if adversary.starts_early or flooding:
                adversary.until = attack_end
            else:
                adversary.start(attack_end)
        if self.s.adversary == "sybil" and self.adversaries:
            net.call_at(window_start, self._sample_sybils)
        if self.s.adversary in ("fill", "hello-flood", "sybil"):
            churn_end = max(churn_end, attack_end)
        if self.s.churn_per_min > 0:
            self.churning = True
            net.call_at(window_start, self._churn_step)
            net.call_at(churn_end, self._stop_churn)
        self.sampling = True
        net.call_at(window_start, self._sample_store)

        quiet_at = self._drain(churn_end, background_rate)
        self.sampling = False
        caused = net.datagrams_sent - datagrams_start - background_rate * (net.now - window_start)
        return self._results(
            background_rate,
            caused,
            self._message_frames() - frames_start,
            quiet_at - window_start,
            time.perf_counter() - wall_start,
        )

    def _drain(self, after: float, background_rate: float) -> float:
        """Run until the network is quiet again after ``after``; returns when it went quiet."""
        net = self.net
        net.run_until(after)
        horizon = after + DRAIN_MAX_S
        quiet_since = net.now
        while net.now < horizon:
            before = net.datagrams_sent
            net.run_for(QUIET_CHECK_INTERVAL_S)
            if net.datagrams_sent - before > background_rate * QUIET_CHECK_INTERVAL_S * 2 + 1:
                quiet_since = net.now
            elif net.now - quiet_since >= QUIET_S:
                return quiet_since
        return net.now

    def _sender(self, sender: SimNode, recipient: SimNode, offline: bool) -> Callable[[], None]:
        def send() -> None:
            if not sender.online:
                # A user sends from an open app: the sender comes back first.
                self.churned.discard(sender)
                self.net.rejoin(sender)
            ids: list[bytes] = []
            public = recipient.node.identity.public
            self.net.do(sender, lambda n: ids.append(n.send_text(public, "hello", self.net.now)))
            self.sent[ids[0]] = _Sent(sender, recipient, self.net.now, offline)

        return send

    def _rejoiner(self, sim: SimNode) -> Callable[[], None]:
        def rejoin() -> None:
            self.rejoined_at[sim] = self.net.now
            self.net.rejoin(sim)

        return rejoin

    def _churn_step(self) -> None:
        if not self.churning:
            return
        eligible = [
            sim
            for sim in self.honest[1:]
            # Offline recipients come and go on their own schedule.
            if sim.online and sim is not self.eclipse_target and sim not in self.rejoined_at
        ]
        if eligible:
            sim = self.rng.choice(eligible)
            self.net.set_online(sim, False)
            self.churned.add(sim)
            back = self.net.now + self.rng.expovariate(1 / CHURN_MEAN_OFFLINE_S)
            self.net.call_at(back, self._churn_return(sim))
        rate_per_s = self.s.churn_per_min * len(self.honest) / 60
        self.net.call_at(self.net.now + self.rng.expovariate(rate_per_s), self._churn_step)

    def _churn_return(self, sim: SimNode) -> Callable[[], None]:
        def back() -> None:
            if sim in self.churned:
                self.churned.discard(sim)
                self.net.rejoin(sim)

        return back

    def _stop_churn(self) -> None:
        self.churning = False
        for sim in sorted(self.churned, key=lambda s: s.endpoint):
            self.net.rejoin(sim)
        self.churned.clear()

    def _sample_store(self) -> None:
        if not self.sampling:
            return
        for sim in self.honest:
            size = internals.store_bytes(sim.node)
            if size > self.store_peak.get(sim, 0):
                self.store_peak[sim] = size
        self.net.call_at(self.net.now + STORE_SAMPLE_INTERVAL_S, self._sample_store)

    def _sample_sybils(self) -> None:
        if not self.sampling:
            return
        self.sybil_share_peak = max(self.sybil_share_peak, self._sybil_share()[0])
        self.net.call_at(self.net.now + STORE_SAMPLE_INTERVAL_S, self._sample_sybils)

    def _sybil_share(self) -> tuple[float, float]:
        """Share of honest table entries that are Sybils, and of honest nodes with any."""
        sybils: set[bytes] = set()
        for adversary in self.adversaries:
            if isinstance(adversary, SybilAdversary):
                sybils |= adversary.sybil_keys
        entries = hit = 0
        infected = 0
        for sim in self.honest:
            keys = internals.table_keys(sim.node)
            entries += len(keys)
            mine = sum(key in sybils for key in keys)
            hit += mine
            infected += mine > 0
        return hit / max(1, entries), infected / max(1, len(self.honest))

    def attack_figures(self) -> dict[str, float]:
        """What the adversaries did and what it cost the honest nodes, by adversary kind."""
        out: dict[str, float] = {}
        for adversary in self.adversaries:
            for name, value in adversary.figures().items():
                out[name] = out.get(name, 0.0) + value
        kind = self.s.adversary
        stores = [internals.store_bytes(sim.node) for sim in self.honest]
        out["honest_store_bytes_max"] = float(max(stores, default=0))
        out["honest_store_bytes_mean"] = sum(stores) / max(1, len(stores))
        # Every reason the honest nodes' stats counted, as they name it (the stats are
        # the one list of reasons: a list kept here named reasons no longer counted and
        # missed new ones).
        refused: Counter[str] = Counter()
        for sim in self.honest:
            refused.update(internals.rejections(sim.node))
        for reason, count in sorted(refused.items()):
            out[f"honest_rejected_{reason}"] = float(count)
        out["bytes_to_forged_endpoints"] = float(self.forged_bytes)
        if kind == "sybil":
            share, infected = self._sybil_share()
            out["sybil_table_share_end"] = share
            out["sybil_table_share_peak"] = max(share, self.sybil_share_peak)
            out["honest_nodes_with_sybils"] = infected
        target = self.eclipse_target
        if target is not None and kind == "hello-flood":
            out["to_victim_delivered"] = self._ratio(lambda o: o.recipient is target) or 0.0
            out["from_victim_delivered"] = self._ratio(lambda o: o.sender is target) or 0.0
            if self.meter is not None:
                out["victim_honest_datagrams"] = float(self.meter.honest_datagrams)
                out["victim_refused_honest"] = float(sum(self.meter.refused.values()))
                out["victim_established_datagrams"] = float(self.meter.established_datagrams)
                out["victim_refused_established"] = float(self.meter.refused_established)
                for reason, count in self.meter.refused.items():
                    out[f"victim_refused_honest_{reason}"] = float(count)
            for reason, count in internals.rejections(target.node).items():
                out[f"victim_rejected_{reason}"] = float(count)
            out["victim_table_size"] = float(internals.table_size(target.node))
        return out

    def _on_event(self, sim: SimNode, event: Event) -> None:
        if isinstance(event, TextReceived):
            self.received.setdefault(event.text_id, self.net.now)
        elif isinstance(event, TextStateChanged) and event.state == "delivered":
            self.acked.setdefault(event.text_id, self.net.now)

    def _message_frames(self) -> int:
        return sum(
            sim.node.stats.sent_by_kind[kind] for sim in self.honest for kind in MESSAGE_FRAME_KINDS
        )

    # ------------------------------------------------------------------ figures

    def _results(
        self, background_rate: float, caused: float, frames: int, window_s: float, wall_s: float
    ) -> Results:
        s = self.s
        sent = max(1, len(self.sent))
        latencies = [
            (self.received[tid] - out.at) * 1000
            for tid, out in self.sent.items()
            if tid in self.received and not out.offline
        ]
        rejoin_delays = [
            self.received[tid] - self.rejoined_at[out.recipient]
            for tid, out in self.sent.items()
            if out.offline and tid in self.received and out.recipient in self.rejoined_at
        ]
        peaks = [float(self.store_peak.get(sim, 0)) for sim in self.honest]
        forged = sum(sim.node.stats.rejected["forged_ack"] for sim in self.honest)
        to_target = from_target = None
        if self.eclipse_target is not None and s.adversary == "eclipse":
            to_target = self._ratio(lambda out: out.recipient is self.eclipse_target)
            from_target = self._ratio(lambda out: out.sender is self.eclipse_target)
        return Results(
            nodes=s.nodes,
            messages=len(self.sent),
            policy=s.policy,
            adversary=s.adversary if s.adversaries else "none",
            adversaries=s.adversaries,
            churn_per_min=s.churn_per_min,
            offline=s.offline,
            join=s.join,
            delivered_ratio=len(self.received.keys() & self.sent.keys()) / sent,
            acked_ratio=len(self.acked.keys() & self.sent.keys()) / sent,
            latency_p50_ms=percentile(latencies, 50),
            latency_p99_ms=percentile(latencies, 99),
            datagrams_per_message=caused / sent,
            message_frames_per_message=frames / sent,
            background_datagrams_per_s=background_rate,
            rejoin_delivery_p50_s=percentile(rejoin_delays, 50),
            rejoin_delivery_p99_s=percentile(rejoin_delays, 99),
            stored_bytes_per_node_p99=percentile(peaks, 99),
            forged_acks_rejected=forged,
            eclipse_to_target_delivered=to_target,
            eclipse_from_target_delivered=from_target,
            attacker_datagrams=sum(a.injected for a in self.adversaries),
            attacker_bytes=sum(a.injected_bytes for a in self.adversaries),
            attack=self.attack_figures() if self.adversaries else {},
            virtual_s=window_s,
            wall_s=wall_s,
            latencies_ms=sorted(latencies),
            rejoin_delays_s=sorted(rejoin_delays),
        )

    def _ratio(self, which: Callable[[_Sent], bool]) -> float | None:
        chosen = [tid for tid, out in self.sent.items() if which(out)]
        if not chosen:
            return None
        return sum(tid in self.received for tid in chosen) / len(chosen)


Run = _Run


def run(scenario: Scenario) -> Results:
    """Build the network, send the messages, wait for quiet and measure."""
    return _Run(scenario).run()
