"""The settings file: defaults, strict reading, a faithful writer, and endpoint parsing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comm_tui.errors import StorageError, UserError
from comm_tui.store.config import Config, load_config, parse_endpoint, save_config


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "config.toml") == Config(
        listen=None, bootstrap=[], nickname=None, lan_discovery=True, port_mapping=True
    )


def test_hand_written_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'listen = ":7000"\nbootstrap = ["198.51.100.7:7000", "[2001:db8::1]:7000"]\n'
        'nickname = "Zoë"\nlan_discovery = false\nport_mapping = false\nascii = true\n'
    )
    assert load_config(path) == Config(
        listen=":7000",
        bootstrap=["198.51.100.7:7000", "[2001:db8::1]:7000"],
        nickname="Zoë",
        lan_discovery=False,
        port_mapping=False,
        ascii=True,
    )


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config = Config(
        listen="0.0.0.0:0",
        bootstrap=["a.example:1", "9"],
        nickname='q"\\\n\t\x00',
        port_mapping=False,
        ascii=False,
    )
    save_config(path, config)
    assert load_config(path) == config
    save_config(path, Config())
    assert load_config(path) == Config()
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary file left


# Each example writes and fsyncs a file: no per-example deadline (a slow disk is no failure).
@settings(deadline=None)
@given(nickname=st.text())
def test_any_nickname_round_trips(nickname: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        save_config(path, Config(nickname=nickname))
        assert load_config(path).nickname == nickname


def test_unencodable_nickname_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot save config file"):
        save_config(tmp_path / "config.toml", Config(nickname="\ud800"))


def test_unwritable_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot write config file"):
        save_config(tmp_path / "missing" / "config.toml", Config())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("listen = ", "is not valid TOML"),
        ("listen = 7000", "'listen' must be a string"),
        ("nickname = ['x']", "'nickname' must be a string"),
        ('bootstrap = "1.2.3.4:5"', "'bootstrap' must be a list of strings"),
        ("bootstrap = [1]", "'bootstrap' must be a list of strings"),
        ('lan_discovery = "yes"', "'lan_discovery' must be true or false"),
        ("port_mapping = 1", "'port_mapping' must be true or false"),
        ("ascii = 1", "'ascii' must be true or false"),
        ("bootsrap = []", "unknown setting 'bootsrap'"),
        ('listen = "nonsense"', "'listen': invalid address 'nonsense': missing port"),
        ('bootstrap = ["h:0"]', "'bootstrap': invalid address 'h:0': port must be between"),
    ],
)
def test_bad_file_names_the_file_and_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content + "\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"config file {path}")
    assert problem in message
    assert "\n" not in message


def test_non_utf8_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'nickname = "\xff"\n')
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("node.example.org:1", ("node.example.org", 1)),
        ("localhost:65535", ("localhost", 65535)),
        (":7000", ("0.0.0.0", 7000)),
        ("7000", ("0.0.0.0", 7000)),
        (" 7000 ", ("0.0.0.0", 7000)),
        ("[::1]:7000", ("::1", 7000)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_parse_endpoint_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


def test_parse_endpoint_default_host_and_port_zero() -> None:
    assert parse_endpoint("7000", default_host="::") == ("::", 7000)
    assert parse_endpoint(":0", allow_port_zero=True) == ("0.0.0.0", 0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing port"),
        ("localhost", "missing port"),
        ("localhost:", "missing port"),
        ("[::1]", "missing port after ']'"),
        ("[::1:7000", "missing ']'"),
        ("[nope]:7000", "is not an IPv6 address"),
        ("::1:7000", "put an IPv6 address in brackets"),
        ("host:0", "port must be between 1 and 65535"),
        ("host:65536", "port must be between 1 and 65535"),
        ("host:-1", "is not a number"),
        ("host:7e3", "is not a number"),
        ("999.1.1.1:7000", "is not an IPv4 address"),
        ("bad host:7000", "is not a host name"),
        ("-bad:7000", "is not a host name"),
        ("x\n:1", "is not a host name"),
    ],
)
def test_parse_endpoint_refuses_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(UserError) as info:
        parse_endpoint(text)
    message = str(info.value)
    assert message.startswith(f"invalid address {text!r}")
    assert reason in message
    assert "\n" not in message
