"""Port mapping (docs/PROTOCOL.md, "14. Port mapping"): the PCP / NAT-PMP codec and the
mapper's behaviour against a real responder on 127.0.0.1 (real UDP), good and hostile."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comm_tui.net import portmap
from comm_tui.net.portmap import (
    Answer,
    BadAnswer,
    PortMapper,
    PortMapping,
    default_gateway,
    gateway_lost_state,
    natpmp_map_request,
    parse_natpmp_address_answer,
    parse_natpmp_map_answer,
    parse_pcp_map_answer,
    pcp_map_request,
    usable_grant,
)
from comm_tui.net.service import NodeService, PortMappingChanged, ServiceEvent
from comm_tui.store.db import Database
from tests.netns.natpmp_responder import Behaviour, Responder, close, start

EXTERNAL = "198.18.0.2"
NONCE = bytes(range(12))


# ------------------------------------------------------------------------------ codec


def test_pcp_request_layout() -> None:
    data = pcp_map_request(NONCE, "198.18.1.10", 7000, 7200, None)
    assert len(data) == 60
    assert data[0] == 2 and data[1] == 1  # version 2, MAP request
    assert struct.unpack_from("!I", data, 4)[0] == 7200
    assert data[8:24] == bytes(10) + b"\xff\xff" + bytes([198, 18, 1, 10])
    assert data[24:36] == NONCE
    assert data[36] == 17  # UDP
    assert struct.unpack_from("!HH", data, 40) == (7000, 0)


def _pcp_answer(
    result: int = 0,
    lifetime: int = 7200,
    nonce: bytes = NONCE,
    internal: int = 7000,
    external: int = 7001,
    ip: str = EXTERNAL,
    opcode: int = 0x81,
    version: int = 2,
    extra: bytes = b"",
) -> bytes:
    header = struct.pack("!BBxBII12x", version, opcode, result, lifetime, 55)
    body = struct.pack("!12sB3xHH16s", nonce, 17, internal, external, bytes(10) + b"\xff\xff")
    return header + body[:-4] + socket.inet_aton(ip) + extra


def test_pcp_answer_parsed_and_checked() -> None:
    assert parse_pcp_map_answer(_pcp_answer(), NONCE, 7000) == Answer(0, 55, 7200, 7001, EXTERNAL)
    # Options after the MAP body are allowed (multiples of 4) and ignored.
    assert parse_pcp_map_answer(_pcp_answer(extra=bytes(8)), NONCE, 7000).result == 0
    assert parse_pcp_map_answer(_pcp_answer(result=2), NONCE, 7000) == Answer(2, 55)
    # A NAT-PMP-only server answers version 2 with version 0, "unsupported version".
    assert parse_pcp_map_answer(struct.pack("!BBHI", 0, 0x81, 1, 9), NONCE, 7000).result == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_pcp_answer()[:59], "pcp_size"),
        (_pcp_answer(extra=b"xx"), "pcp_size"),
        (_pcp_answer(extra=bytes(1100)), "pcp_size"),
        (_pcp_answer(version=3), "pcp_version"),
        (_pcp_answer(opcode=0x82), "pcp_opcode"),
        (_pcp_answer(opcode=0x01), "pcp_opcode"),
        (_pcp_answer(nonce=bytes(12)), "pcp_not_ours"),
        (_pcp_answer(internal=7002), "pcp_not_ours"),
        (struct.pack("!BBHI", 0, 0x81, 0, 9), "pcp_version"),
    ],
)
def test_pcp_hostile_answers_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BadAnswer) as caught:
        parse_pcp_map_answer(data, NONCE, 7000)
    assert caught.value.reason == reason


def test_natpmp_codec() -> None:
    assert natpmp_map_request(7000, 7000, 7200) == struct.pack("!BBxxHHI", 0, 1, 7000, 7000, 7200)
    address = struct.pack("!BBHI", 0, 128, 0, 9) + socket.inet_aton(EXTERNAL)
    assert parse_natpmp_address_answer(address) == Answer(0, 9, external_ip=EXTERNAL)
    mapped = struct.pack("!BBHIHHI", 0, 129, 0, 9, 7000, 7005, 3600)
    assert parse_natpmp_map_answer(mapped, 7000) == Answer(0, 9, 3600, 7005)
    refused = struct.pack("!BBHI", 0, 129, 2, 9)
    assert parse_natpmp_map_answer(refused, 7000) == Answer(2, 9)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack("!BBHIHHI", 0, 129, 0, 9, 7001, 7005, 3600), "natpmp_not_ours"),
        (struct.pack("!BBHIHHI", 1, 129, 0, 9, 7000, 7005, 3600), "natpmp_version"),
        (struct.pack("!BBHIHHI", 0, 128, 0, 9, 7000, 7005, 3600), "natpmp_opcode"),
        (struct.pack("!BBHIHH", 0, 129, 0, 9, 7000, 7005), "natpmp_size"),
        (struct.pack("!BBHIHHI", 0, 129, 0, 9, 7000, 7005, 3600) + b"x", "natpmp_size"),
        (b"\x00\x81", "natpmp_size"),
    ],
)
def test_natpmp_hostile_answers_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BadAnswer) as caught:
        parse_natpmp_map_answer(data, 7000)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (Answer(0, 0, 7200, 7000, EXTERNAL), None),
        (Answer(0, 0, 119, 7000, EXTERNAL), "lifetime_short"),
        (Answer(0, 0, 7200, 0, EXTERNAL), "bad_external_port"),
        (Answer(0, 0, 7200, 7000, None), "bad_external_address"),
        (Answer(0, 0, 7200, 7000, "0.0.0.0"), "bad_external_address"),
        (Answer(0, 0, 7200, 7000, "224.0.0.1"), "bad_external_address"),
        (Answer(0, 0, 7200, 7000, "127.0.0.1"), "bad_external_address"),
    ],
)
def test_usable_grant(answer: Answer, why: str | None) -> None:
    assert usable_grant(answer) == why


def test_epoch_rule() -> None:
    # Both clocks advanced alike: the same server.
    assert not gateway_lost_state((1000, 0.0), (1100, 100.0))
    # The server's epoch went back (a reboot), or lagged far behind our clock.
    assert gateway_lost_state((1000, 0.0), (5, 100.0))
    assert gateway_lost_state((1000, 0.0), (1010, 100.0))
    # Within the allowed drift (1/16 and 2 s) it is the same server.
    assert not gateway_lost_state((1000, 0.0), (1094, 100.0))


def test_default_gateway_from_route_table(tmp_path: Path) -> None:
    route = tmp_path / "route"
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
    route.write_text(
        f"{header}\n"
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth1\t00000000\t0A0112C6\t0003\t0\t0\t200\t00000000\t0\t0\t0\n"
        "eth0\t00000000\t010112C6\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "bad line\n"
        "eth2\t00000000\tZZZZ\t0003\t0\t0\t1\t00000000\t0\t0\t0\n"
    )
    assert default_gateway(route) == "198.18.1.1"  # the lowest metric wins
    route.write_text(f"{header}\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert default_gateway(route) is None
    assert default_gateway(tmp_path / "missing") is None


# -------------------------------------------------------------- client and responder


Changes = list[tuple[PortMapping | None, str]]


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    server = await start("127.0.0.1", 0, EXTERNAL)
    yield server
    close(server)


def _mapper(server: Responder, changes: Changes, **kwargs: object) -> PortMapper:
    assert server.transport is not None
    port = server.transport.get_extra_info("sockname")[1]
    return PortMapper(
        7000,
        lambda mapping, why: changes.append((mapping, why)),
        gateway="127.0.0.1",
        pcp_port=port,
        upnp=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _run_until_change(mapper: PortMapper, changes: Changes, count: int = 1) -> None:
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) >= count)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_pcp_mapping_then_removal(responder: Responder) -> None:
    changes: Changes = []
    mapper = _mapper(responder, changes)
    started = time.monotonic()
    await _run_until_change(mapper, changes)
    assert time.monotonic() - started < 1.0
    mapping = changes[0][0]
    assert mapping == PortMapping("PCP", (EXTERNAL, 7000), 7200, "127.0.0.1", 7000)
    assert mapping.describe() == f"udp {EXTERNAL}:7000 via PCP, 7200 s"
    assert ("127.0.0.1", 7000) in responder.grants
    await mapper.remove()
    assert responder.grants == {}
    assert mapper.mapping is None


async def test_natpmp_after_pcp_unsupported(responder: Responder) -> None:
    responder.behaviour = Behaviour(pcp=False, lifetime=3600)
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    assert changes[0][0] == PortMapping("NAT-PMP", (EXTERNAL, 7000), 3600, "127.0.0.1", 7000)
    await mapper.remove()
    assert responder.grants == {}
    assert struct.unpack_from("!HHI", responder.requests[-1], 4) == (7000, 0, 0)


async def test_refusals_reported(responder: Responder) -> None:
    responder.behaviour = Behaviour(result=2)
    changes: Changes = []
    await _run_until_change(_mapper(responder, changes), changes)
    assert changes == [
        (None, "refused by 127.0.0.1: PCP: not authorized; NAT-PMP: not authorized or refused")
    ]
    assert responder.grants == {}


async def test_unusable_grant_refused(responder: Responder) -> None:
    responder.behaviour = Behaviour(lifetime=30)
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    assert changes[0][0] is None
    assert changes[0][1].startswith("refused by 127.0.0.1: PCP: unusable answer")
    assert mapper.rejected["lifetime_short"] == 2  # PCP's and NAT-PMP's


async def test_hostile_external_address_refused(responder: Responder) -> None:
    responder.behaviour = Behaviour(external_ip_answer="0.0.0.0")
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    assert changes[0][0] is None
    assert mapper.rejected["bad_external_address"] == 2


async def test_garbage_before_answer_is_skipped(responder: Responder) -> None:
    responder.behaviour = Behaviour(garbage_first=True)
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    assert changes[0][0] is not None and changes[0][0].protocol == "PCP"
    assert mapper.rejected["pcp_size"] == 1


async def test_only_garbage_and_foreign_nonces_map_nothing(responder: Responder) -> None:
    responder.behaviour = Behaviour(only_garbage=True)
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    assert changes == [(None, "no gateway answered")]
    assert mapper.rejected["pcp_size"] == 3  # one per PCP request
    responder.behaviour = Behaviour(nonce_flip=True, pcp=True)
    changes.clear()
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    # PCP answers with another nonce are ignored; NAT-PMP then maps.
    assert mapper.rejected["pcp_not_ours"] == 3
    assert changes[0][0] is not None and changes[0][0].protocol == "NAT-PMP"


async def test_answers_from_another_port_are_ignored(responder: Responder) -> None:
    responder.behaviour = Behaviour(answer_from_other_port=True)
    changes: Changes = []
    await _run_until_change(_mapper(responder, changes), changes)
    assert changes == [(None, "no gateway answered")]
    assert len(responder.requests) == 6  # 3 PCP tries, 3 NAT-PMP tries, no more


async def test_silent_gateway_times_out_within_budget(responder: Responder) -> None:
    responder.behaviour = Behaviour(silent=True)
    changes: Changes = []
    started = time.monotonic()
    await _run_until_change(_mapper(responder, changes), changes)
    took = time.monotonic() - started
    assert changes == [(None, "no gateway answered")]
    assert 2 * sum(portmap.RESEND_DELAYS_S) <= took < 2 * sum(portmap.RESEND_DELAYS_S) + 1.0


async def test_nobody_listening_gives_up_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed below: nothing listens there then
    changes: Changes = []
    mapper = PortMapper(
        7000, lambda m, w: changes.append((m, w)), gateway="127.0.0.1", pcp_port=port, upnp=False
    )
    started = time.monotonic()
    await _run_until_change(mapper, changes)
    assert changes == [(None, "no gateway answered")]
    assert time.monotonic() - started < 0.5  # ICMP port unreachable: no waiting, no NAT-PMP


async def test_renewal_keeps_the_mapping(
    responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    responder.behaviour = Behaviour(lifetime=2)
    changes: Changes = []
    mapper = _mapper(responder, changes, min_lifetime_s=1)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        first = len(responder.requests)
        # Renewed at half the lifetime, before the responder's grant lapses (2 s).
        await _until(lambda: len(responder.requests) >= first + 2, timeout=5)
        responder.expire()
        assert ("127.0.0.1", 7000) in responder.grants
        pcp = [r for r in responder.requests if r[0] == 2]
        assert {r[24:36] for r in pcp} == {mapper._nonce}  # the same mapping each time
        assert len(changes) == 1  # nothing changed: nothing reported
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await mapper.remove()
    assert responder.grants == {}


async def test_natpmp_renewal_is_one_request_while_the_epoch_holds(responder: Responder) -> None:
    responder.behaviour = Behaviour(pcp=False, lifetime=2)
    changes: Changes = []
    mapper = _mapper(responder, changes, min_lifetime_s=1)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        first = len(responder.requests)
        await _until(lambda: len(responder.requests) >= first + 2, timeout=5)
        # Two renewals: each one mapping request, no PCP, no address request again.
        assert [r[:2] for r in responder.requests[first:]] == [b"\x00\x01", b"\x00\x01"]
        assert len(changes) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_gateway_restart_detected_by_epoch(responder: Responder) -> None:
    responder.behaviour = Behaviour(pcp=False, lifetime=2)
    changes: Changes = []
    mapper = _mapper(responder, changes, min_lifetime_s=1)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        # The router reboots with a new external address; its epoch starts again at 0.
        responder.restart("198.18.0.9")
        await _until(lambda: len(changes) == 2, timeout=6)
        assert changes[1][0] is not None
        assert changes[1][0].external == ("198.18.0.9", 7000)
        assert changes[1][1] == "renewed with a change"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lapsed_mapping_is_reported_gone(responder: Responder) -> None:
    responder.behaviour = Behaviour(lifetime=2)
    changes: Changes = []
    mapper = _mapper(responder, changes, min_lifetime_s=1)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        responder.behaviour = Behaviour(silent=True)
        await _until(lambda: len(changes) == 2, timeout=10)
        assert changes[1] == (None, "no gateway answered")
        assert mapper.mapping is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_removal_is_bounded_when_the_gateway_went_silent(responder: Responder) -> None:
    changes: Changes = []
    mapper = _mapper(responder, changes)
    await _run_until_change(mapper, changes)
    responder.behaviour = Behaviour(silent=True)
    started = time.monotonic()
    await mapper.remove()
    assert time.monotonic() - started < portmap.REMOVE_TIMEOUT_S + 0.3
    assert responder.requests[-1][0] == 2 and responder.requests[-1][4:8] == bytes(4)


# -------------------------------------------------------------------------- service


async def test_service_maps_and_removes_on_stop(tmp_path: Path, responder: Responder) -> None:
    from comm_tui.crypto.identity import Identity

    assert responder.transport is not None
    port = responder.transport.get_extra_info("sockname")[1]
    events: list[ServiceEvent] = []
    db = Database.open(tmp_path / "node.db")
    service = NodeService(
        Identity.generate(),
        db,
        listen=("0.0.0.0", 0),  # mappable; the mapper asks the responder on 127.0.0.1
        port_mapper=lambda internal, on_change: PortMapper(
            internal, on_change, gateway="127.0.0.1", pcp_port=port, upnp=False
        ),
    )
    service.subscribe(events.append)
    told: list[tuple[object, ...] | None] = []
    # Node.note_port_mapping (docs/PROTOCOL.md, "12. Reachability"; from h-reach): the
    # service tells the core each change.
    service.node.note_port_mapping = lambda endpoint, now: told.append(endpoint)  # type: ignore[attr-defined]
    bound = await service.start()
    try:
        await _until(lambda: service.port_mapping is not None, timeout=5)
        assert service.port_mapping is not None
        assert service.port_mapping.external == (EXTERNAL, bound[1])
        assert ("127.0.0.1", bound[1]) in responder.grants
    finally:
        await service.stop()
        db.close()
    assert responder.grants == {}
    changes = [e for e in events if isinstance(e, PortMappingChanged)]
    assert [(c.mapping is None, c.why) for c in changes] == [(False, ""), (True, "removed")]
    assert told == [(EXTERNAL, bound[1]), None]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", True),
        ("198.19.1.2", True),
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::", True),
        ("::1", False),
        ("2001:2:1:1::2", False),
    ],
)
def test_mappable(host: str, expected: bool) -> None:
    assert portmap.mappable(host) is expected


async def test_service_on_loopback_asks_no_router(tmp_path: Path) -> None:
    from comm_tui.crypto.identity import Identity

    made: list[int] = []

    def factory(internal: int, on_change: Callable[[PortMapping | None, str], None]) -> PortMapper:
        made.append(internal)
        return PortMapper(internal, on_change, gateway="127.0.0.1", upnp=False)

    db = Database.open(tmp_path / "node.db")
    service = NodeService(Identity.generate(), db, listen=("127.0.0.1", 0), port_mapper=factory)
    await service.start()
    try:
        assert service.port_mapper is None and made == []
    finally:
        await service.stop()
        db.close()


async def test_renewal_cut_short_by_stop_still_removes(responder: Responder) -> None:
    responder.behaviour = Behaviour(lifetime=4)
    changes: Changes = []
    mapper = _mapper(responder, changes, min_lifetime_s=1)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        responder.behaviour = Behaviour(lifetime=4, silent=True)
        first = len(responder.requests)
        await _until(lambda: len(responder.requests) > first, timeout=5)  # renewing now
    finally:
        task.cancel()  # NodeService.stop, while the renewal waits for its answer
        await asyncio.gather(task, return_exceptions=True)
    responder.behaviour = Behaviour()
    await mapper.remove()
    assert responder.grants == {}


async def test_unexpected_error_ends_only_the_task(
    responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(route_file: Path = portmap.PROC_NET_ROUTE) -> str | None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(portmap, "default_gateway", broken)
    changes: Changes = []
    mapper = PortMapper(7000, lambda m, w: changes.append((m, w)), upnp=False)
    await mapper.run()  # returns: the error does not escape into the service
    assert changes == [(None, "stopped by an internal error (see the log)")]


def test_profile_config_switch(tmp_path: Path) -> None:
    from comm_tui.profile import make_service, open_profile

    profile = open_profile("default", tmp_path)
    try:
        assert make_service(profile, save=False)[0].port_mapper_factory is PortMapper
        assert make_service(profile, save=False, map_port=False)[0].port_mapper_factory is None
        profile.config.port_mapping = False
        assert make_service(profile, save=False)[0].port_mapper_factory is None
    finally:
        profile.close()


@settings(max_examples=2000, deadline=None)
@given(data=st.binary(max_size=1200), internal=st.integers(0, 65535))
def test_parsers_only_ever_refuse_with_bad_answer(data: bytes, internal: int) -> None:
    parsers = [
        lambda d: parse_pcp_map_answer(d, NONCE, internal),
        parse_natpmp_address_answer,
        lambda d: parse_natpmp_map_answer(d, internal),
    ]
    for parse in parsers:
        try:
            answer = parse(data)
        except BadAnswer:
            continue
        if answer.result == 0 and answer.external_ip is not None:
            usable_grant(answer)  # any address a parser returns is one usable_grant reads


def test_one_shot_send_asks_no_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from comm_tui import profile as profile_module
    from comm_tui.cli import main

    made: list[int] = []

    def recording(
        internal: int, on_change: Callable[[PortMapping | None, str], None]
    ) -> PortMapper:
        made.append(internal)
        return PortMapper(internal, on_change, gateway="127.0.0.1", upnp=False)

    monkeypatch.setattr(profile_module, "PortMapper", recording)
    data = str(tmp_path)
    assert main(["--data-dir", data, "--profile", "bob", "id"]) == 0
    card = capsys.readouterr().out.split("card: ")[1].split()[0]
    # Listening on every address (mappable), with nobody to hand the text to.
    argv = ["--data-dir", data, "send", card, "hi", "--listen", "0.0.0.0:0", "--wait", "0.3"]
    assert main(argv) == 3
    assert made == []
