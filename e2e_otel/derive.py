"""The derive thread: where ended spans become records, metrics and findings.

Mapping a span to a step, evaluating thresholds and analysing queries costs tens of microseconds per
span; on the thread that ends the span that would be paid inside every request. ``DeriveQueue.put``
is what the request thread pays instead: a length check and a ``deque.append`` (no lock, no
allocation beyond the deque's). One daemon thread per process takes the spans in the order they
ended and hands each to the derived processors.

Bounded: at most ``capacity`` spans wait; beyond that a span is dropped for the derived views (it is
still exported) and counted in ``dropped``. The thread wakes every ``interval`` seconds, or sooner
when ``wake_at`` spans are waiting. It shares the interpreter lock politely (``pacing.py``): it
stands back while a request is in flight, so spans are derived in the gaps between requests, at most
``MAX_DEFER_SECONDS`` late, or at once when a flush is waiting or a quarter of the capacity is
queued; and while it works it gives the lock back after every millisecond.

``flush(timeout)`` returns once every span queued before the call has been handled, so tests,
reports and shutdown see a settled state. After ``fork()`` the child starts with an empty queue and
starts its own thread on the first span.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan

from . import forksafe
from .pacing import Pacer

logger = logging.getLogger(__name__)

__all__ = ["DeriveQueue"]

CAPACITY = 20_000
INTERVAL = 0.05
WAKE_AT = 256


class _Marker:
    """A point in the queue: set once everything queued before it has been handled."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


_STOP = object()


class DeriveQueue:
    """Spans from any thread → ``handle(span)`` on one background thread, in order."""

    def __init__(self, handle: Callable[[ReadableSpan], None], *, capacity: int = CAPACITY,
                 interval: float = INTERVAL, wake_at: int = WAKE_AT, name: str = "e2e-otel-derive") -> None:
        if capacity < 1 or wake_at < 1 or interval <= 0:
            raise ValueError("capacity, wake_at and interval must be positive")
        self._handle = handle
        self.capacity = capacity
        self._interval = interval
        self._wake_at = min(wake_at, capacity)
        self._urgent_depth = max(1, capacity // 4)
        self._name = name
        self._reset()
        forksafe.register(self)

    def _reset(self) -> None:
        self._queue: deque[object] = deque()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pace = Pacer(urgent=self._urgent)  # used by the derive thread only
        self._flushes = 0  # flush() calls waiting for their marker
        self._flush_lock = threading.Lock()
        self._stopped = False
        self.dropped = 0
        self.handled = 0

    def _after_fork_in_child(self) -> None:
        # The parent's spans are the parent's to derive; its thread does not exist here.
        self._reset()

    # --- any thread -------------------------------------------------------------------------------

    def put(self, span: ReadableSpan) -> bool:
        """Queue ``span`` without blocking; ``False`` (and one more ``dropped``) when full or stopped."""
        queue = self._queue
        if len(queue) >= self.capacity or self._stopped:
            with self._drop_lock:  # only on overflow: the common path takes no lock
                self.dropped += 1
            return False
        queue.append(span)
        if self._thread is None:
            self._start()
        elif len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()
        return True

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Spans waiting to be derived: the depth without flush markers and the stop mark."""
        queued = len(self._queue)
        if queued == 0:
            return 0
        # The stop mark is handled last, so while anything is queued after stop() it is in there.
        return max(0, queued - self._flushes - (1 if self._stopped else 0))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every span queued before this call is handled; ``False`` on timeout."""
        if threading.current_thread() is self._thread:  # a handler flushing: handle the rest inline
            with self._flush_lock:
                self._flushes += 1
            try:
                self._drain(until=None)
            finally:
                with self._flush_lock:
                    self._flushes -= 1
            return True
        if self._thread is None and not self._queue:
            return True
        if self._stopped:  # the thread is gone or going: nothing will set a marker
            return not self._queue and not self._thread.is_alive()  # type: ignore[union-attr]
        # Even with the queue empty the thread may be handling the last span it took: the marker is
        # set only after that.
        marker = _Marker()
        with self._flush_lock:
            self._flushes += 1  # the derive thread stops standing back for requests
        self._queue.append(marker)  # a marker is not a span: it may exceed the capacity
        if self._thread is None:
            self._start()
        self._wake.set()
        return marker.event.wait(max(0.0, timeout))

    def stop(self, timeout: float = 5.0) -> bool:
        """Handle what is queued (within ``timeout``) and end the thread; later spans are dropped."""
        self._stopped = True
        thread = self._thread
        if thread is None:
            return True
        self._queue.append(_STOP)
        self._wake.set()
        thread.join(timeout)
        return not thread.is_alive()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopped:
                return
            thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            thread.start()
            self._thread = thread

    # --- derive thread ----------------------------------------------------------------------------

    def _urgent(self) -> bool:
        return self._flushes > 0 or self._stopped or len(self._queue) >= self._urgent_depth

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._drain(until=_STOP):
                return

    def _drain(self, until: object | None) -> bool:
        """Handle everything queued; ``True`` when ``until`` was reached (the rest stays queued)."""
        queue, handle, pace = self._queue, self._handle, self._pace
        while queue:
            pace.stand_back()  # returns at once when no request is in flight
            item = queue.popleft()
            if item is until:
                return True
            if isinstance(item, _Marker):
                with self._flush_lock:
                    self._flushes -= 1
                item.event.set()
                continue
            if item is _STOP:  # a handler's flush() met stop(): leave it for the thread's own loop
                queue.appendleft(item)
                return False
            try:
                handle(item)  # type: ignore[arg-type]
            except Exception:  # a derived view must never take the thread down
                logger.exception("e2e-otel: deriving records/metrics from a span failed")
            self.handled += 1
            pace()
        pace.caught_up()
        return False
