"""System memory and CPU sampling with psutil, as ratios 0..1 (the thresholds' base unit)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ResourceSample:
    memory_ratio: float
    cpu_ratio: float


class ResourceSampler:
    """Samples system-wide memory and CPU use. Runs on the threshold monitor's background thread.

    ``psutil.cpu_percent(interval=None)`` measures since the previous call, so the first sample only
    primes the counter; ``sample()`` therefore reports the CPU use since the previous ``sample()``.
    """

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)

    def sample(self) -> ResourceSample:
        memory = psutil.virtual_memory().percent / 100.0
        cpu = psutil.cpu_percent(interval=None) / 100.0
        return ResourceSample(memory_ratio=min(max(memory, 0.0), 1.0), cpu_ratio=min(max(cpu, 0.0), 1.0))
