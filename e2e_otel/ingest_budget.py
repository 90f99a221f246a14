"""What one browser ingestion request may cost in CPU and string work, decided before the work is done.

The ingest key ships in browser JavaScript, so any visitor can post spans; each accepted string is
later scrubbed by the masker on the export and writer threads of the same process (sharing the GIL
with the app's requests), and the masker's cost grows with the number of secret-looking words in a
value (``secretsecret…``: ~2 µs per character). So, per request:

- *text*: at most ``max_text_chars`` characters of strings in total; the check runs before a string
  is scrubbed, so text past the budget is never handed to the masker;
- *masking*: every string longer than ``TIMED_CHARS`` is first checked cheaply (one C-level regex
  scan, ``secret_words``) for how many secret-looking words it holds: more than ``max_secret_words``
  and it is replaced by ``UNSCANNED`` without ever reaching the masker (no real URL, user agent or
  stack trace says "token" or "span" dozens of times; ``"span" * 1000`` costs the masker ~30 ms).
  The rest is scrubbed here, timed on the thread's CPU clock; one that costs more than
  ``max_value_seconds`` is replaced by ``UNSCANNED`` too (redacted, so the masker downstream gets a
  constant instead of the same cost twice more);
- *CPU*: decoding, conversion and masking together stop at ``cpu_seconds`` of thread CPU time
  (checked before each span and after each timed string); the spans not converted by then are
  dropped. One request so costs at most the budget plus one string's masking. The first
  ``FREE_SPANS`` spans are exempt from the CPU check: a garbage collection or a first-use import in
  the middle of a small, ordinary batch must not cost a browser its spans (their cost is bounded
  anyway, by the per-span limits and the text budget).

Between spans and after each timed string the request thread calls ``pace`` (a ``pacing.Pacer``
in the view), which hands the interpreter lock back every millisecond: without it, each app request
thread returning from I/O would wait up to the 5 ms switch interval for it, on every call, while a
decode runs. What is dropped is counted and reported back in the OTLP ``partial_success``. Runs on
the request thread; one instance per request, no locks.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Callable, Iterable

from .sanitize import DEFAULT_SENSITIVE_KEYS

__all__ = ["CPU", "FREE_SPANS", "TEXT", "TIMED_CHARS", "UNSCANNED", "DecodeBudget", "secret_words"]

# which budget ran out (DecodedBatch.dropped reasons, the metric's ``reason`` label)
TEXT = "text_budget"
CPU = "cpu_budget"

#: Strings up to this length are scrubbed untimed: their cost is microseconds whatever they hold.
TIMED_CHARS = 256
UNSCANNED = "[REDACTED: too costly to scan]"
FREE_SPANS = 32
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=8)
def secret_words(extra_keys: Iterable[str] = ()) -> re.Pattern[str]:
    """A case-insensitive pattern of the words the masker starts work at (the longest part of each
    default sensitive key and of each of ``extra_keys``), for counting them cheaply. Substrings
    count: "pan" in "span" costs the masker as much as a real one (~10 us each in a long run)."""
    parts = {max(_WORD_SPLIT.split(str(key).lower()), key=len) for key in (*DEFAULT_SENSITIVE_KEYS, *extra_keys)}
    parts.discard("")
    return re.compile("|".join(sorted(map(re.escape, parts), key=len, reverse=True)), re.IGNORECASE)


class DecodeBudget:
    """The text and CPU account of one ingestion request (see the module docstring)."""

    def __init__(self, *, max_text_chars: int, cpu_seconds: float, max_value_seconds: float,
                 max_secret_words: int = 32, words: re.Pattern[str] | None = None,
                 scrub: Callable[[str], str] | None = None, pace: Callable[[], None] | None = None,
                 free_spans: int = FREE_SPANS, clock: Callable[[], float] = time.thread_time) -> None:
        if max_text_chars < 0:
            raise ValueError(f"max_text_chars must be >= 0, got {max_text_chars!r}")
        if not cpu_seconds > 0 or not max_value_seconds > 0:
            raise ValueError(f"cpu_seconds and max_value_seconds must be > 0, got "
                             f"{cpu_seconds!r}, {max_value_seconds!r}")
        self.max_text_chars = max_text_chars
        self.cpu_seconds = cpu_seconds
        self.max_value_seconds = max_value_seconds
        self.max_secret_words = max_secret_words
        self._words = words if words is not None else secret_words()
        self._scrub = scrub
        self._pace = pace
        self._clock = clock
        self._started = clock()
        self.text_chars = 0
        self.unscanned_values = 0
        self.free_spans = free_spans
        self._in_free_span = False
        self.skipped_spans = 0  # spans a decoder left out once a budget had run out (before conversion)
        self.spent: str | None = None  # TEXT or CPU once a budget has run out

    def exhausted(self, index: int) -> bool:
        """Whether a budget has run out before span ``index`` (0-based) of a pass over the payload
        (parsing, then converting); checks the CPU clock past the first ``free_spans``."""
        if self._pace is not None:
            self._pace()
        self._in_free_span = index < self.free_spans
        if index >= self.free_spans and self.spent is None and self._clock() - self._started > self.cpu_seconds:
            self.spent = CPU
        return self.spent is not None

    def exhausted_reason(self) -> str:
        return self.spent or ""

    def text(self, value: str) -> str | None:
        """``value`` scrubbed, ``UNSCANNED`` when scrubbing it cost too much, or ``None`` once a
        budget is spent (the caller drops the span that holds it)."""
        if self.spent is not None:
            return None
        if self.text_chars + len(value) > self.max_text_chars:
            self.spent = TEXT
            return None
        self.text_chars += len(value)
        if self._scrub is None:
            return value
        if len(value) <= TIMED_CHARS:
            return self._scrub(value)
        hits = self._words.finditer(value)
        if next(itertools.islice(hits, self.max_secret_words, None), None) is not None:
            self.unscanned_values += 1  # more than max_secret_words: never handed to the masker
            return UNSCANNED
        started = self._clock()
        scrubbed = self._scrub(value)
        if self._pace is not None:
            self._pace()
        now = self._clock()
        if now - self._started > self.cpu_seconds and not self._in_free_span:
            self.spent = CPU
            return None
        if now - started > self.max_value_seconds:
            self.unscanned_values += 1
            return UNSCANNED
        return scrubbed
