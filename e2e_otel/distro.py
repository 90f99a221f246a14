"""Entry points for ``opentelemetry-instrument`` users.

The distro sets our defaults for the SDK's environment; the configurator builds the same runtime the
Django app would (from ``OTEL_*`` variables, before Django settings exist). When Django then starts,
``AppConfig.ready()`` finds that provider and reuses it.

As in the Django app, spans are exported only when a collector endpoint is configured
(``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``) or ``OTEL_TRACES_EXPORTER`` is set.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator


class E2EOtelDistro(BaseDistro):
    def _configure(self, **kwargs: Any) -> None:
        from .conf import OTLP_ENDPOINT_VARIABLES

        # Without an endpoint, OTEL_TRACES_EXPORTER stays unset and our configurator exports nothing
        # (rather than failing against localhost:4317 all day).
        if any(os.environ.get(name, "").strip() for name in OTLP_ENDPOINT_VARIABLES):
            os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_PROPAGATORS", "e2e_tracecontext,baggage,e2e_correlation")


class E2EOtelConfigurator(_BaseConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        import atexit

        from opentelemetry import trace
        from opentelemetry.propagate import set_global_textmap

        from .bootstrap import build_runtime, get_runtime
        from .conf import resolve
        from .propagation import default_propagator
        from .shutdown import install_sigterm_handler

        config = resolve(None)
        if not config.is_active:
            return
        runtime = build_runtime(config, with_derived=False)
        trace.set_tracer_provider(runtime.provider)
        atexit.register(runtime.shutdown)

        def stop() -> None:
            # The records of the runtime AppConfig.ready() installs on this provider, then the export.
            installed = get_runtime()
            if installed is not None and installed is not runtime:
                installed.shutdown()
            runtime.shutdown()

        if config.HANDLE_SIGTERM:
            install_sigterm_handler(stop)  # ready() then finds SIGTERM handled and leaves it alone
        if os.environ.get("OTEL_PROPAGATORS") in (None, "", "e2e_tracecontext,baggage,e2e_correlation"):
            set_global_textmap(default_propagator())
