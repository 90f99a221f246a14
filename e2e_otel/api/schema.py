"""OpenAPI description of the API-key authentication (drf-spectacular extension, registered on import)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "e2e_otel.api.permissions.ApiKeyAuthentication"
    name = "e2eOtelApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": 'E2E_OTEL["API_KEY"]'}


_METHODS = frozenset({"get", "put", "post", "delete", "patch"})

ERROR_COMPONENTS: dict[str, dict[str, Any]] = {
    "ErrorDetail": {
        "type": "object",
        "description": "Authentication, permission and not-found answers.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationErrors": {
        "type": "object",
        "description": "Field (or query parameter) name to its messages; `detail` for errors of the whole request.",
        "additionalProperties": {},
    },
}


def _ref(name: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def document_error_responses(result: dict[str, Any], generator: Any, request: Any, public: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: every operation documents the errors DRF really answers
    with — 401/403 everywhere (key or staff session required), 400 where the request carries query
    parameters or a body, 404 where the path names an object — unless the view documented its own."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_COMPONENTS)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _ref("ErrorDetail", "no or an invalid API key"))
            responses.setdefault("403", _ref("ErrorDetail", "not a staff session"))
            if operation.get("parameters") or "requestBody" in operation:
                responses.setdefault("400", _ref("ValidationErrors", "invalid query parameters or body"))
            if "{" in path:
                responses.setdefault("404", _ref("ErrorDetail", "no such object"))
    return result
