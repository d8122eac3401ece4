"""Re-apply the twelve rule mutations of issue 14 and check that each one dies.

The audit of issue 14 applied twelve one-line mutations of security rules to the
core; seven survived the whole suite. This script keeps them as a regression check
(bench/MUTATION.md, "The twelve mutations of issue 14"): each is applied, alone, to a
copy of the tree, and the fast core tests (the ones mutmut uses, from pyproject.toml's
``[tool.mutmut]``) are run against it. A mutation must fail at least one test.

Each mutation names the exact source text it replaces, so a refactor that moves or
rewrites a rule makes the script say "not found" instead of silently testing nothing.

    .venv/bin/python bench/mutation_issue14.py            # stop at the first failing test
    .venv/bin/python bench/mutation_issue14.py --all      # count every test that kills each
    .venv/bin/python bench/mutation_issue14.py ack_expiry # only the named ones
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """One rule, broken by replacing ``old`` (which must occur exactly once) with ``new``."""

    name: str
    what: str
    path: str
    old: str
    new: str


MUTATIONS = [
    Mutation(
        "ack_expiry",
        "an ack's expiry is not checked (expired or too long a TTL accepted)",
        "comm_tui/protocol/node.py",
        "        _check_expiry(ack.expires_ms, now)\n        if not self._store_limit",
        "        if not self._store_limit",
    ),
    Mutation(
        "ack_store_rate",
        "acks from peers escape the store rate (was: stored with enforce_quota=False; an "
        "ack now replaces the message it answers, under that message's origin)",
        "comm_tui/protocol/node.py",
        "        if not self._store_limit.allow(sender.address, now):\n"
        '            raise Rejected("store_rate")\n'
        "        if not verify_ack(ack):",
        "        if not verify_ack(ack):",
    ),
    Mutation(
        "datagram_rate_limit",
        "the per-endpoint datagram rate limit is disabled",
        "comm_tui/protocol/node.py",
        "if not trusted and not self._datagram_limit.allow(addr, now):",
        "if False:",
    ),
    Mutation(
        "pong_from_other_key",
        "a pong is accepted from a key other than the one pinged",
        "comm_tui/protocol/node.py",
        'if query.kind not in ("ping", "attach") or query.peer_key != sender.key:',
        'if query.kind not in ("ping", "attach"):',
    ),
    Mutation(
        "stem_walk_bound",
        "the walk of a stem never ends (was: msg.hops > MAX_HOPS; the hop count left the "
        "wire, and the stem's coin flip is what bounds a walk now)",
        "comm_tui/protocol/node.py",
        "stem = entry.stem and self._rng.random() < STEM_FORWARD",
        "stem = entry.stem",
    ),
    Mutation(
        "restore_grace",
        "restored relay items are relayed at once, without the restore grace period",
        "comm_tui/protocol/node.py",
        "self._reschedule(entry, max(entry.next_at, now + RESTORE_GRACE_S))",
        "self._reschedule(entry, entry.next_at)",
    ),
    Mutation(
        "new_key_budget",
        "the node-wide new-key budget is disabled",
        "comm_tui/protocol/node.py",
        "        if self._new_keys.take(now):\n            return\n",
        "        return\n",
    ),
    Mutation(
        "backoff_exponent",
        "the relay backoff exponent is off by one",
        "comm_tui/protocol/node.py",
        "self.config.backoff_base_s * 2 ** (entry.attempts - 1)",
        "self.config.backoff_base_s * 2 ** entry.attempts",
    ),
    Mutation(
        "relay_attempts",
        "one relay attempt too many (attempts < max becomes <=)",
        "comm_tui/protocol/node.py",
        "if entry.attempts < self.config.max_relay_attempts or entry.own_text_id:",
        "if entry.attempts <= self.config.max_relay_attempts or entry.own_text_id:",
    ),
    Mutation(
        "ack_target_mismatch",
        "an ack naming another recipient than the message's target is accepted",
        "comm_tui/protocol/node.py",
        "if message.target != recipient or ack.expires_ms != message.expires_ms:",
        "if ack.expires_ms != message.expires_ms:",
    ),
    Mutation(
        "peer_quota",
        "the per-peer store quota is not enforced",
        "comm_tui/protocol/relay_store.py",
        "if entry.origin and self._peer_bytes.get(entry.origin, 0) + size > self.per_peer_limit:",
        "if False:",
    ),
    Mutation(
        "replay",
        "the replay check accepts every datagram",
        "comm_tui/protocol/codec.py",
        "if not self.replay.accept(key, nonce, sent_ms, int(now * 1000)):",
        "if False:",
    ),
]


# The files that pin these rules run first: with -x a killed mutation stops within seconds
# instead of after the whole selection (minutes on a loaded machine).
FIRST = ["tests/test_rules.py", "tests/test_node.py", "tests/test_relay_store.py"]


def core_tests() -> list[str]:
    """The pytest arguments mutmut uses (one list, in pyproject.toml), rule tests first."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    files = conf["pytest_add_cli_args_test_selection"]
    ordered = [f for f in FIRST if f in files] + [f for f in files if f not in FIRST]
    return [*conf["pytest_add_cli_args"], *ordered]


def run(mutation: Mutation, all_tests: bool) -> tuple[str, list[str], float]:
    """Apply ``mutation`` to a fresh copy of the tree; return (verdict, killers, seconds)."""
    source = (ROOT / mutation.path).read_text()
    if source.count(mutation.old) != 1:
        return "not found", [], 0.0
    with tempfile.TemporaryDirectory(prefix="mut14-") as tmp:
        copy = Path(tmp)
        for part in ("comm_tui", "tests", "keys", "bench", "docs"):
            shutil.copytree(
                ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "out")
            )
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        (copy / mutation.path).write_text(source.replace(mutation.old, mutation.new))
        args = [sys.executable, "-m", "pytest", "-rf", *core_tests()]
        if not all_tests:
            args.append("-x")
        started = time.monotonic()
        # pyproject's pythonpath = ["."] puts the copy's comm_tui ahead of the install.
        done = subprocess.run(args, cwd=copy, capture_output=True, text=True, check=False)
        took = time.monotonic() - started
    killers = re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    if done.returncode == 0:
        return "SURVIVED", [], took
    if not killers:
        return f"error (pytest exit {done.returncode})", [done.stdout[-2000:]], took
    return "killed", killers, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these mutations (default: all)")
    parser.add_argument(
        "--all", action="store_true", help="run every test, not just to the first failure"
    )
    options = parser.parse_args()
    chosen = [m for m in MUTATIONS if not options.names or m.name in options.names]
    bad = 0
    for mutation in chosen:
        verdict, killers, took = run(mutation, options.all)
        print(f"{mutation.name:22} {verdict:10} {took:6.0f} s  {mutation.what}", flush=True)
        for killer in killers:
            print(f"    {killer}", flush=True)
        bad += verdict != "killed"
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
