"""Mount with ``path("", include("e2e_otel.urls"))``: the debugging API, ingestion and /metrics."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from .ingest import ingest_traces
from .metrics import metrics_view

app_name = "e2e_otel"

urlpatterns: list[URLPattern | URLResolver] = [
    # --- browser span ingestion (OTLP/HTTP) and the debugging REST API ---
    path("api/v1/debugging/otlp/v1/traces", ingest_traces, name="otlp-traces"),
    path("api/v1/debugging/", include("e2e_otel.api.urls")),
    # --- metrics ---
    path("metrics", metrics_view, name="metrics"),
]
