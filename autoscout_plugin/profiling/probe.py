"""The one step probe every trial uses (Lightning, Hugging Face, a custom loop under the launcher):
it times the optimizer steps after `warmup`, at least `measure` of them and, with a `precision`, on
until the speed is known well enough to decide (up to `max_measure`), and cuts short a trial that is
clearly losing. Framework-free: the adapter feeds it one call per optimizer step with the samples this
process handled and a clock reading taken after the device finished the step's work."""

from __future__ import annotations

import math
from collections.abc import Callable

from .outcome import TrialOutcome

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, two-sided 95%, for 1 .. 30 degrees of freedom (1.96 beyond)."""


def interval(values: list[float]) -> tuple[float, float]:
    """The mean of `values` and the half-width of its 95% confidence interval (Student's t; inf for one value).

    Example:
        >>> mean, half = interval([1.0, 1.1, 0.9, 1.0])
        >>> round(mean, 3), round(half, 3)
        (1.0, 0.13)
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)


def most_timed_steps(measure: int, max_measure: int | None, precision: float | None) -> int:
    """The most steps a trial times: `max_measure` (at least `measure`) with a `precision`, else `measure`.

    Example:
        >>> most_timed_steps(4, 12, 0.05), most_timed_steps(4, 12, None), most_timed_steps(4, None, 0.05)
        (12, 4, 4)
    """
    return max(int(max_measure), int(measure)) if precision and max_measure else int(measure)


class StepProbe:
    """Samples/s over the timed steps, over all `world` processes (each rank's count x `world`).

    With a `cut_off` (samples/s), a trial that is clearly losing is cut short: after a timed step when
    its speed so far is under the cut-off, or during warm-up (unless `compiling`, whose first steps
    compile) when one step runs at under a third of it. It is recorded with the speed it showed,
    marked `cut_short`.

    With a `precision`, timing goes on after `measure` steps until the 95% confidence interval of the
    seconds per sample (over the timed steps) is within +-`precision` of its mean, or lies wholly above
    or below `best` (the best speed so far: the trial is then known to lose or to win), or `max_measure`
    steps were timed. The outcome's metrics say how many steps were timed (`timed_steps`) and how wide
    the interval came out (`spread`, its half-width over the mean).

    Example:
        >>> probe = StepProbe(warmup=1, measure=2)
        >>> probe.begin(0.0)
        >>> probe.step(8, now=1.0), probe.step(8, now=2.0)
        (None, None)
        >>> probe.step(8, now=3.0).value   # 16 samples in the 2 s after the warm-up step
        8.0
    """

    def __init__(self, warmup: int, measure: int, *, max_measure: int | None = None, precision: float | None = None,
                 best: float | None = None, cut_off: float | None = None, compiling: bool = False,
                 world: int = 1, memory: Callable[[], float] | None = None) -> None:
        self.warmup, self.measure, self.world = int(warmup), int(measure), int(world)
        self.max_measure = most_timed_steps(self.measure, max_measure, precision)
        self.precision, self.best = precision, best
        self.cut_off, self.compiling, self.memory = cut_off, compiling, memory
        self.per_sample: list[float] = []
        """Seconds per sample (of this process) of each timed step."""
        self.steps = 0
        self.samples = 0.0
        self.start: tuple[float, float] | None = None
        self.outcome: TrialOutcome | None = None
        self._last: tuple[float, float] | None = None
        self.last_rate = 0.0
        """Samples/s of the latest step."""

    def begin(self, now: float) -> None:
        """The clock reading before the first step (the trial's training starts)."""
        self._last = (now, self.samples)
        if self.warmup == 0:
            self.start = self._last

    def step(self, samples: float, now: float) -> TrialOutcome | None:
        """Count one optimizer step of `samples` (this process's); the trial's outcome once decided."""
        if self.outcome is not None:
            return self.outcome
        self.steps += 1
        self.samples += samples
        last, self._last = self._last, (now, self.samples)
        if last is not None:
            self.last_rate = (self.samples - last[1]) / max(now - last[0], 1e-9) * self.world
            if self.steps > self.warmup and samples > 0:
                self.per_sample.append(max(now - last[0], 1e-9) / samples)
        if self.steps <= self.warmup and self.cut_off and not self.compiling and last is not None:
            if self.last_rate < self.cut_off / 3:
                return self.finish(TrialOutcome(value=self.last_rate, metrics={"cut_short": 1.0}))
        if self.steps == self.warmup:
            self.start = (now, self.samples)
        elif self.start is not None:
            timed = self.timed(now)
            done = self.decided()
            if done or (self.cut_off and (timed.value or 0.0) < self.cut_off):
                if not done:
                    timed.metrics["cut_short"] = 1.0
                return self.finish(timed)
        return None

    @property
    def enough(self) -> bool:
        """Whether the least number of steps a trial times (`measure`) have been timed."""
        return self.steps >= self.warmup + self.measure

    def decided(self) -> bool:
        """Whether timing can stop: `max_measure` steps timed, or at least `measure` and the speed known
        well enough (within `precision`, or clearly above or below `best`)."""
        timed = self.steps - self.warmup
        if timed >= self.max_measure:
            return True
        if not self.enough or not self.precision or len(self.per_sample) < 2:
            return False
        mean, half = interval(self.per_sample)
        if half <= self.precision * mean:
            return True
        if self.best:  # samples/s = world / (seconds per sample of one process)
            slowest, fastest = self.world / (mean + half), self.world / max(mean - half, 1e-12)
            return fastest < self.best or slowest > self.best
        return False

    def timed(self, now: float) -> TrialOutcome:
        """Samples/s over the timed steps so far (the last step's rate while none is timed yet)."""
        if self.start is None or self.steps <= self.warmup:
            return TrialOutcome(value=self.last_rate, metrics={})
        seconds = max(now - self.start[0], 1e-9)
        metrics = {"step_s": seconds / (self.steps - self.warmup), "timed_steps": float(self.steps - self.warmup)}
        if len(self.per_sample) >= 2:
            mean, half = interval(self.per_sample)
            metrics["spread"] = half / mean
        return TrialOutcome(value=(self.samples - self.start[1]) / seconds * self.world, metrics=metrics)

    def ended(self) -> TrialOutcome | None:
        """The training ended before the trial was decided: its speed up to its last step once `measure`
        steps were timed (a trial that wanted more for its precision takes what it has), else None (the
        caller's error)."""
        if self.outcome is not None:
            return self.outcome
        if not self.enough or self.start is None or self._last is None:
            return None
        return self.finish(self.timed(self._last[0]))

    def nan(self, where: str) -> TrialOutcome:
        """End the trial as `nan` (a non-finite loss `where`)."""
        return self.finish(TrialOutcome(status="nan", error=f"non-finite loss {where}"))

    def finish(self, outcome: TrialOutcome) -> TrialOutcome:
        """Decide the trial: `outcome` (with the peak memory when it ran), checked."""
        if outcome.status == "ok" and self.memory is not None:
            outcome.peak_mem_mb = self.memory()
        self.outcome = outcome.checked()
        return self.outcome
