"""UPnP-IGD port mapping through ``async-upnp-client`` (docs/PROTOCOL.md, "14. Port mapping").

Importing this module needs the optional dependency (``comm-tui[upnp]``); ``portmap.py``
imports it only when PCP and NAT-PMP got no mapping. The SSDP search is ours (one UDP
datagram out, headers in) so that it can hold the rule the library does not: only the
gateway we route through may answer, and the description it names must be on that same
gateway, so a hostile LAN host can neither pose as the router nor send us to fetch URLs
elsewhere. The library fetches and parses the description (with defusedxml) and makes
the SOAP calls; each service's control URL is checked against the gateway too.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from urllib.parse import urlsplit

from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client import UpnpService
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpError

from comm_tui.protocol.routing import Endpoint

SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
)
WAN_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
MAX_SSDP_ANSWER = 2048
DESCRIPTION = "comm-tui"
ONLY_PERMANENT_LEASES = 725  # WANIPConnection:1, "OnlyPermanentLeasesSupported"


class UpnpFailure(Exception):
    """The IGD refused or could not be used; the message is shown to the user."""


class _Answers(asyncio.DatagramProtocol):
    def __init__(self, gateway: str, rejected: Counter[str]) -> None:
        self.gateway = gateway
        self.rejected = rejected
        self.location: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if addr[0] != self.gateway:
            self.rejected["ssdp_not_gateway"] += 1
            return
        location = ssdp_location(data, self.gateway)
        if location is None:
            self.rejected["ssdp_bad_answer"] += 1
        elif not self.location.done():
            self.location.set_result(location)


def ssdp_location(data: bytes, gateway: str) -> str | None:
    """The LOCATION of an SSDP answer if it is an HTTP URL on ``gateway``, else None."""
    if len(data) > MAX_SSDP_ANSWER or not data.startswith(b"HTTP/1.1 200"):
        return None
    for line in data.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() != "location":
            continue
        return value.strip() if _on_gateway(value.strip(), gateway) else None
    return None


def _on_gateway(url: str, gateway: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
        return (
            parts.scheme == "http"
            and host is not None
            and ipaddress.ip_address(host) == ipaddress.ip_address(gateway)
        )
    except ValueError:
        return False


def m_search(target: str, ssdp_address: Endpoint, wait_s: float) -> bytes:
    host, port = ssdp_address
    return (
        f'M-SEARCH * HTTP/1.1\r\nHOST: {host}:{port}\r\nMAN: "ssdp:discover"\r\n'
        f"MX: {max(1, int(wait_s))}\r\nST: {target}\r\n\r\n"
    ).encode("ascii")


async def search(
    gateway: str, ssdp_address: Endpoint, wait_s: float, rejected: Counter[str]
) -> str | None:
    """Ask for an IGD by SSDP, to the group and to the gateway itself; its LOCATION or None."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Answers(gateway, rejected), local_addr=("0.0.0.0", 0)
    )
    try:
        for target in SEARCH_TARGETS:
            for destination in {ssdp_address, (gateway, ssdp_address[1])}:
                try:
                    transport.sendto(m_search(target, ssdp_address, wait_s), destination)
                except OSError:
                    continue
        try:
            return await asyncio.wait_for(asyncio.shield(proto.location), wait_s)
        except TimeoutError:
            return None
    finally:
        transport.close()


async def wan_service(location: str, gateway: str, timeout_s: int) -> UpnpService:
    """The IGD's WAN connection service that can map ports, its control URL on the gateway."""
    factory = UpnpFactory(AiohttpRequester(timeout=timeout_s), non_strict=True)
    try:
        device = await factory.async_create_device(location)
    except Exception as exc:
        # The description is the router's (or a LAN host's) XML: whatever the library
        # makes of a hostile one, it is an unusable description, never our failure.
        raise UpnpFailure(f"unusable description ({type(exc).__name__})") from exc
    for service in device.all_services:
        if (
            service.service_type in WAN_SERVICES
            and service.has_action("AddPortMapping")
            and service.has_action("DeletePortMapping")
            and _on_gateway(service.control_url, gateway)
        ):
            return service
    raise UpnpFailure("no WAN connection service on the gateway")


async def add_mapping(service: UpnpService, client_ip: str, port: int, lease_s: int) -> str | None:
    """AddPortMapping for UDP ``port`` to ``client_ip``; the external address if told.

    A router that takes only permanent leases (error 725) is asked for one (lease 0): the
    mapper renews it on its own schedule all the same, and deletes it at exit.
    """
    try:
        try:
            await _add(service, client_ip, port, lease_s)
        except UpnpError as exc:
            if getattr(exc, "error_code", None) != ONLY_PERMANENT_LEASES:
                raise
            await _add(service, client_ip, port, 0)
    except (UpnpError, OSError, TimeoutError, ValueError) as exc:
        raise UpnpFailure(_refusal(exc)) from exc
    if not service.has_action("GetExternalIPAddress"):
        return None
    try:
        result = await service.action("GetExternalIPAddress").async_call()
    except (UpnpError, OSError, TimeoutError, ValueError) as exc:
        raise UpnpFailure(_refusal(exc)) from exc
    value = result.get("NewExternalIPAddress")
    try:
        return str(ipaddress.IPv4Address(value)) if isinstance(value, str) else None
    except ValueError:
        return None


async def _add(service: UpnpService, client_ip: str, port: int, lease_s: int) -> None:
    await service.action("AddPortMapping").async_call(
        NewRemoteHost="",
        NewExternalPort=port,
        NewProtocol="UDP",
        NewInternalPort=port,
        NewInternalClient=client_ip,
        NewEnabled=True,
        NewPortMappingDescription=DESCRIPTION,
        NewLeaseDuration=lease_s,
    )


async def delete_mapping(service: UpnpService, port: int) -> None:
    try:
        await service.action("DeletePortMapping").async_call(
            NewRemoteHost="", NewExternalPort=port, NewProtocol="UDP"
        )
    except (UpnpError, OSError, TimeoutError, ValueError) as exc:
        raise UpnpFailure(_refusal(exc)) from exc


def _refusal(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    desc = getattr(exc, "error_desc", None)
    if code is not None:
        return f"error {code} {desc or ''}".strip()
    return type(exc).__name__
