"""Simulate a comm network and measure delivery, latency, hops, cost and rejoin time.

Drives thousands of unmodified protocol cores in one process on a virtual clock
(``comm_tui.sim``). ``--json`` prints one JSON object for scripts and plots; without
it a readable table. Example, the issue-4 headline run:

    python bench/simulate.py --nodes 1000 --messages 300 --seed 1 --adversaries 0.2 --json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from typing import get_args

from comm_tui.protocol.node import Policy
from comm_tui.sim.network import LinkModel
from comm_tui.sim.scenario import AdversaryKind, JoinMode, Results, Scenario, run

PROFILE_LINES = 25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="network size incl. adversaries")
    parser.add_argument("--messages", type=int, default=300, help="texts sent, 20 per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--policy", choices=get_args(Policy), default="ours")
    parser.add_argument("--adversaries", type=float, default=0.0, help="share of all nodes")
    parser.add_argument("--adversary", choices=get_args(AdversaryKind), default="drop")
    parser.add_argument(
        "--churn", type=float, default=0.0, help="share of honest nodes going offline per minute"
    )
    parser.add_argument(
        "--offline", type=float, default=0.0, help="share of messages sent to offline recipients"
    )
    parser.add_argument(
        "--join",
        choices=get_args(JoinMode),
        default="warm",
        help="warm: start from converged routing tables; protocol: every node joins over the wire",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=40.0, help="median one-way link latency"
    )
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    parser.add_argument(
        "--store-scale",
        type=int,
        default=1,
        help="divide relay-store quotas by this (a short `fill` run fills them sooner)",
    )
    parser.add_argument("--samples", action="store_true", help="add raw latency samples to --json")
    parser.add_argument("--profile", action="store_true", help="print the cProfile hot spots")
    args = parser.parse_args(argv)
    for name in ("adversaries", "churn", "offline", "loss"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            parser.error(f"--{name} must be between 0 and 1")
    if args.nodes < 3 or args.messages < 1:
        parser.error("need at least 3 nodes and 1 message")
    return args


def scenario_of(args: argparse.Namespace) -> Scenario:
    return Scenario(
        nodes=args.nodes,
        messages=args.messages,
        seed=args.seed,
        policy=args.policy,
        adversary=args.adversary,
        adversaries=args.adversaries,
        churn_per_min=args.churn,
        offline=args.offline,
        join=args.join,
        link=LinkModel(latency_s=args.latency_ms / 1000, loss=args.loss),
        store_scale=max(1, args.store_scale),
    )


def table(results: Results) -> str:
    rows = results.figures()
    width = max(len(name) for name in rows)
    return "\n".join(f"{name:<{width}}  {'-' if v is None else v}" for name, v in rows.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = scenario_of(args)
    if args.profile:
        profiler = cProfile.Profile()
        results = profiler.runcall(run, scenario)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(PROFILE_LINES)
    else:
        results = run(scenario)
    if args.json:
        figures = results.figures()
        if args.samples:
            figures["latencies_ms"] = [round(x, 3) for x in results.latencies_ms]
            figures["rejoin_delays_s"] = [round(x, 4) for x in results.rejoin_delays_s]
        print(json.dumps(figures))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
