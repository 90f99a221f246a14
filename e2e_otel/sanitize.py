"""Redaction of secrets from span attributes, free text and SQL before anything is stored or exported.

Runs on the derive, writer and export threads for every span, so it is pure Python with no Django import,
every pattern is precompiled and written so that it cannot backtrack catastrophically (bounded or
unambiguous repetitions, literal-led alternatives), and every input has a size cap.

Sensitive *keys* (attribute names, dict keys, ``key=value`` in text) are matched on tokens, not on
raw substrings, so that ``span_id``, ``company`` or ``panel`` never match ``pan``. The rule, applied
by :meth:`Sanitizer.is_sensitive_key`:

1. Split the key on every non-alphanumeric character and on camelCase / letter-digit boundaries, then
   lower-case: ``http.request.header.X-Api-Key`` -> ``http request header x api key``;
   ``csrfMiddlewareToken`` -> ``csrf middleware token``.
2. The key is sensitive when a token *equals* a sensitive word, a run of tokens equals a multi-word
   one (``api key``, ``set cookie``, ``card number``), or a token *ends with* a sensitive word of five
   or more letters (``csrfmiddlewaretoken``, ``xapikey``, ``clientsecret``); a plural ``s`` is
   allowed (``COOKIES``, ``passwords``). Short words (``pan``, ``pwd``, ``ssn``, ``cvv``, ``csrf``)
   only ever match a whole token, so ``span`` is safe.
3. Exception: when the only word found is ``session`` and the last token is ``id`` (``session.id``,
   ``workflow_session_id``, ``sessionId``) the key is an identifier, not a credential, and is kept.
   ``sessionid`` (Django's cookie name) is one token, equals a word, and is masked.

Counters named after a word are masked too (``token_count``, ``gen_ai.usage.input_tokens``):
masking a number costs little, guessing wrong about a secret costs a lot.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .dberrors import mask_db_error_values

__all__ = [
    "DEFAULT_SENSITIVE_KEYS",
    "MASK",
    "MAX_SQL_LENGTH",
    "SQL_ATTRIBUTES",
    "TRUNCATION_MARKER",
    "Sanitizer",
    "ansi_quotes_for",
    "default_sanitizer",
    "scrub_sql",
    "sql_fingerprint",
    "sql_operation_and_table",
]

MASK = "[REDACTED]"
TRUNCATION_MARKER = "…[truncated]"
DEPTH_MARKER = "[max depth]"
TRUNCATED_ITEMS_KEY = "[truncated]"
MAX_SQL_LENGTH = 8192
#: Span attributes holding a statement: scrubbed as SQL (literals to ``?``), never as free text.
SQL_ATTRIBUTES = frozenset({"db.statement", "db.query.text"})
MEMO_SIZE = 1024  # distinct statements / texts remembered by Sanitizer.scrub_sql / scrub_text
SQL_MEMO_MAX_CHARS = 4096  # longer statements are scrubbed without being remembered
TEXT_MEMO_MAX_CHARS = 512  # short texts (names, routes, user ids) repeat; messages and traces mostly not

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "authorization", "auth_token",
    "cookie", "set-cookie", "session", "sessionid", "sessid", "csrf", "credit_card", "creditcard",
    "card_number", "cc_number", "cvv", "pan", "ssn", "private_key", "access_key",
)

_SUFFIX_MIN = 5  # shorter words would turn "span" into "pan"
# Text past this many characters beyond max_string_length is cut before scrubbing (it is dropped by
# the truncation anyway); the margin lets a secret straddling the limit still be recognised.
_SCRUB_MARGIN = 1024

_KEY_TOKEN = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _key_tokens(key: str) -> tuple[str, ...]:
    return tuple(token.lower() for token in _KEY_TOKEN.findall(key))


# --- free text -------------------------------------------------------------------------------------

_URL_CREDENTIALS = re.compile(r"(://[^\s:/?#@]{0,256}):[^\s/?#]{1,512}@")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]{0,40}PRIVATE KEY-----|\Z)"
)
# Patterns open with a literal or a character class and check the character before with a lookbehind
# placed after it: sre can then skip ahead quickly instead of trying every position.
_BEARER = re.compile(r"([Bb](?<![\w-][Bb])(?i:earer)\s+)[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(r"([Bb](?<![\w-][Bb])(?i:asic)\s+)([A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
# "key: value" heads, matched only where a sensitive word was seen (see Sanitizer._mask_pairs).
_KEY_HEAD = re.compile(
    r"(?<![A-Za-z0-9_.\-])\\?[\"']?(?P<key>[A-Za-z0-9_.\-]{1,256})\\?[\"']?"
    r"\s{0,8}(?P<sep>=>|==|:=|[:=])\s{0,8}"
)
_VALUE = re.compile(
    r"""
      [bBrRuU]?'(?:[^'\\\n]|\\[\s\S])*'?          # quoted; an unterminated one runs to the line end
    | [bBrRuU]?"(?:[^"\\\n]|\\[\s\S])*"?
    | \\'[^'\n]*'? | \\"[^"\n]*"?                  # JSON inside a string: \"x\"
    | (?:(?i:bearer|basic|digest|token|negotiate)\s+)?[^\s&,;'"<>(){}]+
    """,
    re.VERBOSE,
)
_LINE_END = re.compile(r"[^\r\n]*")
_HEADER_KEYS = ("authorization", "cookie")  # "Cookie: a=b; c=d": the whole line is the value
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_QUOTE_OPEN = re.compile(r"[bBrRuU]?\\?(['\"])")
_JWT = re.compile(r"eyJ(?<![\w-]eyJ)[\w-]{5,}\.[\w-]{5,}(?:\.[\w-]*)?")
# Major card networks start with 2-6; with Luhn this keeps ms timestamps and most ids readable.
_CARD = re.compile(r"[2-6](?<![\w-][2-6])(?:[ -]?[0-9]){12,18}(?![\w-])")
_NON_DIGIT = re.compile(r"[^0-9]")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = _NON_DIGIT.sub("", match.group())
    return MASK if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group()


def _mask_basic(match: re.Match[str]) -> str:
    # "Basic functionality" is prose; base64 credentials have digits, +/= or inner capitals.
    value = match.group(2)
    if any(c.isdigit() or c in "+/=" for c in value) or any(c.isupper() for c in value[1:]):
        return match.group(1) + MASK
    return match.group()


def _mask_literal(value: str) -> str:
    """``MASK`` in place of ``value``, keeping its quotes (``'x'`` -> ``'[REDACTED]'``)."""
    opening = _QUOTE_OPEN.match(value)
    if opening is None:
        return MASK
    quote, start = opening.group(1), opening.end()
    closing = ""
    if len(value) > start and value.endswith(quote):
        closing = "\\" + quote if opening.group().endswith("\\" + quote) else quote
    return value[:start] + MASK + closing


def _lower(text: str) -> str:
    """Lower-cased ``text`` with indexes unchanged (a few characters lower-case to two)."""
    lower = text.lower()
    return lower if len(lower) == len(text) else text.translate(_ASCII_LOWER)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATION_MARKER


class Sanitizer:
    """Masks sensitive keys and inline secrets, scrubs SQL literals, bounds sizes.

    Configuration is fixed at construction; the only state that changes is three thread-safe memos
    (sensitive-key verdicts; scrubbed SQL and short texts, keyed on the raw input, so up to
    ``MEMO_SIZE`` raw statements of at most ``SQL_MEMO_MAX_CHARS`` and as many texts of at most
    ``TEXT_MEMO_MAX_CHARS`` stay in process memory). Safe to share between
    threads (derive, export, writer).
    ``enabled=False`` turns masking off for keys and text (sizes are still bounded); SQL literals and
    values quoted in database error messages are scrubbed regardless, because SQL parameter values
    are never exported.

    >>> Sanitizer().clean_mapping({"user_password": "hunter2", "http.route": "/login"})
    {'user_password': '[REDACTED]', 'http.route': '/login'}
    """

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        enabled: bool = True,
        max_string_length: int = 4096,
        max_depth: int = 6,
        max_items: int = 128,
    ) -> None:
        if isinstance(extra_keys, str):
            raise TypeError(f"extra_keys must be an iterable of key names, not the string {extra_keys!r}")
        for name, value in (("max_string_length", max_string_length), ("max_depth", max_depth),
                            ("max_items", max_items)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.enabled = bool(enabled)
        self.max_string_length = max_string_length
        self.max_depth = max_depth
        self.max_items = max_items
        words = {_key_tokens(str(word)) for word in (*DEFAULT_SENSITIVE_KEYS, *extra_keys)} - {()}
        # Matched against the key's tokens joined by spaces: whole tokens (or runs of them) for every
        # word, plus the end of a token for the long ones.
        whole = sorted((" ".join(word) for word in words), key=len, reverse=True)
        ends = sorted({"".join(word) for word in words if len("".join(word)) >= _SUFFIX_MIN}, key=len,
                      reverse=True)
        self._words = re.compile(
            rf"(?<![a-z0-9])(?:{'|'.join(map(re.escape, whole))})s?(?![a-z0-9])"
            rf"|(?:{'|'.join(map(re.escape, ends))})s?(?![a-z0-9])"
        )
        # Any sensitive key contains the longest token of some word: a cheap substring test that lets
        # the common, harmless key or message skip tokenising altogether.
        stems = sorted({max(word, key=len) for word in words}, key=len, reverse=True)
        self._trigger = re.compile("|".join(map(re.escape, stems)))
        self._cached_is_sensitive: Callable[[str], bool] = functools.lru_cache(maxsize=4096)(self._classify)
        self._scrub_sql_memo: Callable[[str, bool], str] = functools.lru_cache(maxsize=MEMO_SIZE)(
            lambda sql, ansi_quotes: scrub_sql(sql, ansi_quotes=ansi_quotes))
        self._scrub_text_memo: Callable[[str], str] = functools.lru_cache(maxsize=MEMO_SIZE)(self._scrub_text)
        self._scrub_quoted_sql: Callable[[str, bool], str] = (
            lambda sql, ansi_quotes: self.scrub_sql(sql, ansi_quotes=ansi_quotes))

    # --- keys --------------------------------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values under ``key`` must be masked (the module docstring states the rule).

        Answers regardless of ``enabled``; callers that honour the switch check ``enabled`` too.
        """
        return self._cached_is_sensitive(key)

    def _classify(self, key: str) -> bool:
        if not self._trigger.search(key.lower()):
            return False
        tokens = _key_tokens(key)
        found = set(self._words.findall(" ".join(tokens)))
        if found and found <= {"session", "sessions"} and tokens[-1] == "id":
            return False  # an identifier such as workflow_session_id, not the session credential
        return bool(found)

    # --- structures --------------------------------------------------------------------------------

    def clean_mapping(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A bounded copy of ``data`` with sensitive values masked and strings scrubbed.

        Recurses into mappings, lists, tuples and sets up to ``max_depth`` levels (deeper containers
        become ``"[max depth]"``) and keeps at most ``max_items`` entries per container: a mapping gets
        a ``"[truncated]"`` entry saying how many were dropped, a sequence is cut silently so OTel
        attribute arrays stay homogeneous. Bytes and other objects are rendered as text and scrubbed.
        """
        return self._clean_dict(data, 1)

    def clean_attributes(self, attributes: Mapping[str, Any]) -> Mapping[str, Any]:
        """Span, event, link or resource attributes as they may be exported *and* stored.

        The one scrubbing path for OTel attributes: the exporter sends what this returns and the
        record writer stores it, so the two copies cannot differ. ``SQL_ATTRIBUTES`` are scrubbed as
        SQL (quoting per ``db.system``), values under sensitive keys masked, every other string, also
        inside arrays, scrubbed as text (:meth:`scrub_text`: inline secrets, database error values)
        and sizes bounded as by :meth:`clean_mapping`. Returns ``attributes`` itself when nothing
        changed (the common case), so callers can skip copying.
        """
        changed: dict[str, Any] | None = None
        mask = self.enabled
        ansi_quotes: bool | None = None
        for index, (key, value) in enumerate(attributes.items()):
            if index >= self.max_items:
                changed = dict(itertools.islice((attributes if changed is None else changed).items(), index))
                changed[TRUNCATED_ITEMS_KEY] = f"{len(attributes) - index} more items"
                break
            if key in SQL_ATTRIBUTES and isinstance(value, str):
                if ansi_quotes is None:
                    ansi_quotes = ansi_quotes_for(attributes.get("db.system"))
                new = self.scrub_sql(value, ansi_quotes=ansi_quotes)
            elif mask and self.is_sensitive_key(key):
                new = MASK
            elif isinstance(value, str):  # most values: straight to the memoised text scrub
                new = self.scrub_text(value)
            elif isinstance(value, (bool, int, float)) or value is None:
                continue
            else:
                new = self._clean_value(value, 1)
            if new != value:
                if changed is None:
                    changed = dict(attributes)
                changed[key] = new
        return attributes if changed is None else changed

    def _clean_dict(self, data: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mask = self.enabled
        for index, (key, value) in enumerate(data.items()):
            if index >= self.max_items:
                out[TRUNCATED_ITEMS_KEY] = f"{len(data) - index} more items"
                break
            name = _truncate(key if isinstance(key, str) else str(key), self.max_string_length)
            out[name] = MASK if mask and self.is_sensitive_key(name) else self._clean_value(value, depth)
        return out

    def _clean_value(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, Mapping):
            return DEPTH_MARKER if depth >= self.max_depth else self._clean_dict(value, depth + 1)
        if isinstance(value, (list, tuple, set, frozenset)):
            if depth >= self.max_depth:
                return DEPTH_MARKER
            items = [self._clean_value(item, depth + 1) for item in itertools.islice(value, self.max_items)]
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value[: self.max_string_length + _SCRUB_MARGIN])
            return self.scrub_text(raw.decode("utf-8", "replace"))
        try:
            text = str(value)
        except Exception:  # a broken __str__ must not break span export
            return "<unrepresentable>"
        return self.scrub_text(text)

    # --- free text ---------------------------------------------------------------------------------

    def scrub_text(self, text: str) -> str:
        """``text`` (an error message, stack trace, URL…) with inline secrets masked and length capped.
        Texts up to ``TEXT_MEMO_MAX_CHARS`` go through a memo of ``MEMO_SIZE`` entries (step names,
        components and user ids repeat from trace to trace).
"""
        if len(text) <= TEXT_MEMO_MAX_CHARS:
            return self._scrub_text_memo(text)
        return self._scrub_text(text)

    def _scrub_text(self, text: str) -> str:
        """``scrub_text`` without the memo.

        Masks, keeping the key and masking the value: ``key=value`` / ``key: value`` /
        ``"key": "value"`` pairs whose key is sensitive; whole ``Authorization:`` and
        ``Cookie:``/``Set-Cookie:`` header lines; ``Bearer`` and ``Basic`` credentials; the password
        of ``scheme://user:password@host``; PEM private keys; JWTs; Luhn-valid 13-19 digit card numbers
        (optionally grouped with spaces or dashes, first digit 2-6); values quoted in MySQL, PostgreSQL
        and Django database error messages (``Duplicate entry '?' for key 'email'``, see
        :mod:`e2e_otel.dberrors`).
        """
        limit = self.max_string_length
        cut = len(text) > limit
        if cut:
            text = text[: limit + _SCRUB_MARGIN]
        # Values quoted in database errors are SQL parameter values: masked even with masking off.
        text = self._scrub(text) if self.enabled else mask_db_error_values(text, self._scrub_quoted_sql)
        if cut or len(text) > limit:
            return text[:limit] + TRUNCATION_MARKER
        return text

    def _scrub(self, text: str) -> str:
        text = mask_db_error_values(text, self._scrub_quoted_sql)
        lower = _lower(text)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(r"\1:" + MASK + "@", text)
        if "private key" in lower:
            text = _PRIVATE_KEY.sub(MASK, text)
        if "bearer" in lower:
            text = _BEARER.sub(r"\1" + MASK, text)
        if "basic" in lower:
            text = _BASIC.sub(_mask_basic, text)
        if self._trigger.search(lower):
            text = self._mask_pairs(text)
        if "eyJ" in text:
            text = _JWT.sub(MASK, text)
        return _CARD.sub(_mask_card, text)

    def _mask_pairs(self, text: str) -> str:
        """Masks the value after every sensitive ``key=``/``key:``, starting from the trigger words."""
        lower = _lower(text)
        parts: list[str] = []
        done, previous = 0, -1
        for hit in self._trigger.finditer(lower):
            start = hit.start()
            if start < done:
                continue  # inside a value already masked
            floor = max(done, start - 256)
            while start > floor and text[start - 1] in _KEY_CHARS:
                start -= 1
            if start == previous:
                continue  # a second word in the same key
            previous = start
            quotes = 0
            while start > floor and quotes < 2 and text[start - 1] in "\\\"'":
                start, quotes = start - 1, quotes + 1
            head = _KEY_HEAD.match(text, start)
            if head is None or not self.is_sensitive_key(head.group("key")):
                continue
            value = _VALUE.match(text, head.end())
            if value is None:
                continue
            end = value.end()
            if (head.group("sep") == ":" and _QUOTE_OPEN.match(value.group()) is None
                    and head.group("key").lower().endswith(_HEADER_KEYS)):
                end = _LINE_END.match(text, end).end()  # type: ignore[union-attr]
                masked = MASK
            else:
                masked = _mask_literal(value.group())
            parts += (text[done:head.end()], masked)
            done = end
        return "".join(parts) + text[done:] if parts else text

    # --- SQL ---------------------------------------------------------------------------------------

    def scrub_sql(self, sql: str | bytes, *, ansi_quotes: bool = False) -> str:
        """See :func:`scrub_sql`; always scrubs, whatever ``enabled`` says. Statements up to
        ``SQL_MEMO_MAX_CHARS`` go through a memo of ``MEMO_SIZE`` entries: an app runs the same
        few hundred statements over and over, and both the exporter and the record writer scrub
        every one (a multi-megabyte bulk INSERT is scrubbed without being kept)."""
        if isinstance(sql, str) and len(sql) <= SQL_MEMO_MAX_CHARS:
            return self._scrub_sql_memo(sql, ansi_quotes)
        return scrub_sql(sql, ansi_quotes=ansi_quotes)

    def sql_fingerprint(self, sql: str | bytes, *, ansi_quotes: bool = False) -> str:
        """See :func:`sql_fingerprint`."""
        return sql_fingerprint(sql, ansi_quotes=ansi_quotes)

    def sql_operation_and_table(self, sql: str | bytes) -> tuple[str, str | None]:
        """See :func:`sql_operation_and_table`."""
        return sql_operation_and_table(sql)


# --- SQL -------------------------------------------------------------------------------------------
# Every repetition below either has disjoint alternatives or can always end successfully (closing
# delimiter *or* end of input), so a statement is scanned once: linear time, even when truncated.

_SQL_LITERAL_PATTERN = r"""
      (?P<comment>/\*.*?(?:\*/|\Z) | --[^\n]* | \#[^\n]*)
      # Backquoted names and the harmless text after them, as one match: Django quotes every name,
      # so this saves a Python callback per name. The run stops where a literal or comment may start.
    | (?P<ident>(?:`[^`]*(?:``[^`]*)*(?:`|\Z) (?:[^`'"\#/\-0-9.]|\.(?![0-9]))*)+)
    DOUBLE_QUOTED
    | (?P<string>
          (?:(?<![\w$])(?:[xXbBnN]|_[A-Za-z0-9]+))?'[^'\\]*(?:(?:\\.?|'')[^'\\]*)*(?:'|\Z)
        DOUBLE_QUOTED_STRING)
    | (?P<number>(?<![\w$.:@`"])(?P<sign>-\s{0,16})?
          (?:0[xX][0-9a-fA-F]+ | 0[bB][01]+ | (?:[0-9]+(?:\.[0-9]*)? | \.[0-9]+)(?:[eE][+-]?[0-9]+)?)
          (?![\w$`"]))
    """
# MySQL (default sql_mode): "..." is a string. ANSI SQL, SQLite, PostgreSQL: "..." is a name.
_SQL_LITERALS = re.compile(
    _SQL_LITERAL_PATTERN.replace("DOUBLE_QUOTED_STRING", '| "[^"\\\\]*(?:(?:\\\\.?|"")[^"\\\\]*)*(?:"|\\Z)')
    .replace("DOUBLE_QUOTED", ""),
    re.VERBOSE | re.DOTALL,
)
_SQL_LITERALS_ANSI = re.compile(
    _SQL_LITERAL_PATTERN.replace("DOUBLE_QUOTED_STRING", "")
    .replace("DOUBLE_QUOTED", '| (?P<qident>"[^"]*(?:""[^"]*)*(?:"|\\Z))'),
    re.VERBOSE | re.DOTALL,
)
#: ``db.system`` values whose SQL uses backquotes for names and "..." for strings.
_MYSQL_SYSTEMS = frozenset({"mysql", "mariadb"})


def ansi_quotes_for(db_system: object) -> bool:
    """Whether ``"..."`` is an identifier in the SQL of this ``db.system`` (everything but MySQL)."""
    return isinstance(db_system, str) and bool(db_system) and db_system.lower() not in _MYSQL_SYSTEMS


_PLACEHOLDER = r"(?:\?|%s|%\([^()]{1,64}\)s|:\w+)"
# Starts at the literal "(" (fast to find); _collapse_in_list checks that IN precedes it.
_PLACEHOLDER_LIST = re.compile(rf"\(\s*({_PLACEHOLDER})(?:\s*,\s*{_PLACEHOLDER})+\s*\)")
_ENDS_WITH_IN = re.compile(r"(?<![\w$`])[Ii][Nn]\s*\Z")
# After these a "-" is a sign ("LIMIT -1", "WHEN -5"), after any other word it is a subtraction.
_SIGN_KEYWORDS = frozenset({
    "AND", "BETWEEN", "BY", "CASE", "DEFAULT", "ELSE", "HAVING", "IN", "INTERVAL", "IS", "LIKE", "LIMIT",
    "NOT", "OFFSET", "ON", "OR", "REGEXP", "RETURN", "SELECT", "SET", "THEN", "VALUES", "WHEN", "WHERE",
})
_SQL_OPERATOR_CHARS = frozenset("=<>!(,+-*/%^&|~")


def _is_binary_minus(sql: str, pos: int) -> bool:
    i = pos - 1
    while i >= 0 and sql[i].isspace():
        i -= 1
    if i < 0 or sql[i] in _SQL_OPERATOR_CHARS:
        return False
    if sql[i].isalpha() or sql[i] == "_":
        end = i + 1
        while i >= 0 and end - i <= 16 and (sql[i].isalnum() or sql[i] == "_"):
            i -= 1
        return sql[i + 1:end].upper() not in _SIGN_KEYWORDS
    return True  # after a value: ")", a digit, a quote or a placeholder


def _replace_sql_literal(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "ident" or kind == "qident":
        return match.group()
    if kind == "comment":
        return " "
    sign = match.group("sign")
    if sign and _is_binary_minus(match.string, match.start()):
        return sign + "?"
    return "?"


def _collapse_in_list(match: re.Match[str]) -> str:
    if _ENDS_WITH_IN.search(match.string, max(0, match.start() - 24), match.start()):
        return f"({match.group(1)})"
    return match.group()


def _as_text(sql: str | bytes) -> str:
    return sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray)) else str(sql)


def scrub_sql(sql: str | bytes, *, ansi_quotes: bool = False) -> str:
    """``sql`` with every literal replaced by ``?`` and comments removed.

    Replaced: quoted strings (``''`` and backslash escapes, ``X'..'``/``_utf8mb4'..'`` forms, MySQL's
    double-quoted strings), integers, decimals, ``1e-3``, ``0x1F``, ``0b101``, including a leading
    sign (``= -5`` -> ``= ?``, but ``a - 5`` -> ``a - ?``). Kept: identifiers (``table1``,
    ``t2.col3``, `` `order_2024` ``), placeholders (``%s``, ``%(name)s``, ``?``, ``:name``), ``@vars``.
    ``/* */``, ``--`` and ``#`` comments are removed (sqlcommenter's ``traceparent`` included). Lists
    of placeholders ``IN (?, ?, ?)`` collapse to ``IN (?)`` so that queries differing only in list
    length group together. Input beyond ``MAX_SQL_LENGTH`` characters is dropped, marked with
    ``…[truncated]``. Assumes MySQL's default quoting (backslash escapes on, ANSI_QUOTES off) unless
    ``ansi_quotes`` (SQLite, PostgreSQL: see ``ansi_quotes_for``) makes ``"..."`` an identifier.
    """
    text = _as_text(sql)
    cut = len(text) > MAX_SQL_LENGTH
    if cut:
        text = text[:MAX_SQL_LENGTH]
    text = (_SQL_LITERALS_ANSI if ansi_quotes else _SQL_LITERALS).sub(_replace_sql_literal, text)
    if "," in text:
        text = _PLACEHOLDER_LIST.sub(_collapse_in_list, text)
    text = text.strip()
    return f"{text} {TRUNCATION_MARKER}" if cut else text


def sql_fingerprint(sql: str | bytes, *, ansi_quotes: bool = False) -> str:
    """The scrubbed statement with whitespace collapsed: equal for queries of the same shape.

    Used to group repeated queries (N+1 detection). Case is kept: table names can be case-sensitive.
    """
    return " ".join(scrub_sql(sql, ansi_quotes=ansi_quotes).split()).rstrip(";").rstrip()


_NAME_PART = r"""(?:`[^`]*(?:``[^`]*)*`|"[^"\\]*"|\[[^\]]*\]|[\w$]+)"""
_NAME_PART_RE = re.compile(_NAME_PART)
_QUALIFIED_NAME = re.compile(rf"{_NAME_PART}(?:\s*\.\s*{_NAME_PART}){{0,2}}")
# One piece per match, looped in Python: a regex "(?:\s+|--.*)*" can backtrack exponentially.
_GAP_PIECE = re.compile(r"\s+|/\*.*?(?:\*/|\Z)|--[^\n]*|\#[^\n]*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]\w*")
# Structure scan: quoted things are matched only to be stepped over.
_SQL_STRUCTURE = re.compile(
    r"""
      (?P<skip>/\*.*?(?:\*/|\Z) | --[^\n]* | \#[^\n]*
        | '[^'\\]*(?:(?:\\.?|'')[^'\\]*)*(?:'|\Z)
        | "[^"\\]*(?:(?:\\.?|"")[^"\\]*)*(?:"|\Z)
        | `[^`]*(?:``[^`]*)*(?:`|\Z))
    | (?P<open>\() | (?P<close>\))
    | (?P<from>(?<![\w$])(?i:from)(?![\w$]))
    """,
    re.VERBOSE | re.DOTALL,
)
_MODIFIERS = frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "QUICK", "INTO"})
_NOT_TABLES = frozenset({"DUAL", "LATERAL", "SELECT", "WITH"})


def _skip_gap(sql: str, pos: int) -> int:
    """Position of the first character at or after ``pos`` that is not whitespace or a comment."""
    while True:
        match = _GAP_PIECE.match(sql, pos)
        if match is None or match.end() == pos:
            return pos
        pos = match.end()


def _unquote(part: str) -> str:
    if part[:1] == "`":
        return part[1:-1].replace("``", "`")
    if part[:1] in ('"', "["):
        return part[1:-1]
    return part


def _read_name(sql: str, pos: int) -> str | None:
    match = _QUALIFIED_NAME.match(sql, _skip_gap(sql, pos))
    if match is None:
        return None
    name = ".".join(_unquote(part) for part in _NAME_PART_RE.findall(match.group()))
    return None if not name or name.upper() in _NOT_TABLES else name[:190]


def _next_word(sql: str, pos: int) -> tuple[str, int]:
    pos = _skip_gap(sql, pos)
    match = _WORD.match(sql, pos)
    return (match.group().upper(), match.end()) if match else ("", pos)


def _find_from(sql: str, pos: int, depth: int) -> str | None:
    """Table after the first ``FROM`` at ``depth`` (or inside a derived table), before the level ends."""
    level = depth
    derived = False
    for match in _SQL_STRUCTURE.finditer(sql, pos):
        kind = match.lastgroup
        if kind == "open":
            level += 1
        elif kind == "close":
            level -= 1
            if level < depth:
                return None
        elif kind == "from" and (derived or level == depth):
            name = _read_name(sql, match.end())
            if name is not None:
                return name
            derived = True  # FROM (SELECT ...): the first table inside stands for it
    return None


def _skip_group(sql: str, pos: int) -> int:
    """Position after the parenthesised group starting at ``pos``, or ``pos`` when there is none."""
    pos = _skip_gap(sql, pos)
    if not sql.startswith("(", pos):
        return pos
    level = 0
    for match in _SQL_STRUCTURE.finditer(sql, pos):
        if match.lastgroup == "open":
            level += 1
        elif match.lastgroup == "close":
            level -= 1
            if level == 0:
                return match.end()
    return len(sql)


def _skip_ctes(sql: str, pos: int) -> tuple[str, int, dict[str, int]]:
    """After ``WITH``: the main statement's keyword and position, and where each CTE body starts."""
    bodies: dict[str, int] = {}
    name, pos = _next_word(sql, pos)
    if name == "RECURSIVE":
        name, pos = _next_word(sql, pos)
    while name:
        pos = _skip_group(sql, pos)  # optional column list
        word, pos = _next_word(sql, pos)
        if word != "AS":
            return "SELECT", pos, bodies
        body = _skip_gap(sql, pos)
        bodies[name] = body + 1
        pos = _skip_gap(sql, _skip_group(sql, body))
        if not sql.startswith(",", pos):
            break
        name, pos = _next_word(sql, pos + 1)
    keyword, pos = _next_word(sql, pos)
    return keyword or "SELECT", pos, bodies


def sql_operation_and_table(sql: str | bytes) -> tuple[str, str | None]:
    """``("SELECT", "shop_product")``-style summary: first keyword upper-cased and the main table.

    The table is the one after ``INSERT [INTO]``/``REPLACE``/``UPDATE``, or after the outermost
    ``FROM`` for ``SELECT``/``DELETE``, unquoted and schema-qualified as written (``shop.product``).
    Leading comments and parentheses are skipped; ``WITH`` reports the main statement (``SELECT``)
    and, when that reads a CTE, the first table inside the CTE. Anything else is ``(KEYWORD, None)``.
    """
    text = _as_text(sql)[:MAX_SQL_LENGTH]
    pos = _skip_gap(text, 0)
    depth = 0
    while text.startswith("(", pos):  # "(SELECT ...) UNION (SELECT ...)"
        depth += 1
        pos = _skip_gap(text, pos + 1)
    operation, pos = _next_word(text, pos)
    ctes: dict[str, int] = {}
    if operation == "WITH":
        operation, pos, ctes = _skip_ctes(text, pos)
    if operation in ("SELECT", "DELETE"):
        table = _find_from(text, pos, depth)
        if table is not None and table.upper() in ctes:
            table = _find_from(text, ctes[table.upper()], depth + 1) or table
        return operation, table
    if operation in ("INSERT", "REPLACE", "UPDATE"):
        word, after = _next_word(text, pos)
        while word in _MODIFIERS:
            pos = after
            word, after = _next_word(text, pos)
        return operation, _read_name(text, pos)
    return operation, None


@functools.cache
def default_sanitizer() -> Sanitizer:
    """The process-wide instance with default rules, for callers that have no configured one."""
    return Sanitizer()
