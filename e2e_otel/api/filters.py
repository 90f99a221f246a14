"""Query-string filters for the API, declared per viewset as ``filter_params``.

A tiny backend instead of django-filter (no extra dependency): each parameter has a parser that
raises ``ValueError`` on bad input, which becomes a 400 with the parameter named. Parsers bound what
they accept (integers to a positive BIGINT, text to 190 characters without NUL, datetimes to what the
database can store) so hostile input is a 400, never an ``OverflowError`` 500. Runs on the request thread.

Indexes (``e2e_otel.models``, checked by ``tests/test_api.py::test_new_filters_are_indexed``): every
filtered column leads an index. Orderings on the big, span-derived tables are indexed for the filter
they are used with:

- trace-steps ``duration_ms``: ``(layer, duration_ms)`` — "slowest database steps".
- workflow-sessions ``duration_ms``: ``(status, duration_ms)`` — "slowest completed/failed workflows".
  ``step_count``/``error_count`` are not orderable: they change on every merged span (an index there
  costs every write) and ``error-logs``/``stats`` answer "which workflows fail" better.
- performance-snapshots ``metric_value``: ``(metric_name, metric_value)`` — values only compare
  within one metric.
- error-logs ``occurrences``: ``(resolved, occurrences)`` — "most frequent open errors".

Debug configurations and thresholds are a few dozen rows: their orderings need no index.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers
from rest_framework.filters import BaseFilterBackend
from rest_framework.request import Request

from ..propagation import parse_correlation_id


def parse_uuid(value: str) -> uuid.UUID:
    number = parse_correlation_id(value.strip())
    if number is None:
        raise ValueError("expected a UUID (8-4-4-4-12) or 32 hex digits")
    return uuid.UUID(int=number)


CORRELATION_ID_PATTERN = ("^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                          "|[0-9a-fA-F]{32})$")
BIGINT_MAX = 2**63 - 1
MAX_DIGITS = len(str(BIGINT_MAX))


def parse_id(value: str) -> int:
    """A primary/foreign key: 1..2**63-1 (signed BIGINT), ASCII digits only (``int()`` would take
    ``"١٢"``, ``"1_000"`` and 4300-digit strings)."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS or not 1 <= int(text) <= BIGINT_MAX:
        raise ValueError(f"expected an integer between 1 and {BIGINT_MAX}")
    return int(text)


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError("expected true or false")


def parse_when(value: str) -> Any:
    """ISO 8601 date or datetime (naive = UTC), normalised to UTC here: an offset that pushes it past
    year 1..9999 is a ``ValueError`` (400), not an ``OverflowError`` in the database adapter."""
    text = value.strip()
    invalid = "expected an ISO 8601 date or datetime"
    try:
        moment = parse_datetime(text.replace(" ", "+")) if "T" in text else None
        if moment is None:
            day = parse_date(text)
            if day is None:
                raise ValueError(invalid)
            moment = dt.datetime(day.year, day.month, day.day)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, dt.timezone.utc)
        return moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError(f"{invalid} between years 1 and 9999") from None
    except ValueError as exc:  # parse_datetime's own message for e.g. month 13
        raise ValueError(invalid) from exc


def choice(choices: Iterable[str]) -> Callable[[str], str]:
    allowed = tuple(choices)

    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    parse.choices = allowed  # type: ignore[attr-defined]  # read by the schema below
    return parse


def text(value: str) -> str:
    if len(value) > 190:
        raise ValueError("at most 190 characters")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


@dataclass(frozen=True)
class Param:
    """One query parameter: ``lookup`` is the ORM lookup it filters on."""

    lookup: str
    parse: Callable[[str], Any] = text
    description: str = ""
    type: str = "string"


class QueryParamFilterBackend(BaseFilterBackend):
    """Applies ``view.filter_params`` (name → Param); unknown parameters are ignored."""

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> QuerySet[Any]:
        params: dict[str, Param] = getattr(view, "filter_params", {})
        conditions: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name, param in params.items():
            raw = request.query_params.get(name)
            if raw is None or raw == "":
                continue
            try:
                conditions[param.lookup] = param.parse(raw)
            except ValueError as exc:
                errors[name] = [str(exc)]
        if errors:
            raise serializers.ValidationError(errors)
        return queryset.filter(**conditions)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params: dict[str, Param] = getattr(view, "filter_params", {})
        return [
            {"name": name, "required": False, "in": "query", "description": param.description or name,
             "schema": param_schema(param)}
            for name, param in params.items()
        ]


def param_schema(param: Param) -> dict[str, Any]:
    """What the parser accepts, as a JSON schema (an empty value means "no filter" for every type)."""
    if param.parse is parse_when:
        return {"type": "string", "format": "date-time"}
    if param.parse is parse_uuid:
        return {"type": "string", "pattern": CORRELATION_ID_PATTERN}
    if param.parse is parse_bool:
        return {"type": "boolean"}
    if param.parse is parse_id:
        return {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX}
    choices = getattr(param.parse, "choices", None)
    if choices is not None:
        return {"type": "string", "enum": list(choices)}
    if param.parse is text:
        return {"type": "string", "maxLength": 190, "pattern": "^[^\\x00]*$"}
    return {"type": param.type}


def time_range(field: str) -> dict[str, Param]:
    return {
        "since": Param(f"{field}__gte", parse_when, f"{field} at or after (ISO 8601)"),
        "until": Param(f"{field}__lt", parse_when, f"{field} before (ISO 8601)"),
    }
