"""Key safety: the private seed never leaves the identity file, and key files are handled safely.

The secret forms looked for are the 32-byte seed (raw, hex, base64, URL-safe base64,
unpadded) and the derived Curve25519 private key. They must not appear in the output of
``id``, ``node``, ``history --json``, ``conversations --json``, ``contacts list``, in the
errors of ``keys import``, in any file under the profile except its identity file (logs,
config, the SQLite database and its WAL), or in the shared log and runtime directories.
Identity, exported and backup key files are 0600; a truncated, tampered or future-version
key file gives exit 2 with one line and changes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from comm_tui.cli import FAST_KDF_ENV, main
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import KdfStrength, read_identity_file, write_identity_file
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths

PROCESS_TIMEOUT_S = 20.0
LINE_TIMEOUT_S = 15.0

pytestmark = pytest.mark.timeout(60)


def secret_forms(identity: Identity) -> list[bytes]:
    """Every encoding of the private key material a leak could plausibly use."""
    forms: list[bytes] = []
    for raw in (identity.seed, bytes(identity.box_key)):
        forms += [
            raw,
            raw.hex().encode(),
            raw.hex().upper().encode(),
            base64.b64encode(raw),
            base64.b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode(raw).rstrip(b"="),
        ]
    return forms


def assert_no_secret(identity: Identity, data: str | bytes, where: str) -> None:
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    for form in secret_forms(identity):
        assert form not in blob, f"private key material found in {where}"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("comm-tui: ")


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")


@pytest.fixture
def alice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Identity:
    """Profile 'alice' with a contact, a conversation and its identity on disk."""
    assert run(capsys, "--data-dir", tmp_path, "--profile", "alice", "id")[0] == 0
    identity = read_identity_file(profile_paths("alice", tmp_path).identity_file)
    bob = Identity.generate()
    with Database.open(profile_paths("alice", tmp_path).database) as db:
        db.add_contact("bob", bob.key, bob.address, time.time())
        db.add_outgoing(b"\x01" * 16, bob.key, bob.address, "hello bob", time.time())
        db.add_incoming(b"\x02" * 16, bob.key, bob.address, "hi alice", 1, time.time())
    return identity


def test_cli_output_never_shows_the_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice: Identity
) -> None:
    base = ("--data-dir", tmp_path, "--profile", "alice")
    for argv in (
        ("id",),
        ("history", "bob", "--json"),
        ("history", "bob"),
        ("conversations", "--json"),
        ("contacts", "list"),
    ):
        code, out, err = run(capsys, *base, *argv)
        assert code == 0, err
        assert_no_secret(alice, out + err, " ".join(argv))
    assert json.loads(run(capsys, *base, "history", "bob", "--json")[1])[0]["text"] == "hello bob"


@pytest.mark.usefixtures("fast_kdf")
def test_key_import_errors_never_show_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice: Identity
) -> None:
    other = Identity.generate()
    protected = tmp_path / "other.key"
    write_identity_file(protected, other, b"right", KdfStrength.MIN)
    plain = tmp_path / "plain.key"
    write_identity_file(plain, other)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong\n")
    base = ("--data-dir", tmp_path, "--profile", "alice", "keys", "import")

    code, out, err = run(capsys, *base, protected, "--passphrase-file", wrong, "--yes")
    assert_one_line_error(code, err)
    assert "wrong passphrase" in err
    # A damaged unprotected file holds the seed in clear: the error must not quote it.
    document = json.loads(plain.read_text())
    document["key"] = document["key"][:-4] + "!!!!"
    plain.write_text(json.dumps(document))
    code, out2, err2 = run(capsys, *base, plain, "--yes")
    assert_one_line_error(code, err2)
    for who in (alice, other):
        assert_no_secret(who, out + err + out2 + err2, "keys import errors")


def test_node_logs_and_profile_files_never_hold_the_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice: Identity
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = ["--data-dir", str(tmp_path), "--profile", "alice", "node", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "comm_tui", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while not any(" listening " in line for line in seen):
            assert time.monotonic() < deadline, f"no listening line in {seen}"
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert proc.poll() is None, seen
        port = int(next(x for x in seen if " listening " in x).split(":")[-1].split()[0])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\xff not a packet", ("127.0.0.1", port))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=PROCESS_TIMEOUT_S)
    reader.join(timeout=PROCESS_TIMEOUT_S)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    while not lines.empty():
        seen.append(lines.get())
    assert any("stopped" in line for line in seen), seen
    assert_no_secret(alice, "".join(seen) + stderr, "node output")

    paths = profile_paths("alice", tmp_path)
    scanned = 0
    for directory in (paths.root, paths.log_dir, paths.runtime_dir):
        if not directory.exists():
            continue
        for path in directory.rglob("*"):
            if path.is_file() and not path.name.startswith("identity.key"):
                assert_no_secret(alice, path.read_bytes(), str(path))
                scanned += 1
    assert paths.database.exists()
    assert scanned >= 1


@pytest.mark.usefixtures("fast_kdf")
def test_identity_exported_and_backup_key_files_are_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice: Identity
) -> None:
    paths = profile_paths("alice", tmp_path)
    assert mode_of(paths.identity_file) == 0o600
    secret = tmp_path / "pass.txt"
    secret.write_text("pass\n")
    exported = tmp_path / "alice.key"
    base = ("--data-dir", tmp_path, "--profile", "alice", "keys")
    assert run(capsys, *base, "export", exported, "--passphrase-file", secret)[0] == 0
    assert mode_of(exported) == 0o600
    assert_no_secret(alice, exported.read_bytes(), "the exported key file")
    other = tmp_path / "other.key"
    write_identity_file(other, Identity.generate(), b"pass", KdfStrength.MIN)
    code, out, err = run(capsys, *base, "import", other, "--passphrase-file", secret, "--yes")
    assert code == 0, err
    assert_no_secret(alice, out + err, "keys import output")
    assert mode_of(paths.identity_file) == 0o600
    [backup] = paths.root.glob("identity.key.bak-*")
    assert mode_of(backup) == 0o600
    assert read_identity_file(backup).key == alice.key
    # No temporary files are left behind by the atomic writes.
    assert [p.name for p in paths.root.glob(".identity.key.tmp-*")] == []


def _damaged_variants(plain: bytes) -> dict[str, bytes]:
    document = json.loads(plain)
    key = base64.b64decode(document["key"])
    flipped = bytes([key[0] ^ 1]) + key[1:]
    future = {**document, "version": document["version"] + 1}
    return {
        "truncated": plain[: len(plain) // 2],
        "empty": b"",
        "tampered key": json.dumps(
            {**document, "key": base64.b64encode(flipped).decode()}
        ).encode(),
        "tampered address": json.dumps({**document, "address": "00" * 20}).encode(),
        "future version": json.dumps(future).encode(),
        "not json": b"\x00\xff" * 50,
    }


@pytest.mark.usefixtures("fast_kdf")
def test_damaged_or_future_key_files_are_refused_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice: Identity
) -> None:
    paths = profile_paths("alice", tmp_path)
    before = paths.identity_file.read_bytes()
    other = Identity.generate()
    source = tmp_path / "source.key"
    write_identity_file(source, other)
    base = ("--data-dir", tmp_path, "--profile", "alice")
    for name, data in _damaged_variants(source.read_bytes()).items():
        bad = tmp_path / f"{name.replace(' ', '-')}.key"
        bad.write_bytes(data)
        code, out, err = run(capsys, *base, "keys", "import", bad, "--yes")
        assert_one_line_error(code, err)
        if name == "future version":
            assert "newer" in err
        assert_no_secret(other, out + err, f"import of a {name} file")
        assert_no_secret(alice, out + err, f"import of a {name} file")
        assert paths.identity_file.read_bytes() == before, name
        assert list(paths.root.glob("identity.key.bak-*")) == [], name

    # The profile's own identity file damaged: every command refuses, none replaces it.
    for name, data in _damaged_variants(before).items():
        paths.identity_file.write_bytes(data)
        for argv in (("id",), ("contacts", "list"), ("history", "bob", "--json")):
            code, out, err = run(capsys, *base, *argv)
            assert_one_line_error(code, err)
            assert_no_secret(alice, out + err, f"{argv[0]} with a {name} identity file")
        assert paths.identity_file.read_bytes() == data, name
    paths.identity_file.write_bytes(before)
    assert run(capsys, *base, "id")[1].splitlines()[0] == f"address: {alice.address.hex()}"
