"""``Codec.read_boxed``, the hand reader of a boxed packet's canonical bytes, against
protobuf's parser (bench/RESULTS.md, "Issue 11, fifth session").

The reader either agrees with ``Codec.parse_packet`` (protobuf's reading plus its
checks) exactly, or declines (None) and leaves the bytes to it: it never accepts what
``parse_packet`` refuses, nor reads a key or a box other than protobuf does. Checked
over valid packets of every shape (boxed with and without a cookie, hellos, cookie
replies, other versions, every box length) and over mutated ones: bytes changed,
inserted, deleted, cut off or appended anywhere.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comm_tui.crypto.identity import Identity
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import MAX_DATAGRAM_BYTES, PROTOCOL_VERSION, Codec, Rejected

NOW = 1_800_000_000.0
OURS = Codec(Identity.from_seed(bytes(32 * [1])))
THEIRS = Codec(Identity.from_seed(bytes(32 * [2])))
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The longest box a 1,200-byte boxed packet holds: 4 + 32 + 1 + 2 bytes around it.
LONGEST_BOX = MAX_DATAGRAM_BYTES - 39


def parsed(data: bytes) -> tuple[bytes, bytes] | None:
    """What the reader must return for ``data``: protobuf's key and box when
    ``parse_packet`` accepts it as a boxed packet without a cookie, else nothing."""
    try:
        packet, kind = OURS.parse_packet(data)
    except Rejected:
        return None
    if kind != "boxed" or packet.cookie:
        return None
    return packet.sender_key, packet.boxed


def agrees(data: bytes) -> None:
    read = OURS.read_boxed(data)
    if read is not None:
        assert read == parsed(data), data.hex()


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """Valid and nearly valid packets of every body, as protobuf writes them."""
    body = draw(st.sampled_from(["boxed", "boxed", "boxed", "hello", "cookie_reply", "none"]))
    packet = pb.Packet(
        version=draw(st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 1, 3, 130])),
        sender_key=draw(st.sampled_from([THEIRS.identity.key, OURS.identity.key, b"k" * 31, b""]))
        if body != "cookie_reply"
        else b"",
    )
    if body == "boxed":
        packet.boxed = draw(st.binary(min_size=0, max_size=LONGEST_BOX + 2))
    elif body == "hello":
        packet.hello.challenge = draw(st.binary(min_size=16, max_size=16))
        packet.hello.padding = bytes(draw(st.integers(0, 80)))
    elif body == "cookie_reply":
        packet.cookie_reply.cookie = b"c" * 16
        packet.cookie_reply.echo = b"e" * 16
    if draw(st.booleans()) and body != "cookie_reply":
        packet.cookie = draw(st.sampled_from([b"c" * 16, b"c" * 15, b""]))
    return packet.SerializeToString()


@EXAMPLES
@given(packets())
def test_the_reader_agrees_with_protobuf_on_packets_of_every_shape(data: bytes) -> None:
    agrees(data)
    # Every canonical boxed packet is read by hand: nothing is declined that need not
    # be (else the fast path would be a slow one), but an empty box (refused later as
    # `malformed`, by open_boxed, whichever reads it).
    expected = parsed(data)
    if expected is not None and expected[1]:
        assert OURS.read_boxed(data) == expected


@EXAMPLES
@given(
    packets(),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete", "cut", "append"]),
            st.integers(0, MAX_DATAGRAM_BYTES + 8),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_the_reader_never_accepts_what_protobuf_reads_otherwise(
    data: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    mutated = bytearray(data)
    for kind, position, value in mutations:
        at = position % (len(mutated) + 1)
        if kind == "flip" and at < len(mutated):
            mutated[at] ^= 1 << (value % 8)
        elif kind == "set" and at < len(mutated):
            mutated[at] = value
        elif kind == "insert":
            mutated[at:at] = bytes([value])
        elif kind == "delete":
            del mutated[at : at + 1 + value % 3]
        elif kind == "cut":
            del mutated[at:]
        elif kind == "append":
            mutated += bytes([value]) * (1 + value % 20)
    agrees(bytes(mutated))


@given(st.binary(max_size=MAX_DATAGRAM_BYTES + 8))
@EXAMPLES
def test_the_reader_never_accepts_what_protobuf_reads_otherwise_in_random_bytes(
    data: bytes,
) -> None:
    agrees(data)


def test_a_sealed_packet_of_every_box_length_is_read_by_hand() -> None:
    """What ``seal`` writes (one- and two-byte lengths, the varint's edge at 127 and
    128, the largest datagram) is read as protobuf reads it."""
    for size in (0, 1, 86, 87, 88, 89, 500, LONGEST_BOX - 40):
        data = THEIRS.seal(OURS.identity.key, bytes(size), NOW)
        assert OURS.read_boxed(data) == parsed(data) is not None, size
    assert len(data) == MAX_DATAGRAM_BYTES


def test_the_reader_declines_what_parse_packet_refuses_or_reads_with_a_cookie() -> None:
    """Oversized, our own key as sender, a cookie: each left to ``parse_packet`` (which
    refuses the first two as `oversized` and `own_key`, and reads the cookie)."""
    box = bytes(LONGEST_BOX)
    oversized = pb.Packet(
        version=PROTOCOL_VERSION, sender_key=THEIRS.identity.key, boxed=box + b"x"
    ).SerializeToString()
    assert len(oversized) == MAX_DATAGRAM_BYTES + 1
    assert OURS.read_boxed(oversized) is None
    largest = pb.Packet(version=PROTOCOL_VERSION, sender_key=THEIRS.identity.key, boxed=box)
    assert OURS.read_boxed(largest.SerializeToString()) == (THEIRS.identity.key, box)
    own = pb.Packet(version=PROTOCOL_VERSION, sender_key=OURS.identity.key, boxed=b"b" * 60)
    assert OURS.read_boxed(own.SerializeToString()) is None
    assert THEIRS.read_boxed(own.SerializeToString()) == (OURS.identity.key, b"b" * 60)
    # Cut off inside the box's two-byte length: declined, not read past its end.
    head = own.SerializeToString()[:36].replace(OURS.identity.key, THEIRS.identity.key)
    for cut in (head + b"\x22\x81", head + b"\x22"):
        assert OURS.read_boxed(cut) is None
    with_cookie = THEIRS.seal(OURS.identity.key, b"f" * 40, NOW, cookie=b"c" * 16)
    assert OURS.read_boxed(with_cookie) is None
    assert OURS.parse(with_cookie).cookie == b"c" * 16
