"""Seed the default performance thresholds and debugging configurations (idempotent).

Existing rows keep their (possibly user-edited) values unless ``--force`` is given, which resets
them to the defaults in ``e2e_otel.defaults``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from ...conf import get_config
from ...defaults import DEFAULT_CONFIGURATIONS, DEFAULT_THRESHOLDS
from ...models import DebugConfiguration, PerformanceThreshold


class Command(BaseCommand):
    help = "Create the default PerformanceThreshold and DebugConfiguration rows (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Reset existing rows to the default values.")
        parser.add_argument("--database", default=None,
                            help='Database alias (default: E2E_OTEL["DATABASE_ALIAS"], the records alias).')

    def handle(self, *args: Any, force: bool = False, database: str | None = None, **options: Any) -> None:
        database = database or get_config().DATABASE_ALIAS
        counts = {"created": 0, "reset": 0, "unchanged": 0}
        with transaction.atomic(using=database):
            for default in DEFAULT_THRESHOLDS:
                values = {
                    "warning_threshold": default.warning,
                    "critical_threshold": default.critical,
                    "direction": default.direction,
                    "unit": default.unit,
                    "description": default.description,
                    "enabled": True,
                }
                self._seed(PerformanceThreshold.objects.using(database),
                           {"metric_name": default.metric_name, "layer": default.layer, "component": ""},
                           values, force, counts)
            for name, spec in DEFAULT_CONFIGURATIONS.items():
                values = {"description": spec.get("description", ""), "config_data": spec.get("config_data", {}),
                          "enabled": True}
                self._seed(DebugConfiguration.objects.using(database), {"name": name}, values, force, counts)
        if options.get("verbosity", 1) >= 1:
            self.stdout.write(self.style.SUCCESS(
                f"debugging defaults: {counts['created']} created, {counts['reset']} reset, "
                f"{counts['unchanged']} unchanged"
            ))

    @staticmethod
    def _seed(manager: Any, lookup: dict[str, Any], values: dict[str, Any], force: bool,
              counts: dict[str, int]) -> None:
        obj = manager.filter(**lookup).first()
        if obj is None:
            manager.create(**lookup, **values)
            counts["created"] += 1
            return
        if not force:
            counts["unchanged"] += 1
            return
        changed = [field for field, value in values.items() if getattr(obj, field) != value]
        for field in changed:
            setattr(obj, field, values[field])
        if changed:
            obj.save()
            counts["reset"] += 1
        else:
            counts["unchanged"] += 1
