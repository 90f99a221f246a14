"""Sliding event/bad-event windows behind the ratio metrics (API error ratio, cache hit ratio)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW_SECONDS = 60


class SlidingWindow:
    """Event and "bad event" counts over the last ``seconds``, in one-second buckets.

    ``add`` runs on the derive thread: O(1), holding a lock only for a few integer updates (never
    across I/O). ``totals`` runs on the monitor thread. A forked child builds new windows
    (``ThresholdEvaluator``), so a lock held by the parent at fork time is never inherited in use.
    """

    def __init__(self, seconds: int = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds < 1:
            raise ValueError(f"window must be >= 1 second, got {seconds!r}")
        self.seconds = seconds
        self._clock = clock
        self._stamp = [-1] * seconds
        self._total = [0] * seconds
        self._bad = [0] * seconds
        self._lock = threading.Lock()

    def add(self, bad: bool) -> None:
        second = int(self._clock())
        index = second % self.seconds
        with self._lock:
            if self._stamp[index] != second:
                self._stamp[index] = second
                self._total[index] = 0
                self._bad[index] = 0
            self._total[index] += 1
            if bad:
                self._bad[index] += 1

    def totals(self) -> tuple[int, int]:
        """(events, bad events) in the window."""
        oldest = int(self._clock()) - self.seconds
        total = bad = 0
        with self._lock:
            for stamp, t, b in zip(self._stamp, self._total, self._bad, strict=True):
                if stamp > oldest:
                    total += t
                    bad += b
        return total, bad
