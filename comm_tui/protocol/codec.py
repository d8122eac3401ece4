"""Datagram encoding and strict, authenticated decoding (docs/PROTOCOL.md, "Packets").

Every datagram is a ``Packet``. A boxed packet is encrypted and authenticated with
a secret box whose key is bound to the sender's and the receiver's exact keys *and to
the direction* (``Identity.directional_boxes``), so a valid one proves who sent it, to
whom, and hides all but the sender key from the wire. The first 8 bytes of the 24-byte
nonce carry the sender's time in milliseconds, which bounds how long we must remember
nonces to reject replays.

Decoding is two steps so that the node can decide whether a packet may cost a key
agreement before it is opened: ``parse`` checks the cleartext envelope (cheap), ``open``
authenticates and decrypts (one X25519 agreement per new peer). ``decode`` does both.
Neither raises anything but :class:`Rejected`, whose ``reason`` is the counter the node
increments.

Nonce tails come from the OS CSPRNG: anything an observer could predict from earlier
outputs (MT19937 state is recoverable from 624 outputs) has no place here.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import OrderedDict, deque
from collections.abc import Collection
from typing import NamedTuple

from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError

from comm_tui.crypto.identity import (
    PUBLIC_KEY_BYTES,
    Identity,
    LinkBoxes,
    PublicIdentity,
    is_valid_public_key,
)
from comm_tui.protocol import wire_pb2 as pb
from comm_tui.protocol.admission import CHALLENGE_BYTES, COOKIE_BYTES, ECHO_BYTES

PROTOCOL_VERSION = 2
MAX_DATAGRAM_BYTES = 1200
NONCE_BYTES = 24
# Pads a hello to at least the size of the boxed Pong that answers it, the endpoint we
# observed included (an IPv6 one; docs/PROTOCOL.md, "12.1"; tested). Hellos padded to
# the older minimum are still answered, without the observed endpoint if it would not fit.
HELLO_PADDING_BYTES = 64
HELLO_MIN_PADDING_BYTES = 48
# Peers' clocks may differ from ours by this much before their datagrams are refused.
MAX_CLOCK_SKEW_S = 600.0
# A peer's datagrams older than its newest by more than this are refused as replays.
REPLAY_WINDOW_S = 120.0
REPLAY_WINDOW_MS = int(REPLAY_WINDOW_S * 1000)
# Nonces remembered per peer at most; past it the peer's floor rises (see _ReplayWindow).
REPLAY_MAX_NONCES = 1024
# Nonces remembered over all peers at most, and windows of peers outside the routing
# table: the global bound on replay state. About 200 bytes a nonce (set slot, bytes
# object, deque tuple) and 1 KiB a window: ~10 MiB at worst (measured per nonce in
# tests/test_attacks.py). A peer whose window is forgotten keeps a floor (below), so
# the bound costs at worst a late datagram, never a replay.
REPLAY_TOTAL_NONCES = 32768
REPLAY_MAX_WINDOWS = 4096
# Floors of peers whose window was forgotten, in a fixed table indexed by a keyed hash
# of the peer key: 20 bytes a slot (the shared floor, and one key's floor ahead of our
# clock with its 32-bit tag), never evicted, so forgetting a window never makes a
# peer's old datagrams acceptable again.
REPLAY_FLOOR_SLOTS = 65536
BOX_CACHE_PEERS = 4096
# Who pins a peer's boxes and replay window out of that cache (docs/PROTOCOL.md, "5.3"):
# the routing table, or the relay's attached clients (12.4), each within its own bound.
# Bits of one int per key: a peer leaves the pinned tier when neither holds it.
PIN_TABLE = 1
PIN_ATTACHED = 2
# Binds both Ed25519 keys and the direction into each link key; see directional_boxes.
_LINK_KEY_DOMAIN = b"comm-tui link key v2\x00"
# The random part of a nonce, and how much of the CSPRNG's output is read at once.
NONCE_RANDOM_BYTES = NONCE_BYTES - 8
RANDOM_POOL_BYTES = 4096
# Protobuf tags (field number << 3 | 2, length-delimited) of Packet.boxed and .cookie.
_BOXED_TAG = bytes([4 << 3 | 2])
_COOKIE_TAG = bytes([5 << 3 | 2])
# A boxed packet as written (``Codec.read_boxed``): version 2 (field 1, a varint), the
# sender key's tag and length (field 2, 32 bytes); the boxed tag after the key, and
# where the boxed bytes start when their length is one varint byte.
_CANONICAL_HEAD = bytes([1 << 3, PROTOCOL_VERSION, 2 << 3 | 2, PUBLIC_KEY_BYTES])
_BOXED_TAG_BYTE = 4 << 3 | 2
_CANONICAL_BOXED_AT = len(_CANONICAL_HEAD) + PUBLIC_KEY_BYTES + 2


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Every length a datagram can hold, written once.
_VARINTS = tuple(_encode_varint(n) for n in range(MAX_DATAGRAM_BYTES + 1))


def varint(n: int) -> bytes:
    """``n`` (a length) as a protobuf varint."""
    return _VARINTS[n] if n <= MAX_DATAGRAM_BYTES else _encode_varint(n)


# Frame.receipt (field 8) and Receipt.ids (field 1), length-delimited; Frame.client
# (field 20, a varint) set to true.
_RECEIPT_TAG_BYTE = 8 << 3 | 2
_RECEIPT_ID_TAG_BYTE = 1 << 3 | 2
_RECEIPT_TAG = bytes([_RECEIPT_TAG_BYTE])
_RECEIPT_ID_TAG = bytes([_RECEIPT_ID_TAG_BYTE])
# The longest id whose Receipt's length (its tag, its length, the id) is a one-byte varint.
_ONE_BYTE_RECEIPT_ID = 0x7F - 2
CLIENT_FLAG = pb.Frame(client=True).SerializeToString()


def receipt_frame(ids: Collection[bytes]) -> bytes:
    """The serialized ``Frame{receipt: Receipt{ids}}``, as protobuf writes it.

    Written as bytes: one is sent for every item a relay takes, and building it through
    two message objects cost more than boxing it (tests/test_relay_path.py compares).
    """
    if len(ids) == 1:  # one per item taken on the relay path: its four bytes of head
        (item,) = ids
        size = len(item)
        if size <= _ONE_BYTE_RECEIPT_ID:  # every varint one byte (a store key is 33)
            return bytes((_RECEIPT_TAG_BYTE, size + 2, _RECEIPT_ID_TAG_BYTE, size)) + item
    body = b"".join([_RECEIPT_ID_TAG + varint(len(i)) + i for i in ids])
    return _RECEIPT_TAG + varint(len(body)) + body


class Rejected(Exception):
    """A datagram that is dropped; ``reason`` names the statistics counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Decoded(NamedTuple):
    """An accepted datagram: who sent it and what it says.

    ``frame`` is set for boxed (authenticated) datagrams, ``hello`` for the
    cleartext first-contact request, which authenticates nothing. A tuple, not a frozen
    dataclass: one is built per datagram, and a frozen dataclass's ``__init__`` costs
    three ``object.__setattr__`` calls.
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

    def __init__(self, floor_ms: int) -> None:
        self.newest_ms = 0
        self.floor_ms = floor_ms
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


class ReplayGuard:
    """Replay state for every peer, with a global bound and no amnesty on eviction.

    Only authenticated, well-formed frames are recorded (the caller opens and parses
    first), so datagrams from nobody cost no memory. Pinned peers (the routing table's)
    keep their windows, bounded by the table's size and the per-peer cap; everyone
    else's windows are kept in LRU order, bounded in number and, together, in nonces
    (``nonces`` counts those only, so busy table peers never crowd the others out).
    Forgetting a window is O(1) and leaves its peer's newest time (capped at our own
    clock, so a peer cannot push a floor into the future) in a fixed floor table, and
    a new window starts above that floor. A window dated ahead of our clock (a peer's
    clock may be up to MAX_CLOCK_SKEW_S ahead) also leaves its uncapped newest time in
    its slot, for its own key alone (a tag of the hash says whose): under the shared
    floor alone, its datagrams dated between our clock and its newest would be taken
    again. A later key forgotten ahead in the same slot replaces it; the salt keeps
    anyone from aiming at a slot, so that costs ~65,536 forgotten keys, not 4,097.
    """

    def __init__(self) -> None:
        self._pinned: dict[bytes, _ReplayWindow] = {}
        self._windows: OrderedDict[bytes, _ReplayWindow] = OrderedDict()
        self._total = 0
        # Allocated at the first forgetting (1.25 MiB): most codecs never forget anyone.
        self._floors: array[int] | None = None
        self._ahead = array("q")  # per slot: a floor ahead of our clock, ...
        self._ahead_tags = array("I")  # ... for the key with this tag only
        self._salt = os.urandom(16)  # peers cannot aim their keys at someone's slot

    @property
    def nonces(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._pinned) + len(self._windows)

    def pin(self, key: bytes) -> None:
        window = self._windows.pop(key, None)
        if window is not None:
            self._pinned[key] = window
            self._total -= len(window.order)

    def unpin(self, key: bytes, now_ms: int) -> None:
        """``key`` left the routing table: its window rejoins the others (the most recently
        heard of them) and their bounds, which hold again at once: the least recently
        heard are forgotten past them (``now_ms`` caps the floors they leave)."""
        window = self._pinned.pop(key, None)
        if window is not None:
            self._windows[key] = window
            self._total += len(window.order)
            self._bound(now_ms)

    def accept(self, key: bytes, nonce: bytes, sent_ms: int, now_ms: int) -> bool:
        """Record ``nonce`` from ``key``; False if it (or anything that old) was seen."""
        window = self._pinned.get(key)
        if window is not None:  # bounded by the table's size, not counted below
            return window.accept(nonce, sent_ms)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _ReplayWindow(self._floor(key))
        else:
            self._windows.move_to_end(key)
        before = len(window.order)
        accepted = window.accept(nonce, sent_ms)
        self._total += len(window.order) - before
        self._bound(now_ms)
        return accepted

    def _bound(self, now_ms: int) -> None:
        """Forget the least recently heard windows of peers outside the table until they
        are at most REPLAY_MAX_WINDOWS holding at most REPLAY_TOTAL_NONCES nonces
        (docs/PROTOCOL.md, "3.2"); the newest is kept (one peer holds at most
        REPLAY_MAX_NONCES), so its datagram was checked against a whole window."""
        windows = self._windows
        while len(windows) > 1 and (
            self._total > REPLAY_TOTAL_NONCES or len(windows) > REPLAY_MAX_WINDOWS
        ):
            self._forget_oldest(now_ms)

    def _forget_oldest(self, now_ms: int) -> None:
        key, window = self._windows.popitem(last=False)
        self._total -= len(window.order)
        if self._floors is None:
            self._floors = array("q", bytes(8 * REPLAY_FLOOR_SLOTS))
            self._ahead = array("q", bytes(8 * REPLAY_FLOOR_SLOTS))
            self._ahead_tags = array("I", bytes(4 * REPLAY_FLOOR_SLOTS))
        slot, tag = self._slot(key)
        self._floors[slot] = max(self._floors[slot], min(window.newest_ms, now_ms) + 1)
        if window.newest_ms > now_ms:
            self._ahead[slot] = window.newest_ms + 1
            self._ahead_tags[slot] = tag

    def _floor(self, key: bytes) -> int:
        """Where a new window of ``key`` starts: its slot's floor, or its own floor ahead
        of our clock if the slot keeps one for it."""
        if self._floors is None:
            return 0
        slot, tag = self._slot(key)
        floor = self._floors[slot]
        if self._ahead_tags[slot] == tag and self._ahead[slot] > floor:
            return self._ahead[slot]
        return floor

    def _slot(self, key: bytes) -> tuple[int, int]:
        """The floor slot of ``key``, and the tag that names the key within it."""
        digest = hashlib.blake2b(key, key=self._salt, digest_size=8).digest()
        return int.from_bytes(digest[:4], "big") % REPLAY_FLOOR_SLOTS, int.from_bytes(
            digest[4:], "big"
        )


class Codec:
    """Encodes and decodes datagrams for one identity, caching per-peer state.

    The box cache has two tiers: pinned peers (the routing table's and the attached
    clients', set by the node) are never evicted, so a flood of first contacts from
    fresh keys cannot make an established peer pay for, and be refused by, the new-key
    budget again.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._own_key = identity.key  # read per datagram: not through two properties
        self._boxes: OrderedDict[bytes, LinkBoxes] = OrderedDict()
        self._pinned: dict[bytes, LinkBoxes] = {}
        self._pinned_by: dict[bytes, int] = {}  # key -> its PIN_* holders
        self.replay = ReplayGuard()
        # Packet fields 1 and 2 (version, sender key), the same in every boxed packet,
        # and the tag of field 4 (boxed), whose length and bytes follow.
        self._packet_head = (
            pb.Packet(version=PROTOCOL_VERSION, sender_key=identity.key).SerializeToString()
            + _BOXED_TAG
        )
        self._random = b""
        self._random_offset = 0

    def box(self, key: bytes) -> LinkBoxes:
        """The directional boxes with a peer; raises ValueError for an invalid key."""
        pinned = self._pinned.get(key)
        if pinned is not None:
            return pinned
        box = self._boxes.get(key)
        if box is not None:
            self._boxes.move_to_end(key)
            return box
        box = self.identity.directional_boxes(PublicIdentity(key), _LINK_KEY_DOMAIN)
        self._cache(key, box)
        return box

    def _cache(self, key: bytes, box: LinkBoxes) -> None:
        """Keep ``box`` as the most recently used of the cache, within its bound (the least
        recently used out first)."""
        self._boxes[key] = box
        if len(self._boxes) > BOX_CACHE_PEERS:
            self._boxes.popitem(last=False)

    def pin(self, key: bytes, holder: int = PIN_TABLE) -> None:
        """Keep this peer's boxes and replay window whatever newcomers arrive, for
        ``holder`` (``PIN_TABLE`` or ``PIN_ATTACHED``) until it unpins them. Called once a
        datagram of the peer opened (its boxes and window exist), for every datagram of
        a table peer: once pinned by ``holder``, it costs one lookup."""
        held = self._pinned_by.get(key, 0)
        if held & holder:
            return
        self._pinned_by[key] = held | holder
        box = self._boxes.pop(key, None)
        if box is not None:
            self._pinned[key] = box
        self.replay.pin(key)

    def unpin(self, key: bytes, now: float, holder: int = PIN_TABLE) -> None:
        """``holder`` lets this peer go. Unless another holds it, a newcomer again: the
        most recently used of the cache, whose bound still holds (the cache may be full
        of the peers that came while it was pinned), and so of the replay windows
        (``ReplayGuard.unpin``)."""
        held = self._pinned_by.get(key, 0)
        if not held & holder:
            return
        if held != holder:
            self._pinned_by[key] = held & ~holder
            return
        del self._pinned_by[key]
        box = self._pinned.pop(key, None)
        if box is not None:
            self._cache(key, box)
        self.replay.unpin(key, int(now * 1000))

    def peer(self, key: bytes) -> PublicIdentity | None:
        """The peer whose boxes we hold under ``key`` (its address derived once, when its
        boxes were), or None: a key we would have to agree a box with first."""
        boxes = self._pinned.get(key) or self._boxes.get(key)
        return None if boxes is None else boxes.peer

    def encode_frame(
        self, peer_key: bytes, frame: pb.Frame, now: float, *, cookie: bytes = b""
    ) -> bytes:
        return self.seal(peer_key, frame.SerializeToString(), now, cookie=cookie)

    def seal(self, peer_key: bytes, plaintext: bytes, now: float, *, cookie: bytes = b"") -> bytes:
        """A boxed ``Packet`` carrying ``plaintext`` (a serialized ``Frame``) to ``peer_key``.

        The packet is written as bytes, not through a ``pb.Packet``: its head (version,
        sender key) never changes, and building the message object cost as much as the
        box itself on the relay path. The bytes are the ones protobuf writes (fields in
        number order; tests/test_relay_path.py compares them).
        """
        # 16 bytes from the OS CSPRNG for the nonce (docs/PROTOCOL.md, "3.2"), read 4 KiB
        # at a time: one ``os.urandom`` system call per datagram cost more than a tenth
        # of sealing it. The bytes are the same CSPRNG's, each used once.
        offset = self._random_offset
        if offset + NONCE_RANDOM_BYTES > len(self._random):
            self._random = os.urandom(RANDOM_POOL_BYTES)
            offset = 0
        self._random_offset = offset + NONCE_RANDOM_BYTES
        nonce = (
            int(now * 1000).to_bytes(8, "big") + self._random[offset : offset + NONCE_RANDOM_BYTES]
        )
        boxes = self._pinned.get(peer_key) or self.box(peer_key)
        boxed = boxes.send.encrypt(plaintext, nonce)
        size = len(boxed)  # _VARINTS inline: varint() is a call per datagram
        data = self._packet_head + (_VARINTS[size] if size <= MAX_DATAGRAM_BYTES else varint(size))
        data += boxed
        if cookie:
            data += _COOKIE_TAG + varint(len(cookie)) + cookie
        if len(data) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
        return data

    def encode_hello(self, challenge: bytes, *, cookie: bytes = b"") -> bytes:
        """A hello padded so that the boxed Pong answering it is never larger."""
        packet = pb.Packet(
            version=PROTOCOL_VERSION,
            sender_key=self.identity.key,
            hello=pb.Hello(challenge=challenge, padding=bytes(HELLO_PADDING_BYTES)),
        )
        if cookie:
            packet.cookie = cookie
        return packet.SerializeToString()

    @staticmethod
    def encode_cookie_reply(cookie: bytes, echo: bytes) -> bytes:
        """A cleartext cookie for a first contact we would not pay for; smaller than any
        packet that can ask for it, so it reflects nothing. ``echo`` names that packet."""
        return pb.Packet(
            version=PROTOCOL_VERSION, cookie_reply=pb.CookieReply(cookie=cookie, echo=echo)
        ).SerializeToString()

    def decode(self, data: bytes, now: float) -> Decoded:
        """``parse`` then ``open``: for callers that need no admission step in between."""
        return self.open(self.parse(data), now)

    def parse(self, data: bytes) -> pb.Packet:
        """The cleartext envelope, checked for shape; costs no key agreement."""
        return self.parse_packet(data)[0]

    def read_boxed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """The sender key and ``boxed`` of a boxed packet written the one way ``seal`` and
        protobuf write it, read by hand; None for any other bytes, which ``parse_packet``
        reads (and refuses, if it must).

        The canonical layout, fields in number order, each once: version 2 (``08 02``),
        the 32-byte sender key (``12 20`` key), ``boxed`` (``22``, its length as a varint
        of one or two bytes, then the bytes), nothing after it: no cookie. Nearly every
        datagram a relay takes is one, and reading it without a ``Packet`` object is
        about a microsecond less per datagram (bench/RESULTS.md, "fifth session"). What
        is accepted here protobuf reads the same way and ``parse_packet`` accepts (not
        oversized, not our own key); anything else is declined, never refused here
        (tests/test_codec_canonical.py holds both)."""
        size = len(data)
        if size > MAX_DATAGRAM_BYTES or size <= _CANONICAL_BOXED_AT:  # an empty box: declined
            return None
        if data[:4] != _CANONICAL_HEAD or data[36] != _BOXED_TAG_BYTE:
            return None
        length = data[37]
        start = _CANONICAL_BOXED_AT
        if length > 0x7F:
            # Two bytes (128 to 1,161: the datagram's bound). A third would make it at
            # least 16,384, past any datagram: the end check below declines it.
            length = (length & 0x7F) | data[38] << 7
            start += 1
        if start + length != size:
            return None
        key = data[4:36]
        if key == self._own_key:
            return None  # parse_packet names it: own_key
        return key, data[start:]

    def parse_packet(self, data: bytes) -> tuple[pb.Packet, str]:
        """``parse``, with the packet's body kind ("boxed", "hello" or "cookie_reply"),
        read once for the receive path."""
        if len(data) > MAX_DATAGRAM_BYTES:
            raise Rejected("oversized")
        try:
            packet = pb.Packet.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Rejected("malformed") from exc
        if packet.version != PROTOCOL_VERSION:
            raise Rejected("wrong_version")
        body = packet.WhichOneof("body")
        if body == "cookie_reply":
            reply = packet.cookie_reply
            if (
                len(reply.cookie) != COOKIE_BYTES
                or len(reply.echo) != ECHO_BYTES
                or packet.sender_key
            ):
                raise Rejected("malformed")
            return packet, body
        if body not in ("hello", "boxed"):
            raise Rejected("malformed")
        if len(packet.sender_key) != PUBLIC_KEY_BYTES or len(packet.cookie) not in (
            0,
            COOKIE_BYTES,
        ):
            raise Rejected("malformed")
        if packet.sender_key == self._own_key:
            raise Rejected("own_key")
        if body == "hello" and (
            len(packet.hello.challenge) != CHALLENGE_BYTES
            or len(packet.hello.padding) < HELLO_MIN_PADDING_BYTES
        ):
            # An unpadded hello would get an answer larger than itself: a reflector.
            raise Rejected("malformed")
        return packet, body

    def open(self, packet: pb.Packet, now: float) -> Decoded:
        """Authenticate a parsed hello or boxed packet; a cookie reply has nothing to open."""
        key = packet.sender_key
        body = packet.WhichOneof("body")
        if body == "cookie_reply":
            raise Rejected("cookie_reply")
        if body == "hello":
            # The curve point is checked before we answer (parse checked the length).
            if not is_valid_public_key(key):
                raise Rejected("bad_key")
            return Decoded(PublicIdentity(key), None, packet.hello)
        sender, frame, _ = self.open_boxed(key, packet.boxed, now)
        return Decoded(sender, frame, None)

    def open_boxed(
        self, key: bytes, boxed: bytes, now: float
    ) -> tuple[PublicIdentity, pb.Frame, str]:
        """Authenticate and parse a boxed packet's ``boxed`` from ``key``: the sender (the
        object cached with its boxes, so its address is derived once per peer, not once
        per datagram), the frame and its body kind (docs/PROTOCOL.md, "3.2": staleness,
        then the box, then the frame's shape, then the replay window)."""
        if len(boxed) < NONCE_BYTES + 16:
            raise Rejected("malformed")
        nonce = boxed[:NONCE_BYTES]
        sent_ms = int.from_bytes(nonce[:8], "big")
        if abs(sent_ms / 1000 - now) > MAX_CLOCK_SKEW_S:
            raise Rejected("stale")
        try:
            boxes = self._pinned.get(key) or self.box(key)
            plaintext = boxes.receive.decrypt(boxed)
        except ValueError as exc:
            raise Rejected("bad_key") from exc
        except CryptoError as exc:
            raise Rejected("bad_auth") from exc
        try:
            frame = pb.Frame.FromString(plaintext)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise Rejected("malformed") from exc
        body = frame.WhichOneof("body")
        if body is None:
            raise Rejected("malformed")
        # Unknown fields would travel on with anything we relay: a message padded with
        # them to 1,200 bytes could then not be forwarded at all (hops grows by a byte).
        frame.DiscardUnknownFields()
        # Recorded only now: the frame is authentic and well formed.
        if not self.replay.accept(key, nonce, sent_ms, int(now * 1000)):
            raise Rejected("replay")
        return boxes.peer, frame, body
