"""Demo URLs: a landing page, the shop API, the admin and e2e-otel's own endpoints (API, ingestion, /metrics)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from .landing import landing

urlpatterns = [
    path("", landing, name="landing"),
    path("api/shop/", include("e2e_otel.demo.shop.urls")),
    path("admin/", admin.site.urls),
    path("", include("e2e_otel.urls")),
]
