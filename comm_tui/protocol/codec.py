"""Datagram encoding and strict, authenticated decoding.

Every datagram is a ``Packet``. A boxed packet is encrypted and authenticated with
the precomputed nacl ``Box`` between the sender's and our X25519 keys, so a valid
one proves who sent it and hides all but the sender key from the wire. The first
8 bytes of the 24-byte nonce carry the sender's time in milliseconds, which bounds
how long we must remember nonces to reject replays.

Decoding never raises anything but :class:`Rejected`, whose ``reason`` is the
counter the node increments.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import Box

from comm_tui.crypto.identity import PUBLIC_KEY_BYTES, Identity, PublicIdentity
from comm_tui.protocol import wire_pb2 as pb

PROTOCOL_VERSION = 1
MAX_DATAGRAM_BYTES = 1200
NONCE_BYTES = 24
CHALLENGE_BYTES = 16
# Pads a hello to at least the size of the boxed Pong that answers it (tested).
HELLO_PADDING_BYTES = 48
# Peers' clocks may differ from ours by this much before their datagrams are refused.
MAX_CLOCK_SKEW_S = 600.0
# A peer's datagrams older than its newest by more than this are refused as replays.
REPLAY_WINDOW_S = 120.0
REPLAY_WINDOW_MS = int(REPLAY_WINDOW_S * 1000)
# Nonces remembered per peer at most (a peer at the 500/s rate limit fills it in 16 s).
REPLAY_MAX_NONCES = 8192
BOX_CACHE_PEERS = 4096
# Binds both Ed25519 keys into the per-peer key; see Codec.box.
_LINK_KEY_DOMAIN = b"comm-tui link key v1\x00"
REPLAY_CACHE_PEERS = 4096


class Rejected(Exception):
    """A datagram that is dropped; ``reason`` names the statistics counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """An accepted datagram: who sent it and what it says.

    ``frame`` is set for boxed (authenticated) datagrams, ``hello`` for the
    cleartext first-contact request, which authenticates nothing.
    """

    sender: PublicIdentity
    frame: pb.Frame | None
    hello: pb.Hello | None


class _ReplayWindow:
    """Nonces seen from one peer within REPLAY_WINDOW_S of its newest datagram.

    Nonces are kept in arrival order, so forgetting the old ones costs O(1) per
    datagram (a peer's clock mostly moves forward; a late one just lingers a little).
    The sender picks the timestamps, so the set is also capped: past the cap the
    oldest nonce is forgotten and nothing at or before its time is accepted again.
    """

    __slots__ = ("floor_ms", "newest_ms", "order", "seen")

    def __init__(self) -> None:
        self.newest_ms = 0
        self.floor_ms = 0
        self.seen: set[bytes] = set()
        self.order: deque[tuple[int, bytes]] = deque()

    def accept(self, nonce: bytes, sent_ms: int) -> bool:
        if (
            sent_ms < self.newest_ms - REPLAY_WINDOW_MS
            or sent_ms < self.floor_ms
            or nonce in self.seen
        ):
            return False
        self.seen.add(nonce)
        self.order.append((sent_ms, nonce))
        if sent_ms > self.newest_ms:
            self.newest_ms = sent_ms
            floor_ms = sent_ms - REPLAY_WINDOW_MS
            while self.order and self.order[0][0] < floor_ms:
                self.seen.discard(self.order.popleft()[1])
        if len(self.order) > REPLAY_MAX_NONCES:
            oldest_ms, oldest = self.order.popleft()
            self.seen.discard(oldest)
            self.floor_ms = max(self.floor_ms, oldest_ms + 1)
        return True


class Codec:
    """Encodes and decodes datagrams for one identity, caching per-peer state."""

    def __init__(self, identity: Identity, rng: random.Random) -> None:
        self.identity = identity
        self._rng = rng
        self._boxes: OrderedDict[bytes, Box] = OrderedDict()
        self._replay: OrderedDict[bytes, _ReplayWindow] = OrderedDict()

    def box(self, key: bytes) -> Box:
        """The precomputed Box with a peer; raises ValueError for an invalid key."""
        box = self._boxes.get(key)
        if box is not None:
            self._boxes.move_to_end(key)
            return box
        box = self.identity.box_with(PublicIdentity(key), _LINK_KEY_DOMAIN)
        self._boxes[key] = box
        if len(self._boxes) > BOX_CACHE_PEERS:
            self._boxes.popitem(last=False)
        return box

    def knows(self, key: bytes) -> bool:
        return key in self._boxes

    def encode_frame(self, peer_key: bytes, frame: pb.Frame, now: float) -> bytes:
        nonce = int(now * 1000).to_bytes(8, "big") + self._rng.randbytes(16)
        boxed = self.box(peer_key).encrypt(frame.SerializeToString(), nonce)
        packet = pb.Packet(
            version=PROTOCOL_VERSION, sender_key=self.identity.key, boxed=bytes(boxed)
        )
        data = packet.SerializeToString()
        if len(data) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
        return data

    def encode_hello(self, challenge: bytes) -> bytes:
        """A hello padded so that the boxed Pong answering it is never larger."""
        packet = pb.Packet(
            version=PROTOCOL_VERSION,
            sender_key=self.identity.key,
            hello=pb.Hello(challenge=challenge, padding=bytes(HELLO_PADDING_BYTES)),
        )
        return packet.SerializeToString()

    def decode(self, data: bytes, now: float) -> Decoded:
        if len(data) > MAX_DATAGRAM_BYTES:
            raise Rejected("oversized")
        try:
            packet = pb.Packet.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Rejected("malformed") from exc
        if packet.version != PROTOCOL_VERSION:
            raise Rejected("wrong_version")
        key = packet.sender_key
        if len(key) != PUBLIC_KEY_BYTES:
            raise Rejected("malformed")
        if key == self.identity.key:
            raise Rejected("own_key")
        body = packet.WhichOneof("body")
        if body == "hello":
            if (
                len(packet.hello.challenge) != CHALLENGE_BYTES
                or len(packet.hello.padding) < HELLO_PADDING_BYTES
            ):
                # An unpadded hello would get an answer larger than itself: a reflector.
                raise Rejected("malformed")
            try:
                sender = PublicIdentity(key)
                sender.box_key  # noqa: B018 - validates the curve point before we answer
            except ValueError as exc:
                raise Rejected("bad_key") from exc
            return Decoded(sender, None, packet.hello)
        if body != "boxed":
            raise Rejected("malformed")
        return Decoded(PublicIdentity(key), self._open(key, packet.boxed, now), None)

    def _open(self, key: bytes, boxed: bytes, now: float) -> pb.Frame:
        if len(boxed) < NONCE_BYTES + 16:
            raise Rejected("malformed")
        nonce = boxed[:NONCE_BYTES]
        sent_ms = int.from_bytes(nonce[:8], "big")
        if abs(sent_ms / 1000 - now) > MAX_CLOCK_SKEW_S:
            raise Rejected("stale")
        try:
            plaintext = self.box(key).decrypt(boxed)
        except ValueError as exc:
            raise Rejected("bad_key") from exc
        except CryptoError as exc:
            raise Rejected("bad_auth") from exc
        window = self._replay.get(key)
        if window is None:
            window = self._replay[key] = _ReplayWindow()
            if len(self._replay) > REPLAY_CACHE_PEERS:
                self._replay.popitem(last=False)
        else:
            self._replay.move_to_end(key)
        if not window.accept(nonce, sent_ms):
            raise Rejected("replay")
        try:
            frame = pb.Frame.FromString(plaintext)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Rejected("malformed") from exc
        if frame.WhichOneof("body") is None:
            raise Rejected("malformed")
        return frame
