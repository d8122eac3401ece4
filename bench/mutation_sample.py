"""A module's mutation score from a seeded uniform random sample of its mutants.

A full mutmut pass over ``comm_tui/protocol/node.py`` (about 4,100 mutants) takes hours on
the shared 2-core machine; a uniform random sample of a few hundred gives the score within
a few points, and the same seed gives the same sample on any machine (the mutant names are
sorted before sampling, and mutmut numbers them deterministically from the source). This
script draws the sample, has ``mutmut run`` check exactly those mutants (mutmut's own
verdicts: each mutant runs only the selected tests that reach its function, fastest
first, and mutmut caches every verdict, so an interrupted run resumes), then prints the
estimate with a 95% Wilson interval.

    .venv/bin/python bench/mutation_sample.py comm_tui.protocol.node --sample 300 --seed 14
    .venv/bin/python bench/mutation_sample.py comm_tui.protocol.node --sample 300 --seed 14 --report
    .venv/bin/python bench/mutation_sample.py comm_tui.protocol.lookup comm_tui.crypto.x3dh \\
        --sample 300 --seed 14      # a module with fewer mutants is checked whole

``--report`` only reads the verdicts already in ``mutants/`` (no run); ``--markdown``
prints bench/MUTATION.md's table. ``--equivalent``
names a file of mutants judged equivalent (one name a line, ``#`` comments): they leave
the denominator, as in bench/MUTATION.md's "score" column. ``--killed-now`` names a file
of survivors that tests added since the pass kill (checked with
``bench/mutation_focus.py --survivors``), counted as killed. The population is every
mutant of the module, so mutants no selected test reaches ("no tests") count against the
score, as they do in a full pass.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
Z_95 = 1.959963984540054  # the two-sided 95% quantile of the normal distribution


def all_mutants(module: str) -> dict[str, int | None]:
    """Every mutant mutmut generated for ``module``, with its verdict (None: not checked)."""
    meta = MUTANTS / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        raise SystemExit(f"{meta} missing: run `mutmut run` once to generate the mutants")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def draw(names: list[str], size: int, seed: int) -> list[str]:
    """A uniform sample without replacement, the same for the same names, size and seed."""
    ordered = sorted(names, key=_order)
    return sorted(random.Random(seed).sample(ordered, min(size, len(ordered))), key=_order)


def _order(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval for a proportion: unlike p +/- 1.96 sqrt(p(1-p)/n) it
    stays inside [0, 1] and is honest near 100%, where a mutation score lives."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = Z_95 * Z_95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z_95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def read_names(path: Path | None) -> set[str]:
    """Mutant names from a file, one a line; blank lines and ``#`` comments ignored."""
    if path is None:
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


COLUMNS = ["killed", "timeout", "survived", "no tests", "killed now", "equivalent", "not checked"]


def report(
    module: str, chosen: list[str], equivalent: set[str], killed_now: set[str], markdown: bool
) -> None:
    """Print one module's counts over ``chosen`` and the score with its 95% interval (as a
    row of bench/MUTATION.md's table with ``markdown``). Survivors and mutants no test
    reaches count against the score unless judged equivalent or killed by a newer test."""
    verdicts = all_mutants(module)
    counts: Counter[str] = Counter()
    survivors = []
    for name in chosen:
        code = verdicts[name]
        status = "not checked" if code is None else status_by_exit_code[code]
        if status in ("survived", "no tests") and name in equivalent:
            status = "equivalent"
        elif status in ("survived", "no tests") and name in killed_now:
            status = "killed now"
        elif status in ("survived", "no tests"):
            survivors.append(f"{status:8} {name}")
        counts[status] += 1
    checked = len(chosen) - counts["not checked"]
    judged = checked - counts["equivalent"]
    killed = counts["killed"] + counts["timeout"] + counts["killed now"]
    low, high = wilson(killed, judged)
    score = f"{100 * killed / judged:.1f}%" if judged else "-"
    interval = f"{100 * low:.1f}-{100 * high:.1f}%" if judged else "-"
    if markdown:
        cells = [module.removeprefix("comm_tui."), str(len(verdicts)), str(len(chosen))]
        cells += [str(counts[c]) for c in COLUMNS] + [score, interval]
        print("| " + " | ".join(cells) + " |")
        return
    print(f"{module}: {len(verdicts)} mutants, {len(chosen)} drawn")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if judged:
        print(
            f"  score {score} of {judged} non-equivalent checked (95% Wilson interval {interval})"
        )
    for line in survivors:
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", help="dotted names, e.g. comm_tui.protocol.node")
    parser.add_argument(
        "--sample", type=int, required=True, help="mutants per module (all, if it has fewer)"
    )
    parser.add_argument("--seed", type=int, required=True, help="the random seed")
    parser.add_argument("--report", action="store_true", help="no run: report cached verdicts")
    parser.add_argument("--max-children", type=int, default=2, help="passed to mutmut run")
    parser.add_argument("--equivalent", type=Path, help="file of mutants judged equivalent")
    parser.add_argument("--killed-now", type=Path, help="file of survivors killed by new tests")
    parser.add_argument("--list", action="store_true", help="print the drawn names and stop")
    parser.add_argument("--markdown", action="store_true", help="one table row per module")
    options = parser.parse_args()
    drawn = {m: draw(list(all_mutants(m)), options.sample, options.seed) for m in options.modules}
    if options.list:
        print("\n".join(name for names in drawn.values() for name in names))
        return 0
    if not options.report:
        # mutmut re-runs every mutant it is given by name, cached or not: give it only the
        # unchecked ones, so a stopped run resumes instead of starting over.
        todo = [n for m, names in drawn.items() for n in names if all_mutants(m)[n] is None]
        if todo:
            mutmut = Path(sys.executable).with_name("mutmut")
            args = [str(mutmut), "run", "--max-children", str(options.max_children), *todo]
            subprocess.run(args, cwd=ROOT, check=False)
    equivalent = read_names(options.equivalent)
    killed_now = read_names(options.killed_now)
    if options.markdown:
        head = ["module", "mutants", "drawn", *COLUMNS, "score", "95% interval"]
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
    for module, names in drawn.items():
        report(module, names, equivalent, killed_now, options.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
