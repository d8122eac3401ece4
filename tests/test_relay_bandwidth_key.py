"""The relay bandwidth cap's key says its unit (docs/PROTOCOL.md, "8.1 Local caps").

``relay_bandwidth_kbps`` always meant KiB per second, 8.192 times what its name says: a
user who wrote 1000 for 1 Mbit/s let the relay send 8 Mbit/s. The key is now
``relay_bandwidth_kib_s``; the old one is still read with the meaning it had (so no
existing node's cap changes under it), says so in one line, and goes when the file is
written again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comm_tui.app import app_session
from comm_tui.errors import UserError
from comm_tui.profile import node_config
from comm_tui.store.config import Config, load_config, save_config
from comm_tui.store.paths import ensure_dirs, profile_paths
from tests.app_helpers import SIZE, make_profile, wait_until
from tests.node_procs import cli

KIB = 1024


def test_the_new_key_is_kib_per_second(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("relay_bandwidth_kib_s = 125\n")
    config = load_config(path)
    assert config.relay_bandwidth_kib_s == 125 and config.notices == []
    assert node_config(config).relay_bandwidth_bytes_s == 125 * KIB


def test_the_old_key_keeps_its_meaning_says_so_and_is_written_back_renamed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("relay_bandwidth_kbps = 1000\n")
    config = load_config(path)
    assert node_config(config).relay_bandwidth_bytes_s == 1000 * KIB  # as before, not bits
    [notice] = config.notices
    assert "\n" not in notice and str(path) in notice
    assert "relay_bandwidth_kbps = 1000 is read as 1000 KiB/s" in notice
    assert "rename it relay_bandwidth_kib_s" in notice
    save_config(path, config)
    text = path.read_text()
    assert "relay_bandwidth_kib_s = 1000\n" in text and "kbps" not in text
    again = load_config(path)
    assert again.relay_bandwidth_kib_s == 1000 and again.notices == []


def test_both_keys_at_once_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("relay_bandwidth_kib_s = 10\nrelay_bandwidth_kbps = 20\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "set 'relay_bandwidth_kib_s' only" in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_commands_print_the_notice_once_on_stderr(tmp_path: Path) -> None:
    paths = profile_paths("default", tmp_path)
    ensure_dirs(paths)
    save_config(paths.config_file, Config(lan_discovery=False))
    with paths.config_file.open("a") as file:
        file.write("relay_bandwidth_kbps = 64\n")
    done = cli({**os.environ}, "--data-dir", str(tmp_path), "id")
    assert done.returncode == 0, done.stderr
    notices = [line for line in done.stderr.splitlines() if "relay_bandwidth_kbps" in line]
    assert notices == [
        f"comm-tui: config file {paths.config_file}: relay_bandwidth_kbps = 64 is read as"
        " 64 KiB/s, as before; rename it relay_bandwidth_kib_s (it never meant kilobits)"
    ]
    assert "relay_bandwidth_kbps" not in done.stdout


async def test_the_app_shows_the_notice(tmp_path: Path) -> None:
    make_profile(tmp_path)
    config_file = profile_paths("default", tmp_path).config_file
    with config_file.open("a") as file:
        file.write("relay_bandwidth_kbps = 64\n")
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: any(
                    "rename it relay_bandwidth_kib_s" in n.message for n in app._notifications
                ),
                "the notice",
            )
