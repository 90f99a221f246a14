"""OpenAPI description of the API-key authentication (drf-spectacular extension, registered on import)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "e2e_otel.api.permissions.ApiKeyAuthentication"
    name = "e2eOtelApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": 'E2E_OTEL["API_KEY"]'}
