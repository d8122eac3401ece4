"""How long an honest item waits at a relay that one network filled with items.

The h-red3 scenario of docs/PROTOCOL.md, "8.1 Local caps" (Bandwidth): a relay with a
low relay bandwidth cap and 6 peers (the sans-IO wire harness, ``tests/wire.py``) is
handed ``--hostile`` items at once by one network (one peer of its table, or with
``--forged`` 8 fresh keys at sources in 8 /24s, never validated: one network,
``unvalidated``); then one second later an honest peer of another network hands it one
item. Reported: how long that item waits for its first relay attempt (simulated
seconds, at most 300), and the CPU the run took. A single line of deferred items made
the wait grow with what the hostile network queued; per-network lines (deficit round
robin) keep it about one turn.

    python bench/relay_fair.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.node import EXPIRY_UNIT_MS, SEALED_BYTES, NodeConfig
from comm_tui.protocol.routing import Endpoint
from tests.wire import T0, Wire

RATE = 8192  # bytes/s: an attempt to all of a relay's hops is about a second of it
PEERS = 6
STEP_S = 0.01
LIMIT_S = 300.0


def _frame(rng: random.Random) -> tuple[bytes, pb.Frame]:
    """A message for a random recipient, expiring in a day."""
    recipient = rng.randbytes(20)
    expires = (int(T0 * 1000) // EXPIRY_UNIT_MS + 24) * EXPIRY_UNIT_MS
    msg = pb.Message(recipient=recipient, expires_ms=expires, sealed=rng.randbytes(SEALED_BYTES))
    return recipient, pb.Frame(message=msg)


def _run(wire: Wire, start: float, done: Callable[[], bool], limit: float) -> float:
    """Run the wire in steps from ``start`` until ``done()`` or ``limit`` seconds."""
    now = start
    while not done() and now < start + limit:
        now = round(now + STEP_S, 2)
        wire.tick(now)
    return now - start


def honest_wait(hostile: int, *, forged: bool, seed: int) -> float:
    """The simulated seconds the honest item waits for its first relay attempt."""
    rng = random.Random(seed)
    wire = Wire()
    relay = wire.add(1, NodeConfig(relay_bandwidth_bytes_s=RATE, store_rate_per_s=1e9))
    peers = [wire.add(10 + i) for i in range(PEERS)]
    for peer in peers:
        wire.connect(peer, relay)
    by: list[tuple[Codec, Endpoint]]
    if forged:
        keys = [Identity.from_seed((9000 + k).to_bytes(32, "big")) for k in range(8)]
        by = [(Codec(key), (f"198.18.{100 + k}.1", 7000)) for k, key in enumerate(keys)]
    else:
        by = [(peers[0]._codec, wire.endpoint(peers[0]))]
    for i in range(hostile):
        codec, source = by[i % len(by)]
        _, frame = _frame(rng)
        relay.receive_datagram(codec.encode_frame(relay.identity.key, frame, T0), source, T0)
    wire.pump(T0)
    arrived = T0 + 1
    _run(wire, T0, lambda: False, arrived - T0)
    recipient, frame = _frame(rng)
    honest_peer = peers[-1]
    data = honest_peer._codec.encode_frame(relay.identity.key, frame, arrived)
    relay.receive_datagram(data, wire.endpoint(honest_peer), arrived)
    wire.pump(arrived)
    (entry,) = [e for e in relay._store if e.target == recipient]
    return round(_run(wire, arrived, lambda: entry.attempts > 0, LIMIT_S), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hostile", type=int, action="append", help="items queued (repeat)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    rows = []
    started = time.process_time()
    for forged in (False, True):
        for hostile in args.hostile or [40, 400, 1600]:
            waits = [
                honest_wait(hostile, forged=forged, seed=seed) for seed in range(1, args.seeds + 1)
            ]
            rows.append(
                {
                    "hostile_by": "fresh-keys" if forged else "one-peer",
                    "hostile_items": hostile,
                    "honest_wait_s": waits,
                    "honest_wait_max_s": max(waits),
                }
            )
    result = {"rate_bytes_s": RATE, "rows": rows, "cpu_s": round(time.process_time() - started, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        for row in rows:
            print(
                f"{row['hostile_by']:>10} {row['hostile_items']:>5} items: honest item waits "
                f"{', '.join(f'{w:.2f}' for w in row['honest_wait_s'])} s"
            )
        print(f"cap {RATE} B/s, CPU {result['cpu_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
