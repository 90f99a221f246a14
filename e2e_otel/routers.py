"""``RecordsRouter``: e2e-otel's tables live on ``E2E_OTEL["DATABASE_ALIAS"]``, for every reader.

The record writer always wrote there; without a router, the debugging API, the admin, serializers
and ``migrate`` used ``default``, so a recorded session answered 404 and thresholds created through
the API never reached the evaluator. The router answers only for e2e_otel's own models and returns
``None`` for every other model, so it never changes where the host's data goes.

``AppConfig.ready()`` puts it first in ``DATABASE_ROUTERS`` when ``DATABASE_ALIAS`` is not
``"default"`` (listing it yourself is fine too); system check ``e2e_otel.W009`` says when another
router still wins.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning

from .conf import get_config

ROUTER_PATH = "e2e_otel.routers.RecordsRouter"
APP_LABEL = "e2e_otel"


def _is_ours(model: Any) -> bool:
    return getattr(getattr(model, "_meta", None), "app_label", None) == APP_LABEL


class RecordsRouter:
    """Reads, writes and migrations of e2e_otel's models go to the records alias. Any thread."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return get_config().DATABASE_ALIAS if _is_ours(model) else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return get_config().DATABASE_ALIAS if _is_ours(model) else None

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return True if _is_ours(obj1) and _is_ours(obj2) else None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return db == get_config().DATABASE_ALIAS if app_label == APP_LABEL else None


def install_router() -> None:
    """Put the router first in ``settings.DATABASE_ROUTERS`` when the records use another alias.

    Called from ``ready()``, before anything has routed a query. Django reads ``DATABASE_ROUTERS``
    once, on first use, so ``django.db.router`` sees the list as it is after this.
    """
    from django.conf import settings

    if get_config().DATABASE_ALIAS == "default":
        return
    routers = list(getattr(settings, "DATABASE_ROUTERS", None) or [])
    if any(r == ROUTER_PATH or isinstance(r, RecordsRouter) for r in routers):
        return
    settings.DATABASE_ROUTERS = [ROUTER_PATH, *routers]


def router_warnings() -> list[Any]:
    """``e2e_otel.W009``: a router ahead of ours sends the records somewhere else."""
    from django.db import router

    from .models import WorkflowSession

    alias = get_config().DATABASE_ALIAS
    read, write = router.db_for_read(WorkflowSession), router.db_for_write(WorkflowSession)
    if read == alias and write == alias:
        return []
    return [Warning(
        f"e2e_otel's models are routed to {read!r} (read) and {write!r} (write), but the record writer "
        f"uses DATABASE_ALIAS {alias!r}: the API and the admin would not see the records.",
        hint=f"Put {ROUTER_PATH!r} first in DATABASE_ROUTERS, or make your router send app label "
             f"{APP_LABEL!r} to {alias!r}.",
        id="e2e_otel.W009",
    )]
