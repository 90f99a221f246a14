"""gunicorn server hooks: the graceful stop of a worker, and prometheus_client multiprocess mode.

Without them e2e-otel configures multiprocess mode by itself when the app starts under gunicorn
(``metrics_multiprocess.py``). With them, in ``gunicorn.conf.py``::

    from e2e_otel.gunicorn import child_exit, on_exit, on_starting, worker_exit  # noqa: F401

``worker_exit`` runs in the worker as it leaves (SIGTERM, ``--max-requests``, graceful timeout) and
flushes its spans and records within ``SHUTDOWN_TIMEOUT`` (keep that below ``--graceful-timeout``,
after which the master kills the worker). Without the hook the worker's ``atexit`` does the same
flush, as long as the worker exits through ``sys.exit``; the hook does it earlier and surely.

The others run in the gunicorn master. ``on_starting`` chooses the metrics directory before any worker
exists (yours, from ``PROMETHEUS_MULTIPROC_DIR``, is emptied: stale files from a previous run would be
summed in; e2e-otel's own is new for every run); ``child_exit`` removes a dead worker's live gauges at
once so ``livesum``/``livemax`` only count running workers; ``on_exit`` removes e2e-otel's directory.

This module must not import prometheus_client at import time: gunicorn loads it before the app, and
prometheus_client picks its mode when first imported.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Any

from .metrics_multiprocess import AUTO_ENV, Server, configure_for_server, multiprocess_dir

logger = logging.getLogger(__name__)

__all__ = ["child_exit", "on_exit", "on_starting", "worker_exit"]


def on_starting(server: Any) -> None:
    """Choose (or clear) the metrics directory before any worker exists (master)."""
    workers = getattr(server, "num_workers", None)
    setup = configure_for_server(server=Server("gunicorn", master_pid=os.getpid(), in_master=True,
                                               workers=workers if isinstance(workers, int) else None))
    if setup.mode != "configured" or setup.path is None:
        return  # e2e-otel's own directory is new for this run
    os.makedirs(setup.path, exist_ok=True)
    for name in glob.glob(os.path.join(setup.path, "*.db")):
        try:
            os.remove(name)
        except OSError:
            logger.warning("e2e-otel: could not remove stale metrics file %s", name)


def worker_exit(server: Any, worker: Any) -> None:
    """Flush this worker's spans and records before it exits (worker process, after its last request)."""
    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is not None:
        runtime.shutdown()


def child_exit(server: Any, worker: Any) -> None:
    """Mark a dead worker so its live gauges disappear from the next scrape (master)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the directory e2e-otel chose for this run (master, after the workers are gone)."""
    path = multiprocess_dir()
    if path is not None and os.environ.get(AUTO_ENV) == "1":
        shutil.rmtree(path, ignore_errors=True)
