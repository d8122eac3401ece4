"""The relay settings of a profile (docs/PROTOCOL.md, "8.1 Local caps" and "12.3"): read
strictly from config.toml, carried into the node, switched from the app and shown on its
status panel."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from textual.widgets import Static

from comm_tui.app import app_session
from comm_tui.app.widgets.status_panel import (
    StatusPanel,
    _rows,
    cap_bar,
    relay_cap_rows,
    used_of,
)
from comm_tui.errors import UserError
from comm_tui.profile import node_config
from comm_tui.protocol.node import NodeConfig
from comm_tui.protocol.relay_store import RelayUsage
from comm_tui.store.config import Config, load_config, save_config
from comm_tui.store.paths import ensure_dirs, profile_paths
from tests.app_helpers import SIZE, make_profile, on_node, wait_on_node, wait_until
from tests.node_procs import PROCESS_TIMEOUT_S, Proc

MIB = 1024 * 1024


def test_defaults_are_a_real_node_s_and_refuse_nothing_new() -> None:
    """64 MiB and 7 days as before the caps were settable; the node config agrees."""
    config = Config()
    assert (config.relay, config.relay_store_mb, config.relay_store_items) == (True, 64, 50_000)
    assert (config.relay_store_days, config.relay_bandwidth_kib_s) == (7, 256)
    derived, real = node_config(config), NodeConfig()
    assert derived.store_total_bytes == real.store_total_bytes == 64 * MIB
    assert derived.store_max_items == real.store_max_items == 50_000
    assert derived.store_max_days == real.store_max_days == 7.0
    assert derived.relay_bandwidth_bytes_s == real.relay_bandwidth_bytes_s == 256 * 1024
    assert derived.relay is real.relay is True


def test_hand_written_relay_settings_reach_the_node(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "relay = false\nrelay_store_mb = 8\nrelay_store_items = 1000\n"
        "relay_store_days = 2.5\nrelay_bandwidth_kib_s = 32\n"
    )
    config = load_config(path)
    derived = node_config(config, NodeConfig(k=4))
    assert derived.k == 4  # the rest of the base is kept (tests shrink timings)
    assert derived.relay is False
    assert derived.store_total_bytes == 8 * MIB
    assert derived.store_max_items == 1000
    assert derived.store_max_days == 2.5
    assert derived.relay_bandwidth_bytes_s == 32 * 1024


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "relay_store_mb = 1\nrelay_store_items = 1\n"
        "relay_store_days = 7\nrelay_bandwidth_kib_s = 1\n"
    )
    config = load_config(path)
    assert (config.relay_store_mb, config.relay_store_items) == (1, 1)
    assert (config.relay_store_days, config.relay_bandwidth_kib_s) == (7, 1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('relay = "no"', "'relay' must be true or false"),
        ("relay_store_mb = 0", "'relay_store_mb' must be a whole number of MiB from 1 to"),
        ("relay_store_mb = 1.5", "'relay_store_mb' must be a whole number of MiB"),
        ("relay_store_mb = true", "'relay_store_mb' must be a whole number of MiB"),
        ("relay_store_mb = 1048577", "from 1 to 1,048,576"),
        ("relay_store_items = -1", "'relay_store_items' must be a whole number of items"),
        ("relay_store_days = 0", "'relay_store_days' must be a number of days above 0"),
        ("relay_store_days = 7.5", "at most 7 (the time to live of a message)"),
        ('relay_store_days = "7"', "'relay_store_days' must be a number of days"),
        ("relay_bandwidth_kib_s = 0", "'relay_bandwidth_kib_s' must be a whole number of KiB per"),
        ("relay_bandwidth_kbps = 0", "'relay_bandwidth_kbps' must be a whole number of KiB per"),
        ("relay_stor_mb = 1", "unknown setting 'relay_stor_mb'"),
    ],
)
def test_a_bad_value_is_one_clear_line_naming_the_file(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(line + "\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_relay_settings_round_trip_and_defaults_stay_out_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_config(path, Config())
    assert "relay" not in path.read_text()
    changed = Config(
        relay=False,
        relay_store_mb=16,
        relay_store_items=123,
        relay_store_days=1.5,
        relay_bandwidth_kib_s=64,
    )
    save_config(path, changed)
    assert load_config(path) == changed


# ---------------------------------------------------------------- the dashboard

USAGE = RelayUsage(
    relaying=True,
    bytes_held=16 * MIB,
    bytes_cap=64 * MIB,
    items_held=2_480,
    items_cap=50_000,
    days_cap=7.0,
    sent_bytes=0,
    bandwidth_cap=256 * 1024,
    deferred=2,
    origins=(("198.18.3.0/24", 8 * MIB), ("198.18.7.0/24", 4 * MIB)),
    refused=(("bytes", 3), ("items", 0), ("days", 1), ("relay off", 0)),
)


def test_a_cap_bar_fills_in_proportion_and_shows_any_use() -> None:
    assert cap_bar(16, 64) == "██░░░░"  # 1.5 cells, rounded
    assert cap_bar(64, 64) == "██████"
    assert cap_bar(65, 64) == "██████"
    assert cap_bar(1, 10**9) == "█░░░░░"  # any use shows
    assert cap_bar(0, 64) == "░░░░░░"
    assert cap_bar(32, 64, ("#", ".")) == "###..."


def test_relay_rows_show_use_against_each_cap_origins_and_refusals() -> None:
    rows = dict(relay_cap_rows(USAGE, 1024.0))
    assert rows["relaying"] == "on, for others"
    assert rows["stored"] == "16.0/64.0 MiB ██░░░░"
    assert rows["items"] == "2,480/50,000 █░░░░░"
    assert rows["bandwidth"] == "1.0/256.0 KiB/s █░░░░░"
    assert rows["max life"] == "7 days"
    assert rows["origins"] == "198.18.3.0/24       50%"
    assert rows[""] == "198.18.7.0/24       25%"
    assert rows["refused"] == "bytes 3 · items 0 · days 1"
    assert rows["deferred"] == "2 sends (bandwidth)"
    off = RelayUsage(**{**USAGE.__dict__, "relaying": False, "refused": (("relay off", 4),)})
    rows = dict(relay_cap_rows(off, 0.0, ascii=True))
    assert rows["relaying"] == "off: own texts only"
    assert rows["refused"] == "bytes 0 · items 0 · days 0 · off 4"
    assert rows["stored"] == "16.0/64.0 MiB ##...."


def test_used_of_names_the_unit_once_when_it_is_shared() -> None:
    assert used_of(512, 64 * MIB) == "512 B / 64.0 MiB"
    assert used_of(2 * MIB, 256 * 1024, "/s") == "2.0 MiB/s / 256.0 KiB/s"
    assert used_of(300_000, 256 * 1024, "/s") == "293.0/256.0 KiB/s"
    assert used_of(2048, 256 * 1024, "/s") == "2.0/256.0 KiB/s"


def test_every_relay_row_fits_the_status_panel() -> None:
    """The panel is 46 columns: 42 inside its border and padding, 40 beside a scroll
    bar; the caps' labels take 11 ("bandwidth" and a gap)."""
    big = RelayUsage(
        **{**USAGE.__dict__, "bytes_held": 999 * MIB, "items_held": 49_999, "deferred": 99_999}
    )
    for label, value in relay_cap_rows(big, 255.9 * 1024):
        assert len("bandwidth") + 2 + len(value) <= 40, (label, value)


async def test_the_palette_switch_turns_relaying_off_remembers_it_and_the_panel_says_so(
    tmp_path: Path,
) -> None:
    make_profile(tmp_path)
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node")
            assert await on_node(app, lambda s: s.node.relaying)
            app.action_toggle_relay()
            await wait_on_node(
                pilot, app, lambda s: not s.node.relaying and s.node.client_mode, "relaying off"
            )
            assert load_config(profile_paths("default", tmp_path).config_file).relay is False
            relay = app.query_one(StatusPanel).query_one("#status-relay", Static)
            await wait_until(
                pilot, lambda: "off: own texts only" in str(relay.render()), "the panel to say so"
            )
    # The next start reads it: the node starts with relaying off.
    with app_session(data_dir=tmp_path, listen="127.0.0.1:0") as app:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.node_bound is not None, "the node")
            assert not await on_node(app, lambda s: s.node.relaying)
            app.action_toggle_relay()
            await wait_on_node(pilot, app, lambda s: s.node.relaying, "relaying on")
            assert load_config(profile_paths("default", tmp_path).config_file).relay is True


def test_comm_tui_node_runs_with_the_config_s_caps_and_logs_them(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """The real command: config.toml's relay settings reach the node, and its stats line
    shows use against each cap and the refusals by cap."""
    paths = profile_paths("default", tmp_path)
    ensure_dirs(paths)
    save_config(
        paths.config_file,
        Config(lan_discovery=False, relay=False, relay_store_items=1234, relay_bandwidth_kib_s=8),
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Proc(["--data-dir", str(tmp_path), "node", "--listen", "127.0.0.1:0"], env)
    procs.append(proc)
    proc.wait_for_line(r"listening 127\.0\.0\.1:(\d+)")
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(timeout=PROCESS_TIMEOUT_S) == 0
    line = proc.wait_for_line(r"stats: .* relay=off ").string
    assert " relay_items=0/1234 " in line and " relay_bandwidth=8192B/s " in line
    assert f" relay_bytes=0/{64 * MIB} " in line and " relay_days=7 " in line
    assert "refused_by_cap=(bytes=0 items=0 days=0 relay_off=0)" in line
    assert " client=yes" in line


def test_waiting_network_names_are_shown_as_text_never_as_markup() -> None:
    """The waiting rows name networks; whatever a name holds, the panel shows it as
    plain text (a name is derived from an address, but no row may parse markup)."""
    hostile = "[bold red]x[/][@click=app.quit]y[/]"
    usage = RelayUsage(
        **{
            **USAGE.__dict__,
            "waiting": 5,
            "waiting_networks": 1,
            "waiting_wide": 1,
            "waiting_top": ((hostile, 5),),
        }
    )
    rows = relay_cap_rows(usage, 0.0)
    assert ("", f"{hostile:<18} 5") in rows
    shown = _rows(*rows)
    assert hostile in shown.plain
    assert all(span.style == "$text-muted" for span in shown.spans)  # only the labels styled
