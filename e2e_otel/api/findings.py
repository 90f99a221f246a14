"""``GET query-findings/``: N+1 and slow-query findings with advice, newest first.

Read from the ``QueryFinding`` table on the records alias (``DATABASE_ALIAS``), which the record
writer fills from every process's ``QueryAnalyzer``: every worker answers the same, and findings
survive restarts. Runs on the request thread; every filter leads an index.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import get_config
from ..models import FindingKind, QueryFinding
from .filters import parse_uuid, text
from .views import DebuggingAPIMixin, extend_schema

_KINDS = tuple(FindingKind.values)
MAX_LIMIT = 500


class QueryFindingsView(DebuggingAPIMixin, APIView):
    """Filters: ``kind`` (n_plus_one | slow_query), ``correlation_id``, ``table``; ``limit`` ≤ 500.
    ``count`` is the number of matching findings, ``results`` the newest ``limit`` of them;
    ``enabled`` says whether this deployment stores findings (``RECORDS_ENABLED``)."""

    pagination_class = None  # type: ignore[assignment]  # a bounded list

    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=list(_KINDS)), OpenApiParameter("correlation_id", str),
                    OpenApiParameter("table", str), OpenApiParameter("limit", int)],
        responses={200: inline_serializer("QueryFindings", {
            "enabled": serializers.BooleanField(), "count": serializers.IntegerField(),
            "results": serializers.ListField(child=serializers.DictField())})},
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        config = get_config()
        rows = QueryFinding.objects.using(config.DATABASE_ALIAS).all()
        kind = params.get("kind")
        if kind is not None:
            if kind not in _KINDS:
                return Response({"kind": [f"must be one of {', '.join(_KINDS)}"]}, status=400)
            rows = rows.filter(kind=kind)
        try:
            limit = min(MAX_LIMIT, max(1, int(params.get("limit", "100"))))
        except ValueError:
            return Response({"limit": ["must be an integer"]}, status=400)
        for name, parse in (("correlation_id", parse_uuid), ("table", text)):
            value = params.get(name)
            if value:
                try:
                    rows = rows.filter(**{name: parse(value)})
                except ValueError as exc:
                    return Response({name: [str(exc)]}, status=400)
        results = [row.as_dict() for row in rows.order_by("-created_at", "-id")[:limit]]
        count = len(results) if len(results) < limit else rows.count()
        return Response({"enabled": bool(config.is_active and config.RECORDS_ENABLED), "count": count,
                         "results": results})
