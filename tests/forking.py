"""Run a check in a forked child, the way gunicorn/uWSGI fork workers, and report its verdict."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def check_in_child(check: Callable[[], object]) -> bool:
    """Fork; in the child run ``check`` and leave with ``os._exit`` (never back into pytest); return
    whether it returned a true value there. A traceback raised in the child is printed to stderr."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            ok = bool(check())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
