"""Token buckets per client: a steady rate with a burst allowance.

Each client (an API key's name, or an address when keys are off) has a bucket of
``burst`` tokens refilled at ``rate`` per second; a request takes one token or,
when the bucket is empty, is refused with the time until the next token.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

__all__ = ["RateLimiter", "TokenBucket", "default_burst"]


def default_burst(rate: float) -> int:
    """The burst when none is configured: one second's worth, at least 1."""
    return max(1, math.ceil(rate))


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by client; the least recently used are forgotten past ``max_clients``."""

    def __init__(self, burst: int | None = None, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, client: str, rate: float, now: float | None = None) -> float:
        """Take a token of ``client`` (at ``rate``/s): 0.0, or seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        burst = self.burst or default_burst(rate)
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None or bucket.rate != rate or bucket.burst != burst:
                bucket = TokenBucket(rate, burst, now)
                self._buckets[client] = bucket
                if len(self._buckets) > self.max_clients:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(client)
            return bucket.take(now)
