"""gunicorn server hooks for prometheus_client multiprocess mode (all run in the gunicorn master).

Without them e2e-otel configures multiprocess mode by itself when the app starts under gunicorn
(``metrics_multiprocess.py``). With them, in ``gunicorn.conf.py``::

    from e2e_otel.gunicorn import child_exit, on_exit, on_starting  # noqa: F401

``on_starting`` chooses the directory in the master before any worker exists (yours, from
``PROMETHEUS_MULTIPROC_DIR``, is emptied: stale files from a previous run would be summed in; e2e-otel's
own is new for every run); ``child_exit`` removes a dead worker's live gauges at once so
``livesum``/``livemax`` only count running workers; ``on_exit`` removes e2e-otel's directory.

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

__all__ = ["child_exit", "on_exit", "on_starting"]


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
