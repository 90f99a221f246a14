"""The benchmark views plus e2e-otel's endpoints (ingestion, /metrics)."""

from __future__ import annotations

from django.urls import include, path

from .urls import urlpatterns as bench_urlpatterns

urlpatterns = [*bench_urlpatterns, path("", include("e2e_otel.urls"))]
