"""How e2e-otel's background threads share the interpreter lock with request threads.

A thread that runs Python without blocking keeps the GIL until the interpreter forces a switch,
after ``sys.getswitchinterval()`` (5 ms by default). A request thread coming back from a database
call must then wait that long for the lock, on every call. The derive and record writer threads
therefore call a ``Pacer`` between small units of work: after each ``slice_seconds`` of work it
sleeps ``pause_seconds``, which releases the lock and lets a waiting request thread in at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PAUSE_SECONDS", "SLICE_SECONDS", "Pacer"]

SLICE_SECONDS = 0.001
PAUSE_SECONDS = 0.00005


class Pacer:
    """``pacer()`` between units of work; one per thread (it keeps that thread's slice)."""

    __slots__ = ("_clock", "_pause", "_sleep", "_slice", "_yield_at")

    def __init__(self, slice_seconds: float = SLICE_SECONDS, pause_seconds: float = PAUSE_SECONDS, *,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if slice_seconds <= 0 or pause_seconds < 0:
            raise ValueError(f"slice must be positive and pause not negative, got {slice_seconds!r}, {pause_seconds!r}")
        self._slice = slice_seconds
        self._pause = pause_seconds
        self._clock = clock
        self._sleep = sleep
        self._yield_at = 0.0

    def __call__(self) -> None:
        if self._clock() >= self._yield_at:
            self._sleep(self._pause)  # releases the lock; a request thread waiting for it takes it
            self._yield_at = self._clock() + self._slice
