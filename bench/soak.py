"""Soak a loopback network under hostile traffic and report delivery, memory and drops.

Runs ``--nodes`` real NodeServices (UDP on 127.0.0.1, each with its own SQLite database in
a temporary directory) in one asyncio loop for ``--minutes``. Honest nodes send each other
texts at ``--text-rate`` per second while a hostile sender floods one victim node from
``--flood-sockets`` sockets at ``--flood-rate`` datagrams per second in total: random
bytes, truncated, bit-flipped and oversized copies of real datagrams it captured, and
verbatim replays of them; and the attacks of issue 8, authenticated by keys of its own:
hellos from fresh keys, Fetch and FindNode requests from keys whose address it never
proves, junk messages from fresh keys to fill the store, messages in the stem (each a
random walk to pay for), captured datagrams reflected with their sender key rewritten, pings
from fresh keys trying to enter the routing table, and invalid curve points in every
key field. After the flood a bounded grace period lets texts in flight arrive. Prints
the delivery ratio, peak RSS, rejections by reason, what the victim withheld under the
amplification limit, the bytes it sent to the hostile sockets against the bytes it got
from them, and whether any hostile endpoint entered its routing table; ``--json``
prints one JSON object instead. Everything is bounded and stops by itself:

    python bench/soak.py --minutes 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comm_tui.crypto.identity import Identity
from comm_tui.net.service import IncomingText, NodeService, OutgoingUpdated, ServiceEvent
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import EXPIRY_UNIT_MS, SEALED_BYTES, NodeConfig
from comm_tui.protocol.routing import Endpoint
from comm_tui.store.db import Database

LOOPBACK = "127.0.0.1"
CONFIG = NodeConfig(backoff_base_s=0.5, backoff_max_s=4.0)
CAPTURE_LIMIT = 256
TICK_S = 0.01
JOIN_BOUND_S = 10.0
GRACE_BOUND_S = 20.0
MAX_DATAGRAM = 65_000


@dataclass
class Honest:
    name: str
    identity: Identity
    db: Database
    service: NodeService
    received: set[str] = field(default_factory=set)
    delivered: set[bytes] = field(default_factory=set)

    def on_event(self, event: ServiceEvent) -> None:
        if isinstance(event, IncomingText):
            self.received.add(event.row.text)
        elif isinstance(event, OutgoingUpdated) and event.row.state == "delivered":
            self.delivered.add(event.row.text_id)


def peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


class Attacker:
    """Writes the hostile datagrams: malformed ones, and authenticated attacks (issue 8)."""

    KINDS = (
        *("random", "truncated", "mutated", "replayed", "oversized", "empty"),
        *("hello_flood", "unproven_fetch", "store_fill", "stem_tamper", "reflected"),
        *("sybil_ping", "invalid_point"),
    )

    def __init__(self, rng: random.Random, victim_key: bytes) -> None:
        self.rng = rng
        self.victim_key = victim_key
        # A few long-lived keys (a key agreement each) and fresh ones where that is the attack.
        self.codecs = [Codec(Identity.generate()) for _ in range(16)]

    def datagram(self, captured: list[bytes]) -> tuple[str, bytes]:
        """One attack datagram and its kind."""
        rng = self.rng
        kind = rng.choice(self.KINDS)
        if not captured and kind in ("truncated", "mutated", "replayed", "oversized", "reflected"):
            kind = "random"
        now = time.time()
        if kind == "random":
            return kind, rng.randbytes(rng.randint(1, 1400))
        if kind == "empty":
            return kind, b""
        if kind == "hello_flood":
            return kind, Codec(Identity.generate()).encode_hello(rng.randbytes(16))
        if kind in ("sybil_ping", "store_fill"):
            codec = Codec(Identity.generate())  # keys are free
            if kind == "sybil_ping":
                frame = pb.Frame(ping=pb.Ping(challenge=rng.randbytes(16)))
            else:
                frame = pb.Frame(message=self._junk(now))
            return kind, codec.encode_frame(self.victim_key, frame, now)
        if kind == "unproven_fetch":
            frame = rng.choice(
                [
                    pb.Frame(fetch=pb.Fetch()),
                    pb.Frame(find_node=pb.FindNode(query_id=rng.randbytes(16), target=bytes(20))),
                ]
            )
            return kind, rng.choice(self.codecs).encode_frame(self.victim_key, frame, now)
        if kind == "stem_tamper":
            message = self._junk(now)
            message.stem = True
            frame = pb.Frame(message=message)
            return kind, rng.choice(self.codecs).encode_frame(self.victim_key, frame, now)
        if kind == "invalid_point":
            key = rng.randbytes(32)  # about half of these are not curve points
            frame = rng.choice(
                [
                    pb.Frame(
                        nodes=pb.Nodes(
                            query_id=rng.randbytes(16),
                            nodes=[pb.NodeInfo(key=key, ip=bytes([127, 0, 0, 1]), port=9)],
                        )
                    ),
                    pb.Frame(
                        ack=pb.Ack(
                            message_id=rng.randbytes(32),
                            recipient_key=key,
                            expires_ms=int(now * 1000) + 9,
                            signature=rng.randbytes(64),
                        )
                    ),
                ]
            )
            if rng.random() < 0.5:
                return kind, pb.Packet(
                    version=2,
                    sender_key=key,
                    hello=pb.Hello(challenge=rng.randbytes(16), padding=bytes(48)),
                ).SerializeToString()
            return kind, rng.choice(self.codecs).encode_frame(self.victim_key, frame, now)
        real = rng.choice(captured)
        if kind == "truncated":
            return kind, real[: rng.randint(0, max(0, len(real) - 1))]
        if kind == "mutated":
            data = bytearray(real)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return kind, bytes(data)
        if kind == "oversized":
            return kind, (real * (MAX_DATAGRAM // max(1, len(real)) + 1))[:MAX_DATAGRAM]
        if kind == "reflected":
            try:
                packet = pb.Packet.FromString(real)
            except Exception:
                return "replayed", real
            packet.sender_key = self.victim_key
            return kind, packet.SerializeToString()
        return kind, real

    def _junk(self, now: float) -> pb.Message:
        return pb.Message(
            recipient=self.rng.randbytes(20),
            expires_ms=(int(now * 1000) // EXPIRY_UNIT_MS + 1) * EXPIRY_UNIT_MS,
            sealed=self.rng.randbytes(SEALED_BYTES),
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    loop = asyncio.get_running_loop()
    captured: list[bytes] = []
    nodes: list[Honest] = []
    sockets: list[socket.socket] = []
    attacks: Counter[str] = Counter()
    sent: dict[str, tuple[Honest, Honest, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="comm-soak-") as tmp:
        try:
            bootstrap: list[Endpoint] = []
            for i in range(args.nodes):
                identity = Identity.generate()
                db = Database.open(Path(tmp) / f"node{i}.db")
                service = NodeService(
                    identity, db, listen=(LOOPBACK, 0), bootstrap=bootstrap, config=CONFIG
                )
                honest = Honest(f"node{i}", identity, db, service)
                service.subscribe(honest.on_event)
                nodes.append(honest)
                bound = await service.start()
                bootstrap = bootstrap or [bound]
            deadline = loop.time() + JOIN_BOUND_S
            while loop.time() < deadline and any(
                n.service.node.peer_count < min(args.nodes - 1, 3) for n in nodes
            ):
                await asyncio.sleep(0.05)

            victim = nodes[0]
            attacker = Attacker(rng, victim.identity.key)
            real_receive = victim.service.node.receive_datagram
            hostile_bytes = {"in": 0, "out": 0}

            def capture(data: bytes, addr: Endpoint, now: float) -> None:
                if addr[1] in hostile_ports:
                    hostile_bytes["in"] += len(data)
                elif len(captured) < CAPTURE_LIMIT:
                    captured.append(data)
                real_receive(data, addr, now)

            real_send = victim.service.node.datagrams_to_send

            def count_sent() -> list[tuple[bytes, Endpoint]]:
                out = real_send()
                hostile_bytes["out"] += sum(len(d) for d, e in out if e[1] in hostile_ports)
                return out

            victim.service.node.datagrams_to_send = count_sent  # type: ignore[method-assign]

            victim.service.node.receive_datagram = capture  # type: ignore[method-assign]
            for _ in range(args.flood_sockets):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((LOOPBACK, 0))
                sock.setblocking(False)
                sockets.append(sock)
            hostile_ports = {s.getsockname()[1] for s in sockets}
            assert victim.service.bound is not None
            target = victim.service.bound

            started = loop.time()
            end = started + args.minutes * 60
            next_text = started
            flood_credit = 0.0
            last = started
            counter = 0
            while (now := loop.time()) < end:
                flood_credit += (now - last) * args.flood_rate
                last = now
                while flood_credit >= 1:
                    flood_credit -= 1
                    kind, data = attacker.datagram(captured)
                    try:
                        rng.choice(sockets).sendto(data, target)
                        attacks[kind] += 1
                    except OSError:
                        attacks["send_failed"] += 1
                while next_text <= now:
                    next_text += 1 / args.text_rate
                    sender, recipient = rng.sample(nodes, 2)
                    text = f"soak {counter} {sender.name}->{recipient.name} {rng.getrandbits(32)}"
                    counter += 1
                    row = sender.service.send_text(recipient.identity.public, text)
                    sent[text] = (sender, recipient, row.text_id)
                await asyncio.sleep(TICK_S)

            flood_s = loop.time() - started
            deadline = loop.time() + GRACE_BOUND_S
            while loop.time() < deadline and not all(
                text in rcpt.received and tid in snd.delivered
                for text, (snd, rcpt, tid) in sent.items()
            ):
                await asyncio.sleep(0.1)

            received = sum(1 for t, (_, r, _) in sent.items() if t in r.received)
            acked = sum(1 for _, (s, _, tid) in sent.items() if tid in s.delivered)
            duplicates = sum(
                n.db.history_count(m.identity.address) for n in nodes for m in nodes if n is not m
            ) - (2 * received + (len(sent) - received))
            rejected: Counter[str] = Counter()
            for n in nodes:
                rejected.update(n.service.node.stats.rejected)
            stats = [n.service.node.stats for n in nodes]
            return {
                "nodes": args.nodes,
                "minutes": args.minutes,
                "flood_seconds": round(flood_s, 1),
                "texts_sent": len(sent),
                "texts_received": received,
                "texts_acknowledged": acked,
                "delivery_ratio": round(received / len(sent), 4) if sent else None,
                "ack_ratio": round(acked / len(sent), 4) if sent else None,
                "extra_history_rows": duplicates,
                "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
                "hostile_datagrams": dict(sorted(attacks.items())),
                "hostile_total": sum(attacks.values()),
                "rejected_total": sum(rejected.values()),
                "rejected_by_reason": dict(sorted(rejected.items())),
                "victim_rejected_by_reason": dict(
                    sorted(victim.service.node.stats.rejected.items())
                ),
                "victim_datagrams_in": victim.service.node.stats.datagrams_in,
                "datagrams_in": sum(s.datagrams_in for s in stats),
                "datagrams_out": sum(s.datagrams_out for s in stats),
                "bytes_in": sum(s.bytes_in for s in stats),
                "bytes_out": sum(s.bytes_out for s in stats),
                "victim_store_items": victim.service.node.status().stored_items,
                "victim_withheld": victim.service.node.stats.withheld,
                "bytes_from_hostile_sockets": hostile_bytes["in"],
                "bytes_to_hostile_sockets": hostile_bytes["out"],
                "hostile_in_victim_table": sum(
                    1 for peer in victim.service.node.peers() if peer.endpoint[1] in hostile_ports
                ),
            }
        finally:
            for sock in sockets:
                sock.close()
            for n in nodes:
                await n.service.stop()
                n.db.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to flood")
    parser.add_argument("--nodes", type=int, default=6, help="honest nodes (at least 2)")
    parser.add_argument("--text-rate", type=float, default=5.0, help="legit texts per second")
    parser.add_argument("--flood-rate", type=float, default=2000.0, help="hostile datagrams/s")
    parser.add_argument("--flood-sockets", type=int, default=8, help="hostile source ports")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.minutes <= 0 or args.text_rate <= 0 or args.flood_sockets < 1:
        parser.error("need --nodes >= 2, --minutes > 0, --text-rate > 0, --flood-sockets >= 1")
    if args.flood_rate < 0:
        parser.error("--flood-rate must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(run(args))
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for reason, n in value.items():
                print(f"  {reason:<24} {n}")
        else:
            print(f"{key:<26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
