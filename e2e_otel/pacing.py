"""How e2e-otel's background threads share the interpreter lock with request threads.

Two rules, both kept by a ``Pacer`` that the derive and record writer threads call between units
of work:

- **Hand the lock back often.** A thread that runs Python without blocking keeps the GIL until the
  interpreter forces a switch, after ``sys.getswitchinterval()`` (5 ms by default); a request thread
  coming back from a database call would wait that long, on every call. ``pacer()`` sleeps
  ``pause_seconds`` after each ``slice_seconds`` of work, which lets a waiting thread in at once.
- **Stand back while requests are in flight.** Even short slices cost a request thread a wait for
  the lock each time it returns from I/O, plus cold caches. ``pacer.stand_back()`` sleeps while
  ``inflight.requests_in_flight()`` says a request is being served, so derived work runs in the gaps
  between requests. It never waits for ever: it returns at once when the owner says the work is
  ``urgent`` (a flush or stop is waiting, the backlog is large), and once the backlog has waited
  ``max_defer`` seconds. Under load with no gaps the work therefore still keeps up; it is only later
  (derived views lag the spans by up to about ``max_defer`` plus the time to work off the backlog).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .inflight import requests_in_flight

__all__ = ["MAX_DEFER_SECONDS", "PAUSE_SECONDS", "POLL_SECONDS", "SLICE_SECONDS", "Pacer"]

SLICE_SECONDS = 0.001
PAUSE_SECONDS = 0.00005
#: Longest a backlog waits for a gap between requests (from its first ``stand_back()`` until
#: ``caught_up()``).
MAX_DEFER_SECONDS = 2.0
#: How often a standing-back thread looks again. Rarely, on purpose: a thread that wakes needs the
#: interpreter lock, and a request thread that releases it for I/O while that thread waits then
#: pays a hand-over (100-200 us on a busy 2-core machine) to get it back.
POLL_SECONDS = 0.05


def _never() -> bool:
    return False


class Pacer:
    """``pacer()`` between units of work, ``pacer.stand_back()`` before a unit that can wait;
    one per thread (it keeps that thread's slice)."""

    __slots__ = ("_busy", "_clock", "_defer_until", "_max_defer", "_pause", "_poll", "_sleep", "_slice",
                 "_urgent", "_yield_at")

    def __init__(self, slice_seconds: float = SLICE_SECONDS, pause_seconds: float = PAUSE_SECONDS, *,
                 urgent: Callable[[], bool] = _never, max_defer: float = MAX_DEFER_SECONDS,
                 poll: float = POLL_SECONDS, busy: Callable[[], int] = requests_in_flight,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if slice_seconds <= 0 or pause_seconds < 0 or max_defer < 0 or poll <= 0:
            raise ValueError("slice and poll must be positive, pause and max_defer not negative; got "
                             f"{slice_seconds!r}, {poll!r}, {pause_seconds!r}, {max_defer!r}")
        self._slice = slice_seconds
        self._pause = pause_seconds
        self._urgent = urgent
        self._max_defer = max_defer
        self._poll = poll
        self._busy = busy
        self._clock = clock
        self._sleep = sleep
        self._yield_at = 0.0
        self._defer_until: float | None = None

    def __call__(self) -> None:
        if self._clock() >= self._yield_at:
            self._sleep(self._pause)  # releases the lock; a request thread waiting for it takes it
            self._yield_at = self._clock() + self._slice

    def stand_back(self) -> None:
        """Sleep while a request is in flight and the work is not urgent.

        The deferral is bounded per backlog, not per call: the first call after ``caught_up()``
        starts a ``max_defer`` budget and every later call waits only until it runs out, so under
        load with no gaps the owner does its work at most ``max_defer`` late rather than a unit at
        a time."""
        busy, urgent = self._busy, self._urgent
        if not busy() or urgent():
            return
        now = self._clock()
        if self._defer_until is None:
            self._defer_until = now + self._max_defer
        if now >= self._defer_until:
            return
        while now < self._defer_until:
            self._sleep(self._poll)
            now = self._clock()
            if not busy() or urgent():
                break
        self._yield_at = now + self._slice  # a fresh slice: the gap has just begun

    def caught_up(self) -> None:
        """The owner's backlog is empty: the next work may be deferred for ``max_defer`` again."""
        self._defer_until = None
