"""Choosing prometheus_client multiprocess mode: server detection, the per-run directory, W010."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from django.test import override_settings

from e2e_otel import metrics_multiprocess as mp

MASTER = mp.Server("gunicorn", master_pid=os.getpid(), workers=2, in_master=True)
NOT_IMPORTED: dict[str, Any] = {}  # prometheus_client not imported yet (it is, in this test process)


def _start_ms(pid: int) -> int:
    return int(psutil.Process(pid).create_time() * 1000)


def test_the_users_directory_is_left_alone(tmp_path: Path) -> None:
    environ = {mp.ENV: str(tmp_path)}
    assert mp.configure(environ, MASTER, root=str(tmp_path), modules=NOT_IMPORTED) == \
        mp.Setup("configured", str(tmp_path))
    assert environ == {mp.ENV: str(tmp_path)}


def test_gunicorn_gets_a_private_directory_per_server_run(tmp_path: Path) -> None:
    base = tmp_path / f"e2e-otel-prometheus-{os.getuid()}"
    base.mkdir(mode=0o700)
    (base / "999999999-1").mkdir()  # a master that is gone
    (base / f"{os.getpid()}-1").mkdir()  # this pid, reused: another run
    environ: dict[str, str] = {}
    setup = mp.configure(environ, MASTER, root=str(tmp_path), modules=NOT_IMPORTED)
    expected = base / f"{os.getpid()}-{_start_ms(os.getpid())}"
    assert setup == mp.Setup("automatic", str(expected))
    assert environ == {mp.ENV: str(expected), mp.AUTO_ENV: "1"}
    assert sorted(p.name for p in base.iterdir()) == [expected.name]  # stale runs removed
    assert expected.stat().st_mode & 0o777 == 0o700
    # a worker (inherited environment) and a second call keep it
    assert mp.configure(environ, MASTER, root=str(tmp_path), modules=NOT_IMPORTED).path == str(expected)


def test_a_shared_directory_someone_else_can_write_is_refused(tmp_path: Path) -> None:
    base = tmp_path / f"e2e-otel-prometheus-{os.getuid()}"
    base.mkdir()
    base.chmod(0o777)
    environ: dict[str, str] = {}
    setup = mp.configure(environ, MASTER, root=str(tmp_path), modules=NOT_IMPORTED)
    assert setup.mode == "unavailable" and "not a private directory" in (setup.problem or "")
    assert environ == {}


def test_prometheus_client_imported_first_is_a_warning_not_a_patch(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    setup = mp.configure(environ, MASTER, root=str(tmp_path), modules=sys.modules)
    assert setup.mode == "unavailable" and environ == {}
    assert "imported before" in (setup.problem or "") and "INSTALLED_APPS" in (setup.problem or "")
    one = mp.Server("gunicorn", master_pid=os.getpid(), workers=1, in_master=False)
    assert mp.configure({}, one, root=str(tmp_path), modules=sys.modules).mode == "single"


def test_uwsgi_and_plain_processes() -> None:
    uwsgi = mp.Server("uwsgi", master_pid=None, workers=4, in_master=False)
    setup = mp.configure({}, uwsgi)
    assert setup.mode == "unavailable" and mp.ENV in (setup.problem or "") and "4 workers" in (setup.problem or "")
    assert mp.configure({}, None) == mp.Setup("single")


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_detects_the_gunicorn_master_and_its_workers(restore_signals: None) -> None:
    from gunicorn.workers.base import Worker

    assert mp.detect_server({}) is None
    environ = {"SERVER_SOFTWARE": "gunicorn/27.0.1"}
    assert mp.detect_server(environ) == mp.Server("gunicorn", master_pid=os.getpid(), workers=None, in_master=True)

    class FakeWorker(Worker):
        def __init__(self) -> None:  # what init_process leaves behind, without a real server
            self.ppid = 4242
            self.cfg = SimpleNamespace(workers=3)

    signal.signal(signal.SIGUSR1, FakeWorker().handle_usr1)  # uvicorn's worker binds only this one
    assert mp.detect_server(environ) == mp.Server("gunicorn", master_pid=4242, workers=3, in_master=False)


def test_dead_workers_live_gauges_are_forgotten(tmp_path: Path) -> None:
    dead = 999_999_999
    for name in (f"gauge_livesum_{dead}.db", f"gauge_livemax_{os.getpid()}.db", f"counter_{dead}.db"):
        (tmp_path / name).write_bytes(b"")
    assert mp.forget_dead_workers(str(tmp_path)) == [f"gauge_livesum_{dead}.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db", f"gauge_livemax_{os.getpid()}.db"]


def test_check_w010_names_the_problem_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mp.check_multiprocess_metrics() == []  # the test process is no server
    monkeypatch.setattr(mp, "_setup", mp.Setup("unavailable", problem="gunicorn with 2 workers runs without it"))
    (warning,) = mp.check_multiprocess_metrics()
    assert warning.id == "e2e_otel.W010" and mp.ENV in warning.hint and "gunicorn" in warning.msg
    with override_settings(E2E_OTEL={"METRICS_ENABLED": False}):
        assert mp.check_multiprocess_metrics() == []


def test_startup_warning_is_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp, "_setup", None)
    uwsgi = mp.Server("uwsgi", master_pid=None, workers=2, in_master=False)
    with caplog.at_level("WARNING", logger="e2e_otel.metrics_multiprocess"):
        mp.configure_for_server({}, uwsgi)
        mp.configure_for_server({}, uwsgi)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "uwsgi with 2 workers" in caplog.records[0].getMessage()
