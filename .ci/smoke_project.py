"""Smoke test of an installed e2e-otel in a brand-new Django project, the way the README sets it up.

Run with the Python of a virtualenv that has the wheel installed (no checkout on ``sys.path``)::

    python .ci/smoke_project.py [--gunicorn] /tmp/somewhere

It runs ``django-admin startproject``, adds ``"e2e_otel"`` to ``INSTALLED_APPS`` and the URL include
as the README says, plus one host view that queries the database, then ``migrate``, ``check``,
serves the project with ``runserver`` on a free port of 127.0.0.1, sends one request to the host
view and reads its workflow record back through the debugging API with the API key. With
``--gunicorn`` it then serves the project as the README's multi-worker set-up says (two workers,
``-c python:e2e_otel.gunicorn``, ``PROMETHEUS_MULTIPROC_DIR``) and checks that one scrape of
``/metrics`` counts the requests of both workers. The servers are the only processes it starts, and
it stops them by pid. Exit status 0 = passed; anything else prints why.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HOST_VIEW = '''
import os

from django.contrib.auth import get_user_model
from django.http import JsonResponse


def hello(request):
    """A host view with one SQL query, so the workflow has an api and a database step."""
    return JsonResponse({"users": get_user_model().objects.count(), "pid": os.getpid(),
                         "correlation_id": getattr(request, "correlation_id", None)})
'''

SETTINGS_TAIL = '''
# --- e2e-otel (README "Using it in your project") ---
E2E_OTEL = {{"SERVICE_NAME": "smoke-site", "API_KEY": {api_key!r}, "RECORD_FLUSH_INTERVAL": 0.2}}
'''

URLS_TAIL = '''
# --- e2e-otel (README "Using it in your project") ---
from django.urls import include  # noqa: E402

from .views import hello  # noqa: E402

urlpatterns += [path("hello/", hello), path("", include("e2e_otel.urls"))]
'''


class SmokeFailure(Exception):
    pass


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    if result.returncode != 0:
        raise SmokeFailure(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def make_project(base: Path, env: dict[str, str], api_key: str) -> Path:
    bin_dir = Path(sys.executable).parent
    base.mkdir()
    run([str(bin_dir / "django-admin"), "startproject", "smokesite", str(base)], cwd=base.parent, env=env)
    package = base / "smokesite"
    settings = package / "settings.py"
    text = settings.read_text()
    text, count = re.subn(r"(INSTALLED_APPS = \[.*?)(\n\])", r'\1\n    "e2e_otel",\2', text, count=1, flags=re.S)
    if count != 1:
        raise SmokeFailure("could not find INSTALLED_APPS in the generated settings.py")
    settings.write_text(text + SETTINGS_TAIL.format(api_key=api_key))
    (package / "views.py").write_text(HOST_VIEW)
    urls = package / "urls.py"
    urls.write_text(urls.read_text() + URLS_TAIL)
    return base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_until_serving(base_url: str, server: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SmokeFailure(f"runserver exited {server.returncode} before serving")
        try:
            get(f"{base_url}/metrics")
            return
        except OSError:
            time.sleep(0.2)
    raise SmokeFailure("runserver did not accept connections within 30 s")


def check_records(base_url: str, api_key: str) -> str:
    status, headers, body = get(f"{base_url}/hello/")
    if status != 200:
        raise SmokeFailure(f"GET /hello/ answered {status}: {body[:500]!r}")
    correlation_id = {k.lower(): v for k, v in headers.items()}.get("x-correlation-id")
    if not correlation_id or json.loads(body)["correlation_id"] != correlation_id:
        raise SmokeFailure(f"GET /hello/: no matching X-Correlation-ID ({headers}, {body!r})")

    api = f"{base_url}/api/v1/debugging"
    status, _, _ = get(f"{api}/workflow-sessions/")
    if status not in (401, 403):
        raise SmokeFailure(f"the debugging API answered {status} without a key")
    auth = {"Authorization": f"Bearer {api_key}"}
    deadline = time.monotonic() + 20
    while True:
        status, _, body = get(f"{api}/workflow-sessions/?correlation_id={correlation_id}", auth)
        if status != 200:
            raise SmokeFailure(f"workflow-sessions answered {status} with the key: {body[:500]!r}")
        page = json.loads(body)
        rows = page["results"] if isinstance(page, dict) else page
        if rows:
            break
        if time.monotonic() > deadline:
            raise SmokeFailure(f"no WorkflowSession for {correlation_id} after 20 s")
        time.sleep(0.25)
    session = rows[0]
    if session["correlation_id"] != correlation_id:
        raise SmokeFailure(f"API returned another session: {session}")
    status, _, body = get(f"{api}/trace-steps/?correlation_id={correlation_id}", auth)
    steps = json.loads(body)
    steps = steps["results"] if isinstance(steps, dict) else steps
    layers = sorted({step["layer"] for step in steps})
    if status != 200 or not {"api", "database"} <= set(layers):
        raise SmokeFailure(f"trace-steps for {correlation_id}: {status} {layers}")
    return f"workflow {session['workflow_type']!r} {correlation_id}, steps on {', '.join(layers)}"


def metric_sum(text: str, name: str, labels: dict[str, str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def check_gunicorn_workers(base_url: str) -> str:
    """Requests until both workers served some; one scrape must count all of them."""
    served: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while (len(served) < 2 or sum(served.values()) < 10) and time.monotonic() < deadline:
        status, _, body = get(f"{base_url}/hello/")
        if status != 200:
            raise SmokeFailure(f"gunicorn: GET /hello/ answered {status}")
        pid = json.loads(body)["pid"]
        served[pid] = served.get(pid, 0) + 1
    if len(served) < 2:
        raise SmokeFailure(f"gunicorn: only worker(s) {sorted(served)} answered in 20 s")
    requests = sum(served.values())
    labels = {"layer": "api", "component": "/hello/"}
    deadline = time.monotonic() + 10
    while True:  # spans become metrics on each worker's derive thread, just after the response
        status, _, body = get(f"{base_url}/metrics")
        counted = metric_sum(body.decode(), "e2e_otel_steps_total", labels) if status == 200 else -1
        if counted == requests or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if counted != requests:
        raise SmokeFailure(f"gunicorn: /metrics counted {counted} of {requests} requests to 2 workers")
    return f"gunicorn: one /metrics scrape counted all {requests} requests of workers {sorted(served)}"


def start_server(argv: list[str], project: Path, env: dict[str, str], log_path: Path,
                 port: int) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        server = subprocess.Popen(argv, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", server, time.monotonic() + 30)
    except SmokeFailure:
        stop_server(server)
        raise
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def served(argv: list[str], project: Path, env: dict[str, str], log_path: Path, check: Any) -> str:
    """Start a server on a free port, run ``check(base_url)`` against it, always stop it (by pid)."""
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in argv]
    server = start_server(argv, project, env, log_path, port)
    try:
        return str(check(f"http://127.0.0.1:{port}"))
    except SmokeFailure:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_server(server)


def main(base: Path, *, gunicorn: bool) -> int:
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "E2E_OTEL", "DJANGO_", "PYTHONPATH"))}
    env.update(PYTHONUNBUFFERED="1", OTEL_TRACES_EXPORTER="none")  # nothing listens for OTLP here
    api_key = secrets.token_urlsafe(24)
    project = make_project(base / "project", env, api_key)
    manage = [sys.executable, "manage.py"]
    run([*manage, "migrate", "--noinput", "-v", "0"], cwd=project, env=env)
    checked = run([*manage, "check", "--fail-level", "WARNING"], cwd=project, env=env)
    import django
    import rest_framework

    import e2e_otel

    where = Path(e2e_otel.__file__).resolve()
    if not str(where).startswith(sys.prefix):
        raise SmokeFailure(f"e2e_otel imported from {where}, not from the virtualenv {sys.prefix}")
    found = [served([*manage, "runserver", "--noreload", "127.0.0.1:{port}"], project, env,
                    base / "runserver.log", lambda url: check_records(url, api_key))]
    if gunicorn:
        metrics_dir = base / "prometheus-multiproc"
        metrics_dir.mkdir()
        # HOME: gunicorn >= 25 opens a control socket in ~/.gunicorn; keep it out of the real home.
        gunicorn_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "HOME": str(base)}
        argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:e2e_otel.gunicorn", "--workers", "2",
                "--bind", "127.0.0.1:{port}", "smokesite.wsgi"]
        found.append(served(argv, project, gunicorn_env, base / "gunicorn.log", check_gunicorn_workers))
    print(f"smoke ok: e2e-otel {e2e_otel.__version__}, Django {django.get_version()}, "
          f"DRF {rest_framework.VERSION}: {checked.strip().splitlines()[-1]}; " + "; ".join(found))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--gunicorn", action="store_true", help="also check the multi-worker gunicorn set-up")
    parser.add_argument("workdir", type=Path)
    options = parser.parse_args()
    try:
        sys.exit(main(options.workdir, gunicorn=options.gunicorn))
    except SmokeFailure as failure:
        sys.exit(f"smoke FAILED: {failure}")
