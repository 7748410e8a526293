"""Tuning that pays for itself: the job's end time, tuning included, as the objective (framework-free).

A trial is worth running when what it may find saves more of the main run than it costs. With the main
run's length known (N samples: planned steps x global batch) and the best speed measured so far v*, a
config whose log speed the search predicts as L ~ Normal(m, s) saves, in expectation,

    E[max(0, N / v* - N / e^L)] = N (Phi(z) / v* - e^(s^2/2 - m) Phi(z - s)),   z = (m - ln v*) / s

seconds of the main run; it costs its predicted seconds, plus, while nothing has beaten the user's own
config yet, the paired confirmation a win would need, weighted by the chance of a win. The search stops
when the saving is below the cost (a one-step look-ahead, as expected improvement is).

Before any trial the speed is unknown, but a job's length in steps against a trial's steps needs none:
a job too short to win back even the smallest study (the user's config, one candidate, the confirmation)
at `OPTIMISTIC_SPEEDUP` is not tuned at all (`too_short`).

With the length unknown the tuner assumes `ASSUMED_RUN_S` at the user's measured speed and spends at
most `UNKNOWN_LENGTH_FRACTION` of it: an hour-long job's tuning then pays for itself on this machine's
measured headroom (1.1-1.2x), and a shorter job loses at most that share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMISTIC_SPEEDUP = 2.0
"""The largest speed-up assumed possible before anything is measured (for `too_short`): more than the
CPU tables' best over their defaults (1.1-1.6x) and the launcher's measured 1.3-1.6x."""
ASSUMED_RUN_S = 1800.0
"""Main-run seconds assumed when its length is unknown (no `max_steps`, no epochs, a stream)."""
UNKNOWN_LENGTH_FRACTION = 0.05
"""The share of `ASSUMED_RUN_S` tuning may take when the length is unknown: 90 s."""
DEFAULT_TRIALS = 8
"""`max_trials="auto"` where nothing else bounds the search (the rule off, or the length unknown)."""
LONG_JOB_TRIALS = 24
"""`max_trials="auto"` where the rule bounds the search (a known length): a long job may take more trials
than `DEFAULT_TRIALS` while each still pays for itself; a backstop against a model too optimistic to stop."""


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def expected_saving_s(samples: float, best: float, mean_log: float, std_log: float) -> float:
    """Expected main-run seconds saved by a config of log speed ~ Normal(`mean_log`, `std_log`) over the best
    speed so far `best`, for a main run of `samples` samples.

    Example:
        >>> round(expected_saving_s(1000.0, 10.0, math.log(20.0), 0.0), 6)   # certain 2x: 100 s -> 50 s
        50.0
        >>> expected_saving_s(1000.0, 10.0, math.log(5.0), 0.0)              # certainly slower: nothing
        0.0
    """
    if samples <= 0 or best <= 0:
        return 0.0
    if std_log <= 1e-9:
        return max(0.0, samples / best - samples / math.exp(mean_log))
    z = (mean_log - math.log(best)) / std_log
    value = samples * (_phi(z) / best - math.exp(std_log * std_log / 2.0 - mean_log) * _phi(z - std_log))
    return max(0.0, value)


def win_probability(best: float, mean_log: float, std_log: float) -> float:
    """P(the config measures faster than `best`)."""
    if std_log <= 1e-9:
        return 1.0 if mean_log > math.log(best) else 0.0
    return _phi((mean_log - math.log(best)) / std_log)


def too_short(planned_steps: int, trial_steps: int, confirm_rounds: int) -> str | None:
    """Why a main run of `planned_steps` optimizer steps cannot win back any tuning, or None.

    The smallest study runs the user's config, one candidate and, for a win, `confirm_rounds` paired
    rounds of both, each trial `trial_steps` steps (warm-up and timed) at about the main run's speed; the
    most it can save is the main run at `OPTIMISTIC_SPEEDUP`.

    Example:
        >>> print(too_short(40, 6, 2))  # doctest: +NORMALIZE_WHITESPACE
        the main run (40 steps) is too short for tuning to pay for itself: the smallest study runs 36 steps
        of trials and could save at most 20 steps
        >>> too_short(5000, 6, 2) is None
        True
    """
    trials = 2 + 2 * confirm_rounds
    cost = trials * trial_steps
    saving = planned_steps * (1.0 - 1.0 / OPTIMISTIC_SPEEDUP)
    if saving > cost:
        return None
    return (f"the main run ({planned_steps} steps) is too short for tuning to pay for itself: the smallest study"
            f" runs {cost} steps of trials and could save at most {saving:.0f} steps")


@dataclass(frozen=True, slots=True)
class Estimate:
    """One look-ahead: what the next trial may save of the main run against what it costs."""

    saving_s: float
    cost_s: float

    @property
    def worth(self) -> bool:
        return self.saving_s > self.cost_s

    def describe(self) -> str:
        return f"expected to save {self.saving_s:.1f} s of the main run, costs {self.cost_s:.1f} s"


def next_trial(samples: float, best: float, mean_log: float, std_log: float, cost_s: float,
               confirm_s: float) -> Estimate:
    """The look-ahead of one candidate: `confirm_s` is what a win would add (the paired confirmation, when
    nothing has beaten the user's config yet; else 0), weighted by the chance of a win.

    Example:
        >>> next_trial(1000.0, 10.0, math.log(11.0), 0.0, cost_s=3.0, confirm_s=8.0).worth   # saves 9.1 s, costs 11
        False
    """
    win = win_probability(best, mean_log, std_log)
    return Estimate(expected_saving_s(samples, best, mean_log, std_log), cost_s + win * confirm_s)


def job_net(default_run_s: float, tuning_s: float, tuned_run_s: float) -> float:
    """The job's speed-up, tuning included: the main run at the user's settings over tuning plus the main run
    with what was applied.

    Example:
        >>> round(job_net(900.0, 60.0, 780.0), 3)
        1.071
    """
    total = tuning_s + tuned_run_s
    return default_run_s / total if total > 0 else 1.0


__all__ = ["ASSUMED_RUN_S", "OPTIMISTIC_SPEEDUP", "UNKNOWN_LENGTH_FRACTION", "Estimate", "expected_saving_s",
           "job_net", "next_trial", "too_short", "win_probability"]
