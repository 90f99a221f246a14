"""Django system checks for the ``E2E_OTEL`` settings (``manage.py check``).

Ids are stable: E001 unknown key, E002 invalid value, W001 production without an API key,
W002 ingestion without an ingest key, W003 a MySQL database whose driver is not PyMySQL (its
queries would not be traced), W004 provider settings ignored because the provider was configured
before Django (``opentelemetry-instrument``), W005 a WORKFLOWS rule pattern that matches no URL
pattern (``e2e_otel.discovery``), W009 a database router that sends e2e_otel's models away from
``DATABASE_ALIAS`` (``e2e_otel.routers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import OPTIONS, Config, get_config

_SETTINGS_TAG = "e2e_otel"


@register(Tags.compatibility, _SETTINGS_TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    config = get_config()
    messages: list[Any] = []
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
