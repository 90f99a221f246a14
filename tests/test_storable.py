"""storable.py: values every backend stores as given (pure; property tests with hypothesis)."""

from __future__ import annotations

import json
import math
from enum import Enum, IntEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from e2e_otel.sanitize import DEPTH_MARKER, TRUNCATED_ITEMS_KEY
from e2e_otel.storable import MAX_JSON_CHARS, REPLACEMENT, is_storable_float, storable_json, storable_text

#: Unicode as an attacker sends it: lone surrogates (Cs), NUL and other controls (Cc), everything else.
HOSTILE_CHARS = st.characters(categories=["Cs", "Cc", "Cf", "L", "M", "N", "P", "S", "Z"])
HOSTILE_TEXT = st.text(HOSTILE_CHARS, max_size=200) | st.just("\x00" * 3) | st.just("\ud800x\udfff")
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=8) | st.tuples(inner, inner)
                      | st.dictionaries(HOSTILE_TEXT | st.integers(), inner, max_size=8), max_leaves=60)


def test_plain_values_go_through_unchanged() -> None:
    plain = {"http.route": "/items/<int:pk>/", "db.system": "mysql", "n": 3, "ratio": 0.25, "ok": True,
             "none": None, "list": [1, 2.5, "x"], "unicode": "café ☕ 🚀"}
    assert storable_json(plain) == plain
    assert storable_text("GET /items/") == "GET /items/"
    assert storable_text("naïve 🚀") == "naïve 🚀"


def test_surrogates_nul_and_non_finite_numbers_are_replaced() -> None:
    assert storable_text("a\ud800b\x00c\udfff") == f"a{REPLACEMENT}bc{REPLACEMENT}"
    assert storable_json({"nan": math.nan, "inf": [math.inf, -math.inf], "k\x00\ud83d": "v"}) == {
        "nan": None, "inf": [None, None], f"k{REPLACEMENT}": "v"}
    assert not is_storable_float(math.nan) and not is_storable_float(-math.inf) and is_storable_float(1e308)


def test_big_ints_subclasses_and_objects_become_json() -> None:
    class Colour(Enum):
        RED = 1

    class Level(IntEnum):
        HIGH = 3

    value = storable_json({"big": 2**64, "huge": 10**5000, "level": Level.HIGH, "colour": Colour.RED,
                           "set": {1}, "bytes": b"\x00ab"})
    assert value["big"] == str(2**64) and value["huge"] == "<int out of range>"
    assert value["level"] == 3 and type(value["level"]) is int
    assert value["colour"] == "Colour.RED" and value["set"] == [1] and value["bytes"] == "b'\\x00ab'"


def test_deep_and_huge_values_are_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(50):
        deep = {"d": deep}
    out = json.dumps(storable_json(deep))
    assert DEPTH_MARKER in out and out.count("{") <= 9
    huge = {f"k{i}": "x" * 1000 for i in range(1000)}
    stored = storable_json(huge)
    assert len(json.dumps(stored)) <= MAX_JSON_CHARS + 1000
    assert stored[TRUNCATED_ITEMS_KEY].endswith("more items")
    assert len(json.dumps(storable_json(["y" * 10**6]))) <= MAX_JSON_CHARS + 100


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(text for item in value.values() for text in _strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_any_value_becomes_strict_utf8_json_without_nul(value: Any) -> None:
    stored = storable_json(value, max_chars=4096)
    text = json.dumps(stored, allow_nan=False, ensure_ascii=False)  # raises on NaN/Infinity
    text.encode("utf-8")  # raises on a lone surrogate
    assert not any("\x00" in part for part in _strings(json.loads(text)))
    assert len(text) <= 4096 * 2 + 200  # the budget counts characters, JSON escapes may double them


@given(HOSTILE_TEXT)
def test_any_text_encodes_and_keeps_what_it_can(text: str) -> None:
    stored = storable_text(text)
    stored.encode("utf-8")
    assert "\x00" not in stored
    assert len(stored) == len(text) - text.count("\x00")
