"""The attack table of issue 8: each attack, honest delivery, the attacker's and the victim's cost.

Runs every attack in its own child process (one after another, never two at once), so
each row's peak RSS is that attack's alone, and prints a table (``--json``: one JSON
object). Rows: a baseline without attackers, the simulator's adversaries (``drop``,
``forge-ack``, ``eclipse``, ``tamper``, ``fill``, ``sybil``, ``hello-flood``; see
``comm_tui/sim/adversary.py``), a direct measurement of the Fetch amplification of
finding 1 and one of the validated-pairs flush (``pair-flush``: one host validating a
pair per source port, docs/PROTOCOL.md "5.1"). ``--quick`` shrinks everything to a
smoke test:

    python bench/attacks.py            # the figures in bench/RESULTS.md
    python bench/attacks.py --quick --json

Columns: *delivered* = share of honest texts whose recipient got them; *attacker
datagrams / bytes* = what the adversaries injected; *amplification* = bytes honest nodes
sent to forged addresses per byte the attacker sent (for ``fetch-amp``: bytes out to the
forged address per byte of the one Fetch); *store max* = the fullest honest relay store
at the end; *honest CPU s* = wall seconds the honest cores spent (sum), *victim CPU s* =
the busiest honest node's; *peak RSS* = the child process's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Attack:
    name: str
    kind: str  # Scenario.adversary, or "none" / "fetch-amp"
    share: float
    nodes: int
    messages: int
    extra: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)


ATTACKS = [
    Attack("baseline", "none", 0.0, 1000, 300, quick={"nodes": 40, "messages": 10}),
    Attack("drop", "drop", 0.2, 1000, 300, quick={"nodes": 40, "messages": 10}),
    Attack("forge-ack", "forge-ack", 0.2, 1000, 300, quick={"nodes": 40, "messages": 10}),
    Attack(
        "eclipse",
        "eclipse",
        0.02,
        1000,
        300,
        quick={"nodes": 50, "messages": 10, "eclipse_prefix_bits": 6},
    ),
    Attack("tamper", "tamper", 0.2, 1000, 300, quick={"nodes": 40, "messages": 10}),
    Attack(
        "fill",
        "fill",
        0.1,
        100,
        40,
        extra={
            "store_scale": 256,
            "fill_rate_per_s": 200.0,
            "attack_lead_s": 5.0,
            "attack_tail_s": 5.0,
        },
        quick={
            "nodes": 30,
            "messages": 6,
            "store_scale": 1024,
            "fill_rate_per_s": 50.0,
            "attack_lead_s": 2.0,
            "attack_tail_s": 2.0,
        },
    ),
    Attack(
        "sybil",
        "sybil",
        0.1,
        300,
        100,
        quick={"nodes": 40, "messages": 10, "sybil_pool": 256, "sybil_per_victim": 4},
    ),
    Attack(
        "hello-flood",
        "hello-flood",
        0.01,
        200,
        100,
        extra={"attack_tail_s": 10.0},
        quick={
            "nodes": 40,
            "messages": 10,
            "adversaries": 0.025,
            "attack_lead_s": 2.0,
            "attack_tail_s": 1.0,
        },
    ),
    Attack("fetch-amp", "fetch-amp", 0.0, 1, 1, extra={"items": 520, "fetches": 3}),
    Attack("pair-flush", "pair-flush", 0.0, 1, 0, extra={"ports": 20000}),
]
QUICK_FETCH = {"items": 100, "fetches": 2}
# The quick flush shrinks the table of validated pairs itself, so that 600 ports fill it.
QUICK_FLUSH = {"ports": 600, "table": 512}


def pair_flush(*, ports: int, table: int | None = None) -> dict[str, Any]:
    """The validated-pairs flush, measured: an honest client proves its address to a
    relay, then one attacker key validates a pair from each of ``ports`` source ports of
    one host (a ping, then the pong to the relay's challenge: 2 datagrams a pair).
    Reports the datagrams it took until the client's proof was forgotten (None: never),
    and whether the client's next FindNode is still answered at once (its proof kept)
    or challenged again. ``table``: a smaller table of validated pairs (quick runs)."""
    from comm_tui.crypto.identity import Identity
    from comm_tui.protocol import admission
    from comm_tui.protocol import wire_pb2 as pb
    from comm_tui.protocol.codec import Codec
    from comm_tui.protocol.node import Node

    if table is not None:
        admission.VALIDATED_PAIRS = table
    now = 1_700_000_000.0
    relay = Node(Identity.from_seed(bytes(32)), now)
    key = relay.identity.key
    honest_at, honest = ("198.51.100.10", 4000), Codec(Identity.from_seed(b"h" * 32))
    attacker = Codec(Identity.from_seed(b"a" * 32))
    datagrams = bytes_in = 0
    lost_after: int | None = None

    def prove(codec: Codec, at: tuple[str, int]) -> None:
        nonlocal datagrams, bytes_in
        frame = pb.Frame(ping=pb.Ping(challenge=bytes(16)), client=True)
        for _ in range(2):
            data = codec.encode_frame(key, frame, now)
            relay.receive_datagram(data, at, now)
            if codec is attacker:
                datagrams, bytes_in = datagrams + 1, bytes_in + len(data)
            sent = [codec.decode(d, now).frame for d, dest in relay.datagrams_to_send()]
            pings = [f for f in sent if f is not None and f.HasField("ping")]
            if not pings:
                return
            frame = pb.Frame(pong=pb.Pong(challenge=pings[0].ping.challenge), client=True)

    started = time.process_time()
    prove(honest, honest_at)
    for port in range(1, ports + 1):
        now += 0.001
        prove(attacker, ("203.0.113.7", port))
        if lost_after is None and not relay._is_validated(honest.identity.key, honest_at):
            lost_after = datagrams
    cpu = time.process_time() - started
    find = pb.Frame(find_node=pb.FindNode(query_id=bytes(16), target=bytes(20)))
    relay.receive_datagram(honest.encode_frame(key, find, now), honest_at, now)
    answers = [honest.decode(d, now).frame for d, dest in relay.datagrams_to_send()]
    bodies = {f.WhichOneof("body") for f in answers if f is not None}
    return {
        "nodes": 1,
        "adversaries": 1,
        "attacker_datagrams": datagrams,
        "attacker_bytes": bytes_in,
        "victim_cpu_s": round(cpu, 3),
        "details": {
            "pairs_table": admission.VALIDATED_PAIRS,
            "honest_proof_lost_after_datagrams": lost_after,
            "honest_find_node_answered_at_once": "nodes" in bodies and "ping" not in bodies,
        },
    }


def run_one(attack: Attack, quick: bool, seed: int) -> dict[str, Any]:
    """One row, measured in this process."""
    started = time.perf_counter()
    if attack.kind == "fetch-amp":
        from comm_tui.sim.adversary import fetch_amplification

        params = QUICK_FETCH if quick else attack.extra
        row: dict[str, Any] = fetch_amplification(
            items=int(params["items"]), fetches=int(params["fetches"]), seed=seed
        )
    elif attack.kind == "pair-flush":
        row = pair_flush(**(QUICK_FLUSH if quick else attack.extra))
    else:
        row = _run_scenario(attack, quick, seed)
    row["attack"] = attack.name
    row["wall_s"] = round(time.perf_counter() - started, 2)
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def _run_scenario(attack: Attack, quick: bool, seed: int) -> dict[str, Any]:
    from comm_tui.sim.scenario import Run, Scenario

    params: dict[str, Any] = {"nodes": attack.nodes, "messages": attack.messages}
    params |= attack.extra
    if quick:
        params |= attack.quick
    share = params.pop("adversaries", attack.share)
    scenario = Scenario(
        seed=seed,
        adversary=attack.kind if attack.kind != "none" else "drop",  # type: ignore[arg-type]
        adversaries=share,
        **params,
    )
    run = Run(scenario)
    results = run.run()
    cpu = [sim.cpu_s for sim in run.honest]
    attacker_bytes = results.attacker_bytes
    figures = results.attack
    forged = figures.get("bytes_to_forged_endpoints", 0.0)
    extra = {
        k: v
        for k, v in figures.items()
        if v and not k.startswith("honest_store") and k != "bytes_to_forged_endpoints"
    }
    if results.eclipse_to_target_delivered is not None:
        extra["to_target_delivered"] = results.eclipse_to_target_delivered
        extra["from_target_delivered"] = results.eclipse_from_target_delivered or 0.0
    if attack.kind == "fill":
        extra["store_scale"] = scenario.store_scale
        extra["store_total_bytes_per_node"] = 64 * 1024 * 1024 // scenario.store_scale
    return {
        "nodes": scenario.nodes,
        "adversaries": round(scenario.nodes * scenario.adversaries),
        "messages": results.messages,
        "delivered": round(results.delivered_ratio, 4),
        "acked": round(results.acked_ratio, 4),
        "latency_p99_ms": None if results.latency_p99_ms is None else round(results.latency_p99_ms),
        "attacker_datagrams": results.attacker_datagrams,
        "attacker_bytes": attacker_bytes,
        "amplification": round(forged / attacker_bytes, 3) if attacker_bytes else None,
        "store_max_bytes": int(figures.get("honest_store_bytes_max", 0)),
        "honest_cpu_s": round(sum(cpu), 2),
        "victim_cpu_s": round(max(cpu, default=0.0), 3),
        "details": {k: round(v, 4) for k, v in extra.items()},
    }


def run_all(names: list[str], quick: bool, seed: int) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        command = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--row"]
        command += ["--seed", str(seed)] + (["--quick"] if quick else [])
        out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"attack {name} failed:\n{out.stderr}")
        rows.append(json.loads(out.stdout))
    return rows


COLUMNS = [
    ("attack", "attack"),
    ("nodes", "nodes"),
    ("adversaries", "bad"),
    ("delivered", "delivered"),
    ("latency_p99_ms", "p99 ms"),
    ("attacker_datagrams", "att. dgrams"),
    ("attacker_bytes", "att. bytes"),
    ("amplification", "amplif."),
    ("store_max_bytes", "store max B"),
    ("honest_cpu_s", "honest CPU s"),
    ("victim_cpu_s", "victim CPU s"),
    ("peak_rss_mib", "RSS MiB"),
    ("wall_s", "wall s"),
]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for _, title in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else str(row.get(key)) for key, _ in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    for row in rows:
        if row.get("details"):
            lines.append(f"{row['attack']}: " + json.dumps(row["details"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [a.name for a in ATTACKS]
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=names, action="append", help="run only these rows")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        (attack,) = [a for a in ATTACKS if a.name == args.only[0]]
        print(json.dumps(run_one(attack, args.quick, args.seed)))
        return 0
    started = time.perf_counter()
    rows = run_all(args.only or names, args.quick, args.seed)
    total = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps({"quick": args.quick, "seed": args.seed, "wall_s": total, "rows": rows}))
    else:
        print(table(rows))
        print(f"total wall {total} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
