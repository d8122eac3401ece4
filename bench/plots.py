"""Run the benchmark sweeps behind bench/RESULTS.md and draw their PNG plots.

Every run is a ``comm_tui.sim.scenario.Scenario``; each figure is recorded in
``bench/results.json`` with the ``bench/simulate.py`` command that reproduces it, so
RESULTS.md can quote exact numbers and commands. Plots:

- ``delivery_vs_adversaries.png``: delivered ratio against the share of ``drop`` nodes,
  ours and flood;
- ``latency_cdf.png``: delivery latency CDF at 1,000 nodes, honest and under attack;
- ``datagrams_vs_size.png``: datagrams per message against network size;
- ``rejoin_cdf.png``: time from an offline recipient's return to its delivery.

Flood runs cost ~40x the datagrams of ours, so its sweeps use smaller networks and
fewer messages (``--flood-*`` flags) to finish in minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from comm_tui.protocol.node import Policy
from comm_tui.sim.scenario import AdversaryKind, Results, Scenario, run

BENCH_DIR = Path(__file__).resolve().parent
DROP_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4)
SIZES = (100, 300, 1000, 3000, 10000)


def command(s: Scenario) -> str:
    parts = [
        "python bench/simulate.py",
        f"--nodes {s.nodes} --messages {s.messages} --seed {s.seed} --policy {s.policy}",
    ]
    if s.adversaries:
        parts.append(f"--adversaries {s.adversaries} --adversary {s.adversary}")
    if s.churn_per_min:
        parts.append(f"--churn {s.churn_per_min}")
    if s.offline:
        parts.append(f"--offline {s.offline}")
    parts.append("--json")
    return " ".join(parts)


class Recorder:
    """Runs scenarios once each and keeps every figure for results.json."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def run(self, scenario: Scenario, label: str) -> Results:
        results = run(scenario)
        figures = results.figures()
        self.records.append({"label": label, "command": command(scenario), **figures})
        print(f"{label}: {json.dumps(figures)}", file=sys.stderr, flush=True)
        return results


def cdf(ax: Axes, values: Sequence[float], label: str) -> None:
    if not values:
        return
    ordered = sorted(values)
    ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
    ax.step(ordered, ys, where="post", label=label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=1000, help="size of the headline runs")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--flood-nodes", type=int, default=500, help="size of the adversary sweep")
    parser.add_argument("--flood-messages", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=SIZES[-1], help="largest network to run")
    parser.add_argument("--flood-max-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    seed = args.seed

    # Delivery against the share of dropping nodes, ours beside flood.
    fig, ax = plt.subplots(figsize=(6, 4))
    policies: tuple[Policy, ...] = ("ours", "flood")
    for policy in policies:
        ratios = []
        for fraction in DROP_FRACTIONS:
            scenario = Scenario(
                nodes=args.flood_nodes,
                messages=args.flood_messages,
                seed=seed,
                policy=policy,
                adversaries=fraction,
            )
            ratios.append(rec.run(scenario, f"sweep-{policy}-drop{fraction}").delivered_ratio)
        ax.plot(DROP_FRACTIONS, ratios, marker="o", label=policy)
    ax.set(
        xlabel="share of drop adversaries",
        ylabel="delivered ratio",
        title=f"Delivery under drop attack, {args.flood_nodes} nodes",
    )
    ax.legend()
    fig.savefig(args.out / "delivery_vs_adversaries.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    # Headline runs at --nodes: latency CDF honest and under 20 / 30 % drop.
    fig, ax = plt.subplots(figsize=(6, 4))
    for fraction in (0.0, 0.2, 0.3):
        scenario = Scenario(
            nodes=args.nodes, messages=args.messages, seed=seed, adversaries=fraction
        )
        results = rec.run(scenario, f"headline-ours-drop{fraction}")
        cdf(ax, results.latencies_ms, f"{fraction:.0%} drop")
    ax.set(xscale="log", xlabel="latency (ms, virtual, 40 ms median link)", ylabel="CDF")
    ax.set_title(f"Delivery latency, {args.nodes} nodes, ours")
    ax.legend()
    fig.savefig(args.out / "latency_cdf.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    attacks: tuple[tuple[AdversaryKind, float], ...] = (("forge-ack", 0.2), ("eclipse", 0.02))
    for kind, fraction in attacks:
        scenario = Scenario(
            nodes=args.nodes,
            messages=args.messages,
            seed=seed,
            adversary=kind,
            adversaries=fraction,
        )
        rec.run(scenario, f"headline-ours-{kind}")
    rec.run(
        Scenario(nodes=args.nodes, messages=args.messages, seed=seed, churn_per_min=0.05),
        "headline-ours-churn",
    )

    # Cost against network size.
    fig, ax = plt.subplots(figsize=(6, 4))
    sweeps: tuple[tuple[Policy, int, int], ...] = (
        ("ours", args.max_size, args.messages),
        ("flood", args.flood_max_size, args.flood_messages),
    )
    for policy, largest, messages in sweeps:
        sizes = [n for n in SIZES if n <= largest]
        costs = []
        for n in sizes:
            scenario = Scenario(nodes=n, messages=messages, seed=seed, policy=policy)
            costs.append(rec.run(scenario, f"size-{policy}-{n}").datagrams_per_message)
        ax.plot(sizes, costs, marker="o", label=policy)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="nodes",
        ylabel="datagrams per message",
        title="Cost per message (message + ack + receipts)",
    )
    ax.legend()
    fig.savefig(args.out / "datagrams_vs_size.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    # Offline recipients: time from their return to delivery.
    fig, ax = plt.subplots(figsize=(6, 4))
    rejoins: tuple[tuple[Policy, int, int], ...] = (
        ("ours", args.nodes, args.messages),
        ("flood", args.flood_nodes, args.flood_messages),
    )
    for policy, nodes, messages in rejoins:
        scenario = Scenario(nodes=nodes, messages=messages, seed=seed, policy=policy, offline=0.2)
        results = rec.run(scenario, f"rejoin-{policy}")
        cdf(ax, results.rejoin_delays_s, f"{policy} ({nodes} nodes)")
    ax.set(
        xscale="log",
        xlabel="seconds from rejoining to delivery",
        ylabel="CDF",
        title="Offline recipients (offline 60..240 s)",
    )
    ax.legend()
    fig.savefig(args.out / "rejoin_cdf.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    (args.out / "results.json").write_text(json.dumps(rec.records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
