"""The CLI contract: in-process commands and their errors, and real nodes in subprocesses.

Errors users can cause must come out as exactly one ``comm-tui: ...`` line on stderr with
exit code 2 and nothing written; the subprocess test runs three ``comm-tui node`` processes
and a ``send`` on 127.0.0.1 only, every process bounded by timeouts and killed at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest

from comm_tui.cli import FAST_KDF_ENV, main
from comm_tui.crypto.card import decode_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import KdfStrength, read_identity_file, write_identity_file
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.store.db import SESSION_RESET_NOTICE, Database
from comm_tui.store.lock import ProfileLock
from comm_tui.store.paths import ensure_dirs, profile_paths
from tests.node_procs import Proc, cli

PROCESS_TIMEOUT_S = 30.0


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, fragment: str) -> None:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("comm-tui: ")
    assert fragment in lines[0]


def card_of(capsys: pytest.CaptureFixture[str], data: Path, profile: str) -> tuple[str, str]:
    code, out, _ = run(capsys, "--data-dir", data, "--profile", profile, "id")
    assert code == 0
    address = re.search(r"^address: ([0-9a-f]{40})$", out, re.M)
    card = re.search(r"^card: (\S+)$", out, re.M)
    assert address and card
    return address.group(1), card.group(1)


def free_udp_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- id, contacts


def test_id_creates_the_identity_once_and_prints_address_and_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, card = card_of(capsys, tmp_path, "alice")
    assert decode_card(card).address.hex() == address
    assert card_of(capsys, tmp_path, "alice") == (address, card)
    # Global options also work after the subcommand.
    code, out, _ = run(capsys, "id", "--data-dir", tmp_path, "--profile", "alice")
    assert code == 0
    assert out.splitlines() == [f"address: {address}", f"card: {card}"]
    assert card_of(capsys, tmp_path, "bob")[0] != address


def test_contacts_add_list_rename_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bob_address, bob_card = card_of(capsys, tmp_path, "bob")
    base = ("--data-dir", tmp_path, "contacts")
    assert run(capsys, *base, "add", "Bob", bob_card)[0] == 0
    code, out, _ = run(capsys, *base, "list")
    assert code == 0
    assert out.splitlines() == [f"Bob\t{bob_address}\t{bob_card}"]
    assert run(capsys, *base, "rename", "bob", "Robert")[0] == 0
    assert run(capsys, *base, "list")[1].startswith("Robert\t")
    code, _, err = run(capsys, *base, "add", "Other", bob_card)
    assert_user_error(code, err, "already saved as contact 'Robert'")
    assert run(capsys, *base, "remove", "robert")[0] == 0
    assert run(capsys, *base, "list")[1] == ""
    code, _, err = run(capsys, *base, "remove", "robert")
    assert_user_error(code, err, "no contact named 'robert'")


def test_contacts_work_while_a_node_holds_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, bob_card = card_of(capsys, tmp_path, "bob")
    paths = profile_paths("default", tmp_path)
    ensure_dirs(paths)
    with ProfileLock(paths, "comm-tui node"):
        assert run(capsys, "--data-dir", tmp_path, "id")[0] == 0
        assert run(capsys, "--data-dir", tmp_path, "contacts", "add", "bob", bob_card)[0] == 0
        assert run(capsys, "--data-dir", tmp_path, "history", "bob")[0] == 0
        code, _, err = run(capsys, "--data-dir", tmp_path, "send", "bob", "hi")
        assert_user_error(code, err, "in use by comm-tui node (pid ")


@pytest.mark.parametrize(
    ("card", "fragment"),
    [
        ("comm1not-a-card0", "card contains '0'"),
        ("hello", "not a comm-tui card"),
        ("comm1" + "a" * 59, "card is 64 characters"),
    ],
)
def test_malformed_cards_are_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], card: str, fragment: str
) -> None:
    code, _, err = run(capsys, "--data-dir", tmp_path, "contacts", "add", "x", card)
    assert_user_error(code, err, fragment)
    assert run(capsys, "--data-dir", tmp_path, "contacts", "list")[1] == ""


def test_a_card_with_a_typo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, card = card_of(capsys, tmp_path, "bob")
    typo = card[:20] + ("b" if card[20] != "b" else "c") + card[21:]
    code, _, err = run(capsys, "--data-dir", tmp_path, "contacts", "add", "bob", typo)
    assert_user_error(code, err, "checksum does not match")
    code, _, err = run(capsys, "--data-dir", tmp_path, "send", typo, "hi")
    assert_user_error(code, err, "checksum does not match")
    assert run(capsys, "--data-dir", tmp_path, "contacts", "list")[1] == ""


def test_own_card_cannot_be_a_contact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, card = card_of(capsys, tmp_path, "default")
    code, _, err = run(capsys, "--data-dir", tmp_path, "contacts", "add", "me", card)
    assert_user_error(code, err, "own card")


def test_unwritable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run(capsys, "--data-dir", blocker / "data", "id")
    assert_user_error(code, err, "cannot write to data directory")
    assert blocker.read_text() == "not a directory"


def test_invalid_profile_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--data-dir", tmp_path, "--profile", "../x", "id")
    assert_user_error(code, err, "invalid profile name")
    assert not (tmp_path / "profiles").exists()


# ---------------------------------------------------------------------------- send errors


def test_send_to_an_unknown_contact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--data-dir", tmp_path, "send", "nobody", "hi")
    assert_user_error(code, err, "no contact named 'nobody'")
    code, _, err = run(capsys, "--data-dir", tmp_path, "history", "nobody")
    assert_user_error(code, err, "no contact named 'nobody'")


def test_send_refuses_a_text_over_64_kib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, card = card_of(capsys, tmp_path, "bob")
    code, _, err = run(capsys, "--data-dir", tmp_path, "send", card, "x" * (64 * 1024 + 1))
    assert_user_error(code, err, "the limit is 65536")


def test_port_in_use_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bob_address, card = card_of(capsys, tmp_path, "bob")
    assert run(capsys, "--data-dir", tmp_path, "contacts", "add", "bob", card)[0] == 0
    config = profile_paths("default", tmp_path).config_file
    sock, port = free_udp_port()
    try:
        listen = f"127.0.0.1:{port}"
        code, _, err = run(capsys, "--data-dir", tmp_path, "send", "bob", "hi", "--listen", listen)
        assert_user_error(code, err, f"cannot listen on 127.0.0.1:{port}")
        code, _, err = run(capsys, "--data-dir", tmp_path, "node", "--listen", listen)
        assert_user_error(code, err, "already in use")
    finally:
        sock.close()
    assert not config.exists()
    code, out, _ = run(capsys, "--data-dir", tmp_path, "history", bob_address, "--json")
    assert (code, json.loads(out)) == (0, [])


def test_send_without_peers_gives_up_with_exit_3_and_keeps_the_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, card = card_of(capsys, tmp_path, "bob")
    base = ("--data-dir", tmp_path)
    assert run(capsys, *base, "contacts", "add", "bob", card)[0] == 0
    code, _, err = run(
        capsys, *base, "send", "bob", "anyone there?", "--listen", "127.0.0.1:0", "--wait", "0.5"
    )
    assert code == 3
    assert len(err.splitlines()) == 1
    assert "not delivered within 0.5 s (state: queued; no node known: pass --bootstrap)" in err
    assert "stays in the outbox" in err
    code, out, _ = run(capsys, *base, "history", "bob", "--json")
    [item] = json.loads(out)
    assert (item["direction"], item["state"], item["text"]) == ("out", "queued", "anyone there?")
    # The flags were remembered for the next run.
    config = profile_paths("default", tmp_path).config_file.read_text()
    assert 'listen = "127.0.0.1:0"' in config


# ---------------------------------------------------------------------------- history


def test_history_json_shows_both_directions_and_unknown_senders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    me, _ = card_of(capsys, tmp_path, "default")
    bob_address, bob_card = card_of(capsys, tmp_path, "bob")
    stranger = Identity.generate()
    assert run(capsys, "--data-dir", tmp_path, "contacts", "add", "bob", bob_card)[0] == 0
    bob = decode_card(bob_card)
    now = time.time()
    with Database.open(profile_paths("default", tmp_path).database) as db:
        db.add_outgoing(b"\x01" * 16, bob.key, bob.address, "hi bob", now)
        db.set_outgoing_state(b"\x01" * 16, "delivered", now + 1)
        db.add_incoming(b"\x02" * 16, bob.key, bob.address, "hi\nyou", int(now * 1000), now + 2)
        db.add_incoming(
            b"\x03" * 16, stranger.key, stranger.address, "who am I?", int(now * 1000), now + 3
        )

    code, out, _ = run(capsys, "--data-dir", tmp_path, "history", "bob", "--json")
    assert code == 0
    items = json.loads(out)
    assert [(i["direction"], i["text"], i["state"]) for i in items] == [
        ("out", "hi bob", "delivered"),
        ("in", "hi\nyou", "received"),
    ]
    assert (items[0]["from"], items[0]["to"]) == (me, "bob")
    assert (items[1]["from"], items[1]["to"]) == ("bob", me)
    for item in items:
        assert datetime.fromisoformat(item["time"]).tzinfo is not None
    # The same conversation by card and by address.
    assert json.loads(run(capsys, "--data-dir", tmp_path, "history", bob_card, "--json")[1]) == (
        items
    )
    by_address = run(capsys, "--data-dir", tmp_path, "history", bob_address, "--json")[1]
    assert json.loads(by_address) == items
    assert (
        len(
            json.loads(
                run(capsys, "--data-dir", tmp_path, "history", "bob", "--json", "--limit", "1")[1]
            )
        )
        == 1
    )

    # A sender who is no contact is kept and shown under their address.
    code, out, _ = run(capsys, "--data-dir", tmp_path, "history", stranger.address.hex(), "--json")
    [item] = json.loads(out)
    assert item["from"] == stranger.address.hex()
    assert item["text"] == "who am I?"

    # Plain output keeps each message on one line.
    code, out, _ = run(capsys, "--data-dir", tmp_path, "history", "bob")
    assert code == 0
    assert len(out.splitlines()) == 2
    assert "from bob: hi\\nyou" in out

    code, out, _ = run(capsys, "--data-dir", tmp_path, "conversations", "--json")
    unread = {c["address"]: c["unread"] for c in json.loads(out)}
    assert unread == {bob_address: 1, stranger.address.hex(): 1}


# ---------------------------------------------------------------------------- keys


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")


@pytest.mark.usefixtures("fast_kdf")
def test_keys_export_then_import_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = card_of(capsys, tmp_path, "alice")
    bob, _ = card_of(capsys, tmp_path, "bob")
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\n")
    exported = tmp_path / "alice.key"
    base = ("--data-dir", tmp_path)
    code, out, _ = run(
        capsys, *base, "--profile", "alice", "keys", "export", exported,
        "--passphrase-file", secret,
    )  # fmt: skip
    assert code == 0
    assert alice in out
    assert exported.stat().st_mode & 0o777 == 0o600
    assert read_identity_file(exported, b"correct horse").address.hex() == alice
    seed = read_identity_file(profile_paths("alice", tmp_path).identity_file).seed
    assert seed.hex() not in exported.read_text()

    # Exporting never overwrites a file.
    code, _, err = run(
        capsys, *base, "--profile", "alice", "keys", "export", exported,
        "--passphrase-file", secret,
    )  # fmt: skip
    assert_user_error(code, err, "already exists")

    code, out, _ = run(
        capsys, *base, "--profile", "bob", "keys", "import", exported,
        "--passphrase-file", secret, "--yes",
    )  # fmt: skip
    assert code == 0
    # The export was protected, so the imported identity stays protected by its passphrase.
    assert "identity protected by a passphrase" in out
    bob_file = profile_paths("bob", tmp_path).identity_file
    assert read_identity_file(bob_file, b"correct horse").address.hex() == alice
    with secret.open("rb") as passphrase:
        code, out2, err = run(
            capsys, *base, "--profile", "bob", "--passphrase-fd", str(passphrase.fileno()), "id"
        )
    assert code == 0, err
    assert f"address: {alice}" in out2
    backup = re.search(r"previous identity is kept in (\S+)", out)
    assert backup is not None
    assert read_identity_file(Path(backup.group(1))).address.hex() == bob


@pytest.mark.usefixtures("fast_kdf")
def test_keys_import_refuses_wrong_passphrase_tampering_lock_and_no_confirmation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, _ = card_of(capsys, tmp_path, "bob")
    other = Identity.generate()
    exported = tmp_path / "other.key"
    write_identity_file(exported, other, b"right", KdfStrength.MIN)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong\n")
    right = tmp_path / "right.txt"
    right.write_text("right")
    base = ("--data-dir", tmp_path, "--profile", "bob", "keys", "import")

    code, _, err = run(capsys, *base, exported, "--passphrase-file", wrong, "--yes")
    assert_user_error(code, err, "wrong passphrase")

    tampered = tmp_path / "tampered.key"
    document = json.loads(exported.read_text())
    document["address"] = Identity.generate().address.hex()
    tampered.write_text(json.dumps(document))
    code, _, err = run(capsys, *base, tampered, "--passphrase-file", right, "--yes")
    assert_user_error(code, err, "modified")

    code, _, err = run(capsys, *base, tmp_path / "missing.key", "--yes")
    assert_user_error(code, err, "no key file")

    # stdin is no terminal under pytest: without --yes nothing is asked and nothing changes.
    code, _, err = run(capsys, *base, exported, "--passphrase-file", right)
    assert_user_error(code, err, "pass --yes")

    paths = profile_paths("bob", tmp_path)
    with ProfileLock(paths, "comm-tui node"):
        code, _, err = run(capsys, *base, exported, "--passphrase-file", right, "--yes")
    assert_user_error(code, err, "in use by comm-tui node")

    assert card_of(capsys, tmp_path, "bob")[0] == before
    assert list(paths.root.glob("identity.key.bak-*")) == []


@pytest.mark.usefixtures("fast_kdf")
def test_keys_export_prompts_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    target = tmp_path / "k.key"
    code, _, err = run(capsys, "--data-dir", tmp_path, "keys", "export", target)
    assert_user_error(code, err, "do not match")
    assert not target.exists()

    answers = iter(["same", "same"])
    assert run(capsys, "--data-dir", tmp_path, "keys", "export", target)[0] == 0
    assert read_identity_file(target, b"same")


def test_keys_help_documents_the_test_only_fast_kdf(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["keys", "export", "--help"])
    assert FAST_KDF_ENV in capsys.readouterr().out


# ---------------------------------------------------------------------------- subprocesses


@pytest.mark.slow
def test_three_node_processes_deliver_a_text_sent_from_a_fourth_profile(
    tmp_path: Path, procs: list[Proc]
) -> None:
    env = {**os.environ, FAST_KDF_ENV: "1", "PYTHONUNBUFFERED": "1"}
    data = str(tmp_path)

    def start(profile: str, *extra: str) -> tuple[Proc, str]:
        argv = ["--data-dir", data, "--profile", profile, "node", "--listen", "127.0.0.1:0"]
        proc = Proc([*argv, *extra], env)
        procs.append(proc)
        match = proc.wait_for_line(r"listening (127\.0\.0\.1:\d+) address ([0-9a-f]{40})")
        proc.wait_for_line(r"port mapping: off \(listening on 127\.0\.0\.1: no router forwards")
        return proc, match.group(1)

    n1, first = start("n1")
    n2, _ = start("n2", "--bootstrap", first)
    n3, _ = start("n3", "--bootstrap", first)
    recipient = cli(env, "--data-dir", data, "--profile", "n3", "id")
    assert recipient.returncode == 0, recipient.stderr
    card = recipient.stdout.split("card: ")[1].strip()
    sender = cli(env, "--data-dir", data, "--profile", "s", "id").stdout.split()[1]

    started = time.monotonic()
    sent = cli(
        env, "--data-dir", data, "--profile", "s", "send", card, "hello over the network",
        "--listen", "127.0.0.1:0", "--bootstrap", first, "--wait", "20",
    )  # fmt: skip
    print(f"cli send to delivered: {time.monotonic() - started:.2f} s (process start included)")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"delivered to {decode_card(card).address.hex()}"

    # The node names the text by id and size; its content stays in the database.
    logged = n3.wait_for_line(rf"from {sender}: received text ([0-9a-f]{{32}}) \(22 bytes\)$")
    assert not any("hello over the network" in line for line in n3.seen)
    history = cli(env, "--data-dir", data, "--profile", "n3", "history", sender, "--json")
    assert history.returncode == 0, history.stderr
    [item] = json.loads(history.stdout)
    assert item["id"] == logged.group(1)
    assert (item["direction"], item["state"], item["text"], item["from"]) == (
        "in",
        "received",
        "hello over the network",
        sender,
    )
    outbox = cli(env, "--data-dir", data, "--profile", "s", "history", card, "--json")
    assert json.loads(outbox.stdout)[0]["state"] == "delivered"

    second = cli(env, "--data-dir", data, "--profile", "n2", "node", "--listen", "127.0.0.1:0")
    assert second.returncode == 2
    assert second.stderr.startswith("comm-tui: profile 'n2' is in use by comm-tui node (pid ")
    assert str(n2.popen.pid) in second.stderr
    assert len(second.stderr.splitlines()) == 1

    for proc in (n1, n2, n3):
        proc.popen.send_signal(signal.SIGTERM)
    for proc in (n1, n2, n3):
        assert proc.popen.wait(timeout=PROCESS_TIMEOUT_S) == 0
        proc.wait_for_line(r" stopped$")
        assert proc.popen.stderr is not None
        assert proc.popen.stderr.read() == ""
    # The listen flag was remembered in the config file.
    assert 'listen = "127.0.0.1:0"' in (tmp_path / "profiles/n1/config.toml").read_text()


def test_node_logs_a_stats_line_with_rejections_on_sigint(
    tmp_path: Path, procs: list[Proc]
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Proc(["--data-dir", str(tmp_path), "node", "--listen", "127.0.0.1:0"], env)
    procs.append(proc)
    port = int(proc.wait_for_line(r"listening 127\.0\.0\.1:(\d+)").group(1))
    node_key = decode_card(proc.wait_for_line(r"card: (\S+)").group(1)).key
    codec = Codec(Identity.generate())
    challenge = os.urandom(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\xff not a packet", ("127.0.0.1", port))
        # A ping after it is the barrier: the node takes datagrams in order, so once the
        # pong is here the bad datagram has been counted.
        ping = pb.Frame(ping=pb.Ping(challenge=challenge))
        sock.sendto(codec.encode_frame(node_key, ping, time.time()), ("127.0.0.1", port))
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            frame = codec.decode(sock.recv(2048), time.time()).frame
            if frame is not None and frame.WhichOneof("body") == "pong":
                assert frame.pong.challenge == challenge
                break
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(timeout=PROCESS_TIMEOUT_S) == 0
    proc.wait_for_line(r"stats: .*rejected=1 \(malformed=1\)")


def test_history_shows_a_session_reset_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, bob_card = card_of(capsys, tmp_path, "bob")
    base = ("--data-dir", tmp_path)
    assert run(capsys, *base, "contacts", "add", "bob", bob_card)[0] == 0
    bob = decode_card(bob_card)
    with Database.open(profile_paths("default", tmp_path).database) as db:
        db.add_notice(bob.key, bob.address, SESSION_RESET_NOTICE, 1_800_000_000.0)
    code, out, _ = run(capsys, *base, "history", "bob")
    assert code == 0 and out.endswith(f"notice: {SESSION_RESET_NOTICE}\n")
    code, out, _ = run(capsys, *base, "history", "bob", "--json")
    [item] = json.loads(out)
    assert (item["direction"], item["from"], item["to"]) == ("notice", None, None)
