"""``GET query-findings/``: recent N+1 and slow-query findings of this process, with advice.

Findings live in the ``QueryAnalyzer``'s bounded in-memory ring (derived from spans, like every
other view); the Prometheus counters ``e2e_otel_n_plus_one_total`` / ``e2e_otel_slow_queries_total``
carry the fleet-wide totals.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..bootstrap import get_runtime
from ..queries import QueryAnalyzer
from .views import DebuggingAPIMixin, extend_schema

_KINDS = ("n_plus_one", "slow_query")


class QueryFindingsView(DebuggingAPIMixin, APIView):
    """Filters: ``kind`` (n_plus_one | slow_query), ``correlation_id``, ``table``; ``limit`` ≤ 500."""

    pagination_class = None  # type: ignore[assignment]  # a bounded list, not a queryset

    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=list(_KINDS)), OpenApiParameter("correlation_id", str),
                    OpenApiParameter("table", str), OpenApiParameter("limit", int)],
        responses={200: inline_serializer("QueryFindings", {
            "enabled": serializers.BooleanField(), "count": serializers.IntegerField(),
            "results": serializers.ListField(child=serializers.DictField())})},
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind is not None and kind not in _KINDS:
            return Response({"kind": [f"must be one of {', '.join(_KINDS)}"]}, status=400)
        try:
            limit = min(500, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return Response({"limit": ["must be an integer"]}, status=400)
        runtime = get_runtime()
        analyzer = runtime.processor(QueryAnalyzer) if runtime is not None else None
        if not isinstance(analyzer, QueryAnalyzer):
            return Response({"enabled": False, "count": 0, "results": []})
        findings: list[dict[str, Any]] = [f.as_dict() for f in analyzer.findings(kind)]
        for key in ("correlation_id", "table"):
            wanted = request.query_params.get(key)
            if wanted:
                findings = [f for f in findings if f[key] == wanted]
        return Response({"enabled": True, "count": len(findings), "results": findings[:limit]})
