"""Values quoted in database error messages, masked so the messages stay useful but carry no data.

MySQL, MariaDB and PostgreSQL echo the offending *value* in many errors — ``Duplicate entry
'a@b.c' for key 'email'``, ``DETAIL:  Key (email)=(a@b.c) already exists.``, ``invalid input syntax for
type integer: "4111…"`` — and those messages reach exception events, status descriptions, stack traces
and ErrorLog rows. :func:`mask_db_error_values` replaces each such value with ``?`` and keeps the
names (key, column, constraint, table), so ``Duplicate entry '?' for key 'email'`` still says what
went wrong. SQL quoted in a message (MySQL's ``near '…' at line 1``, PostgreSQL's ``LINE 1: …``)
goes through the SQL scrubber passed in, which keeps the statement's shape.

Pure functions, no Django import; called by :class:`e2e_otel.sanitize.Sanitizer` for every text it
scrubs (derive, writer and export threads). Every pattern opens with a literal and its repetitions
are bounded and stop at a line end, so a message is scanned in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["mask_db_error_values"]

_V = "?"
# A value may itself contain quotes (MySQL does not escape them), so a value runs, lazily and
# within one line, to the text that follows it in the server's message format.
_VALUE = r"[^\n]{0,1024}?"
# After a closing quote whose value is the message's last word: a space, the end, or punctuation.
_END = r"(?=\s|\Z|[\"'),.;])"
# PostgreSQL key columns, expression indexes included: "email", "lower((email)::text)".
_COLUMNS = r"(?:[^\n()]|\((?:[^\n()]|\([^\n()]{0,64}\)){0,64}\)){0,256}"

# (pattern, replacement) — group 1 and the last group are kept, the value between them is masked.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), rf"\g<1>{_V}\g<2>") for pattern in (
        # MySQL / MariaDB (ER_DUP_ENTRY, ER_TRUNCATED_WRONG_VALUE[_FOR_FIELD], ER_WRONG_VALUE_FOR_VAR…)
        rf"(Duplicate entry '){_VALUE}(' for key)",
        rf"((?:Truncated i|I)ncorrect [A-Za-z0-9_ ]{{1,40}} value: '){_VALUE}('{_END})",
        rf"(Illegal [A-Za-z]{{1,20}} '){_VALUE}(' value found)",
        rf"(can't be set to the value of '){_VALUE}('{_END})",
        # Django's check_constraints() (MySQL and SQLite backends)
        rf"(with primary key '){_VALUE}(' has an invalid foreign key)",
        rf"(contains a value '){_VALUE}(' that does not have a corresponding value)",
        # PostgreSQL DETAIL lines (unique, foreign key, exclusion, check / not-null)
        rf"([Kk]ey \({_COLUMNS}\)=\(){_VALUE}(\) (?:already exists|is not present|is still referenced"
        r"|conflicts with))",
        rf"(existing key \({_COLUMNS}\)=\(){_VALUE}(\)(?=\.?[ \t]*(?:\n|\Z)))",
        r"(Failing row contains \()[^\n]{0,4096}(\))",
        # PostgreSQL value errors: invalid input syntax/value, out-of-range, malformed literals, JSON
        rf"((?:invalid input (?:syntax|value) for [^\n:]{{1,80}}|malformed [a-z ]{{1,40}} literal"
        rf"|field value out of range|invalid value for [^\n:]{{1,80}}): \"){_VALUE}(\"{_END})",
        rf"((?<![\w\"])value \"){_VALUE}(\" is out of range)",
        rf"(Token \"){_VALUE}(\" is invalid)",
        # PostgreSQL CONTEXT of an extended-protocol statement: parameter $1 = '…' ('' escapes a quote)
        r"(parameter \$[0-9]{1,5} = ')(?:[^'\n]|''){0,1024}(')",
    )
)
# Cheap pre-check, one C-level scan: every rule's head contains one of these.
_TRIGGER = re.compile("|".join(map(re.escape, (
    "entry '", "value: '", "Illegal ", "value of '", "key '", "value '", "ey (", "row contains (", ': "',
    'value "', 'Token "', "parameter $", "near '", "LINE "))))

# SQL quoted by the server: MySQL's parse error and PostgreSQL's LINE n: context.
_MYSQL_NEAR = re.compile(r"(near ')([^\n]{0,2048})(' at line [0-9]{1,9})")
_PG_LINE = re.compile(r"(?m)^(LINE [0-9]{1,9}: )([^\n]{0,2048})")


def mask_db_error_values(text: str, scrub_sql: Callable[[str, bool], str]) -> str:
    """``text`` with the values quoted in database error messages replaced by ``?``.

    ``scrub_sql(sql, ansi_quotes)`` scrubs SQL quoted in the message (literals to ``?``). Text
    without any of the known message shapes is returned unchanged after one regex scan.
    """
    if _TRIGGER.search(text) is None:
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    if "near '" in text:
        text = _MYSQL_NEAR.sub(lambda m: m.group(1) + scrub_sql(m.group(2), False) + m.group(3), text)
    if "LINE " in text:
        text = _PG_LINE.sub(lambda m: m.group(1) + scrub_sql(m.group(2), True), text)
    return text
