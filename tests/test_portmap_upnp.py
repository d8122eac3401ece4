"""UPnP-IGD port mapping (docs/PROTOCOL.md, "14. Port mapping") against a small IGD of our
own on 127.0.0.1: SSDP over real UDP, description and SOAP over real HTTP (aiohttp).

Debian's miniupnpd, in tests/netns, refuses every mapping (its external address is
reserved), so the success path, renewal and DeletePortMapping are shown here."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from comm_tui.net.portmap import PortMapper, PortMapping
from comm_tui.net.upnp import ssdp_location
from tests.test_portmap import Changes, _run_until_change, _until

WAN = "urn:schemas-upnp-org:service:WANIPConnection:1"
EXTERNAL = "198.18.0.7"

DESCRIPTION = """<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>test IGD</friendlyName><manufacturer>t</manufacturer><modelName>t</modelName>
<UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<friendlyName>wan</friendlyName><manufacturer>t</manufacturer><modelName>t</modelName>
<UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07c</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<friendlyName>conn</friendlyName><manufacturer>t</manufacturer><modelName>t</modelName>
<UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>{control}</controlURL><eventSubURL>/evt</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>"""


def _arg(name: str, direction: str, variable: str) -> str:
    return (
        f"<argument><name>{name}</name><direction>{direction}</direction>"
        f"<relatedStateVariable>{variable}</relatedStateVariable></argument>"
    )


def _action(name: str, *args: str) -> str:
    return f"<action><name>{name}</name><argumentList>{''.join(args)}</argumentList></action>"


SCPD = (
    '<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0">'
    "<specVersion><major>1</major><minor>0</minor></specVersion><actionList>"
    + _action(
        "AddPortMapping",
        _arg("NewRemoteHost", "in", "RemoteHost"),
        _arg("NewExternalPort", "in", "ExternalPort"),
        _arg("NewProtocol", "in", "PortMappingProtocol"),
        _arg("NewInternalPort", "in", "InternalPort"),
        _arg("NewInternalClient", "in", "InternalClient"),
        _arg("NewEnabled", "in", "PortMappingEnabled"),
        _arg("NewPortMappingDescription", "in", "PortMappingDescription"),
        _arg("NewLeaseDuration", "in", "PortMappingLeaseDuration"),
    )
    + _action(
        "DeletePortMapping",
        _arg("NewRemoteHost", "in", "RemoteHost"),
        _arg("NewExternalPort", "in", "ExternalPort"),
        _arg("NewProtocol", "in", "PortMappingProtocol"),
    )
    + _action("GetExternalIPAddress", _arg("NewExternalIPAddress", "out", "ExternalIPAddress"))
    + "</actionList><serviceStateTable>"
    + "".join(
        f'<stateVariable sendEvents="no"><name>{name}</name><dataType>{kind}</dataType>'
        "</stateVariable>"
        for name, kind in [
            ("RemoteHost", "string"),
            ("ExternalPort", "ui2"),
            ("PortMappingProtocol", "string"),
            ("InternalPort", "ui2"),
            ("InternalClient", "string"),
            ("PortMappingEnabled", "boolean"),
            ("PortMappingDescription", "string"),
            ("PortMappingLeaseDuration", "ui4"),
            ("ExternalIPAddress", "string"),
        ]
    )
    + "</serviceStateTable></scpd>"
)

ENVELOPE = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>{body}</s:Body>'
    "</s:Envelope>"
)


@dataclass
class Igd:
    """An IGD on 127.0.0.1 that grants what it is asked and records each SOAP call."""

    control: str = "/ctl"
    refuse: int | None = None  # a UPnP error code for AddPortMapping
    permanent_only: bool = False  # error 725 for any lease but 0
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    http_port: int = 0
    ssdp_port: int = 0

    async def description(self, request: web.Request) -> web.Response:
        xml = DESCRIPTION.format(control=self.control)
        return web.Response(text=xml, content_type="text/xml")

    async def scpd(self, request: web.Request) -> web.Response:
        return web.Response(text=SCPD, content_type="text/xml")

    async def soap(self, request: web.Request) -> web.Response:
        action = request.headers["SOAPACTION"].strip('"').rsplit("#", 1)[1]
        body = await request.text()
        args = dict(re.findall(r"<(New\w+)>([^<]*)</\1>", body))
        self.calls.append((action, args))
        refuse = self.refuse
        if self.permanent_only and args.get("NewLeaseDuration", "0") != "0":
            refuse = 725
        if action == "AddPortMapping" and refuse is not None:
            fault = (
                "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>"
                '<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
                f"<errorCode>{refuse}</errorCode><errorDescription>ConflictInMappingEntry"
                "</errorDescription></UPnPError></detail></s:Fault>"
            )
            return web.Response(
                status=500, text=ENVELOPE.format(body=fault), content_type="text/xml"
            )
        out = f"<NewExternalIPAddress>{EXTERNAL}</NewExternalIPAddress>"
        inner = out if action == "GetExternalIPAddress" else ""
        answer = f'<u:{action}Response xmlns:u="{WAN}">{inner}</u:{action}Response>'
        return web.Response(text=ENVELOPE.format(body=answer), content_type="text/xml")


class _Ssdp(asyncio.DatagramProtocol):
    def __init__(self, igd: Igd, location_host: str) -> None:
        self.igd = igd
        self.location_host = location_host
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"M-SEARCH") and self.transport is not None:
            location = f"http://{self.location_host}:{self.igd.http_port}/desc.xml"
            answer = (
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
                "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
                f"LOCATION: {location}\r\nSERVER: test\r\nEXT:\r\n\r\n"
            )
            self.transport.sendto(answer.encode(), addr)


async def _serve(igd: Igd, ssdp_host: str = "127.0.0.1", location_host: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/desc.xml", igd.description)
    app.router.add_get("/scpd.xml", igd.scpd)
    app.router.add_post(igd.control, igd.soap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    igd.http_port = runner.addresses[0][1]
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Ssdp(igd, location_host), local_addr=(ssdp_host, 0)
    )
    igd.ssdp_port = transport.get_extra_info("sockname")[1]
    return runner, transport


@pytest.fixture
async def igd() -> AsyncIterator[Igd]:
    server = Igd()
    runner, transport = await _serve(server)
    yield server
    transport.close()
    await runner.cleanup()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mapper(igd: Igd, changes: Changes, ssdp_port: int | None = None) -> PortMapper:
    # Nothing on the PCP port (ICMP refusal): straight to UPnP-IGD.
    return PortMapper(
        7000,
        lambda mapping, why: changes.append((mapping, why)),
        gateway="127.0.0.1",
        pcp_port=_closed_port(),
        ssdp_address=("127.0.0.1", ssdp_port or igd.ssdp_port),
        min_lifetime_s=1,
    )


async def test_upnp_mapping_made_and_deleted(igd: Igd) -> None:
    changes: Changes = []
    mapper = _mapper(igd, changes)
    await _run_until_change(mapper, changes)
    assert changes == [(PortMapping("UPnP-IGD", (EXTERNAL, 7000), 7200, "127.0.0.1", 7000), "")]
    action, args = igd.calls[0]
    assert action == "AddPortMapping"
    assert args["NewExternalPort"] == args["NewInternalPort"] == "7000"
    assert (args["NewProtocol"], args["NewInternalClient"]) == ("UDP", "127.0.0.1")
    assert args["NewLeaseDuration"] == "7200"
    await mapper.remove()
    assert igd.calls[-1] == (
        "DeletePortMapping",
        {"NewRemoteHost": "", "NewExternalPort": "7000", "NewProtocol": "UDP"},
    )


async def test_upnp_refusal_reported(igd: Igd) -> None:
    igd.refuse = 718
    changes: Changes = []
    await _run_until_change(_mapper(igd, changes), changes)
    assert changes == [(None, "refused by 127.0.0.1: UPnP-IGD: error 718 ConflictInMappingEntry")]


async def test_upnp_permanent_lease_only_router(igd: Igd) -> None:
    igd.permanent_only = True
    changes: Changes = []
    mapper = _mapper(igd, changes)
    await _run_until_change(mapper, changes)
    assert changes[0][0] is not None and changes[0][0].protocol == "UPnP-IGD"
    leases = [args["NewLeaseDuration"] for action, args in igd.calls if action == "AddPortMapping"]
    assert leases == ["7200", "0"]
    await mapper.remove()
    assert igd.calls[-1][0] == "DeletePortMapping"


async def test_upnp_renewal_failure_is_not_taken_for_success(
    igd: Igd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comm_tui.net import portmap

    monkeypatch.setattr(portmap, "REQUESTED_LIFETIME_S", 2)
    monkeypatch.setattr(portmap, "RENEW_RETRY_S", 0.2)
    changes: Changes = []
    mapper = _mapper(igd, changes)
    task = asyncio.create_task(mapper.run())
    try:
        await _until(lambda: len(changes) == 1)
        await _until(lambda: len(igd.calls) >= 3)  # add, address, and a renewal's add
        igd.refuse = 501
        # Renewals now fail: the grant lapses at its lifetime and the loss is reported.
        await _until(lambda: len(changes) == 2, timeout=8)
        assert changes[1][0] is None
        assert "UPnP-IGD: error 501" in changes[1][1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_ssdp_answer_from_another_host_is_ignored() -> None:
    server = Igd()
    # The IGD answers SSDP from 127.0.0.2, naming a description on 127.0.0.1.
    runner, transport = await _serve(server, ssdp_host="127.0.0.2")
    try:
        changes: Changes = []
        mapper = PortMapper(
            7000,
            lambda mapping, why: changes.append((mapping, why)),
            gateway="127.0.0.1",
            pcp_port=_closed_port(),
            ssdp_address=("127.0.0.2", server.ssdp_port),
        )
        await _run_until_change(mapper, changes)
        assert changes == [(None, "no gateway answered")]
        assert mapper.rejected["ssdp_not_gateway"] >= 1
        assert server.calls == []
    finally:
        transport.close()
        await runner.cleanup()


async def test_description_elsewhere_is_not_fetched() -> None:
    server = Igd()
    runner, transport = await _serve(server, location_host="127.0.0.3")
    try:
        changes: Changes = []
        await _run_until_change(_mapper(server, changes), changes)
        assert changes == [(None, "no gateway answered")]
        assert server.calls == []
    finally:
        transport.close()
        await runner.cleanup()


def test_ssdp_location_rules() -> None:
    def answer(location: str, status: str = "200 OK") -> bytes:
        return f"HTTP/1.1 {status}\r\nST: x\r\nLocation: {location}\r\n\r\n".encode()

    gw = "198.19.1.1"
    assert ssdp_location(answer(f"http://{gw}:5000/d.xml"), gw) == f"http://{gw}:5000/d.xml"
    assert ssdp_location(answer(f"http://{gw}:5000/d.xml", "404 Not Found"), gw) is None
    assert ssdp_location(answer("http://198.19.1.66:5000/d.xml"), gw) is None
    assert ssdp_location(answer(f"https://{gw}/d.xml"), gw) is None
    assert ssdp_location(answer("http://router.example/d.xml"), gw) is None
    assert ssdp_location(answer(f"http://{gw}:99999/d.xml"), gw) is None
    assert ssdp_location(answer(f"http://{gw}/" + "x" * 2048), gw) is None
    assert ssdp_location(b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n", gw) is None
