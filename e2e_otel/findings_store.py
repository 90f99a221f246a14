"""The bounded hand-off of query findings from the derive thread to the database.

``FindingWriter.submit`` runs on the derive thread, in the ``QueryAnalyzer``'s listener: one
``put_nowait`` (O(1), never blocks); a full queue drops the finding and counts it. ``write`` runs on
the record writer thread (``RecordWriter.add_batch_job``), on the writer's connection with
instrumentation suppressed, so findings are written by the same thread, connection and back-off as
the other records and appear to every worker, the API and the CLI, and survive restarts.

A batch is inserted with ``bulk_create`` in one transaction and counted as written only after the
commit. An outage (connection lost, lock wait timeout, deadlock) is raised to the writer, which backs
off and calls ``write`` again with the same batch. A batch the database refuses (a value it will not
store) is written again row by row, so only the refused rows are dropped (counted as ``db_error``).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Protocol

from . import forksafe
from .sanitize import Sanitizer

logger = logging.getLogger(__name__)

__all__ = ["FindingWriter", "finding_fingerprint"]

CAPACITY = 1000  # findings waiting for the writer; at most 10 per trace (queries.MAX_FINDINGS_PER_TRACE x 2)
BATCH_SIZE = 100
_RETRYABLE_CODES = frozenset({1205, 1213})  # MySQL/MariaDB lock wait timeout, deadlock


class _Finding(Protocol):
    """What ``queries.FindingData`` (a frozen dataclass) offers; read-only."""

    @property
    def kind(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def statement(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def total_ms(self) -> float: ...
    @property
    def max_ms(self) -> float: ...
    @property
    def advice(self) -> str: ...
    @property
    def detected_at(self) -> float: ...


def finding_fingerprint(kind: str, statement: str, route: str) -> str:
    """The stable key of one problem: sha256 of kind, the scrubbed statement shape (whitespace
    collapsed) and the route. Equal across traces, processes and restarts."""
    shape = " ".join(statement.split()).rstrip(";").rstrip()
    return hashlib.sha256("\x1f".join((kind, shape, route)).encode("utf-8", "replace")).hexdigest()


class FindingWriter:
    """Findings queue + the batch job that writes them. ``submit``/``stats`` run on any thread (the
    derive thread in practice); ``pending``/``write`` run on the record writer thread only."""

    def __init__(self, sanitizer: Sanitizer, *, alias: str, capacity: int = CAPACITY,
                 batch_size: int = BATCH_SIZE) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError(f"capacity and batch_size must be >= 1, got {capacity!r}, {batch_size!r}")
        self._sanitizer = sanitizer
        self.alias = alias
        self.capacity = capacity
        self._batch_size = batch_size
        self._reset()
        forksafe.register(self)

    def _reset(self) -> None:
        self._queue: queue.Queue[_Finding] = queue.Queue(self.capacity)
        self._batch: list[Any] = []  # model rows taken from the queue, not committed yet
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()
        self._written = 0

    def _after_fork_in_child(self) -> None:
        # The parent's findings are the parent's to write; its lock may have been held at fork time.
        self._reset()

    # --- any thread -------------------------------------------------------------------------------

    def submit(self, finding: _Finding) -> bool:
        """Queue ``finding`` without blocking; ``False`` (and a ``queue_full`` drop) when full."""
        try:
            self._queue.put_nowait(finding)
        except queue.Full:
            self._count_drop("queue_full")
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """``queue_depth``, ``dropped`` by reason and ``written`` (kind ``finding``), in the shape of
        ``RecordWriter.stats`` so the metrics scrape adds them to the record counters."""
        with self._lock:
            return {"queue_depth": self._queue.qsize() + len(self._batch),
                    "dropped": {"queue_full": self._dropped["queue_full"], "db_error": self._dropped["db_error"]},
                    "written": {"finding": self._written}}

    def _count_drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    # --- record writer thread ---------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether ``write`` has anything to do (the writer connects only then)."""
        return bool(self._batch) or not self._queue.empty()

    def write(self) -> None:
        """Write what is queued, a batch per transaction. Raises on an outage with the batch kept."""
        from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

        from .models import QueryFinding

        rows = QueryFinding.objects.using(self.alias)
        for _ in range(self.capacity // self._batch_size + 1):  # a flood must not keep the writer here
            if not self.pending():
                return
            self._fill()
            try:
                with transaction.atomic(using=self.alias):
                    rows.bulk_create(self._batch)
            except (OperationalError, InterfaceError) as exc:
                if _is_retryable(exc) or not _usable(connections[self.alias]):
                    raise  # rolled back: the same batch goes in once the database is back
                self._row_by_row(rows)  # e.g. MySQL 1292 (a refused value) arrives as OperationalError
            except DatabaseError:
                self._row_by_row(rows)
            else:
                self._committed(len(self._batch))

    def _fill(self) -> None:
        while len(self._batch) < self._batch_size:
            try:
                finding = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                self._batch.append(self._row(finding))
            except (TypeError, ValueError) as exc:  # not a finding the analyzer makes: drop, never retry
                self._refused_value(exc)

    def _row_by_row(self, rows: Any) -> None:
        """One transaction per row; refused rows are dropped and logged once per batch (a missing
        table, say ``migrate`` not run yet, refuses them all)."""
        from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

        refused: list[BaseException] = []
        try:
            while self._batch:
                try:
                    with transaction.atomic(using=self.alias):
                        rows.bulk_create(self._batch[:1])
                except (OperationalError, InterfaceError) as exc:
                    if _is_retryable(exc) or not _usable(connections[self.alias]):
                        raise  # the rows before this one are committed and gone from the batch
                    refused.append(exc)
                except DatabaseError as exc:
                    refused.append(exc)
                else:
                    self._committed(1)
                    continue
                del self._batch[:1]
                self._count_drop("db_error")
        finally:
            if refused:
                logger.warning("e2e-otel: %d query finding(s) refused by the database: %s", len(refused),
                               self._sanitizer.scrub_text(str(refused[0]))[:500])

    def _committed(self, count: int) -> None:
        del self._batch[:count]
        with self._lock:
            self._written += count

    def _refused_value(self, exc: BaseException) -> None:
        self._count_drop("db_error")
        logger.warning("e2e-otel: query finding not stored: %s", exc)

    def _row(self, finding: _Finding) -> Any:
        """The model row: text fields scrubbed again (the sanitizer memoises) and cut to the columns."""
        from .models import QueryFinding

        scrub = self._sanitizer.scrub_text
        route = scrub(finding.route)[:190]
        statement = scrub(finding.statement)
        return QueryFinding(
            kind=finding.kind, fingerprint=finding_fingerprint(finding.kind, statement, route),
            correlation_id=uuid.UUID(finding.correlation_id), route=route, table=scrub(finding.table)[:190],
            operation=finding.operation[:20], statement=statement, count=finding.count,
            total_ms=finding.total_ms, max_ms=finding.max_ms, advice=scrub(finding.advice),
            created_at=datetime.fromtimestamp(finding.detected_at, tz=timezone.utc),
        )


def _is_retryable(exc: BaseException) -> bool:
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and code in _RETRYABLE_CODES


def _usable(connection: Any) -> bool:
    try:
        return connection.connection is not None and connection.is_usable()
    except Exception:
        return False
