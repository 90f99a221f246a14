"""The demo shop behind ``e2e-otel demo``: a small Django + DRF store with switchable faults.

It uses e2e-otel only as any user would: ``INSTALLED_APPS``, the ``E2E_OTEL`` dict, the URL include
and ``e2e_otel.workflow()``. Nothing here is imported by the library itself.
"""
