"""``GET endpoints/``: the URL routes of this site as route templates (the raw ``http.route`` in
``pattern``), with their methods and WORKFLOWS rule, plus the rule patterns that match no route.
Request thread."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..discovery import discover_endpoints, unmatched_rules
from .views import DebuggingAPIMixin, extend_schema


class EndpointDiscoveryView(DebuggingAPIMixin, APIView):
    """What ``manage.py discover_endpoints --format json`` prints."""

    @extend_schema(responses={200: inline_serializer("EndpointDiscovery", {
        "count": serializers.IntegerField(),
        "endpoints": serializers.ListField(child=serializers.DictField()),
        "unmatched_rules": serializers.ListField(child=serializers.DictField())})})
    def get(self, request: Request) -> Response:
        endpoints = discover_endpoints()
        return Response({
            "count": len(endpoints),
            "endpoints": [asdict(e) for e in endpoints],
            "unmatched_rules": [asdict(u) for u in unmatched_rules(endpoints)],
        })
