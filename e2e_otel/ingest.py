"""OTLP/HTTP browser span ingestion: ``POST <mount>/api/v1/debugging/otlp/v1/traces``.

The OTel JS web exporter (``OTLPTraceExporter({url, headers: {"X-E2E-Ingest-Key": ...}})``) can post
here, so an app without a collector still gets frontend steps. Accepted spans are marked
``e2e.layer=frontend`` (the browser's resource, incl. ``service.name``, is kept) and handed to
``Runtime.ingest_spans`` → the derived processors (records, metrics) and the configured exporter.

Public endpoint, so the checks run in this order, cheapest first, and a rejected payload stores
nothing: CORS origin allow-list (403, no CORS headers) → rate limit per client address (429 +
Retry-After) → ingest key (403 when no key is configured at all, 401 when missing/wrong) →
Content-Length / read size (413) → content type (415) → gzip with a decompressed-size cap (413) →
decode + validate every span (400 with a JSON ``{"error", "details"}``) → ingest all.

Notes: the rate limit is per process and keyed on ``REMOTE_ADDR`` (behind a proxy, make sure the
proxy's client address reaches ``REMOTE_ADDR``). Django's own instrumentation still traces this POST;
its server span is tagged ``e2e.internal=ingest`` so derived views can tell it apart from app traffic.
Over-long attribute strings are truncated (see ``otlp_decode``) and reported as a partial-success
warning. Runs on the request thread; ``ingest_spans`` only enqueues (processors never block).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import zlib
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from .conf import Config, get_config
from .otlp_decode import OTLPValidationError, decode_json, decode_protobuf, to_readable_spans
from .ratelimit import TokenBucketLimiter

logger = logging.getLogger(__name__)

__all__ = ["INGEST_KEY_HEADER", "ingest_traces", "reset_rate_limits"]

INGEST_KEY_HEADER = "X-E2E-Ingest-Key"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "content-type, content-encoding, traceparent, tracestate, baggage, x-e2e-ingest-key"
PREFLIGHT_MAX_AGE = "600"
MAX_TRACKED_CLIENTS = 10_000

_limiter_lock = threading.Lock()
_limiter: TokenBucketLimiter | None = None


def _rate_limiter(rate_per_minute: int) -> TokenBucketLimiter:
    global _limiter
    with _limiter_lock:
        if _limiter is None or _limiter.rate_per_minute != rate_per_minute:
            _limiter = TokenBucketLimiter(rate_per_minute=rate_per_minute, max_clients=MAX_TRACKED_CLIENTS)
        return _limiter


def reset_rate_limits() -> None:
    """Forget every client's bucket (tests; or after changing the limit at run time)."""
    global _limiter
    with _limiter_lock:
        _limiter = None


class _Reject(Exception):
    def __init__(self, status: int, error: str, details: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if details:
            self.body["details"] = details
        self.headers = headers or {}


def _json_response(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type=JSON)


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin"}


def _origin_allowed(origin: str, config: Config) -> bool:
    allowed = config.INGEST_ALLOWED_ORIGINS
    return "*" in allowed or origin in allowed


def _media_type(request: HttpRequest) -> str:
    return (request.content_type or "").split(";")[0].strip().lower()


def _read_body(request: HttpRequest, config: Config) -> bytes:
    limit = config.INGEST_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Reject(400, "invalid Content-Length header") from None
    if declared > limit:
        raise _Reject(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise _Reject(413, f"body exceeds the limit of {limit} bytes")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise _Reject(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    return _gunzip(body, config.INGEST_MAX_DECOMPRESSED_BYTES)


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _Reject(400, "body is not valid gzip", [str(exc)]) from exc
    if len(data) > limit or decompressor.unconsumed_tail:
        raise _Reject(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise _Reject(400, "gzip body is truncated")
    return data


def _export_response(media_type: str, truncated: int, headers: dict[str, str]) -> HttpResponse:
    message = ExportTraceServiceResponse()
    if truncated:
        message.partial_success.CopyFrom(ExportTracePartialSuccess(
            rejected_spans=0,
            error_message=f"{truncated} attribute value(s) longer than the limit were truncated",
        ))
    if media_type == PROTOBUF:
        response = HttpResponse(message.SerializeToString(), content_type=PROTOBUF)
    else:
        response = HttpResponse(json_format.MessageToJson(message), content_type=JSON)
    for key, value in headers.items():
        response[key] = value
    return response


def _tag_own_span() -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("e2e.internal", "ingest")


@csrf_exempt
def ingest_traces(request: HttpRequest) -> HttpResponse:
    """The OTLP/HTTP traces endpoint for browsers (POST; OPTIONS answers CORS preflight)."""
    _tag_own_span()
    config = get_config()
    origin = request.META.get("HTTP_ORIGIN", "")
    cors: dict[str, str] = {}
    if origin:
        if not _origin_allowed(origin, config):
            return _json_response(403, {"error": f"origin {origin!r} is not allowed"})
        cors = _cors_headers(origin)

    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        for key, value in cors.items():
            response[key] = value
        response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response
    try:
        if request.method != "POST":
            raise _Reject(405, "use POST", headers={"Allow": ALLOWED_METHODS})
        return _handle_post(request, config, cors)
    except _Reject as reject:
        response = _json_response(reject.status, reject.body)
        for key, value in {**cors, **reject.headers}.items():
            response[key] = value
        return response


def _handle_post(request: HttpRequest, config: Config, cors: dict[str, str]) -> HttpResponse:
    client = request.META.get("REMOTE_ADDR") or "unknown"
    allowed, retry_after = _rate_limiter(config.INGEST_RATE_LIMIT).allow(client)
    if not allowed:
        raise _Reject(429, "rate limit exceeded", headers={"Retry-After": str(retry_after)})

    expected = config.INGEST_KEY
    if not expected:
        raise _Reject(403, "browser ingestion is disabled: E2E_OTEL['INGEST_KEY'] is not set")
    given = request.META.get("HTTP_X_E2E_INGEST_KEY", "")
    if not given or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise _Reject(401, f"missing or invalid {INGEST_KEY_HEADER} header")

    media_type = _media_type(request)
    if media_type not in (PROTOBUF, JSON):
        raise _Reject(415, f"unsupported Content-Type {media_type!r}; use {PROTOBUF} or {JSON}")
    body = _read_body(request, config)

    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None:
        raise _Reject(503, "e2e-otel is disabled in this process")
    try:
        message = decode_protobuf(body) if media_type == PROTOBUF else decode_json(body)
        batch = to_readable_spans(message)
    except OTLPValidationError as exc:
        raise _Reject(400, exc.message, exc.details) from exc
    if batch.spans:
        runtime.ingest_spans(batch.spans)
    return _export_response(media_type, batch.truncated_values, cors)
