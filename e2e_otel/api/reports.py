"""``GET reports/?since=24h&top=5&format=json|markdown``: the debugging report over HTTP.

Request thread; the same bounded queries as ``manage.py debugging_report`` (:mod:`e2e_otel.reports`).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..report_render import render_markdown, report_dict
from ..reports import build_report, parse_since
from .views import DebuggingAPIMixin, extend_schema


class MarkdownRenderer(BaseRenderer):
    """``?format=markdown`` (DRF's format override) or ``Accept: text/markdown``."""

    media_type = "text/markdown"
    format = "markdown"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        if isinstance(data, str):
            return data.encode(self.charset)
        return JSONRenderer().render(data)  # errors (401, 400) stay machine-readable


class DebuggingReportView(DebuggingAPIMixin, APIView):
    """Workflows by type, slowest steps per layer, threshold breaches, unresolved errors, query findings."""

    renderer_classes = [JSONRenderer, MarkdownRenderer]  # DRF's own convention

    @extend_schema(
        parameters=[OpenApiParameter("since", str, description="window ending now: 90m, 24h, 7d (default 24h)"),
                    OpenApiParameter("top", int, description="slowest steps per layer, 1..50 (default 5)"),
                    OpenApiParameter("format", str, enum=["json", "markdown"])],
        responses={200: OpenApiResponse(description="the report (JSON object or Markdown text)"),
                   400: OpenApiResponse(description="invalid since/top"),
                   404: OpenApiResponse(description="unknown format (DRF's format negotiation)")},
    )
    def get(self, request: Request) -> Response:
        try:
            window = parse_since(request.query_params.get("since", "24h"))
        except ValueError as exc:
            return Response({"since": [str(exc)]}, status=400)
        try:
            top = int(request.query_params.get("top", "5"))
        except ValueError:
            return Response({"top": ["must be an integer"]}, status=400)
        if not 1 <= top <= 50:
            return Response({"top": ["must be between 1 and 50"]}, status=400)
        report = build_report(since=window, top=top)
        if request.accepted_renderer.format == "markdown":
            return Response(render_markdown(report))
        return Response(report_dict(report))
