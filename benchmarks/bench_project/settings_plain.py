"""(A) plain Django: no OpenTelemetry at all."""

from __future__ import annotations

from .settings_base import *  # noqa: F403
