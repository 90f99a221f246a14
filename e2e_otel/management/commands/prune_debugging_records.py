"""Delete old debugging records by age and cap, in small batches (MySQL-friendly).

Rules (settings in ``E2E_OTEL``): workflow sessions older than ``RETENTION_DAYS`` (failed ones:
``FAILED_RETENTION_DAYS``), then the oldest sessions beyond ``MAX_WORKFLOW_SESSIONS``; steps go with
their session (cascade). Resolved error groups last seen before ``RETENTION_DAYS``; unresolved error
groups last seen before ``FAILED_RETENTION_DAYS`` (nobody looked at them for that long, and the public
browser ingestion endpoint can create them, so they must not pile up forever); performance snapshots
and query findings older than ``RETENTION_DAYS``. Age is measured on ``start_time`` for sessions,
``last_seen`` for errors, ``created_at`` (detection time) for findings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from ...conf import get_config
from ...models import ErrorLog, PerformanceSnapshot, QueryFinding, TraceStep, WorkflowSession, WorkflowStatus


def _given(value: int | None, default: int) -> int:
    """The command-line value when one was given (``0`` included, so it is validated, not ignored)."""
    return value if value is not None else default


class Command(BaseCommand):
    help = ("Delete debugging records older than the retention limits or beyond the session cap: "
            "sessions and resolved errors after RETENTION_DAYS, failed sessions and UNRESOLVED error "
            "groups (by last_seen) after FAILED_RETENTION_DAYS, snapshots and query findings after "
            "RETENTION_DAYS.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows per DELETE (default 1000).")
        parser.add_argument("--retention-days", type=int, default=None, help="Override RETENTION_DAYS.")
        parser.add_argument("--failed-retention-days", type=int, default=None,
                            help="Override FAILED_RETENTION_DAYS (failed sessions, unresolved errors).")
        parser.add_argument("--max-sessions", type=int, default=None, help="Override MAX_WORKFLOW_SESSIONS.")

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        retention = _given(options["retention_days"], config.RETENTION_DAYS)
        failed_retention = _given(options["failed_retention_days"], config.FAILED_RETENTION_DAYS)
        max_sessions = _given(options["max_sessions"], config.MAX_WORKFLOW_SESSIONS)
        batch_size = options["batch_size"]
        for name, value, low in (("--batch-size", batch_size, 1), ("--retention-days", retention, 1),
                                 ("--failed-retention-days", failed_retention, 1),
                                 ("--max-sessions", max_sessions, 0)):
            if value < low:
                raise CommandError(f"{name} must be >= {low}, got {value}")
        dry_run = options["dry_run"]
        now = timezone.now()
        cutoff = now - timedelta(days=retention)
        failed_cutoff = now - timedelta(days=failed_retention)

        failed = Q(status=WorkflowStatus.FAILED)
        expired_ordinary = Q(start_time__lt=cutoff) & ~failed
        expired_failed = failed & Q(start_time__lt=failed_cutoff)
        sessions = WorkflowSession.objects
        counts: dict[str, int] = {}
        counts["sessions_expired"], steps_a = self._delete_sessions(
            sessions.filter(expired_ordinary), batch_size, dry_run)
        counts["failed_sessions_expired"], steps_b = self._delete_sessions(
            sessions.filter(expired_failed), batch_size, dry_run)

        # Cap: keep the newest ``max_sessions`` of what the age rules leave.
        remaining = sessions.exclude(expired_ordinary | expired_failed)
        steps_c = 0
        counts["sessions_over_cap"] = 0
        boundary = list(remaining.order_by("-start_time", "-id")
                        .values_list("start_time", "id")[max_sessions:max_sessions + 1])
        if boundary:
            start, pk = boundary[0]
            over_cap = remaining.filter(Q(start_time__lt=start) | Q(start_time=start, id__lte=pk))
            counts["sessions_over_cap"], steps_c = self._delete_sessions(over_cap, batch_size, dry_run)
        counts["trace_steps"] = steps_a + steps_b + steps_c
        counts["error_logs"] = self._delete(
            ErrorLog.objects.filter(resolved=True, last_seen__lt=cutoff), batch_size, dry_run
        )
        counts["unresolved_error_logs_expired"] = self._delete(
            ErrorLog.objects.filter(resolved=False, last_seen__lt=failed_cutoff), batch_size, dry_run
        )
        counts["performance_snapshots"] = self._delete(
            PerformanceSnapshot.objects.filter(timestamp__lt=cutoff), batch_size, dry_run
        )
        counts["query_findings"] = self._delete(
            QueryFinding.objects.filter(created_at__lt=cutoff), batch_size, dry_run
        )
        verb = "would delete" if dry_run else "deleted"
        for name, number in counts.items():
            self.stdout.write(f"{verb} {number} {name}")

    @staticmethod
    def _delete_sessions(queryset: QuerySet[WorkflowSession], batch_size: int,
                         dry_run: bool) -> tuple[int, int]:
        """(sessions, steps) removed; steps are deleted first, batch by batch, to keep DELETEs small."""
        if dry_run:
            return queryset.count(), TraceStep.objects.filter(workflow_session__in=queryset).count()
        sessions_deleted = steps_deleted = 0
        while True:
            ids = list(queryset.order_by("start_time", "id").values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            steps_deleted += Command._delete(TraceStep.objects.filter(workflow_session_id__in=ids),
                                             batch_size, False)
            WorkflowSession.objects.filter(pk__in=ids).delete()
            sessions_deleted += len(ids)
        return sessions_deleted, steps_deleted

    @staticmethod
    def _delete(queryset: QuerySet[Model], batch_size: int, dry_run: bool) -> int:
        if dry_run:
            return queryset.count()
        model = queryset.model
        total = 0
        while True:
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return total
            model._default_manager.filter(pk__in=ids).delete()
            total += len(ids)
