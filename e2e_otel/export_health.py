"""Collector outages: export failures made quiet, reported once a minute, and readable at exit.

With the collector down, the OTLP exporters log a warning per retry and an error per batch (gRPC:
``StatusCode.UNAVAILABLE`` every few seconds, even from an idle ``runserver``). ``QuietExporter``
wraps the real exporter: whatever the exporter logs at WARNING or above *while our export call runs on
this thread* is kept back (a thread-local marks the call, so the same loggers used elsewhere, e.g. by
the host app's own metrics exporter, are untouched), an exception becomes ``FAILURE``, and
``ExportHealth`` logs one warning per ``interval`` naming the endpoint, the last reason and how many
batches and spans failed since the previous warning. Failed spans are also counted in
``e2e_otel_exported_spans_total{result="failure"}`` (``metrics.CountingSpanExporter`` sits outside).

``ExportHealth`` is what the exit sequence (``shutdown.py``) reads to decide whether waiting for the
exporter is worth anything: it waits while batches succeed and stops at the first failed or retried
attempt.

Both run on the SDK's export thread; ``ExportHealth``'s readers run on the shutdown thread.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger(__name__)

__all__ = ["ExportHealth", "QuietExporter"]

#: Loggers of the OTLP exporters (and their HTTP transport) whose failure lines we keep back.
_EXPORTER_LOGGER_PREFIX = "opentelemetry.exporter"


class ExportHealth:
    """Outcomes of export attempts, and the once-per-``interval`` warning while they fail.

    ``record`` runs on the export thread; ``trouble``/``failed_spans``/``collector_down`` are read by
    the shutdown thread. Counters are plain ints written by one thread at a time (the SDK exports
    under its export lock).
    """

    def __init__(self, endpoint: str, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.endpoint = endpoint
        self.interval = interval
        self._clock = clock
        self._next_warning = float("-inf")
        self._unreported_batches = 0
        self._unreported_spans = 0
        self.failed_batches = 0
        self.failed_spans = 0
        self.collector_down = False  # the last attempt failed
        self.last_reason: str | None = None
        self.trouble = threading.Event()  # set by any failure or retry; the exit sequence clears it
        self.muted = False  # set by the exit sequence, which reports in its own warning
        self._attempt_reason: str | None = None
        self._attempt_running = False
        self._outage_from = (0, 0)  # (failed_batches, failed_spans) when the current outage began

    @property
    def struggling(self) -> bool:
        """An attempt is running and has already reported a problem (it is in a retry back-off)."""
        return self._attempt_running and self._attempt_reason is not None

    def begin(self) -> None:
        """An export attempt starts (export thread)."""
        self._attempt_reason = None
        self._attempt_running = True

    def noted(self, reason: str) -> None:
        """The exporter reported a problem (a retry, a failure) in the middle of an attempt; the
        first one names the cause ("UNAVAILABLE ... Connection refused"), later ones the aftermath."""
        if self._attempt_reason is None:
            self._attempt_reason = reason
        self.trouble.set()

    def record(self, ok: bool, spans: int, reason: str | None = None) -> None:
        """The outcome of one attempt of ``spans`` spans (export thread)."""
        self._attempt_running = False
        if ok:
            if self.collector_down:
                logger.info("e2e-otel: exporting spans to %s again, after %d failed batch(es) with %d span(s)",
                            self.endpoint, self.failed_batches - self._outage_from[0],
                            self.failed_spans - self._outage_from[1])
                self._unreported_batches = self._unreported_spans = 0
                self._next_warning = float("-inf")
            self.collector_down = False
            return
        if not self.collector_down:
            self._outage_from = (self.failed_batches, self.failed_spans)
        self.collector_down = True
        reason = reason or self._attempt_reason
        if reason:
            self.last_reason = reason
        self.failed_batches += 1
        self.failed_spans += spans
        self._unreported_batches += 1
        self._unreported_spans += spans
        self.trouble.set()
        now = self._clock()
        if self.muted or now < self._next_warning:
            return
        self._next_warning = now + self.interval
        logger.warning(
            "e2e-otel: cannot export spans to %s (%s); %d batch(es), %d span(s) not exported (counted in "
            "e2e_otel_exported_spans_total{result=\"failure\"}); next report in %.0f s at the earliest.",
            self.endpoint, self.last_reason or "export failed", self._unreported_batches,
            self._unreported_spans, self.interval)
        self._unreported_batches = self._unreported_spans = 0


class _Attempt(threading.local):
    health: ExportHealth | None = None


_attempt = _Attempt()


class _KeepBackDuringExport(logging.Filter):
    """Keeps back WARNING+ records logged on a thread while one of our export calls runs there, and
    hands their text to that call's ``ExportHealth``. Runs on whatever thread logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        health = _attempt.health
        if health is None or record.levelno < logging.WARNING:
            return True
        health.noted(_cause(record))
        return False


#: Where the cause starts in the OTLP exporters' messages ("... Error details: <cause>",
#: "... reason: <cause>", "... due to <cause>").
_CAUSE_MARKERS = ("error details: ", "reason: ", "due to ")


def _cause(record: logging.LogRecord) -> str:
    """The cause an exporter's log record names, short: "UNAVAILABLE: failed to connect to all
    addresses; ... Connection refused" rather than the whole retry sentence."""
    try:
        args = record.args if isinstance(record.args, tuple) else ()
        error = next((arg for arg in args if isinstance(arg, BaseException)), None)
        if error is not None:
            return f"{type(error).__name__}: {error}"[:300]
        code = next((arg.name for arg in args if isinstance(arg, enum.Enum)), None)
        message = record.getMessage()
        lowered = message.lower()
        cause = message
        for marker in _CAUSE_MARKERS:
            found = lowered.find(marker)
            if found >= 0:
                cause = message[found + len(marker):]
                break
        return (f"{code}: {cause}" if code else cause)[:300]
    except Exception:  # a malformed record must not break the export
        return str(record.msg)[:300]


_keep_back = _KeepBackDuringExport()
_filter_lock = threading.Lock()


def install_log_filter() -> None:
    """Put the filter on every exporter logger that exists now (call after importing the exporter).

    A logger's filters apply only to records logged on that very logger, not to its children's, so
    each module logger gets it; the exporter modules are imported at set-up (``exporters.py``). It
    goes first: the gRPC exporter's own ``DuplicateFilter`` drops a repeat of a message within 20 s,
    and every retry must still reach ``ExportHealth`` (the exit sequence stops waiting on it).
    """
    with _filter_lock:
        names = [name for name, item in logging.root.manager.loggerDict.items()
                 if isinstance(item, logging.Logger) and name.startswith(_EXPORTER_LOGGER_PREFIX)]
        for name in names:
            filters = logging.getLogger(name).filters
            if _keep_back not in filters:
                filters.insert(0, _keep_back)


class QuietExporter(SpanExporter):
    """Runs ``inner`` with its failure logging kept back and reported through ``health``.

    Runs on the SDK's export thread. ``shutdown`` is forwarded once (the exit sequence may call it
    early, to cut an exporter's retry back-off short, before the batch processor calls it again);
    after it every export fails at once.
    """

    def __init__(self, inner: SpanExporter, health: ExportHealth) -> None:
        self.inner = inner
        self.health = health
        self._shut_down = False
        self._shutdown_lock = threading.Lock()
        install_log_filter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:  # the cause stays the one that made the exit give up
            self.health.record(False, len(spans))
            return SpanExportResult.FAILURE
        self.health.begin()
        previous, _attempt.health = _attempt.health, self.health
        reason: str | None = None
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # the SDK would log a traceback per batch
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"[:300]
        finally:
            _attempt.health = previous
        self.health.record(result is SpanExportResult.SUCCESS, len(spans), reason)
        return result

    def shutdown(self) -> None:
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        previous, _attempt.health = _attempt.health, self.health
        try:
            self.inner.shutdown()
        except Exception as exc:
            logger.debug("e2e-otel: exporter shutdown failed: %s", exc)
        finally:
            _attempt.health = previous

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
