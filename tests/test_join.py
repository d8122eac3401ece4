"""Joining without a bootstrap address: cards with hints, peers learned over time, dual stack."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from comm_tui.cli import main
from comm_tui.crypto.card import encode_hints_card, read_card
from comm_tui.crypto.identity import Identity
from comm_tui.net.portmap import PortMapping
from comm_tui.net.service import CARD_META, IncomingText, NodeService, ServiceEvent
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.node import Node, parse_node_info
from comm_tui.protocol.reachability import Reachability
from comm_tui.protocol.routing import normalize_endpoint
from comm_tui.store.config import parse_endpoint
from comm_tui.store.db import Database
from comm_tui.store.paths import profile_paths
from tests.wire import peer_addresses

WAIT_S = 10.0
JOIN_TARGET_S = 5.0  # issue 10: a fresh node with only a card joins and delivers in 5 s


async def _until(condition: object, what: str, wait_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _service(path: Path, **kwargs: object) -> NodeService:
    return NodeService(Identity.generate(), Database.open(path), **kwargs)  # type: ignore[arg-type]


async def _stop(*services: NodeService) -> None:
    for service in services:
        await service.stop()
        service.db.close()


async def test_a_fresh_profile_with_only_a_card_with_hints_joins_and_delivers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`contacts add` keeps the card's hints; `send` pings them first and delivers."""
    received: list[ServiceEvent] = []
    bob = _service(tmp_path / "bob.db", listen=("127.0.0.1", 0))
    try:
        bound = await bob.start()
        bob.subscribe(received.append)
        card = encode_hints_card(bob.identity, [bound], int(time.time()))
        data = tmp_path / "data"
        assert main(["--data-dir", str(data), "contacts", "add", "bob", card]) == 0
        capsys.readouterr()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "comm_tui", "--data-dir", str(data), "send", "bob",
            "hello through a card", "--wait", str(JOIN_TARGET_S), "--listen", "127.0.0.1:0",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "delivered to bob"
        texts = [e.row.text for e in received if isinstance(e, IncomingText)]
        assert texts == ["hello through a card"]
        # Process start included; the figure is in the report.
        assert elapsed < JOIN_TARGET_S + 3
    finally:
        await _stop(bob)
    db = Database.open(profile_paths("default", data).database)
    try:
        assert db.contact_hints() == [(bob.identity.key, "127.0.0.1", bound[1])]
    finally:
        db.close()


def test_a_newer_cards_hints_replace_an_older_ones(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "a.db")
    try:
        key = Identity.generate().key
        db.add_contact("bob", key, bytes(20), 0.0)
        assert db.save_card_hints(key, [("198.18.0.5", 7000), ("2001:2::5", 7000)], 100)
        assert not db.save_card_hints(key, [("198.18.0.9", 7000)], 99)  # older: kept out
        assert db.contact_hints() == [(key, "198.18.0.5", 7000), (key, "2001:2::5", 7000)]
        assert db.save_card_hints(key, [("198.18.0.9", 7000)], 101)
        assert db.contact_hints() == [(key, "198.18.0.9", 7000)]
        db.save_card_hints(Identity.generate().key, [("198.18.0.7", 7000)], 100)
        assert len(db.contact_hints()) == 1  # hints of someone who is no contact are not used
    finally:
        db.close()


def test_contacts_add_refuses_a_damaged_hints_card_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = encode_hints_card(Identity.generate(), [("198.18.0.5", 7000)], 1)
    typo = card[:100] + ("a" if card[100] != "a" else "b") + card[101:]
    code = main(["--data-dir", str(tmp_path), "contacts", "add", "bob", typo])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "comm-tui: card signature does not match: check it for typos\n"
    code = main(["--data-dir", str(tmp_path), "send", card[:-2], "hi"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("comm-tui: card is 178 characters, expected 180")


def test_id_prints_the_card_with_hints_the_node_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "id"]) == 0
    plain = capsys.readouterr().out
    assert "endpoint hints" not in plain
    paths = profile_paths("default", tmp_path)
    from comm_tui.crypto.keyfile import read_identity_file

    identity = read_identity_file(paths.identity_file)
    db = Database.open(paths.database)
    try:
        # What the node does when it knows a public endpoint (publish_card, tested below).
        service = NodeService(identity, db, listen=("0.0.0.0", 0), test_networks=True)
        service.bound = ("198.18.0.5", 7000)
        card = service.publish_card()
        assert read_card(card).hints == (("198.18.0.5", 7000),)
    finally:
        db.close()
    assert main(["--data-dir", str(tmp_path), "id"]) == 0
    out = capsys.readouterr().out
    assert f"card: {card}\n" in out
    assert "endpoint hints: 198.18.0.5:7000 (as of " in out
    # A card of another identity (a replaced key) is not shown as ours.
    db = Database.open(paths.database)
    try:
        db.set_meta(CARD_META, encode_hints_card(Identity.generate(), [("198.18.0.5", 1)], 1))
    finally:
        db.close()
    assert main(["--data-dir", str(tmp_path), "id"]) == 0
    assert capsys.readouterr().out == plain


def test_the_card_names_only_public_endpoints(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "a.db")
    try:
        service = NodeService(Identity.generate(), db, listen=("0.0.0.0", 0))
        service.bound = ("198.18.0.5", 7000)
        assert read_card(service.publish_card()).hints == ()  # reserved, not a test profile
        service.test_networks = True
        assert read_card(service.publish_card()).hints == (("198.18.0.5", 7000),)
        service.bound = ("127.0.0.1", 7000)
        assert read_card(service.publish_card()).hints == ()  # back to a version 1 card
        assert len(service.publish_card()) == 65
    finally:
        db.close()


async def test_a_restarted_node_rejoins_without_bootstrap(tmp_path: Path) -> None:
    """Peers are saved as they join (not only at a clean stop), and tried at start."""
    alice = _service(tmp_path / "alice.db", listen=("127.0.0.1", 0))
    bob_id = Identity.generate()
    try:
        bound = await alice.start()
        bob_db = Database.open(tmp_path / "bob.db")
        bob = NodeService(bob_id, bob_db, listen=("127.0.0.1", 0), bootstrap=[bound])
        await bob.start()
        await _until(lambda: alice.identity.address in peer_addresses(bob.node), "bob to join")
        # Saved at once: a kill now would not lose it.
        assert [p[0] for p in bob_db.load_peers()] == [alice.identity.key]
        await _stop(bob)
        bob = NodeService(bob_id, Database.open(tmp_path / "bob.db"), listen=("127.0.0.1", 0))
        assert bob.bootstrap_endpoints == []
        await bob.start()
        await _until(
            lambda: alice.identity.address in peer_addresses(bob.node), "bob to rejoin", 5.0
        )
        await _stop(bob)
    finally:
        await _stop(alice)


def test_saved_peers_keep_when_each_last_answered(tmp_path: Path) -> None:
    """The most recently good peers come first at start (load_peers orders by it)."""
    db = Database.open(tmp_path / "a.db")
    try:
        service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0))
        keys = [Identity.generate() for _ in range(2)]
        service.node._table.observe(keys[0].key, keys[0].address, ("127.0.0.1", 4001), 100.0)
        service.node._table.observe(keys[1].key, keys[1].address, ("127.0.0.1", 4002), 200.0)
        service._save_peers()
        assert [(p[0], p[3]) for p in db.load_peers()] == [
            (keys[1].key, 200.0),
            (keys[0].key, 100.0),
        ]
    finally:
        db.close()


# ---------------------------------------------------------------- dual stack


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_endpoints_are_normalised() -> None:
    assert normalize_endpoint(("::ffff:198.18.0.5", 7)) == ("198.18.0.5", 7)
    assert normalize_endpoint(("2001:0002:0000::0005", 7)) == ("2001:2::5", 7)
    assert normalize_endpoint(("198.18.0.5", 7)) == ("198.18.0.5", 7)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:198.18.0.5")
    candidate = parse_node_info(pb.NodeInfo(key=Identity.generate().key, ip=mapped, port=7))
    assert candidate is not None and candidate.endpoint == ("198.18.0.5", 7)
    assert parse_endpoint("[::1]:0", allow_port_zero=True) == ("::1", 0)
    assert parse_endpoint("[::]:7000") == ("::", 7000)


@pytest.mark.skipif(not _ipv6_loopback(), reason="IPv6 loopback (::1) is not available here")
async def test_a_dual_stack_node_talks_to_ipv4_and_ipv6_peers(tmp_path: Path) -> None:
    received: list[ServiceEvent] = []
    hub = _service(tmp_path / "hub.db", listen=("::", 0))
    v4 = _service(tmp_path / "v4.db", listen=("127.0.0.1", 0))
    v6 = _service(tmp_path / "v6.db", listen=("::1", 0))
    try:
        hub_port = (await hub.start())[1]
        v4.bootstrap_endpoints = [("127.0.0.1", hub_port)]
        v6.bootstrap_endpoints = [("::1", hub_port)]
        await v4.start()
        await v6.start()
        v6.subscribe(received.append)
        await _until(
            lambda: (
                v4.identity.address in peer_addresses(hub.node)
                and v6.identity.address in peer_addresses(hub.node)
            ),
            "both peers to join the dual-stack node",
        )
        endpoints = {n.endpoint[0] for n in hub.node.peers()}
        assert endpoints == {"127.0.0.1", "::1"}  # the IPv4 peer is not "::ffff:127.0.0.1"
        v6.bootstrap_endpoints = []
        hub.send_text(v6.identity.public, "over IPv6")
        v4.send_text(v6.identity.public, "from IPv4, relayed")
        await _until(
            lambda: len([e for e in received if isinstance(e, IncomingText)]) == 2, "both texts"
        )
    finally:
        await _stop(hub, v4, v6)


@pytest.mark.skipif(not _ipv6_loopback(), reason="IPv6 loopback (::1) is not available here")
async def test_a_profile_listens_dual_stack_by_default(tmp_path: Path) -> None:
    """Without a listen setting a node takes IPv6 and IPv4 on one socket (spec 13.4)."""
    from comm_tui.profile import open_profile, start_service

    profile = open_profile("default", tmp_path / "data")
    v4 = _service(tmp_path / "v4.db", listen=("127.0.0.1", 0))
    v6 = _service(tmp_path / "v6.db", listen=("::1", 0))
    try:
        profile.config.lan_discovery = False
        service = await start_service(profile)
        try:
            assert service.bound is not None and service.bound[0] == "::"
            port = service.bound[1]
            v4.bootstrap_endpoints = [("127.0.0.1", port)]
            v6.bootstrap_endpoints = [("::1", port)]
            await v4.start()
            await v6.start()
            await _until(
                lambda: {n.endpoint[0] for n in service.node.peers()} == {"127.0.0.1", "::1"},
                "an IPv4 and an IPv6 peer",
            )
        finally:
            await service.stop()
    finally:
        await _stop(v4, v6)
        profile.close()


def test_the_card_names_where_strangers_reach_us(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the bound address: the endpoint probes showed public, and the port mapping;
    never a cone NAT's mapping, which lets in only those we wrote to."""
    db = Database.open(tmp_path / "a.db")
    try:
        service = NodeService(Identity.generate(), db, listen=("0.0.0.0", 0))
        service.bound = ("0.0.0.0", 7000)
        service.test_networks = True
        seen: list[Reachability] = [Reachability("cone", ("198.18.9.9", 40000), 1.0)]
        monkeypatch.setattr(Node, "reachability", property(lambda node: seen[0]))
        assert read_card(service.publish_card()).hints == ()
        service.port_mapping = PortMapping("PCP", ("198.18.9.9", 7000), 7200, "198.19.0.1", 7000)
        assert read_card(service.publish_card()).hints == (("198.18.9.9", 7000),)
        seen[0] = Reachability("public", ("198.18.9.8", 7000), 2.0)
        assert read_card(service.publish_card()).hints == (
            ("198.18.9.8", 7000),
            ("198.18.9.9", 7000),
        )
    finally:
        db.close()
