"""Who may make this node do work, and how much, before they proved anything.

Two rules live here (docs/PROTOCOL.md, "Admission"):

- **Address validation.** A boxed datagram proves which key sent it, not that its
  source address is real: anyone can write a victim's address into the IP header. A
  (key, endpoint) pair is *validated* once a challenge we sent to that endpoint came
  back authenticated by that key, from that endpoint (a Pong to our Ping or Hello, a
  Nodes answer to our FindNode). Until then, what we send to the endpoint is limited
  to ``AMPLIFICATION_FACTOR`` times the bytes it sent us, as QUIC limits a server
  before address validation (RFC 9000, section 8.1). The node additionally keeps
  everything larger than a request (Nodes answers, pushes) for validated pairs and
  inserts only validated pairs into its routing table.
- **Cookies.** When the new-key budget is spent, a packet from a key we have no box
  for gets no key agreement unless it echoes a cookie bound to its source address:
  WireGuard's cookie reply (whitepaper, section 5.4.7). The cookie is a keyed hash of
  the address under a secret that rotates, so it costs us no state, and whoever forges
  source addresses never sees it.

Both are bounded: the tables forget their least recently used entries, which can only
make an honest peer prove its address once more (one round trip), never admit anyone.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

from comm_tui.protocol.routing import Endpoint

AMPLIFICATION_FACTOR = 3
# Unvalidated endpoints whose byte credit we remember, and the most credit one can hold.
CREDIT_ENDPOINTS = 8192
MAX_CREDIT_BYTES = AMPLIFICATION_FACTOR * 64 * 1024
VALIDATED_PAIRS = 16384
COOKIE_BYTES = 16
# A cookie is good for one to two rotations.
COOKIE_ROTATE_S = 120.0


def _endpoint_bytes(endpoint: Endpoint) -> bytes:
    host, port = endpoint
    return host.encode("utf-8", "replace") + b"|" + port.to_bytes(2, "big")


class AddressValidator:
    """Validated (key, endpoint) pairs, and the byte credit of endpoints not yet validated."""

    def __init__(self) -> None:
        self._validated: OrderedDict[tuple[bytes, Endpoint], None] = OrderedDict()
        self._credit: OrderedDict[Endpoint, int] = OrderedDict()

    def received(self, endpoint: Endpoint, size: int) -> None:
        """Count ``size`` bytes that arrived from ``endpoint`` toward what we may send back."""
        credit = self._credit.pop(endpoint, 0)
        self._credit[endpoint] = min(MAX_CREDIT_BYTES, credit + AMPLIFICATION_FACTOR * size)
        if len(self._credit) > CREDIT_ENDPOINTS:
            self._credit.popitem(last=False)

    def is_validated(self, key: bytes, endpoint: Endpoint) -> bool:
        return (key, endpoint) in self._validated

    def validate(self, key: bytes, endpoint: Endpoint) -> None:
        """``key`` answered a challenge we sent to ``endpoint``: it receives there."""
        pair = (key, endpoint)
        self._validated.pop(pair, None)
        self._validated[pair] = None
        if len(self._validated) > VALIDATED_PAIRS:
            self._validated.popitem(last=False)

    def spend(self, endpoint: Endpoint, size: int) -> bool:
        """Take ``size`` bytes of credit for a datagram to an unvalidated endpoint.

        False, taking nothing, when the endpoint has not sent us enough to cover it.
        """
        credit = self._credit.get(endpoint, 0)
        if credit < size:
            return False
        self._credit[endpoint] = credit - size
        return True


class CookieJar:
    """Stateless cookies bound to a source address, under a secret rotated every 2 min."""

    def __init__(self, now: float) -> None:
        self._secret = os.urandom(32)
        self._previous = os.urandom(32)
        self._rotated_at = now

    def cookie(self, endpoint: Endpoint, now: float) -> bytes:
        self._rotate(now)
        return self._mac(self._secret, endpoint)

    def check(self, endpoint: Endpoint, cookie: bytes, now: float) -> bool:
        self._rotate(now)
        return cookie in (self._mac(self._secret, endpoint), self._mac(self._previous, endpoint))

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= COOKIE_ROTATE_S:
            # Two rotations or more since: the previous secret is stale too.
            stale = now - self._rotated_at >= 2 * COOKIE_ROTATE_S
            self._previous = os.urandom(32) if stale else self._secret
            self._secret = os.urandom(32)
            self._rotated_at = now

    @staticmethod
    def _mac(secret: bytes, endpoint: Endpoint) -> bytes:
        data = _endpoint_bytes(endpoint)
        return hashlib.blake2b(data, key=secret, digest_size=COOKIE_BYTES).digest()
