"""Expected wall seconds of a trial: start-up, compilation, extra processes, and the timed steps.

A Bayesian linear model (ridge towards the prior below) on four features, refit from the measured
`cost_s` of every trial, so a compile trial's 10-25 s is learned on this machine after one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..space import Config, world_size
from ..trial import Trial

#: Features: constant start-up, compile on, multi-process, predicted seconds of the profiled steps.
#: Compile: 10-25 s measured for small models on one machine here, 35-55 s for GPT-2 on another.
PRIOR_MEAN = np.array([8.0, 30.0, 4.0, 1.0])
PRIOR_SD = np.array([8.0, 20.0, 6.0, 1.0])
NOISE_SD = 3.0


def _features(config: Config, steps_s: float) -> np.ndarray:
    compiled = config.get("compile", "off") not in ("off", False, None)
    return np.array([1.0, float(compiled), float(world_size(config) > 1), steps_s])


class TrialCostModel:
    """Predicts a trial's seconds from its config and the predicted step time.

    Example:
        >>> m = TrialCostModel(steps_per_trial=5)
        >>> m.predict({"compile": "default"}, 1.0) > m.predict({"compile": "off"}, 1.0)
        True
    """

    def __init__(self, steps_per_trial: int = 5) -> None:
        self.steps_per_trial = steps_per_trial
        self.coef = PRIOR_MEAN.copy()

    def predict(self, config: Config, step_s: float | None) -> float:
        steps = (step_s or 0.0) * self.steps_per_trial
        return float(max(_features(config, steps) @ self.coef, 0.5))

    def fit(self, trials: Sequence[Trial], step_s: Sequence[float | None]) -> None:
        rows = [(t, s) for t, s in zip(trials, step_s) if t.cost_s > 0]
        if not rows:
            return
        X = np.stack([_features(t.config, (s or 0.0) * self.steps_per_trial) for t, s in rows])
        y = np.array([t.cost_s for t, _ in rows])
        # Posterior mean of a linear model with a Gaussian prior on the coefficients.
        precision = X.T @ X / NOISE_SD**2 + np.diag(1.0 / PRIOR_SD**2)
        rhs = X.T @ y / NOISE_SD**2 + PRIOR_MEAN / PRIOR_SD**2
        self.coef = np.maximum(np.linalg.solve(precision, rhs), 0.0)
