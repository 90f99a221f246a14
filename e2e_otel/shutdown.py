"""A graceful stop: flush what was accepted within ``SHUTDOWN_TIMEOUT``, then say what was not.

Two legs run at once against one deadline, because they share nothing and neither should pay for
the other's outage:

- **export** (its own thread): the batch processor sends what it holds while the exporter makes
  progress. A failed or retried attempt (``ExportHealth.trouble``), or a collector already known to
  be down, ends the wait: the exporter is shut down, which cuts its retry back-off short, and what
  is left fails at once (counted as failed spans).
- **records** (the shutdown thread): the derive queue is drained first, so every ended span has
  become steps, then each derived processor is flushed — the record writer writes the steps and
  closes the sessions whose root span ended — and only then do they stop.

Then the provider is shut down (our processors again, which is now quick, and any processor the host
added). Whatever is still queued at the deadline is logged in one warning, with counts. A process
with nothing queued passes through in milliseconds.

Triggers: ``atexit`` (end of a ``manage.py`` command, ``sys.exit``, gunicorn workers), gunicorn's
``worker_exit`` hook (``gunicorn.py``), and SIGTERM in a process that has no handler of its own
(``install_sigterm_handler``). ``Runtime.shutdown`` makes repeated calls no-ops.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bootstrap import Runtime

logger = logging.getLogger(__name__)

__all__ = ["ExitReport", "install_sigterm_handler", "run_exit_sequence"]

_POLL = 0.005  # how often the export leg looks at the exporter's health while it flushes


@dataclass
class ExitReport:
    """What a graceful stop could not deliver (all zero and ``finished`` when it delivered everything)."""

    finished: bool = False  # both legs ended before the deadline
    spans_not_exported: int = 0
    export_reason: str | None = None
    spans_not_derived: int = 0
    records_not_written: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.finished and not (self.spans_not_exported or self.spans_not_derived
                                      or self.records_not_written)


def run_exit_sequence(runtime: Runtime, timeout: float) -> ExitReport:
    """Flush and stop ``runtime`` within ``timeout`` seconds; logs a warning unless all was delivered.

    Runs the work on a daemon thread and returns at the deadline even if that thread is stuck (a
    database that does not answer), so exit is bounded.
    """
    started = time.monotonic()
    deadline = started + max(0.0, timeout)
    report = ExitReport()
    worker = threading.Thread(target=_flush_and_stop, args=(runtime, deadline, report),
                              name="e2e-otel-shutdown", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    report.finished = not worker.is_alive()
    if not report.finished and runtime.export_processor is not None:  # the export leg may not have counted
        report.spans_not_exported = max(report.spans_not_exported, getattr(runtime.export_processor, "pending", 0))
    report.spans_not_derived = runtime.derived.queue.pending
    report.records_not_written = _records_queued(runtime)
    report.seconds = time.monotonic() - started
    if report.complete:
        logger.debug("e2e-otel: shutdown delivered everything in %.3f s", report.seconds)
    else:
        logger.warning(
            "e2e-otel: shutdown after %.1f s (SHUTDOWN_TIMEOUT %.1f s) left %d span(s) not exported%s, "
            "%d span(s) not derived and %d record step(s) not written",
            report.seconds, timeout, report.spans_not_exported,
            f" ({report.export_reason})" if report.export_reason else "",
            report.spans_not_derived, report.records_not_written)
    return report


def _flush_and_stop(runtime: Runtime, deadline: float, report: ExitReport) -> None:
    """The shutdown thread: export leg started, records leg run here, then everything stopped."""
    export = None
    if runtime.owns_provider and runtime.export_processor is not None:
        export = threading.Thread(target=_export_leg, args=(runtime, deadline, report),
                                  name="e2e-otel-shutdown-export", daemon=True)
        export.start()
    try:
        runtime.derived.force_flush(_millis_left(deadline))
    except Exception:
        logger.exception("e2e-otel: flushing records at shutdown failed")
    if export is not None:
        export.join(max(0.0, deadline - time.monotonic()))
        if export.is_alive():
            return  # the deadline passed: stopping the rest could block; the process is exiting anyway
    try:
        if runtime.owns_provider:
            runtime.provider.shutdown()
        else:
            runtime.derived.shutdown()
    except Exception:
        logger.exception("e2e-otel: shutting down the tracer provider failed")


def _export_leg(runtime: Runtime, deadline: float, report: ExitReport) -> None:
    """The export thread of the exit: flush while batches go through, give up at the first failure."""
    processor, exporter, health = runtime.export_processor, runtime.exporter, runtime.export_health
    if processor is None or exporter is None:
        return
    failed_before = health.failed_spans if health is not None else 0
    if health is not None:
        health.muted = True  # what fails from here on is in the exit warning
    if health is not None and (health.collector_down or health.struggling):
        given_up = True  # the last attempt failed, or the running one is retrying: waiting would only wait
    else:
        if health is not None:
            health.trouble.clear()
        flusher = threading.Thread(target=processor.force_flush, name="e2e-otel-shutdown-flush", daemon=True)
        flusher.start()
        while flusher.is_alive() and time.monotonic() < deadline:
            if health is not None and health.trouble.is_set():
                break
            flusher.join(_POLL)
        given_up = flusher.is_alive()
    if given_up:
        exporter.shutdown()  # cuts a retry back-off short; later batches fail at once
    processor.shutdown(timeout_millis=_millis_left(deadline))  # type: ignore[call-arg]
    # Failed at the exit, plus never attempted (still queued when the processor stopped).
    failed = health.failed_spans - failed_before if health is not None else 0
    report.spans_not_exported = failed + getattr(processor, "pending", 0)
    if report.spans_not_exported and health is not None:
        report.export_reason = f"{health.endpoint}: {health.last_reason or 'export failed'}"


def _millis_left(deadline: float) -> int:
    return max(0, int((deadline - time.monotonic()) * 1000))


def _records_queued(runtime: Runtime) -> int:
    """Steps accepted by a record writer and not written yet (read from ``stats()``)."""
    total = 0
    for processor in runtime.derived.processors:
        stats = getattr(processor, "stats", None)
        if not callable(stats):
            continue
        try:
            depth = stats().get("queue_depth", 0)
        except Exception:
            continue
        total += depth if isinstance(depth, int) else 0
    return total


def install_sigterm_handler(stop: Callable[[], Any]) -> bool:
    """On SIGTERM, call ``stop()`` and then die of the signal as the process would have without us.

    Only in the main thread (``signal.signal`` works nowhere else) and only when SIGTERM still has
    its default action: a server that handles it (gunicorn, uwsgi, celery, runserver's autoreloader)
    exits through its own path, where ``atexit`` and ``worker_exit`` flush. Without a handler Python
    dies at once, skipping ``atexit``, and every accepted record is lost. The handler runs on the main
    thread between two bytecodes; ``stop()`` is bounded by ``SHUTDOWN_TIMEOUT`` and does its work on
    its own threads. A second SIGTERM during the flush ends the process at once. Returns whether it
    installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
    except (AttributeError, ValueError):  # a platform without SIGTERM
        return False

    def flush_then_die(signum: int, frame: FrameType | None) -> None:
        try:
            stop()
        finally:
            # Chain to the default action: the exit status stays "killed by SIGTERM".
            if signal.getsignal(signal.SIGTERM) is flush_then_die:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_die)
    return True
