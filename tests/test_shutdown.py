"""The exit sequence (``e2e_otel/shutdown.py``) on private runtimes, and the SIGTERM handler.

What issue #10 asks of a graceful stop: spans are derived before the writer is flushed; the exporter
is waited for only while it makes progress; nothing queued means no wait; what is left at the
deadline is logged with counts. The end-to-end versions (real servers, MariaDB) are in
tests/test_graceful_stop.py.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from e2e_otel.bootstrap import Runtime, build_runtime
from e2e_otel.conf import resolve
from e2e_otel.export_health import ExportHealth, QuietExporter
from e2e_otel.exporters import CountingBatchSpanProcessor
from e2e_otel.shutdown import install_sigterm_handler
from tests.servers import PYTHON, REPO_ROOT, closed_port, subprocess_env


def _config(**user: Any):
    return resolve({"METRICS_ENABLED": False, "RECORDS_ENABLED": False, "TRACES_EXPORTER": "none", **user}, {})


class _Writer(SpanProcessor):
    """Stands in for the record processor: derives slowly, and notes what it had seen when flushed."""

    def __init__(self, derive_seconds: float = 0.0, flush_seconds: float = 0.0, depth: int = 0) -> None:
        self.seen: list[str] = []
        self.seen_at_flush: int | None = None
        self.derive_seconds = derive_seconds
        self.flush_seconds = flush_seconds
        self.depth = depth
        self.stopped = False

    def on_end(self, span: ReadableSpan) -> None:  # derive thread
        time.sleep(self.derive_seconds)
        self.seen.append(span.name)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.seen_at_flush = len(self.seen)
        time.sleep(self.flush_seconds)
        return True

    def shutdown(self) -> None:
        self.stopped = True

    def stats(self) -> dict[str, Any]:
        return {"queue_depth": self.depth}


def _end_spans(runtime: Runtime, count: int, prefix: str = "s") -> None:
    tracer = runtime.provider.get_tracer("t")
    for index in range(count):
        tracer.start_span(f"{prefix}{index}").end()


def test_every_ended_span_is_derived_before_the_writer_is_flushed() -> None:
    runtime = build_runtime(_config(), with_derived=False)
    writer = _Writer(derive_seconds=0.002)
    runtime.derived.add(writer)
    _end_spans(runtime, 50)
    assert runtime.shutdown(timeout=5) is True
    assert writer.seen_at_flush == 50 and len(writer.seen) == 50  # flushed after the last was derived
    assert writer.stopped
    assert runtime.last_exit is not None and runtime.last_exit.complete


def test_nothing_queued_means_no_wait() -> None:
    runtime = build_runtime(_config(), with_derived=False)
    runtime.derived.add(_Writer())
    started = time.monotonic()
    assert runtime.shutdown(timeout=5) is True
    assert time.monotonic() - started < 0.5


def test_what_is_left_at_the_deadline_is_logged_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    runtime = build_runtime(_config(), with_derived=False)
    runtime.derived.add(_Writer(flush_seconds=5, depth=7))  # a record database that does not answer
    _end_spans(runtime, 3)
    started = time.monotonic()
    assert runtime.shutdown(timeout=0.4) is False
    assert time.monotonic() - started < 1.5
    report = runtime.last_exit
    assert report is not None and not report.finished and report.records_not_written == 7
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "7 record step(s) not written" in warning and "0 span(s) not exported" in warning


class _Collector(SpanExporter):
    """An OTLP-like exporter: ``delay`` per batch; when ``down``, it logs a retry like the real ones and
    waits in its back-off until shut down (as the gRPC exporter's ``_shutdown_in_progress``)."""

    def __init__(self, *, down: bool = False, delay: float = 0.0) -> None:
        self.down = down
        self.delay = delay
        self.exported = 0
        self.backoff_cut = threading.Event()
        self.log = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.down:
            self.log.warning("Transient error UNAVAILABLE encountered, retrying in 1.00s.")
            self.backoff_cut.wait(30)
            return SpanExportResult.FAILURE
        time.sleep(self.delay)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.backoff_cut.set()


def _exporting_runtime(collector: _Collector, *, failed_before: bool = False) -> Runtime:
    runtime = build_runtime(_config(), with_derived=False)
    health = ExportHealth("collector:4317")
    if failed_before:
        health.record(False, 1, "UNAVAILABLE")
    runtime.export_health = health
    runtime.exporter = QuietExporter(collector, health)
    runtime.export_processor = CountingBatchSpanProcessor(runtime.exporter)
    runtime.provider.add_span_processor(runtime.export_processor)
    return runtime


def test_a_collector_that_makes_progress_is_waited_for() -> None:
    collector = _Collector(delay=0.05)
    runtime = _exporting_runtime(collector)
    _end_spans(runtime, 1200)  # three batches of 512 at most, each 50 ms
    assert runtime.shutdown(timeout=5) is True
    assert collector.exported == 1200


@pytest.mark.parametrize("failed_before", [False, True], ids=["first-attempt-retries", "known-down"])
def test_a_collector_that_is_down_is_not_waited_for(failed_before: bool, caplog: pytest.LogCaptureFixture) -> None:
    collector = _Collector(down=True)
    runtime = _exporting_runtime(collector, failed_before=failed_before)
    caplog.clear()
    _end_spans(runtime, 20)
    started = time.monotonic()
    assert runtime.shutdown(timeout=5) is False
    assert time.monotonic() - started < 1.0  # not the 5 s budget, not the exporter's back-off
    report = runtime.last_exit
    assert report is not None and report.finished and report.spans_not_exported == 20
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # the exit's own summary; the retry line was kept back
    cause = "UNAVAILABLE" if failed_before else "Transient error UNAVAILABLE"
    assert f"20 span(s) not exported (collector:4317: {cause}" in warnings[0]


def test_an_export_already_in_its_retry_back_off_is_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's own worker is mid-batch, retrying, when the stop begins: no new failure will be
    reported until its back-off ends, so the exit must not wait for one."""
    collector = _Collector(down=True)
    runtime = _exporting_runtime(collector)
    _end_spans(runtime, 600)  # more than a batch: the SDK's worker starts exporting at once
    health = runtime.export_health
    assert health is not None
    deadline = time.monotonic() + 5
    while not health.struggling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert health.struggling
    started = time.monotonic()
    assert runtime.shutdown(timeout=5) is False
    assert time.monotonic() - started < 1.0
    assert runtime.last_exit is not None and runtime.last_exit.spans_not_exported == 600


def test_a_real_grpc_exporter_to_a_closed_port_does_not_hold_up_exit(caplog: pytest.LogCaptureFixture) -> None:
    runtime = build_runtime(_config(TRACES_EXPORTER="otlp", OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}"),
                            with_derived=False)
    _end_spans(runtime, 5)
    started = time.monotonic()
    runtime.shutdown(timeout=5)
    assert time.monotonic() - started < 1.0  # the exporter alone would retry for up to 10 s
    assert runtime.last_exit is not None and runtime.last_exit.spans_not_exported == 5
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]


SIGTERM_PROBE = r"""
import os, signal, sys, threading, time
from e2e_otel.shutdown import install_sigterm_handler
mode = sys.argv[1]
if mode == "handled":
    signal.signal(signal.SIGTERM, lambda *a: (print("host handler", flush=True), sys.exit(3)))
def stop():
    time.sleep(0.2)  # a flush that takes a moment
    print("flushed", flush=True)
print("installed" if install_sigterm_handler(stop) else "left alone", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(5)
print("survived", flush=True)
"""


@pytest.mark.parametrize(("mode", "output", "returncode"), [
    ("default", ["installed", "flushed"], -signal.SIGTERM),  # flushed, then died of the signal as before
    ("handled", ["left alone", "host handler"], 3),          # the host's handler is not replaced
])
def test_sigterm_handler_flushes_only_where_nothing_handles_sigterm(mode: str, output: list[str],
                                                                   returncode: int) -> None:
    result = subprocess.run([PYTHON, "-c", SIGTERM_PROBE, mode], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout.splitlines() == output, result.stdout + result.stderr
    assert result.returncode == returncode


def test_sigterm_handler_is_never_installed_from_another_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    installed: list[bool] = []
    thread = threading.Thread(target=lambda: installed.append(install_sigterm_handler(lambda: None)))
    thread.start()
    thread.join()
    assert installed == [False]
    assert signal.getsignal(signal.SIGTERM) is before
