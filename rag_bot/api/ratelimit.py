"""Per-key rate limit: a token bucket of `rate_per_minute` requests, refilled continuously.

In-process: each replica counts only the requests it serves, so N replicas behind a load balancer
allow up to N times the configured rate. Put the limit in the load balancer (or a shared store such
as Redis) when that matters; for one or two replicas this is the simple, dependency-free choice.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`check(key, rate)` -> 0 when the request may go ahead, else the seconds until it may."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, rate_per_minute: int) -> int:
        """Take one request from `key`'s bucket; returns the whole seconds to wait (Retry-After) or 0."""
        now = self._clock()
        per_second = rate_per_minute / 60.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(rate_per_minute), now)
            bucket.tokens = min(float(rate_per_minute), bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0
            return max(1, math.ceil((1.0 - bucket.tokens) / per_second))
