"""The token buckets every rate rule of the node is built on (``protocol/ratelimit.py``).

The datagram, per-key, new-key, store and probe limits all count with these two classes,
so each property here is a property of all of them: a bucket refills at its rate, never
beyond its burst, gives nothing for a clock that steps back, and a limiter's table of
keys is bounded, forgetting the least recently used key first. Mutation testing
(bench/MUTATION.md) found each line of this module reached only through the node, where a
changed refill or eviction order went unnoticed.
"""

from __future__ import annotations

from comm_tui.protocol.ratelimit import RateLimiter, TokenBucket


def drain(bucket: TokenBucket, now: float) -> int:
    """Take tokens at ``now`` until refused; how many were given."""
    taken = 0
    while bucket.take(now):
        taken += 1
        assert taken < 1000, "a bucket that never runs dry"
    return taken


def test_a_full_bucket_gives_its_burst_then_refuses() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3.0, tokens=3.0, updated=0.0)
    assert drain(bucket, 0.0) == 3
    assert not bucket.take(0.0)


def test_a_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=10.0, tokens=0.0, updated=0.0)
    assert not bucket.take(0.0)  # no time passed: nothing to give
    assert drain(bucket, 1.5) == 3  # 1.5 s at 2 per second


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(rate_per_s=5.0, burst=2.0, tokens=0.0, updated=0.0)
    assert drain(bucket, 3600.0) == 2


def test_the_last_whole_token_is_given() -> None:
    """Exactly the cost in the bucket is enough (``tokens < cost`` refuses, not ``<=``)."""
    bucket = TokenBucket(rate_per_s=0.0, burst=4.0, tokens=2.0, updated=0.0)
    assert bucket.take(0.0, cost=2.0)
    assert bucket.tokens == 0.0
    assert not bucket.take(0.0, cost=0.5)


def test_a_clock_that_steps_back_gives_nothing_and_takes_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2.0, tokens=2.0, updated=100.0)
    assert bucket.take(50.0)  # the step back costs no tokens
    assert bucket.take(50.0)
    assert not bucket.take(50.0)
    assert not bucket.take(50.5)  # half a token since the step back
    assert bucket.take(51.0)


def test_a_take_costs_one_token_unless_told() -> None:
    bucket = TokenBucket(rate_per_s=0.0, burst=3.0, tokens=3.0, updated=0.0)
    assert bucket.take(0.0)
    assert bucket.tokens == 2.0
    assert not bucket.take(0.0, cost=2.5)
    assert bucket.tokens == 2.0  # a refused take spends nothing


def test_a_limiter_gives_each_new_key_a_full_bucket_of_its_own() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=2.0)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)  # another key's spending is not ours
    assert not limiter.allow("a", 0.5)
    assert limiter.allow("a", 1.0)  # refilled at the limiter's rate


def test_a_limiter_charges_the_cost_asked() -> None:
    limiter = RateLimiter(rate_per_s=0.0, burst=10.0)
    assert limiter.allow("a", 0.0, cost=7.0)
    assert not limiter.allow("a", 0.0, cost=4.0)
    assert limiter.allow("a", 0.0, cost=3.0)


def test_a_limiter_keeps_at_most_max_keys_and_forgets_the_least_recent() -> None:
    """Forgotten, a key starts over with a full bucket: that is how a dropped key shows."""
    limiter = RateLimiter(rate_per_s=0.0, burst=1.0, max_keys=2)
    assert limiter.allow("old", 0.0)
    assert limiter.allow("recent", 0.0)
    # Both kept at the bound: neither is given a second token.
    assert not limiter.allow("old", 0.0)  # and "old" is now the most recently used
    assert not limiter.allow("recent", 0.0)
    assert not limiter.allow("old", 0.0)
    assert limiter.allow("new", 0.0)  # a third key: "recent" was least recently used
    assert limiter.allow("recent", 0.0)  # forgotten, so full again
    assert not limiter.allow("new", 0.0)  # "new" was kept (the oldest went, not it)


def test_a_limiter_is_bounded_by_default() -> None:
    """The default bound (8192 keys) holds: the first key is forgotten after 8192 others."""
    limiter = RateLimiter(rate_per_s=0.0, burst=1.0)
    assert limiter.allow(-1, 0.0)
    for key in range(8191):
        assert limiter.allow(key, 0.0)
    assert not limiter.allow(-1, 0.0)  # 8192 keys: all kept, -1 most recent again
    for key in range(8191, 8191 + 8192):
        limiter.allow(key, 0.0)
    assert not limiter.allow(8191, 0.0)  # kept: among the newest 8192
    assert limiter.allow(-1, 0.0)  # forgotten
