"""The bounded queue between span processors and the database, and the one thread that drains it.

The derive thread calls :meth:`RecordWriter.submit` (``put_nowait``: O(1), never blocks; a full
queue drops and counts). The writer thread batches, sanitises, and writes WorkflowSession /
TraceStep / ErrorLog / PerformanceSnapshot rows on its own thread-local Django connection with
instrumentation suppressed, so its SQL never becomes spans. A database outage, a row lock held
longer than ``LOCK_WAIT_TIMEOUT`` or a deadlock makes it back off exponentially (capped) and retry
the batch, keeping the newest pending steps up to the queue size; it recovers by itself. Each batch
is one transaction of set-based statements (existing sessions locked with one read, new ones folded
in memory and inserted once, the steps, an upsert of the existing sessions; multi-row statements
of at most 32 rows, 10 for sessions), so the writer's CPU
grows with rows, not with traces; a batch the database refuses is written again trace by trace so
only the offending trace is dropped. Errors are grouped once per batch: one locked read and one
counter update (or insert) per fingerprint.

The writer shares the interpreter lock with request threads, so it keeps its share small and
short: it gathers a batch without waking for every submitted step, builds TraceStep INSERTs itself
(the ORM's per-field compile cost most of its CPU per step), relies on the sanitizer's scrub memos,
sends inserts in pieces of a few dozen rows (each round trip releases the lock) and gives the lock
back every millisecond of Python work in between.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from opentelemetry.instrumentation.utils import suppress_instrumentation

from . import forksafe
from .conf import Config
from .pacing import Pacer
from .sanitize import Sanitizer, ansi_quotes_for
from .spans_to_records import WORKFLOW_SOURCES, ErrorData, StepData, resolve_workflow_type

if TYPE_CHECKING:
    from django.db.models import Field

logger = logging.getLogger(__name__)

__all__ = ["DROP_REASONS", "WRITTEN_KINDS", "RecordWriter"]

DROP_REASONS = ("queue_full", "db_error", "step_cap", "unsampled_overflow")
WRITTEN_KINDS = ("session", "step", "error", "snapshot")
MAX_BACKOFF = 30.0
_UNKNOWN_TYPE = ("unknown", "unknown")
_SOURCE_RANK = {**WORKFLOW_SOURCES, "unknown": 99}
_SQL_KEYS = ("db.statement", "db.query.text")
_SWEEP_LIMIT = 500
LOCK_WAIT_TIMEOUT = 5  # seconds the writer waits for a row lock (MySQL/MariaDB) before retrying
# MySQL/MariaDB lock wait timeout and deadlock: the transaction was rolled back on a healthy
# connection; the same data goes in once the other transaction is done, so back off and retry.
_RETRYABLE_CODES = frozenset({1205, 1213})
_PING_AFTER_IDLE = 60.0  # seconds without a write after which the connection is pinged first
_T = TypeVar("_T")
# Rows per INSERT. Each statement's round trip gives the interpreter lock back to request threads,
# and building one (the driver escapes every value in Python) holds it: keep that under a millisecond.
_ROWS_PER_STATEMENT = 32
_SESSIONS_PER_STATEMENT = 10  # about 20 fields each
_LOCK_READ_IDS = 100  # correlation ids per locking read of existing sessions
# TraceStep columns in the order of ``_step_fields`` (tests check they are the model's).
_STEP_COLUMNS = (
    "workflow_session", "correlation_id", "span_id", "parent_span_id", "name", "layer", "component",
    "operation", "start_time", "end_time", "duration_ms", "status", "metadata",
)


class _FlushToken:
    """Marks a point in the queue; set once every step enqueued before it is written or dropped."""

    __slots__ = ("event", "seq")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.seq = -1


_STOP = object()


class BatchJob(Protocol):
    """Other writes the writer thread runs each cycle (``add_batch_job``)."""

    def pending(self) -> bool: ...
    def write(self) -> None: ...


_SEEN_ERRORS_CAP = 4096


class _Occurrence(NamedTuple):
    """One exception of a written trace, waiting for the chunk's error grouping."""

    error: ErrorData
    correlation_id: uuid.UUID
    span_id: str
    user_id: str


class _Folded(NamedTuple):
    """One trace's steps applied to its session in memory, waiting for the commit."""

    kept: list[StepData]
    over: int  # steps beyond MAX_STEPS_PER_WORKFLOW (dropped as ``step_cap``)
    closed: str | None  # the ``workflow_closed`` reason, if this closed the workflow


# Every WorkflowSession column the writer changes on an existing row (upserted per chunk, 10 rows per statement).
_SESSION_FIELDS = (
    "workflow_type", "workflow_type_source", "user_id", "service", "start_time", "end_time",
    "last_activity", "duration_ms", "status", "status_explicit", "root_span_id", "step_count",
    "error_count", "dropped_step_count", "metadata", "updated_at",
)


def _ordered(items: list[tuple[int, StepData]]) -> list[StepData]:
    """One trace's steps in start order (the first one's start is the session's start)."""
    return sorted((step for _, step in items), key=lambda s: (s.start_ns, s.end_ns))


def _is_retryable(exc: BaseException) -> bool:
    """MySQL/MariaDB lock wait timeout (1205) or deadlock (1213); Django keeps the driver's args."""
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and code in _RETRYABLE_CODES


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


class RecordWriter:
    """Bounded queue + background writer. ``submit``/``count_drop``/``stats`` run on any thread;
    everything else runs on the daemon thread ``e2e-otel-record-writer`` (restarted after fork)."""

    def __init__(self, config: Config, sanitizer: Sanitizer, *, alias: str | None = None,
                 start: bool = True) -> None:
        self._config = config
        self._sanitizer = sanitizer
        self.alias = alias or config.DATABASE_ALIAS
        self.capacity = int(config.RECORD_QUEUE_SIZE)
        self._urgent_depth = max(1, self.capacity // 4)
        self._batch_size = int(config.RECORD_BATCH_SIZE)
        self._interval = float(config.RECORD_FLUSH_INTERVAL)
        self._idle_timeout = float(config.WORKFLOW_IDLE_TIMEOUT)
        self._sweep_interval = max(0.5, min(self._idle_timeout / 2, 30.0))
        self._max_steps = int(config.MAX_STEPS_PER_WORKFLOW)
        self._rules = dict(config.WORKFLOWS)
        self._jobs: list[BatchJob] = []  # kept across fork: the jobs reset their own state
        self._started = False
        self._reset_state()
        forksafe.register(self)  # a weak registration: writers may be discarded
        if start:
            self.start()

    def _reset_state(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.capacity)
        self._pending: deque[tuple[int, StepData]] = deque()
        self._chunk_done: set[int] = set()  # seqs of the current chunk already written
        self._chunk_errors: list[_Occurrence] = []  # errors of written traces, grouped per chunk
        # (trace, type, message, raise site) of exceptions already grouped: one exception escaping
        # nested spans is recorded on each of them; it is one error, kept where it was raised.
        self._seen_errors: OrderedDict[tuple[int, str, str, str], None] = OrderedDict()
        self._tokens: list[_FlushToken] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()
        self._written: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_flush_ts: float | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_used = 0.0
        self._next_sweep = time.monotonic() + self._sweep_interval
        # Gives the interpreter lock back between units of work and stands back for requests in
        # flight before writing a chunk (pacing.py).
        self._breathe = Pacer(urgent=self._urgent)
        self._flushes = 0  # force_flush() calls whose token is not released yet
        self._stopping = threading.Event()
        self._wake = threading.Event()  # cuts the writer's gathering sleep short (see ``_fill``)
        self._thread: threading.Thread | None = None

    # --- any thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._started = True
        self._thread = threading.Thread(target=self._run, name="e2e-otel-record-writer", daemon=True)
        self._thread.start()

    def submit(self, step: StepData) -> bool:
        """Enqueue without blocking; ``False`` (and a ``queue_full`` drop) when the queue is full."""
        try:
            self._queue.put_nowait(step)
        except queue.Full:
            self.count_drop("queue_full")
            return False
        if not self._wake.is_set() and self._queue.qsize() + len(self._pending) >= self._batch_size:
            self._wake.set()  # a batch is ready: the writer need not sleep out its interval
        return True

    def add_batch_job(self, job: BatchJob) -> None:
        """Have the writer thread also run ``job.write()`` each cycle while ``job.pending()``, on its
        connection with instrumentation suppressed, before flush tokens are released; an outage it
        raises backs the writer off like a record batch (e.g. ``findings_store.FindingWriter``)."""
        self._jobs.append(job)

    def count_drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    def stats(self) -> dict[str, Any]:
        """Counters for the metrics scrape: queue depth/capacity, drops by reason, rows by kind."""
        with self._lock:
            dropped = {reason: 0 for reason in DROP_REASONS}
            dropped.update(self._dropped)
            written = {kind: 0 for kind in WRITTEN_KINDS}
            written.update(self._written)
            return {
                "queue_depth": self._queue.qsize() + len(self._pending),
                "queue_capacity": self.capacity,
                "dropped": dropped,
                "written": written,
                "last_error": self._last_error,
                "last_flush_ts": self._last_flush_ts,
            }

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until every step submitted before this call is written (or dropped); ``False`` on
        timeout, e.g. while the database is down. Cuts a running back-off short."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty() and not self._pending
        deadline = time.monotonic() + timeout
        token = _FlushToken()
        self._retry_at = 0.0
        with self._lock:
            self._flushes += 1  # the writer stops standing back for requests
        try:
            self._queue.put(token, timeout=max(0.0, timeout))
        except queue.Full:
            with self._lock:
                self._flushes -= 1
            return False
        self._wake.set()
        return token.event.wait(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Write what is pending (one attempt) and stop the thread, within ``timeout`` seconds."""
        thread = self._thread
        if thread is None:
            return True
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # the loop also checks the event
            self._queue.put(_STOP, timeout=max(0.0, timeout / 2))
        self._wake.set()
        thread.join(timeout)
        return not thread.is_alive()

    def _after_fork_in_child(self) -> None:
        # The parent's queue, locks and thread do not exist usefully in the child: start afresh.
        was_started = self._started
        self._reset_state()
        if was_started:
            self.start()

    # --- writer thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._fill()
                now = time.monotonic()
                if self._pending and now >= self._retry_at:
                    self._breathe.stand_back()  # write in the gaps between requests
                    self._drain()
                self._run_jobs()
                self._release_tokens()
                if now >= self._next_sweep and now >= self._retry_at:
                    self._next_sweep = now + self._sweep_interval
                    self._breathe.stand_back()
                    self._attempt(self._sweep_idle)
                if not self._pending and self._queue.empty():
                    self._breathe.caught_up()  # the next backlog may wait for a gap again
                if self._stopping.is_set():
                    if self._pending:
                        self._retry_at = 0.0
                        self._drain()
                    self._run_jobs()
                    self._release_tokens(all_tokens=True)
                    break
        finally:
            self._close_connection()

    def _run_jobs(self) -> None:
        for job in self._jobs:
            if job.pending() and time.monotonic() >= self._retry_at:
                self._attempt(job.write)

    def _urgent(self) -> bool:
        """Write now, requests in flight or not: a flush or stop waits, or the backlog is large."""
        return (self._flushes > 0 or self._stopping.is_set()
                or self._queue.qsize() + len(self._pending) >= self._urgent_depth)

    def _wait_time(self) -> float:
        now = time.monotonic()
        if self._pending:
            return max(0.0, min(self._retry_at - now, 1.0)) if self._retry_at > now else 0.0
        return max(0.01, min(self._next_sweep - now, 1.0))

    def _fill(self) -> None:
        """Move queued items to ``pending``: wait for the first, then gather up to a batch. While
        gathering, the thread sleeps until the flush interval ends or ``_wake`` is set (a batch is
        queued, a flush or stop was asked) and then takes what is queued without waiting, rather
        than waking for every step the derive thread submits."""
        try:
            item = self._queue.get(timeout=self._wait_time()) if not self._stopping.is_set() \
                else self._queue.get_nowait()
        except queue.Empty:
            return
        if not self._accept(item):
            return
        deadline = time.monotonic() + self._interval
        while len(self._pending) < self._batch_size and not self._stopping.is_set():
            if not self._take_queued():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._pending) >= self._batch_size:
                return
            self._wake.wait(remaining)
            self._wake.clear()  # what set it was queued before: the next ``_take_queued`` sees it

    def _take_queued(self) -> bool:
        """Accept what is queued now, up to a batch; ``False`` when gathering should stop."""
        get = self._queue.get_nowait
        while len(self._pending) < self._batch_size:
            try:
                item = get()
            except queue.Empty:
                return True
            if not self._accept(item):
                return False
            self._breathe()
        return True

    def _accept(self, item: Any) -> bool:
        """Add one queue item; ``False`` when gathering should stop (flush token or stop)."""
        if item is _STOP:
            self._stopping.set()
            return False
        if isinstance(item, _FlushToken):
            item.seq = self._seq
            self._tokens.append(item)
            self._retry_at = 0.0
            return False
        self._seq += 1
        self._pending.append((self._seq, item))
        overflow = len(self._pending) - self.capacity
        if overflow > 0:  # database down for a while: keep the newest
            for _ in range(overflow):
                self._pending.popleft()
            self.count_drop("db_error", overflow)
        return True

    def _release_tokens(self, all_tokens: bool = False) -> None:
        if not self._tokens:
            return
        self._run_jobs()  # a flush also waits for what the batch jobs had queued
        jobs_done = not any(job.pending() for job in self._jobs)
        oldest = self._pending[0][0] if self._pending else None
        keep = []
        for token in self._tokens:
            if all_tokens or (jobs_done and (oldest is None or token.seq < oldest)):
                with self._lock:
                    self._flushes -= 1
                token.event.set()
            else:
                keep.append(token)
        self._tokens = keep

    def _drain(self) -> None:
        while self._pending and time.monotonic() >= self._retry_at:
            size = min(self._batch_size, len(self._pending))
            chunk = [self._pending[i] for i in range(size)]
            outcome = self._attempt(self._write, chunk)
            if outcome == "retry":
                return
            self._chunk_done.clear()
            self._chunk_errors = []
            for _ in range(size):
                self._pending.popleft()
            if outcome == "dropped":
                self.count_drop("db_error", size)
            self._release_tokens()

    def _attempt(self, func: Any, *args: Any) -> str:
        """Run ``func`` on our connection: ``"ok"``, ``"retry"`` (connection trouble, lock wait
        timeout or deadlock: back off) or ``"dropped"`` (the data itself was refused; retrying would
        fail the same way)."""
        from django.db import DatabaseError, InterfaceError, OperationalError, connections

        try:
            with suppress_instrumentation():
                self._check_connection(connections[self.alias])
                func(*args)
                self._last_used = time.monotonic()
        except (OperationalError, InterfaceError) as exc:
            return self._back_off(exc)
        except DatabaseError as exc:
            self._note_error(exc)
            logger.warning("e2e-otel: record batch refused by the database: %s", exc)
            return "dropped"
        except Exception as exc:  # e.g. database access not allowed yet; never die
            return self._back_off(exc)
        with self._lock:
            self._last_flush_ts = time.time()
        self._backoff = 0.0
        return "ok"

    def _check_connection(self, connection: Any) -> None:
        """Keep one long-lived connection (``CONN_MAX_AGE`` is a per-request notion; honouring 0
        would reconnect every batch) but drop it when it failed or idled long enough for the server
        to have closed it."""
        if connection.connection is not None:
            stale = time.monotonic() - self._last_used > _PING_AFTER_IDLE
            if (connection.errors_occurred or stale) and not connection.is_usable():
                connection.close()
            connection.errors_occurred = False
        if connection.connection is None:
            # Connect here rather than letting the ORM reconnect implicitly, so every connection the
            # writer uses gets the session setting below.
            connection.ensure_connection()
            if connection.vendor == "mysql":
                # A host-app transaction holding row locks must not park the writer for InnoDB's
                # default 50 s: give up quickly, back off and retry the batch.
                with connection.cursor() as cursor:
                    cursor.execute("SET SESSION innodb_lock_wait_timeout = %s", [LOCK_WAIT_TIMEOUT])

    def _back_off(self, exc: BaseException) -> str:
        self._note_error(exc)
        self._close_connection()
        self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        trouble = "waited too long for a row lock" if _is_retryable(exc) else "cannot reach the database"
        logger.warning("e2e-otel: record writer %s (%s); retry in %.1fs", trouble, exc, self._backoff)
        return "retry"

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {self._sanitizer.scrub_text(str(exc))[:500]}"

    def _connection_usable(self) -> bool:
        from django.db import connections

        connection = connections[self.alias]
        try:
            return connection.connection is not None and connection.is_usable()
        except Exception:
            return False

    def _close_connection(self) -> None:
        try:
            from django.db import connections

            with suppress_instrumentation():
                connections[self.alias].close()
        except Exception:
            logger.debug("e2e-otel: closing the record writer connection failed", exc_info=True)

    def _written_add(self, kind: str, count: int) -> None:
        if count:
            with self._lock:
                self._written[kind] += count

    # --- writing (writer thread, inside _attempt) ---------------------------------------------------

    def _write(self, chunk: list[tuple[int, StepData]]) -> None:
        """Write a chunk in one transaction (set-based: one statement per 32 steps or snapshots
        and per 10 sessions, whatever the number of traces), then group the chunk's errors. If the
        database refuses the chunk's data (or another process created one of its sessions
        meanwhile), it is written again trace by trace, so only the refused trace is dropped. Steps
        committed by an earlier attempt of the same chunk (their sequence numbers are in
        ``_chunk_done``) are skipped on retry, and their errors wait in ``_chunk_errors``, so
        counters are never applied twice."""
        from django.db import DatabaseError, InterfaceError, OperationalError

        by_trace: dict[int, list[tuple[int, StepData]]] = {}
        for seq, step in chunk:
            if seq not in self._chunk_done:
                by_trace.setdefault(step.trace_id, []).append((seq, step))
        if by_trace:
            try:
                self._write_set(by_trace)
            except (OperationalError, InterfaceError) as exc:
                if _is_retryable(exc) or not self._connection_usable():
                    raise  # lock wait timeout / deadlock / outage: rolled back, retried as a whole
                self._write_trace_by_trace(by_trace)  # e.g. MySQL 1292: data, not outage
            except DatabaseError:  # refused data or a concurrent session insert: find out per trace
                self._write_trace_by_trace(by_trace)
        if not self._chunk_errors:
            return
        try:
            self._group_errors(self._chunk_errors)
        except (OperationalError, InterfaceError) as exc:
            if _is_retryable(exc) or not self._connection_usable():
                raise  # retried with the chunk: its traces are done, its errors are still here
            self._refused_errors(exc)
        except DatabaseError as exc:
            self._refused_errors(exc)
        self._chunk_errors = []

    def _write_set(self, by_trace: dict[int, list[tuple[int, StepData]]]) -> None:
        """One transaction for the whole chunk: a locked read of its existing sessions (in
        correlation id order, so concurrent writers lock in the same order), an insert of the new
        ones (already folded, so they are written once), the steps and snapshots, an upsert of the
        existing sessions. Every statement covers a bounded piece (``_LOCK_READ_IDS`` ids,
        ``_ROWS_PER_STATEMENT`` rows, ``_SESSIONS_PER_STATEMENT`` sessions) and the Python work in
        between gives the interpreter lock back every millisecond (``pacing.py``); the price is a
        transaction that holds its row locks a little longer. Counters, signals and ``_chunk_done``
        are applied only after the commit."""
        from django.db import transaction

        from .models import PerformanceSnapshot

        alias = self.alias
        groups = {trace_id: _ordered(items) for trace_id, items in by_trace.items()}
        results: list[tuple[int, Any, _Folded]] = []
        with transaction.atomic(using=alias):
            existing, new = self._lock_sessions(groups)
            sessions = {**existing, **new}
            for trace_id, group in groups.items():
                results.append((trace_id, sessions[trace_id], self._fold(sessions[trace_id], group)))
                self._breathe()
            self._insert_sessions(list(new.values()))
            self._insert_steps([(session, step) for _, session, folded in results for step in folded.kept])
            snapshots = [row for _, session, folded in results
                         for row in self._snapshot_rows(PerformanceSnapshot, session.correlation_id, folded.kept)]
            for piece in self._pieces(snapshots, _ROWS_PER_STATEMENT):
                PerformanceSnapshot.objects.using(alias).bulk_create(piece)
            self._save_sessions(list(existing.values()))
        for trace_id, session, folded in results:
            self._chunk_errors.extend(self._committed(trace_id, session, groups[trace_id], folded))
            self._breathe()
        for items in by_trace.values():
            self._chunk_done.update(seq for seq, _ in items)

    def _lock_sessions(self, groups: dict[int, list[StepData]]) -> tuple[dict[int, Any], dict[int, Any]]:
        """The chunk's existing sessions by trace id, locked with ``SELECT … FOR UPDATE`` (in pieces
        of ``_LOCK_READ_IDS``, in id order), and unsaved new ones for the others (inserted by
        ``_insert_sessions`` once folded)."""
        from .models import WorkflowSession

        rows = WorkflowSession.objects.using(self.alias).select_for_update()
        cids = sorted(uuid.UUID(int=trace_id) for trace_id in groups)
        found: dict[int, Any] = {}
        for piece in self._pieces(cids, _LOCK_READ_IDS):
            found.update((s.correlation_id.int, s) for s in rows.filter(correlation_id__in=piece))
        new: dict[int, Any] = {}
        for trace_id in sorted(groups):  # same order as the read
            if trace_id not in found:
                new[trace_id] = WorkflowSession(**self._new_session_fields(uuid.UUID(int=trace_id), groups[trace_id]))
                self._breathe()
        return found, new

    def _pieces(self, items: list[_T], size: int) -> Iterator[list[_T]]:
        """``items`` in slices of ``size``, one per statement, handing the interpreter lock back
        after each (``pacing.py``): a statement's values are escaped in Python."""
        for first in range(0, len(items), size):
            yield items[first:first + size]
            self._breathe()

    def _insert_sessions(self, new: list[Any]) -> None:
        """Insert the chunk's new (folded) sessions: the statement ``bulk_create`` builds (the
        backend's own ``VALUES`` list and ``RETURNING`` clause where it has one) with the values its
        ``pre_save``/``get_db_prep_save`` make, without its per-value compile, in pieces of
        ``_SESSIONS_PER_STATEMENT`` rows. One inserted by another process since the read raises
        ``IntegrityError`` (the caller then falls back to the per-trace path, which handles that
        race row by row). Backends that return no ids on insert get them with one read."""
        from django.db import connections

        from .models import WorkflowSession

        if not new:
            return
        connection = connections[self.alias]
        ops: Any = connection.ops  # the RETURNING helpers exist on the backends that can return rows
        meta = WorkflowSession._meta
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        returning = connection.features.can_return_rows_from_bulk_insert
        # The id and the correlation id come back: rows are matched by the latter, since no backend
        # promises RETURNING rows in the order of the VALUES list.
        returning_sql, returning_params = (ops.return_insert_columns([meta.pk, meta.get_field("correlation_id")])
                                           if returning else ("", ()))
        head = "{} {} ({}) ".format(ops.insert_statement(), ops.quote_name(meta.db_table),
                                    ", ".join(ops.quote_name(cast(str, field.column)) for field in fields))
        size = max(1, min(_SESSIONS_PER_STATEMENT, ops.bulk_batch_size(fields, new)))
        with connection.cursor() as cursor:
            for piece in self._pieces(new, size):
                params = [field.get_db_prep_save(field.pre_save(session, True), connection)
                          for session in piece for field in fields]
                sql = head + ops.bulk_insert_sql(fields, [["%s"] * len(fields)] * len(piece))
                if returning_sql:
                    cursor.execute(f"{sql} {returning_sql}", [*params, *returning_params])
                    by_hex = {session.correlation_id.hex: session for session in piece}
                    for pk, cid in ops.fetch_returned_insert_rows(cursor):
                        by_hex[cid.hex if isinstance(cid, uuid.UUID) else str(cid)].pk = pk
                else:
                    cursor.execute(sql, params)
        if any(session.pk is None for session in new):
            pks = dict(WorkflowSession.objects.using(self.alias)
                       .filter(correlation_id__in=[s.correlation_id for s in new])
                       .values_list("correlation_id", "pk"))
            for session in new:
                session.pk = pks[session.correlation_id]
        for session in new:  # what bulk_create leaves on saved instances
            session._state.adding = False
            session._state.db = self.alias

    def _insert_steps(self, steps: list[tuple[Any, StepData]]) -> None:
        """``bulk_create(ignore_conflicts=True)`` of the steps' TraceStep rows: the same statement
        the ORM builds (the backend's own ignore-conflicts syntax) and the same values its
        ``get_db_prep_save`` makes, without its per-field compile, which cost the writer most of
        its CPU per step."""
        from django.db import connections
        from django.db.models.constants import OnConflict

        from .models import TraceStep

        if not steps:
            return
        connection = connections[self.alias]
        ops = connection.ops
        fields = [cast("Field[Any, Any]", TraceStep._meta.get_field(name)) for name in _STEP_COLUMNS]
        adapt_dt, metadata_field = ops.adapt_datetimefield_value, fields[-1]
        rows: list[tuple[Any, ...]] = []
        for session, step in steps:
            (_, cid, span_id, parent, name, layer, component, operation, start, end, duration, status,
             metadata) = self._step_fields(session, session.correlation_id, step)
            rows.append((session.pk, cid.hex, span_id, parent, name, layer, component, operation,
                         adapt_dt(start), adapt_dt(end), None if duration is None else float(duration),
                         status, metadata_field.get_db_prep_save(metadata, connection)))
            self._breathe()
        head = "{} {} ({}) VALUES ".format(
            ops.insert_statement(on_conflict=OnConflict.IGNORE), ops.quote_name(TraceStep._meta.db_table),
            ", ".join(ops.quote_name(cast(str, field.column)) for field in fields))
        suffix = ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, (), ())
        placeholders = "({})".format(", ".join(["%s"] * len(fields)))
        size = max(1, min(_ROWS_PER_STATEMENT, ops.bulk_batch_size(fields, rows)))
        with connection.cursor() as cursor:
            for piece in self._pieces(rows, size):
                sql = head + ", ".join([placeholders] * len(piece))
                cursor.execute(f"{sql} {suffix}" if suffix else sql, [value for row in piece for value in row])

    def _save_sessions(self, sessions: list[Any]) -> None:
        """Store the chunk's (locked, existing) session rows with an upsert on the primary key
        (``INSERT … ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB). ``bulk_update`` would say the same
        with a ``CASE`` per column and row, which costs the writer several times the CPU to build."""
        from django.db import connections

        from .models import WorkflowSession

        if not sessions:
            return
        created = [session.created_at for session in sessions]  # bulk_create's pre_save resets it
        target = ["pk"] if connections[self.alias].features.supports_update_conflicts_with_target else None
        rows = WorkflowSession.objects.using(self.alias)
        for piece in self._pieces(sessions, _SESSIONS_PER_STATEMENT):
            rows.bulk_create(piece, update_conflicts=True, update_fields=list(_SESSION_FIELDS), unique_fields=target)
        for session, created_at in zip(sessions, created, strict=True):
            session.created_at = created_at

    def _write_trace_by_trace(self, by_trace: dict[int, list[tuple[int, StepData]]]) -> None:
        """The fallback: one transaction per trace, so refused data drops only its own trace."""
        from django.db import DatabaseError, InterfaceError, OperationalError

        for trace_id, items in by_trace.items():
            group = _ordered(items)
            try:
                self._chunk_errors.extend(self._write_trace(trace_id, group))
            except (OperationalError, InterfaceError) as exc:
                if _is_retryable(exc) or not self._connection_usable():
                    # Lock wait timeout / deadlock (rolled back, retry later) or the database went
                    # away: back off and retry the rest of the chunk; ``_chunk_done`` skips the
                    # traces already committed.
                    raise
                self._note_error(exc)  # e.g. MySQL 1292 arrives as OperationalError: data, not outage
                self.count_drop("db_error", len(group))
                logger.warning("e2e-otel: records of trace %032x refused by the database: %s", trace_id, exc)
            except DatabaseError as exc:  # this trace's data was refused; the others still go in
                self._note_error(exc)
                self.count_drop("db_error", len(group))
                logger.warning("e2e-otel: records of trace %032x refused by the database: %s", trace_id, exc)
            self._chunk_done.update(seq for seq, _ in items)

    def _refused_errors(self, exc: BaseException) -> None:
        self._note_error(exc)
        self.count_drop("db_error", len(self._chunk_errors))
        logger.warning("e2e-otel: %d error records refused by the database: %s", len(self._chunk_errors), exc)

    def _first_sighting(self, trace_id: int, error: ErrorData) -> bool:
        """False for the same exception seen again on an enclosing span of the same trace. The
        innermost span ends first, so the error stays on the layer/component that raised it."""
        if not error.stacktrace:  # explicit ErrorLogger.log_error calls: every call counts
            return True
        key = (trace_id, error.error_type, error.message, error.stacktrace[-300:])
        if key in self._seen_errors:
            return False
        self._seen_errors[key] = None
        if len(self._seen_errors) > _SEEN_ERRORS_CAP:
            self._seen_errors.popitem(last=False)
        return True

    def _write_trace(self, trace_id: int, group: list[StepData]) -> list[_Occurrence]:
        """One transaction for one trace's session, steps and snapshots; returns its errors."""
        from django.db import IntegrityError, transaction

        from .models import PerformanceSnapshot, TraceStep, WorkflowSession

        alias = self.alias
        cid = uuid.UUID(int=trace_id)
        with transaction.atomic(using=alias):
            sessions = WorkflowSession.objects.using(alias)
            session = sessions.select_for_update().filter(correlation_id=cid).first()
            if session is None:
                try:
                    with transaction.atomic(using=alias):
                        session = sessions.create(**self._new_session_fields(cid, group))
                except IntegrityError:  # another process created it a moment ago
                    session = sessions.select_for_update().get(correlation_id=cid)
            folded = self._fold(session, group)
            if folded.kept:
                TraceStep.objects.using(alias).bulk_create(
                    [self._step_row(TraceStep, session, cid, step) for step in folded.kept], ignore_conflicts=True
                )
            snapshots = self._snapshot_rows(PerformanceSnapshot, cid, folded.kept)
            if snapshots:
                PerformanceSnapshot.objects.using(alias).bulk_create(snapshots)
            session.save(using=alias)
        return self._committed(trace_id, session, group, folded)

    def _fold(self, session: Any, group: list[StepData]) -> _Folded:
        """Apply one trace's steps to its locked session in memory: step cap, counters, workflow
        type, metadata, and whether this closes (or reopens) the workflow. Nothing is written."""
        from .models import WorkflowStatus

        previous_status = session.status
        allowed = max(0, self._max_steps - session.step_count)
        kept, over = group[:allowed], len(group[allowed:])
        session.dropped_step_count += over
        self._update_session(session, group, kept)
        closed: str | None = None
        reason = self._close_reason(session, group)
        if reason is not None:
            end = max(s.end_ns for s in group)
            session.end_time = max(filter(None, (session.end_time, _dt(end))))
            session.duration_ms = (session.end_time - session.start_time).total_seconds() * 1000
            if not session.status_explicit:
                session.status = WorkflowStatus.FAILED if session.error_count else WorkflowStatus.COMPLETED
            if previous_status == WorkflowStatus.IN_PROGRESS or previous_status != session.status:
                closed = reason
        elif not session.status_explicit and session.status != WorkflowStatus.IN_PROGRESS:
            if session.end_time is None or any(_dt(s.start_ns) > session.end_time for s in group):
                session.status = WorkflowStatus.IN_PROGRESS  # a later request of the same workflow
            else:  # late spans of work already closed (a browser fetch ending after its click)
                late_end = _dt(max(s.end_ns for s in group))
                if late_end > session.end_time:
                    session.end_time = late_end
                    session.duration_ms = (late_end - session.start_time).total_seconds() * 1000
                session.status = WorkflowStatus.FAILED if session.error_count else WorkflowStatus.COMPLETED
        return _Folded(kept, over, closed)

    def _committed(self, trace_id: int, session: Any, group: list[StepData], folded: _Folded) -> list[_Occurrence]:
        """After the commit: counters, the ``workflow_closed`` signal, and the trace's errors (first
        sightings only) for the chunk's error grouping."""
        from . import signals
        from .models import WorkflowSession

        if folded.over:
            self.count_drop("step_cap", folded.over)
        self._written_add("session", 1)
        self._written_add("step", len(folded.kept))
        self._written_add("snapshot", sum(len(step.metrics) for step in folded.kept))
        if folded.closed is not None:
            signals.workflow_closed.send_robust(sender=WorkflowSession, session=session, reason=folded.closed)
        return [_Occurrence(error, session.correlation_id, step.span_id, session.user_id)
                for step in sorted(group, key=lambda s: s.end_ns) for error in step.errors
                if self._first_sighting(trace_id, error)]

    def _snapshot_rows(self, model: Any, cid: uuid.UUID, kept: list[StepData]) -> list[Any]:
        return [
            model(
                timestamp=_dt(metric.timestamp_ns), layer=metric.layer[:20],
                component=self._text(metric.component, 190), metric_name=metric.name,
                metric_value=metric.value, unit=metric.unit, correlation_id=cid,
                metadata=self._sanitizer.clean_mapping(dict(metric.metadata)),
            ) for step in kept for metric in step.metrics
        ]

    def _new_session_fields(self, cid: uuid.UUID, group: list[StepData]) -> dict[str, Any]:
        workflow_type, source = resolve_workflow_type([s.hints for s in group], self._rules) or _UNKNOWN_TYPE
        start = _dt(group[0].start_ns)
        root = next((s for s in group if s.is_local_root), None)
        return {
            "correlation_id": cid,
            "workflow_type": self._text(workflow_type, 100),
            "workflow_type_source": source,
            "service": group[0].service,
            "environment": str(self._config.ENVIRONMENT)[:20],
            "start_time": start,
            "last_activity": start,
            "root_span_id": root.span_id if root is not None and not root.parent_span_id else "",
        }

    def _update_session(self, session: Any, group: list[StepData], kept: list[StepData]) -> None:
        start = _dt(group[0].start_ns)
        last = _dt(max(s.end_ns for s in group))
        session.start_time = min(session.start_time, start)
        session.last_activity = max(session.last_activity, last)
        if session.service == "" and group[0].service:
            session.service = group[0].service
        resolved = resolve_workflow_type([s.hints for s in group], self._rules)
        if resolved is not None and _SOURCE_RANK[resolved[1]] < _SOURCE_RANK.get(session.workflow_type_source, 99):
            session.workflow_type = self._text(resolved[0], 100)
            session.workflow_type_source = resolved[1]
        session.step_count += len(kept)
        session.error_count += sum(1 for s in group if s.status == "error")
        if not session.root_span_id:
            root = next((s for s in group if s.is_local_root and not s.parent_span_id), None)
            if root is not None:
                session.root_span_id = root.span_id
        metadata: dict[str, Any] = {}
        for step in group:
            hints = step.hints
            if hints.user_id and not session.user_id:
                session.user_id = self._text(hints.user_id, 150)
            metadata.update(hints.metadata)
            if hints.status_message:
                metadata["status_message"] = hints.status_message
        if metadata:
            session.metadata = {**(session.metadata or {}), **self._sanitizer.clean_mapping(metadata)}

    def _close_reason(self, session: Any, group: list[StepData]) -> str | None:
        explicit = [s.hints.status for s in sorted(group, key=lambda s: s.end_ns) if s.hints.status]
        if explicit:
            session.status = explicit[-1]
            session.status_explicit = True
            return "explicit"
        if any(s.is_local_root for s in group):
            return "root_ended"
        return None

    def _step_row(self, model: Any, session: Any, cid: uuid.UUID, step: StepData) -> Any:
        """A TraceStep instance (the per-trace fallback path writes through the ORM)."""
        return model(**dict(zip(_STEP_COLUMNS, self._step_fields(session, cid, step), strict=True)))

    def _step_fields(self, session: Any, cid: uuid.UUID, step: StepData) -> tuple[Any, ...]:
        """A step's field values in ``_STEP_COLUMNS`` order, as Python values."""
        return (
            session, cid, step.span_id, step.parent_span_id, self._text(step.name, 190), step.layer[:20],
            self._text(step.component, 190), self._text(step.operation, 190), _dt(step.start_ns),
            _dt(step.end_ns), step.duration_ms, step.status, self._metadata(step.attributes),
        )

    def _metadata(self, attributes: Any) -> dict[str, Any]:
        ansi = ansi_quotes_for(attributes.get("db.system"))
        sql = {k: self._sanitizer.scrub_sql(v, ansi_quotes=ansi)  # memoised by the sanitizer
               for k, v in attributes.items() if k in _SQL_KEYS and isinstance(v, str)}
        rest = {k: v for k, v in attributes.items() if k not in sql}
        return {**self._sanitizer.clean_mapping(rest), **sql}

    def _text(self, value: str, limit: int) -> str:
        """A short field (name, component, user id…): scrubbed (the sanitizer memoises it), then cut."""
        return self._sanitizer.scrub_text(value)[:limit]

    def _group_errors(self, occurrences: list[_Occurrence]) -> None:
        """Add the chunk's errors to their open groups: per fingerprint one locked read and one
        ``occurrences = occurrences + n`` (or one insert), in fingerprint order so concurrent writer
        processes lock the rows in the same order and cannot deadlock on them."""
        from django.db import transaction
        from django.db.models import F

        from . import signals
        from .models import ErrorLog

        by_fingerprint: dict[str, list[_Occurrence]] = {}
        for occurrence in occurrences:
            by_fingerprint.setdefault(occurrence.error.fingerprint, []).append(occurrence)
        sent: list[tuple[Any, bool]] = []
        rows = ErrorLog.objects.using(self.alias)
        with transaction.atomic(using=self.alias):
            for fingerprint in sorted(by_fingerprint):
                group = sorted(by_fingerprint[fingerprint], key=lambda o: o.error.timestamp_ns)
                first, latest = group[0], group[-1]
                seen = _dt(latest.error.timestamp_ns)
                current = rows.select_for_update().filter(fingerprint=fingerprint, resolved=False) \
                    .order_by("-last_seen").first()
                if current is not None:
                    rows.filter(pk=current.pk).update(
                        occurrences=F("occurrences") + len(group), last_seen=seen,
                        correlation_id=latest.correlation_id, span_id=latest.span_id,
                    )
                    # The row is locked: what we read plus our count is what is stored now.
                    current.occurrences += len(group)
                    current.last_seen, current.correlation_id, current.span_id = (
                        seen, latest.correlation_id, latest.span_id)
                    sent.append((current, False))
                    continue
                error = first.error
                sent.append((rows.create(
                    correlation_id=latest.correlation_id, span_id=latest.span_id,
                    timestamp=_dt(error.timestamp_ns), last_seen=seen, occurrences=len(group),
                    layer=error.layer[:20], component=self._text(error.component, 190),
                    error_type=self._text(error.error_type, 190),
                    error_message=self._sanitizer.scrub_text(error.message),
                    stack_trace=self._sanitizer.scrub_text(error.stacktrace),
                    fingerprint=fingerprint, severity=error.severity, category=error.category[:50],
                    user_id=self._text(first.user_id or "", 150),
                    metadata=self._sanitizer.clean_mapping({"operation": error.operation, **error.metadata}),
                ), True))
        self._written_add("error", len(occurrences))
        for row, created in sent:
            signals.error_recorded.send_robust(sender=ErrorLog, error=row, created=created)

    def _sweep_idle(self) -> None:
        """Close in-progress workflows with no span for ``WORKFLOW_IDLE_TIMEOUT`` seconds."""
        from . import signals
        from .models import WorkflowSession, WorkflowStatus

        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self._idle_timeout)
        rows = WorkflowSession.objects.using(self.alias)
        stale: Iterable[Any] = list(
            rows.filter(status=WorkflowStatus.IN_PROGRESS, last_activity__lt=cutoff)[:_SWEEP_LIMIT]
        )
        for session in stale:
            status = WorkflowStatus.FAILED if session.error_count else WorkflowStatus.COMPLETED
            end = session.last_activity
            duration = (end - session.start_time).total_seconds() * 1000
            updated = rows.filter(pk=session.pk, status=WorkflowStatus.IN_PROGRESS).update(
                status=status, end_time=end, duration_ms=duration
            )
            if updated:
                session.status, session.end_time, session.duration_ms = status, end, duration
                signals.workflow_closed.send_robust(sender=WorkflowSession, session=session,
                                                    reason="idle_timeout")
