"""How many requests this process is serving right now.

e2e-otel's background threads (derive, record writer) share the interpreter lock with the request
threads. While a request is in flight they stand back (``pacing.Pacer.stand_back``) and do their
work in the gaps between requests. ``CorrelationMiddleware`` calls ``begin_request`` and
``end_request`` around every request; both are a single ``deque`` operation, atomic under the
GIL, so the request path takes no lock.
"""

from __future__ import annotations

from collections import deque

from . import forksafe

__all__ = ["begin_request", "end_request", "requests_in_flight"]

_in_flight: deque[None] = deque()


def begin_request() -> None:
    _in_flight.append(None)


def end_request() -> None:
    try:
        _in_flight.pop()
    except IndexError:  # started before a fork that reset the count
        return


def requests_in_flight() -> int:
    return len(_in_flight)


class _ForkReset:
    """The parent's requests are not in flight in a forked child."""

    def _after_fork_in_child(self) -> None:
        _in_flight.clear()


_fork_reset = _ForkReset()
forksafe.register(_fork_reset)
