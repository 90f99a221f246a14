"""Route templates: the one readable form of a URL route in workflow types, components, labels and rules.

opentelemetry-instrumentation-django records ``ResolverMatch.route`` as ``http.route``: the pattern
strings of the nested includes joined, so ``re_path`` and DRF router routes arrive as regexes
(``api/articles/(?P<slug>[^/.]+)$``, ``^(?P<path>.*)$``). :func:`route_template` turns them into
``/api/articles/{slug}``. It is a pure function of the URLconf pattern (never of a request path), so
the set of templates is as bounded as the URLconf; it is total (any string gives a string, nothing
raises), linear in its input, cut to ``MAX_INPUT`` characters in and ``MAX_TEMPLATE`` out.

``path()`` routes are already templates and keep Django's own syntax (``items/<int:pk>/``): only
regex syntax is rewritten, and a ``.`` without a quantifier stays a literal dot, so a joined route
mixing both (``api/<str:tenant>/`` + a router regex) converts only its regex part. Hand-written rather
than ``sre_parse``: that module is private, its output depends on the Python version, and it raises on
the malformed patterns a total function must still accept. Runs on whichever thread asks (derive
thread, request thread through the cached ignore filter, CLI); no state, no locks.
"""

from __future__ import annotations

import functools
import re

__all__ = ["DEFAULT_IGNORE_PATHS", "HTTP_METHODS", "MAX_TEMPLATE", "check_pattern", "looks_like_regex",
           "method_key", "normalise_rule", "route_template", "split_pattern"]

MAX_INPUT = 2048
MAX_TEMPLATE = 512
MAX_NESTING = 8
#: The placeholder of a wildcard that is not a group (``.*``, ``[0-9]+``, ``\\d+``): no name to show.
WILDCARD = "*"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_COUNTED = re.compile(r"\{\d*(?:,\d*)?\}")
_QUANTIFIERS = frozenset("?*+")
# \d \w \s \D \W \S \b \B \A \Z: classes (a wildcard) or zero-width (dropped); any other escaped
# character is itself (\. \- \/).
_CLASS_ESCAPES = frozenset("dwsDWS")
_ZERO_WIDTH_ESCAPES = frozenset("bBAZz")
# What tells a rule or route written as a regex from a glob or a path() route.
_REGEX_MARKERS = re.compile(r"\(\?|[()\\$]|^/?\^")


def looks_like_regex(route: str) -> bool:
    """Whether ``route`` uses regex syntax (groups, anchors, escapes) rather than glob/path() syntax."""
    return bool(_REGEX_MARKERS.search(route[:MAX_INPUT]))


def route_template(route: str) -> str:
    """``route`` (as ``http.route`` records it) written as a template with a leading ``/``.

    Named groups become ``{name}``, unnamed groups ``{arg1}``, ``{arg2}``… (the positional arguments
    Django passes), anchors and look-arounds vanish, an optional character (``/?``) is dropped, other
    wildcards (``.*``, ``[^/]+``, ``\\d+``) become ``*``, and escaped characters are themselves.

    >>> route_template("api/articles/(?P<slug>[^/.]+)$")
    '/api/articles/{slug}'
    >>> route_template("^(?P<path>.*)$")
    '/{path}'
    >>> route_template("items/<int:pk>/")
    '/items/<int:pk>/'
    """
    # Cut before the cache: browser spans can name any http.route, so keys stay bounded in size too.
    return _template(route[:MAX_INPUT])


@functools.lru_cache(maxsize=2048)
def _template(text: str) -> str:
    out, _ = _convert(text, 0, [0])
    template = "".join(out)
    if not template.startswith("/"):
        template = "/" + template
    return template[:MAX_TEMPLATE]


def _convert(text: str, start: int, unnamed: list[int], *, stop: str = "", depth: int = 0) -> tuple[list[str], int]:
    """Convert ``text[start:]`` up to an unmatched ``stop`` character; ``(pieces, index after it)``.

    ``unnamed`` is a one-item counter shared by the nested calls. Every step consumes at least one
    character and groups are skipped in one pass, so the work is linear in ``len(text)``.
    """
    out: list[str] = []
    i, n = start, len(text)
    while i < n:
        char = text[i]
        if stop and char == stop:
            return out, i + 1
        if char in "^$":
            i += 1
            continue
        if char == "(":
            piece, i = _group(text, i, unnamed, depth)
            i, drop = _quantified(text, i)
            if piece and not drop:
                out.append(piece)
            continue
        if char == "[":
            i = _skip_class(text, i)
            i, _ = _quantified(text, i)
            out.append(WILDCARD)
            continue
        if char == "\\":
            escaped = text[i + 1] if i + 1 < n else ""
            i += 2
            if escaped in _ZERO_WIDTH_ESCAPES:
                continue
            if escaped in _CLASS_ESCAPES:
                i, _ = _quantified(text, i)
                out.append(WILDCARD)
                continue
            literal = escaped
        elif char == "." and i + 1 < n and (text[i + 1] in _QUANTIFIERS or _COUNTED.match(text, i + 1)):
            i, _ = _quantified(text, i + 1)
            out.append(WILDCARD)
            continue
        else:
            literal = char
            i += 1
        # A literal: `x?` and `x*` make it optional (dropped), `x+` / `x{2}` keep it once.
        i, drop = _quantified(text, i)
        if literal and not drop:
            out.append(literal)
    return out, i


def _quantified(text: str, i: int) -> tuple[int, bool]:
    """Skip a quantifier at ``text[i]`` (and its lazy/possessive mark); ``(index, optional?)``."""
    if i >= len(text):
        return i, False
    optional = False
    if text[i] in _QUANTIFIERS:
        optional = text[i] != "+"
        i += 1
    else:
        counted = _COUNTED.match(text, i)
        if counted is None:
            return i, False
        optional = counted.group().startswith(("{0", "{,"))
        i = counted.end()
    if i < len(text) and text[i] in "?+":
        i += 1
    return i, optional


def _skip_class(text: str, i: int) -> int:
    """The index after the character class opening at ``text[i]`` (``]`` right after ``[`` or
    ``[^`` is a member); an unclosed class runs to the end."""
    n = len(text)
    i += 1
    if i < n and text[i] == "^":
        i += 1
    if i < n and text[i] == "]":
        i += 1
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "]":
            return i + 1
        i += 1
    return n


def _skip_group(text: str, i: int) -> int:
    """The index after the group whose content starts at ``text[i]``; an unclosed group runs to the end."""
    depth, n = 1, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _skip_class(text, i)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _group(text: str, i: int, unnamed: list[int], depth: int) -> tuple[str, int]:
    """The placeholder for the group opening at ``text[i]`` and the index after it. Non-capturing
    groups nested deeper than ``MAX_NESTING`` become one wildcard (recursion stays bounded)."""
    body = i + 1
    if text.startswith("?P<", body) or (text.startswith("?<", body) and not text.startswith(("?<=", "?<!"), body)):
        name_start = body + (3 if text[body + 1] == "P" else 2)
        close = text.find(">", name_start, name_start + 66)
        end = _skip_group(text, close + 1 if close != -1 else name_start)
        name = text[name_start:close] if close != -1 else ""
        if _NAME.fullmatch(name):
            return "{" + name + "}", end
        unnamed[0] += 1
        return f"{{arg{unnamed[0]}}}", end
    if text.startswith("?:", body):
        if depth >= MAX_NESTING:
            return WILDCARD, _skip_group(text, body)
        inner, end = _convert(text, body + 2, unnamed, stop=")", depth=depth + 1)
        joined = "".join(inner)
        return (WILDCARD if "|" in joined else joined), end
    if text.startswith("?", body):  # look-around, comment, flags, conditional: no characters of its own
        return "", _skip_group(text, body)
    unnamed[0] += 1
    return f"{{arg{unnamed[0]}}}", _skip_group(text, body)


def normalise_rule(pattern: str) -> str:
    """A ``"METHOD /route"`` rule written against regex routes (the old ``http.route`` form) in
    template form, so it matches the keys records carry now; glob rules are returned unchanged.

    >>> normalise_rule("GET /api/articles/(?P<slug>[^/.]+)$")
    'GET /api/articles/{slug}'
    >>> normalise_rule("POST /api/v1/checkout/*")
    'POST /api/v1/checkout/*'
    """
    method, sep, route = pattern.partition(" ")
    if not sep:
        method, route = "", pattern
    if not looks_like_regex(route):
        return pattern
    template = route_template(route.removeprefix("/"))
    return f"{method} {template}" if sep else template


# --- "METHOD /route" keys and IGNORE_PATHS pattern syntax (traffic.py applies it, conf.py validates) ---

#: Methods kept as themselves in cache keys and labels; anything else is ``_OTHER`` (as upstream names it).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def method_key(method: object) -> str:
    """``method`` or ``_OTHER``: a client picks the method string, so it never grows a cache or a label."""
    return method if isinstance(method, str) and method in HTTP_METHODS else "_OTHER"


#: The ``IGNORE_PATHS`` default. ``{admin}`` is the URL prefix of every admin site of the URLconf
#: (found by reversing ``<namespace>:index``, so an admin mounted at ``/staff/`` is found);
#: ``{static}``/``{media}`` are the path of ``STATIC_URL``/``MEDIA_URL``.
DEFAULT_IGNORE_PATHS: tuple[str, ...] = ("{admin}*", "{static}*", "{media}*", "/favicon.ico", "/robots.txt")
PLACEHOLDERS = ("{admin}", "{static}", "{media}")


def split_pattern(pattern: str) -> tuple[str, str]:
    """``("METHOD", "/route")`` of ``"METHOD /route"``; ``("*", pattern)`` when it starts with the route."""
    if pattern.startswith(("/", "{")):
        return "*", pattern
    method, _, route = pattern.partition(" ")
    return method, route.strip()


def check_pattern(pattern: str) -> None:
    """``ValueError`` unless ``pattern`` is ``[METHOD ]/route-glob`` or starts with a placeholder
    (``{name}`` further on is template text: ``GET /api/articles/{slug}``)."""
    method, route = split_pattern(pattern)
    if not method or not (route.startswith("/") or route.startswith(PLACEHOLDERS)):
        raise ValueError(f'expected "/path/glob*", "METHOD /path/glob*" or "{{admin}}*", got {pattern!r}')
