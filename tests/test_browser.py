"""A real Chromium running the real OpenTelemetry JS web SDK against a real Django server.

The frontend (tests/browser/src/app.js, bundled with esbuild) is served by a stdlib HTTP server on its
own origin, like a Next.js app beside a Django API. In the page, a "Checkout" click opens a manual
span with W3C baggage ``e2e.workflow=checkout``; the fetch instrumentation calls the Django API on
another origin with ``traceparent`` + ``baggage`` (``propagateTraceHeaderCorsUrls``); the OTLP/HTTP
exporter posts the browser's spans to e2e-otel's ingestion endpoint with ``X-E2E-Ingest-Key`` after a
CORS preflight. Django runs as a ``runserver`` subprocess on the pytest-django MariaDB test database,
records enabled, exporting to the test OTLP receiver. The same page served from a second origin that
is not on the ingest allow-list must have its spans refused (by the browser, after the endpoint's 403
preflight), while its API call works.

Needs node, tests/browser/node_modules (``npm ci --prefix tests/browser``) and Chromium
(``/usr/bin/chromium`` or ``CHROMIUM_PATH``); skips without them unless ``E2E_OTEL_REQUIRE_BROWSER=1``
(CI), which turns the skip into a failure. The admin waterfall screenshot is written to a temporary
directory (``E2E_BROWSER_SCREENSHOT`` overrides the path), never into the repository.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.servers import PYTHON, ServerProcess, free_port, subprocess_env

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
INGEST_PATH = "/api/v1/debugging/otlp/v1/traces"
INGEST_KEY = "test-ingest-key"  # tests/settings.py
NODE_PACKAGES = ("esbuild", "playwright-core", "@opentelemetry/sdk-trace-web",
                 "@opentelemetry/exporter-trace-otlp-http", "@opentelemetry/instrumentation-fetch")

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


def _missing_tooling() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
    for package in NODE_PACKAGES:
        if not (BROWSER_DIR / "node_modules" / package).is_dir():
            return f"tests/browser/node_modules/{package} is missing (run: npm ci --prefix tests/browser)"
    return None


@pytest.fixture(scope="module")
def bundle_dir() -> Iterator[Path]:
    """A temporary directory with the freshly bundled app.js (never a stale, committed build)."""
    reason = _missing_tooling()
    if reason is not None:
        if os.environ.get("E2E_OTEL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"E2E_OTEL_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="e2e-browser-"))
    try:
        subprocess.run(
            [str(BROWSER_DIR / "node_modules" / ".bin" / "esbuild"), "src/app.js", "--bundle", "--format=iife",
             "--target=es2020", "--log-level=warning", f"--outfile={directory / 'app.js'}"],
            cwd=BROWSER_DIR, check=True, capture_output=True, timeout=60)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def frontend(bundle_dir: Path) -> Iterator[int]:
    """The static "frontend" server (a stand-in for ``next dev``); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(bundle_dir)))
    thread = threading.Thread(target=server.serve_forever, name="browser-test-frontend", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _write_page(directory: Path, api_base: str) -> None:
    config = {"apiBase": api_base, "ingestUrl": api_base.rstrip("/") + INGEST_PATH, "ingestKey": INGEST_KEY}
    (directory / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>shop</title>"
        f"<script>window.E2E_CONFIG = {json.dumps(config)};</script></head>"
        "<body><h1>Cart</h1><button id='checkout'>Checkout</button><script src='app.js'></script></body></html>")


def _drive(job: dict[str, Any], timeout: float = 45) -> dict[str, Any]:
    """Run tests/browser/drive.mjs in its own process group; the group (node + Chromium) is killed
    if it overruns, so a hung browser never outlives the test."""
    env = {**os.environ, "CHROMIUM_PATH": CHROMIUM}
    process = subprocess.Popen(["node", "drive.mjs", json.dumps(job)], cwd=BROWSER_DIR, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"drive.mjs timed out after {timeout}s:\n{stderr[-4000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # stray Chromium helpers of the group
    if process.returncode != 0:
        raise AssertionError(f"drive.mjs failed ({process.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _steps(trace_id: str) -> list[Any]:
    from e2e_otel.models import TraceStep

    return list(TraceStep.objects.filter(correlation_id=uuid.UUID(trace_id)).order_by("start_time", "id"))


def _wait_for_steps(trace_id: str, layers: set[str], minimum: int, timeout: float = 20) -> list[Any]:
    deadline = time.monotonic() + timeout
    steps = _steps(trace_id)
    while time.monotonic() < deadline:
        if len(steps) >= minimum and layers <= {step.layer for step in steps}:
            time.sleep(0.3)  # a straggler of the same batch
            return _steps(trace_id)
        time.sleep(0.1)
        steps = _steps(trace_id)
    return steps


@pytest.mark.django_db(transaction=True)
def test_browser_checkout_becomes_one_workflow(frontend: int, bundle_dir: Path, otlp_receiver: Any) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from e2e_otel.models import WorkflowSession

    allowed_origin = f"http://localhost:{frontend}"
    refused_origin = f"http://127.0.0.1:{frontend}"  # same page, another origin: not on the allow-list
    port = free_port()
    api_base = f"http://127.0.0.1:{port}/"
    _write_page(bundle_dir, api_base)
    get_user_model().objects.create_superuser("browser-admin", "admin@example.com", "browser-pw-not-secret")

    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_MYSQL_DATABASE": connection.settings_dict["NAME"],
        "E2E_TEST_OTEL_OVERRIDES": json.dumps({"INGEST_ALLOWED_ORIGINS": [allowed_origin]}),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_base_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    # --insecure: serve the admin's CSS with DEBUG off, so the screenshot shows the real admin.
    argv = [PYTHON, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"]
    with ServerProcess(argv, port=port, env=env) as server:
        result = _drive({"mode": "checkout",
                         "pages": [f"{allowed_origin}/index.html", f"{refused_origin}/index.html"]})
        allowed, refused = result["pages"]

        # --- the allowed origin: browser + api + database steps in ONE workflow session ------------
        state = allowed["state"]
        assert state["apiStatus"] == 200, (state, allowed["console"])
        assert state["exports"] and all(export["ok"] for export in state["exports"]), (state, allowed["console"])
        trace_id = state["traceId"]
        correlation_id = str(uuid.UUID(trace_id))
        assert state["correlationHeader"] == correlation_id  # the server continued the browser's trace

        steps = _wait_for_steps(trace_id, {"frontend", "api", "database"}, minimum=4)
        logs = server.logs()
        assert {step.layer for step in steps} == {"frontend", "api", "database"}, (
            [(s.layer, s.name) for s in steps], WorkflowSession.objects.count(), logs[-3000:])
        sessions = list(WorkflowSession.objects.filter(correlation_id=uuid.UUID(trace_id)))
        assert len(sessions) == 1
        session = sessions[0]
        assert (session.workflow_type, session.workflow_type_source) == ("checkout", "baggage")
        assert all(step.workflow_session_id == session.pk for step in steps)
        deadline = time.monotonic() + 10
        while session.status == "in_progress" and time.monotonic() < deadline:  # the click root closes it
            time.sleep(0.2)
            session.refresh_from_db()
        # The fetch span often reaches us after the click (its root) closed the session: a late span of
        # a finished request must not reopen it.
        assert session.status == "completed" and session.duration_ms and session.duration_ms > 0, (
            session.status, session.duration_ms)

        # start-time order: the click, the browser's fetch, Django's request, then its queries
        assert [step.layer for step in steps][:3] == ["frontend", "frontend", "api"], steps
        assert all(step.layer == "database" for step in steps[3:])
        click, fetch, api = steps[:3]
        assert fetch.name == "POST"  # instrumentation-fetch names the span after the method
        assert (click.layer, click.component, click.operation) == ("frontend", "CheckoutButton", "click")
        assert fetch.component == "/browser/checkout/"  # a URL template, not the raw URL
        assert fetch.parent_span_id == click.span_id
        assert api.parent_span_id == fetch.span_id  # traceparent crossed origins (CORS-allowed header)
        assert all(step.parent_span_id == api.span_id for step in steps[3:])

        # The collector (Jaeger's view) got the same trace: browser spans + Django's, one trace id.
        otlp_receiver.wait_for(lambda spans: sum(1 for s in spans if s.trace_id == trace_id) >= len(steps),
                               timeout=15)
        exported = otlp_receiver.spans_for_trace(trace_id)
        assert {s.span_id for s in exported} >= {step.span_id for step in steps}
        assert {s.resource.get("service.name") for s in exported if s.attributes.get("e2e.layer") == "frontend"} == {
            "shop-web"}

        # The exporter's POST needed a preflight (custom header + JSON); the endpoint allowed it.
        assert f'"OPTIONS {INGEST_PATH} HTTP/1.1" 204' in logs
        assert f'"POST {INGEST_PATH} HTTP/1.1" 200' in logs
        # document-load instrumentation spans (their own trace) were accepted as frontend steps too.
        load = next(span for span in state["ended"] if span["name"] == "documentLoad")
        assert any(step.name == "documentLoad" and step.layer == "frontend"
                   for step in _wait_for_steps(load["traceId"], {"frontend"}, minimum=2))

        # --- the refused origin: the API answered, but the browser never sent the spans ------------
        refused_state = refused["state"]
        assert refused_state["apiStatus"] == 200, refused_state
        assert refused_state["exports"] and not any(export["ok"] for export in refused_state["exports"])
        assert any("blocked by CORS policy" in line and INGEST_PATH in line for line in refused["console"]), (
            refused["console"])
        assert f'"OPTIONS {INGEST_PATH} HTTP/1.1" 403' in server.logs()
        refused_steps = _wait_for_steps(refused_state["traceId"], {"api", "database"}, minimum=2)
        assert {step.layer for step in refused_steps} == {"api", "database"}  # no frontend step stored
        refused_load = next(span for span in refused_state["ended"] if span["name"] == "documentLoad")
        assert _steps(refused_load["traceId"]) == []

        # --- the admin waterfall for the session, as a staff user sees it ---------------------------
        shot = os.environ.get("E2E_BROWSER_SCREENSHOT") or str(
            Path(tempfile.gettempdir()) / f"e2e-otel-waterfall-{session.pk}.png")
        page = _drive({"mode": "screenshot", "loginUrl": f"{server.base_url}/admin/login/",
                       "username": "browser-admin", "password": "browser-pw-not-secret",
                       "url": f"{server.base_url}/admin/e2e_otel/workflowsession/{session.pk}/change/",
                       "path": shot})
        assert page["status"] == 200, page
        assert len(page["bars"]) == len(steps), page
        assert all(bar["widthPx"] > 0 for bar in page["bars"]), page["bars"]
        assert len({bar["background"] for bar in page["bars"]}) == 3  # one colour per layer
        assert Path(shot).stat().st_size > 10_000
