"""In-process admission control for the public browser ingestion endpoint.

Three small guards, each keyed or sized so that memory stays bounded whatever clients send:

- ``TokenBucketLimiter``: requests per client, a small burst refilled every second (a minute's
  allowance arriving at once is exactly what hurt the app).
- ``NewTraceBudget``: new trace ids (each one opens a workflow session) per client per minute.
- ``ConcurrencyGate``: decodes running at once in this process; a non-blocking acquire, so a busy
  endpoint answers at once instead of queueing request threads behind it.

Why in-process: the endpoint must stay cheap without a cache backend; a per-process limit is a
coarse shield against one noisy or hostile client, not an exact quota across gunicorn workers
(with N workers a client gets at most N times the rate). The number of tracked clients is bounded
(least recently seen are forgotten), so a flood of spoofed addresses cannot grow memory. Every
lock is held only for dictionary arithmetic, never across I/O.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["ConcurrencyGate", "NewTraceBudget", "TokenBucketLimiter"]

WINDOW_SECONDS = 60.0


class TokenBucketLimiter:
    """``allow(client)`` spends one token of that client's bucket. Runs on request threads.

    A bucket holds at most ``burst`` tokens and gains ``rate_per_second`` tokens per second, so a
    client can send ``burst`` requests at once and then one every ``1 / rate_per_second`` seconds.
    """

    def __init__(self, *, rate_per_second: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be > 0, got {rate_per_second!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients!r}")
        self.rate_per_second = float(rate_per_second)
        self.capacity = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, stamp)
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, int]:
        """``(allowed, retry_after_seconds)``; ``retry_after`` is 0 when allowed."""
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate_per_second)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                allowed, retry_after = True, 0
            else:
                self._buckets[client] = (tokens, now)
                allowed = False
                retry_after = max(1, math.ceil((1.0 - tokens) / self.rate_per_second))
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return allowed, retry_after

    def __len__(self) -> int:
        return len(self._buckets)


class NewTraceBudget:
    """At most ``per_minute`` new trace ids per client in any 60 s. Runs on request threads.

    A trace id the client offered in the last minute passes again for free (a page's later batches
    continue its traces); one first seen more than a minute ago counts as new again. Memory: at most
    ``max_entries`` remembered trace ids over all clients; past it the least recently active clients
    are forgotten whole (they start over with a full budget).
    """

    def __init__(self, *, per_minute: int, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute!r}")
        if max_entries < per_minute:
            raise ValueError(f"max_entries must be >= per_minute ({per_minute}), got {max_entries!r}")
        self.per_minute = per_minute
        self.max_entries = max_entries
        self._clock = clock
        # client -> {trace id: first seen}, both in least-recent-first order
        self._clients: OrderedDict[str, OrderedDict[bytes, float]] = OrderedDict()
        self._entries = 0
        self._lock = threading.Lock()

    def admit(self, client: str, trace_ids: Iterable[bytes]) -> set[bytes]:
        """The subset of ``trace_ids`` this client may send now; admitting a new one spends budget."""
        now = self._clock()
        admitted: set[bytes] = set()
        with self._lock:
            seen = self._clients.pop(client, None)
            if seen is None:
                seen = OrderedDict()
            horizon = now - WINDOW_SECONDS
            while seen and next(iter(seen.values())) <= horizon:
                seen.popitem(last=False)
                self._entries -= 1
            for trace_id in trace_ids:
                if trace_id in seen or trace_id in admitted:
                    admitted.add(trace_id)
                elif len(seen) < self.per_minute:
                    seen[trace_id] = now
                    self._entries += 1
                    admitted.add(trace_id)
            self._clients[client] = seen
            while self._entries > self.max_entries:
                _, forgotten = self._clients.popitem(last=False)
                self._entries -= len(forgotten)
        return admitted

    @property
    def entries(self) -> int:
        """Trace ids remembered over all clients."""
        return self._entries

    def __len__(self) -> int:
        return len(self._clients)


class ConcurrencyGate:
    """At most ``limit`` holders at once; ``try_enter()`` never waits. Runs on request threads.

    >>> gate = ConcurrencyGate(1)
    >>> gate.try_enter(), gate.try_enter()
    (True, False)
    >>> gate.leave()
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_enter(self) -> bool:
        with self._lock:
            if self._in_use >= self.limit:
                return False
            self._in_use += 1
            return True

    def leave(self) -> None:
        with self._lock:
            if self._in_use == 0:
                raise ValueError("leave() without a matching try_enter()")
            self._in_use -= 1
