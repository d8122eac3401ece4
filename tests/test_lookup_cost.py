"""What a lookup query costs: the rules that keep it cheap, each pinned.

- A peer key is converted to X25519 once, whether it was first checked (a Nodes entry,
  a packet from a new key) or first used for a key agreement: the check and the box
  share one cached conversion (``curve_public_key``).
- A Nodes answer's entries are parsed once per node, the out-of-shape ones too.
- A lookup writes its FindNode frames as bytes (``find_node_frame``), the bytes protobuf
  writes, padded exactly when it was padded before.
- ``bench/vs_kademlia.py`` measures both networks only once they are idle-settled, and
  after a full garbage collection (one left due by the joins is not the lookups').
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from comm_tui.crypto import identity as identity_module
from comm_tui.crypto.identity import (
    Identity,
    PublicIdentity,
    curve_public_key,
    is_valid_public_key,
)
from comm_tui.protocol import node as node_module
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec
from comm_tui.protocol.lookup import (
    FIND_NODE_FIRST_CONTACT_BYTES,
    FIND_NODE_PADDING,
    Candidate,
    _Path,
)
from comm_tui.protocol.node import Node, _Query, find_node_frame
from tests.test_bench_loopback import bench_module

NOW = 1_800_000_000.0


def _key(label: bytes) -> bytes:
    """A fresh valid Ed25519 public key (never seen by the process-wide cache)."""
    return Identity.from_seed(hashlib.sha256(b"lookup cost " + label).digest()).key


def _counting_conversions(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    original = identity_module.crypto_sign_ed25519_pk_to_curve25519

    def counting(key: bytes) -> bytes:
        calls.append(key)
        converted: bytes = original(key)
        return converted

    monkeypatch.setattr(identity_module, "crypto_sign_ed25519_pk_to_curve25519", counting)
    return calls


def test_a_checked_key_is_not_converted_again_for_its_key_agreement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting_conversions(monkeypatch)
    key = _key(b"checked then boxed")
    assert is_valid_public_key(key)
    box_key = PublicIdentity(key).box_key
    assert calls == [key]
    assert bytes(box_key) == curve_public_key(key)
    # And the other way round: boxed first, then checked.
    other = _key(b"boxed then checked")
    PublicIdentity(other).box_key  # noqa: B018
    assert is_valid_public_key(other)
    assert calls == [key, other]


def test_a_key_that_is_no_curve_point_is_refused_by_the_check_and_the_box() -> None:
    # No valid point: the conversion fails (and its failure is cached too).
    invalid = (2).to_bytes(32, "little")
    assert curve_public_key(invalid) is None
    assert not is_valid_public_key(invalid)
    with pytest.raises(ValueError):
        PublicIdentity(invalid).box_key  # noqa: B018
    assert curve_public_key(b"short") is None
    assert not is_valid_public_key(b"\x01" * 31)


def test_find_node_frame_writes_what_protobuf_writes() -> None:
    query_id, target = b"q" * 16, b"t" * 20
    for padding in (b"", FIND_NODE_PADDING):
        find = pb.FindNode(query_id=query_id, target=target, padding=padding)
        assert find_node_frame(query_id, target, padding) == (
            pb.Frame(find_node=find).SerializeToString()
        )
    # A first contact's FindNode, sealed, is still FIND_NODE_FIRST_CONTACT_BYTES long.
    sender, receiver = Codec(Identity.from_seed(b"\x01" * 32)), _key(b"r")
    sealed = sender.seal(receiver, find_node_frame(query_id, target, FIND_NODE_PADDING), NOW)
    assert len(sealed) == FIND_NODE_FIRST_CONTACT_BYTES


def test_vs_kademlia_measures_only_once_the_network_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``settle`` waits its least time, then until a window carries at most
    QUIET_DATAGRAMS_PER_NODE_S per node per second, and is bounded."""
    bench = bench_module("vs_kademlia")
    monkeypatch.setattr(bench, "QUIET_WINDOW_S", 0.1)
    monkeypatch.setattr(bench, "SETTLE_BOUND_S", 3.0)
    count = [0]

    async def settle_while_busy(busy_s: float, per_window: int) -> tuple[bool, float]:
        stop_at = time.monotonic() + busy_s

        async def traffic() -> None:
            while time.monotonic() < stop_at:
                count[0] += per_window
                await asyncio.sleep(0.1)

        task = asyncio.create_task(traffic())
        # 10 nodes x 0.1/s x 0.1 s: a quiet window carries at most 0.1 datagrams.
        result: tuple[bool, float] = await bench.settle(lambda: count[0], 10, 0.2)
        await task
        return result

    quiet, waited = asyncio.run(settle_while_busy(0.0, 1))
    assert quiet and 0.2 <= waited < 0.8  # the least time, then one quiet window
    quiet, waited = asyncio.run(settle_while_busy(1.0, 1))
    assert quiet and waited >= 1.0  # one datagram a window is not quiet
    monkeypatch.setattr(bench, "SETTLE_BOUND_S", 0.6)
    quiet, waited = asyncio.run(settle_while_busy(1.5, 1))
    assert not quiet and waited < 1.2  # bounded, and says so


def test_a_nodes_answer_entry_is_parsed_once_whether_well_formed_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Node._parse_nodes`` memoizes every entry by its fields, the out-of-shape ones
    (memoized as None) too, and leaves out ourselves and what is out of shape."""
    node = Node(Identity.from_seed(b"\x07" * 32), NOW)
    parsed: list[bytes] = []
    original = node_module.parse_node_info

    def counting(info: pb.NodeInfo) -> Any:
        parsed.append(info.key)
        return original(info)

    monkeypatch.setattr(node_module, "parse_node_info", counting)
    good, bad = _key(b"good"), (2).to_bytes(32, "little")  # ``bad`` is no curve point
    loopback = bytes([127, 0, 0, 1])
    answer = pb.Nodes(
        query_id=b"q" * 16,
        nodes=[
            pb.NodeInfo(key=good, ip=loopback, port=4000),
            pb.NodeInfo(key=bad, ip=loopback, port=4001),
            pb.NodeInfo(key=node.identity.key, ip=loopback, port=4002),
        ],
    )
    for _ in range(3):
        found = node._parse_nodes(answer, ("127.0.0.1", 5000))  # a loopback answerer
        assert [(c.key, c.endpoint) for c in found] == [(good, ("127.0.0.1", 4000))]
    assert sorted(parsed) == sorted([good, bad, node.identity.key])


def test_vs_kademlia_background_span_starts_with_a_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The joins' pending full collection runs before the background span and the lookup
    phase, and ``GcMeter`` counts what runs inside a span, full collections apart."""
    import gc

    bench = bench_module("vs_kademlia")
    monkeypatch.setattr(bench, "BACKGROUND_S", 0.01)
    with bench.GcMeter() as meter:
        asyncio.run(bench.background_cpu_s_per_s())
    assert meter.full >= 1 and meter.cpu_s > 0
    with bench.GcMeter() as meter:
        gc.collect(0)
    assert meter.full == 0 and meter.cpu_s > 0
    assert meter._callback not in gc.callbacks  # it stops counting when the span ends


def test_the_objects_made_per_query_are_slotted() -> None:
    """A lookup makes a ``_Query`` per query and a ``Candidate`` per new node named in an
    answer (memoized), and keeps a ``_Path`` per path: without a ``__dict__`` each is one
    object for the young collections to walk instead of two (bench/RESULTS.md, "Issue
    11, fifth session")."""
    candidate = Candidate(bytes(32), bytes(20), ("127.0.0.1", 1))
    query = _Query("find_node", bytes(32), ("127.0.0.1", 1), 0.0, candidate=candidate)
    for made in (candidate, query, _Path()):
        assert not hasattr(made, "__dict__")


def test_vs_kademlia_interleaves_blocks_abba() -> None:
    """``--interleave``: blocks alternate ours, kademlia, kademlia, ours, ... so that a load
    rising or falling over the run weighs on both sides alike."""
    bench = bench_module("vs_kademlia")
    assert bench.block_order(3) == ["ours", "kademlia", "kademlia", "ours", "ours", "kademlia"]


def test_vs_kademlia_interleaved_run_gives_each_side_its_own_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both networks are up before the first block; each side runs all its lookups, in
    blocks of the size asked (the last takes the rest), and a block's lookups, CPU and
    wall time count to its own side only."""
    bench = bench_module("vs_kademlia")
    monkeypatch.setattr(bench, "BACKGROUND_S", 0.01)
    ran: list[str] = []
    started: list[str] = []

    class Fake:
        join_s = settle_s = 0.0
        settled = True
        addresses = [bytes(20)]

        def __init__(self, name: str) -> None:
            self.name = name

        async def start(self, nodes: int, settle_s: float) -> None:
            started.append(self.name)

        async def lookup(self) -> tuple[float, int, tuple[bytes, bytes, set[bytes]]]:
            assert started == ["ours", "kademlia"]
            ran.append(self.name)
            sum(range(20_000 if self.name == "ours" else 1))  # CPU for ours only
            return 1.0, 3, (bytes(20), bytes(20), set())

        def close(self) -> None:
            pass

    monkeypatch.setattr(bench, "OurNetwork", lambda seed, paths: Fake("ours"))
    monkeypatch.setattr(bench, "KademliaNetwork", lambda seed: Fake("kademlia"))
    ours, theirs = asyncio.run(bench.run_interleaved(8, 5, 1, 0.0, 2, 2))
    assert ran == ["ours"] * 2 + ["kademlia"] * 2 + ["kademlia"] * 3 + ["ours"] * 3
    assert (ours.lookups, theirs.lookups, ours.queries, theirs.queries) == (5, 5, 15, 15)
    assert ours.cpu_s > theirs.cpu_s >= 0
