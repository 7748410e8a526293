"""Step timing: warm-up steps are discarded, timed steps give the throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StepTimer:
    """Times optimizer steps after `warmup` steps; `sync` (e.g. a device synchronise) runs at each mark.

    Example:
        >>> t = StepTimer(warmup=1, samples_per_step=8)
        >>> for _ in range(4):
        ...     t.start(); t.stop()
        >>> t.timed_steps
        3
    """

    warmup: int = 2
    samples_per_step: int = 1
    sync: Callable[[], None] | None = None
    durations_s: list[float] = field(default_factory=list)
    _t0: float | None = None
    _seen: int = 0

    def start(self) -> None:
        if self.sync:
            self.sync()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is None:
            raise RuntimeError("StepTimer.stop() called before start()")
        if self.sync:
            self.sync()
        elapsed = time.perf_counter() - self._t0
        self._t0 = None
        self._seen += 1
        if self._seen > self.warmup:
            self.durations_s.append(elapsed)

    @property
    def timed_steps(self) -> int:
        return len(self.durations_s)

    @property
    def samples_per_s(self) -> float | None:
        total = sum(self.durations_s)
        return self.samples_per_step * len(self.durations_s) / total if total > 0 else None

    @property
    def median_step_s(self) -> float | None:
        return statistics.median(self.durations_s) if self.durations_s else None
