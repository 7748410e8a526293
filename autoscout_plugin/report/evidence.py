"""What the trials themselves show, apart from the cost model's opinion: best-so-far curves, the effect
of one knob measured by two trials that differ in it alone, the noise of repeated measurements, and how
far the predictions were from the measurements.

Example:
    >>> from autoscout_plugin.trial import Trial
    >>> r = TuneResult(best_config=None, baseline_config={"a": 1, "b": 1}, trials=[
    ...     Trial(config={"a": 1, "b": 1}, value=10.0, number=0),
    ...     Trial(config={"a": 2, "b": 1}, value=15.0, number=1),
    ...     Trial(config={"a": 2, "b": 2}, value=12.0, number=2)])
    >>> [(e.knob, e.before, e.after, round(e.ratio, 2)) for e in measured_effects(r)]
    [('a', 1, 2, 1.5), ('b', 1, 2, 0.8)]
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from ..trial import Fidelity
from .result import TuneResult
from .verdict import show


def best_so_far(result: TuneResult) -> tuple[list[float], list[float], list[float]]:
    """(trial numbers from 1, cumulative profiling seconds, best short-profile value so far) after each
    trial once one succeeded. Confirmation runs (F3) add their seconds but not their value: they re-measure
    configs already counted, in a paired design the verdict reads instead."""
    numbers, seconds, best = [], [], []
    spent, top = 0.0, None
    for i, trial in enumerate(result.trials, 1):
        spent += trial.cost_s
        if trial.ok and trial.value is not None and trial.fidelity != Fidelity.F3:
            top = trial.value if top is None else max(top, trial.value)
        if top is not None:
            numbers.append(float(i))
            seconds.append(spent)
            best.append(top)
    return numbers, seconds, best


@dataclass(frozen=True, slots=True)
class Effect:
    """Configs that differ in one knob only: the speed ratio of `after` over `before` (the geometric mean
    over every such pair of measured configs)."""

    knob: str
    before: Any
    after: Any
    ratio: float
    pairs: tuple[tuple[int, int], ...]
    """The trial numbers (first of each config) of every pair that measured it."""

    @property
    def label(self) -> str:
        many = f" ({len(self.pairs)} pairs)" if len(self.pairs) > 1 else ""
        return f"{self.knob}: {show(self.before)} → {show(self.after)}{many}"


def _means(result: TuneResult) -> list[tuple[dict[str, Any], float, int]]:
    """(config, mean short-profile value, first trial number) for every config that ran successfully."""
    groups: dict[str, tuple[dict[str, Any], list[float], int]] = {}
    for t in result.trials:
        if t.ok and t.value is not None and t.fidelity != Fidelity.F3:
            key = json.dumps(t.config, sort_keys=True, default=str)
            groups.setdefault(key, (t.config, [], t.number))[1].append(t.value)
    return [(config, statistics.fmean(values), number) for config, values, number in groups.values()]


def measured_effects(result: TuneResult, limit: int = 12) -> list[Effect]:
    """The effect of changing one knob from one value to another, from every pair of successful configs
    that differ in that knob alone (pairs with the same change in other contexts are pooled), largest
    first, at most `limit`. The direction is from the user's value where one side has it, else from the
    config measured first."""
    yours = result.baseline_config or {}
    means = _means(result)
    pooled: dict[str, tuple[str, Any, Any, list[float], list[tuple[int, int]]]] = {}
    for i, (a, va, na) in enumerate(means):
        for b, vb, nb in means[i + 1:]:
            if set(a) != set(b):
                continue
            diff = [k for k in a if a[k] != b[k]]
            if len(diff) != 1:
                continue
            knob = diff[0]
            if b.get(knob) == yours.get(knob) and a.get(knob) != yours.get(knob):
                a, va, na, b, vb, nb = b, vb, nb, a, va, na
            key = json.dumps([knob, a[knob], b[knob]], default=str)
            back = json.dumps([knob, b[knob], a[knob]], default=str)
            if back in pooled:  # the same change seen the other way round
                key, a, va, na, b, vb, nb = back, b, vb, nb, a, va, na
            entry = pooled.setdefault(key, (knob, a[knob], b[knob], [], []))
            entry[3].append(math.log(vb / va))
            entry[4].append((na, nb))
    out = [Effect(knob, before, after, math.exp(statistics.fmean(logs)), tuple(pairs))
           for knob, before, after, logs, pairs in pooled.values()]
    out.sort(key=lambda e: -abs(math.log(e.ratio)))
    return out[:limit]


def noise(result: TuneResult) -> float | None:
    """The relative scatter seen between measurements that should agree: the user's config measured more
    than once (largest deviation from its mean), and the paired rounds of the confirmation (largest
    deviation of a round's ratio from their mean). None when nothing was measured twice."""
    spreads = []
    if result.baseline_config is not None:
        values = [t.value for t in result.trials if t.ok and t.value and t.config == result.baseline_config]
        if len(values) >= 2:
            mean = statistics.fmean(values)
            spreads.append(max(abs(v / mean - 1.0) for v in values))
    for pair in result.paired:
        if len(pair.ratios) >= 2:
            spreads.append(max(abs(r / pair.ratio - 1.0) for r in pair.ratios))
    return max(spreads) if spreads else None


def prediction_error(result: TuneResult) -> tuple[float | None, int]:
    """(median |predicted / measured - 1|, how many trials had both) over the successful trials."""
    errors = [abs(t.predicted / t.value - 1.0) for t in result.trials
              if t.ok and t.value and t.predicted is not None and t.predicted > 0]
    return (statistics.median(errors) if errors else None), len(errors)


def varied_knobs(result: TuneResult) -> set[str]:
    """The knobs that took more than one value among the trials (a knob absent from some configs, such as
    a DDP bucket size beside single-process trials, counts as varied)."""
    knobs = {k for t in result.trials for k in t.config}
    return {k for k in knobs
            if len({json.dumps(t.config.get(k, "\0absent"), default=str) for t in result.trials}) > 1}


__all__ = ["Effect", "best_so_far", "measured_effects", "noise", "prediction_error", "varied_knobs"]
