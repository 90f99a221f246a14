"""Whole-process behaviour: fork safety under gunicorn --preload, bounded exit, the off switches."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from e2e_otel.testing.otlp_receiver import OTLPReceiver
from tests.servers import (
    BIN_DIR,
    PYTHON,
    REPO_ROOT,
    ServerProcess,
    closed_port,
    free_port,
    gunicorn,
    subprocess_env,
)

pytestmark = pytest.mark.slow

NO_RECORDS = '{"RECORDS_ENABLED": false}'

# Runs django.setup(), serves requests through the full middleware chain, reports what it saw.
PROBE = r"""
import json, os, sys, threading, time
started = time.monotonic()
import django
django.setup()
from django.conf import settings
from django.test import Client
from opentelemetry import trace
from e2e_otel.bootstrap import get_runtime
client = Client()
responses = [client.get("/ping/", headers={"X-Correlation-ID": os.environ.get("PROBE_CID", "")})
             for _ in range(int(os.environ.get("PROBE_REQUESTS", "20")))]
runtime = get_runtime()
print(json.dumps({
    "status": [r.status_code for r in responses],
    "correlation_header": [r.get("X-Correlation-ID") for r in responses][:1],
    "threads": sorted(t.name for t in threading.enumerate()),
    "runtime": runtime is not None,
    "exporter": None if runtime is None else type(runtime.exporter).__name__,
    "provider": type(trace.get_tracer_provider()).__name__,
    "middleware": list(settings.MIDDLEWARE),
    "setup_seconds": time.monotonic() - started,
}), flush=True)
"""


def _run_probe(env: dict[str, str], timeout: float = 30) -> tuple[dict, float, str]:
    """Run PROBE; returns its report, the seconds from its last line to process exit, and stderr."""
    process = subprocess.Popen([PYTHON, "-c", PROBE], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = process.stdout.readline()  # printed right before the interpreter starts exiting
        reported = time.monotonic()
        _, stderr = process.communicate(timeout=timeout)
        exit_seconds = time.monotonic() - reported
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0 and line, f"rc={process.returncode} {line}{stderr}"
    return json.loads(line), exit_seconds, stderr


def test_gunicorn_preload_two_workers_both_export(otlp_receiver: OTLPReceiver) -> None:
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": NO_RECORDS,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    served: dict[int, list[str]] = {}
    with gunicorn(env, workers=2, preload=True) as server:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(10):  # concurrent slow requests keep both workers busy
                ids = [str(uuid.uuid4()) for _ in range(4)]
                results = pool.map(lambda cid: server.get("/pid/?sleep=0.15", {"X-Correlation-ID": cid}), ids)
                for cid, (status, _headers, body) in zip(ids, results, strict=True):
                    assert status == 200, server.logs()
                    served.setdefault(json.loads(body)["pid"], []).append(cid)
                if len(served) == 2:
                    break
        assert len(served) == 2, f"only one worker served: {served.keys()}\n{server.logs()}"
        wanted = {cid.replace("-", ""): pid for pid, cids in served.items() for cid in cids}
        otlp_receiver.wait_for(lambda spans: wanted.keys() <= {s.trace_id for s in spans}, timeout=15)
    servers = [s for s in otlp_receiver.spans if s.trace_id in wanted and s.kind == 2]
    assert {s.trace_id for s in servers} == set(wanted)
    for span in servers:  # each span names the worker that made it, not the preloading master
        assert span.resource["process.pid"] == wanted[span.trace_id]
    assert {s.resource["process.pid"] for s in servers} == set(served)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exit_is_bounded_when_the_collector_is_unreachable(protocol: str) -> None:
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": NO_RECORDS,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    })
    report, exit_seconds, _ = _run_probe(env)
    assert set(report["status"]) == {200} and report["runtime"]
    assert report["exporter"] is not None  # spans were pending for a real OTLP exporter at exit
    # The first failed attempt ends the exit flush (the stock SDK set-up retries for 20-30 s here, the
    # old exit waited out SHUTDOWN_TIMEOUT). Start-up time is not counted: on a loaded CI machine
    # django.setup() alone can take seconds.
    assert exit_seconds < 1.5, f"exit took {exit_seconds:.1f}s after the work was done"


def test_exit_flushes_pending_spans(otlp_receiver: OTLPReceiver) -> None:
    cid = str(uuid.uuid4())
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": NO_RECORDS,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only the exit flush can deliver them
        "PROBE_CID": cid,
        "PROBE_REQUESTS": "3",
    })
    report, _, _ = _run_probe(env)
    assert report["correlation_header"] == [cid]
    # the process has exited: whatever arrived was flushed by the atexit hook
    assert len(otlp_receiver.spans_for_trace(cid.replace("-", ""))) == 3


@pytest.mark.parametrize(
    ("extra_env", "overrides"),
    [({}, '{"ENABLED": false}'), ({"OTEL_SDK_DISABLED": "true"}, "{}")],
    ids=["ENABLED-False", "OTEL_SDK_DISABLED"],
)
def test_disabled_means_nothing_runs(extra_env: dict[str, str], overrides: str,
                                     otlp_receiver: OTLPReceiver) -> None:
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": overrides,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PROBE_CID": str(uuid.uuid4()),
        **extra_env,
    })
    report, _, _ = _run_probe(env)
    assert set(report["status"]) == {200}  # the app still works
    assert report["correlation_header"] == [None]
    assert report["threads"] == ["MainThread"], report["threads"]
    assert report["runtime"] is False and report["exporter"] is None
    assert report["provider"] != "TracerProvider"  # the API's no-op/proxy, not ours
    assert not any("e2e_otel" in m or "opentelemetry" in m for m in report["middleware"])
    time.sleep(0.3)
    assert otlp_receiver.spans == []


def test_opentelemetry_instrument_uses_our_distro_and_ready_reuses_its_provider(
        otlp_receiver: OTLPReceiver) -> None:
    """``opentelemetry-instrument gunicorn ...``: our configurator builds the provider before Django
    exists; ``AppConfig.ready()`` then adds to it instead of installing a second one."""
    port = free_port()
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": NO_RECORDS,
        "OTEL_PYTHON_DISTRO": "e2e_otel",
        "OTEL_PYTHON_CONFIGURATOR": "e2e_otel",
        "OTEL_SERVICE_NAME": "instrumented-shop",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    argv = [str(BIN_DIR / "opentelemetry-instrument"), str(BIN_DIR / "gunicorn"), "tests.wsgi:application",
            "-b", f"127.0.0.1:{port}", "-w", "1"]
    correlation_ids = [str(uuid.uuid4()) for _ in range(3)]
    with ServerProcess(argv, port=port, env=env) as server:
        pids = set()
        for cid in correlation_ids:
            status, headers, body = server.get("/pid/", {"X-Correlation-ID": cid})
            assert status == 200, server.logs()
            assert headers["x-correlation-id"] == cid  # our propagators are active
            pids.add(json.loads(body)["pid"])
        wanted = {cid.replace("-", "") for cid in correlation_ids}
        otlp_receiver.wait_for(lambda spans: wanted <= {s.trace_id for s in spans}, timeout=15)
        time.sleep(0.5)  # a second exporter (double set-up) would deliver its copies by now
    spans = [s for s in otlp_receiver.spans if s.trace_id in wanted]
    assert len(spans) == 3, [(s.name, s.trace_id, s.span_id) for s in spans]  # exported once, one server span
    assert len({s.span_id for s in spans}) == 3
    for span in spans:
        assert span.kind == 2 and span.scope_name == "opentelemetry.instrumentation.django"
        assert span.resource["service.name"] == "instrumented-shop"
        assert span.resource["telemetry.distro.name"] == "e2e-otel"
        assert span.resource["process.pid"] in pids  # the worker, not the master that configured it


def test_manage_py_check_under_opentelemetry_instrument_warns_about_ignored_keys() -> None:
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",  # sets SERVICE_NAME in E2E_OTEL
        "E2E_TEST_DB": "sqlite",
        "E2E_TEST_OTEL_OVERRIDES": NO_RECORDS,
        "OTEL_PYTHON_DISTRO": "e2e_otel",
        "OTEL_PYTHON_CONFIGURATOR": "e2e_otel",
        "OTEL_TRACES_EXPORTER": "none",
    })
    argv = [str(BIN_DIR / "opentelemetry-instrument"), PYTHON, "-m", "django", "check"]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output  # a warning, not an error
    assert "e2e_otel.W004" in output and "SERVICE_NAME" in output


NO_COLLECTOR_SETTINGS = """
SECRET_KEY = "x"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "e2e_otel"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"stderr": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["stderr"], "level": "INFO"}}
"""


def test_without_a_collector_a_command_exports_nothing_and_says_how_to_turn_export_on(tmp_path) -> None:
    """A laptop: no endpoint configured, development profile. Even with INFO logging on, the only
    e2e-otel line is the hint; no exporter is built, so nothing fails and exit does not wait."""
    (tmp_path / "no_collector_settings.py").write_text(NO_COLLECTOR_SETTINGS)
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "no_collector_settings"})
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    result = subprocess.run([PYTHON, "-c", "import django; django.setup();"
                             "from django.core.management import call_command; call_command('showmigrations');"
                             "from e2e_otel.bootstrap import get_runtime; r = get_runtime();"
                             "print('EXPORTER', r.exporter, r.export_processor)"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "EXPORTER None None" in result.stdout
    hints = [line for line in result.stderr.splitlines() if "no collector endpoint configured" in line]
    assert len(hints) == 1 and "OTEL_EXPORTER_OTLP_ENDPOINT" in hints[0], result.stderr
    assert "StatusCode" not in result.stderr and "Traceback" not in result.stderr
