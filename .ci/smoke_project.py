"""Smoke test of an installed e2e-otel in a brand-new Django project, the way the README sets it up.

Run with the Python of a virtualenv that has the wheel installed (no checkout on ``sys.path``)::

    python .ci/smoke_project.py /tmp/somewhere

It runs ``django-admin startproject``, adds ``"e2e_otel"`` to ``INSTALLED_APPS`` and the URL include
as the README says, plus one host view that queries the database, then ``migrate``, ``check``,
serves the project with ``runserver`` on a free port of 127.0.0.1, sends one request to the host
view and reads its workflow record back through the debugging API with the API key. The server is
the only process it starts, and it stops it by pid. Exit status 0 = passed; anything else prints why.
"""

from __future__ import annotations

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

HOST_VIEW = '''
from django.contrib.auth import get_user_model
from django.http import JsonResponse


def hello(request):
    """A host view with one SQL query, so the workflow has an api and a database step."""
    return JsonResponse({"users": get_user_model().objects.count(),
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


def main(base: Path) -> int:
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
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (base / "runserver.log").open("wb")
    server = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"], cwd=project, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(base_url, server, time.monotonic() + 30)
        found = check_records(base_url, api_key)
    except SmokeFailure:
        log.flush()
        sys.stderr.write((base / "runserver.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    print(f"smoke ok: e2e-otel {e2e_otel.__version__}, Django {django.get_version()}, "
          f"DRF {rest_framework.VERSION}: {checked.strip().splitlines()[-1]}; {found}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} WORKDIR")
    try:
        sys.exit(main(Path(sys.argv[1])))
    except SmokeFailure as failure:
        sys.exit(f"smoke FAILED: {failure}")
