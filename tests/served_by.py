"""Test-only middleware: ``X-Served-By`` names the process that answered (see tests/settings_workers.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def served_by(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Served-By"] = str(os.getpid())
        return response

    return middleware
