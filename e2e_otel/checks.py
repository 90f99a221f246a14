"""Django system checks for the ``E2E_OTEL`` settings (``manage.py check``).

Ids are stable: E001 unknown key, E002 invalid value, W001 production without an API key,
W002 ingestion without an ingest key, W003 a MySQL database whose driver is not PyMySQL (its
queries would not be traced), W004 provider settings ignored because the provider was configured
before Django (``opentelemetry-instrument``), W005 a WORKFLOWS rule pattern that matches no URL
pattern (``e2e_otel.discovery``), E003 a DATABASE_ALIAS missing from DATABASES, W006 unapplied
e2e_otel migrations on that alias, W007 an e2e-otel URL shadowed by an earlier pattern of the
host's URLconf, I001 e2e-otel's URLs not included at all, W009 a database router that sends
e2e_otel's models away from ``DATABASE_ALIAS`` (``e2e_otel.routers``), W010 a multi-process server
whose ``/metrics`` cannot sum its workers (``e2e_otel.metrics_multiprocess``).

E001/E002 are also logged at start-up by ``AppConfig.ready()`` (``settings_messages``), because
gunicorn and uWSGI run no checks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.checks import CheckMessage, Error, Info, Tags, Warning, register

from .conf import OPTIONS, Config, get_config

logger = logging.getLogger(__name__)

_SETTINGS_TAG = "e2e_otel"


@register(Tags.compatibility, _SETTINGS_TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    config = get_config()
    messages: list[Any] = settings_messages(config)
    if config.is_active and config.ENVIRONMENT == "production" and not config.API_KEY:
        messages.append(Warning(
            "The debugging API has no API_KEY in production; only staff sessions can use it.",
            hint='Set E2E_OTEL["API_KEY"] (or E2E_OTEL_API_KEY) to a long random value for tools.',
            id="e2e_otel.W001",
        ))
    if config.is_active and config.INGEST_ALLOWED_ORIGINS and not config.INGEST_KEY:
        messages.append(Warning(
            "Browser ingestion has allowed origins but no INGEST_KEY; the endpoint rejects every request.",
            hint='Set E2E_OTEL["INGEST_KEY"]; browsers send it as X-E2E-Ingest-Key.',
            id="e2e_otel.W002",
        ))
    if config.is_active:
        messages.extend(provider_settings_warnings(config))
    if config.is_active and config.INSTRUMENT_PYMYSQL:
        from django.conf import settings

        messages.extend(mysql_driver_warnings(settings.DATABASES))
    from .routers import router_warnings

    messages.extend(router_warnings())
    return messages


def settings_messages(config: Config) -> list[CheckMessage]:
    """E001 unknown keys and E002 invalid values (checks and the start-up log share the text)."""
    messages: list[CheckMessage] = []
    for key in config.unknown:
        close = [name for name in OPTIONS if name.split("_")[0] == key.split("_")[0]]
        hint = f"Known keys: {', '.join(sorted(OPTIONS))}."
        if close:
            hint = f"Did you mean {' or '.join(close[:3])}? " + hint
        messages.append(Error(f"E2E_OTEL has an unknown key {key!r}.", hint=hint, id="e2e_otel.E001"))
    for error in config.errors:
        option = OPTIONS.get(error.key)
        hint = option.doc if option else "E2E_OTEL must be a dict."
        messages.append(Error(str(error), hint=f"{hint} The default is used until this is fixed.",
                              id="e2e_otel.E002"))
    return messages


def format_message(message: CheckMessage) -> str:
    """One line as ``manage.py check`` words it, without its ``?:`` object prefix."""
    hint = f" HINT: {message.hint}" if message.hint else ""
    return f"({message.id}) {message.msg}{hint}"


# Keys that shape the tracer provider itself; they cannot apply to a provider someone else built.
PROVIDER_KEYS = frozenset({"SERVICE_NAME", "SERVICE_VERSION", "RESOURCE_ATTRIBUTES", "TRACES_EXPORTER",
                           "OTLP_ENDPOINT", "OTLP_PROTOCOL", "OTLP_HEADERS", "OTLP_TIMEOUT", "SAMPLE_RATE"})


def provider_settings_warnings(config: Config) -> list[Any]:
    """W004: E2E_OTEL provider keys are ignored when the provider was configured before Django
    (``opentelemetry-instrument``): our processors join that provider, its exporter/sampler stay."""
    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None or runtime.owns_provider:
        return []
    ignored = sorted(config.explicit & PROVIDER_KEYS)
    if not ignored:
        return []
    return [Warning(
        f"E2E_OTEL sets {', '.join(ignored)}, but the tracer provider was configured before Django "
        "(e.g. by opentelemetry-instrument), so these settings have no effect.",
        hint="Set the OTEL_* environment variables instead (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, "
             "OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER_ARG, "
             "OTEL_RESOURCE_ATTRIBUTES), or start the app without opentelemetry-instrument.",
        id="e2e_otel.W004",
    )]


def mysql_driver_warnings(databases: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """W003: a MySQL database served by mysqlclient is invisible to the PyMySQL instrumentation."""
    from importlib import import_module

    messages: list[Any] = []
    for alias, database in databases.items():
        engine = str(database.get("ENGINE", ""))
        if "mysql" not in engine:
            continue
        try:
            driver = import_module(f"{engine}.base").Database
        except Exception:  # Django itself reports a backend that cannot load
            continue
        if getattr(driver, "__name__", "") == "pymysql":
            continue
        messages.append(Warning(
            f"DATABASES[{alias!r}] uses the {getattr(driver, '__name__', driver)!r} driver, not PyMySQL; "
            "its SQL queries are not traced.",
            hint="Call `import pymysql; pymysql.install_as_MySQLdb()` at the top of settings.py, before "
                 'Django loads the MySQL backend, or set E2E_OTEL["INSTRUMENT_PYMYSQL"] = False.',
            id="e2e_otel.W003",
        ))
    return messages


@register(Tags.urls, _SETTINGS_TAG)
def check_workflow_rules(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W005: a WORKFLOWS pattern no endpoint matches never names a workflow (usually a typo)."""
    config = get_config()
    if not config.WORKFLOWS:
        return []
    from .discovery import unmatched_rules

    try:
        unmatched = unmatched_rules(rules=config.WORKFLOWS)
    except Exception:  # a broken URLconf is reported by Django's own URL checks
        return []
    return [Warning(
        f"WORKFLOWS rule {rule.pattern!r} for workflow {rule.workflow!r} matches "
        + (f"only routes that are never workflows ({', '.join(rule.excluded)})." if rule.excluded
           else "no URL pattern."),
        hint=("Remove the matching pattern from E2E_OTEL['IGNORE_PATHS'] (the default leaves out the admin "
              "site, static and media files) to record them. " if rule.excluded else "")
        + (f"Close routes: {', '.join(rule.close)}. " if rule.close and not rule.excluded else "")
        + 'Rules match "METHOD /route" with the route as a template, e.g. /api/articles/{slug} (see '
          "`manage.py discover_endpoints`); fnmatch wildcards * ? [] apply.",
        id="e2e_otel.W005",
    ) for rule in unmatched]


#: Seconds the migration check waits for the record database before it gives up without a message.
MIGRATION_CHECK_TIMEOUT = 3.0


@register(_SETTINGS_TAG)  # not Tags.database: Django runs those only when given databases
def check_migrations(app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
    """E003 DATABASE_ALIAS unknown; W006 e2e_otel migrations not applied on it (the record writer
    would fail every batch).

    Runs in plain ``manage.py check`` and ``runserver`` (``databases`` is None). ``migrate`` passes the
    database it is about to migrate and the test runner the test databases it has just migrated:
    there the warning would be wrong, so the check stays quiet. An unreachable database gives no
    message (checks also run where no database exists, e.g. a CI lint step); the query runs on a
    helper thread so that a server that does not answer costs at most ``MIGRATION_CHECK_TIMEOUT``.
    """
    config = get_config()
    if not config.is_active or not (config.RECORDS_ENABLED or config.METRICS_ENABLED):
        return []
    from django.conf import settings

    alias = config.DATABASE_ALIAS
    if alias not in settings.DATABASES:
        return [Error(
            f"E2E_OTEL['DATABASE_ALIAS'] is {alias!r}, which is not in DATABASES; no record can be written.",
            hint=f"Use one of {', '.join(map(repr, settings.DATABASES))}.", id="e2e_otel.E003")]
    if databases is not None:
        return []
    unapplied = unapplied_migrations(alias, timeout=MIGRATION_CHECK_TIMEOUT)
    if not unapplied:
        return []
    command = "manage.py migrate e2e_otel" + (f" --database {alias}" if alias != "default" else "")
    return [Warning(
        f"{len(unapplied)} e2e_otel migration(s) are not applied on database {alias!r} "
        f"({', '.join(unapplied)}); workflow records cannot be written.",
        hint=f"Run `{command}`.", id="e2e_otel.W006")]


def unapplied_migrations(alias: str, *, timeout: float) -> list[str] | None:
    """Names of e2e_otel migrations not applied on ``alias``; ``None`` when it cannot be told in time."""
    from django.db import connections

    if connections[alias].vendor == "sqlite":  # a local file (or this thread's in-memory database)
        return _unapplied(alias)
    result: list[list[str] | None] = [None]

    def run() -> None:
        try:
            result[0] = _unapplied(alias)
        finally:
            connections[alias].close()  # the helper thread's own connection

    worker = threading.Thread(target=run, name="e2e-otel-migration-check", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0]


def _unapplied(alias: str) -> list[str] | None:
    from django.db import DatabaseError, connections
    from django.db.migrations.loader import MigrationLoader
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    try:
        with suppress_instrumentation():  # our own bookkeeping queries are no one's workflow
            loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    except DatabaseError as exc:
        logger.debug("e2e-otel: migrations on %r could not be checked: %s", alias, exc)
        return None
    except Exception:  # a broken migration graph is reported by Django itself
        logger.debug("e2e-otel: migrations on %r could not be checked", alias, exc_info=True)
        return None
    return sorted(name for app, name in loader.graph.nodes
                  if app == "e2e_otel" and (app, name) not in loader.applied_migrations)


#: (URL name in the ``e2e_otel`` namespace, what it serves, the path the README mounts it at)
URL_ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("workflow-session-list", "the debugging API", "/api/v1/debugging/workflow-sessions/"),
    ("otlp-traces", "browser span ingestion", "/api/v1/debugging/otlp/v1/traces"),
    ("metrics", "/metrics", "/metrics"),
)
INCLUDE_LINE = 'path("", include("e2e_otel.urls"))'


@register(_SETTINGS_TAG)
def check_metrics_multiprocess(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .metrics_multiprocess import check_multiprocess_metrics

    return check_multiprocess_metrics(app_configs, **kwargs)


@register(Tags.urls, _SETTINGS_TAG)
def check_urls(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W007: an e2e-otel URL resolves to another view (an earlier catch-all pattern, e.g. ``static()``
    with an empty ``MEDIA_URL``); I001: e2e-otel's URLs are not included in ``ROOT_URLCONF``."""
    config = get_config()
    from django.conf import settings

    urlconf = getattr(settings, "ROOT_URLCONF", None)
    if not config.is_active or not urlconf:
        return []
    endpoints = [e for e in URL_ENDPOINTS if e[0] != "metrics" or config.METRICS_ENABLED]
    try:
        return url_messages(urlconf, endpoints)
    except Exception:  # a broken URLconf is reported by Django's own URL checks
        logger.debug("e2e-otel: URL check skipped", exc_info=True)
        return []


def url_messages(urlconf: str, endpoints: Sequence[tuple[str, str, str]]) -> list[CheckMessage]:
    """Each endpoint is reversed by name (so a prefix of the user's own choosing is fine) and the path
    resolved again: patterns are tried in order, and an earlier one that matches wins."""
    from django.urls import NoReverseMatch, Resolver404, get_script_prefix, resolve, reverse

    prefix = get_script_prefix()  # FORCE_SCRIPT_NAME: reverse() adds it, resolve() expects it gone
    messages: list[CheckMessage] = []
    missing: list[str] = []
    for name, label, default_path in endpoints:
        try:
            path = reverse(f"e2e_otel:{name}", urlconf=urlconf)
        except NoReverseMatch:
            missing.append(f"{label} ({default_path})")
            continue
        if path.startswith(prefix):
            path = "/" + path[len(prefix):]
        try:
            match = resolve(path, urlconf=urlconf)
        except Resolver404:  # reverse() built it, so resolving it cannot fail; say so if it does
            match = None
        if match is not None and match.url_name == name and "e2e_otel" in match.app_names:
            continue
        shadow = f"pattern {match.route!r} (view {match._func_path})" if match else "no pattern"
        messages.append(Warning(
            f"{label} is mounted at {path}, but that URL resolves to {shadow} of ROOT_URLCONF {urlconf!r}; "
            "requests to it never reach e2e-otel.",
            hint=f"Move the include of e2e_otel.urls above the pattern {match.route!r}, or narrow that pattern."
            if match else "Check the include of e2e_otel.urls.",
            id="e2e_otel.W007"))
    if missing:
        messages.append(Info(
            f"e2e-otel's URLs are not included in ROOT_URLCONF {urlconf!r}: {', '.join(missing)} "
            "cannot be reached.",
            hint=f"Add `{INCLUDE_LINE}` to urlpatterns (before any catch-all pattern), or ignore this "
                 "if you do not serve them.",
            id="e2e_otel.I001"))
    return messages
