"""Viewsets of the debugging API. Request thread.

Reads come from the span-derived tables. The writes here (create/complete a session, resolve an
error, snapshots, thresholds and configurations) are explicit user actions, so they go to the
database directly instead of through the span pipeline.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import Avg, Count, Max, Q, QuerySet, Sum
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from drf_spectacular.utils import extend_schema as _extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import get_config
from ..dbhealth.probe import probe_for
from ..models import (
    DebugConfiguration,
    ErrorLog,
    Layer,
    PerformanceSnapshot,
    PerformanceThreshold,
    Severity,
    StepStatus,
    ThresholdStatus,
    TraceStep,
    WorkflowSession,
    WorkflowStatus,
)
from ..propagation import parse_correlation_id
from . import serializers as s
from .filters import Param, QueryParamFilterBackend, choice, parse_bool, parse_id, parse_uuid, time_range
from .permissions import AUTHENTICATION_CLASSES, IsStaffOrApiKey, actor_name

SUMMARY_LIMIT = 50


def extend_schema(**kwargs: Any) -> Any:
    """``drf_spectacular.extend_schema`` based on spectacular's AutoSchema even when the host app's
    ``DEFAULT_SCHEMA_CLASS`` is DRF's own (we require no ``REST_FRAMEWORK`` settings)."""

    def decorate(func: Any) -> Any:
        if getattr(func, "schema", None) is None and "schema" not in getattr(func, "kwargs", {}):
            func.schema = AutoSchema
        return _extend_schema(**kwargs)(func)

    return decorate


class DebuggingPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class DebuggingAPIMixin:
    """Everything a view needs so the host app sets no ``REST_FRAMEWORK`` options."""

    authentication_classes = AUTHENTICATION_CLASSES
    permission_classes = [IsStaffOrApiKey]
    pagination_class = DebuggingPagination
    filter_backends = [QueryParamFilterBackend, OrderingFilter]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    schema = AutoSchema()
    filter_params: dict[str, Param] = {}
    # Any path segment reaches the view, so a malformed id is the API's JSON 404, not the host's page.
    lookup_value_regex = "[^/]+"


# --- workflow sessions --------------------------------------------------------------------------------


class WorkflowSessionViewSet(DebuggingAPIMixin, mixins.ListModelMixin, mixins.CreateModelMixin,
                             mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Workflow sessions; retrieve by numeric id or by correlation id (UUID or 32 hex)."""

    queryset = WorkflowSession.objects.all()
    serializer_class = s.WorkflowSessionSerializer
    ordering_fields = ["start_time", "last_activity", "duration_ms", "id"]  # indexes: see filters.py
    ordering = ["-start_time", "-id"]
    filter_params = {
        "status": Param("status", choice(WorkflowStatus.values)),
        "workflow_type": Param("workflow_type"),
        "user_id": Param("user_id"),
        "service": Param("service"),
        "correlation_id": Param("correlation_id", parse_uuid, "trace id as UUID or 32 hex digits"),
        **time_range("start_time"),
    }

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if self.action == "retrieve":
            return s.WorkflowSessionDetailSerializer
        if self.action == "create":
            return s.WorkflowCreateSerializer
        if self.action == "complete":
            return s.WorkflowCompleteSerializer
        return s.WorkflowSessionSerializer

    def get_object(self) -> WorkflowSession:
        value = str(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
        if value.isdigit() and len(value) <= 19:
            obj = get_object_or_404(self.get_queryset(), pk=int(value))
        else:
            trace_id = parse_correlation_id(value)
            if trace_id is None:
                raise Http404("not a session id or correlation id")
            obj = get_object_or_404(self.get_queryset(), correlation_id=uuid.UUID(int=trace_id))
        self.check_object_permissions(self.request, obj)
        return obj

    @extend_schema(request=s.WorkflowCreateSerializer, responses={201: s.WorkflowSessionDetailSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Start a workflow: a ``WorkflowTracer`` root span first (so the trace backend agrees), then
        the row itself, so the caller gets the session back at once (the writer later merges the
        span-derived facts into the same row)."""
        payload = s.WorkflowCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        correlation_id = data.get("correlation_id") or uuid.uuid4()
        metadata = data.get("metadata") or {}
        tracer = _workflow_tracer()
        if tracer is not None:
            tracer.start_workflow(data["workflow_type"], correlation_id=correlation_id,
                                  user=data.get("user_id") or None, metadata=metadata)
        try:
            with transaction.atomic(using=router.db_for_write(WorkflowSession)):
                session = self._create_row(correlation_id, data, metadata)
        except IntegrityError:  # the record writer created it between validation and now
            return Response({"correlation_id": ["a workflow session with this correlation id exists"]},
                            status=status.HTTP_409_CONFLICT)
        return Response(s.WorkflowSessionDetailSerializer(session).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _create_row(correlation_id: uuid.UUID, data: dict[str, Any], metadata: dict[str, Any]) -> WorkflowSession:
        now = timezone.now()
        config = get_config()
        return WorkflowSession.objects.create(
            correlation_id=correlation_id,
            workflow_type=data["workflow_type"],
            workflow_type_source="explicit",
            user_id=data.get("user_id", ""),
            service=config.SERVICE_NAME[:100],
            environment=config.ENVIRONMENT,
            start_time=now,
            last_activity=now,
            metadata=metadata,
        )

    @extend_schema(request=s.WorkflowCompleteSerializer, responses={200: s.WorkflowSessionDetailSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str | None = None) -> Response:
        payload = s.WorkflowCompleteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        # the record writer may be merging into this row right now
        with transaction.atomic(using=router.db_for_write(WorkflowSession)):
            session = self.get_queryset().select_for_update().get(pk=self.get_object().pk)
            return self._complete(session, payload.validated_data)

    def _complete(self, session: WorkflowSession, data: dict[str, Any]) -> Response:
        now = timezone.now()
        session.status = data["status"]
        session.status_explicit = True
        session.end_time = now
        session.last_activity = now
        session.duration_ms = max(0.0, (now - session.start_time).total_seconds() * 1000)
        metadata = dict(session.metadata or {})
        metadata.update(data.get("metadata") or {})
        if data.get("error_message"):
            from ..bootstrap import get_runtime

            runtime = get_runtime()
            message = data["error_message"]
            metadata["error_message"] = runtime.sanitizer.scrub_text(message) if runtime else message
        session.metadata = metadata
        tracer = _workflow_tracer()
        if tracer is not None:  # ends the workflow's root span (or records the status in its trace)
            extra = data.get("metadata") or None
            if data["status"] == WorkflowStatus.FAILED:
                tracer.fail_workflow(session.correlation_id, data.get("error_message") or "failed via API", extra)
            else:
                tracer.complete_workflow(session.correlation_id, "completed", extra)
        session.save(update_fields=["status", "status_explicit", "end_time", "last_activity", "duration_ms",
                                    "metadata", "updated_at"])
        return Response(s.WorkflowSessionDetailSerializer(session).data)

    @extend_schema(responses={200: OpenApiResponse(description="Counts and durations by status and type")})
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset()).order_by()
        by_status = {row["status"]: row["n"] for row in queryset.values("status").annotate(n=Count("id"))}
        total = sum(by_status.values())
        finished = queryset.filter(duration_ms__isnull=False)
        durations = finished.aggregate(avg=Avg("duration_ms"), max=Max("duration_ms"))
        by_type = (
            queryset.values("workflow_type")
            .annotate(count=Count("id"), failed=Count("id", filter=Q(status=WorkflowStatus.FAILED)),
                      avg_duration_ms=Avg("duration_ms"))
            .order_by("-count", "workflow_type")[:SUMMARY_LIMIT]
        )
        failed = by_status.get(WorkflowStatus.FAILED, 0)
        return Response({
            "total": total,
            "by_status": {value: by_status.get(value, 0) for value in WorkflowStatus.values},
            "failure_rate": (failed / total) if total else 0.0,
            "avg_duration_ms": durations["avg"],
            "max_duration_ms": durations["max"],
            "by_workflow_type": list(by_type),
        })


def _workflow_tracer() -> Any:
    """``WorkflowTracer`` when the records core is installed (imported lazily), else ``None``."""
    try:
        from ..workflows import WorkflowTracer
    except ImportError:
        return None
    return WorkflowTracer


class TraceStepViewSet(DebuggingAPIMixin, viewsets.ReadOnlyModelViewSet):
    queryset = TraceStep.objects.all()
    serializer_class = s.TraceStepSerializer
    ordering_fields = ["start_time", "duration_ms", "id"]
    ordering = ["start_time", "id"]
    filter_params = {
        "workflow_session": Param("workflow_session_id", parse_id, "session id", "integer"),
        "correlation_id": Param("correlation_id", parse_uuid, "trace id as UUID or 32 hex digits"),
        "layer": Param("layer", choice(Layer.values)),
        "component": Param("component"),
        "status": Param("status", choice(StepStatus.values)),
        **time_range("start_time"),
    }


# --- snapshots ------------------------------------------------------------------------------------------


class PerformanceSnapshotViewSet(DebuggingAPIMixin, mixins.ListModelMixin, mixins.CreateModelMixin,
                                 mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = PerformanceSnapshot.objects.all()
    serializer_class = s.PerformanceSnapshotSerializer
    ordering_fields = ["timestamp", "metric_value", "id"]
    ordering = ["-timestamp", "-id"]
    filter_params = {
        "layer": Param("layer", choice(Layer.values)),
        "component": Param("component"),
        "metric_name": Param("metric_name"),
        "threshold_status": Param("threshold_status", choice(ThresholdStatus.values)),
        "correlation_id": Param("correlation_id", parse_uuid, "trace id as UUID or 32 hex digits"),
        **time_range("timestamp"),
    }

    @extend_schema(responses={200: s.PerformanceSnapshotSerializer(many=True)})
    @action(detail=False, methods=["get"])
    def alerts(self, request: Request) -> Response:
        """Snapshots whose threshold status is warning or critical."""
        queryset = self.filter_queryset(self.get_queryset()).filter(
            threshold_status__in=[ThresholdStatus.WARNING, ThresholdStatus.CRITICAL]
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# --- error logs -------------------------------------------------------------------------------------------


class ErrorLogViewSet(DebuggingAPIMixin, viewsets.ReadOnlyModelViewSet):
    queryset = ErrorLog.objects.all()
    serializer_class = s.ErrorLogSerializer
    ordering_fields = ["timestamp", "last_seen", "occurrences", "severity", "id"]
    ordering = ["resolved", "-last_seen", "-id"]
    filter_params = {
        "layer": Param("layer", choice(Layer.values)),
        "component": Param("component"),
        "error_type": Param("error_type"),
        "severity": Param("severity", choice(Severity.values)),
        "category": Param("category"),
        "resolved": Param("resolved", parse_bool, "true or false", "boolean"),
        "fingerprint": Param("fingerprint"),
        "correlation_id": Param("correlation_id", parse_uuid, "trace id as UUID or 32 hex digits"),
        **time_range("last_seen"),
    }

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return s.ResolveSerializer if self.action == "resolve" else s.ErrorLogSerializer

    @extend_schema(request=s.ResolveSerializer, responses={200: s.ErrorLogSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        error = self.get_object()
        payload = s.ResolveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        error.resolved = True
        error.resolved_at = timezone.now()
        error.resolved_by = actor_name(request)
        error.resolution_notes = payload.validated_data["resolution_notes"]
        error.save(update_fields=["resolved", "resolved_at", "resolved_by", "resolution_notes"])
        return Response(s.ErrorLogSerializer(error).data)

    @extend_schema(responses={200: OpenApiResponse(description="Grouped counts, unresolved first")})
    @action(detail=False, methods=["get"])
    def summary(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset()).order_by()
        rows = list(
            queryset.values("resolved", "layer", "error_type", "severity")
            .annotate(groups=Count("id"), occurrences=Sum("occurrences"), last_seen=Max("last_seen"))
            .order_by("resolved", "-groups", "layer", "error_type", "severity")[:SUMMARY_LIMIT]
        )
        for row in rows:
            row["occurrences"] = int(row["occurrences"] or 0)  # MySQL SUM() is a DECIMAL
        return Response({
            "total_groups": queryset.count(),
            "unresolved_groups": queryset.filter(resolved=False).count(),
            "by_layer": _counts(queryset, "layer"),
            "by_severity": _counts(queryset, "severity"),
            "groups": rows,
        })


def _counts(queryset: QuerySet[Any], field: str) -> dict[str, int]:
    return {row[field]: row["n"] for row in queryset.values(field).annotate(n=Count("id")).order_by(field)}


# --- configuration ---------------------------------------------------------------------------------------


class DebugConfigurationViewSet(DebuggingAPIMixin, viewsets.ModelViewSet):
    queryset = DebugConfiguration.objects.all()
    serializer_class = s.DebugConfigurationSerializer
    ordering_fields = ["name", "updated_at", "id"]
    ordering = ["name"]
    filter_params = {"enabled": Param("enabled", parse_bool, "true or false", "boolean"),
                     "name": Param("name")}


class PerformanceThresholdViewSet(DebuggingAPIMixin, viewsets.ModelViewSet):
    queryset = PerformanceThreshold.objects.all()
    serializer_class = s.PerformanceThresholdSerializer
    ordering_fields = ["layer", "metric_name", "updated_at", "id"]
    ordering = ["layer", "metric_name", "component"]
    filter_params = {
        "layer": Param("layer", choice(Layer.values)),
        "metric_name": Param("metric_name"),
        "enabled": Param("enabled", parse_bool, "true or false", "boolean"),
    }


# --- health ------------------------------------------------------------------------------------------------


class SystemHealthView(DebuggingAPIMixin, APIView):
    """Is the debugging pipeline working: database, record writer, exporter, recent breaches.

    The database part comes from ``dbhealth.probe``: never queried on this thread, at most one
    second of waiting, and its ``age_seconds`` says how old the answer is.
    """

    @extend_schema(responses={200: inline_serializer("SystemHealth", {"status": serializers.CharField()}),
                              503: OpenApiResponse(description="database unreachable")})
    def get(self, request: Request) -> Response:
        config = get_config()
        store = probe_for(config.DATABASE_ALIAS).current()
        body: dict[str, Any] = {
            "status": "ok" if store.reachable else "unavailable",
            "database": store.database(time.monotonic()),
            "record_writer": _record_writer_stats(),
            "exporter": _exporter_info(config),
        }
        if store.reachable:
            body["counts"] = store.counts
            body["thresholds_in_breach"] = store.breaches
            if store.breaches:
                body["status"] = "degraded"
        code = status.HTTP_200_OK if store.reachable else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(body, status=code)


def _record_writer_stats() -> dict[str, Any]:
    """Stats of the record processor when the records core is installed; tolerate its absence."""
    from ..bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None:
        return {"available": False, "reason": "e2e-otel runtime not installed"}
    try:
        from ..processors import WorkflowSpanProcessor
    except ImportError:
        return {"available": False, "reason": "records processor not available"}
    processor = runtime.processor(WorkflowSpanProcessor)
    if processor is None:
        return {"available": False, "reason": "records disabled"}
    stats: Any = None
    for name in ("stats", "get_stats"):
        candidate = getattr(processor, name, None)
        if candidate is not None:
            stats = candidate() if callable(candidate) else candidate
            break
    if stats is not None and not isinstance(stats, dict):
        stats = {k: v for k, v in vars(stats).items() if not k.startswith("_")} if hasattr(stats, "__dict__") \
            else {"value": str(stats)}
    return {"available": True, "stats": _jsonable(stats or {})}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _exporter_info(config: Any) -> dict[str, Any]:
    from ..bootstrap import get_runtime

    runtime = get_runtime()
    return {
        "configured": bool(runtime is not None and runtime.exporter is not None),
        "traces_exporter": config.TRACES_EXPORTER,
        "protocol": config.OTLP_PROTOCOL if "otlp" in config.TRACES_EXPORTER.split(",") else None,
    }
