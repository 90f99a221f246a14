"""Model fields shared by the record models."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class CorrelationIdField(models.UUIDField):
    """A UUID stored as ``char(32)`` hex on every backend.

    Correlation ids are W3C trace ids: any 128-bit value. MariaDB >= 10.7's native ``UUID`` type
    (which Django uses for ``UUIDField`` there) rejects values whose version/variant nibbles are not
    RFC 4122-like (``Incorrect uuid value``), so most random trace ids could not be stored. Python
    values stay ``uuid.UUID`` and lookups work as for ``UUIDField``.

    Two things ``UUIDField`` leaves to the backend need saying here, because this column is not the
    backend's uuid type: reading back (PostgreSQL, with a native uuid type, registers no converter
    for ``UUIDField``, so ``char(32)`` would come back as ``str``) and bulk inserts (Django 5.2's
    PostgreSQL ``UNNEST`` insert casts to ``db_type`` without its length, ``char[]``, which keeps one
    character of each id; a field with ``get_placeholder`` is inserted with a plain ``VALUES`` list).
    """

    def db_type(self, connection: Any) -> str:
        return "char(32)"

    def rel_db_type(self, connection: Any) -> str:
        return "char(32)"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            value = self.to_python(value)
        return value.hex

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):  # MySQL/SQLite converters already made it
            return value
        return uuid.UUID(hex=str(value))

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:
        return "%s"
