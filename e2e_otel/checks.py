"""Django system checks for the ``E2E_OTEL`` settings (``manage.py check``).

Ids are stable: E001 unknown key, E002 invalid value, W001 production without an API key,
W002 ingestion without an ingest key, W003 MySQL database without PyMySQL instrumentation possible.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register

from .conf import OPTIONS, get_config

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
    return messages
