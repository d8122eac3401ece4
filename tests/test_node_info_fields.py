"""Each field of a NODES answer's entry is checked at its exact bounds (docs/PROTOCOL.md,
"6.2 Lookups": NodeInfo).

``parse_node_info`` is the one gate between a stranger's NODES answer and our lookups
and routing table: a 32-byte key that is a curve point, a 4- or 16-byte IP, a port from
1 to 65535. Mutation testing found the port's lower bound unpinned (port 1 refused
went unnoticed, bench/MUTATION.md); these pin every bound from both sides.
"""

from __future__ import annotations

import pytest

from comm_tui.crypto.identity import Identity, address_of
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.node import parse_node_info

KEY = Identity.from_seed(b"\x05" * 32).key


def _info(key: bytes = KEY, ip: bytes = bytes([198, 51, 100, 7]), port: int = 4000) -> pb.NodeInfo:
    return pb.NodeInfo(key=key, ip=ip, port=port)


@pytest.mark.parametrize(
    ("info", "endpoint"),
    [
        (_info(port=1), ("198.51.100.7", 1)),
        (_info(port=65535), ("198.51.100.7", 65535)),
        (_info(ip=bytes(15) + b"\x01", port=9), ("::1", 9)),
    ],
)
def test_an_entry_at_the_edges_of_its_fields_is_taken(
    info: pb.NodeInfo, endpoint: tuple[str, int]
) -> None:
    candidate = parse_node_info(info)
    assert candidate is not None
    assert (candidate.key, candidate.address, candidate.endpoint) == (
        KEY,
        address_of(KEY),
        endpoint,
    )


@pytest.mark.parametrize(
    "info",
    [
        _info(port=0),
        _info(port=65536),
        _info(key=KEY[:31]),
        _info(key=KEY + b"\x00"),
        _info(key=bytes(32)),  # 32 bytes, but no curve point
        _info(ip=bytes(3)),
        _info(ip=bytes(5)),
        _info(ip=bytes(17)),
    ],
)
def test_an_entry_with_any_field_out_of_bounds_is_refused(info: pb.NodeInfo) -> None:
    assert parse_node_info(info) is None
