"""Run one module's mutants against a few named tests, without mutmut's full stats run.

``mutmut run`` first runs every selected test once to learn which tests reach which
function (minutes on a shared machine), and again whenever the selection changes. While
writing a test to kill a module's survivors that is too slow a loop: this script takes
the mutants mutmut generated (``mutants/``, after one ``mutmut run``), copies the named
test files in, and runs each mutant of the module against just those tests, through the
same switch mutmut uses (the ``MUTANT_UNDER_TEST`` variable its trampolines read).

    .venv/bin/python bench/mutation_focus.py comm_tui.protocol.ratelimit tests/test_ratelimit.py

With ``--survivors`` only the mutants mutmut's last run left alive are tried: the loop
for checking that new tests kill them. With ``--no-tests`` only those no selected test
reaches (mutmut's "no tests"): the loop for checking that tests outside the selection, or
new ones, kill them. ``--only NAME`` (repeatable) tries just the named mutants. Tests may
be files or pytest node ids (``tests/test_x.py::test_y``). It prints each surviving mutant's name
(``mutmut show NAME`` prints its diff). A mutant that survives here may still die by a
test not named; the score in bench/MUTATION.md says which figures are mutmut's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"


def mutant_names(module: str, codes_wanted: set[int] | None) -> list[str]:
    """The mutants mutmut generated for ``module`` (from its ``.meta`` file); with
    ``codes_wanted``, those whose last verdict has one of these exit codes (mutmut.stats:
    0 survived, 33 no tests)."""
    meta = MUTANTS / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        raise SystemExit(f"{meta} missing: run `mutmut run` once to generate the mutants")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    names = [k for k, code in codes.items() if codes_wanted is None or code in codes_wanted]
    return sorted(names, key=_order)


def _order(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def verdict(name: str, tests: list[str], timeout_s: float) -> str:
    """Run ``tests`` with mutant ``name`` switched on: killed, survived or timeout."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name}
    args = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            args, cwd=MUTANTS, env=env, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if done.returncode == 0:
        return "survived"
    if done.returncode == 1:
        return "killed"
    return f"error {done.returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="a dotted module name, e.g. comm_tui.crypto.ack")
    parser.add_argument("tests", nargs="+", help="test files (paths from the repository root)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument(
        "--survivors", action="store_true", help="only the mutants mutmut's last run left alive"
    )
    parser.add_argument(
        "--no-tests", action="store_true", help="only the mutants no selected test reaches"
    )
    parser.add_argument("--only", action="append", help="only this mutant (repeatable)")
    options = parser.parse_args()
    for test in options.tests:
        path = test.split("::", 1)[0]
        shutil.copy(ROOT / path, MUTANTS / path)
    wanted = ({0} if options.survivors else set()) | ({33} if options.no_tests else set())
    names = mutant_names(options.module, wanted or None)
    if options.only:
        names = [name for name in names if name in options.only]
    counts: dict[str, int] = {}
    survivors = []
    for name in names:
        result = verdict(name, options.tests, options.timeout)
        counts[result] = counts.get(result, 0) + 1
        if result != "killed":
            survivors.append((name, result))
            print(f"{result:9} {name}", flush=True)
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
