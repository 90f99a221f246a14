"""W3C Baggage that treats the header as data: validated, bounded, and never written to the logs.

Why not the stock ``W3CBaggagePropagator``: it logs every malformed member *verbatim* (a 1.8 KB
header made 180 warning lines, NUL, ESC and CR bytes included, i.e. log injection), logs a whole
oversized header, reads only the first ``baggage`` field, and decodes values with ``unquote_plus``
(``+`` becomes a space, which W3C Baggage does not say). :class:`BaggagePropagator` follows the W3C
Baggage grammar (https://www.w3.org/TR/baggage/): ``key`` is an RFC 9110 token, ``value`` baggage
octets, percent-decoded as UTF-8; properties are checked and then ignored (the OTel Python API keeps
no baggage metadata). A member that does not parse, does not decode to UTF-8 or decodes to a control
character is dropped; so are members past 180 or 4096 bytes, and the whole header past 8192 bytes.
Drops are only *counted*, by reason, and at most one summary line per ``log_interval`` says how many
(never their bytes). Work per header is linear in its length, which is capped before parsing.

:func:`workflow_name_from_baggage` checks the ``e2e.workflow`` member before it becomes a workflow
type and a metric label.

Runs on the thread that extracts (a request thread): a few string operations per member and a lock
taken only to count drops.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from urllib.parse import quote, unquote

from opentelemetry import baggage as baggage_api
from opentelemetry.context import Context, get_current
from opentelemetry.propagators import textmap

__all__ = [
    "BAGGAGE_HEADER",
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "WORKFLOW_NAME_MAX_LENGTH",
    "BaggagePropagator",
    "workflow_name_from_baggage",
]

logger = logging.getLogger(__name__)

BAGGAGE_HEADER = "baggage"
MAX_HEADER_BYTES = 8192
MAX_MEMBERS = 180
MAX_MEMBER_BYTES = 4096
WORKFLOW_NAME_MAX_LENGTH = 100

#: Drop reasons (a fixed set, usable as metric label values).
INVALID = "invalid"  # grammar, percent-encoding, UTF-8 or control characters
OVER_LIMIT = "over_limit"  # past MAX_MEMBERS / MAX_MEMBER_BYTES, or the whole header past MAX_HEADER_BYTES

_OWS = " \t"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# C0, DEL and C1 controls: a decoded value carrying them would be log or header injection downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Percent-encoded on inject: everything outside baggage-octet, plus "%" itself and "+" (peers using
# the stock propagator decode "+" as a space).
_SAFE = "!#$&'()*/:<=>?@[]^`{|}"
_WORKFLOW_NAME = re.compile(rf"[A-Za-z0-9 _.:/-]{{1,{WORKFLOW_NAME_MAX_LENGTH}}}")


def workflow_name_from_baggage(value: object) -> str | None:
    """``value`` as a workflow type, or ``None`` when it is not one.

    Accepted: 1-100 characters of ``A-Z a-z 0-9``, space and ``_ . : / -`` after trimming spaces, so
    no control character, markup or quote reaches the records, the API or a Prometheus label.
    """
    if not isinstance(value, str) or len(value) > WORKFLOW_NAME_MAX_LENGTH + 16:
        return None
    name = value.strip(" ")
    return name if _WORKFLOW_NAME.fullmatch(name) else None


def _parse_member(member: str) -> tuple[str, str] | None:
    """``(key, decoded value)`` of one stripped list-member, or ``None`` when it is invalid."""
    head, _, properties = member.partition(";")
    key, eq, value = head.partition("=")
    key, value = key.rstrip(_OWS), value.strip(_OWS)
    if not eq or _TOKEN.fullmatch(key) is None or _VALUE.fullmatch(value) is None:
        return None
    for prop in properties.split(";") if properties else ():
        prop_key, prop_eq, prop_value = prop.partition("=")
        if _TOKEN.fullmatch(prop_key.strip(_OWS)) is None or (
                prop_eq and _VALUE.fullmatch(prop_value.strip(_OWS)) is None):
            return None
    if "%" in value:
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            return None
        if _CONTROL.search(value):
            return None
    return key, value


class _DropLog:
    """Counts dropped members by reason and logs one summary line per interval, without content.

    Shared by request threads; the lock guards two integers and is released before logging.
    """

    def __init__(self, interval: float, on_drop: Callable[[str, int], None] | None) -> None:
        self.interval = interval
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {INVALID: 0, OVER_LIMIT: 0}
        self._pending = 0
        self._next_log = 0.0

    def add(self, reason: str, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.totals[reason] += count
            self._pending += count
            report = now >= self._next_log
            if report:
                pending, self._pending = self._pending, 0
                self._next_log = now + self.interval
        if self._on_drop is not None:
            self._on_drop(reason, count)
        if report:
            logger.warning("e2e-otel: dropped %d invalid or over-limit baggage members (contents not logged; "
                           "next summary in %.0fs at the earliest)", pending, self.interval)


class BaggagePropagator(textmap.TextMapPropagator):
    """Drop-in replacement for the stock ``W3CBaggagePropagator`` (see the module docstring).

    Extract merges the valid members into the context's baggage (later duplicates win, as in the
    stock propagator); inject writes the context's baggage percent-encoded, skipping entries whose
    key is not a token and entries past the limits (whole members only, as the spec requires).
    ``on_drop(reason, count)`` is called for every drop, e.g. to feed a counter; ``dropped`` holds the
    totals by reason.
    """

    def __init__(self, *, log_interval: float = 60.0,
                 on_drop: Callable[[str, int], None] | None = None) -> None:
        if log_interval <= 0:
            raise ValueError(f"log_interval must be positive, got {log_interval!r}")
        self._drops = _DropLog(log_interval, on_drop)

    @property
    def dropped(self) -> dict[str, int]:
        """Members dropped since construction, by reason (``invalid``, ``over_limit``)."""
        return dict(self._drops.totals)

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Return ``context`` (the current one when ``None``) with the header's valid members added."""
        if context is None:
            context = get_current()
        fields = getter.get(carrier, BAGGAGE_HEADER)
        if not fields:
            return context
        header = ",".join(field for field in fields if isinstance(field, str))
        if len(header) > MAX_HEADER_BYTES or (
                not header.isascii() and len(header.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES):
            self._drops.add(OVER_LIMIT, max(1, header.count(",") + 1))
            return context
        entries: dict[str, str] = {}
        invalid = over = members = 0
        for raw in header.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            members += 1
            if members > MAX_MEMBERS or len(member) > MAX_MEMBER_BYTES:
                over += 1
                continue
            parsed = _parse_member(member) if member.isascii() else None
            if parsed is None:
                invalid += 1
                continue
            entries[parsed[0]] = parsed[1]
        if invalid:
            self._drops.add(INVALID, invalid)
        if over:
            self._drops.add(OVER_LIMIT, over)
        for key, value in entries.items():
            context = baggage_api.set_baggage(key, value, context)
        return context

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write the context's baggage (the current one when ``None``) as one ``baggage`` field."""
        members: list[str] = []
        size = 0
        invalid = over = 0
        for key, value in baggage_api.get_all(context).items():
            if not isinstance(key, str) or _TOKEN.fullmatch(key) is None:
                invalid += 1
                continue
            member = f"{key}={quote(str(value), safe=_SAFE)}"
            added = len(member) + (1 if members else 0)
            if len(members) >= MAX_MEMBERS or len(member) > MAX_MEMBER_BYTES or size + added > MAX_HEADER_BYTES:
                over += 1
                continue
            members.append(member)
            size += added
        if invalid:
            self._drops.add(INVALID, invalid)
        if over:
            self._drops.add(OVER_LIMIT, over)
        if members:
            setter.set(carrier, BAGGAGE_HEADER, ",".join(members))

    @property
    def fields(self) -> set[str]:
        """The carrier keys ``inject`` may set."""
        return {BAGGAGE_HEADER}
