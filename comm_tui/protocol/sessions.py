"""Sessions: how letters are sealed and opened (docs/PROTOCOL.md, "Letters and sealing").

Each contact pair runs Double Ratchet sessions (``crypto/ratchet.py``) started with X3DH
(``crypto/x3dh.py``). One ratchet message key per **text**: every part of a text carries
the same header and is encrypted under that key with its part index as nonce, so parts
may arrive in any order or twice, and the state changes once per text.

Opening a part is a pure *peek*; ``commit`` changes the state once the whole text is
there, and the node persists that change in the same transaction as the history row.
The envelope (below) has one fixed size whatever it carries, and travels inside a
SealedBox to the recipient's identity key: relays see an opaque blob.

Envelope (ENVELOPE_BYTES), all integers big-endian::

    0    version u8 (= 2)
    1    flags u8: bit 0 INIT (init fields and signature valid), bit 1 HANDSHAKE
    2    sender key (Ed25519, 32)
    34   session id: the initiator's X3DH ephemeral key (32)
    66   signed prekey id u32 (0 = the fallback: the identity key)      } INIT only,
    70   one-time prekey id u32 (0 = none)                                } else zero
    74   ratchet header: ratchet key 32, PN u32, N u32 (40)
    114  part u16 (the AEAD nonce is this, as 24 bytes big-endian)
    116  ciphertext: XChaCha20-Poly1305 of the padded letter (LETTER_BYTES + 16)
    end-64  signature (64): INIT only, else zero

The AEAD's associated data is a domain, the recipient key and bytes 0..116. An INIT
envelope is signed by its author over a domain, the recipient key and all but the
signature, which is what rules out key-compromise impersonation (``crypto/x3dh.py``).
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict
from dataclasses import dataclass

from nacl.bindings import crypto_box_SEALBYTES
from nacl.exceptions import CryptoError
from nacl.public import SealedBox

from comm_tui.crypto.identity import Identity, PublicIdentity, is_valid_public_key
from comm_tui.crypto.prekeys import PrekeyStore, PublicBundle
from comm_tui.crypto.ratchet import (
    AEAD_TAG_BYTES,
    HEADER_BYTES,
    MAX_SKIP,
    Header,
    RatchetError,
    RatchetState,
    aead_decrypt,
    aead_encrypt,
)
from comm_tui.crypto.x3dh import X3DHError, initiate, respond, sign_init, verify_init
from comm_tui.protocol.letters import LETTER_BYTES
from comm_tui.protocol.ratelimit import RateLimiter
from comm_tui.protocol.relay_store import wide_network_of

ENVELOPE_VERSION = 2
FLAG_INIT = 0x01
FLAG_HANDSHAKE = 0x02
_KNOWN_FLAGS = FLAG_INIT | FLAG_HANDSHAKE
SIGNATURE_BYTES = 64
_AD_END = 116
ENVELOPE_BYTES = _AD_END + LETTER_BYTES + AEAD_TAG_BYTES + SIGNATURE_BYTES
# The outer SealedBox adds an ephemeral key and a MAC.
SEALED_BYTES = ENVELOPE_BYTES + crypto_box_SEALBYTES
_SESSION_FIELDS = ">BIIQQI"
_SESSION_FIXED = 32 + struct.calcsize(_SESSION_FIELDS)
_AD_DOMAIN = b"comm-tui letter v2\x00"
# Sessions kept per peer (the least recently active non-active one goes first), peers
# with sessions, and skipped message keys across all sessions of the node.
SESSIONS_PER_PEER = 4
SESSION_PEERS_MAX = 4096
SKIPPED_KEYS_MAX = 50_000
# Past SKIPPED_KEYS_MAX, keys are given up until this far below it (1/64 of it): the peer
# giving them up then rewrites its sessions (up to ~150 KB) once per that many new
# skipped keys, not at every text that skips one (red6).
SKIPPED_KEYS_SLACK_DIVISOR = 64
# Peeked message keys remembered (for the other parts of the same texts).
_PEEKED_MAX = 256
# Skip budgets (docs/PROTOCOL.md, "Letters and sealing"): the keys a letter's header makes
# us skip are charged, before the first is derived, to its author key, to the network of
# origin of the hop that handed it to us and to that network's wide network (keys are
# free; a /32 holds 65,536 /48s). Before them, a letter that does not open made us derive
# up to 2,000 keys, again at every copy (red5 finding 1: 7.6 ms a datagram). Honest skips
# are the texts lost or overtaken: rare and few. A header may ask for at most
# 2 * MAX_SKIP (the rest of our chain and the start of its new one), which every burst
# admits at once. A key costs ~3 us (two HMACs), so a network's rate is ~0.3 % of a core,
# a wide network's ~0.6 %; an author's refills its burst in 200 s.
SKIP_KEYS_PER_KEY_PER_S = 10.0
SKIP_KEYS_PER_KEY_BURST = 2 * MAX_SKIP
SKIP_KEYS_PER_NETWORK_PER_S = 1_000.0
SKIP_KEYS_PER_NETWORK_BURST = 4 * MAX_SKIP
SKIP_KEYS_PER_WIDE_NETWORK_PER_S = 2_000.0
SKIP_KEYS_PER_WIDE_NETWORK_BURST = 8 * MAX_SKIP
# What commits a peeked part: session id, ratchet header, signed and one-time prekey ids.
CommitToken = tuple[bytes, bytes, int, int]


class SessionError(Exception):
    """A sealed letter we cannot open; ``reason`` is its stats.reject reason."""

    def __init__(self, reason: str, sender: PublicIdentity | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set when the envelope named a valid sender but no session of ours opens it:
        # the session is lost (docs/PROTOCOL.md, "Session reset").
        self.lost_with = sender


@dataclass
class Session:
    """One Double Ratchet session with a peer, named by the initiator's ephemeral key."""

    session_id: bytes
    state: RatchetState
    # While we initiated it and have not yet opened a letter of the peer in it, every
    # letter repeats the init fields: (signed prekey id, one-time prekey id).
    pending_init: tuple[int, int] | None
    # When we first opened a letter of the peer in it (ms; 0 = not yet).
    confirmed_ms: int
    # When we last opened a letter in it, or created it as initiator: the most recent
    # one is where we send (docs/PROTOCOL.md, "Sessions per peer").
    active_at: float

    def serialize(self) -> bytes:
        """id 32 | flags u8 (bit 0: pending init) | spk id u32 | opk id u32 | confirmed ms
        u64 | active at ms u64 | state length u32 | ratchet state (crypto/ratchet.py)."""
        init = self.pending_init or (0, 0)
        flags = int(self.pending_init is not None)
        state = self.state.serialize()
        active_ms = int(self.active_at * 1000)
        fixed = struct.pack(_SESSION_FIELDS, flags, *init, self.confirmed_ms, active_ms, len(state))
        return self.session_id + fixed + state

    @classmethod
    def deserialize(cls, data: bytes) -> tuple[Session, int]:
        """A session from the start of ``data``, and how many bytes it took."""
        if len(data) < _SESSION_FIXED:
            raise RatchetError("truncated session")
        flags, spk, opk, confirmed_ms, active_ms, size = struct.unpack(
            _SESSION_FIELDS, data[32:_SESSION_FIXED]
        )
        end = _SESSION_FIXED + size
        if len(data) < end:
            raise RatchetError("truncated session")
        state = RatchetState.deserialize(data[_SESSION_FIXED:end])
        pending = (spk, opk) if flags & 1 else None
        return cls(data[:32], state, pending, confirmed_ms, active_ms / 1000), end


def serialize_sessions(sessions: list[Session]) -> bytes:
    """A peer's sessions: their count (u8), then each session."""
    return bytes([len(sessions)]) + b"".join(s.serialize() for s in sessions)


def deserialize_sessions(data: bytes) -> list[Session]:
    if not data:
        raise RatchetError("empty session list")
    sessions, pos = [], 1
    for _ in range(data[0]):
        session, used = Session.deserialize(data[pos:])
        sessions.append(session)
        pos += used
    if pos != len(data):
        raise RatchetError("trailing bytes in session list")
    return sessions


@dataclass(frozen=True)
class Opened:
    """A part that opened: its author, its letter, and what commits it."""

    author: PublicIdentity
    letter: bytes
    handshake: bool
    token: CommitToken


class SessionBook:
    """All our sessions, bounded per peer and per node; seals and opens letters."""

    def __init__(self, identity: Identity, prekeys: PrekeyStore) -> None:
        self.identity = identity
        self.prekeys = prekeys
        self._unsealer = SealedBox(identity.box_key)
        self.peers: OrderedDict[bytes, list[Session]] = OrderedDict()
        # The user's contacts (``Node.set_contacts``): their sessions are the last to go.
        self.contacts: frozenset[bytes] = frozenset()
        # Skipped keys held, by peer and in all, kept as the sessions change (``_recount``):
        # summing every session's at every commit cost O(sessions) a text received.
        self._skipped: dict[bytes, int] = {}
        self._skipped_total = 0
        # (-skipped keys held, peer) at each recount: a lazy max-heap, whose entries are
        # current when they match ``_skipped`` (``_fattest_peer``); rebuilt when stale
        # ones outnumber the rest, so the peer holding the most is found without a scan.
        self._by_skipped: list[tuple[int, bytes]] = []
        # Peers whose sessions changed since the node last took the changes (None: gone).
        self.changed: dict[bytes, bytes | None] = {}
        # Message keys peeked since the last state change, by (author, session id, header):
        # the parts of one text share them, and a peek may have to derive up to MAX_SKIP
        # keys. Any change of state empties it, so it never answers for another state.
        self._peeked: OrderedDict[tuple[bytes, bytes, bytes], bytes] = OrderedDict()
        self.peek_hits = 0
        self._skips_by_key = RateLimiter(SKIP_KEYS_PER_KEY_PER_S, SKIP_KEYS_PER_KEY_BURST)
        self._skips_by_network = RateLimiter(
            SKIP_KEYS_PER_NETWORK_PER_S, SKIP_KEYS_PER_NETWORK_BURST
        )
        self._skips_by_wide_network = RateLimiter(
            SKIP_KEYS_PER_WIDE_NETWORK_PER_S, SKIP_KEYS_PER_WIDE_NETWORK_BURST
        )

    # ------------------------------------------------------------------ sending

    def active(self, peer_key: bytes) -> Session | None:
        sessions = self.peers.get(peer_key)
        if not sessions:
            return None
        return max(sessions, key=lambda s: s.active_at)

    def start_session(self, peer: PublicIdentity, bundle: PublicBundle | None, now: float) -> None:
        """Initiate a new session to ``peer`` (X3DH), which becomes the one we send in."""
        start = initiate(self.identity, peer, bundle)
        state = RatchetState.initiator(start.sk, start.their_ratchet_key)
        session = Session(
            start.ephemeral_public,
            state,
            (start.signed_prekey_id, start.one_time_prekey_id),
            confirmed_ms=0,
            active_at=now,
        )
        self._add(peer.key, session)

    def seal_text(
        self,
        recipient: PublicIdentity,
        letters: list[bytes],
        bundle: PublicBundle | None,
        now: float,
        *,
        handshake: bool = False,
    ) -> list[bytes]:
        """Seal the parts of one text (one ratchet step); starts a session if we have none.

        Raises X3DHError if the recipient's bundle holds unusable keys.
        """
        session = self.active(recipient.key)
        if session is None or handshake:
            self.start_session(recipient, bundle, now)
            session = self.active(recipient.key)
            assert session is not None
        header, mk = session.state.encrypt_step()
        flags = FLAG_HANDSHAKE if handshake else 0
        spk = opk = 0
        if session.pending_init is not None:
            flags |= FLAG_INIT
            spk, opk = session.pending_init
        sealed = []
        for part, letter in enumerate(letters):
            head = (
                bytes([ENVELOPE_VERSION, flags])
                + self.identity.key
                + session.session_id
                + struct.pack(">II", spk, opk)
                + header.encode()
                + struct.pack(">H", part)
            )
            body = head + aead_encrypt(mk, part, letter, _ad(recipient.key, head))
            signature = (
                sign_init(self.identity, recipient.key, body)
                if flags & FLAG_INIT
                else bytes(SIGNATURE_BYTES)
            )
            sealed.append(bytes(SealedBox(recipient.box_key).encrypt(body + signature)))
        self._touch(recipient.key)
        return sealed

    # ------------------------------------------------------------------ receiving

    def open(self, sealed: bytes, now: float, origin: str) -> Opened:
        """Open one part without changing any state (peek); raises SessionError.

        ``origin``: the network of origin of the hop that handed it to us, charged for
        the keys its header makes us skip (``skip_rate``, ``_charge_skips``).
        """
        try:
            envelope = self._unsealer.decrypt(sealed)
        except (CryptoError, ValueError) as exc:
            raise SessionError("bad_seal") from exc
        if len(envelope) != ENVELOPE_BYTES:
            raise SessionError("bad_envelope")
        version, flags = envelope[0], envelope[1]
        sender_key, sid = envelope[2:34], envelope[34:66]
        spk, opk = struct.unpack(">II", envelope[66:74])
        header = Header.decode(envelope[74 : 74 + HEADER_BYTES])
        (part,) = struct.unpack(">H", envelope[114:116])
        body, signature = envelope[:-SIGNATURE_BYTES], envelope[-SIGNATURE_BYTES:]
        if version != ENVELOPE_VERSION or flags & ~_KNOWN_FLAGS:
            raise SessionError("bad_envelope")
        if sender_key == self.identity.key or not is_valid_public_key(sender_key):
            raise SessionError("bad_envelope")
        sender = PublicIdentity(sender_key)
        init = bool(flags & FLAG_INIT)
        if init:
            if not verify_init(sender, self.identity.key, body, signature):
                raise SessionError("bad_signature")
        elif any(signature) or spk or opk:
            raise SessionError("bad_envelope")
        header_bytes = envelope[74 : 74 + HEADER_BYTES]
        mk = self._peeked.get((sender_key, sid, header_bytes))
        session = None if mk is not None else self._find(sender_key, sid)
        if mk is not None:
            self.peek_hits += 1
        elif session is None:
            if not init:
                raise SessionError("no_session", sender)
            try:
                sk, pair = respond(self.identity, self.prekeys, sender, sid, spk, opk)
            except X3DHError as exc:
                raise SessionError("no_session", sender) from exc
            state = RatchetState.responder(sk, pair)
            mk = self._peek(sender_key, sid, state, header, now, origin)
        else:
            mk = self._peek(sender_key, sid, session.state, header, now, origin)
        try:
            letter = aead_decrypt(mk, part, body[_AD_END:], _ad(self.identity.key, body[:_AD_END]))
        except RatchetError as exc:
            raise SessionError("no_session", sender) from exc
        token = (sid, header.encode(), spk, opk)
        return Opened(sender, letter, bool(flags & FLAG_HANDSHAKE), token)

    def commit(
        self,
        author: PublicIdentity,
        tokens: list[CommitToken],
        now: float,
        *,
        sent_ms: int,
        handshake: bool,
    ) -> bool:
        """Commit what the parts of one text peeked; True if it re-established a session.

        Each distinct header is committed once (all parts of a text share one). A commit
        that no longer applies (the session or prekey went in between) is skipped: the
        text was authenticated when its parts were opened.

        docs/PROTOCOL.md, "Session reset": a new session re-establishes a lost one when it
        comes in a handshake (the peer could not open our letters), or when the peer wrote
        its first letter after we had confirmed a session with it. A session the peer
        started before it knew of ours (both sides starting at once) is no reset.
        """
        reestablished = False
        for sid, header_bytes, spk, opk in dict.fromkeys(tokens):
            header = Header.decode(header_bytes)
            session = self._find(author.key, sid)
            if session is None:
                try:
                    sk, pair = respond(self.identity, self.prekeys, author, sid, spk, opk)
                except X3DHError:
                    continue
                sessions = self.peers.get(author.key, [])
                confirmed = [s.confirmed_ms for s in sessions if s.confirmed_ms]
                reestablished |= bool(confirmed) and (handshake or sent_ms > min(confirmed))
                session = Session(sid, RatchetState.responder(sk, pair), None, 0, now)
                self._add(author.key, session)
                self.prekeys.consume_one_time(opk)
            try:
                session.state.commit(header, now)
            except RatchetError:
                continue
            session.confirmed_ms = session.confirmed_ms or int(now * 1000)
            session.pending_init = None
            session.active_at = now
            self._touch(author.key)
        self._bound_skipped()
        return reestablished

    def _peek(
        self,
        sender_key: bytes,
        sid: bytes,
        state: RatchetState,
        header: Header,
        now: float,
        origin: str,
    ) -> bytes:
        try:
            skip = state.skip_work(header)
            if skip:
                self._charge_skips(sender_key, origin, skip, now)
            mk = state.peek(header, now)
        except RatchetError as exc:
            raise SessionError("no_session", PublicIdentity(sender_key)) from exc
        self._peeked[(sender_key, sid, header.encode())] = mk
        while len(self._peeked) > _PEEKED_MAX:
            self._peeked.popitem(last=False)
        return mk

    def _charge_skips(self, sender_key: bytes, origin: str, keys: int, now: float) -> None:
        """Charge the keys a header makes us skip to the skip budgets, before any is
        derived; past one, ``skip_rate`` (naming nobody: no session is lost, and the
        author's relays retry later). Author first: a key past its own budget spends
        nothing of its network's. The author is unauthenticated in a letter that does not
        open, but only the two sides of a session know its id, so it charges itself."""
        if not (
            self._skips_by_key.allow(sender_key, now, keys)
            and self._skips_by_network.allow(origin, now, keys)
            and self._skips_by_wide_network.allow(wide_network_of(origin), now, keys)
        ):
            raise SessionError("skip_rate")

    # ------------------------------------------------------------------ upkeep

    def expire(self, now: float) -> None:
        for key, sessions in self.peers.items():
            if any([s.state.expire(now) for s in sessions]):
                self._peeked.clear()
                self.changed[key] = serialize_sessions(sessions)
                self._recount(key)

    def restore(self, peer_key: bytes, blob: bytes) -> None:
        """Load one peer's persisted sessions (raises RatchetError if damaged)."""
        self._peeked.clear()
        self.peers[peer_key] = deserialize_sessions(blob)[:SESSIONS_PER_PEER]
        self._recount(peer_key)

    def take_changes(self) -> dict[bytes, bytes | None]:
        changed, self.changed = self.changed, {}
        return changed

    def _find(self, peer_key: bytes, sid: bytes) -> Session | None:
        for session in self.peers.get(peer_key, ()):
            if session.session_id == sid:
                return session
        return None

    def _add(self, peer_key: bytes, session: Session) -> None:
        sessions = self.peers.setdefault(peer_key, [])
        sessions.append(session)
        if len(sessions) > SESSIONS_PER_PEER:
            sessions.remove(min(sessions, key=lambda s: s.active_at))
        self._touch(peer_key)
        while len(self.peers) > SESSION_PEERS_MAX:
            # Keys are free: a flood of texts from fresh keys must not evict the sessions
            # of our contacts (a contact who only writes to us lost its session, and its
            # next texts waited for a rate-limited session reset, red5) nor of peers we
            # write to. So strangers we never wrote to go first, then other strangers, the
            # least recent first (docs/PROTOCOL.md, "7.1").
            peers, contacts = self.peers, self.contacts
            gone = next(
                (k for k, v in peers.items() if k not in contacts and not _wrote_in_any(v)),
                None,
            )
            if gone is None:
                gone = next((k for k in peers if k not in contacts), next(iter(peers)))
            del peers[gone]
            self.changed[gone] = None
            self._recount(gone)

    def _touch(self, peer_key: bytes) -> None:
        self._peeked.clear()
        self.peers.move_to_end(peer_key)
        self.changed[peer_key] = serialize_sessions(self.peers[peer_key])
        self._recount(peer_key)

    def _recount(self, peer_key: bytes) -> None:
        """Take the skipped keys of ``peer_key``'s sessions (none if gone) into the totals."""
        held = sum(len(s.state.skipped) for s in self.peers.get(peer_key, ()))
        self._skipped_total += held - self._skipped.pop(peer_key, 0)
        if held:
            self._skipped[peer_key] = held
            heapq.heappush(self._by_skipped, (-held, peer_key))
            if len(self._by_skipped) > 2 * len(self._skipped) + 64:
                self._by_skipped = [(-n, key) for key, n in self._skipped.items()]
                heapq.heapify(self._by_skipped)

    def _fattest_peer(self) -> bytes:
        """The peer whose sessions hold the most skipped keys (some must hold any)."""
        heap = self._by_skipped
        while -heap[0][0] != self._skipped.get(heap[0][1]):
            heapq.heappop(heap)  # stale: that peer's count changed since
        return heap[0][1]

    def _bound_skipped(self) -> None:
        """The node-wide bound: past SKIPPED_KEYS_MAX, the peer holding the most skipped
        keys gives up the oldest of its session holding the most, down to a slack below
        the bound, then the next (docs/PROTOCOL.md, "7.1")."""
        if self._skipped_total <= SKIPPED_KEYS_MAX:
            return
        target = SKIPPED_KEYS_MAX - SKIPPED_KEYS_MAX // SKIPPED_KEYS_SLACK_DIVISOR
        while self._skipped_total > target:
            key = self._fattest_peer()
            fattest = max(self.peers[key], key=lambda session: len(session.state.skipped))
            excess = min(self._skipped_total - target, len(fattest.state.skipped))
            self._peeked.clear()
            for _ in range(excess):
                fattest.state.drop_oldest_skipped()
            self.changed[key] = serialize_sessions(self.peers[key])
            self._recount(key)


def _wrote_in_any(sessions: list[Session]) -> bool:
    """Did we seal anything in one of these sessions (we started it, or sent in it)?"""
    return any(s.pending_init is not None or s.state.ns > 0 or s.state.pn > 0 for s in sessions)


def _ad(recipient_key: bytes, head: bytes) -> bytes:
    return _AD_DOMAIN + recipient_key + head
