"""The traffic driver: runs the four seed workflows against a running demo server over real HTTP.

Each workflow is one trace. The driver plays the browser: it makes a trace id, wraps the workflow in
a user-interaction span ("click checkout"), sends every request with ``traceparent`` (parent = that
request's fetch span) and ``baggage: e2e.workflow=<type>``, then posts its own spans as OTLP/JSON to
the ingestion endpoint, so the frontend layer joins the same trace. Standard library only (urllib),
so tests and other processes can drive a server with it. Runs on the caller's thread.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any, TextIO
from urllib.error import HTTPError, URLError
from urllib.request import HTTPCookieProcessor, Request, build_opener

WORKFLOW_TYPES = ("login", "product_fetch", "cart_update", "checkout")
INGEST_PATH = "/api/v1/debugging/otlp/v1/traces"
INGEST_KEY_HEADER = "X-E2E-Ingest-Key"
FRONTEND_SERVICE = "e2e-otel-demo-web"
FRONTEND_SCOPE = "e2e-otel-demo/user-interaction"
_KIND_INTERNAL, _KIND_CLIENT = 1, 3
_STATUS_ERROR = 2


@dataclass
class Call:
    method: str
    path: str
    status: int
    duration_ms: float
    body: Any = None

    @property
    def failed(self) -> bool:
        """A server error or a declined payment (402 ``payment_declined``); other 4xx are the client's."""
        declined = isinstance(self.body, dict) and self.body.get("code") == "payment_declined"
        return self.status >= 500 or declined


@dataclass
class WorkflowRun:
    """What the driver saw of one workflow; ``correlation_id`` is its trace id in UUID form."""

    workflow_type: str
    user: str
    trace_id: str
    calls: list[Call] = field(default_factory=list)
    frontend_spans: int = 0
    ingest_status: int | None = None
    error: str | None = None

    @property
    def correlation_id(self) -> str:
        return str(uuid.UUID(hex=self.trace_id))

    @property
    def failed(self) -> bool:
        return self.error is not None or any(c.failed for c in self.calls)


class _Span:
    """A browser-side span being built (OTLP/JSON shape on ``to_otlp``)."""

    def __init__(self, trace_id: str, name: str, parent: str | None, kind: int, page: str,
                 attributes: dict[str, Any] | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = f"{secrets.randbits(64) or 1:016x}"
        self.parent = parent
        self.name = name
        self.kind = kind
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None
        self.attributes: dict[str, Any] = {"e2e.layer": "frontend", "e2e.component": page,
                                           "e2e.operation": name, **(attributes or {})}
        self.error: str | None = None

    def end(self) -> None:
        self.end_ns = time.time_ns()

    def to_otlp(self) -> dict[str, Any]:
        span: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start_ns),
            "endTimeUnixNano": str(self.end_ns or time.time_ns()),
            "attributes": [_kv(k, v) for k, v in self.attributes.items()],
        }
        if self.parent:
            span["parentSpanId"] = self.parent
        if self.error:
            span["status"] = {"code": _STATUS_ERROR, "message": self.error}
        return span


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def otlp_payload(spans: Sequence[_Span]) -> dict[str, Any]:
    resource = {"attributes": [_kv("service.name", FRONTEND_SERVICE), _kv("telemetry.sdk.language", "webjs")]}
    return {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": {"name": FRONTEND_SCOPE},
                                               "spans": [s.to_otlp() for s in spans]}]}]}


class Browser:
    """One virtual user: a cookie jar (session auth) and, after login, an API token."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.token: str | None = None
        self.reset_session()

    def reset_session(self) -> None:
        self._opener = build_opener(HTTPCookieProcessor(CookieJar()))

    def request(self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
                use_token: bool = True) -> Call:
        data = None if body is None else json.dumps(body).encode()
        request = Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if use_token and self.token:
            request.add_header("Authorization", f"Token {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        started = time.perf_counter()
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except HTTPError as exc:
            status, raw = exc.code, exc.read()
        duration = (time.perf_counter() - started) * 1000
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:200].decode("utf-8", "replace")
        return Call(method, path, status, duration, parsed)


class WorkflowRecorder:
    """Collects one workflow's browser spans and performs its fetches with trace headers."""

    def __init__(self, browser: Browser, run: WorkflowRun, page: str, root_name: str) -> None:
        self.browser = browser
        self.run = run
        self.page = page
        self.spans: list[_Span] = []
        self.root = self._span(root_name, None, _KIND_INTERNAL)

    def _span(self, name: str, parent: str | None, kind: int, attributes: dict[str, Any] | None = None) -> _Span:
        span = _Span(self.run.trace_id, name, parent, kind, self.page, attributes)
        self.spans.append(span)
        return span

    def fetch(self, method: str, path: str, body: Any = None, *, use_token: bool = True) -> Call:
        span = self._span(f"HTTP {method}", self.root.span_id, _KIND_CLIENT,
                          {"http.request.method": method, "url.path": path.split("?", 1)[0]})
        span.attributes["e2e.operation"] = f"fetch {method} {path.split('?', 1)[0]}"
        headers = {
            "traceparent": f"00-{self.run.trace_id}-{span.span_id}-01",
            "baggage": f"e2e.workflow={self.run.workflow_type}",
        }
        call = self.browser.request(method, path, body=body, headers=headers, use_token=use_token)
        span.end()
        span.attributes["http.response.status_code"] = call.status
        if call.failed:
            span.error = f"HTTP {call.status}"
        self.run.calls.append(call)
        return call

    def render(self, name: str, seconds: float) -> None:
        span = self._span(name, self.root.span_id, _KIND_INTERNAL)
        time.sleep(seconds)
        span.end()

    def finish(self) -> None:
        self.root.end()
        if self.run.failed:
            self.root.error = next((f"{c.method} {c.path} answered {c.status}" for c in self.run.calls
                                    if c.failed), self.run.error or "failed")
        self.run.frontend_spans = len(self.spans)


class TrafficDriver:
    """Runs workflows in the fixed order login → product fetch → cart update → checkout per user."""

    def __init__(self, base_url: str, *, ingest_key: str | None, customers: Sequence[str], password: str,
                 product_ids: Sequence[int], category_slugs: Sequence[str], invalid_payload: bool = True,
                 seed: int = 7) -> None:
        if not customers or not product_ids:
            raise ValueError("the traffic driver needs at least one customer and one product")
        self.base_url = base_url.rstrip("/")
        self.ingest_key = ingest_key
        self.browsers = [Browser(base_url, name, password) for name in customers]
        self.product_ids = list(product_ids)
        self.category_slugs = list(category_slugs)
        self.invalid_payload = invalid_payload
        self.random = random.Random(seed)
        self._counts = dict.fromkeys(WORKFLOW_TYPES, 0)

    def plan(self, count: int) -> list[tuple[str, Browser]]:
        return [(WORKFLOW_TYPES[i % 4], self.browsers[(i // 4) % len(self.browsers)]) for i in range(count)]

    def run(self, count: int, progress: Callable[[int, int, WorkflowRun], None] | None = None) -> list[WorkflowRun]:
        runs: list[WorkflowRun] = []
        for index, (workflow_type, browser) in enumerate(self.plan(count), start=1):
            run = self.run_workflow(workflow_type, browser)
            runs.append(run)
            if progress is not None:
                progress(index, count, run)
        return runs

    def run_workflow(self, workflow_type: str, browser: Browser) -> WorkflowRun:
        if workflow_type not in WORKFLOW_TYPES:
            raise ValueError(f"unknown workflow type {workflow_type!r}; choose from {WORKFLOW_TYPES}")
        self._counts[workflow_type] += 1
        # A UUIDv4-shaped trace id, like a browser's crypto.randomUUID() (122 random bits).
        run = WorkflowRun(workflow_type, browser.username, uuid.uuid4().hex)
        page, root = {
            "login": ("login page", "submit login form"),
            "product_fetch": ("catalogue page", "open catalogue"),
            "cart_update": ("product page", "click add to cart"),
            "checkout": ("cart page", "click checkout"),
        }[workflow_type]
        recorder = WorkflowRecorder(browser, run, page, root)
        try:
            getattr(self, f"_{workflow_type}")(recorder, browser, self._counts[workflow_type])
        except (URLError, OSError) as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        recorder.finish()
        run.ingest_status = self.post_frontend_spans(recorder.spans)
        return run

    # --- the four workflows ------------------------------------------------------------------------

    def _login(self, rec: WorkflowRecorder, browser: Browser, n: int) -> None:
        browser.reset_session()  # a fresh browser session: session login, then the token flow
        call = rec.fetch("POST", "/api/shop/auth/login/",
                         {"username": browser.username, "password": browser.password}, use_token=False)
        if call.status == 200 and isinstance(call.body, dict):
            browser.token = call.body.get("token")
        rec.fetch("GET", "/api/shop/auth/me/", use_token=False)  # authenticated by the session cookie
        rec.render("render account menu", self.random.uniform(0.005, 0.03))

    def _product_fetch(self, rec: WorkflowRecorder, browser: Browser, n: int) -> None:
        rec.fetch("GET", "/api/shop/categories/")
        slug = self.category_slugs[n % len(self.category_slugs)] if self.category_slugs and n % 2 else None
        listing = rec.fetch("GET", "/api/shop/products/" + (f"?category={slug}" if slug else ""))
        # Every fifth catalogue render is slow (a big image grid), tripping the frontend threshold.
        rec.render("render product list", 0.24 if n % 5 == 0 else self.random.uniform(0.02, 0.08))
        products = listing.body if isinstance(listing.body, list) and listing.body else None
        # Open a different product each time (by workflow index), like users browsing the list.
        product_id = products[(n - 1) % len(products)]["id"] if products else self.random.choice(self.product_ids)
        rec.fetch("GET", f"/api/shop/products/{product_id}/")
        rec.render("render product page", self.random.uniform(0.01, 0.05))

    def _cart_update(self, rec: WorkflowRecorder, browser: Browser, n: int) -> None:
        product_id = self.random.choice(self.product_ids)
        if self.invalid_payload and n % 3 == 2:
            # The invalid-payload path: a stale form posts quantity 0 → 400 from DRF validation.
            rec.fetch("POST", "/api/shop/cart/items/", {"product": product_id, "quantity": 0})
        rec.fetch("POST", "/api/shop/cart/items/", {"product": product_id, "quantity": self.random.randint(1, 3)})
        rec.fetch("GET", "/api/shop/cart/")
        rec.render("render cart", self.random.uniform(0.01, 0.05))

    def _checkout(self, rec: WorkflowRecorder, browser: Browser, n: int) -> None:
        call = rec.fetch("POST", "/api/shop/checkout/",
                         {"shipping_address": f"{n} Trace Street, Spanville", "payment_method": "card"})
        if call.status == 201:
            rec.fetch("GET", "/api/shop/orders/")
            rec.render("render order confirmation", self.random.uniform(0.01, 0.04))
        else:
            rec.render("render payment error", self.random.uniform(0.005, 0.02))

    # --- frontend spans ----------------------------------------------------------------------------

    def post_frontend_spans(self, spans: Sequence[_Span]) -> int | None:
        """POST the browser spans as OTLP/JSON to the ingestion endpoint; returns the HTTP status."""
        if not self.ingest_key or not spans:
            return None
        request = Request(self.base_url + INGEST_PATH, data=json.dumps(otlp_payload(spans)).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header(INGEST_KEY_HEADER, self.ingest_key)
        try:
            with build_opener().open(request, timeout=30) as response:
                return int(response.status)
        except HTTPError as exc:
            return exc.code
        except (URLError, OSError):
            return None


class ProgressBar:
    """A dependency-free progress bar on stderr (one line, redrawn; plain lines when not a TTY)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.width = width
        self.failed = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def __call__(self, done: int, total: int, run: WorkflowRun) -> None:
        self.failed += run.failed
        filled = int(self.width * done / self.total)
        line = (f"  [{'#' * filled}{'.' * (self.width - filled)}] {done:>4}/{self.total} "
                f"{run.workflow_type:<13} failed: {self.failed}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= self.total else ""))
        else:
            decile = done * 10 // self.total
            if decile == self._last_decile and done < self.total:
                return
            self._last_decile = decile
            self.stream.write(line + "\n")
        self.stream.flush()
