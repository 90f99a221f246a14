"""Provider set-up: resource, sampler, exporter chain, fan-out, bounded shutdown, install once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from e2e_otel.apps import MIDDLEWARE_PATH, OTEL_MIDDLEWARE_PATH
from e2e_otel.bootstrap import build_resource, build_runtime, get_runtime, install
from e2e_otel.conf import get_config, resolve
from e2e_otel.export_health import QuietExporter
from e2e_otel.exporters import PerProcessExporter, SanitizingSpanExporter, build_span_exporter
from e2e_otel.fanout import FanOutSpanProcessor
from e2e_otel.sanitize import Sanitizer
from tests.forking import check_in_child


def _config(**user):
    return resolve({"METRICS_ENABLED": False, "RECORDS_ENABLED": False, **user}, {})


class _Collect(SpanProcessor):
    """Sees every recorded span, sampled or not (like our derived processors)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def test_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,deployment.environment=ignored")
    resource = build_resource(_config(SERVICE_NAME="shop", SERVICE_VERSION="1.2.3", ENVIRONMENT="production",
                                      RESOURCE_ATTRIBUTES={"region": "eu"}))
    attrs = resource.attributes
    assert attrs["service.name"] == "shop" and attrs["service.version"] == "1.2.3"
    assert attrs["deployment.environment"] == "production"  # ours beat OTEL_RESOURCE_ATTRIBUTES
    assert attrs["team"] == "payments" and attrs["region"] == "eu"
    assert attrs["host.name"] and attrs["process.pid"] == os.getpid()
    assert attrs["telemetry.distro.name"] == "e2e-otel"


def test_service_name_from_otel_resource_attributes_when_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource-env")
    assert build_resource(_config()).attributes["service.name"] == "from-resource-env"
    assert build_resource(_config(SERVICE_NAME="explicit")).attributes["service.name"] == "explicit"


def test_testing_profile_has_no_exporter_and_otlp_is_wrapped() -> None:
    runtime = build_runtime(_config(ENVIRONMENT="testing"), with_derived=False)
    assert runtime.exporter is None and runtime.export_processor is None and runtime.owns_provider
    exporter = build_span_exporter(_config(TRACES_EXPORTER="otlp"), Sanitizer())
    assert isinstance(exporter, SanitizingSpanExporter)
    assert isinstance(exporter.inner, QuietExporter) and isinstance(exporter.inner.inner, PerProcessExporter)
    assert build_span_exporter(_config(), Sanitizer()) is None  # no collector configured
    assert build_span_exporter(_config(TRACES_EXPORTER="none"), Sanitizer()) is None


def test_existing_provider_gets_our_processors_not_a_second_exporter() -> None:
    provider = TracerProvider()
    runtime = build_runtime(_config(), provider=provider, with_derived=False)
    assert runtime.provider is provider and not runtime.owns_provider
    assert runtime.exporter is None
    collect = _Collect()
    runtime.derived.add(collect)
    provider.get_tracer("t").start_span("s").end()
    assert runtime.derived.force_flush(5_000)
    assert [s.name for s in collect.spans] == ["s"]


def test_production_sampling_records_everything_exports_a_tenth() -> None:
    runtime = build_runtime(_config(ENVIRONMENT="production", RECORDS_ENABLED=True, TRACES_EXPORTER="none"),
                            with_derived=False)
    assert runtime.config.SAMPLE_RATE == 0.1
    exported = InMemorySpanExporter()
    runtime.provider.add_span_processor(SimpleSpanProcessor(exported))  # exports sampled spans only
    collect = _Collect()
    runtime.derived.add(collect)
    tracer = runtime.provider.get_tracer("t")
    for _ in range(2000):
        tracer.start_span("root").end()
    assert runtime.derived.force_flush(5_000)
    assert len(collect.spans) == 2000  # processors see every span
    sampled = len(exported.get_finished_spans())
    assert 100 < sampled < 320, sampled  # ~10 % exported
    assert all(not s.context.trace_flags.sampled for s in collect.spans if s not in exported.get_finished_spans())


def test_sampling_is_parent_based() -> None:
    runtime = build_runtime(_config(SAMPLE_RATE=0.0, RECORDS_ENABLED=True, TRACES_EXPORTER="none"),
                            with_derived=False)
    tracer = runtime.provider.get_tracer("t")
    for flags, expected in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
        parent = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(flags)))
        span = tracer.start_span("child", context=trace.set_span_in_context(parent))
        assert span.is_recording()  # unsampled spans are still recorded for local processors
        assert span.get_span_context().trace_flags.sampled is expected
        span.end()
    assert not tracer.start_span("root").get_span_context().trace_flags.sampled
    plain = build_runtime(_config(SAMPLE_RATE=0.0, TRACES_EXPORTER="none"), with_derived=False)
    assert not plain.provider.get_tracer("t").start_span("root").is_recording()  # records off: dropped


def test_fanout_isolates_failing_children_and_can_detach() -> None:
    class Broken(SpanProcessor):
        def on_start(self, span, parent_context=None) -> None:
            raise RuntimeError("boom")

        def on_end(self, span) -> None:
            raise RuntimeError("boom")

    fanout = FanOutSpanProcessor([Broken()])
    collect = _Collect()
    fanout.add(collect)
    provider = TracerProvider()
    provider.add_span_processor(fanout)
    provider.get_tracer("t").start_span("a").end()  # no exception reaches the caller
    assert fanout.force_flush(5_000)
    fanout.remove(collect)
    provider.get_tracer("t").start_span("b").end()
    assert fanout.force_flush(5_000)
    assert [s.name for s in collect.spans] == ["a"]


def test_shutdown_is_bounded_by_the_timeout() -> None:
    class Stuck(SpanProcessor):
        def shutdown(self) -> None:
            time.sleep(5)

    runtime = build_runtime(_config(TRACES_EXPORTER="none"), with_derived=False)
    runtime.derived.add(Stuck())
    started = time.monotonic()
    assert runtime.shutdown(timeout=0.3) is False
    assert time.monotonic() - started < 1.5
    assert runtime.shutdown() is True  # second call is a no-op


def test_shutdown_default_budget_keeps_exit_under_five_seconds() -> None:
    assert resolve(None, {}).SHUTDOWN_TIMEOUT <= 3.0


def test_live_runtime_is_installed_once_with_middleware_in_place() -> None:
    runtime = get_runtime()
    assert runtime is not None and install(get_config()) is runtime
    assert trace.get_tracer_provider() is runtime.provider
    middleware = list(settings.MIDDLEWARE)
    assert middleware.count(OTEL_MIDDLEWARE_PATH) == 1 and middleware.count(MIDDLEWARE_PATH) == 1
    assert middleware.index(MIDDLEWARE_PATH) == middleware.index(OTEL_MIDDLEWARE_PATH) + 1


class _PidRecorder(SpanExporter):
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.batches: list[Sequence[ReadableSpan]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(spans)
        return SpanExportResult.SUCCESS


def _span_with_resource(pid: int) -> ReadableSpan:
    provider = TracerProvider(resource=Resource({"service.name": "s", "process.pid": pid}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("t").start_span("s").end()
    return exporter.get_finished_spans()[0]


def test_per_process_exporter_keeps_own_pid_spans_untouched() -> None:
    made: list[_PidRecorder] = []
    exporter = PerProcessExporter(lambda: made.append(_PidRecorder()) or made[-1])
    span = _span_with_resource(os.getpid())
    exporter.export([span])
    assert len(made) == 1 and made[0].batches[0][0] is span


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_per_process_exporter_after_fork_builds_a_new_exporter_and_names_the_child() -> None:
    made: list[_PidRecorder] = []
    exporter = PerProcessExporter(lambda: made.append(_PidRecorder()) or made[-1])
    parent_pid = os.getpid()
    span = _span_with_resource(parent_pid)  # resource built before fork, like gunicorn --preload
    exporter.export([span])

    def child_exports_with_its_own_exporter_and_pid() -> bool:
        exporter.export([span])
        latest = made[-1]
        exported = latest.batches[-1][0]
        return (len(made) == 2 and latest.pid == os.getpid()
                and exported.resource.attributes["process.pid"] == os.getpid()
                and exported.resource.attributes["service.name"] == "s"
                and exported.context == span.context and exported.name == span.name)

    assert check_in_child(child_exports_with_its_own_exporter_and_pid)
    assert len(made) == 1 and threading.current_thread() is threading.main_thread()


def test_similar_resource_key_does_not_hide_our_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "myservice.name=other")
    attrs = build_resource(_config()).attributes
    assert attrs["service.name"] == "django-app" and attrs["myservice.name"] == "other"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_per_process_exporter_leaves_foreign_resources_alone_after_fork() -> None:
    made: list[_PidRecorder] = []
    exporter = PerProcessExporter(lambda: made.append(_PidRecorder()) or made[-1])
    browser_span = _span_with_resource(1)  # e.g. ingested from elsewhere, not our inherited resource

    def child_exports_it_unchanged() -> bool:
        exporter.export([browser_span])
        return made[-1].batches[-1][0] is browser_span

    assert check_in_child(child_exports_it_unchanged)


# --- SQLite database spans (INSTRUMENT_SQLITE) ---------------------------------------------------------


def _sqlite_items(request):  # type: ignore[no-untyped-def]
    from django.http import JsonResponse

    from tests.testapp.models import Item

    return JsonResponse({"names": list(Item.objects.using(request.GET["db"]).values_list("name", flat=True))})


urlpatterns = [path("sqlite-items/", _sqlite_items)]


@pytest.fixture
def sqlite_alias(tmp_path):  # type: ignore[no-untyped-def]
    """Django's SQLite backend: the test database itself on SQLite, else a throwaway file next to MariaDB."""
    from django.db import connection, connections
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    from tests.testapp.models import Item

    if connection.vendor == "sqlite":
        Item.objects.create(name="on-sqlite")
        yield "default"
        return
    from django.db.utils import load_backend

    # A dynamically created connection (not in settings.DATABASES, which the rest of the suite shares).
    alias = "e2e_sqlite_probe"
    params = connections.configure_settings({  # fills in the per-alias defaults
        "default": dict(connections.settings["default"]),
        alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "probe.sqlite3")}})[alias]
    connections[alias] = load_backend(params["ENGINE"]).DatabaseWrapper(params, alias)
    try:
        with suppress_instrumentation(), connections[alias].schema_editor() as editor:
            editor.create_model(Item)
        Item.objects.using(alias).create(name="on-sqlite")
        yield alias
    finally:
        connections[alias].close()
        del connections[alias]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_orm_queries_on_sqlite_are_child_spans_of_the_request(sqlite_alias: str, spans) -> None:  # type: ignore[no-untyped-def]
    assert get_config().INSTRUMENT_SQLITE is True  # the default
    import sqlite3.dbapi2

    assert hasattr(sqlite3.dbapi2.connect, "__wrapped__")  # upstream's DB-API wrapper, installed once
    install(get_config())  # a second install does not wrap connect again
    assert not hasattr(sqlite3.dbapi2.connect.__wrapped__, "__wrapped__")

    response = Client().get("/sqlite-items/", {"db": sqlite_alias})
    assert response.status_code == 200 and response.json() == {"names": ["on-sqlite"]}
    trace_id = int(response["X-Correlation-ID"].replace("-", ""), 16)
    mine = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    server = [s for s in mine if s.kind == trace.SpanKind.SERVER]
    queries = [s for s in mine if s.attributes.get("db.system") == "sqlite"]
    assert len(server) == 1, [s.name for s in mine]
    assert queries and all(q.kind == trace.SpanKind.CLIENT and q.parent.span_id == server[0].context.span_id
                           for q in queries), [(q.name, q.parent) for q in queries]
    select = next(q for q in queries if "testapp_item" in q.attributes.get("db.statement", ""))
    assert select.attributes["db.statement"].startswith("SELECT")
    assert not any(key.startswith("db.statement.parameters") for key in select.attributes)
