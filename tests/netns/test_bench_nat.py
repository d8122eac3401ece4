"""A smoke run of bench/nat.py: it builds its topologies, runs end to end, reports figures.

No timing is asserted here (the targets are asserted in test_targets.py at CI size; the
real figures come from full runs recorded in bench/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.conftest import require_netns
from tests.netns.harness import sweep_leftovers

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60


@pytest.mark.timeout(RUN_TIMEOUT_S + 10)
def test_nat_bench_quick_smoke(tmp_path: Path) -> None:
    require_netns()
    out = tmp_path / "nat.json"
    command = [sys.executable, str(ROOT / "bench" / "nat.py"), "--quick", "--only", "ad"]
    # Its own session, killed whole on timeout.
    with subprocess.Popen(
        [*command, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            sweep_leftovers()  # its namespaces, and the processes in them
            raise
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.startswith("a: ")
    figures = json.loads(out.read_text())
    assert figures["machine"]["nproc"] >= 1
    a = figures["a"]
    assert a["delivered"] == a["texts"] == 3
    assert 0 <= a["p50_s"] <= a["p99_s"] <= a["max_s"]
    d = figures["d"]
    for side in ("behind_nat", "public_relay"):
        assert d[side]["bytes_per_s"] >= 0
