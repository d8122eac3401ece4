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
- ``TamperAdversary`` relays, but rewrites every field a relay can reach in what it
  sends (the ``stem`` flag, the endpoints in NODES answers, ack signatures) and races its own
  corrupted copies of each message to the target's neighbourhood.
- ``FillAdversary`` floods relays with junk messages from fresh keys to random
  recipients at its full rate, to fill their stores.
- ``SybilAdversary`` claims table slots with many fresh keys from forged source
  addresses nobody can reach there, and keeps them fresh.
- ``HelloFloodAdversary`` sends cleartext hellos from random valid keys and spoofed
  sources at one victim, to use up its new-key budget and flush its key cache.

Adversaries read and write frames with a codec of their own (a second ``Codec`` for the
same identity), so peeking does not spend the node's replay window. Each counts what it
injected (``injected`` datagrams, ``injected_bytes``); what the node underneath sends
while looking honest is not counted. Protocol internals are reached only through
``comm_tui.sim.internals``.
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
from comm_tui.protocol.node import FIND_NODE_ANSWER_NODES, node_info
from comm_tui.protocol.relay_store import Kind, entry_key
from comm_tui.protocol.routing import ADDRESS_BITS, Endpoint, distance
from comm_tui.sim import internals
from comm_tui.sim.internals import Rejected
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
        self._peek_codec = internals.make_codec(sim.node.identity)
        self.swallowed = 0  # messages and acks taken and never passed on
        self.injected = 0  # datagrams the adversary wrote itself
        self.injected_bytes = 0
        self.until = 0.0  # virtual time at which whatever ``start`` began stops
        sim.intercept = self.intercept

    # Floods start with the message window; adversaries that prepare (Sybils) start at once.
    starts_early = False

    def start(self, until: float) -> None:
        """Begin whatever the adversary does on its own, until virtual time ``until``."""
        return None

    def figures(self) -> dict[str, float]:
        """What this adversary did, beyond datagrams and bytes (summed over adversaries)."""
        return {}

    def send(self, data: bytes, dest: Endpoint, source: Endpoint | None = None) -> None:
        """Put an injected datagram on the wire, from our endpoint or a forged one."""
        self.injected += 1
        self.injected_bytes += len(data)
        self.net.send_raw(data, self.sim.endpoint if source is None else source, dest)

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
        self.send(internals.encode_frame(self._peek_codec, key, frame, self.net.now), endpoint)

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


def fresh_keys(count: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """``count`` random (seed, Ed25519 public key) pairs: valid curve points, free to make."""
    out: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        seed = rng.randbytes(SEED_BYTES)
        public, _ = crypto_sign_seed_keypair(seed)
        out.append((seed, public))
    return out


def forged_endpoint(index: int, port: int = 4000) -> Endpoint:
    """An address in 100.64.0.0/10 (no simulated node lives there), one /24 per index."""
    return (f"100.{64 + (index >> 8) % 64}.{index & 255}.{1 + (index >> 14) % 254}", port)


class TamperAdversary(Adversary):
    """Relays everything, but rewrites every field it can reach in what it sends.

    - Messages it relays leave with the ``stem`` flag flipped (the one field not under
      the id): a stem it should end goes on, a fluff it should spread becomes a stem.
    - Acks leave with a flipped signature byte; NODES answers with every port moved,
      so lookups chase endpoints where nobody listens.
    - For each message it takes it also races copies of its own to the nodes nearest
      the recipient (not the recipient): one in the stem to each, so the first copy they
      store sends them on a random walk, and one more with a shortened expiry, flipped
      sealed bytes or an expiry 1 ms off the whole hour, in turn. Each tamperer races an
      item once, and none races an item a tamperer made (``made``, shared by colluding
      tamperers): a flipped sealed payload is a new item, so racing those would be a chain
      reaction of the adversaries' own making, not an attack on the protocol.
    """

    def __init__(
        self,
        net: SimNetwork,
        sim: SimNode,
        *,
        seed: int,
        race_width: int = 8,
        made: set[bytes] | None = None,
    ) -> None:
        super().__init__(net, sim, seed=seed)
        self.made = made if made is not None else set()
        self.rng = random.Random(seed ^ 0x7A3)
        self.race_width = race_width
        self.rewritten: dict[str, int] = dict.fromkeys(
            ("message_stem", "ack_signature", "nodes_endpoints"), 0
        )
        self.raced = 0
        self._raced_ids: dict[bytes, None] = {}
        self._variant = 0
        internals.rewrite_outgoing_frames(sim.node, self._rewrite)

    def _rewrite(self, peer_key: bytes, frame: pb.Frame) -> pb.Frame:
        body = frame.WhichOneof("body")
        if body not in ("message", "ack", "nodes"):
            return frame
        out = pb.Frame()
        out.CopyFrom(frame)
        if body == "message":
            out.message.stem = not out.message.stem
            self.rewritten["message_stem"] += 1
        elif body == "ack":
            signature = bytearray(out.ack.signature)
            if signature:
                signature[0] ^= 0x01
            out.ack.signature = bytes(signature)
            self.rewritten["ack_signature"] += 1
        else:
            for info in out.nodes.nodes:
                info.port = info.port % 65535 + 1
            self.rewritten["nodes_endpoints"] += len(out.nodes.nodes)
        return out

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        if peeked.kind == "message":
            self._race(peeked.frame.message)
        return False  # the node relays it; what it sends is rewritten on the way out

    def _race(self, msg: pb.Message) -> None:
        item = message_id(msg.recipient, msg.expires_ms, msg.sealed)
        if item in self._raced_ids or item in self.made:
            return
        self._raced_ids[item] = None
        if len(self._raced_ids) > 65536:
            self._raced_ids.pop(next(iter(self._raced_ids)))
        now = self.net.now
        peers = internals.closest_peers(self.sim.node, msg.recipient, self.race_width + 1)
        peers = [p for p in peers if p[1] != msg.recipient][: self.race_width]
        for key, _, endpoint in peers:
            poisoned = pb.Message()
            poisoned.CopyFrom(msg)
            poisoned.stem = True
            self._send_frame(key, endpoint, pb.Frame(message=poisoned))
        if peers:
            key, _, endpoint = self.rng.choice(peers)
            junk = pb.Message()
            junk.CopyFrom(msg)
            variant = self._variant % 3
            self._variant += 1
            if variant == 0:
                junk.expires_ms = int((now + self.rng.uniform(0.5, 5.0)) * 1000)
            elif variant == 1:
                sealed = bytearray(junk.sealed)
                sealed[self.rng.randrange(len(sealed))] ^= 0xFF
                junk.sealed = bytes(sealed)
            else:
                junk.expires_ms += 1
            self.made.add(message_id(junk.recipient, junk.expires_ms, junk.sealed))
            self._send_frame(key, endpoint, pb.Frame(message=junk))

    def _send_frame(self, key: bytes, endpoint: Endpoint, frame: pb.Frame) -> None:
        self.raced += 1
        try:
            data = internals.encode_frame(self._peek_codec, key, frame, self.net.now)
        except ValueError:
            return
        self.send(data, endpoint)

    def figures(self) -> dict[str, float]:
        return {f"rewritten_{k}": float(v) for k, v in self.rewritten.items()} | {
            "raced_copies": float(self.raced)
        }


class _Flood(Adversary):
    """An adversary that sends on its own at ``rate_per_s`` until ``start``'s deadline,
    a tick every ``TICK_S`` of virtual time, and lets whatever it receives through."""

    TICK_S = 0.05

    def __init__(self, net: SimNetwork, sim: SimNode, *, seed: int, rate_per_s: float) -> None:
        super().__init__(net, sim, seed=seed)
        self.rate_per_s = rate_per_s
        self._carry = 0.0

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        return False

    def start(self, until: float) -> None:
        self.until = until
        self.net.call_at(self.net.now, self._tick)

    def _tick(self) -> None:
        if self.net.now >= self.until or not self.sim.online:
            return
        self._carry += self.rate_per_s * self.TICK_S
        count, self._carry = int(self._carry), self._carry % 1
        for _ in range(count):
            self._send_one()
        self.net.call_at(self.net.now + self.TICK_S, self._tick)

    @abc.abstractmethod
    def _send_one(self) -> None:
        """One datagram of the flood."""


class FillAdversary(_Flood):
    """Floods relays with junk messages from fresh keys, to random recipients, to fill stores.

    Keys are free, so each key sends only as many items to one relay as that relay's
    per-key quota and store-rate burst let through, then a new key takes over, for the
    next relay in turn (``victims``: every node a crawl of the network finds). Each junk
    item is the size of a real message, for a random 20-byte recipient, with the longest
    TTL a relay accepts: a relay cannot tell it from mail, stores it and relays it on
    (spending its own quota at the next hops). ``rate_per_s`` datagrams per second, from
    the adversary's own host.
    """

    def __init__(
        self,
        net: SimNetwork,
        sim: SimNode,
        victims: list[tuple[bytes, Endpoint]],
        *,
        seed: int,
        rate_per_s: float = 2000.0,
        per_key: int | None = None,
    ) -> None:
        super().__init__(net, sim, seed=seed, rate_per_s=rate_per_s)
        self.rng = random.Random(seed ^ 0xF111)
        self.victims = list(victims)
        self.rng.shuffle(self.victims)
        config = sim.node.config
        entry_bytes = internals.SEALED_BYTES + 64 + 256
        quota_items = max(1, config.store_per_peer_bytes // entry_bytes - 1)
        self.per_key = per_key or max(1, min(quota_items, int(config.store_burst * 0.9)))
        self.keys_used = 0
        self.junk_sent = 0
        self._victim = -1
        self._left = 0
        self._codec: internals.Codec | None = None

    def start(self, until: float) -> None:
        if self.victims:
            super().start(until)

    def _send_one(self) -> None:
        if self._left <= 0 or self._codec is None:
            self._victim = (self._victim + 1) % len(self.victims)
            self._codec = internals.make_codec(Identity.from_seed(self.rng.randbytes(SEED_BYTES)))
            self.keys_used += 1
            self._left = self.per_key
        self._left -= 1
        key, endpoint = self.victims[self._victim]
        msg = pb.Message(
            recipient=self.rng.randbytes(ADDRESS_BYTES),
            expires_ms=internals.forged_expiry_ms(self.net.now),
            sealed=self.rng.randbytes(internals.SEALED_BYTES),
        )
        data = internals.encode_frame(self._codec, key, pb.Frame(message=msg), self.net.now)
        self.junk_sent += 1
        self.send(data, endpoint)

    def figures(self) -> dict[str, float]:
        return {"junk_messages": float(self.junk_sent), "fresh_keys": float(self.keys_used)}


class SybilAdversary(Adversary):
    """Claims routing-table slots with fresh keys from forged, unreachable addresses.

    It generates ``pool`` keys (the cost: one key generation each) and, for every honest
    node a crawl finds, picks the ``per_victim`` keys whose addresses share the longest
    prefix with it: those fall into its deepest, least crowded buckets, where there is
    room. Each such key sends the victim a boxed Ping from its own forged source address
    (one /24 per key, so the per-/24 bucket limit counts no two of them together), and
    again every ``refresh_s``, which keeps the entry fresh. Nobody at that address will
    ever answer: every query the victim routes there is lost.
    """

    def __init__(
        self,
        net: SimNetwork,
        sim: SimNode,
        victims: list[tuple[bytes, bytes, Endpoint]],
        *,
        seed: int,
        first_index: int = 0,
        pool: int = 4096,
        per_victim: int = 16,
        refresh_s: float = 30.0,
    ) -> None:
        super().__init__(net, sim, seed=seed)
        self.rng = random.Random(seed ^ 0x5B1)
        self.refresh_s = refresh_s
        keys = fresh_keys(pool, self.rng)
        self.keys_generated = pool
        addresses = [
            int.from_bytes(hashlib.blake2b(pub, digest_size=ADDRESS_BYTES).digest(), "big")
            for _, pub in keys
        ]
        self.sybil_keys: set[bytes] = set()
        self._codecs: dict[int, internals.Codec] = {}
        self._endpoints: dict[int, Endpoint] = {}
        # (sybil index, victim key, victim endpoint)
        self.pairs: list[tuple[int, bytes, Endpoint]] = []
        for victim_key, victim_address, victim_endpoint in victims:
            own = int.from_bytes(victim_address, "big")
            chosen = sorted(range(pool), key=lambda i: addresses[i] ^ own)[:per_victim]
            for i in chosen:
                if i not in self._codecs:
                    self._codecs[i] = internals.make_codec(Identity.from_seed(keys[i][0]))
                    self._endpoints[i] = forged_endpoint(first_index + len(self._endpoints))
                    self.sybil_keys.add(keys[i][1])
                self.pairs.append((i, victim_key, victim_endpoint))
        self.rounds = 0

    starts_early = True

    def handle(self, peeked: Peeked, source: Endpoint) -> bool:
        return False

    def start(self, until: float) -> None:
        self.until = until
        self.net.call_at(self.net.now + self.rng.uniform(0, 1), self._round)

    def _round(self) -> None:
        if self.net.now >= self.until:
            return
        self.rounds += 1
        now = self.net.now
        for i, victim_key, victim_endpoint in self.pairs:
            challenge = self.rng.randbytes(internals.CHALLENGE_BYTES)
            frame = pb.Frame(ping=pb.Ping(challenge=challenge))
            data = internals.encode_frame(self._codecs[i], victim_key, frame, now)
            self.send(data, victim_endpoint, source=self._endpoints[i])
        self.net.call_at(now + self.refresh_s, self._round)

    def figures(self) -> dict[str, float]:
        return {
            "sybil_keys": float(len(self.sybil_keys)),
            "keys_generated": float(self.keys_generated),
        }


class HelloFloodAdversary(_Flood):
    """Floods one victim with cleartext hellos from random valid keys and spoofed sources.

    A hello needs no secret key, only a valid curve point, so a pool of ``pool`` public
    keys, larger than any key cache, is as good as fresh keys. Every hello comes from a
    random forged source (the Pong answering it goes there), so no per-endpoint limit
    applies. ``rate_per_s`` hellos per second from this adversary.
    """

    TICK_S = 0.01

    def __init__(
        self,
        net: SimNetwork,
        sim: SimNode,
        victim: Endpoint,
        *,
        seed: int,
        rate_per_s: float = 5000.0,
        pool: int = 16384,
    ) -> None:
        super().__init__(net, sim, seed=seed, rate_per_s=rate_per_s)
        self.rng = random.Random(seed ^ 0x4E11)
        self.victim = victim
        self.keys = [pub for _, pub in fresh_keys(pool, self.rng)]
        self.hellos = 0
        self._next = 0

    def _send_one(self) -> None:
        key = self.keys[self._next % len(self.keys)]
        self._next += 1
        challenge = self.rng.randbytes(internals.CHALLENGE_BYTES)
        source = forged_endpoint(self.rng.getrandbits(22), 1024 + self.rng.getrandbits(15))
        self.hellos += 1
        self.send(internals.hello_packet(key, challenge), self.victim, source=source)

    def figures(self) -> dict[str, float]:
        return {"hellos": float(self.hellos)}


def fetch_amplification(*, items: int = 520, fetches: int = 3, seed: int = 0) -> dict[str, float]:
    """Finding 1, measured: junk stored for key M2 at a relay, then Fetches from a forged address.

    Key M1 hands one honest relay ``items`` junk messages addressed to key M2 (paced
    under the relay's store-rate limit); then M2 sends ``fetches`` Fetches, one every
    5 s, each with the source address forged to a victim's (where no node listens).
    Counts the bytes the relay sends to the victim within 1 s of each Fetch.
    """
    rng = random.Random(f"fetch-amplification-{seed}")  # not the network's own stream
    net = SimNetwork(seed)
    relay = net.add_node()
    m1 = internals.make_codec(Identity.from_seed(rng.randbytes(SEED_BYTES)))
    m2_identity = Identity.from_seed(rng.randbytes(SEED_BYTES))
    m2 = internals.make_codec(m2_identity)
    m1_endpoint: Endpoint = ("10.250.0.1", 4000)
    victim = forged_endpoint(7)
    relay_key = relay.node.identity.key
    to_victim = [0]

    def tap(data: bytes, source: Endpoint, dest: Endpoint) -> None:
        if dest == victim and source == relay.endpoint:
            to_victim[0] += len(data)

    net.tap = tap
    setup_bytes = 0
    for _ in range(items):
        msg = pb.Message(
            recipient=m2_identity.address,
            expires_ms=internals.forged_expiry_ms(net.now),
            sealed=rng.randbytes(internals.SEALED_BYTES),
        )
        data = internals.encode_frame(m1, relay_key, pb.Frame(message=msg), net.now)
        setup_bytes += len(data)
        net.send_raw(data, m1_endpoint, relay.endpoint)
        net.run_for(0.02)  # 50/s, under the per-key store rate
    net.run_for(5)
    stored = internals.store_bytes(relay.node)
    refused = internals.rejections(relay.node)
    factors: list[float] = []
    fetch_bytes = 0
    for _ in range(fetches):
        data = internals.encode_frame(m2, relay_key, pb.Frame(fetch=pb.Fetch()), net.now)
        fetch_bytes += len(data)
        before = to_victim[0]
        net.send_raw(data, victim, relay.endpoint)
        net.run_for(1.0)
        factors.append((to_victim[0] - before) / len(data))
        net.run_for(4.0)
    in_table = m2_identity.key in internals.table_keys(relay.node)
    return {
        "delivered": None,  # type: ignore[dict-item]
        "attacker_datagrams": float(items + fetches),
        "attacker_bytes": float(setup_bytes + fetch_bytes),
        "fetch_bytes": float(fetch_bytes),
        "amplification": round(factors[0], 1) if factors else 0.0,
        "store_max_bytes": float(stored),
        "victim_cpu_s": round(relay.cpu_s, 3),
        "honest_cpu_s": round(relay.cpu_s, 3),
        "details": {  # type: ignore[dict-item]
            "junk_items": float(items),
            "bytes_to_forged_address": float(to_victim[0]),
            "amplification_first_fetch": round(factors[0], 1) if factors else 0.0,
            "amplification_mean": round(sum(factors) / len(factors), 1) if factors else 0.0,
            "fetcher_in_table_at_forged_address": float(in_table),
            **{f"relay_rejected_{k}": float(v) for k, v in refused.items()},
        },
    }
