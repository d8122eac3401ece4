"""Origin guessing: how often colluding observers name the sender of a text (issue 9).

A share of the nodes (``--observers``, several shares in one call) relay honestly and
pool everything they receive: each opens its own datagrams with its own keys, as that
relay does. For every text they pick a suspect with the *first-spy* estimator: the node
that handed a part of the text to an observer first. Where a copy carries a hop count
(the protocol before issue 9), a copy with ``hops = 0`` names its sender for certain and
wins over the first sighting.

Texts go between honest nodes that are not observers (an observing recipient learns the
sender from the letter anyway). Figures per observer share:

- *recall*: texts whose sender the observers named correctly, over all texts;
- *precision*: of the texts the observers saw at all (so made a guess), the share
  guessed right;
- *first hop*: texts whose first relay (the first node other than the recipient that the
  sender handed a part to) was an observer; that observer sees the true sender, so
  recall cannot fall much below this share in any design where one peer takes a text
  from its sender first;
- *re-sender* recall and precision: a second estimator, the node that handed the
  observers copies of the text most often (ties: the earliest). It aims at senders that
  retry: with ``--offline``, that share of the texts goes to recipients that stay
  offline for the whole run, whose senders keep re-sending them.

The network, the observers and the senders and recipients are drawn from ``--seed``
alone, so the same command on the code before the change (a ``git worktree`` of it)
measures the same run:

    python bench/origin.py --json > bench/origin_after.json
    git worktree add /tmp/before 8bf7b01
    (cd /tmp/before && PYTHONPATH=. python $OLDPWD/bench/origin.py --json) > origin_before.json

It reads what it needs beyond the driver API (the ids of a text's parts, in the sender's
relay store) in ``_part_ids``, which both versions of the core share.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from comm_tui.crypto.seal import message_id
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec, Rejected
from comm_tui.protocol.node import Node
from comm_tui.protocol.routing import Endpoint
from comm_tui.sim.network import SimNetwork, SimNode
from comm_tui.sim.topology import warm_start

SETTLE_S = 30.0
SEND_INTERVAL_S = 0.05
DRAIN_S = 120.0
HAS_HOPS = "hops" in pb.Message.DESCRIPTOR.fields_by_name


@dataclass
class Sighting:
    at: float
    predecessor: Endpoint
    hops_zero: bool
    copies: Counter[Endpoint]


@dataclass
class Text:
    sender: SimNode
    recipient: SimNode
    parts: set[bytes]
    first_hop: Endpoint | None = None


def _part_ids(node: Node, text_id: bytes) -> set[bytes]:
    """The ids of a text's parts: the sender keeps each in its relay store until acked."""
    return set(node.outgoing_parts(text_id))


def measure(nodes: int, texts: int, share: float, seed: int, offline: float) -> dict[str, Any]:
    """One run: ``share`` of ``nodes`` observe while ``texts`` texts go between the others,
    ``offline`` of them to recipients that stay offline."""
    started = time.perf_counter()
    rng = random.Random(f"origin-{seed}")
    net = SimNetwork(seed)
    everyone = [net.add_node() for _ in range(nodes)]
    warm_start(net, everyone, rng)
    net.run_for(SETTLE_S)
    observers = {sim.endpoint: sim for sim in rng.sample(everyone, round(nodes * share))}
    honest = [sim for sim in everyone if sim.endpoint not in observers]
    absent = rng.sample(honest, round(len(honest) * 0.1)) if offline else []
    online = [sim for sim in honest if sim not in absent]
    for sim in absent:
        net.set_online(sim, False)
    codecs = {endpoint: Codec(sim.node.identity) for endpoint, sim in observers.items()}
    sightings: dict[bytes, Sighting] = {}
    by_sender: dict[Endpoint, list[Text]] = {}

    def tap(data: bytes, source: Endpoint, dest: Endpoint) -> None:
        for text in by_sender.get(source, ()):
            if text.first_hop is None and dest != text.recipient.endpoint:
                text.first_hop = dest
        codec = codecs.get(dest)
        if codec is None:
            return
        try:
            frame = codec.decode(data, net.now).frame
        except Rejected:
            return
        if frame is None or frame.WhichOneof("body") != "message":
            return
        msg = frame.message
        item = message_id(msg.recipient, msg.expires_ms, msg.sealed)
        hops_zero = getattr(msg, "hops", 1) == 0  # only before issue 9
        seen = sightings.get(item)
        if seen is None or (hops_zero and not seen.hops_zero):
            copies = seen.copies if seen is not None else Counter()
            seen = sightings[item] = Sighting(net.now, source, hops_zero, copies)
        seen.copies[source] += 1

    net.tap = tap
    sent: list[Text] = []

    def sender_of(sender: SimNode, recipient: SimNode) -> Callable[[], None]:
        def send() -> None:
            text = Text(sender, recipient, set())
            by_sender.setdefault(sender.endpoint, []).append(text)
            ids: list[bytes] = []
            public = recipient.node.identity.public
            net.do(sender, lambda n: ids.append(n.send_text(public, "hello", net.now)))
            by_sender[sender.endpoint].remove(text)
            text.parts = _part_ids(sender.node, ids[0])
            sent.append(text)

        return send

    for i in range(texts):
        sender, recipient = rng.sample(online, 2)
        if absent and rng.random() < offline:
            recipient = rng.choice(absent)
        net.call_at(net.now + i * SEND_INTERVAL_S, sender_of(sender, recipient))
    net.run_for(texts * SEND_INTERVAL_S + DRAIN_S)

    seen = correct = first_hop_observed = resent_correct = 0
    for text in sent:
        if text.first_hop in observers:
            first_hop_observed += 1
        sights = [sightings[p] for p in text.parts if p in sightings]
        if not sights:
            continue
        seen += 1
        certain = [s for s in sights if s.hops_zero]
        guess = min(certain or sights, key=lambda s: s.at).predecessor
        correct += guess == text.sender.endpoint
        copies: Counter[Endpoint] = Counter()
        for sight in sights:
            copies.update(sight.copies)
        first = {s.predecessor: s.at for s in sorted(sights, key=lambda s: -s.at)}
        resender = max(copies, key=lambda e: (copies[e], -first.get(e, net.now)))
        resent_correct += resender == text.sender.endpoint
    return {
        "observers": share,
        "observer_nodes": len(observers),
        "texts": len(sent),
        "seen": seen,
        "correct": correct,
        "recall": round(correct / max(1, len(sent)), 4),
        "precision": round(correct / seen, 4) if seen else None,
        "first_hop_observed": round(first_hop_observed / max(1, len(sent)), 4),
        "offline": offline,
        "resender_recall": round(resent_correct / max(1, len(sent)), 4),
        "resender_precision": round(resent_correct / seen, 4) if seen else None,
        "hops_on_wire": HAS_HOPS,
        "datagrams": net.datagrams_sent,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--observers", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--offline", type=float, default=0.0, help="share of texts to recipients that stay offline"
    )
    parser.add_argument(
        "--stem-forward",
        type=float,
        default=None,
        help="override STEM_FORWARD (the stem's forward probability) to compare values",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.stem_forward is not None:
        if not hasattr(node_module, "STEM_FORWARD"):
            parser.error("this version of the core has no stem")
        node_module.STEM_FORWARD = args.stem_forward
    rows = [
        measure(args.nodes, args.texts, share, args.seed, args.offline) for share in args.observers
    ]
    out = {
        "nodes": args.nodes,
        "texts": args.texts,
        "seed": args.seed,
        "stem_forward": getattr(node_module, "STEM_FORWARD", None),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for row in rows:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
