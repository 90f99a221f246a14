"""Issue #10: SIGTERM right after the last response (a rolling deploy) keeps every accepted record.

Real servers (tests/servers.py) on MariaDB, exporting to a real OTLP receiver: ten workflows, SIGTERM
(Ctrl-C for runserver's autoreloader) as soon as the tenth response is in, then every session must be
in the database, closed, with the status and type its requests gave it — not an "unknown"
in-progress row — every trace at the receiver, and no e2e-otel warning about anything left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from e2e_otel.models import WorkflowSession
from e2e_otel.testing.otlp_receiver import OTLPReceiver
from tests.servers import BIN_DIR, PYTHON, ServerProcess, free_port, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.mysql, pytest.mark.django_db(transaction=True)]

WORKFLOWS = 10
FAILING = 2  # of them, the last ones: /fail/ answers 500


def _gunicorn_with_hook(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    """gunicorn with the documented ``worker_exit`` hook in its config file."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from e2e_otel.gunicorn import worker_exit  # noqa: F401\n")
    port = free_port()
    argv = [str(BIN_DIR / "gunicorn"), "tests.wsgi:application", "-c", str(conf), "-b", f"127.0.0.1:{port}",
            "-w", "1", "--graceful-timeout", "5"]
    return ServerProcess(argv, port=port, env=env)


def _gunicorn_plain(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    """gunicorn without any e2e-otel hook: the atexit path must do the same."""
    port = free_port()
    argv = [str(BIN_DIR / "gunicorn"), "tests.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1",
            "--graceful-timeout", "5"]
    return ServerProcess(argv, port=port, env=env)


def _runserver(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    """``runserver --noreload``: nothing handles SIGTERM but e2e-otel's own handler."""
    port = free_port()
    argv = [PYTHON, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"]
    return ServerProcess(argv, port=port, env=env)


def _runserver_autoreload(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    """``runserver`` with its autoreloader, stopped with Ctrl-C (SIGINT to the terminal's process group).

    Not SIGTERM: the reloader's ``subprocess.run`` answers its own SIGTERM by SIGKILLing the child
    serving the requests, which no handler can flush. On Ctrl-C it gives the child 0.25 s, and the
    child's flush takes milliseconds.
    """
    port = free_port()
    argv = [PYTHON, "-m", "django", "runserver", f"127.0.0.1:{port}"]
    return ServerProcess(argv, port=port, env=env)


@pytest.mark.parametrize(("launch", "to_group", "signum", "returncode"), [
    (_gunicorn_with_hook, False, signal.SIGTERM, 0),
    (_gunicorn_plain, False, signal.SIGTERM, 0),
    (_runserver, False, signal.SIGTERM, -signal.SIGTERM),  # flushed, then died of the signal as before
    (_runserver_autoreload, True, signal.SIGINT, 0),
], ids=["gunicorn-worker_exit", "gunicorn-atexit", "runserver", "runserver-autoreload-ctrl-c"])
def test_stop_right_after_the_last_response_keeps_every_session(
        launch: Callable[[dict[str, str], Path], ServerProcess], to_group: bool, signum: int, returncode: int,
        otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    # tests.settings_export, with e2e-otel's warnings on the server's stderr (the log we check).
    (tmp_path / "stop_settings.py").write_text(
        "from tests.settings_export import *\n"
        "LOGGING = {'version': 1, 'disable_existing_loggers': False,\n"
        "           'handlers': {'stderr': {'class': 'logging.StreamHandler'}},\n"
        "           'loggers': {'e2e_otel': {'handlers': ['stderr'], 'level': 'WARNING'}}}\n")
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "stop_settings",
        "E2E_MYSQL_DATABASE": connection.settings_dict["NAME"],
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        # Defaults of a deployment: records and spans leave on their own schedule, not per request.
        "E2E_TEST_OTEL_OVERRIDES": '{"RECORD_FLUSH_INTERVAL": 1.0}',
    })
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    cids = [str(uuid.uuid4()) for _ in range(WORKFLOWS)]
    server = launch(env, tmp_path)
    with server:
        for index, cid in enumerate(cids):
            path = "/fail/" if index >= WORKFLOWS - FAILING else "/items/"
            status, _, _ = server.get(path, {"X-Correlation-ID": cid})
            assert status == (500 if path == "/fail/" else 200), server.logs()
        process = server.process
        assert process is not None
        stopping = time.monotonic()
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)  # the master (gunicorn) or the only process (runserver)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not stop within 10 s of the signal:\n{server.logs()}")
        stop_seconds = time.monotonic() - stopping
        logs = server.logs()
    assert process.returncode == returncode, logs
    if launch is _runserver_autoreload:  # the reloader exits at once; its child may still be flushing
        _wait_for_sessions(cids)
    sessions = {str(s.correlation_id): s for s in WorkflowSession.objects.filter(
        correlation_id__in=[uuid.UUID(c) for c in cids])}
    assert len(sessions) == WORKFLOWS, f"{len(sessions)} of {WORKFLOWS} sessions written\n{logs}"
    for index, cid in enumerate(cids):
        found = sessions[cid]
        failing = index >= WORKFLOWS - FAILING
        assert found.status == ("failed" if failing else "completed"), (cid, found.status, logs)
        assert found.workflow_type == ("GET /fail/" if failing else "GET /items/"), found.workflow_type
        assert found.end_time is not None and found.step_count >= 1
    wanted = {cid.replace("-", "") for cid in cids}
    assert wanted <= {s.trace_id for s in otlp_receiver.spans}  # and every trace was exported
    assert "Traceback" not in logs and "e2e-otel:" not in logs, logs  # no warning: nothing left behind
    assert stop_seconds < 5, stop_seconds


def _wait_for_sessions(cids: list[str], timeout: float = 10) -> None:
    wanted = [uuid.UUID(c) for c in cids]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closed = WorkflowSession.objects.filter(correlation_id__in=wanted, end_time__isnull=False).count()
        if closed == len(wanted):
            return
        time.sleep(0.1)
