#!/usr/bin/env python3
"""Export-thread cost of ``SanitizingSpanExporter``: what scrubbing adds per exported span.

5000 spans shaped like a Django app's (1000 server spans with six HTTP attributes, each with four
PyMySQL spans carrying a parameterised statement), one provider Resource, exported once to warm the
sanitizer's memos as a running process has them, then exported again and timed::

    python benchmarks/scrub_export.py                     # best of 7, µs per span (noisy on a shared box)

Instruction counts, noise-free: run it twice under callgrind with different repeat counts and divide
the difference by ``(R2 - R1) * 5000``::

    valgrind --tool=callgrind python benchmarks/scrub_export.py --repeat 1
    valgrind --tool=callgrind python benchmarks/scrub_export.py --repeat 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from e2e_otel.exporters import SanitizingSpanExporter
from e2e_otel.sanitize import Sanitizer


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def make_spans(requests: int = 1000) -> list[ReadableSpan]:
    keep = _Keep()
    provider = TracerProvider(resource=Resource({"service.name": "shop", "host.name": "web-1", "process.pid": 42}))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("bench")
    for i in range(requests):
        with tracer.start_as_current_span("GET items/<int:pk>/", kind=SpanKind.SERVER, attributes={
                "http.method": "GET", "http.route": "items/<int:pk>/", "http.url": f"http://127.0.0.1/items/{i}/",
                "http.status_code": 200, "net.peer.ip": "127.0.0.1", "user_agent.original": "python-requests/2.31"}):
            for j in range(4):
                tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes={
                    "db.system": "mysql", "db.name": "shop", "db.user": "app", "net.peer.name": "127.0.0.1",
                    "db.statement": "SELECT `shop_item`.`id`, `shop_item`.`name` FROM `shop_item` "
                                    f"WHERE `shop_item`.`id` = %s LIMIT {21 + j}"}).end()
    return keep.spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, help="export this many times, untimed (for callgrind)")
    args = parser.parse_args()
    spans = make_spans()
    exporter = SanitizingSpanExporter(_Keep(), Sanitizer())
    exporter.export(spans)  # warm the memos
    if args.repeat is not None:
        for _ in range(args.repeat):
            exporter.export(spans)
        return
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        exporter.export(spans)
        best = min(best, time.perf_counter() - started)
    print(f"{len(spans)} spans: {best * 1e6 / len(spans):.1f} µs per span (best of 7)")


if __name__ == "__main__":
    main()
