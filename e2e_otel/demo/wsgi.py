"""WSGI entry point for serving the demo shop with any WSGI server (gunicorn, uWSGI)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "e2e_otel.demo.settings")

application = get_wsgi_application()
