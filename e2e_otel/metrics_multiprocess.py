"""prometheus_client multiprocess mode, chosen for the server e2e-otel runs in.

prometheus_client decides once per process, when ``prometheus_client.values`` is first imported,
whether values live in memory (one process) or in mmap files under ``PROMETHEUS_MULTIPROC_DIR``
that any worker's scrape sums. Without that directory every gunicorn worker answers ``/metrics``
with its own numbers, so successive scrapes alternate between workers.

``configure_for_server()`` runs in ``AppConfig.ready()`` (and ``gunicorn.on_starting``) before
e2e-otel imports prometheus_client. Under gunicorn, with ``PROMETHEUS_MULTIPROC_DIR`` unset and
prometheus_client not imported yet, it creates a directory for this server run,
``<tmp>/e2e-otel-prometheus-<uid>/<master pid>-<master start time>``, and sets the variable, so the
preloading master and every worker (forked later, or loading the app themselves) use the same one
and a new run never sums a previous run's files. Directories of masters that no longer run are
removed when the next one is created; a preloading master also removes its own at exit. Where that
is not possible (prometheus_client imported earlier, uWSGI) a multi-process server gets a startup
warning and the system check ``e2e_otel.W010``.

This module must not import prometheus_client at import time. It runs on the thread that starts
Django (or the gunicorn master's main thread) and never raises.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ENV", "Server", "Setup", "check_multiprocess_metrics", "configure_for_server", "detect_server",
           "multiprocess_dir"]

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_ENV = "prometheus_multiproc_dir"
AUTO_ENV = "E2E_OTEL_PROMETHEUS_MULTIPROC_AUTO"  # "1" when e2e-otel chose ENV for this server run
CHECK_ID = "e2e_otel.W010"
_RUN_DIR = re.compile(r"^(\d+)-(\d+)$")


def multiprocess_dir(environ: Mapping[str, str] = os.environ) -> str | None:
    """The prometheus_client multiprocess directory, when this process runs in that mode."""
    return environ.get(ENV) or environ.get(_LEGACY_ENV) or None


@dataclass(frozen=True)
class Server:
    """The pre-forking server this process belongs to."""

    name: str  # "gunicorn" | "uwsgi"
    master_pid: int | None  # None: not known
    workers: int | None  # None: not known (a preloading gunicorn master cannot tell)
    in_master: bool


@dataclass(frozen=True)
class Setup:
    """What ``configure_for_server`` found or did."""

    mode: str  # "configured" (the user's directory) | "automatic" (ours) | "single" | "unavailable"
    path: str | None = None
    problem: str | None = None  # set for "unavailable": why /metrics shows one worker per scrape


_WORKER_SIGNALS = ("SIGTERM", "SIGQUIT", "SIGUSR1")  # uvicorn's worker binds only SIGUSR1


def _gunicorn_worker() -> Any:
    """The gunicorn worker running this process, or ``None`` in the master. gunicorn installs a
    worker's signal handlers (bound methods of the worker) right before the worker loads the app
    (``Worker.init_process``); the master installs its own only after a preload."""
    base = sys.modules.get("gunicorn.workers.base")
    if base is None:
        return None
    for name in _WORKER_SIGNALS:
        worker = getattr(signal.getsignal(getattr(signal, name)), "__self__", None)
        if isinstance(worker, base.Worker):
            return worker
    return None


def detect_server(environ: Mapping[str, str] = os.environ) -> Server | None:
    """gunicorn (``SERVER_SOFTWARE``, set by its arbiter before it loads the app) or uWSGI (its
    embedded ``uwsgi`` module); ``None`` for anything else (runserver, management commands)."""
    if environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        worker = _gunicorn_worker()
        if worker is None:
            return Server("gunicorn", master_pid=os.getpid(), workers=None, in_master=True)
        workers = getattr(getattr(worker, "cfg", None), "workers", None)
        return Server("gunicorn", master_pid=int(worker.ppid),
                      workers=workers if isinstance(workers, int) else None, in_master=False)
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        master = getattr(uwsgi, "masterpid", lambda: 0)() or None
        workers = getattr(uwsgi, "numproc", None)
        return Server("uwsgi", master_pid=master, workers=workers if isinstance(workers, int) else None,
                      in_master=master == os.getpid())
    return None


def _mode_fixed(modules: Mapping[str, Any]) -> bool:
    """prometheus_client already chose in-memory values in this process (imported without ENV)."""
    values = modules.get("prometheus_client.values")
    return values is not None and not getattr(values.ValueClass, "_multiprocess", False)


def _private_base(root: str) -> str:
    """``<root>/e2e-otel-prometheus-<uid>``, created 0700 and refused unless it is ours: another
    local user must not be able to plant metric files in it."""
    base = os.path.join(root, f"e2e-otel-prometheus-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o700)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{base} is not a private directory of this user")
    return base


def _started(pid: int) -> int | None:
    """The process's start time in milliseconds (with its pid: unique per run), or ``None``."""
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.Error, OSError):
        return None


def remove_stale_run_dirs(base: str) -> list[str]:
    """Remove the run directories whose master no longer runs (pid gone or reused)."""
    removed = []
    for name in os.listdir(base):
        match = _RUN_DIR.match(name)
        if match is None or _started(int(match.group(1))) == int(match.group(2)):
            continue
        path = os.path.join(base, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def forget_dead_workers(path: str) -> list[str]:
    """Remove the live-gauge files of processes that no longer run (what gunicorn's ``child_exit``
    hook does with ``mark_process_dead``), so a restarted worker's predecessor leaves the
    ``livesum``/``livemax`` gauges even without the hook. Counters and histograms stay: they are
    cumulative over the run."""
    import psutil

    removed = []
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match is not None and not psutil.pid_exists(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))
                removed.append(name)
    return removed


def run_dir(master_pid: int, *, root: str | None = None) -> str:
    """This server run's directory (created, empty the first time), after removing stale ones."""
    base = _private_base(root or tempfile.gettempdir())
    started = _started(master_pid)
    if started is None:
        raise ProcessLookupError(f"gunicorn master {master_pid} is not running")
    remove_stale_run_dirs(base)
    path = os.path.join(base, f"{master_pid}-{started}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    return path


def _remove_at_exit(path: str, owner: int) -> None:
    # Forked workers inherit atexit handlers: only the master that made the directory removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _problem(server: Server) -> str:
    workers = f"{server.workers} workers" if server.workers else "several workers"
    return (f"{server.name} with {workers} runs without prometheus_client multiprocess mode: each "
            "/metrics scrape shows the numbers of the one worker that answered it")


def configure(environ: MutableMapping[str, str], server: Server | None, *, root: str | None = None,
              apply: bool = True, modules: Mapping[str, Any] = sys.modules) -> Setup:
    """The set-up for ``server``. With ``apply`` the run directory is created (under ``root``, default
    the temporary directory) and ``environ`` set; without, only what would happen is returned (the
    system check). ``modules`` tells whether prometheus_client was imported already."""
    path = multiprocess_dir(environ)
    if path is not None:
        return Setup("automatic" if environ.get(AUTO_ENV) == "1" else "configured", path)
    if server is None:
        return Setup("single")
    if server.name != "gunicorn" or server.master_pid is None:
        reason = f"set {ENV} before it starts"
    elif _mode_fixed(modules):
        reason = (f"prometheus_client was imported before e2e-otel could set {ENV} (list \"e2e_otel\" "
                  f"before the app that imports it in INSTALLED_APPS, or set {ENV} yourself)")
    elif not apply:
        return Setup("automatic")
    else:
        try:
            path = run_dir(server.master_pid, root=root)
        except OSError as exc:
            reason = f"no directory for {ENV}: {exc}"
        else:
            environ[ENV] = path
            environ[AUTO_ENV] = "1"
            forget_dead_workers(path)
            if server.in_master:
                atexit.register(_remove_at_exit, path, os.getpid())
            return Setup("automatic", path)
    if server.workers == 1:
        return Setup("single")  # one worker: its numbers are the server's
    return Setup("unavailable", problem=f"{_problem(server)}; {reason}")


_setup: Setup | None = None


def configure_for_server(environ: MutableMapping[str, str] | None = None,
                         server: Server | None = None) -> Setup:
    """Detect the server and configure multiprocess mode (see the module docstring); logs a warning
    when a multi-process server runs without it. Never raises."""
    global _setup
    try:
        setup = configure(os.environ if environ is None else environ,
                          detect_server() if server is None else server)
    except Exception as exc:  # startup must not fail for metrics
        setup = Setup("unavailable", problem=f"multiprocess metrics set-up failed: {exc}")
    if setup.problem and (_setup is None or _setup.problem != setup.problem):
        logger.warning("e2e-otel: %s. See docs/metrics.md (gunicorn / multiprocess).", setup.problem)
    if setup.mode == "automatic" and (_setup is None or _setup.path != setup.path):
        logger.info("e2e-otel: prometheus_client multiprocess mode in %s", setup.path)
    _setup = setup
    return setup


def check_multiprocess_metrics(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W010: this process belongs to a multi-process server whose ``/metrics`` cannot sum its
    workers (see ``configure``). Silent in management commands and under runserver."""
    from django.core.checks import Warning

    from .conf import get_config

    if not get_config().METRICS_ENABLED:
        return []
    setup = _setup if _setup is not None else configure(dict(os.environ), detect_server(), apply=False)
    if setup.problem is None:
        return []
    return [Warning(
        f"{setup.problem}.", id=CHECK_ID,
        hint=(f"Let e2e-otel configure it under gunicorn (nothing may import prometheus_client before the "
              f"e2e_otel app is ready), or set {ENV} to an empty directory the workers can write before "
              "the server starts and use the e2e_otel.gunicorn hooks; see docs/metrics.md."),
    )]
