"""The one step probe every trial uses (Lightning, Hugging Face, a custom loop under the launcher):
it times optimizer steps `warmup` .. `warmup + measure` and cuts short a trial that is clearly
losing. Framework-free: the adapter feeds it one call per optimizer step with the samples this
process handled and a clock reading taken after the device finished the step's work."""

from __future__ import annotations

from collections.abc import Callable

from .outcome import TrialOutcome


class StepProbe:
    """Samples/s over the timed steps, over all `world` processes (each rank's count x `world`).

    With a `cut_off` (samples/s), a trial that is clearly losing is cut short: after a timed step when
    its speed so far is under the cut-off, or during warm-up (unless `compiling`, whose first steps
    compile) when one step runs at under a third of it. It is recorded with the speed it showed,
    marked `cut_short`.

    Example:
        >>> probe = StepProbe(warmup=1, measure=2)
        >>> probe.begin(0.0)
        >>> probe.step(8, now=1.0), probe.step(8, now=2.0)
        (None, None)
        >>> probe.step(8, now=3.0).value   # 16 samples in the 2 s after the warm-up step
        8.0
    """

    def __init__(self, warmup: int, measure: int, *, cut_off: float | None = None, compiling: bool = False,
                 world: int = 1, memory: Callable[[], float] | None = None) -> None:
        self.warmup, self.measure, self.world = int(warmup), int(measure), int(world)
        self.cut_off, self.compiling, self.memory = cut_off, compiling, memory
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
        if self.steps <= self.warmup and self.cut_off and not self.compiling and last is not None:
            if self.last_rate < self.cut_off / 3:
                return self.finish(TrialOutcome(value=self.last_rate, metrics={"cut_short": 1.0}))
        if self.steps == self.warmup:
            self.start = (now, self.samples)
        elif self.start is not None:
            timed = self.timed(now)
            done = self.steps >= self.warmup + self.measure
            if done or (self.cut_off and (timed.value or 0.0) < self.cut_off):
                if not done:
                    timed.metrics["cut_short"] = 1.0
                return self.finish(timed)
        return None

    def timed(self, now: float) -> TrialOutcome:
        """Samples/s over the timed steps so far (the last step's rate while none is timed yet)."""
        if self.start is None or self.steps <= self.warmup:
            return TrialOutcome(value=self.last_rate, metrics={})
        seconds = max(now - self.start[0], 1e-9)
        return TrialOutcome(value=(self.samples - self.start[1]) / seconds * self.world,
                            metrics={"step_s": seconds / (self.steps - self.warmup)})

    def nan(self, where: str) -> TrialOutcome:
        """End the trial as `nan` (a non-finite loss `where`)."""
        return self.finish(TrialOutcome(status="nan", error=f"non-finite loss {where}"))

    def finish(self, outcome: TrialOutcome) -> TrialOutcome:
        """Decide the trial: `outcome` (with the peak memory when it ran), checked."""
        if outcome.status == "ok" and self.memory is not None:
            outcome.peak_mem_mb = self.memory()
        self.outcome = outcome.checked()
        return self.outcome
