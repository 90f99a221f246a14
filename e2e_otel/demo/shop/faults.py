"""Switchable faults, so the demo has something worth debugging.

``E2E_DEMO_FAULTS`` (``settings.DEMO_FAULTS``) is ``all``, ``none`` or a comma list of
``n_plus_one``, ``slow_checkout[=rate]``, ``payment_failure[=rate]``, ``invalid_payload``.

Rates are applied deterministically (an accumulator, not a random draw): with ``payment_failure=0.25``
exactly one payment in four fails, starting with the second, and with ``slow_checkout=0.34`` every
third checkout is slow, starting with the third, so a run of 12 workflows already shows each fault.
Runs on request threads; the counters are guarded by a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

FAULT_NAMES = ("n_plus_one", "slow_checkout", "payment_failure", "invalid_payload")
DEFAULT_RATES = {"slow_checkout": 0.34, "payment_failure": 0.25}
# Different phases, so that in a short run one checkout is slow and a different one is declined.
PHASES = {"slow_checkout": 0.0, "payment_failure": 0.5}
SLOW_CHECKOUT_SECONDS = 0.6


class RateSchedule:
    """Fires on a fixed fraction of calls: call n fires when floor(n*rate + phase) steps up."""

    def __init__(self, rate: float, phase: float = 0.5) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a fault rate must be between 0 and 1, got {rate!r}")
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"a schedule phase must be in [0, 1), got {phase!r}")
        self.rate = rate
        self.phase = phase
        self._calls = 0
        self._lock = threading.Lock()

    def fire(self) -> bool:
        with self._lock:
            self._calls += 1
            n = self._calls
        return int(n * self.rate + self.phase) > int((n - 1) * self.rate + self.phase)


@dataclass
class Faults:
    n_plus_one: bool = False
    invalid_payload: bool = False
    slow_checkout: RateSchedule | None = None
    payment_failure: RateSchedule | None = None
    enabled: tuple[str, ...] = field(default_factory=tuple)


def parse_faults(spec: str) -> Faults:
    """``"all"`` / ``"none"`` / ``"n_plus_one,payment_failure=0.5"`` → :class:`Faults`."""
    text = (spec or "").strip().lower()
    if text in ("", "none", "off"):
        return Faults()
    items = [f"{name}" for name in FAULT_NAMES] if text == "all" else [i.strip() for i in text.split(",") if i.strip()]
    faults = Faults()
    enabled: list[str] = []
    for item in items:
        name, _, raw_rate = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULT_NAMES)}, all, none")
        if name in DEFAULT_RATES:
            rate = float(raw_rate) if raw_rate else DEFAULT_RATES[name]
            setattr(faults, name, RateSchedule(rate, PHASES[name]))
            enabled.append(f"{name}={rate:g}")
        else:
            if raw_rate:
                raise ValueError(f"fault {name!r} takes no rate")
            setattr(faults, name, True)
            enabled.append(name)
    faults.enabled = tuple(enabled)
    return faults


@lru_cache(maxsize=1)
def get_faults() -> Faults:
    from django.conf import settings

    return parse_faults(getattr(settings, "DEMO_FAULTS", "none"))
