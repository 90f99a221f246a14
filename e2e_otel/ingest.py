"""OTLP/HTTP browser span ingestion: ``POST <mount>/api/v1/debugging/otlp/v1/traces``.

The OTel JS web exporter (``OTLPTraceExporter({url, headers: {"X-E2E-Ingest-Key": ...}})``) can post
here, so an app without a collector still gets frontend steps. Accepted spans are marked
``e2e.layer=frontend`` (the browser's resource, incl. ``service.name``, is kept) and handed to
``Runtime.ingest_spans`` → the derived processors (records, metrics) and the configured exporter.

Public endpoint, so the checks run in this order, cheapest first, and a rejected payload stores
nothing: CORS origin allow-list (403, no CORS headers) → token bucket per client address (429 +
Retry-After) → ingest key (403 when no key is configured at all, 401 when missing/wrong) →
content type (415) → a free decode slot in this process (503 + Retry-After; never waits) →
Content-Length / read size (413; a chunked body without Content-Length is read within the same
limit when the server passes it through, else 411) → gzip, every member, with a decompressed-size
cap and, past 64 KiB, a 50:1 ratio cap (413) → span count (400; for JSON before any protobuf object
is built) → new-trace budget per client → decode + validate + scrub within the request's text and
CPU budgets (400 with a JSON ``{"error", "details"}`` for invalid spans) → ingest the rest.

Notes: the limits are per process and keyed on ``REMOTE_ADDR``, or with ``INGEST_TRUSTED_PROXIES
= N`` on the N-th ``X-Forwarded-For`` address from the right (the one the outermost trusted proxy saw;
a missing or malformed entry falls back to ``REMOTE_ADDR``). The ingest key ships in browser JS, so
it is not a secret: what one request may store and cost is capped (``INGEST_MAX_SPANS`` spans,
``INGEST_MAX_EXCEPTIONS`` exception events, 32 short resource attributes, ``INGEST_MAX_TEXT_CHARS``
of strings, ``INGEST_CPU_BUDGET_MS`` of CPU, ``INGEST_NEW_TRACES_PER_MINUTE`` new traces per client).
Spans dropped by a budget are reported in the OTLP ``partial_success`` (``rejected_spans``) and
counted in ``e2e_otel_ingest_dropped_spans_total{reason}``; truncated or dropped items inside kept
spans only in its message. Django's own instrumentation still traces this POST; its server span is
tagged ``e2e.internal=ingest`` so derived views can tell it apart from app traffic. Runs on the
request thread; ``ingest_spans`` only enqueues (processors never block).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
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
from .ingest_budget import DecodeBudget, secret_words
from .otlp_decode import (
    DecodedBatch,
    Limits,
    OTLPValidationError,
    decode_json,
    decode_protobuf,
    to_readable_spans,
)
from .pacing import Pacer
from .ratelimit import ConcurrencyGate, NewTraceBudget, TokenBucketLimiter

logger = logging.getLogger(__name__)

__all__ = ["INGEST_KEY_HEADER", "client_address", "ingest_traces", "reset_rate_limits"]

INGEST_KEY_HEADER = "X-E2E-Ingest-Key"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_HEADERS = "content-type, content-encoding, traceparent, tracestate, baggage, x-e2e-ingest-key"
PREFLIGHT_MAX_AGE = "600"
MAX_TRACKED_CLIENTS = 10_000
MAX_TRACKED_TRACES = 100_000  # trace ids remembered by the new-trace budget, over all clients
READ_CHUNK = 64 * 1024
BUSY_RETRY_AFTER = "1"
# Zip-bomb guard besides the absolute cap: real OTLP payloads compress far less than 50:1, and small
# bodies are exempt so a tiny, very repetitive batch is still fine.
MAX_GZIP_RATIO = 50
GZIP_RATIO_FREE_BYTES = 64 * 1024

@dataclass(frozen=True)
class _Guards:
    """The process's admission state, rebuilt only when its settings change."""

    settings: tuple[int, int, int, int]
    requests: TokenBucketLimiter
    new_traces: NewTraceBudget
    decodes: ConcurrencyGate


_guards_lock = threading.Lock()
_guards: _Guards | None = None


def _guards_for(config: Config) -> _Guards:
    global _guards
    settings = (config.INGEST_RATE_LIMIT, config.INGEST_RATE_BURST, config.INGEST_NEW_TRACES_PER_MINUTE,
                config.INGEST_MAX_CONCURRENT)
    guards = _guards
    if guards is not None and guards.settings == settings:
        return guards
    with _guards_lock:
        if _guards is None or _guards.settings != settings:
            rate, burst, new_traces, concurrent = settings
            _guards = _Guards(
                settings,
                TokenBucketLimiter(rate_per_second=rate / 60.0, burst=burst, max_clients=MAX_TRACKED_CLIENTS),
                NewTraceBudget(per_minute=new_traces, max_entries=max(MAX_TRACKED_TRACES, new_traces)),
                ConcurrencyGate(concurrent),
            )
        return _guards


def reset_rate_limits() -> None:
    """Forget every client's bucket and trace budget (tests; or after changing a limit at run time)."""
    global _guards
    with _guards_lock:
        _guards = None


def _count(config: Config, family: str, reason: str, amount: int = 1) -> None:
    """Add to ``e2e_otel_ingest_{refused_requests,dropped_spans}_total{reason}``; metrics off: nothing."""
    if amount <= 0 or not config.METRICS_ENABLED:
        return
    from .metrics import get_metrics

    metrics = get_metrics()
    counter = metrics.ingest_refused_requests if family == "refused_requests" else metrics.ingest_dropped_spans
    counter.labels(reason=reason).inc(amount)


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
    declared_text = request.META.get("CONTENT_LENGTH")
    if declared_text in (None, ""):
        body = _read_unsized(request, limit)
    else:
        try:
            declared = int(declared_text)
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


def _discard_unread_body(request: HttpRequest, limit: int) -> None:
    """Read and drop what is left of a refused request's body, when it is within the size limit.

    Why: a server that finds a body left unread has to close the connection; gunicorn drains only
    64 KiB itself, and its graceful close then lingers (up to 2 s) on the worker's event loop while the
    client, told to retry after a second, keeps its socket open: every refused 300 KiB post would
    stall all requests of that worker. Discarding here keeps the connection reusable instead; bodies
    declared over the limit are not read (the server closes those connections), nor more than
    ``limit`` bytes of a chunked one.
    """
    try:
        if request.META.get("CONTENT_LENGTH") in (None, ""):
            if request.META.get("wsgi.input_terminated") and not getattr(request, "_unsized_read", False):
                _read_unsized(request, limit)
            return
        declared = int(request.META["CONTENT_LENGTH"])
        if 0 < declared <= limit:
            while request.read(READ_CHUNK):  # a limited stream: what was read is not read again
                pass
    except (OSError, ValueError, _Reject):  # the client went away, or a bad length: nothing to keep
        pass


def _read_unsized(request: HttpRequest, limit: int) -> bytes:
    """A body without Content-Length (``Transfer-Encoding: chunked``): Django reads none of it, so
    read the WSGI stream ourselves, at most ``limit + 1`` bytes, when the server marks it as
    terminated (gunicorn, uWSGI with chunked input); elsewhere the end is unknowable: 411."""
    stream = request.META.get("wsgi.input")
    if not request.META.get("wsgi.input_terminated") or stream is None:
        if request.META.get("HTTP_TRANSFER_ENCODING"):
            raise _Reject(411, "this server cannot read a body without Content-Length; send Content-Length")
        return b""
    request._unsized_read = True  # type: ignore[attr-defined]  # read once: the refusal path must not wait again
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate every gzip member (RFC 1952 allows several, ``cat a.gz b.gz``), at most the allowed
    size in total (never more), so a bomb costs ~that much memory, not its size."""
    ratio_limit = max(GZIP_RATIO_FREE_BYTES, MAX_GZIP_RATIO * len(body))
    allowed = min(limit, ratio_limit)
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(rest, allowed + 1 - size)
        except zlib.error as exc:
            raise _Reject(400, "body is not valid gzip", [str(exc)]) from exc
        parts.append(data)
        size += len(data)
        if size > allowed or decompressor.unconsumed_tail:
            if allowed < limit:
                raise _Reject(413, f"gzip body of {len(body)} bytes expands to more than {allowed} bytes: "
                                   f"compression ratio above {MAX_GZIP_RATIO}:1 is refused "
                                   f"once it exceeds {GZIP_RATIO_FREE_BYTES} bytes decompressed")
            raise _Reject(413, f"decompressed body exceeds the limit of {limit} bytes")
        if not decompressor.eof:
            raise _Reject(400, "gzip body is truncated")
        rest = decompressor.unused_data
        if not rest:
            return b"".join(parts)


_DROP_TEXTS = {
    "new_trace_budget": "span(s) of traces beyond this client's budget of new traces per minute "
                        "(INGEST_NEW_TRACES_PER_MINUTE) were dropped",
    "text_budget": "span(s) past the request's budget of string characters (INGEST_MAX_TEXT_CHARS) "
                   "were dropped",
    "cpu_budget": "span(s) past the request's CPU budget (INGEST_CPU_BUDGET_MS) were dropped",
}


def _warnings(batch: DecodedBatch, limits: Limits) -> str:
    """The partial-success text: spans dropped by a budget, then what was accepted only in part."""
    parts = [f"{count} {_DROP_TEXTS[reason]}" for reason, count in batch.dropped.items() if count]
    if batch.unscanned_values:
        parts.append(f"{batch.unscanned_values} attribute value(s) too costly to scan for secrets "
                     f"were redacted")
    if batch.truncated_values:
        parts.append(f"{batch.truncated_values} attribute value(s) longer than the limit were truncated")
    if batch.exceptions_dropped:
        parts.append(f"{batch.exceptions_dropped} exception event(s) over the limit of "
                     f"{limits.max_exceptions} per request were dropped")
    if batch.resource_attributes_dropped:
        parts.append(f"{batch.resource_attributes_dropped} resource attribute(s) over the limit of "
                     f"{limits.max_resource_attributes} were dropped")
    return "; ".join(parts)


def _export_response(media_type: str, warning: str, rejected: int, headers: dict[str, str]) -> HttpResponse:
    message = ExportTraceServiceResponse()
    if warning or rejected:
        message.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=warning))
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
        _discard_unread_body(request, config.INGEST_MAX_BODY_BYTES)
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
    guards = _guards_for(config)
    allowed, retry_after = guards.requests.allow(client)
    if not allowed:
        _count(config, "refused_requests", "rate_limit")
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

    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None:
        raise _Reject(503, "e2e-otel is disabled in this process")
    # Reading, inflating and decoding hold up to ~3 copies of a body: a few at a time per process.
    if not guards.decodes.try_enter():
        _count(config, "refused_requests", "busy")
        raise _Reject(503, "too many ingestion requests in progress; retry later",
                      headers={"Retry-After": BUSY_RETRY_AFTER})
    try:
        batch, limits = _decode(request, media_type, config, client, guards, runtime.sanitizer.scrub_text)
    finally:
        guards.decodes.leave()
    for reason, count in batch.dropped.items():
        _count(config, "dropped_spans", reason, count)
    if batch.spans:
        runtime.ingest_spans(batch.spans)
    return _export_response(media_type, _warnings(batch, limits), batch.dropped_spans, cors)


def _decode(request: HttpRequest, media_type: str, config: Config, client: str, guards: _Guards,
            scrub: Callable[[str], str]) -> tuple[DecodedBatch, Limits]:
    budget = DecodeBudget(max_text_chars=config.INGEST_MAX_TEXT_CHARS,
                          cpu_seconds=config.INGEST_CPU_BUDGET_MS / 1000.0,
                          max_value_seconds=config.INGEST_VALUE_SCRUB_MS / 1000.0,
                          max_secret_words=config.INGEST_MAX_SECRET_WORDS,
                          words=secret_words(tuple(config.SENSITIVE_KEYS)), scrub=scrub, pace=Pacer())
    body = _read_body(request, config)
    limits = Limits(max_spans=config.INGEST_MAX_SPANS, max_exceptions=config.INGEST_MAX_EXCEPTIONS,
                    max_string_length=config.INGEST_MAX_VALUE_LENGTH)
    try:
        if media_type == PROTOBUF:
            message = decode_protobuf(body)
        else:
            message = decode_json(body, max_spans=limits.max_spans, budget=budget)
        del body  # the decoded message replaces it; keep peak memory to one copy
        batch = to_readable_spans(message, limits=limits, budget=budget,
                                  admit_traces=lambda ids: guards.new_traces.admit(client, ids))
    except OTLPValidationError as exc:
        raise _Reject(400, exc.message, exc.details) from exc
    return batch, limits
