"""A small in-process token bucket per client, for the public browser ingestion endpoint.

Why in-process: the endpoint must stay cheap without a cache backend; a per-process limit is a
coarse shield against one noisy or hostile client, not an exact quota across gunicorn workers
(with N workers a client gets at most N times the rate). The number of tracked clients is bounded
(least recently seen are forgotten), so a flood of spoofed addresses cannot grow memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter:
    """``allow(client)`` spends one token of that client's bucket. Runs on request threads.

    The lock is held only for dictionary arithmetic, never across I/O.
    """

    def __init__(self, *, rate_per_minute: int, burst: int | None = None, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_minute < 1:
            raise ValueError(f"rate_per_minute must be >= 1, got {rate_per_minute!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        self.rate_per_minute = int(rate_per_minute)
        self.capacity = float(burst if burst is not None else rate_per_minute)
        self.max_clients = max_clients
        self._refill_per_second = self.rate_per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, stamp)
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, int]:
        """``(allowed, retry_after_seconds)``; ``retry_after`` is 0 when allowed."""
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self._refill_per_second)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                allowed, retry_after = True, 0
            else:
                self._buckets[client] = (tokens, now)
                allowed = False
                retry_after = max(1, math.ceil((1.0 - tokens) / self._refill_per_second))
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return allowed, retry_after

    def __len__(self) -> int:
        return len(self._buckets)
