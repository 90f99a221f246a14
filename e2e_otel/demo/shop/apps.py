from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """The demo shop. SQLite queries are traced by the core (``INSTRUMENT_SQLITE``), not here."""

    name = "e2e_otel.demo.shop"
    label = "shop"
    verbose_name = "Demo shop"
    default_auto_field = "django.db.models.BigAutoField"
