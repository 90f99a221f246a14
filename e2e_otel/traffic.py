"""Which requests are not the app's workflows: e2e-otel's own, ``IGNORE_PATHS``, and no route at all.

``CorrelationMiddleware`` asks :func:`internal_kind` once per request and marks the server span
``e2e.internal=<kind>``; the record processor copies the mark to the spans started under it, and the
derive side then keeps the whole trace out of WorkflowSession/TraceStep/ErrorLog rows, workflow
counters, reports, breaches and the API error ratio. The spans are still exported (errors included:
they stay visible in the tracing backend and in ``e2e_otel_steps_total``/``e2e_otel_errors_total``),
and a request no route matched counts in ``e2e_otel_unmatched_requests_total``.

Kinds: ``e2e_otel`` (its API, ingestion, ``/metrics``), ``admin`` (admin pages of e2e-otel's own
models: always), ``ignored`` (an ``IGNORE_PATHS`` pattern; by default the whole admin site, static
and media files, ``/favicon.ico``, ``/robots.txt``) and ``unmatched`` (no URL pattern resolved, or a
middleware answered before any view ran).

Runs on the request thread: a pattern test happens once per ``(method, route)`` of the URLconf and is
cached; the filter itself is rebuilt when the settings or the URLconf change.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from django.urls import NoReverseMatch, get_resolver, get_script_prefix, reverse

from . import conf
from .routes import DEFAULT_IGNORE_PATHS, PLACEHOLDERS, method_key, normalise_rule, route_template, split_pattern

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_IGNORE_PATHS", "TrafficFilter", "expand_patterns", "get_traffic_filter", "internal_kind"]

def expand_patterns(patterns: Iterable[str], *, admin: Sequence[str], static: str | None,
                    media: str | None) -> tuple[str, ...]:
    """``patterns`` with the placeholders replaced (pure). A placeholder with no value drops its
    pattern, and so does a prefix of ``/`` (a ``STATIC_URL = "/"`` must not ignore the whole site)."""
    values = {"{admin}": tuple(admin), "{static}": (static,) if static else (),
              "{media}": (media,) if media else ()}
    expanded: list[str] = []
    for pattern in patterns:
        method, route = split_pattern(pattern)
        head = "" if method == "*" else f"{method} "
        used = [name for name in PLACEHOLDERS if name in route]
        if not used:
            expanded.append(pattern)
            continue
        name = used[0]
        for prefix in values[name]:
            if prefix and prefix != "/":
                expanded.append(head + route.replace(name, prefix.rstrip("/") + "/", 1))
    return tuple(dict.fromkeys(expanded))


class TrafficFilter:
    """Tests ``"METHOD /route"`` against the expanded ``IGNORE_PATHS`` patterns, like WORKFLOWS
    rules: fnmatch on the route template, a pattern without a method matching every method, a
    pattern in the old regex form compared in template form. Request thread; the cache is bounded
    (methods are normalised, routes come from the URLconf)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        compiled: list[tuple[str, str]] = []
        for pattern in patterns:
            method, route = split_pattern(pattern)
            compiled.append((method, normalise_rule(route)))
        self.patterns = tuple(compiled)
        self.ignored = functools.lru_cache(maxsize=4096)(self._ignored)

    def _ignored(self, method: str, route: str) -> bool:
        """``route``: ``ResolverMatch.route`` as recorded in ``http.route`` (regex routes included)."""
        template = route_template(route)
        raw = route if route.startswith("/") else "/" + route
        for method_glob, route_glob in self.patterns:
            if fnmatchcase(method, method_glob) and (fnmatchcase(template, route_glob)
                                                     or fnmatchcase(raw, route_glob)):
                return True
        return False


def _url_path(url: Any) -> str | None:
    if not url:
        return None
    path = urlsplit(str(url)).path
    return path if path.startswith("/") else None


def admin_prefixes(urlconf: str | None = None) -> list[str]:
    """The URL prefix of every admin site in ``urlconf`` (``/admin/``, ``/staff/``), script prefix removed."""
    namespaces = ["admin", *get_resolver(urlconf).app_dict.get("admin", [])]
    script_prefix = get_script_prefix()
    prefixes = []
    for namespace in dict.fromkeys(namespaces):
        try:
            url = reverse(f"{namespace}:index", urlconf=urlconf)
        except NoReverseMatch:
            continue
        if url.startswith(script_prefix):
            url = "/" + url[len(script_prefix):]
        prefixes.append(url)
    return prefixes


def build_filter(patterns: Sequence[str], urlconf: str | None = None) -> TrafficFilter:
    """The filter for ``patterns`` with the placeholders read from this site's settings and URLconf."""
    from django.conf import settings

    needs_admin = any("{admin}" in pattern for pattern in patterns)
    try:
        admin = admin_prefixes(urlconf) if needs_admin else []
    except Exception:  # a broken URLconf surfaces in Django's own checks; never on the request path
        logger.warning("e2e-otel: admin URL prefix not found; IGNORE_PATHS {admin} matches nothing",
                       exc_info=True)
        admin = []
    return TrafficFilter(expand_patterns(patterns, admin=admin, static=_url_path(settings.STATIC_URL),
                                         media=_url_path(settings.MEDIA_URL)))


_cached: tuple[object, object, TrafficFilter] | None = None
_build_lock = threading.Lock()


def get_traffic_filter() -> TrafficFilter:
    """This process's filter, rebuilt when ``E2E_OTEL`` (a new ``Config``) or the root URLconf changes.

    Two cached look-ups and two identity tests per request once built; the first request (or the first after a change)
    expands the patterns, which reverses ``admin:index`` once.
    """
    global _cached
    config, resolver = conf.get_config(), get_resolver()
    cached = _cached
    if cached is not None and cached[0] is config and cached[1] is resolver:
        return cached[2]
    with _build_lock:  # no I/O inside: settings, URLconf (already imported) and fnmatch only
        traffic = build_filter(config.IGNORE_PATHS)
        _cached = (config, resolver, traffic)
    return traffic


def own_kind(match: Any, view_func: Any) -> str | None:
    """``e2e_otel`` for e2e-otel's own views, ``admin`` for the admin pages of its models, else None."""
    if match.app_name == "e2e_otel":
        return "e2e_otel"
    if match.app_name == "admin" or "admin" in match.app_names:
        model_admin = getattr(view_func, "model_admin", None)
        app_label = getattr(getattr(getattr(model_admin, "model", None), "_meta", None), "app_label", None)
        if app_label == "e2e_otel" or match.kwargs.get("app_label") == "e2e_otel":
            return "admin"
    if (match.url_name or "").startswith("e2e_otel_"):
        return "admin" if "admin" in match.app_names else "e2e_otel"
    return None


def internal_kind(method: str | None, match: Any, view_func: Any) -> str | None:
    """Why a resolved request is not a workflow (``e2e_otel``, ``admin``, ``ignored``), or None."""
    own = own_kind(match, view_func)
    if own is not None:
        return own
    route = getattr(match, "route", None) or ""
    if get_traffic_filter().ignored(method_key(method), route):
        return "ignored"
    return None
