"""Adversarial nodes for the simulator: the attacks the protocol claims to survive.

Each adversary wraps an ordinary simulated node through ``SimNode.intercept``: it
sees every datagram before the node does, may answer it itself with
``SimNetwork.send_raw`` and may swallow it. The node underneath stays unmodified,
so for everything the adversary lets through (hellos, pings, lookups) it looks
exactly like an honest peer, which is what makes these attacks hard to spot.

- ``DropAdversary`` silences and deafens: it takes every message and ack, sends a
  receipt so the sender believes it holds them, and never passes them on.
- ``ForgeAckAdversary`` answers every message it relays with an ack signed by its
  own key, trying to make relays and the sender cancel the message early.
- ``EclipseAdversary`` is a group of identities brute-forced to sit next to one
  target address; they answer FIND_NODE only with each other and drop all traffic,
  trying to become the target's whole neighbourhood.

Adversaries read frames with a codec of their own (a second ``Codec`` for the same
identity), so peeking does not spend the node's replay window.
"""

from __future__ import annotations

import abc
import hashlib
import random
from dataclasses import dataclass

from nacl.bindings import crypto_sign_seed_keypair

from comm_tui.crypto.ack import sign_ack
from comm_tui.crypto.identity import ADDRESS_BYTES, SEED_BYTES, Identity, address_of
from comm_tui.crypto.seal import message_id
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.codec import Codec, Rejected
from comm_tui.protocol.node import FIND_NODE_ANSWER_NODES, node_info
from comm_tui.protocol.relay_store import Kind, entry_key
from comm_tui.protocol.routing import ADDRESS_BITS, Endpoint, distance
from comm_tui.sim.network import SimNetwork, SimNode

# Bits of the target address the eclipse identities share: more than the ~log2(N / k)
# bits that honest neighbours of a target share in networks up to ~100,000 nodes.
ECLIPSE_PREFIX_BITS = 12


@dataclass(frozen=True)
class Peeked:
    """A boxed datagram as the adversary reads it."""

    sender_key: bytes
    frame: pb.Frame

    @property
    def kind(self) -> str:
        return self.frame.WhichOneof("body") or ""


def item_key(frame: pb.Frame) -> bytes | None:
    """The relay-store key of the message or ack a frame carries (what a receipt names)."""
    body = frame.WhichOneof("body")
    if body == "message":
        msg = frame.message
        return entry_key(Kind.MESSAGE, message_id(msg.recipient, msg.expires_ms, msg.sealed))
    if body == "ack":
        ack = frame.ack
        return entry_key(Kind.ACK, ack.message_id + address_of(ack.recipient_key))
    return None


class Adversary(abc.ABC):
    """Shared machinery: peek at frames, answer with frames of our own, count what we did."""

    def __init__(self, net: SimNetwork, sim: SimNode, *, seed: int) -> None:
        self.net = net
        self.sim = sim
        self._peek_codec = Codec(sim.node.identity)
        self.swallowed = 0  # messages and acks taken and never passed on
        self.injected = 0  # datagrams the adversary wrote itself
        sim.intercept = self.intercept

    def intercept(self, sim: SimNode, data: bytes, source: Endpoint) -> bool:
        peeked = self.peek(data)
        return peeked is not None and self.handle(peeked, source)

    @abc.abstractmethod
    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        """React to a boxed frame; True swallows it, False hands it to the node."""

    def peek(self, data: bytes) -> Peeked | None:
        try:
            decoded = self._peek_codec.decode(data, self.net.now)
        except Rejected:
            return None
        if decoded.frame is None:
            return None
        return Peeked(decoded.sender.key, decoded.frame)

    def reply(self, key: bytes, endpoint: Endpoint, frame: pb.Frame) -> None:
        data = self.sim.node.codec.encode_frame(key, frame, self.net.now)
        self.injected += 1
        self.net.send_raw(data, self.sim.endpoint, endpoint)

    def swallow(self, peeked: Peeked, source: Endpoint) -> bool:
        """Take a message or ack for good, with a receipt so the sender counts on us."""
        key = item_key(peeked.frame)
        if key is None:
            return False
        self.swallowed += 1
        self.reply(peeked.sender_key, source, pb.Frame(receipt=pb.Receipt(ids=[key])))
        return True


class DropAdversary(Adversary):
    """Routes honestly, drops every message and ack it is handed."""

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        return self.swallow(peeked, source)


class ForgeAckAdversary(Adversary):
    """Relays honestly, but answers each message with an ack signed by its own key."""

    def __init__(self, net: SimNetwork, sim: SimNode, *, seed: int) -> None:
        super().__init__(net, sim, seed=seed)
        self.forged = 0

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        if peeked.kind != "message":
            return False
        msg = peeked.frame.message
        forged = sign_ack(
            self.sim.node.identity,
            message_id(msg.recipient, msg.expires_ms, msg.sealed),
            address_of(peeked.sender_key),
            msg.expires_ms,
        )
        self.forged += 1
        self.reply(peeked.sender_key, source, pb.Frame(ack=forged))
        return False


class EclipseAdversary(Adversary):
    """One of a group of identities next to ``target`` that only ever name each other."""

    def __init__(
        self, net: SimNetwork, sim: SimNode, group: list[SimNode], target: bytes, *, seed: int
    ) -> None:
        super().__init__(net, sim, seed=seed)
        self.group = group
        self.target = target

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        if peeked.kind == "find_node":
            find = peeked.frame.find_node
            if len(find.target) != ADDRESS_BYTES:
                return True
            others = [s for s in self.group if s is not self.sim]
            others.sort(key=lambda s: distance(s.node.address, find.target))
            named = others[:FIND_NODE_ANSWER_NODES]
            infos = [node_info(s.node.identity.key, s.endpoint) for s in named]
            answer = pb.Nodes(query_id=find.query_id, nodes=[i for i in infos if i is not None])
            self.reply(peeked.sender_key, source, pb.Frame(nodes=answer))
            return True
        return self.swallow(peeked, source)


def identities_near(
    target: bytes, count: int, prefix_bits: int, rng: random.Random
) -> list[Identity]:
    """Brute-force ``count`` identities whose addresses share ``prefix_bits`` bits with ``target``.

    About 2**prefix_bits key generations each: what an attacker pays, since an address
    is the hash of a key. Uses the raw libsodium and hashlib calls because this loop
    is the cost of the attack, not of the code under test.
    """
    if not 0 <= prefix_bits <= ADDRESS_BITS:
        raise ValueError(f"prefix_bits must be within 0..{ADDRESS_BITS}")
    shift = ADDRESS_BITS - prefix_bits
    want = int.from_bytes(target, "big") >> shift
    found: list[Identity] = []
    while len(found) < count:
        seed = rng.randbytes(SEED_BYTES)
        public, _ = crypto_sign_seed_keypair(seed)
        address = hashlib.blake2b(public, digest_size=ADDRESS_BYTES).digest()
        if int.from_bytes(address, "big") >> shift == want:
            found.append(Identity.from_seed(seed))
    return found
