"""OTLP/HTTP browser span ingestion: ``POST <mount>/api/v1/debugging/otlp/v1/traces``.

The OTel JS web exporter (``OTLPTraceExporter({url, headers: {"X-E2E-Ingest-Key": ...}})``) can post
here, so an app without a collector still gets frontend steps. Accepted spans are marked
``e2e.layer=frontend`` (the browser's resource, incl. ``service.name``, is kept) and handed to
``Runtime.ingest_spans`` → the derived processors (records, metrics) and the configured exporter.

Public endpoint, so the checks run in this order, cheapest first, and a rejected payload stores
nothing: CORS origin allow-list (403, no CORS headers) → rate limit per client address (429 +
Retry-After) → ingest key (403 when no key is configured at all, 401 when missing/wrong) →
content type (415) → Content-Length / read size (413) → gzip with a decompressed-size cap and, past
64 KiB, a 50:1 ratio cap (413) → span count (400; for JSON before any protobuf object is built) →
decode + validate every span (400 with a JSON ``{"error", "details"}``) → ingest all.

Notes: the rate limit is per process and keyed on ``REMOTE_ADDR``, or with ``INGEST_TRUSTED_PROXIES
= N`` on the N-th ``X-Forwarded-For`` address from the right (the one the outermost trusted proxy saw;
a missing or malformed entry falls back to ``REMOTE_ADDR``). The ingest key ships in browser JS, so
it is not a secret: what one request may store is capped (``INGEST_MAX_SPANS`` spans,
``INGEST_MAX_EXCEPTIONS`` exception events, 32 short resource attributes); dropped and truncated
items are reported as an OTLP partial-success warning (``rejected_spans`` stays 0). Django's own
instrumentation still traces this POST; its server span is tagged ``e2e.internal=ingest`` so derived
views can tell it apart from app traffic. Runs on the request thread; ``ingest_spans`` only enqueues
(processors never block).
"""

from __future__ import annotations

import hmac
import ipaddress
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
from .otlp_decode import DecodedBatch, Limits, OTLPValidationError, decode_json, decode_protobuf, to_readable_spans
from .ratelimit import TokenBucketLimiter

logger = logging.getLogger(__name__)

__all__ = ["INGEST_KEY_HEADER", "client_address", "ingest_traces", "reset_rate_limits"]

INGEST_KEY_HEADER = "X-E2E-Ingest-Key"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "content-type, content-encoding, traceparent, tracestate, baggage, x-e2e-ingest-key"
PREFLIGHT_MAX_AGE = "600"
MAX_TRACKED_CLIENTS = 10_000
# Zip-bomb guard besides the absolute cap: real OTLP payloads compress far less than 50:1, and small
# bodies are exempt so a tiny, very repetitive batch is still fine.
MAX_GZIP_RATIO = 50
GZIP_RATIO_FREE_BYTES = 64 * 1024

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
    """Inflate at most the allowed size (never more), so a bomb costs ~that much memory, not its size."""
    ratio_limit = max(GZIP_RATIO_FREE_BYTES, MAX_GZIP_RATIO * len(body))
    allowed = min(limit, ratio_limit)
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, allowed + 1)
    except zlib.error as exc:
        raise _Reject(400, "body is not valid gzip", [str(exc)]) from exc
    if len(data) > allowed or decompressor.unconsumed_tail:
        if allowed < limit:
            raise _Reject(413, f"gzip body of {len(body)} bytes expands to more than {allowed} bytes: "
                               f"compression ratio above {MAX_GZIP_RATIO}:1 is refused "
                               f"once it exceeds {GZIP_RATIO_FREE_BYTES} bytes decompressed")
        raise _Reject(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise _Reject(400, "gzip body is truncated")
    return data


def _warnings(batch: DecodedBatch, limits: Limits) -> str:
    """The partial-success text: what was accepted only in part (no span is rejected for these)."""
    parts = []
    if batch.truncated_values:
        parts.append(f"{batch.truncated_values} attribute value(s) longer than the limit were truncated")
    if batch.exceptions_dropped:
        parts.append(f"{batch.exceptions_dropped} exception event(s) over the limit of "
                     f"{limits.max_exceptions} per request were dropped")
    if batch.resource_attributes_dropped:
        parts.append(f"{batch.resource_attributes_dropped} resource attribute(s) over the limit of "
                     f"{limits.max_resource_attributes} were dropped")
    return "; ".join(parts)


def _export_response(media_type: str, warning: str, headers: dict[str, str]) -> HttpResponse:
    message = ExportTraceServiceResponse()
    if warning:
        message.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=0, error_message=warning))
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


def client_address(request: HttpRequest, trusted_proxies: int) -> str:
    """The rate-limit key: ``REMOTE_ADDR``, or behind ``trusted_proxies`` reverse proxies the address
    the outermost of them saw (N-th ``X-Forwarded-For`` entry from the right; entries further left
    are client-controlled). Not a valid IP address, or too few entries: ``REMOTE_ADDR``."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    if trusted_proxies < 1:
        return remote
    entries = [item.strip() for item in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if len(entries) < trusted_proxies:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-trusted_proxies]))
    except ValueError:
        return remote


def _handle_post(request: HttpRequest, config: Config, cors: dict[str, str]) -> HttpResponse:
    client = client_address(request, config.INGEST_TRUSTED_PROXIES)
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
    limits = Limits(max_spans=config.INGEST_MAX_SPANS, max_exceptions=config.INGEST_MAX_EXCEPTIONS)
    try:
        message = decode_protobuf(body) if media_type == PROTOBUF else decode_json(body, max_spans=limits.max_spans)
        del body  # the decoded message replaces it; keep peak memory to one copy
        batch = to_readable_spans(message, limits=limits)
    except OTLPValidationError as exc:
        raise _Reject(400, exc.message, exc.details) from exc
    if batch.spans:
        runtime.ingest_spans(batch.spans)
    return _export_response(media_type, _warnings(batch, limits), cors)
