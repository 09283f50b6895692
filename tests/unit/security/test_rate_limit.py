"""Token buckets: burst, steady rate, time to the next token, separate clients."""

from __future__ import annotations

import pytest

from care_serve.security.rate_limit import RateLimiter, default_burst


def test_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(burst=3)
    assert [limiter.acquire("a", 2.0, now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a", 2.0, now=10.0) == pytest.approx(0.5)
    assert limiter.acquire("a", 2.0, now=10.5) == 0.0  # one token refilled
    assert limiter.acquire("a", 2.0, now=10.5) == pytest.approx(0.5)
    assert limiter.acquire("b", 2.0, now=10.5) == 0.0  # its own bucket


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    limiter = RateLimiter(burst=2)
    limiter.acquire("a", 1.0, now=0.0)
    taken = [limiter.acquire("a", 1.0, now=1000.0) for _ in range(3)]
    assert taken[:2] == [0.0, 0.0] and taken[2] > 0


def test_the_default_burst_is_a_second_of_the_rate() -> None:
    assert default_burst(0.01) == 1
    assert default_burst(2.5) == 3
    limiter = RateLimiter()
    assert [limiter.acquire("a", 2.5, now=0.0) > 0 for _ in range(4)] == [False] * 3 + [True]


def test_old_clients_are_forgotten_past_the_limit() -> None:
    limiter = RateLimiter(burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.acquire(client, 0.001, now=0.0)
    assert limiter.acquire("a", 0.001, now=0.0) == 0.0  # "a" was dropped: a fresh bucket
    assert limiter.acquire("c", 0.001, now=0.0) > 0
