"""Build the tracing runtime from settings and install it once per process.

``build_runtime(config)`` is pure (tests build private runtimes with it); ``install(config)`` makes it
the process's global provider, sets the propagators and instruments Django/PyMySQL/requests/SQLite exactly
once, and arranges the graceful stop (``atexit``, SIGTERM when unhandled; see ``shutdown.py``). Called
from ``AppConfig.ready()`` and from the ``opentelemetry-instrument`` configurator.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils.module_loading import import_string
from opentelemetry import trace
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from . import __version__
from .conf import Config
from .export_health import ExportHealth
from .exporters import CountingBatchSpanProcessor, build_span_exporter, otlp_endpoint_label
from .fanout import FanOutSpanProcessor
from .propagation import CorrelationIdGenerator, default_propagator
from .sampling import build_sampler
from .sanitize import Sanitizer
from .shutdown import ExitReport, install_sigterm_handler, run_exit_sequence

logger = logging.getLogger(__name__)

# Derived-view processors (records, metrics/thresholds, query analysis). Each factory takes the
# runtime and returns a SpanProcessor or None when its feature is off.
PROCESSOR_FACTORIES: tuple[str, ...] = (
    "e2e_otel.processors.build_record_processor",
    "e2e_otel.evaluator.build_metrics_processor",
    "e2e_otel.queries.build_query_analyzer",
)


def build_sanitizer(config: Config) -> Sanitizer:
    return Sanitizer(extra_keys=config.SENSITIVE_KEYS, enabled=config.MASK_SENSITIVE_DATA)


def build_resource(config: Config) -> Resource:
    """service.*, deployment.environment, host and process; OTEL_RESOURCE_ATTRIBUTES merged below ours."""
    attributes: dict[str, Any] = {
        "deployment.environment": config.ENVIRONMENT,
        "deployment.environment.name": config.ENVIRONMENT,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.distro.name": "e2e-otel",
        "telemetry.distro.version": __version__,
    }
    # SERVICE_NAME already folds in OTEL_SERVICE_NAME; only a bare default yields to a service.name
    # given in OTEL_RESOURCE_ATTRIBUTES.
    env_attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    env_keys = {item.partition("=")[0].strip() for item in env_attributes.split(",")}
    if ("SERVICE_NAME" in config.explicit or os.environ.get("OTEL_SERVICE_NAME")
            or "service.name" not in env_keys):
        attributes["service.name"] = config.SERVICE_NAME
    if config.SERVICE_VERSION:
        attributes["service.version"] = config.SERVICE_VERSION
    attributes.update(config.RESOURCE_ATTRIBUTES)
    return Resource.create(attributes)  # OTEL_RESOURCE_ATTRIBUTES merged below these


@dataclass
class Runtime:
    """Everything one process needs for tracing, owned together so it can be flushed and shut down."""

    config: Config
    provider: TracerProvider
    sanitizer: Sanitizer
    derived: FanOutSpanProcessor
    export_processor: SpanProcessor | None = None
    exporter: SpanExporter | None = None
    export_health: ExportHealth | None = None  # outcomes of OTLP exports, when exporting over OTLP
    owns_provider: bool = True
    last_exit: ExitReport | None = None
    _shutdown_lock: threading.Lock = field(default_factory=threading.Lock)
    _is_shut_down: bool = False

    def processor(self, kind: type[SpanProcessor]) -> SpanProcessor | None:
        """The derived processor of that type, e.g. ``runtime.processor(WorkflowSpanProcessor)``."""
        return next((p for p in self.derived.processors if isinstance(p, kind)), None)

    def ingest_spans(self, spans: Sequence[ReadableSpan]) -> None:
        """Feed spans that were made elsewhere (the browser) to our processors and the exporter."""
        for span in spans:
            self.derived.on_end(span)
            if self.export_processor is not None:
                self.export_processor.on_end(span)

    def force_flush(self, timeout: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout * 1000)) if self.owns_provider else (
            self.derived.force_flush(int(timeout * 1000))
        )

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush spans to the exporter and records to the database, then stop, within ``timeout``
        seconds (default ``SHUTDOWN_TIMEOUT``); ``False`` when something was left (it is logged).
        Later calls return at once."""
        with self._shutdown_lock:
            if self._is_shut_down:
                return True
            self._is_shut_down = True
        timeout = self.config.SHUTDOWN_TIMEOUT if timeout is None else timeout
        self.last_exit = run_exit_sequence(self, timeout)
        return self.last_exit.complete


def build_runtime(
    config: Config, *, provider: TracerProvider | None = None, with_derived: bool = True
) -> Runtime:
    """A runtime for ``config``; with ``provider`` given, our processors are added to it instead.

    ``with_derived=False`` builds only provider + exporter (for ``opentelemetry-instrument``, which
    configures tracing before Django settings exist; the derived processors join in ``ready()``).
    """
    sanitizer = build_sanitizer(config)
    owns = provider is None
    if provider is None:
        provider = TracerProvider(
            resource=build_resource(config),
            sampler=build_sampler(config.SAMPLE_RATE, record_unsampled=config.RECORDS_ENABLED),
            id_generator=CorrelationIdGenerator(),
            shutdown_on_exit=False,  # our bounded atexit hook flushes instead
        )
    derived = FanOutSpanProcessor()
    runtime = Runtime(config=config, provider=provider, sanitizer=sanitizer, derived=derived, owns_provider=owns)
    if owns:
        if "otlp" in config.TRACES_EXPORTER.split(","):
            runtime.export_health = ExportHealth(otlp_endpoint_label(config))
        exporter = build_span_exporter(config, sanitizer, runtime.export_health)
        on_drop = None
        if exporter is not None and config.METRICS_ENABLED:
            from .metrics import CountingSpanExporter, get_metrics  # exported_spans_total / exporter_up

            exporter = CountingSpanExporter(exporter)
            on_drop = get_metrics().export_dropped.inc
        if exporter is not None:
            runtime.exporter = exporter
            runtime.export_processor = CountingBatchSpanProcessor(exporter, on_drop)
            provider.add_span_processor(runtime.export_processor)
    # Added after the exporter: the SDK shuts processors down in order, so pending spans are flushed
    # to the collector before the record writer and monitor threads spend the exit budget.
    provider.add_span_processor(derived)
    for path in PROCESSOR_FACTORIES if with_derived else ():
        try:
            factory = import_string(path)
        except ImportError:
            logger.warning("e2e-otel: cannot import %s; that feature is off", path, exc_info=True)
            continue
        processor = factory(runtime)
        if processor is not None:
            derived.add(processor)
    return runtime


_install_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime | None:
    """The process's installed runtime, or ``None`` when e2e-otel is disabled or not set up yet."""
    return _runtime


def install(config: Config) -> Runtime | None:
    """Install the global runtime once; later calls return the same one."""
    global _runtime
    with _install_lock:
        if _runtime is not None:
            return _runtime
        if not config.is_active:
            logger.info("e2e-otel is disabled (ENABLED=False or OTEL_SDK_DISABLED=true)")
            return None
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            logger.info("e2e-otel: adding processors to the already configured tracer provider")
            runtime = build_runtime(config, provider=existing)
        else:
            runtime = build_runtime(config)
            trace.set_tracer_provider(runtime.provider)
        if not os.environ.get("OTEL_PROPAGATORS"):
            set_global_textmap(default_propagator(config.CORRELATION_HEADER))
        _instrument(runtime)
        _arrange_exit(runtime)
        if "TRACES_EXPORTER" in config.computed and config.TRACES_EXPORTER == "none":
            logger.info("e2e-otel: spans are not exported (no collector endpoint configured); records and "
                        "metrics stay local. Set OTEL_EXPORTER_OTLP_ENDPOINT (or E2E_OTEL['OTLP_ENDPOINT']) "
                        "to export.")
        _runtime = runtime
        return runtime


def _arrange_exit(runtime: Runtime) -> None:
    """Flush at the end of the process: ``atexit`` for every normal exit, and SIGTERM when nothing
    else handles it (without a handler Python would die at once and skip ``atexit``)."""
    atexit.register(runtime.shutdown)
    if runtime.config.HANDLE_SIGTERM:
        install_sigterm_handler(runtime.shutdown)


def _instrument(runtime: Runtime) -> None:
    config, provider = runtime.config, runtime.provider
    if config.INSTRUMENT_DJANGO:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        instrumentor = DjangoInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    if config.INSTRUMENT_PYMYSQL:
        from opentelemetry.instrumentation.pymysql import PyMySQLInstrumentor

        instrumentor = PyMySQLInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            # Parameter values are never captured (capture_parameters stays off); the SQL text is
            # scrubbed of literals before it is stored or exported.
            instrumentor.instrument(tracer_provider=provider, enable_commenter=False)
    if config.INSTRUMENT_REQUESTS:
        try:
            from opentelemetry.instrumentation.requests import RequestsInstrumentor
        except ImportError:
            pass
        else:
            instrumentor = RequestsInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
    if config.INSTRUMENT_SQLITE:
        _instrument_sqlite(provider)


_sqlite_lock = threading.Lock()
_sqlite_instrumented = False


def _instrument_sqlite(provider: TracerProvider) -> None:
    """Database spans for SQLite (Django apps in development, the demo's default) via upstream's DB-API
    integration, once per process. Django's SQLite backend connects through ``sqlite3.dbapi2.connect``,
    so that is what gets wrapped; a ``connect`` already wrapped by someone else (e.g. upstream's
    SQLite3Instrumentor) is left alone rather than traced twice. Parameter values are never captured."""
    global _sqlite_instrumented
    import sqlite3.dbapi2

    from opentelemetry.instrumentation.dbapi import trace_integration

    with _sqlite_lock:
        if _sqlite_instrumented or hasattr(sqlite3.dbapi2.connect, "__wrapped__"):
            return
        # upstream annotates connect_module as a callable; a module is what it documents and expects
        trace_integration(sqlite3.dbapi2, "connect", "sqlite",  # type: ignore[arg-type]
                          tracer_provider=provider, capture_parameters=False)
        _sqlite_instrumented = True
