"""Configuration (B): OpenTelemetry set up exactly as the upstream getting-started docs do it."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.pymysql import PyMySQLInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

#: The BatchSpanProcessor, kept so the worker can time its hooks.
processor: BatchSpanProcessor | None = None


def install(endpoint: str) -> TracerProvider:
    """Global provider + BatchSpanProcessor(OTLP gRPC) + Django and PyMySQL instrumentors."""
    global processor
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-stock-otel"}))
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    PyMySQLInstrumentor().instrument(tracer_provider=provider)
    return provider
