"""Calibration: refit the cost model's efficiency factors from a few measured trials.

A maximum-a-posteriori fit in log space: each factor has a prior (the default `Efficiency` and a
spread), each measurement a log-normal error of about 12%: the run-to-run noise (about 7% here) and
what the model's form cannot express (a fit to all 48 rows of a ground-truth table still leaves
9-15%), so that three trials do not bend the factors to fit noise. With one or two trials mostly
the overall scale moves; each further trial that varies a knob informs that knob's factor. Pure
numpy/scipy; no framework.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .model import CostModel, Efficiency

#: (field, transform, prior spread in transformed units) for the time factors.
_TIME_PARAMS: tuple[tuple[str, str, float], ...] = (
    ("flops_per_core", "log", 1.0),
    ("thread_exponent", "linear", 0.2),
    ("memory_exponent", "linear", 0.25),
    ("matmul_fraction", "logit", 0.8),
    ("bf16_matmul_speedup", "log", 0.4),
    ("bf16_emulated_speedup", "log", 0.5),
    ("bf16_elementwise_factor", "log", 0.3),
    ("compile_elementwise_speedup", "log", 0.6),
    ("op_overhead_s", "log", 1.0),
    ("gemm_half_rows", "log", 0.8),
    ("link_bytes_per_s", "log", 1.0),
)
_NODES_PARAM = ("inter_link_bytes_per_s", "log", 1.0)
"""Fitted too once a measured config spans several nodes."""
_MEM_PARAMS: tuple[tuple[str, str, float], ...] = (
    ("process_overhead_mb", "log", 0.5),
    ("compile_overhead_mb", "log", 0.8),
    ("activation_scale", "log", 0.7),
)
NOISE_LOG_SD = 0.07
"""Run-to-run noise of one measurement (log samples/s)."""
MISFIT_LOG_SD = 0.10
"""Model-form error: what no choice of the factors explains (log units)."""
RESIDUAL_LOG_SD = math.hypot(NOISE_LOG_SD, MISFIT_LOG_SD)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured config for calibration."""

    config: dict[str, Any]
    samples_per_s: float | None
    peak_mem_mb: float | None = None


def _to_u(value: float, how: str) -> float:
    if how == "log":
        return math.log(value)
    if how == "logit":
        return math.log(value / (1.0 - value))
    return value


def _from_u(u: float, how: str) -> float:
    if how == "log":
        return math.exp(u)
    if how == "logit":
        return 1.0 / (1.0 + math.exp(-u))
    return u


def _fit(model: CostModel, params: Sequence[tuple[str, str, float]], residual_fn: Any,
         ) -> tuple[Efficiency, np.ndarray]:
    """MAP estimate of `params` and its Laplace posterior covariance (in transformed units)."""
    from scipy.optimize import least_squares  # lazy: scipy is slow to import

    prior = np.array([_to_u(getattr(model.eff, name), how) for name, how, _ in params])
    spread = np.array([sd for _, _, sd in params])

    def residuals(u: np.ndarray) -> np.ndarray:
        data = residual_fn(model.with_efficiency(_eff_of(model.eff, params, u)))
        return np.concatenate([data / RESIDUAL_LOG_SD, (u - prior) / spread])

    result = least_squares(residuals, prior, method="trf", max_nfev=200)
    # Whitened residuals: the Gauss-Newton Hessian J^T J is the posterior precision.
    cov = np.linalg.pinv(result.jac.T @ result.jac)
    return _eff_of(model.eff, params, result.x), cov


def _eff_of(base: Efficiency, params: Sequence[tuple[str, str, float]], u: np.ndarray) -> Efficiency:
    return replace(base, **{name: _from_u(float(v), how) for (name, how, _), v in zip(params, u)})


@dataclass(frozen=True)
class Calibration:
    """A calibrated cost model and the uncertainty left in its time factors.

    `log_std` is the predictive spread of log samples/s from the factors' posterior (a first-order
    delta method): large for configs whose prediction hinges on a factor no trial has pinned down yet.
    """

    model: CostModel
    time_cov: np.ndarray
    params: tuple[tuple[str, str, float], ...] = _TIME_PARAMS
    """The time factors `time_cov` covers."""

    def log_std(self, configs: Sequence[dict[str, Any]], step: float = 0.05) -> np.ndarray:
        u0 = np.array([_to_u(getattr(self.model.eff, name), how) for name, how, _ in self.params])
        base = np.log([max(self.model.samples_per_s(c), 1e-12) for c in configs])
        grads = np.empty((len(configs), len(u0)))
        for j in range(len(u0)):
            u = u0.copy()
            u[j] += step
            shifted = self.model.with_efficiency(_eff_of(self.model.eff, self.params, u))
            grads[:, j] = (np.log([max(shifted.samples_per_s(c), 1e-12) for c in configs]) - base) / step
        var = np.einsum("ij,jk,ik->i", grads, self.time_cov, grads)
        return np.sqrt(np.maximum(var, 0.0))


def _time_params(timed: Sequence[Measurement]) -> tuple[tuple[str, str, float], ...]:
    """The time factors these measurements can inform: the inter-node link once a config spans nodes; where
    every one does (a multi-node job's own trials), it stands for the whole cost of their collectives, since
    the link within a node cannot be told apart from it."""
    across = sum(int(m.config.get("num_nodes", 1)) > 1 for m in timed)
    if not across:
        return _TIME_PARAMS
    kept = _TIME_PARAMS if across < len(timed) else tuple(p for p in _TIME_PARAMS if p[0] != "link_bytes_per_s")
    return (*kept, _NODES_PARAM)


def calibrate(model: CostModel, measurements: Sequence[Measurement]) -> Calibration:
    """Fit the efficiency factors to `measurements` (MAP in log space) and keep their uncertainty."""
    timed = [m for m in measurements if m.samples_per_s and m.samples_per_s > 0]
    sized = [m for m in measurements if m.peak_mem_mb and m.peak_mem_mb > 0]
    eff = model.eff
    params = _time_params(timed)
    cov = np.diag([sd**2 for _, _, sd in params])
    if timed:
        log_y = np.log([m.samples_per_s for m in timed])

        def time_res(candidate: CostModel) -> np.ndarray:
            pred = [candidate.samples_per_s(m.config) for m in timed]
            return log_y - np.log(np.maximum(pred, 1e-12))

        eff, cov = _fit(model, params, time_res)
    if sized:
        log_m = np.log([m.peak_mem_mb for m in sized])
        timed_model = model.with_efficiency(eff)

        def mem_res(candidate: CostModel) -> np.ndarray:
            pred = [candidate.peak_mem_mb(m.config) for m in sized]
            return log_m - np.log(np.maximum(pred, 1e-6))

        eff, _ = _fit(timed_model, _MEM_PARAMS, mem_res)
    return Calibration(model.with_efficiency(eff), cov, params)


def fit_efficiency(model: CostModel, measurements: Sequence[Measurement]) -> CostModel:
    """A copy of `model` whose efficiency factors best explain `measurements` (MAP, log space).

    Example:
        >>> from autoscout_plugin.costmodel import CostModel, Hardware, Workload
        >>> m = CostModel(Workload(family="transformer", n_layer=2, d_model=64, n_head=2, vocab=1000,
        ...                        seq_len=32, global_batch=8), Hardware(cores=2))
        >>> truth = m.estimate({"micro_batch_size": 8}).samples_per_s * 3
        >>> fitted = fit_efficiency(m, [Measurement({"micro_batch_size": 8}, truth)])
        >>> abs(fitted.estimate({"micro_batch_size": 8}).samples_per_s / truth - 1) < 0.05
        True
    """
    return calibrate(model, measurements).model
