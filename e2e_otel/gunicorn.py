"""gunicorn server hooks for prometheus_client multiprocess mode.

In ``gunicorn.conf.py``::

    from e2e_otel.gunicorn import child_exit, on_starting  # noqa: F401

and start gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty, writable directory.
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


def child_exit(server: Any, worker: Any) -> None:
    """Mark a dead worker so its live gauges disappear from the next scrape (master)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
