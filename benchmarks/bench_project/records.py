"""Benchmark access to the e2e-otel record path: writer stats, flush, and an offered-load test.

The record core is ``e2e_otel.processors.WorkflowSpanProcessor`` feeding ``e2e_otel.store.RecordWriter``
whose ``stats()`` returns ``{"queue_depth", "queue_capacity", "dropped": {reason: n},
"written": {kind: n}}``. Everything here runs on the worker's main thread.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind


def record_processor(runtime: Any) -> Any:
    """The runtime's ``WorkflowSpanProcessor`` (``None`` when records are off or not built)."""
    if runtime is None:
        return None
    try:
        from e2e_otel.processors import WorkflowSpanProcessor
    except ImportError:
        return None
    return runtime.processor(WorkflowSpanProcessor)


def writer(runtime: Any) -> Any:
    """The ``RecordWriter`` behind the record processor, found by its ``stats()`` method."""
    processor = record_processor(runtime)
    if processor is None:
        return None
    for name in ("writer", "_writer", "store", "_store"):
        candidate = getattr(processor, name, None)
        if candidate is not None and callable(getattr(candidate, "stats", None)):
            return candidate
    return processor if callable(getattr(processor, "stats", None)) else None


def stats(runtime: Any) -> dict[str, Any] | None:
    """``WorkflowSpanProcessor.stats()`` when it has one (writer stats + held traces), else the writer's."""
    processor = record_processor(runtime)
    if processor is not None and callable(getattr(processor, "stats", None)):
        return processor.stats()
    found = writer(runtime)
    return None if found is None else found.stats()


def flush(runtime: Any, timeout_s: float) -> bool:
    """Wait until everything queued so far is written (or ``timeout_s`` passes)."""
    processor = record_processor(runtime)
    return True if processor is None else bool(processor.force_flush(int(timeout_s * 1000)))


#: Components of the offered spans (the views' own tables are ``bench_shop_*``), so rows written
#: meanwhile by another configuration's writer sharing the database are not counted.
LOAD_COMPONENTS = ("/orders/<int:pk>/", "shop_product")


def count_steps() -> int:
    from e2e_otel.models import TraceStep

    return TraceStep.objects.filter(component__in=LOAD_COMPONENTS).count()


class _Forward(SpanProcessor):
    """Hands every span that ends to ``target.on_end`` (and nothing else)."""

    def __init__(self, target: SpanProcessor) -> None:
        self.target = target

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.target.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.target.on_end(span)


def _sum(mapping: dict[str, int] | None) -> int:
    return sum((mapping or {}).values())


def _offer_traces(tracer: Any, count: int, steps_per_trace: int, first: int = 0) -> None:
    for n in range(first, first + count):
        with tracer.start_as_current_span(
            "GET /orders/<int:pk>/", kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.route": "/orders/<int:pk>/",
                        "url.path": f"/orders/{n}/", "http.response.status_code": 200},
        ):
            for i in range(steps_per_trace - 1):
                with tracer.start_as_current_span(
                    "SELECT", kind=SpanKind.CLIENT,
                    attributes={"db.system": "mysql", "db.name": "shop",
                                "db.statement": f"SELECT id, name FROM shop_product WHERE id = %s LIMIT {i + 1}"},
                ):
                    pass


def profile_writer(runtime: Any, *, traces: int, steps_per_trace: int) -> dict[str, Any]:
    """cProfile the record writer thread while it writes ``traces`` offered traces.

    Diagnostic only: wraps the writer instance's ``_write`` (a private method of
    ``e2e_otel.store.RecordWriter``) so the profiler runs on the writer thread; removed afterwards.
    """
    import cProfile
    import pstats

    processor = record_processor(runtime)
    found = writer(runtime)
    if processor is None or found is None or not hasattr(found, "_write"):
        return {"unavailable": "RecordWriter._write not available"}
    flush(runtime, 60.0)
    profiler = cProfile.Profile()
    original = found._write

    def profiled(*args: Any, **kwargs: Any) -> Any:
        profiler.enable()
        try:
            return original(*args, **kwargs)
        finally:
            profiler.disable()

    provider = TracerProvider()
    provider.add_span_processor(_Forward(processor))
    found._write = profiled
    try:
        _offer_traces(provider.get_tracer("bench.writer_profile"), traces, steps_per_trace)
        flush(runtime, 120.0)
    finally:
        del found._write
    stats = pstats.Stats(profiler)
    areas: dict[str, float] = {}
    sql = 0
    for (filename, _line, func), (_cc, calls, tottime, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        area = ("django/db" if "django/db" in filename else "django (other)" if "/django/" in filename
                else "pymysql" if "pymysql" in filename else "e2e_otel" if "e2e_otel" in filename
                else "socket I/O (waiting for MariaDB)" if func.startswith(("<method 'recv_into'", "<method 'sendall'"))
                else "other")
        areas[area] = areas.get(area, 0.0) + tottime
        if "pymysql/cursors.py" in filename and func == "execute":
            sql += calls
    total = stats.total_tt  # type: ignore[attr-defined]
    return {"traces": traces, "steps_per_trace": steps_per_trace,
            "writer_us_per_trace": total / traces * 1e6,
            "sql_statements_per_trace": sql / traces,
            "us_per_trace_by_area": {k: v / traces * 1e6 for k, v in sorted(areas.items(), key=lambda kv: -kv[1])}}


def offer_load(runtime: Any, *, rate: float, seconds: float, steps_per_trace: int) -> dict[str, Any]:
    """Offer ``rate`` spans/s for ``seconds`` straight to the record processor, then wait for the
    writer to drain; report what was written (by ``stats()`` and by counting rows) and dropped.

    The spans are real SDK spans shaped like the benchmark's requests: one SERVER span with an
    ``http.route`` and ``steps_per_trace - 1`` CLIENT ``mysql`` spans under it. A private provider
    makes them, so they are neither exported nor seen by the metrics processor.
    """
    processor = record_processor(runtime)
    found = writer(runtime)
    if processor is None or found is None:
        return {"offered_rate": rate,
                "unavailable": "e2e_otel.processors.WorkflowSpanProcessor / RecordWriter not available"}
    provider = TracerProvider()
    provider.add_span_processor(_Forward(processor))
    tracer = provider.get_tracer("bench.writer_load")
    flush(runtime, timeout_s=60.0)  # start from an empty queue so counters and rows line up
    before = found.stats()
    rows_before = count_steps()
    interval = steps_per_trace / rate
    offered = traces = 0
    max_depth = before.get("queue_depth", 0)
    start = time.perf_counter()
    deadline = start + seconds
    next_at = start
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if now < next_at:
            time.sleep(min(next_at - now, 0.01))
            continue
        _offer_traces(tracer, 1, steps_per_trace, first=traces)
        offered += steps_per_trace
        traces += 1
        next_at += interval
        if traces % 50 == 0:
            max_depth = max(max_depth, found.stats().get("queue_depth", 0))
    offer_end = time.perf_counter()
    drained = flush(runtime, timeout_s=120.0)
    drain_end = time.perf_counter()
    after = found.stats()
    rows_after = count_steps()
    written_before = (before.get("written") or {}).get("step", 0)
    written_after = (after.get("written") or {}).get("step", 0)
    dropped = {reason: n - (before.get("dropped") or {}).get(reason, 0)
               for reason, n in (after.get("dropped") or {}).items()}
    steps = written_after - written_before
    return {
        "offered_rate": rate,
        "offer_seconds": offer_end - start,
        "offered_spans": offered,
        "offered_traces": traces,
        "achieved_offer_rate": offered / (offer_end - start),
        "drained": drained,
        "drain_seconds": drain_end - start,
        "steps_written": steps,
        "step_rows_added": rows_after - rows_before,
        "write_rate_steps_per_s": steps / (drain_end - start),
        "dropped": {k: v for k, v in dropped.items() if v},
        "dropped_total": _sum(dropped),
        "max_queue_depth": max_depth,
        "queue_capacity": after.get("queue_capacity"),
        "stats_after": after,
    }
