"""Token buckets, keyed and bounded, driven by the caller's clock."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> bool:
        # Refill for the time since the last take (none if the clock went back), at most
        # to the burst; every datagram takes from one, so no min()/max() calls.
        tokens = self.tokens
        elapsed = now - self.updated
        if elapsed > 0.0:
            tokens += elapsed * self.rate_per_s
        if tokens > self.burst:
            tokens = self.burst
        self.updated = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True


class RateLimiter:
    """One token bucket per key; the least recently used keys are forgotten.

    A forgotten key starts again with a full bucket, so the bound on keys must be
    large enough that an attacker cannot cycle through it faster than the rate.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 8192) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)
