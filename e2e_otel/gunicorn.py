"""gunicorn server hooks: the graceful stop of a worker, and prometheus_client multiprocess mode.

In ``gunicorn.conf.py``::

    from e2e_otel.gunicorn import child_exit, on_starting, worker_exit  # noqa: F401

``worker_exit`` runs in the worker as it leaves (SIGTERM, ``--max-requests``, graceful timeout) and
flushes its spans and records within ``SHUTDOWN_TIMEOUT`` (keep that below ``--graceful-timeout``,
after which the master kills the worker). Without the hook the worker's ``atexit`` does the same
flush, as long as the worker exits through ``sys.exit``; the hook does it earlier and surely.

For metrics, start gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty, writable directory.
``on_starting`` empties that directory (stale files from a previous run would be summed in);
``child_exit`` removes a dead worker's live gauges so ``livesum``/``livemax`` only count running workers.
Both run in the gunicorn master process.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

from .metrics import multiprocess_dir

logger = logging.getLogger(__name__)


def on_starting(server: Any) -> None:
    """Clear metric files a previous master left behind (master, before any worker exists)."""
    path = multiprocess_dir()
    if path is None:
        return
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
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
