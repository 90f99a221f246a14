"""Values every supported database stores as given: the last step before a record is written.

Pure functions, run on the record writer thread after the sanitizer (``sanitize.py`` decides what is
secret; this module decides what a database accepts). The rules are the same for MySQL/MariaDB,
PostgreSQL and SQLite, so a record one backend stores is stored by the others:

- text: lone surrogates (UTF-8 cannot encode them: PyMySQL raises, MariaDB refuses) become U+FFFD;
  NUL characters (PostgreSQL refuses them in ``text`` and ``jsonb``) are removed;
- JSON: non-finite floats become ``null``, as ``JSON.stringify`` does (MariaDB's ``JSON_VALID`` and
  PostgreSQL's ``jsonb`` refuse ``NaN``/``Infinity``, and ``INSERT IGNORE`` used to drop such rows
  unseen); integers outside 64 bits become text; keys become text; tuples and sets become lists;
  other objects their text; at most ``MAX_DEPTH`` levels, and about ``MAX_JSON_CHARS`` characters
  in all, what does not fit is cut (mappings say how many entries were left out);
- float columns: :func:`is_storable_float` says whether the value can go in at all (the writer
  drops a non-finite metric and counts it as ``invalid_value``).

Plain ASCII strings, ints and finite floats take a fast path: a type test and ``str.isascii``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .sanitize import DEPTH_MARKER, TRUNCATED_ITEMS_KEY, TRUNCATION_MARKER

__all__ = ["MAX_DEPTH", "MAX_JSON_CHARS", "REPLACEMENT", "is_storable_float", "storable_json", "storable_text"]

REPLACEMENT = "\ufffd"
MAX_DEPTH = 8
MAX_JSON_CHARS = 64 * 1024  # per JSON value: 32 of them make one INSERT, far below max_allowed_packet
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # signed and unsigned 64 bits: every backend's JSON number
_INT_TEXT_BITS = 10_000  # longer ints are not even turned into text (Python caps int→str at 4,300 digits)
_SCALAR_COST = 8  # characters charged for a number, boolean or null


def storable_text(text: str) -> str:
    """``text`` without lone surrogates (→ U+FFFD) or NUL characters."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text) if _SURROGATE.search(text) else text


def is_storable_float(value: float) -> bool:
    """Whether a float column can hold ``value`` (NaN and ±infinity: no backend's SQL can)."""
    return math.isfinite(value)


def storable_json(value: Any, *, max_chars: int = MAX_JSON_CHARS, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` in a form ``json.dumps`` turns into JSON every backend accepts (module docstring):
    ``value`` itself when it is a flat mapping of plain values (most span metadata), else a copy."""
    if type(value) is dict and _is_plain(value, max_chars):
        return value
    return _Walk(max_chars, max_depth).value(value, 1)


def _is_plain(data: dict[Any, Any], max_chars: int) -> bool:
    """A flat dict of ASCII strings without NUL, 64-bit ints, finite floats, booleans and None,
    within the size budget: the fast path, one type test per entry."""
    left = max_chars
    for key, item in data.items():
        if type(key) is not str or not key.isascii() or "\x00" in key:
            return False
        kind = type(item)
        if kind is str:
            if not item.isascii() or "\x00" in item:
                return False
            left -= len(item)
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif item is not None and kind is not bool:
            return False
        left -= len(key) + _SCALAR_COST
    return left > 0


class _Walk:
    """One walk over a value, charging each string and scalar against a character budget."""

    __slots__ = ("left", "max_depth")

    def __init__(self, max_chars: int, max_depth: int) -> None:
        self.left = max_chars
        self.max_depth = max_depth

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is bool or value is None:
            self.left -= _SCALAR_COST
            return value
        if kind is int:
            self.left -= _SCALAR_COST
            return value if _INT_MIN <= value <= _INT_MAX else self.big_int(value)
        if kind is float:
            self.left -= _SCALAR_COST
            return value if math.isfinite(value) else None
        if isinstance(value, Mapping):
            return DEPTH_MARKER if depth > self.max_depth else self.mapping(value, depth)
        if isinstance(value, (list, tuple, set, frozenset)):
            return DEPTH_MARKER if depth > self.max_depth else self.sequence(value, depth)
        for base in (bool, int, float, str):  # subclasses: an IntEnum, a str enum, numpy's float64…
            if isinstance(value, base):
                return self.value(base(value) if base is not str else str.__str__(value), depth)
        try:
            return self.text(str(value))
        except Exception:  # a broken __str__ must not stop the writer
            return self.text("<unrepresentable>")

    def text(self, text: str) -> str:
        if len(text) + 2 > self.left:
            text = text[:max(0, self.left - 2)] + TRUNCATION_MARKER
        self.left -= len(text) + 2
        return storable_text(text)

    def big_int(self, value: int) -> str:
        return self.text(str(value)) if value.bit_length() <= _INT_TEXT_BITS else self.text("<int out of range>")

    def mapping(self, data: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(data.items()):
            if self.left <= 0:
                out[TRUNCATED_ITEMS_KEY] = f"{len(data) - index} more items"
                break
            name = self.text(key if type(key) is str else str(key))
            out[name] = self.value(item, depth + 1)
        return out

    def sequence(self, items: Any, depth: int) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if self.left <= 0:  # cut silently, like the sanitizer: arrays stay homogeneous
                break
            out.append(self.value(item, depth + 1))
        return out
