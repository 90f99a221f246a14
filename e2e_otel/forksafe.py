"""Re-initialise per-process state in a forked child (gunicorn/uWSGI workers).

A lock held by another thread at ``fork()`` stays locked forever in the child, and a thread does not
survive the fork. Objects that own locks, windows or threads register here; after a fork the child
calls each one's ``_after_fork_in_child()`` in registration order (so metrics and windows are fresh
before a monitor thread restarts and uses them). Hooks run in the child's only thread, right after
``fork()``; they must not block.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

logger = logging.getLogger(__name__)


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: list[weakref.ref[ForkAware]] = []
_registry_lock = threading.Lock()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every forked child while ``obj`` is alive."""
    with _registry_lock:
        _registered[:] = [ref for ref in _registered if ref() is not None]
        _registered.append(weakref.ref(obj))


def _run_hooks_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    hooks = _registered.copy()  # a hook may register new objects while we iterate
    for ref in hooks:
        obj = ref()
        if obj is None:
            continue
        try:
            obj._after_fork_in_child()
        except Exception:  # one broken object must not stop the others' reset
            logger.exception("e2e-otel: after-fork reset of %r failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_hooks_in_child)
