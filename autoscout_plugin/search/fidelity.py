"""The fidelity protocol: every source of evidence answers `predict` and learns from `observe`.

F0 (the analytical model) and F1 (the surrogate ensemble) answer at once; F2/F3 (short and long
profiles) are the trials themselves and enter through `observe`. All predictions are in log space
(log samples/s), where multiplicative knob effects add up and noise is roughly constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..costmodel import CostModel, Measurement
from ..costmodel import calibrate as calibrate_model
from ..space import Config, Space
from ..trial import Fidelity, Trial


@dataclass(frozen=True, slots=True)
class Prediction:
    """A predicted log objective with its spread, and what else the source knows."""

    log_value: float
    std: float
    peak_mem_mb: float | None = None
    step_s: float | None = None


@runtime_checkable
class FidelitySource(Protocol):
    """A source of evidence about configs (see docs/design.md, "Fidelity ladder")."""

    fidelity: Fidelity

    def predict(self, configs: Sequence[Config]) -> list[Prediction]:
        """Predictions for `configs`, in order."""
        ...

    def observe(self, trials: Sequence[Trial]) -> None:
        """Learn from all trials so far (called after every tell)."""
        ...


def latest_values(trials: Sequence[Trial], space: Space) -> dict[str, tuple[Config, float]]:
    """One observation per config: the highest fidelity, the latest at that fidelity, in log space."""
    out: dict[str, tuple[Config, float, str]] = {}
    for trial in trials:
        if not trial.ok or trial.value is None or trial.value <= 0:
            continue
        key = space.key(trial.config)
        rank = trial.fidelity.value
        if key not in out or rank >= out[key][2]:
            out[key] = (trial.config, math.log(trial.value), rank)
    return {k: (c, v) for k, (c, v, _) in out.items()}


class AnalyticalSource:
    """F0: the cost model, recalibrated on every observation.

    Its spread is the posterior uncertainty of the calibrated factors (see `Calibration.log_std`)
    plus `misfit_std` for what the model's form cannot express.
    """

    fidelity = Fidelity.F0

    def __init__(self, model: CostModel, space: Space, *, misfit_std: float = 0.05, calibrate: bool = True) -> None:
        self.calibration = calibrate_model(model, [])
        self.base = model
        self.space = space
        self.misfit_std = misfit_std
        self.calibrate = calibrate
        self._n = 0
        self._cache: dict[str, Prediction] = {}

    @property
    def model(self) -> CostModel:
        return self.calibration.model

    def predict(self, configs: Sequence[Config]) -> list[Prediction]:
        keys = [self.space.key(c) for c in configs]
        missing = {k: c for k, c in zip(keys, configs) if k not in self._cache}
        if missing:
            todo = list(missing.values())
            stds = self.calibration.log_std(todo)
            for key, config, std in zip(missing, todo, stds):
                est = self.model.estimate(config)
                self._cache[key] = Prediction(math.log(max(est.samples_per_s, 1e-12)),
                                              float(math.hypot(std, self.misfit_std)), est.peak_mem_mb, est.step_s)
        return [self._cache[k] for k in keys]

    def observe(self, trials: Sequence[Trial]) -> None:
        ok = [t for t in trials if t.ok]
        if not self.calibrate or len(ok) == self._n:
            return
        self._n = len(ok)
        self.calibration = calibrate_model(self.base, [Measurement(t.config, t.value, t.peak_mem_mb) for t in ok])
        self._cache.clear()


class SurrogateSource:
    """F1: the ensemble fitted to what F0 (if any) gets wrong, on the encoded configs.

    Without F0 the prior mean is the mean observed log value. A spread for what neither F0 nor the
    data explain grows with a config's distance from everything measured: each knob in which it
    differs from the nearest measured config adds variance, less for a knob F0 models (`misfit_std`:
    F0 knows the direction, not the size on this machine), more for one it cannot see
    (`unmodeled_std`, as every knob without F0), capped at `max_std`. So an unexplored corner is never
    predicted with false confidence, and a knob the cost model ignores is not mistaken for one that
    does not matter.
    """

    fidelity = Fidelity.F1

    def __init__(self, space: Space, prior: FidelitySource | None = None, *, seed: int = 0,
                 min_points: int = 3, modeled: set[str] | None = None, misfit_std: float = 0.1,
                 unmodeled_std: float = 0.25, max_std: float = 0.5) -> None:
        from .ensemble import SurrogateEnsemble

        self.space = space
        self.prior = prior
        self.min_points = min_points
        modeled = set(modeled or ()) if prior is not None else set()
        self.knob_var = {n: misfit_std**2 if n in modeled else unmodeled_std**2 for n in space.names}
        self.max_var = max_std**2
        self.ensemble = SurrogateEnsemble(seed=seed)
        self._fitted = False
        self._observed: list[Config] = []
        self._mean = 0.0

    def _prior(self, configs: Sequence[Config]) -> tuple[np.ndarray, np.ndarray]:
        if self.prior is None:
            return np.full(len(configs), self._mean), np.zeros(len(configs))
        preds = self.prior.predict(configs)
        return np.array([p.log_value for p in preds]), np.array([p.std for p in preds])

    def observe(self, trials: Sequence[Trial]) -> None:
        if self.prior is not None:
            self.prior.observe(trials)
        values = latest_values(trials, self.space)
        self._observed = [self.space.canonical(c) for c, _ in values.values()]
        ys = np.array([v for _, v in values.values()])
        self._mean = float(ys.mean()) if len(ys) else 0.0
        if len(ys) < self.min_points:
            self._fitted = False
            return
        prior_mean, _ = self._prior(self._observed)
        X = np.stack([self.space.encode(c) for c in self._observed])
        self.ensemble.fit(X, ys - prior_mean)
        self._fitted = True

    def unexplained_var(self, configs: Sequence[Config]) -> np.ndarray:
        """Variance from the knobs in which each config differs from its nearest measured config."""
        if not self._observed:
            return np.full(len(configs), min(sum(self.knob_var.values()), self.max_var))
        out = np.empty(len(configs))
        for i, config in enumerate(configs):
            out[i] = min(sum(w for n, w in self.knob_var.items() if config.get(n) != seen.get(n))
                         for seen in self._observed)
        return np.minimum(out, self.max_var)

    def predict_arrays(self, configs: Sequence[Config]) -> tuple[np.ndarray, np.ndarray]:
        mean, prior_std = self._prior(configs)
        var = prior_std**2 + self.unexplained_var(configs)
        if self._fitted:
            X = np.stack([self.space.encode(c) for c in configs])
            resid, resid_std = self.ensemble.predict(X, return_std=True)
            mean = mean + resid
            var = var + resid_std**2
        return mean, np.sqrt(np.maximum(var, 1e-6))

    def predict(self, configs: Sequence[Config]) -> list[Prediction]:
        mean, std = self.predict_arrays(configs)
        return [Prediction(float(m), float(s)) for m, s in zip(mean, std)]

    @property
    def weights(self) -> dict[str, float]:
        return dict(getattr(self.ensemble, "weights_", {})) if self._fitted else {}


class EvidenceWeight:
    """How far to trust F0: Bayesian model averaging of "F1 on F0's residuals" against "F1 alone",
    weighted by each one's prequential evidence (Dawid 1984): the density each gave a trial's measured
    log value *before* seeing it, over the study's own trials.

    The weight starts at `prior` (high where the cost model describes the architecture, low where it
    only guesses) and follows the log-likelihood ratio, tempered by `temper`, with `noise_std` of
    measurement noise added to both predictions. One trial moves the log odds by at most `max_step`:
    a prediction off by 14x (bf16 on a CPU without it) is strong evidence for the other model, not
    proof, and later trials can still move the weight. A trial is scored only once `min_points`
    successes came before it: with fewer, F1 alone has no scale yet.

    Example:
        >>> w = EvidenceWeight(prior=0.5)
        >>> w.update(with_f0=(2.0, 0.1), without_f0=(2.3, 0.1), observed=2.3); w.weight < 0.5
        True
    """

    def __init__(self, prior: float, *, noise_std: float = 0.1, temper: float = 0.5, min_points: int = 2,
                 max_step: float | None = 3.0) -> None:
        if not 0.0 < prior < 1.0:
            raise ValueError(f"the prior weight of F0 must be in (0, 1), got {prior!r}")
        self.prior = prior
        self.noise_std = noise_std
        self.temper = temper
        self.min_points = min_points
        self.max_step = max_step
        self.log_ratio = 0.0
        self.scored = 0

    @staticmethod
    def _log_density(x: float, mean: float, std: float) -> float:
        return -0.5 * ((x - mean) / std) ** 2 - math.log(std)

    def update(self, *, with_f0: tuple[float, float], without_f0: tuple[float, float], observed: float) -> None:
        """Score one trial: each model's (mean, std) of its log value, predicted before it ran."""
        s1 = math.hypot(with_f0[1], self.noise_std)
        s0 = math.hypot(without_f0[1], self.noise_std)
        ratio = self._log_density(observed, with_f0[0], s1) - self._log_density(observed, without_f0[0], s0)
        gain = self.temper * ratio
        if self.max_step is not None:  # one gross miss is strong evidence, not proof
            gain = min(max(gain, -self.max_step), self.max_step)
        self.log_ratio = min(max(self.log_ratio + gain, -30.0), 30.0)
        self.scored += 1

    @property
    def weight(self) -> float:
        logit = math.log(self.prior / (1.0 - self.prior)) + self.log_ratio
        return 1.0 / (1.0 + math.exp(-logit))


def mixture(weight: float, with_f0: tuple[np.ndarray, np.ndarray],
            without_f0: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the two-model mixture: the spread includes where the models disagree."""
    (m1, s1), (m0, s0) = with_f0, without_f0
    mean = weight * m1 + (1.0 - weight) * m0
    var = weight * (s1**2 + m1**2) + (1.0 - weight) * (s0**2 + m0**2) - mean**2
    return mean, np.sqrt(np.maximum(var, 1e-6))
