"""Correlation IDs are W3C trace ids.

``X-Correlation-ID`` is the request's 128-bit trace id written as a UUID; ``traceparent`` carries the
same id. Incoming values are parsed by ``propagation`` (strictly validated, never echoed); this
module exposes the id to views, outgoing calls and responses.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanContext

from .conf import get_config
from .inflight import begin_request, end_request
from .logging import bind_request
from .propagation import format_correlation_id
from .spans_to_records import ATTR_INTERNAL
from .traffic import internal_kind

__all__ = ["CorrelationMiddleware", "get_correlation_id", "inject_headers", "traceresponse_value"]


def get_correlation_id(span: Span | None = None) -> str | None:
    """The current trace id in UUID form, or ``None`` outside a trace."""
    context = (span or trace.get_current_span()).get_span_context()
    return format_correlation_id(context.trace_id) if context.is_valid else None


def inject_headers(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add ``traceparent``/``tracestate``/``baggage`` and the correlation header for an outgoing call."""
    headers = {} if headers is None else headers
    propagate.inject(headers)
    correlation_id = get_correlation_id()
    if correlation_id:
        headers[get_config().CORRELATION_HEADER] = correlation_id
    return headers


def traceresponse_value(context: SpanContext) -> str:
    """W3C Trace Context Level 2 ``traceresponse``: the server span as the caller's child."""
    return _traceresponse(f"{context.trace_id:032x}", context)


def _traceresponse(trace_hex: str, context: SpanContext) -> str:
    """``traceresponse`` with the trace id's 32 hex digits already at hand (the middleware has them)."""
    return f"00-{trace_hex}-{context.span_id:016x}-{int(context.trace_flags):02x}"


_internal_lock = threading.Lock()
_internal_in_flight = 0


def internal_requests_in_flight() -> bool:
    """Whether a request marked internal (``traffic.py``: e2e-otel's own pages, ``IGNORE_PATHS``,
    unmatched) is being served in this process right now.

    ``WorkflowSpanProcessor.on_start`` copies the internal mark from parent to child span; while no
    internal request runs there is no mark to copy, so it skips reading the parent's attributes (the
    costlier half of its per-span work). Over-approximating is harmless: it only costs that read (an
    ASGI request cancelled while ``process_view`` runs in its worker thread can leave the count one
    too high for good; marking stays correct).
    """
    return _internal_in_flight > 0


def begin_internal_request() -> None:
    """Count one more internal request in flight (the middleware marked its server span)."""
    global _internal_in_flight
    with _internal_lock:  # marked requests only: never taken on the app's workflow requests
        _internal_in_flight += 1


def end_internal_request() -> None:
    global _internal_in_flight
    with _internal_lock:
        _internal_in_flight -= 1


def _end_internal(request: HttpRequest) -> None:
    if getattr(request, "_e2e_internal", False):
        request._e2e_internal = False  # type: ignore[attr-defined]
        end_internal_request()


def _mark(request: HttpRequest, span: Span, kind: str) -> None:
    """Tag the server span ``e2e.internal=kind`` and count the request until it ends, so the spans
    started under it inherit the mark (``WorkflowSpanProcessor.on_start``)."""
    span.set_attribute(ATTR_INTERNAL, kind)
    if not getattr(request, "_e2e_internal", False):
        request._e2e_internal = True  # type: ignore[attr-defined]
        begin_internal_request()


def _unresolvable(request: HttpRequest) -> bool:
    """Whether no URL pattern matches the request (Django's own resolution is still to come)."""
    try:
        resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return True
    except Exception:  # a broken URLconf fails the request in Django itself, reported there
        return False
    return False


def _mark_unmatched_at_start(request: HttpRequest, span: Span) -> None:
    """A request the Django instrumentation could not name (its span name is the bare method, which
    semantic conventions prescribe when there is no route) and that really resolves to nothing: mark
    it before the 404 handler runs, so the queries of a custom 404 page are left out too. Requests
    with a route never get here; the extra resolution is paid only by unresolvable ones (and by a
    nameless ``path("", view)``, which resolves)."""
    if " " not in getattr(span, "name", " ") and _unresolvable(request):
        _mark(request, span, "unmatched")


def _mark_unmatched_at_end(request: HttpRequest, span: Span) -> None:
    """No view ran (a middleware answered, e.g. a redirect or a static file): not a workflow either."""
    if not getattr(request, "_e2e_viewed", False) and not getattr(request, "_e2e_internal", False) \
            and span.is_recording():
        span.set_attribute(ATTR_INTERNAL, "unmatched")


class CorrelationMiddleware:
    """Sets ``request.correlation_id`` and the response headers, and counts the request as in flight
    (``inflight.py``: e2e-otel's background threads stand back meanwhile). Inserted right after the
    OTel middleware by ``AppConfig.ready()``; runs on the request thread and does O(1) work: one span
    lookup and one id formatting per request, reused for the response headers, and one cached
    ``(method, route)`` look-up that marks traffic which is no workflow (``traffic.py``). Only a request
    the instrumentation could not name pays a second URL resolution (to tell a 404 apart)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.header = get_config().CORRELATION_HEADER
        # Access-Control-Expose-Headers when the response has none yet (the usual case).
        self._expose = f"{self.header}, traceresponse"
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._is_async:
            return self.__acall__(request)
        span, context, correlation_id = self._before(request)
        begin_request()
        try:
            response = self.get_response(request)
        finally:
            end_request()
            _mark_unmatched_at_end(request, span)
            _end_internal(request)
        return self._after(response, context, correlation_id)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        span, context, correlation_id = self._before(request)
        begin_request()
        try:
            response = await self.get_response(request)
        finally:
            end_request()
            _mark_unmatched_at_end(request, span)
            _end_internal(request)
        return self._after(response, context, correlation_id)

    def _before(self, request: HttpRequest) -> tuple[Span, SpanContext, str | None]:
        span = trace.get_current_span()
        context = span.get_span_context()
        correlation_id = format_correlation_id(context.trace_id) if context.is_valid else None
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        bind_request(context)  # log records after the span ended (django.request 404s) keep the ids
        if span.is_recording():
            _mark_unmatched_at_start(request, span)
        return span, context, correlation_id

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        """Mark traffic that is no workflow (``traffic.internal_kind``: e2e-otel's own pages, the
        admin of its models, ``IGNORE_PATHS``) as internal.

        Runs after URL resolution and before the view, so the view's queries are started under a
        marked server span; derived views (records, breaches, query findings) skip that traffic.
        """
        request._e2e_viewed = True  # type: ignore[attr-defined]
        match = getattr(request, "resolver_match", None)
        if match is None:
            return None
        span = trace.get_current_span()
        if span.is_recording():
            kind = internal_kind(request.method, match, view_func)
            if kind is not None:
                _mark(request, span, kind)
        return None

    def _after(self, response: HttpResponseBase, context: SpanContext,
               correlation_id: str | None) -> HttpResponseBase:
        if correlation_id is None:
            return response
        headers = response.headers
        headers[self.header] = correlation_id
        headers["traceresponse"] = _traceresponse(correlation_id.replace("-", ""), context)
        exposed = headers.get("Access-Control-Expose-Headers")
        if not exposed:
            headers["Access-Control-Expose-Headers"] = self._expose
            return response
        names = [n.strip() for n in exposed.split(",") if n.strip()]
        for name in (self.header, "traceresponse"):
            if name.lower() not in (n.lower() for n in names):
                names.append(name)
        headers["Access-Control-Expose-Headers"] = ", ".join(names)
        return response
