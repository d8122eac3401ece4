"""Structure-aware fuzzing of every frame handler (h-red3; bounded, for the normal run).

tests/test_fuzz_receive.py mutates the bytes of real datagrams: it reaches every parser,
but rarely a handler with a well-formed frame whose fields are hostile (a port of 65,536,
an IPv4-mapped target, a 16-byte IP with port 0, an expiry at 2^64 - 1, a key of 33
bytes). Here every ``Frame`` body is built field by field from ``wire.proto``'s own
descriptors, each field absent or set to a value at an edge of its type, boxed validly
and handed to a node that takes every path: from its routing-table peer at its validated
endpoint (the trusted fast path of ``Node._receive``), from the same key at another
endpoint, and from a fresh key, to a relay with local endpoints (so reachability's
arrivals and probes are live) and to a client. Nothing may raise: ``internal_error``
stays 0, and every datagram is counted once.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from functools import cache

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import MAX_DATAGRAM_BYTES, Codec
from comm_tui.protocol.node import Node, NodeConfig
from comm_tui.protocol.routing import Endpoint
from tests.test_fuzz_receive import connect, feed_node, generous
from tests.wire import T0, peer_addresses

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
A_ENDPOINT: Endpoint = ("10.1.0.1", 4000)
ELSEWHERE: Endpoint = ("198.18.3.4", 5000)
LOCAL: Endpoint = ("10.2.0.1", 4000)

# Lengths at the edges of every size the protocol checks (challenge and nonce 16, IP 4
# and 16, address 20, key 32, store key 33, ack key 53, sealed 1,061) and beside them.
BYTE_LENGTHS = [0, 1, 3, 4, 5, 15, 16, 17, 19, 20, 21, 31, 32, 33, 52, 53, 64, 1060, 1061]
UINT32_EDGES = [0, 1, 2, 3, 59, 60, 121, 180, 65535, 65536, 2**31 - 1, 2**32 - 1]
HOUR_MS = 3_600_000
T0_MS = int(T0 * 1000)
# A whole hour a day ahead: a message expiry every check accepts.
UINT64_EDGES = [*UINT32_EDGES, T0_MS, (T0_MS // HOUR_MS + 24) * HOUR_MS, 2**63 - 1, 2**64 - 1]
INTERESTING_IPS = [
    b"\x7f\x00\x00\x01",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\xe0\x00\x00\x01",
    b"\x0a\x02\x00\x01",
    b"\xc6\x12\x00\x01",
    bytes(15) + b"\x01",
    bytes(10) + b"\xff\xff" + b"\x7f\x00\x00\x01",
    bytes(10) + b"\xff\xff" + b"\x0a\x02\x00\x01",
    b"\xfe\x80" + bytes(13) + b"\x01",
    b"\xff\x02" + bytes(13) + b"\x01",
    b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01",
]


@cache
def identities() -> tuple[Identity, Identity, Identity]:
    a, b, c = (Identity.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
    return a, b, c


# The length each bytes field has when well formed: half the values drawn have it, so
# the handlers' later checks (and their answers) are reached, not only the shape checks.
WELL_FORMED_LENGTHS = {
    "sealed": 1061,
    "challenge": 16,
    "nonce": 16,
    "query_id": 16,
    "echo": 16,
    "cookie": 16,
    "key": 32,
    "recipient_key": 32,
    "owner_key": 32,
    "message_id": 32,
    "signed_prekey": 32,
    "signature": 64,
    "ids": 33,
}
ADDRESS_FIELDS = {"recipient", "target", "address"}


def _bytes_value(draw: st.DrawFn, field: FieldDescriptor) -> bytes:
    a, b, c = identities()
    if draw(st.booleans()):
        if field.name in ADDRESS_FIELDS:
            return draw(st.sampled_from([a.address, b.address, c.address]))
        if field.name == "ip":
            return draw(st.sampled_from(INTERESTING_IPS))
        if field.name in ("key", "recipient_key", "owner_key"):
            return draw(st.sampled_from([a.key, b.key, c.key]))
        length = WELL_FORMED_LENGTHS.get(field.name)
        if length is not None:
            return draw(st.binary(min_size=length, max_size=length))
    choice = draw(st.integers(0, 4))
    if choice == 0:  # a real key or address of a node of the test
        return draw(st.sampled_from([a.key, b.key, c.key, a.address, b.address, c.address]))
    if choice == 1:
        return draw(st.sampled_from(INTERESTING_IPS))
    length = draw(st.sampled_from(BYTE_LENGTHS))
    return draw(st.binary(min_size=length, max_size=length))


def _scalar(draw: st.DrawFn, field: FieldDescriptor) -> object:
    kind = field.type
    if kind == FieldDescriptor.TYPE_BYTES:
        return _bytes_value(draw, field)
    if kind == FieldDescriptor.TYPE_STRING:
        return draw(st.sampled_from(["", "x", "[/]", "[b]bold", "\x1b[2J", "a" * 70]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if kind == FieldDescriptor.TYPE_UINT64:
        return draw(st.sampled_from(UINT64_EDGES))
    if kind == FieldDescriptor.TYPE_UINT32:
        return draw(st.sampled_from(UINT32_EDGES))
    if kind == FieldDescriptor.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values]))
    raise AssertionError(f"no strategy for field {field.full_name} of type {kind}")


def _fill(draw: st.DrawFn, message: Message, descriptor: Descriptor, depth: int) -> None:
    for field in descriptor.fields:
        if field.containing_oneof is not None and field.containing_oneof.name == "body":
            continue  # the frame's body is chosen by the caller
        if draw(st.integers(0, 3)) == 0:  # absent one time in four
            continue
        repeated = field.is_repeated
        count = draw(st.integers(0, 3)) if repeated else 1
        for _ in range(count):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth > 3:
                    continue
                sub = getattr(message, field.name).add() if repeated else None
                if sub is None:
                    sub = getattr(message, field.name)
                    sub.SetInParent()
                _fill(draw, sub, field.message_type, depth + 1)
            elif repeated:
                getattr(message, field.name).append(_scalar(draw, field))
            else:
                setattr(message, field.name, _scalar(draw, field))


BODIES = [f.name for f in pb.Frame.DESCRIPTOR.oneofs_by_name["body"].fields]


@st.composite
def frames(draw: st.DrawFn) -> pb.Frame:
    """A ``Frame`` with one body, every field of it (and of the frame) absent or at an edge."""
    frame = pb.Frame()
    body = draw(st.sampled_from(BODIES))
    sub = getattr(frame, body)
    sub.SetInParent()
    _fill(draw, sub, sub.DESCRIPTOR, 0)
    _fill(draw, frame, pb.Frame.DESCRIPTOR, 0)
    return frame


@cache
def nodes(client: bool) -> tuple[Node, Node]:
    """A (a routing-table peer) and B (the node under test), connected; B is told its
    local endpoint, so its reachability sees arrivals and sends probes, and is a client
    (relaying off) or a relay."""
    a_id, b_id, _ = identities()
    a = Node(a_id, T0, config=generous(), rng=random.Random(1))
    config = NodeConfig(
        datagram_burst=1e12,
        store_burst=1e12,
        new_key_burst=1e12,
        store_rate_per_s=1e9,
        relay=not client,
    )
    b = Node(b_id, T0, config=config, rng=random.Random(2))
    connect(a, b)
    b.set_local_endpoints([LOCAL], T0)
    if not client:
        assert a.address in peer_addresses(b)
    return a, b


# Each example comes 0.7 s after the last (the nodes are shared by a test's examples):
# never a replay by time, and over a run the clock crosses the 300 s after which a
# datagram from an endpoint B sent to is an arrival again ("12.2").
STEPS = itertools.count(1)


@pytest.fixture(autouse=True)
def fresh_nodes() -> Iterator[None]:
    global STEPS
    nodes.cache_clear()
    STEPS = itertools.count(1)
    yield
    nodes.cache_clear()


def _feed(b: Node, data: bytes, source: Endpoint, now: float) -> None:
    feed_node(b, data, source, now)
    b.handle_timer(now)
    assert b.stats.rejected["internal_error"] == 0


@FUZZ
@given(
    frame=frames(),
    sender=st.sampled_from(["peer", "peer_elsewhere", "stranger"]),
    client=st.booleans(),
)
def test_hostile_fields_in_every_frame_raise_nothing(
    frame: pb.Frame, sender: str, client: bool
) -> None:
    a, b = nodes(client)
    _, _, stranger = identities()
    plaintext = frame.SerializeToString()
    if len(plaintext) > MAX_DATAGRAM_BYTES - 100:
        return  # could not travel in one datagram
    now = T0 + 0.7 * next(STEPS)
    codec = a._codec if sender != "stranger" else Codec(stranger)
    source = A_ENDPOINT if sender == "peer" else ELSEWHERE
    data = codec.seal(b.identity.key, plaintext, now)
    _feed(b, data, source, now)
