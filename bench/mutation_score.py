"""The mutation score per module, from what ``mutmut run`` left in ``mutants/``.

``mutmut results`` lists mutants one by one; bench/MUTATION.md wants one line per module:
killed, survived, no tests, timeout, not yet checked, and the share killed of those that
were checked and reached by a test. mutmut keeps each verdict as the exit code of the
test run (its ``.meta`` files); the codes are mutmut's (``mutmut.stats``).

    .venv/bin/python bench/mutation_score.py              # the table
    .venv/bin/python bench/mutation_score.py --survivors  # and every surviving mutant
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["killed", "survived", "no tests", "timeout", "not checked"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    options = parser.parse_args()
    metas = sorted((ROOT / "mutants").glob("comm_tui/**/*.py.meta"))
    if not metas:
        raise SystemExit("no mutants/: run `mutmut run` first")
    print("| module | " + " | ".join(COLUMNS) + " | killed % |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    survivors: list[str] = []
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        survivors += [k for k, code in codes.items() if status_by_exit_code[code] == "survived"]
        tried = counts["killed"] + counts["survived"] + counts["timeout"]
        share = f"{100 * (counts['killed'] + counts['timeout']) / tried:.0f}" if tried else "-"
        module = str(meta.relative_to(ROOT / "mutants")).removesuffix(".py.meta")
        row = " | ".join(str(counts[c]) for c in COLUMNS)
        print(f"| {module.replace('/', '.')} | {row} | {share} |")
    if options.survivors:
        print()
        print("\n".join(sorted(survivors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
