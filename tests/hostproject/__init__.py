"""A tiny host project for start-up tests run in subprocesses (``tests/test_startup.py``).

Its ``everything`` app registers every model in the admin from one loop, the pattern that made
``django.setup()`` raise ``AlreadyRegistered`` while it was listed before ``e2e_otel``. Knobs come
from the environment so each test crafts its own settings: ``HOST_E2E_OTEL`` (JSON for the
``E2E_OTEL`` setting, absent: no setting), ``HOST_DB`` (``sqlite`` or ``mysql``), ``HOST_URLCONF``,
``HOST_CUSTOM_ADMIN=1`` (the app registers WorkflowSession with its own ModelAdmin),
``HOST_EVERYTHING=0`` (without that app), ``HOST_DB_NAME``, ``HOST_DB_PORT``.
"""
