"""tests.settings plus an ``X-Served-By: <pid>`` response header, so a test against several server
workers knows which worker answered each request (tests/test_metrics_gunicorn.py)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE

MIDDLEWARE = ["tests.served_by.served_by", *MIDDLEWARE]
