"""Views the test suite drives: plain, one ORM query, a failure, a login that receives a password."""

from __future__ import annotations

import logging
import time

from django.contrib.auth import authenticate
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Item

logger = logging.getLogger("tests.views")


def ping(request: HttpRequest) -> JsonResponse:
    logger.info("ping")
    return JsonResponse({"ok": True, "correlation_id": getattr(request, "correlation_id", None)})


def items(request: HttpRequest) -> JsonResponse:
    names = list(Item.objects.order_by("id").values_list("name", flat=True)[:10])
    return JsonResponse({"items": names, "correlation_id": request.correlation_id})


def item_detail(request: HttpRequest, pk: int) -> JsonResponse:
    item = Item.objects.filter(pk=pk).first()
    return JsonResponse({"name": item.name if item else None})


def raw_sql(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM testapp_item WHERE name <> 'hunter2-literal' AND id > 41")
        (count,) = cursor.fetchone()
    return JsonResponse({"count": count})


def slow(request: HttpRequest) -> JsonResponse:
    time.sleep(float(request.GET.get("seconds", "0.2")))
    return JsonResponse({"slow": True})


class PaymentDeclined(Exception):
    pass


def fail(request: HttpRequest) -> HttpResponse:
    raise PaymentDeclined("card declined for order 42")


@csrf_exempt
def login(request: HttpRequest) -> JsonResponse:
    username = request.POST.get("username", "")
    password = request.POST.get("password", "")
    user = authenticate(request, username=username, password=password)
    if user is None:
        logger.warning("login failed for %s", username)
        return JsonResponse({"ok": False}, status=401)
    return JsonResponse({"ok": True})


def pid(request: HttpRequest) -> JsonResponse:
    """Which process served the request (gunicorn fork-safety test)."""
    import os

    time.sleep(min(float(request.GET.get("sleep", "0")), 2.0))
    return JsonResponse({"pid": os.getpid(), "correlation_id": getattr(request, "correlation_id", None)})


def call_out(request: HttpRequest) -> JsonResponse:
    """An outgoing `requests` call made inside a request (test-only: the URL comes from ?url=)."""
    import requests

    from e2e_otel import get_correlation_id, inject_headers

    headers = inject_headers({}) if request.GET.get("inject") else {}
    response = requests.get(request.GET["url"], headers=headers, timeout=5)
    return JsonResponse({"status": response.status_code, "correlation_id": get_correlation_id()})


def items_n_plus_one(request: HttpRequest) -> JsonResponse:
    """One query per item: the N+1 pattern the query analyzer must find."""
    names = [Item.objects.get(pk=pk).name for pk in Item.objects.values_list("pk", flat=True)[:10]]
    return JsonResponse({"items": names})


def slow_sql(request: HttpRequest) -> JsonResponse:
    """A database step of known duration (MySQL/MariaDB ``SLEEP``), for threshold tests."""
    seconds = min(1.0, max(0.0, float(request.GET.get("seconds", "0.01"))))
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(%s)", [seconds])
        cursor.fetchone()
    return JsonResponse({"slept": seconds})


@csrf_exempt
def browser_checkout(request: HttpRequest) -> HttpResponse:
    """The cross-origin API the browser test's page calls (tests/test_browser.py).

    Open to every origin, like django-cors-headers with ``CORS_ALLOW_ALL_ORIGINS``, so only the ingest
    endpoint's allow-list decides whether a page's spans are accepted; the preflight allows the trace
    headers the OTel fetch instrumentation adds (``traceparent``, ``tracestate``, ``baggage``).
    """
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "content-type, traceparent, tracestate, baggage"
        response["Access-Control-Max-Age"] = "600"
    elif request.method == "POST":
        names = list(Item.objects.order_by("id").values_list("name", flat=True)[:10])
        response = JsonResponse({"ordered": names, "correlation_id": request.correlation_id})
        response["Access-Control-Expose-Headers"] = "X-Correlation-ID, traceresponse"
    else:
        return HttpResponse(status=405, headers={"Allow": "POST, OPTIONS"})
    origin = request.headers.get("Origin")
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response
