"""e2e-otel: an OpenTelemetry distribution for Django + MySQL.

Add ``"e2e_otel"`` to ``INSTALLED_APPS`` (and optionally an ``E2E_OTEL`` dict); see the README.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "ErrorLogger",
    "PerformanceMonitor",
    "WorkflowTracer",
    "__version__",
    "get_correlation_id",
    "inject_headers",
    "workflow",
]

_LAZY = {
    "get_correlation_id": "e2e_otel.correlation",
    "inject_headers": "e2e_otel.correlation",
    "workflow": "e2e_otel.workflows",
    "WorkflowTracer": "e2e_otel.workflows",
    "ErrorLogger": "e2e_otel.workflows",
    "PerformanceMonitor": "e2e_otel.workflows",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import e2e_otel` (e.g. from settings.py or pip metadata) never imports Django
    # models or the SDK before Django is configured.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'e2e_otel' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
