"""Record-store health, probed off the request path so a stalled database cannot hold workers.

``system-health/`` used to run ``SELECT 1`` and five counts on the request thread with no timeout:
with the database stalled, eight health checks held eight worker threads and every ordinary request
behind them timed out. Now one probe thread per alias asks the database (with a statement timeout,
instrumentation suppressed, on its own connection) and request threads wait for its answer at most
``wait`` seconds. Answers are reused for ``max_age`` seconds, so a burst of health checks costs one
probe, and every answer carries its age. While a probe hangs, no second one starts: at most one
thread per alias is ever stuck on a dead server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .. import forksafe

logger = logging.getLogger(__name__)

MAX_AGE = 2.0  # seconds an answer is reused
WAIT = 1.0  # seconds a request thread waits for a probe under way
STATEMENT_TIMEOUT = 2.0  # seconds the server may spend on one probe statement
BREACH_WINDOW = timedelta(minutes=15)
BREACH_LIMIT = 50


@dataclass(frozen=True)
class StoreHealth:
    """One probe's answer; the probe stamps ``answered_at`` with its clock when the answer arrives."""

    alias: str
    reachable: bool
    answered_at: float = 0.0
    checked_at: datetime | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    breaches: list[dict[str, Any]] = field(default_factory=list)

    def database(self, now: float) -> dict[str, Any]:
        """The ``database`` member of the health response."""
        body: dict[str, Any] = {"alias": self.alias, "reachable": self.reachable,
                                "checked_at": self.checked_at.isoformat() if self.checked_at else None,
                                "age_seconds": round(max(0.0, now - self.answered_at), 3)}
        if self.error:
            body["error"] = self.error
        return body


def set_statement_timeout(connection: Any, seconds: float) -> None:
    """Bound every statement of this connection's session on the server (where the backend can)."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            if connection.mysql_is_mariadb:
                cursor.execute("SET SESSION max_statement_time = %s", [seconds])
            else:
                cursor.execute("SET SESSION max_execution_time = %s", [int(seconds * 1000)])
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(seconds * 1000)}ms"])


def read_store_health(alias: str, *, statement_timeout: float = STATEMENT_TIMEOUT) -> StoreHealth:
    """Reachability, record counts and recent breaches of ``alias``, read on the calling thread's own
    connection, which is closed afterwards (the probe thread does not live on)."""
    from django.db import connections
    from django.db.models import Count, Max
    from django.utils import timezone
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    from ..models import ErrorLog, PerformanceSnapshot, PerformanceThreshold, ThresholdStatus, WorkflowSession
    from ..models import WorkflowStatus as Status

    try:
        with suppress_instrumentation():
            set_statement_timeout(connections[alias], statement_timeout)
            sessions = WorkflowSession.objects.using(alias)
            counts = {
                "workflow_sessions": sessions.count(),
                "in_progress": sessions.filter(status=Status.IN_PROGRESS).count(),
                "failed": sessions.filter(status=Status.FAILED).count(),
                "unresolved_errors": ErrorLog.objects.using(alias).filter(resolved=False).count(),
                "enabled_thresholds": PerformanceThreshold.objects.using(alias).filter(enabled=True).count(),
            }
            breaches = (
                PerformanceSnapshot.objects.using(alias)
                .filter(timestamp__gte=timezone.now() - BREACH_WINDOW,
                        threshold_status__in=[ThresholdStatus.WARNING, ThresholdStatus.CRITICAL])
                .values("layer", "metric_name", "threshold_status")
                .annotate(count=Count("id"), last=Max("timestamp"))
                .order_by("layer", "metric_name", "threshold_status")[:BREACH_LIMIT]
            )
            return StoreHealth(alias, True, checked_at=timezone.now(), counts=counts,
                               breaches=[dict(row) for row in breaches])
    except Exception as exc:  # unreachable, refused, timed out, tables missing: all mean "unavailable"
        logger.debug("e2e-otel: health probe of %r failed", alias, exc_info=True)
        return StoreHealth(alias, False, checked_at=timezone.now(), error=type(exc).__name__)
    finally:
        try:
            connections[alias].close()
        except Exception:
            logger.debug("e2e-otel: closing the health probe's connection failed", exc_info=True)


class StoreHealthProbe:
    """Single-flight probe of one alias. ``current()`` runs on request threads and never waits
    longer than ``wait``; the probe itself runs on a short-lived daemon thread."""

    def __init__(self, alias: str, *, read: Callable[[str], StoreHealth] = read_store_health,
                 max_age: float = MAX_AGE, wait: float = WAIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_age < 0 or wait < 0:
            raise ValueError(f"max_age and wait must be >= 0, got {max_age!r}, {wait!r}")
        self.alias = alias
        self._read = read
        self._max_age = max_age
        self._wait = wait
        self._clock = clock
        self._reset()
        forksafe.register(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._last: StoreHealth | None = None
        self._pending: threading.Event | None = None

    def _after_fork_in_child(self) -> None:
        self._reset()  # the parent's probe thread did not come along

    def current(self) -> StoreHealth:
        """The freshest answer: a cached one, the one under way (waited for), or "no answer"."""
        with self._lock:
            last = self._last
            if last is not None and self._clock() - last.answered_at <= self._max_age:
                return last
            pending = self._pending
            if pending is None:
                pending = self._pending = threading.Event()
                threading.Thread(target=self._probe, args=(pending,), name="e2e-otel-health-probe",
                                 daemon=True).start()
        pending.wait(self._wait)
        with self._lock:
            last = self._last
        if last is not None and pending.is_set():
            return last
        return StoreHealth(self.alias, False, self._clock(),
                           error=f"no answer within {self._wait:g}s (a probe is still waiting on the database)")

    def invalidate(self) -> None:
        """Forget the cached answer (the next ``current()`` probes again)."""
        with self._lock:
            self._last = None

    def _probe(self, done: threading.Event) -> None:
        try:
            result = self._read(self.alias)
        except Exception as exc:  # read_store_health catches its own; a custom reader may not
            result = StoreHealth(self.alias, False, error=type(exc).__name__)
        with self._lock:
            self._last = replace(result, answered_at=self._clock())
            self._pending = None
        done.set()


_probes: dict[str, StoreHealthProbe] = {}
_probes_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _probes_lock
    _probes_lock = threading.Lock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def probe_for(alias: str) -> StoreHealthProbe:
    """The process's probe of ``alias`` (one per alias, so concurrent health checks share it)."""
    with _probes_lock:
        probe = _probes.get(alias)
        if probe is None:
            probe = _probes[alias] = StoreHealthProbe(alias)
        return probe
