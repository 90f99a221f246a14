"""``/`` of the demo shop: where everything is (admin, debugging API, /metrics, the shop API).

A plain Django view on the request thread; its one query counts the recorded workflows. It never
shows a password or key: those are printed once in the terminal that started the demo.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from e2e_otel.models import WorkflowSession

from .shop.faults import get_faults

SHOP_ENDPOINTS = (
    ("GET", "/api/shop/products/", "the catalogue (with the N+1 fault, one query per product)"),
    ("GET", "/api/shop/categories/", "categories"),
    ("POST", "/api/shop/auth/token/", "log in as a customer (username, password)"),
    ("POST", "/api/shop/cart/items/", "add to the cart"),
    ("POST", "/api/shop/checkout/", "check out (slow step, declined payments)"),
)


def landing(request: HttpRequest) -> HttpResponse:
    config = getattr(settings, "E2E_OTEL", {})
    context = {
        "correlation_id": getattr(request, "correlation_id", None),
        "workflows": WorkflowSession.objects.count(),
        "shop_endpoints": SHOP_ENDPOINTS,
        "metrics_need_key": bool(config.get("METRICS_KEY")),
        "faults": ", ".join(get_faults().enabled),
    }
    return render(request, "e2e_otel_demo/landing.html", context)
