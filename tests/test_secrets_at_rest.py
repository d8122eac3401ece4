"""Secrets at rest: a passphrase-protected identity, unlocked in one place, leaking nowhere.

The CLI contract (in process, through ``main``): ``keys show/protect/unprotect``, the
passphrase from ``--passphrase-fd``, ``COMM_TUI_PASSPHRASE`` or the terminal, errors as
one line and exit 2 with nothing changed, ``keys import`` keeping the protection. Then
real nodes at DEBUG exchange a known text with protected identities, and every output,
every file but the database and the identity files, and every process's arguments are
searched for the text, the seeds and the passphrases.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comm_tui.cli import FAST_KDF_ENV, main
from comm_tui.crypto.card import encode_card
from comm_tui.crypto.identity import Identity
from comm_tui.crypto.keyfile import (
    KdfStrength,
    PassphraseRequired,
    WrongPassphrase,
    is_passphrase_protected,
    key_file_address,
    read_identity_file,
    replace_identity,
    unprotected_backups,
    write_identity_file,
)
from comm_tui.errors import UserError
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from comm_tui.unlock import (
    MAX_PASSPHRASE_BYTES,
    PASSPHRASE_ENV,
    PROMPT_ATTEMPTS,
    PassphraseSource,
    read_passphrase_fd,
    unlock_identity,
)
from tests.node_procs import PROCESS_TIMEOUT_S, Proc, cli

pytestmark = pytest.mark.timeout(90)

PASSPHRASE = "ein sehr geheimer Satz"
NEW_PASSPHRASE = "another secret sentence"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("comm-tui: ")
    assert fragment in lines[0], err


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_KDF_ENV, "1")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """Descriptors the test opened, closed at the end."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


def line_fd(fds: list[int], data: bytes) -> str:
    """A pipe whose read end holds ``data``, as the number ``--passphrase-fd`` takes."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    fds.append(read)
    return str(read)


def identity_file(data: Path, profile: str = "default") -> Path:
    return profile_paths(profile, data).identity_file


def make_protected(capsys: pytest.CaptureFixture[str], data: Path, fds: list[int]) -> Identity:
    """A profile whose identity is protected by PASSPHRASE; returns that identity."""
    code, _, err = run(capsys, "--data-dir", data, "id")
    assert code == 0, err
    identity = read_identity_file(identity_file(data))
    new = line_fd(fds, PASSPHRASE.encode() + b"\n")
    code, out, err = run(capsys, "--data-dir", data, "keys", "protect", "--new-passphrase-fd", new)
    assert code == 0, err
    assert (
        out.splitlines()[0] == f"identity {identity.address.hex()}: now protected by a passphrase"
    )
    return identity


# ---------------------------------------------------------------------------- keys show


def test_first_run_and_keys_show_say_plainly_that_the_identity_is_unprotected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    code, _, err = run(capsys, "--data-dir", tmp_path, "keys", "show")
    assert_user_error(code, err, "has no identity yet")
    code, out, err = run(capsys, "--data-dir", tmp_path, "id")
    assert code == 0
    assert err == (
        "comm-tui: created a new identity for profile 'default'; it is not protected by a "
        "passphrase (to protect it: comm-tui keys protect)\n"
    )
    # Only the first run says it.
    assert run(capsys, "--data-dir", tmp_path, "id")[2] == ""
    code, out, _ = run(capsys, "--data-dir", tmp_path, "keys", "show")
    address = read_identity_file(identity_file(tmp_path)).address.hex()
    assert code == 0
    assert out.splitlines() == [
        f"address: {address}",
        f"file: {identity_file(tmp_path)}",
        "identity not protected by a passphrase: anyone who can read its file can read your "
        "messages and write as you (to protect it: comm-tui keys protect)",
    ]
    new = line_fd(fds, PASSPHRASE.encode() + b"\n")
    assert (
        run(capsys, "--data-dir", tmp_path, "keys", "protect", "--new-passphrase-fd", new)[0] == 0
    )
    # Showing needs no passphrase: the address in the file is public.
    code, out, _ = run(capsys, "--data-dir", tmp_path, "keys", "show")
    assert code == 0
    assert out.splitlines()[0] == f"address: {address}"
    assert out.splitlines()[2] == "identity protected by a passphrase"


# ---------------------------------------------------------------------------- protect


def test_protect_rewrites_the_identity_atomically_as_a_protected_0600_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    identity = make_protected(capsys, tmp_path, fds)
    path = identity_file(tmp_path)
    assert is_passphrase_protected(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_identity_file(path, PASSPHRASE.encode()).seed == identity.seed
    data = path.read_bytes()
    for form in (
        identity.seed.hex().encode(),
        base64.b64encode(identity.seed),
        PASSPHRASE.encode(),
    ):
        assert form not in data
    # No temporary file is left, and no copy of the unprotected form is kept.
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith((".id", "id"))) == [
        "identity.key"
    ]


def test_a_failed_rewrite_leaves_the_old_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(capsys, "--data-dir", tmp_path, "id")
    path = identity_file(tmp_path)
    before = path.read_bytes()

    def no_space(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    new = line_fd(fds, PASSPHRASE.encode() + b"\n")
    code, _, err = run(
        capsys, "--data-dir", tmp_path, "keys", "protect", "--new-passphrase-fd", new
    )
    assert_user_error(code, err, "No space left on device")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.glob(".identity.key.tmp-*")] == []


def test_change_the_passphrase_then_unprotect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    identity = make_protected(capsys, tmp_path, fds)
    path = identity_file(tmp_path)
    base = ("--data-dir", tmp_path)
    current = line_fd(fds, PASSPHRASE.encode() + b"\n")
    new = line_fd(fds, NEW_PASSPHRASE.encode() + b"\n")
    code, out, err = run(
        capsys, *base, "--passphrase-fd", current, "keys", "protect", "--new-passphrase-fd", new
    )
    assert code == 0, err
    assert out == f"identity {identity.address.hex()}: passphrase changed\n"
    assert read_identity_file(path, NEW_PASSPHRASE.encode()).key == identity.key
    with pytest.raises(Exception, match="wrong passphrase"):
        read_identity_file(path, PASSPHRASE.encode())

    # Unprotecting lowers the protection: never without a yes.
    before = path.read_bytes()
    code, _, err = run(
        capsys, *base, "--passphrase-fd", line_fd(fds, NEW_PASSPHRASE.encode()), "keys", "unprotect"
    )
    assert_user_error(code, err, "pass --yes")
    assert path.read_bytes() == before
    code, out, err = run(
        capsys,
        *base,
        "--passphrase-fd",
        line_fd(fds, NEW_PASSPHRASE.encode()),
        "keys",
        "unprotect",
        "--yes",
    )
    assert code == 0, err
    assert "identity not protected by a passphrase" in out
    assert not is_passphrase_protected(path)
    assert read_identity_file(path).key == identity.key
    assert path.stat().st_mode & 0o777 == 0o600
    code, out, _ = run(capsys, *base, "keys", "unprotect", "--yes")
    assert out.endswith("has no passphrase; nothing changed\n")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\n", "is empty"),
        (b"", "is empty"),
        (b"x" * (MAX_PASSPHRASE_BYTES + 1), f"longer than {MAX_PASSPHRASE_BYTES} bytes"),
    ],
)
def test_protect_refuses_a_bad_new_passphrase_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int], data: bytes, fragment: str
) -> None:
    run(capsys, "--data-dir", tmp_path, "id")
    path = identity_file(tmp_path)
    before = path.read_bytes()
    new = line_fd(fds, data)
    code, _, err = run(
        capsys, "--data-dir", tmp_path, "keys", "protect", "--new-passphrase-fd", new
    )
    assert_user_error(code, err, fragment)
    assert path.read_bytes() == before


def test_protect_without_a_terminal_or_fd_asks_for_the_fd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--data-dir", tmp_path, "id")
    code, _, err = run(capsys, "--data-dir", tmp_path, "keys", "protect")
    assert_user_error(code, err, "--new-passphrase-fd N")


# ---------------------------------------------------------------------------- unlocking


def test_a_protected_identity_opens_from_fd_environment_or_not_at_all(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = make_protected(capsys, tmp_path, fds)
    path = identity_file(tmp_path)
    before = path.read_bytes()
    base = ("--data-dir", tmp_path)
    expected = f"address: {identity.address.hex()}"

    # No terminal under pytest, no fd, no environment: one line that says what to do.
    code, _, err = run(capsys, *base, "id")
    assert_user_error(code, err, f"give --passphrase-fd N or set {PASSPHRASE_ENV}")

    code, out, err = run(capsys, *base, "--passphrase-fd", line_fd(fds, b"wrong\n"), "id")
    assert_user_error(code, err, "wrong passphrase")
    assert out == ""

    code, out, _ = run(capsys, *base, "--passphrase-fd", line_fd(fds, PASSPHRASE.encode()), "id")
    assert code == 0
    assert out.splitlines()[0] == expected
    # Windows line endings from a passphrase file are tolerated.
    crlf = line_fd(fds, PASSPHRASE.encode() + b"\r\nnext line")
    assert run(capsys, "id", *base, "--passphrase-fd", crlf)[0] == 0

    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    code, _, err = run(
        capsys, *base, "keys", "export", tmp_path / "exported.key",
        "--passphrase-file", tmp_path / "missing",
    )  # fmt: skip
    # The identity opened with the environment's passphrase; the export's own file is missing.
    assert_user_error(code, err, "cannot read passphrase file")
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    code, out, _ = run(capsys, *base, "id")
    assert code == 0
    # Read once, then gone from the environment, so that no child process inherits it.
    assert PASSPHRASE_ENV not in os.environ
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    code, _, err = run(capsys, *base, "id")
    assert_user_error(code, err, "wrong passphrase")
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    code, _, err = run(capsys, *base, "id")
    assert_user_error(code, err, f"{PASSPHRASE_ENV} is set but empty")
    # The fd wins over the environment.
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    code, out, _ = run(capsys, *base, "--passphrase-fd", line_fd(fds, PASSPHRASE.encode()), "id")
    assert code == 0
    assert path.read_bytes() == before


def test_a_closed_or_unreadable_fd_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    make_protected(capsys, tmp_path, fds)
    read, write = os.pipe()
    os.close(read)
    fds.append(write)
    closed = str(read)
    code, _, err = run(capsys, "--data-dir", tmp_path, "--passphrase-fd", closed, "id")
    assert_user_error(code, err, f"cannot read the passphrase from file descriptor {closed}")
    # The write end of a pipe cannot be read either.
    code, _, err = run(capsys, "--data-dir", tmp_path, "--passphrase-fd", str(write), "id")
    assert_user_error(code, err, "cannot read the passphrase from file descriptor")
    with pytest.raises(SystemExit) as refused:
        main(["--data-dir", str(tmp_path), "--passphrase-fd", "-1", "id"])
    assert refused.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err


class _Terminal:
    """stdin that says it is a terminal; the passphrase prompt reads from ``answers``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        monkeypatch.setattr(sys, "stdin", self)
        monkeypatch.setattr("getpass.getpass", self.prompt)

    def isatty(self) -> bool:
        return True

    def prompt(self, question: str = "") -> str:
        self.asked.append(question)
        return self.answers.pop(0)


def test_the_terminal_asks_three_times_then_gives_up_with_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = make_protected(capsys, tmp_path, fds)
    terminal = _Terminal(monkeypatch, ["wrong", "", "still wrong", PASSPHRASE])
    code, out, err = run(capsys, "--data-dir", tmp_path, "id")
    assert code == 2
    assert len(terminal.asked) == PROMPT_ATTEMPTS
    assert err.splitlines() == [
        "wrong passphrase, try again",
        "wrong passphrase, try again",
        f"comm-tui: wrong passphrase {PROMPT_ATTEMPTS} times; nothing was opened",
    ]
    assert out == ""
    # A right answer within the attempts opens it.
    terminal.answers[:] = ["wrong", PASSPHRASE]
    code, out, _ = run(capsys, "--data-dir", tmp_path, "id")
    assert code == 0
    assert f"address: {identity.address.hex()}" in out


def test_ctrl_d_at_the_prompt_is_an_interruption(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_protected(capsys, tmp_path, fds)
    terminal = _Terminal(monkeypatch, [])

    def eof(question: str = "") -> str:
        raise EOFError

    terminal.prompt = eof  # type: ignore[method-assign]
    monkeypatch.setattr("getpass.getpass", eof)
    assert run(capsys, "--data-dir", tmp_path, "id")[0] == 130


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: text.replace('"key": "', '"key": "AAAA'),
        lambda text: "",
    ],
)
def test_a_damaged_protected_identity_is_one_line_not_a_wrong_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int], damage: object
) -> None:
    make_protected(capsys, tmp_path, fds)
    path = identity_file(tmp_path)
    path.write_text(damage(path.read_text()))  # type: ignore[operator]
    code, _, err = run(capsys, "--data-dir", tmp_path, "--passphrase-fd", line_fd(fds, b"p"), "id")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "not a comm-tui key file" in err or "damaged" in err or "modified" in err, err


def test_the_node_of_a_protected_profile_needs_its_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    make_protected(capsys, tmp_path, fds)
    env = {**os.environ, FAST_KDF_ENV: "1"}
    done = cli(env, "--data-dir", str(tmp_path), "node", "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    assert done.stderr.startswith("comm-tui: the identity of this profile is protected")
    assert len(done.stderr.splitlines()) == 1
    # Nothing was started: the lock file is free again and no log was written.
    paths = profile_paths("default", tmp_path)
    assert not (paths.log_dir / "node.log").exists()


# ---------------------------------------------------------------------------- import


def _export(tmp_path: Path, name: str, passphrase: bytes | None) -> tuple[Path, Identity]:
    identity = Identity.generate()
    path = tmp_path / f"{name}.key"
    write_identity_file(path, identity, passphrase, KdfStrength.MIN)
    return path, identity


def test_import_keeps_changes_or_drops_the_protection_as_chosen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    run(capsys, "--data-dir", tmp_path, "id")
    path = identity_file(tmp_path)
    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE + "\n")
    base = ("--data-dir", tmp_path, "keys", "import")

    exported, one = _export(tmp_path, "one", PASSPHRASE.encode())
    code, out, err = run(capsys, *base, exported, "--passphrase-file", secret, "--yes")
    assert code == 0, err
    assert "identity protected by a passphrase" in out
    assert read_identity_file(path, PASSPHRASE.encode()).key == one.key
    # The older, unprotected identity is kept as a backup, and named as such.
    code, out, _ = run(capsys, "--data-dir", tmp_path, "keys", "show")
    assert re.search(
        r"^warning: the backup \S+identity\.key\.bak-\d+ holds a key without", out, re.M
    )

    exported, two = _export(tmp_path, "two", PASSPHRASE.encode())
    new = line_fd(fds, NEW_PASSPHRASE.encode() + b"\n")
    code, out, err = run(
        capsys, *base, exported, "--passphrase-file", secret, "--yes",
        "--protection", "new", "--new-passphrase-fd", new,
    )  # fmt: skip
    assert code == 0, err
    assert read_identity_file(path, NEW_PASSPHRASE.encode()).key == two.key

    exported, three = _export(tmp_path, "three", PASSPHRASE.encode())
    code, out, err = run(
        capsys, *base, exported, "--passphrase-file", secret, "--yes", "--protection", "none"
    )
    assert code == 0, err
    assert "identity not protected by a passphrase" in out
    assert read_identity_file(path).key == three.key

    plain, four = _export(tmp_path, "four", None)
    before = path.read_bytes()
    code, _, err = run(capsys, *base, plain, "--yes", "--protection", "keep")
    assert_user_error(code, err, "no passphrase to keep")
    assert path.read_bytes() == before
    code, out, err = run(capsys, *base, plain, "--yes")
    assert code == 0, err
    assert read_identity_file(path).key == four.key


def test_import_asks_on_a_terminal_whether_to_keep_the_protection(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(capsys, "--data-dir", tmp_path, "id")
    exported, other = _export(tmp_path, "other", PASSPHRASE.encode())
    terminal = _Terminal(monkeypatch, [PASSPHRASE, NEW_PASSPHRASE, NEW_PASSPHRASE])
    questions: list[str] = []
    answers = ["", "n", "y"]  # keep protected (default), not the same passphrase, replace: yes

    def answer(question: str = "") -> str:
        questions.append(question)
        return answers.pop(0)

    monkeypatch.setattr(builtins, "input", answer)
    code, _, err = run(capsys, "--data-dir", tmp_path, "keys", "import", exported)
    assert code == 0, err
    assert questions[0] == "Keep the imported identity protected by a passphrase? [Y/n] "
    assert questions[1] == "Use the same passphrase as the file? [Y/n] "
    assert terminal.asked[1:] == [
        "New passphrase for the imported identity: ",
        "Repeat the new passphrase: ",
    ]
    path = identity_file(tmp_path)
    assert read_identity_file(path, NEW_PASSPHRASE.encode()).key == other.key


# ---------------------------------------------------------------------------- send -


def test_send_reads_the_text_from_stdin_so_that_argv_does_not_carry_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**os.environ, FAST_KDF_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-m", "comm_tui", "--data-dir", str(tmp_path), "send", "nobody", "-"],
        input="a text",
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert done.stderr == "comm-tui: no contact named 'nobody'\n"
    done = subprocess.run(
        [sys.executable, "-m", "comm_tui", "--data-dir", str(tmp_path), "send", "nobody", "-"],
        input="\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert done.stderr == "comm-tui: the text is empty: nothing to send\n"


# ---------------------------------------------------------------------------- real nodes


def _secret_forms(identity: Identity) -> list[bytes]:
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


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_real_nodes_at_debug_never_log_the_text_seeds_or_passphrases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    text = "the eagle lands at midnight 7c1f"
    relay_pass, recipient_pass, sender_pass = (
        "relay pass 81f2",
        "recipient pass 3a9d",
        "sender pw 55e0",
    )
    data = str(tmp_path)
    identities: dict[str, Identity] = {}
    for profile, passphrase in (("relay", relay_pass), ("r", recipient_pass), ("s", sender_pass)):
        assert run(capsys, "--data-dir", tmp_path, "--profile", profile, "id")[0] == 0
        identities[profile] = read_identity_file(identity_file(tmp_path, profile))
        new = line_fd(fds, passphrase.encode() + b"\n")
        argv = ("--data-dir", tmp_path, "--profile", profile, "keys", "protect")
        assert run(capsys, *argv, "--new-passphrase-fd", new)[0] == 0
    code, out, _ = run(
        capsys, "--data-dir", tmp_path, "--profile", "r", "--passphrase-fd",
        line_fd(fds, recipient_pass.encode()), "id",
    )  # fmt: skip
    assert code == 0
    card = re.search(r"^card: (\S+)$", out, re.M)
    assert card is not None
    # The most verbose setting there is: asyncio's debug mode, and every record at DEBUG.
    env = {**os.environ, FAST_KDF_ENV: "1", "PYTHONUNBUFFERED": "1", "PYTHONASYNCIODEBUG": "1"}
    procs: list[Proc] = []
    try:
        relay_fd = line_fd(fds, relay_pass.encode() + b"\n")
        relay = Proc(
            ["--data-dir", data, "--profile", "relay", "--passphrase-fd", relay_fd,
             "node", "--listen", "127.0.0.1:0", "--log-level", "debug"],
            env, pass_fds=(int(relay_fd),),
        )  # fmt: skip
        procs.append(relay)
        first = relay.wait_for_line(r"listening (127\.0\.0\.1:\d+) ").group(1)
        recipient_fd = line_fd(fds, recipient_pass.encode() + b"\n")
        recipient = Proc(
            ["--data-dir", data, "--profile", "r", "--passphrase-fd", recipient_fd,
             "node", "--listen", "127.0.0.1:0", "--bootstrap", first, "--log-level", "debug"],
            {**env, PASSPHRASE_ENV: "not used: the fd wins"}, pass_fds=(int(recipient_fd),),
        )  # fmt: skip
        procs.append(recipient)
        recipient.wait_for_line(r" listening ")
        sent = subprocess.run(
            [sys.executable, "-m", "comm_tui", "--data-dir", data, "--profile", "s",
             "send", card.group(1), "-", "--listen", "127.0.0.1:0", "--bootstrap", first,
             "--wait", "20"],
            input=text, capture_output=True, text=True,
            env={**env, PASSPHRASE_ENV: sender_pass}, timeout=PROCESS_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        recipient.wait_for_line(r": received text [0-9a-f]{32} ")
        argvs = [_cmdline(proc.popen.pid) for proc in procs]
        environ = Path(f"/proc/{relay.popen.pid}/environ").read_bytes()
        for proc in procs:
            proc.popen.terminate()
        outputs = [sent.stdout, sent.stderr]
        for proc in procs:
            assert proc.popen.wait(timeout=PROCESS_TIMEOUT_S) == 0
            proc.wait_for_line(r" stopped$")
            assert proc.popen.stderr is not None
            outputs += ["\n".join(proc.seen), proc.popen.stderr.read()]
    finally:
        for proc in procs:
            proc.kill()

    secrets = [text.encode(), relay_pass.encode(), recipient_pass.encode(), sender_pass.encode()]
    for identity in identities.values():
        secrets += _secret_forms(identity)

    def assert_clean(blob: bytes, where: str) -> None:
        for secret in secrets:
            assert secret not in blob, f"a secret or the text found in {where}"

    for output in outputs:
        assert_clean(output.encode(), "a process's output")
    for argv in argvs:
        assert_clean(argv, "a process's arguments")
    assert relay_pass.encode() not in environ  # the fd leaves nothing in the environment

    roots = {tmp_path}
    for profile in identities:
        paths = profile_paths(profile, tmp_path)
        roots |= {paths.log_dir, paths.runtime_dir}
    scanned: list[Path] = []
    in_database = False
    files = {p.resolve() for root in roots for p in root.rglob("*") if p.is_file()}
    for path in sorted(files):
        blob = path.read_bytes()
        if path.name.startswith("identity.key"):
            # Only ciphertext: the seed and the passphrase are not in it either.
            assert_clean(blob, str(path))
        elif path.name.startswith(profile_paths("r", tmp_path).database.name):
            in_database = in_database or text.encode() in blob
        else:
            assert_clean(blob, str(path))
            scanned.append(path)
    # The search can fail: the text is where it belongs, and the debug logs were written.
    assert in_database
    logs = [p for p in scanned if p.name == "node.log"]
    assert len(logs) == 2
    for log in logs:
        assert " debug log: " in log.read_text()


# ---------------------------------------------------------------------------- units


def test_read_passphrase_fd_takes_exactly_one_line(fds: list[int]) -> None:
    fd = int(line_fd(fds, b"first line\nsecond line\n"))
    assert read_passphrase_fd(fd) == b"first line"
    # The rest stays for whoever reads the descriptor next.
    assert read_passphrase_fd(fd) == b"second line"
    with pytest.raises(UserError, match="is empty"):
        read_passphrase_fd(fd)


def test_a_passphrase_source_reads_each_channel_once(fds: list[int]) -> None:
    environ = {PASSPHRASE_ENV: PASSPHRASE}
    source = PassphraseSource(environ=environ, prompt=None)
    assert source.given() == PASSPHRASE.encode()
    assert environ == {}
    assert source.given() == PASSPHRASE.encode()  # cached, not read again
    fd_source = PassphraseSource(fd=int(line_fd(fds, b"from the fd\n")), environ={}, prompt=None)
    assert fd_source.given() == b"from the fd"
    assert fd_source.given() == b"from the fd"
    assert PassphraseSource(environ={}, prompt=None).given() is None
    with pytest.raises(PassphraseRequired, match="--passphrase-fd N"):
        PassphraseSource(environ={}, prompt=None).ask("?")


def test_unlock_identity_tries_a_script_channel_once(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "identity.key"
    write_identity_file(path, identity, PASSPHRASE.encode(), KdfStrength.MIN)
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return PASSPHRASE

    wrong = PassphraseSource(environ={PASSPHRASE_ENV: "wrong"}, prompt=prompt)
    with pytest.raises(WrongPassphrase):
        unlock_identity(path, wrong)
    assert asked == []  # a script's wrong passphrase is not followed by a prompt
    right = PassphraseSource(environ={}, prompt=prompt)
    assert unlock_identity(path, right).key == identity.key
    assert len(asked) == 1


def test_replace_identity_protects_the_new_file_and_copies_the_old_verbatim(
    tmp_path: Path,
) -> None:
    path = tmp_path / "identity.key"
    old, new = Identity.generate(), Identity.generate()
    write_identity_file(path, old)
    old_bytes = path.read_bytes()
    backup = replace_identity(path, new, PASSPHRASE.encode(), KdfStrength.MIN)
    assert backup is not None and backup.read_bytes() == old_bytes
    assert read_identity_file(path, PASSPHRASE.encode()).key == new.key
    assert key_file_address(path) == new.address  # readable without the passphrase
    assert unprotected_backups(path) == [backup]
    write_identity_file(backup, old, b"now protected", KdfStrength.MIN)
    assert unprotected_backups(path) == []
    # Garbage beside it is not a backup that holds a key.
    (tmp_path / "identity.key.bak-garbage").write_text("not json")
    assert unprotected_backups(path) == []


def test_a_wrong_passphrase_is_its_own_error_type(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_identity_file(path, Identity.generate(), PASSPHRASE.encode(), KdfStrength.MIN)
    with pytest.raises(WrongPassphrase):
        read_identity_file(path, b"wrong")
    with pytest.raises(WrongPassphrase):
        read_identity_file(path, b"")
    with pytest.raises(PassphraseRequired):
        read_identity_file(path)


def test_contacts_and_history_need_no_passphrase_because_it_protects_neither(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fds: list[int]
) -> None:
    identity = make_protected(capsys, tmp_path, fds)
    bob = Identity.generate()
    base = ("--data-dir", tmp_path)
    code, _, err = run(capsys, *base, "contacts", "add", "bob", encode_card(bob.public))
    assert code == 0, err
    code, _, err = run(capsys, *base, "contacts", "add", "me", encode_card(identity.public))
    assert_user_error(code, err, "this profile's own card")
    code, out, _ = run(capsys, *base, "contacts", "list")
    assert code == 0 and out.startswith("bob\t")
    assert run(capsys, *base, "contacts", "rename", "bob", "robert")[0] == 0
    with Database.open(profile_paths("default", tmp_path).database) as db:
        db.add_incoming(b"\x02" * 16, bob.key, bob.address, "hi", 1, 1_700_000_000.0)
    code, out, err = run(capsys, *base, "history", "robert", "--json")
    assert code == 0, err
    assert '"to": "' + identity.address.hex() + '"' in out
    assert run(capsys, *base, "conversations")[0] == 0
    assert run(capsys, *base, "contacts", "remove", "robert")[0] == 0
    # What needs the key still asks for the passphrase.
    code, _, err = run(capsys, *base, "id")
    assert_user_error(code, err, "protected by a passphrase")
