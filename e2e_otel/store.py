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

Values are made storable on the way in (``storable.py``: the same rules for every backend) and a
failed write is classified (``write_failures.py``): an outage or lock waits, missing tables drop and
back off, refused data drops only its trace or error group, each counted by reason. Only rows the
database reports inserted count as written (plain INSERTs; duplicates of stored spans are left out
beforehand). Frontend (ingested) steps have a budget of their own and never set the user; once the
server has a step in a session, they never decide its status.

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
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar, cast

from opentelemetry.instrumentation.utils import suppress_instrumentation

from . import forksafe
from .conf import Config, is_test_run
from .pacing import Pacer
from .sanitize import Sanitizer
from .spans_to_records import WORKFLOW_SOURCES, ErrorData, StepData, resolve_workflow_type
from .storable import is_storable_float, storable_json, storable_text
from .write_failures import DATA_FAILURES, Failure, FailureLog, classify_failure

if TYPE_CHECKING:
    from django.db.models import Field

logger = logging.getLogger(__name__)

__all__ = ["DROP_REASONS", "WRITTEN_KINDS", "RecordWriter"]

#: Why records were not written (docs/metrics.md says what each means).
DROP_REASONS = ("queue_full", "refused", "invalid_value", "missing_tables", "db_error", "step_cap",
                "frontend_step_cap", "unsampled_overflow")
WRITTEN_KINDS = ("session", "step", "error", "snapshot")
MAX_BACKOFF = 30.0
_UNKNOWN_TYPE = ("unknown", "unknown")
_SOURCE_RANK = {**WORKFLOW_SOURCES, "unknown": 99}
FRONTEND = "frontend"  # the layer of ingested (browser) spans: ingestion marks every one of them
_SWEEP_LIMIT = 500
LOCK_WAIT_TIMEOUT = 5  # seconds the writer waits for a row lock (MySQL/MariaDB) before retrying
MIGRATE_HINT = "run `manage.py migrate e2e_otel`"
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


class _RowsMissing(Exception):
    """The database reported fewer rows inserted than sent: the chunk is rolled back and written
    again trace by trace (classified as ``db_error`` if it happens there too)."""


class _Occurrence(NamedTuple):
    """One exception of a written trace, waiting for the chunk's error grouping."""

    error: ErrorData
    correlation_id: uuid.UUID
    span_id: str
    user_id: str


class _Folded(NamedTuple):
    """One trace's steps applied to its session in memory, waiting for the commit."""

    kept: list[StepData]
    over: int  # server steps beyond MAX_STEPS_PER_WORKFLOW (dropped as ``step_cap``)
    over_frontend: int  # frontend steps beyond MAX_FRONTEND_STEPS_PER_WORKFLOW (``frontend_step_cap``)
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


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def _short(value: str, limit: int) -> str:
    """A field the sanitizer has no reason to scrub (layer, unit, category), made storable and cut."""
    return storable_text(value)[:limit]


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
        self._max_frontend_steps = int(config.MAX_FRONTEND_STEPS_PER_WORKFLOW)
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
        self._tables_missing = False  # until a write succeeds again: hold one batch, drop the rest
        self._failure_log = FailureLog(logger)
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
        # Database down for a while: keep the newest. Without our tables nothing can be written:
        # keep one batch, to find out when they exist.
        limit = self._batch_size if self._tables_missing else self.capacity
        overflow = len(self._pending) - limit
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.count_drop("missing_tables" if self._tables_missing else "queue_full", overflow)
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
            if outcome in ("outage", "lock"):
                return
            if outcome != "ok":  # refused, db_error or missing_tables: what is not written is dropped
                unwritten = sum(1 for seq, _ in chunk if seq not in self._chunk_done)
                self.count_drop(outcome, unwritten + len(self._chunk_errors))
            self._chunk_done.clear()
            self._chunk_errors = []
            for _ in range(size):
                self._pending.popleft()
            if outcome == "missing_tables":  # the rest cannot go in either; keep only what comes next
                self.count_drop(outcome, len(self._pending))
                self._pending.clear()
            self._release_tokens()

    def _attempt(self, func: Any, *args: Any) -> Failure | Literal["ok"]:
        """Run ``func`` on our connection: ``"ok"``, or the kind of failure (``write_failures.py``).
        ``outage``/``lock``/``missing_tables`` back off; ``refused``/``db_error`` are logged (once
        per minute per kind) and the caller drops what was not written."""
        from django.db import connections

        try:
            with suppress_instrumentation():
                self._check_connection(connections[self.alias])
                func(*args)
                self._last_used = time.monotonic()
        except Exception as exc:  # never die: every failure is classified
            kind = self._classify(exc)
            if kind in ("outage", "lock"):
                self._back_off(exc, kind)
            elif kind == "missing_tables":
                self._missing_tables(exc)
            else:
                self._failure_log.warn(kind, "e2e-otel: record batch not written (%s): %s", kind,
                                       self._note_error(exc))
            return kind
        with self._lock:
            self._last_flush_ts = time.time()
        self._backoff = 0.0
        if self._tables_missing:
            self._tables_missing = False
            logger.warning("e2e-otel: the record tables exist now; writing records again")
        return "ok"

    def _classify(self, exc: BaseException) -> Failure:
        return classify_failure(exc, connection_usable=self._connection_usable)

    def _missing_tables(self, exc: BaseException) -> None:
        """No e2e-otel tables: one warning with the fix, then back off like an outage (a write is
        tried again, and succeeds once someone has migrated)."""
        error = self._note_error(exc)
        if not self._tables_missing:
            logger.warning("e2e-otel: the record tables are missing (%s): %s; records are dropped "
                           "(counted as missing_tables) until they exist", error, MIGRATE_HINT)
        self._tables_missing = True
        self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def _check_connection(self, connection: Any) -> None:
        """Keep one long-lived connection (``CONN_MAX_AGE`` is a per-request notion; honouring 0
        would reconnect every batch) but drop it when it failed or idled long enough for the server
        to have closed it."""
        configure = False
        if connection.connection is not None:
            stale = time.monotonic() - self._last_used > _PING_AFTER_IDLE
            if connection.errors_occurred or stale:
                # PyMySQL < 1.2 pings with reconnect=True: "usable" may mean silently replaced by a
                # new connection without the session setting, so it is applied again either way.
                configure = True
                if not connection.is_usable():
                    connection.close()
            connection.errors_occurred = False
        if connection.connection is None:
            # Connect here rather than letting the ORM reconnect implicitly, so every connection the
            # writer uses gets the session setting below.
            connection.ensure_connection()
            configure = True
        if configure and connection.vendor == "mysql":
            # A host-app transaction holding row locks must not park the writer for InnoDB's
            # default 50 s: give up quickly, back off and retry the batch.
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION innodb_lock_wait_timeout = %s", [LOCK_WAIT_TIMEOUT])

    def _back_off(self, exc: BaseException, kind: Failure) -> None:
        error = self._note_error(exc)
        self._close_connection()
        self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        trouble = "waited too long for a lock" if kind == "lock" else "cannot reach the database"
        # In a host's test run the test's own transaction holds the locks (SQLite: the whole test
        # database) until it ends: expected, retried, not worth a warning line in the test output.
        level = logging.DEBUG if kind == "lock" and is_test_run() else logging.WARNING
        logger.log(level, "e2e-otel: record writer %s (%s); retry in %.1fs", trouble, error, self._backoff)

    def _note_error(self, exc: BaseException) -> str:
        """Remember ``exc`` as ``last_error`` and return it as it may be shown: scrubbed (database
        messages quote the refused values), cut to 500 characters."""
        error = f"{type(exc).__name__}: {self._sanitizer.scrub_text(str(exc))[:500]}"
        with self._lock:
            self._last_error = error
        return error

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
        by_trace: dict[int, list[tuple[int, StepData]]] = {}
        for seq, step in chunk:
            if seq not in self._chunk_done:
                by_trace.setdefault(step.trace_id, []).append((seq, step))
        if by_trace:
            try:
                self._write_set(by_trace)
            except Exception as exc:
                if self._classify(exc) not in DATA_FAILURES:
                    raise  # lock wait timeout, deadlock, outage, no tables: rolled back, retried as a whole
                self._write_trace_by_trace(by_trace)  # refused data or a concurrent session insert
        if self._chunk_errors:
            self._group_errors()

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
            frontend = self._frontend_counts([session for trace_id, session in existing.items()
                                              if self._needs_frontend_counts(session, groups[trace_id])])
            for trace_id, group in groups.items():
                session = sessions[trace_id]
                results.append((trace_id, session, self._fold(session, group, frontend.get(session.pk, (0, 0)))))
                self._breathe()
            self._insert_sessions(list(new.values()))
            steps = [(session, step) for _, session, folded in results for step in folded.kept]
            inserted = self._insert_steps(steps)
            if inserted != len(steps):  # no backend does this without IGNORE; if one did, say so
                raise _RowsMissing(f"{len(steps)} steps sent, {inserted} inserted")
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

    def _insert_steps(self, steps: list[tuple[Any, StepData]]) -> int:
        """``bulk_create`` of the steps' TraceStep rows: the statement the ORM builds and the
        values its ``get_db_prep_save`` makes, without its per-field compile, which cost the writer
        most of its CPU per step. Plain INSERTs: a duplicate span raises (the per-trace path skips
        stored spans), where ``INSERT IGNORE`` also turned refused rows into warnings and let them
        count as written. Returns the rows the database reports inserted."""
        from django.db import connections

        from .models import TraceStep

        if not steps:
            return 0
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
            ops.insert_statement(), ops.quote_name(TraceStep._meta.db_table),
            ", ".join(ops.quote_name(cast(str, field.column)) for field in fields))
        placeholders = "({})".format(", ".join(["%s"] * len(fields)))
        size = max(1, min(_ROWS_PER_STATEMENT, ops.bulk_batch_size(fields, rows)))
        inserted = 0
        with connection.cursor() as cursor:
            for piece in self._pieces(rows, size):
                cursor.execute(head + ", ".join([placeholders] * len(piece)), [value for row in piece for value in row])
                inserted += cursor.rowcount
        return inserted

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
        """The fallback: one transaction per trace, so refused data drops only its own trace. A
        lock wait, deadlock, outage or missing table raises: the writer backs off and retries the
        rest of the chunk (``_chunk_done`` skips the traces already committed)."""
        for trace_id, items in by_trace.items():
            group = _ordered(items)
            try:
                self._chunk_errors.extend(self._write_trace(trace_id, group))
            except Exception as exc:
                kind = self._classify(exc)
                if kind not in DATA_FAILURES:
                    raise
                self._refused(kind, exc, len(group), f"the records of trace {trace_id:032x}")
            self._chunk_done.update(seq for seq, _ in items)

    def _refused(self, kind: Failure, exc: BaseException, count: int, what: str) -> None:
        """Drop and count what the database refused; warn once a minute per kind."""
        self.count_drop(kind, count)
        self._failure_log.warn(kind, "e2e-otel: %s not written (%s): %s", what, kind, self._note_error(exc))

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
            created = session is None
            if session is None:
                try:
                    with transaction.atomic(using=alias):
                        session = sessions.create(**self._new_session_fields(cid, group))
                except IntegrityError:  # another process created it a moment ago
                    session = sessions.select_for_update().get(correlation_id=cid)
                    created = False
            # Spans stored before (a chunk retried after a lost commit, a span sent twice) or twice
            # in this group: plain INSERTs refuse duplicates, so they are left out here.
            group = self._unstored(None if created else session, group)
            if not group:
                return []
            frontend = self._frontend_counts([session]).get(session.pk, (0, 0)) \
                if not created and self._needs_frontend_counts(session, group) else (0, 0)
            folded = self._fold(session, group, frontend)
            if folded.kept:
                TraceStep.objects.using(alias).bulk_create(
                    [self._step_row(TraceStep, session, cid, step) for step in folded.kept])
            snapshots = self._snapshot_rows(PerformanceSnapshot, cid, folded.kept)
            if snapshots:
                PerformanceSnapshot.objects.using(alias).bulk_create(snapshots)
            session.save(using=alias)
        return self._committed(trace_id, session, group, folded)

    def _unstored(self, session: Any, group: list[StepData]) -> list[StepData]:
        """``group`` without repeats and, for an existing ``session``, without the spans it already
        has (one read): ``INSERT IGNORE`` would skip them, but would hide refused rows as well."""
        from .models import TraceStep

        stored = set() if session is None else set(TraceStep.objects.using(self.alias).filter(
            workflow_session=session, span_id__in=[s.span_id for s in group]).values_list("span_id", flat=True))
        fresh = []
        for step in group:
            if step.span_id not in stored:
                stored.add(step.span_id)
                fresh.append(step)
        return fresh

    def _needs_frontend_counts(self, session: Any, group: list[StepData]) -> bool:
        """Whether folding ``group`` into this existing session depends on its stored frontend
        steps: it gets frontend steps now, or has errors (are they the server's?), or nears the
        step cap (whose budget is the server's). Usually not, so usually no read."""
        return bool(session.error_count) or session.step_count + len(group) > self._max_steps or any(
            s.layer == FRONTEND for s in group)

    def _frontend_counts(self, sessions: list[Any]) -> dict[int, tuple[int, int]]:
        """``{session pk: (frontend steps, frontend error steps)}`` stored so far for ``sessions``
        (locked by the caller): one grouped read."""
        from django.db.models import Count, Q

        from .models import TraceStep

        if not sessions:
            return {}
        rows = (TraceStep.objects.using(self.alias)
                .filter(workflow_session__in=[s.pk for s in sessions], layer=FRONTEND)
                .values("workflow_session").order_by()
                .annotate(steps=Count("id"), errors=Count("id", filter=Q(status="error"))))
        return {row["workflow_session"]: (row["steps"], row["errors"]) for row in rows}

    def _fold(self, session: Any, group: list[StepData], frontend: tuple[int, int] = (0, 0)) -> _Folded:
        """Apply one trace's steps to its locked session in memory: step caps, counters, workflow
        type, metadata, and whether this closes (or reopens) the workflow. Nothing is written.

        ``frontend``: the session's stored frontend steps and frontend error steps. Frontend
        (ingested) steps have a budget of their own and never set the user. Once the server has
        a step in the session, only server steps close or reopen it and only server errors fail
        it; a workflow seen only by the browser so far is closed by its own spans."""
        from .models import WorkflowStatus

        previous_status = session.status
        frontend_steps, frontend_errors = frontend
        server = [s for s in group if s.layer != FRONTEND] if frontend_steps or any(
            s.layer == FRONTEND for s in group) else group
        browser_only = False
        if server is group:  # the common case: no frontend step in sight
            allowed = max(0, self._max_steps - session.step_count)
            kept, over, over_frontend = group[:allowed], len(group[allowed:]), 0
        else:
            browser_only = not server and session.step_count == frontend_steps
            kept, over, over_frontend = self._within_budgets(session.step_count - frontend_steps,
                                                             frontend_steps, group)
            frontend_errors += sum(1 for s in kept if s.layer == FRONTEND and s.status == "error")
        session.dropped_step_count += over + over_frontend
        self._update_session(session, group, kept, server)
        deciding = group if browser_only else server  # the steps that may decide the status
        failed = (session.error_count if browser_only else session.error_count - frontend_errors) > 0
        closed: str | None = None
        reason = self._close_reason(session, deciding)
        if reason is not None:
            end = max(s.end_ns for s in group)
            session.end_time = max(filter(None, (session.end_time, _dt(end))))
            session.duration_ms = (session.end_time - session.start_time).total_seconds() * 1000
            if not session.status_explicit:
                session.status = WorkflowStatus.FAILED if failed else WorkflowStatus.COMPLETED
            if previous_status == WorkflowStatus.IN_PROGRESS or previous_status != session.status:
                closed = reason
        elif not session.status_explicit and session.end_time is not None \
                and session.status != WorkflowStatus.IN_PROGRESS:
            if any(_dt(s.start_ns) > session.end_time for s in deciding):
                session.status = WorkflowStatus.IN_PROGRESS  # a later request of the same workflow
            else:  # late spans of work already closed (a browser click ending after its requests)
                late_end = _dt(max(s.end_ns for s in group))
                if late_end > session.end_time:
                    session.end_time = late_end
                    session.duration_ms = (late_end - session.start_time).total_seconds() * 1000
                if deciding:  # browser spans alone keep the server's status
                    session.status = WorkflowStatus.FAILED if failed else WorkflowStatus.COMPLETED
        return _Folded(kept, over, over_frontend, closed)

    def _within_budgets(self, server_steps: int, frontend_steps: int,
                        group: list[StepData]) -> tuple[list[StepData], int, int]:
        """``(kept, server steps over MAX_STEPS_PER_WORKFLOW, frontend steps over
        MAX_FRONTEND_STEPS_PER_WORKFLOW)``: a client cannot spend the server's budget."""
        server_left = max(0, self._max_steps - server_steps)
        frontend_left = max(0, self._max_frontend_steps - frontend_steps)
        kept: list[StepData] = []
        over = over_frontend = 0
        for step in group:
            if step.layer == FRONTEND:
                if frontend_left:
                    frontend_left -= 1
                    kept.append(step)
                else:
                    over_frontend += 1
            elif server_left:
                server_left -= 1
                kept.append(step)
            else:
                over += 1
        return kept, over, over_frontend

    def _committed(self, trace_id: int, session: Any, group: list[StepData], folded: _Folded) -> list[_Occurrence]:
        """After the commit: counters, the ``workflow_closed`` signal, and the trace's errors (first
        sightings only) for the chunk's error grouping."""
        from . import signals
        from .models import WorkflowSession

        if folded.over:
            self.count_drop("step_cap", folded.over)
        if folded.over_frontend:
            self.count_drop("frontend_step_cap", folded.over_frontend)
        metrics = [metric.value for step in folded.kept for metric in step.metrics]
        invalid = sum(1 for value in metrics if not is_storable_float(value))
        if invalid:
            self.count_drop("invalid_value", invalid)
        self._written_add("session", 1)
        self._written_add("step", len(folded.kept))
        self._written_add("snapshot", len(metrics) - invalid)
        if folded.closed is not None:
            signals.workflow_closed.send_robust(sender=WorkflowSession, session=session, reason=folded.closed)
        return [_Occurrence(error, session.correlation_id, step.span_id, session.user_id)
                for step in sorted(group, key=lambda s: s.end_ns) for error in step.errors
                if self._first_sighting(trace_id, error)]

    def _snapshot_rows(self, model: Any, cid: uuid.UUID, kept: list[StepData]) -> list[Any]:
        """The steps' metrics as PerformanceSnapshot rows; a NaN or infinite value has no row
        (``_committed`` counts it as ``invalid_value``)."""
        return [
            model(
                timestamp=_dt(metric.timestamp_ns), layer=_short(metric.layer, 20),
                component=self._text(metric.component, 190), metric_name=self._text(metric.name, 100),
                metric_value=metric.value, unit=_short(metric.unit, 20), correlation_id=cid,
                metadata=self._json(metric.metadata),
            ) for step in kept for metric in step.metrics if is_storable_float(metric.value)
        ]

    def _new_session_fields(self, cid: uuid.UUID, group: list[StepData]) -> dict[str, Any]:
        workflow_type, source = resolve_workflow_type([s.hints for s in group], self._rules) or _UNKNOWN_TYPE
        start = _dt(group[0].start_ns)
        root = next((s for s in group if s.is_local_root), None)
        return {
            "correlation_id": cid,
            "workflow_type": self._text(workflow_type, 100),
            "workflow_type_source": source,
            "service": self._text(group[0].service, 100),
            "environment": str(self._config.ENVIRONMENT)[:20],
            "start_time": start,
            "last_activity": start,
            "root_span_id": root.span_id if root is not None and not root.parent_span_id else "",
        }

    def _update_session(self, session: Any, group: list[StepData], kept: list[StepData],
                        server: list[StepData]) -> None:
        """Times and counters from every step; user, workflow type, metadata and status message
        only from ``server`` (not ingested) steps."""
        start = _dt(group[0].start_ns)
        last = _dt(max(s.end_ns for s in group))
        session.start_time = min(session.start_time, start)
        session.last_activity = max(session.last_activity, last)
        if session.service == "" and group[0].service:
            session.service = self._text(group[0].service, 100)
        resolved = resolve_workflow_type([s.hints for s in server], self._rules)
        if resolved is not None and _SOURCE_RANK[resolved[1]] < _SOURCE_RANK.get(session.workflow_type_source, 99):
            session.workflow_type = self._text(resolved[0], 100)
            session.workflow_type_source = resolved[1]
        session.step_count += len(kept)
        # Server errors count even beyond the step cap; frontend ones only when stored, so that the
        # stored frontend error steps tell how many of ``error_count`` the browser reported.
        session.error_count += sum(1 for s in server if s.status == "error")
        if server is not group:
            session.error_count += sum(1 for s in kept if s.layer == FRONTEND and s.status == "error")
        if not session.root_span_id:
            root = next((s for s in group if s.is_local_root and not s.parent_span_id), None)
            if root is not None:
                session.root_span_id = root.span_id
        metadata: dict[str, Any] = {}
        for step in server:
            hints = step.hints
            if hints.user_id and not session.user_id:
                session.user_id = self._text(hints.user_id, 150)
            metadata.update(hints.metadata)
            if hints.status_message:
                metadata["status_message"] = hints.status_message
        if metadata:
            session.metadata = storable_json({**(session.metadata or {}), **self._sanitizer.clean_mapping(metadata)})

    def _close_reason(self, session: Any, group: list[StepData]) -> str | None:
        """``explicit`` (complete/fail_workflow), ``root_ended`` or ``None``; ``group``: the steps that
        may decide the status (``_fold``)."""
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
            session, cid, step.span_id, step.parent_span_id, self._text(step.name, 190), _short(step.layer, 20),
            self._text(step.component, 190), self._text(step.operation, 190), _dt(step.start_ns),
            _dt(step.end_ns), step.duration_ms, step.status, self._metadata(step.attributes),
        )

    def _metadata(self, attributes: Any) -> dict[str, Any]:
        """Step metadata: the exporter's own scrubbing (``Sanitizer.clean_attributes``), so the stored
        and the exported copy of a span cannot differ; then storable (``storable.py``)."""
        return storable_json(dict(self._sanitizer.clean_attributes(attributes)))

    def _json(self, data: Any) -> Any:
        """A JSON column's value: sanitised (secrets), then storable (``storable.py``)."""
        return storable_json(self._sanitizer.clean_mapping(dict(data)))

    def _text(self, value: str, limit: int) -> str:
        """A short field (name, component, user id…): scrubbed (the sanitizer memoises it), made
        storable, then cut."""
        return storable_text(self._sanitizer.scrub_text(value))[:limit]

    def _group_errors(self) -> None:
        """Add the chunk's errors (``_chunk_errors``) to their open groups: per fingerprint one
        locked read and one ``occurrences = occurrences + n`` (or one insert), in fingerprint order
        so concurrent writer processes lock the rows in the same order and cannot deadlock on them.
        One transaction for all; if the database refuses one group's data, one transaction per
        group, so only the refused group is dropped. Committed groups leave ``_chunk_errors`` at
        once: a retry after an outage never counts them twice."""
        from django.db import transaction

        from . import signals
        from .models import ErrorLog

        by_fingerprint: dict[str, list[_Occurrence]] = {}
        for occurrence in self._chunk_errors:
            by_fingerprint.setdefault(occurrence.error.fingerprint, []).append(occurrence)
        order = sorted(by_fingerprint)
        sent: list[tuple[Any, bool]] = []
        try:
            with transaction.atomic(using=self.alias):
                sent = [self._add_to_group(fingerprint, by_fingerprint[fingerprint]) for fingerprint in order]
        except Exception as exc:
            if self._classify(exc) not in DATA_FAILURES:
                raise  # retried with the chunk: its traces are done, its errors are still here
            sent = []
            for fingerprint in order:
                group = by_fingerprint[fingerprint]
                try:
                    with transaction.atomic(using=self.alias):
                        sent.append(self._add_to_group(fingerprint, group))
                except Exception as refused:
                    kind = self._classify(refused)
                    if kind not in DATA_FAILURES:
                        raise
                    self._refused(kind, refused, len(group),
                                  f"{len(group)} occurrences of error group {fingerprint[:12]}")
                else:
                    self._written_add("error", len(group))
                self._chunk_errors = [o for o in self._chunk_errors if o.error.fingerprint != fingerprint]
        else:
            self._written_add("error", len(self._chunk_errors))
        self._chunk_errors = []
        for row, created in sent:
            signals.error_recorded.send_robust(sender=ErrorLog, error=row, created=created)

    def _add_to_group(self, fingerprint: str, group: list[_Occurrence]) -> tuple[Any, bool]:
        """One fingerprint's occurrences added to its open group (inside the caller's transaction):
        ``(row, created)``."""
        from django.db.models import F

        from .models import ErrorLog

        rows = ErrorLog.objects.using(self.alias)
        group = sorted(group, key=lambda o: o.error.timestamp_ns)
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
            current.last_seen, current.correlation_id, current.span_id = seen, latest.correlation_id, latest.span_id
            return current, False
        error = first.error
        return rows.create(
            correlation_id=latest.correlation_id, span_id=latest.span_id,
            timestamp=_dt(error.timestamp_ns), last_seen=seen, occurrences=len(group),
            layer=_short(error.layer, 20), component=self._text(error.component, 190),
            error_type=self._text(error.error_type, 190),
            error_message=storable_text(self._sanitizer.scrub_text(error.message)),
            stack_trace=storable_text(self._sanitizer.scrub_text(error.stacktrace)),
            fingerprint=fingerprint, severity=error.severity, category=_short(error.category, 50),
            user_id=self._text(first.user_id or "", 150),
            metadata=self._json({"operation": error.operation, **error.metadata}),
        ), True

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
