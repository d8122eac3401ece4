"""Sessions survive SIGKILL: a conversation both ways between two real ``comm-tui``
profiles, with the sending process, the receiving node, or both killed at random moments.

In the style of tests/test_crash_safety.py. Each round one side sends with ``comm-tui
send`` (its node is SIGKILLed first, at whatever it was doing), and a seeded schedule
SIGKILLs the ``send`` process and/or the other side's node while the text is in flight.
Afterwards every text shown as sent arrives, a new text each way is delivered, and no
session was ever lost: no "session re-established" notice on either side (a crash that
left a session unable to open the next letter would show one). Bounded: rounds, process
timeouts and polls.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from comm_tui.cli import FAST_KDF_ENV
from comm_tui.store.paths import profile_paths
from tests.node_procs import Proc
from tests.test_crash_safety import Cluster, integrity_ok

SEED = 9_2026
ROUNDS = 6
WAIT_S = 20.0
POLL_INTERVAL_S = 0.3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(170)]


def received(cluster: Cluster, profile: str, peer: str) -> list[str]:
    return [i["text"] for i in cluster.history(profile, peer) if i["direction"] == "in"]


def test_sigkills_during_a_conversation_never_break_a_session(
    tmp_path: Path, procs: list[Proc]
) -> None:
    rng = random.Random(SEED)
    env = {**os.environ, FAST_KDF_ENV: "1", "PYTHONUNBUFFERED": "1"}
    cluster = Cluster(tmp_path, env, procs)
    relay = cluster.start("relay")
    cards = {p: cluster.cli("--profile", p, "id").stdout.split("card: ")[1].strip() for p in "xy"}
    addresses = {p: cluster.cli("--profile", p, "id").stdout.split()[1] for p in "xy"}
    for p in "xy":
        cluster.start(p, [relay])

    sent: dict[str, list[str]] = {"x": [], "y": []}
    kills: list[str] = []
    for round_ in range(ROUNDS):
        me, you = ("x", "y") if rng.random() < 0.5 else ("y", "x")
        text = f"{me} round {round_}: {rng.getrandbits(48):012x}"
        sent[me].append(text)
        if you not in cluster.running:
            cluster.start(you)
        cluster.sigkill(me)  # whatever its node was doing (receiving, committing)
        kills.append(me)
        argv = ["--data-dir", str(tmp_path), "--profile", me, "send", cards[you], text]
        argv += ["--listen", "127.0.0.1:0", "--bootstrap", relay]
        argv += ["--bootstrap", f"127.0.0.1:{cluster.ports[you]}"]
        send = Proc(argv, env)
        procs.append(send)
        time.sleep(rng.uniform(0.0, 1.0))
        if rng.random() < 0.5:
            send.kill()  # the sender, mid-send
            kills.append(f"send {me}")
        if rng.random() < 0.5:
            cluster.sigkill(you)  # the recipient, mid-receive
            kills.append(you)
        send.popen.wait(timeout=WAIT_S)
        cluster.start(me)
        if you not in cluster.running:
            cluster.start(you)
    print(f"kills: {kills}")

    # Every text the sender's history shows as handed on arrives.
    for me, you in (("x", "y"), ("y", "x")):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            states = {i["text"]: i["state"] for i in cluster.history(me, cards[you])}
            shown = {t for t, s in states.items() if s in ("sent", "delivered")}
            got = set(received(cluster, you, addresses[me]))
            if shown <= got:
                break
            time.sleep(POLL_INTERVAL_S)
        assert shown <= got, f"{me} -> {you} missing: {shown - got}"
        assert got <= set(sent[me])

    # The sessions still open the next letter, each way.
    for me, you in (("x", "y"), ("y", "x")):
        cluster.sigkill(me)
        text = f"{me}: after the crashes"
        result = cluster.cli(
            "--profile", me, "send", cards[you], text, "--listen", "127.0.0.1:0",
            "--bootstrap", relay, "--bootstrap", f"127.0.0.1:{cluster.ports[you]}",
            "--wait", str(WAIT_S),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert text in received(cluster, you, addresses[me])
        cluster.start(me)

    for me, you in (("x", "y"), ("y", "x")):
        directions = [i["direction"] for i in cluster.history(me, cards[you])]
        assert "notice" not in directions, f"{me} saw a session reset"
    for name in list(cluster.running):
        cluster.sigkill(name)
    for name in ("relay", "x", "y"):
        assert integrity_ok(profile_paths(name, tmp_path).database) == "ok", name
