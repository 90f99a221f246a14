"""Endpoint discovery: every URL pattern as e2e-otel's records name it, and which
``E2E_OTEL["WORKFLOWS"]`` rule it falls under.

Patterns are joined exactly like ``URLResolver.resolve`` builds ``ResolverMatch.route`` (which
opentelemetry-instrumentation-django records as ``http.route``): the pattern strings of the nested
includes concatenated, a leading ``^`` of each inner regex dropped. ``Endpoint.route`` is that
pattern as a template (``routes.route_template``), the form of workflow types, step components and
metric labels; ``Endpoint.pattern`` keeps the raw ``http.route`` for finding spans, and
``Endpoint.not_workflow`` says why requests to it are never recorded (``traffic.py``: e2e-otel's own
pages, the admin of its models, ``IGNORE_PATHS``). Rules are matched with
:func:`e2e_otel.spans_to_records.match_rule` against ``"METHOD /route"``, the key the record writer
uses, so a rule that matches nothing here will never name a workflow. Runs on the caller's thread
(CLI, system check, API request).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from .routes import method_key, route_template
from .spans_to_records import match_rule
from .traffic import build_filter, own_kind

__all__ = ["Endpoint", "UnmatchedRule", "close_routes", "discover_endpoints", "unmatched_rules"]

#: Methods tried for views whose methods can't be known (function views).
ANY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Endpoint:
    route: str  # template with a leading "/", as records and labels have it ("/api/articles/{slug}")
    view: str  # dotted path of the view function or class
    name: str | None  # URL name with namespaces ("e2e_otel:system-health")
    methods: tuple[str, ...]  # ("*",) when the view accepts anything we can't see (function views)
    workflows: dict[str, str] = field(default_factory=dict)  # method -> workflow rule that names it
    pattern: str = ""  # exactly as http.route records it (regex patterns of DRF routers verbatim)
    not_workflow: str | None = None  # "e2e_otel" | "admin" | "ignored" (every method): never recorded

    def route_keys(self) -> list[str]:
        """The ``"METHOD /route"`` keys spans of this endpoint carry (see ``spans_to_records``)."""
        return _route_keys(self.route, self.methods)


def _route_keys(route: str, methods: Sequence[str]) -> list[str]:
    return [f"{method} {route}" for method in (ANY_METHODS if tuple(methods) == ("*",) else methods)]


@dataclass(frozen=True)
class UnmatchedRule:
    workflow: str
    pattern: str
    close: tuple[str, ...]  # nearest "METHOD /route" keys, for the hint
    excluded: tuple[str, ...] = ()  # keys it matches whose requests are never workflows (IGNORE_PATHS…)


def _join_route(route1: str, route2: str) -> str:
    # Same as django.urls.resolvers.URLResolver._join_route (private, so not imported).
    if not route1:
        return route2
    return route1 + route2.removeprefix("^")


@dataclass(frozen=True)
class _PatternMatch:
    """The parts of a ``ResolverMatch`` that ``traffic.own_kind`` reads, known without a request."""

    app_names: tuple[str, ...]
    url_name: str | None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def app_name(self) -> str:
        return ":".join(self.app_names)


def _walk(patterns: Iterable[Any], prefix: str, namespace: str,
          apps: tuple[str, ...] = ()) -> Iterator[tuple[str, URLPattern, str, tuple[str, ...]]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner_ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            inner_apps = (*apps, pattern.app_name) if pattern.app_name else apps
            yield from _walk(pattern.url_patterns, _join_route(prefix, str(pattern.pattern)), inner_ns, inner_apps)
        elif isinstance(pattern, URLPattern):
            yield _join_route(prefix, str(pattern.pattern)), pattern, namespace, apps


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


def _view_and_methods(callback: Any) -> tuple[str, tuple[str, ...]]:
    """DRF viewsets: the router's method→action map; class-based views (Django's and DRF's,
    ``@api_view`` included): the ``http_method_names`` the class implements; functions: unknown."""
    actions = getattr(callback, "actions", None)
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if isinstance(actions, Mapping) and cls is not None:
        methods = {m.upper() for m in actions}
        if "GET" in methods and "HEAD" not in methods:
            methods.add("HEAD")  # DRF maps HEAD to GET for viewsets
        if hasattr(cls, "options"):
            methods.add("OPTIONS")
        return _dotted(cls), tuple(sorted(methods))
    if cls is not None:
        names = [m for m in getattr(cls, "http_method_names", ()) if hasattr(cls, m)]
        if "get" in names and "head" not in names and "head" in getattr(cls, "http_method_names", ()):
            names.append("head")  # View.setup() serves HEAD with get()
        return _dotted(cls), tuple(sorted(m.upper() for m in names))
    return _dotted(callback), ("*",)


def discover_endpoints(urlconf: str | None = None, *,
                       rules: Mapping[str, Sequence[str]] | None = None,
                       ignore_paths: Sequence[str] | None = None) -> list[Endpoint]:
    """Every URL pattern of ``urlconf`` (default ``ROOT_URLCONF``), in resolution order.

    ``rules``/``ignore_paths`` default to ``E2E_OTEL["WORKFLOWS"]``/``["IGNORE_PATHS"]``; a method
    that is never a workflow gets no entry in ``Endpoint.workflows``.
    """
    if rules is None or ignore_paths is None:
        from .conf import get_config

        config = get_config()
        rules = config.WORKFLOWS if rules is None else rules
        ignore_paths = config.IGNORE_PATHS if ignore_paths is None else ignore_paths
    ignored = build_filter(ignore_paths, urlconf).ignored
    endpoints = []
    for raw, pattern, namespace, apps in _walk(get_resolver(urlconf).url_patterns, "", ""):
        route = route_template(raw)
        view, methods = _view_and_methods(pattern.callback)
        not_workflow = own_kind(_PatternMatch(apps, pattern.name), pattern.callback)
        workflows = {}
        skipped = 0
        keys = _route_keys(route, methods)
        for key in keys:
            method = key.split(" ", 1)[0]
            if not_workflow is not None or ignored(method_key(method), raw):
                skipped += 1
                continue
            workflow = match_rule(key, rules)
            if workflow is not None:
                workflows[method] = workflow
        if not_workflow is None and skipped == len(keys):
            not_workflow = "ignored"
        endpoints.append(Endpoint(route=route, view=view, methods=methods, workflows=workflows,
                                  name=f"{namespace}{pattern.name}" if pattern.name else None, pattern=raw,
                                  not_workflow=not_workflow))
    return endpoints


def close_routes(pattern: str, endpoints: Sequence[Endpoint], limit: int = 3) -> list[str]:
    """The ``"METHOD /route"`` keys that look most like ``pattern`` (for "did you mean")."""
    keys = sorted({key for endpoint in endpoints for key in endpoint.route_keys()})
    return difflib.get_close_matches(pattern, keys, n=limit, cutoff=0.5)


def unmatched_rules(endpoints: Sequence[Endpoint] | None = None, *,
                    rules: Mapping[str, Sequence[str]] | None = None) -> list[UnmatchedRule]:
    """WORKFLOWS patterns that match no endpoint that can be a workflow, each tested on its own with
    ``match_rule``; ``UnmatchedRule.excluded`` names routes it matches that are never workflows."""
    if rules is None:
        from .conf import get_config

        rules = get_config().WORKFLOWS
    if endpoints is None:
        endpoints = discover_endpoints(rules=rules)
    keys = [key for endpoint in endpoints if endpoint.not_workflow is None for key in endpoint.route_keys()]
    excluded = [key for endpoint in endpoints if endpoint.not_workflow is not None for key in endpoint.route_keys()]
    unmatched = []
    for workflow, patterns in rules.items():
        for pattern in patterns:
            rule = {workflow: [pattern]}
            if not any(match_rule(key, rule) for key in keys):
                hidden = tuple(key for key in excluded if match_rule(key, rule))[:3]
                unmatched.append(UnmatchedRule(workflow, pattern, tuple(close_routes(pattern, endpoints)), hidden))
    return unmatched
