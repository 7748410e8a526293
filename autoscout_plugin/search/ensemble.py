"""F1: a surrogate ensemble (GP, random forest, extra trees, additive main effects) weighted by
held-out accuracy.

Each member is scored on predictions for observations it did not train on, at no extra fitting
cost: the GP and the additive model by their closed-form leave-one-out predictions (Rasmussen &
Williams 2006, eq. 5.12; for a linear smoother, the residual over 1 - its leverage), the forests by
their out-of-bag predictions (Breiman 2001). Weights are a softmax of the negative
held-out error, so the member that predicted unseen trials best leads. The predictive spread
combines each member's own spread with the members' disagreement (the law of total variance).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.tree import DecisionTreeRegressor, ExtraTreeRegressor

MEMBERS = ("gp", "rf", "et", "add")


class AdditiveRidge:
    """Main effects: the value of each column of the encoding, as a category, adds its own offset
    (Bayesian ridge on indicators of every (column, value) seen in training, fixed prior and noise).

    What the other members miss on the first few trials: an effect measured in one arm carries over to
    another. Two trials that differ only in micro-batch and one that differs only in `compile` predict
    the fourth corner as the sum of both effects, where a stationary kernel or a tree averages its
    neighbours instead. A value never seen in training adds nothing (the source's distance-based spread
    says how unsure that is), so no numeric trend is extrapolated beyond what was measured.
    """

    def __init__(self, *, prior_std: float = 0.15, noise_std: float = 0.05) -> None:
        self.prior_std = prior_std
        self.noise_std = noise_std

    def _features(self, X: np.ndarray) -> np.ndarray:
        cols = [np.isclose(X[:, j], v) for j, v in self.levels_]
        return np.stack(cols, axis=1).astype(float) if cols else np.zeros((len(X), 0))

    def fit(self, X: np.ndarray, y: np.ndarray) -> AdditiveRidge:
        self.levels_ = [(j, float(v)) for j in range(X.shape[1]) for v in np.unique(np.round(X[:, j], 9))]
        phi = self._features(X)
        precision = phi.T @ phi / self.noise_std**2 + np.eye(phi.shape[1]) / self.prior_std**2
        self.cov_ = np.linalg.inv(precision)
        self.coef_ = self.cov_ @ phi.T @ y / self.noise_std**2
        hat = np.einsum("ij,jk,ik->i", phi, self.cov_, phi) / self.noise_std**2
        fitted = phi @ self.coef_
        with np.errstate(invalid="ignore", divide="ignore"):  # leave-one-out residuals of a linear smoother
            self.loo_prediction_ = y - (y - fitted) / np.maximum(1.0 - hat, 1e-9)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        phi = self._features(X)
        var = np.einsum("ij,jk,ik->i", phi, self.cov_, phi)
        return phi @ self.coef_, np.sqrt(np.maximum(var, 0.0))


class BaggedTrees:
    """A random forest (`extra=False`) or extra-trees forest (`extra=True`) on bootstrap samples, with
    out-of-bag predictions: what sklearn's `RandomForestRegressor(bootstrap=True, oob_score=True)` and
    `ExtraTreesRegressor(...)` compute, without their per-tree cloning and validation, which cost
    more than the fit itself on the 2-40 trials a study has (the search refits after every trial)."""

    def __init__(self, *, extra: bool, n_estimators: int = 40, max_features: float = 0.8, seed: int = 0) -> None:
        self.extra = extra
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> BaggedTrees:
        rng = np.random.RandomState(self.seed)
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        y2 = np.ascontiguousarray(y, dtype=np.float64).reshape(-1, 1)
        n = len(y)
        tree_class = ExtraTreeRegressor if self.extra else DecisionTreeRegressor
        oob_sum, oob_count = np.zeros(n), np.zeros(n)
        self.estimators_: list[Any] = []
        for _ in range(self.n_estimators):
            rows = rng.randint(0, n, n)
            tree = tree_class(max_features=self.max_features, random_state=rng.randint(np.iinfo(np.int32).max))
            tree.fit(X32[rows], y2[rows], check_input=False)
            self.estimators_.append(tree)
            out = np.setdiff1d(np.arange(n), rows)
            if len(out):
                oob_sum[out] += tree.tree_.predict(X32[out])[:, 0]
                oob_count[out] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            self.oob_prediction_ = np.where(oob_count > 0, oob_sum / np.maximum(oob_count, 1), np.nan)
        return self


def _member(name: str, seed: int) -> Any:
    if name == "gp":
        kernel = ConstantKernel(0.1, (1e-4, 10.0)) * Matern(length_scale=0.5, length_scale_bounds=(0.05, 20.0),
                                                             nu=2.5) + WhiteKernel(0.005, (1e-5, 0.5))
        return GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
    if name in ("rf", "et"):
        return BaggedTrees(extra=name == "et", seed=seed)
    if name == "add":
        return AdditiveRidge()
    raise ValueError(f"unknown ensemble member {name!r}; choose from {MEMBERS}")


def _predict_member(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(model, GaussianProcessRegressor):
        mean, std = model.predict(X, return_std=True)
        return np.asarray(mean), np.asarray(std)
    if isinstance(model, AdditiveRidge):
        return model.predict(X)
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    # tree_.predict skips sklearn's per-call input validation, which dominates for small X.
    per_tree = np.stack([tree.tree_.predict(X32)[:, 0] for tree in model.estimators_])
    return per_tree.mean(axis=0), per_tree.std(axis=0)


def _held_out(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Predictions of each observation by a model that did not see it (NaN where unknown)."""
    if isinstance(model, GaussianProcessRegressor):
        K = model.kernel_(X)
        K_inv = np.linalg.pinv(K)
        return y - (K_inv @ y) / np.diag(K_inv)
    if isinstance(model, AdditiveRidge):
        return model.loo_prediction_
    oob = getattr(model, "oob_prediction_", None)
    return np.full(len(y), np.nan) if oob is None else np.asarray(oob, dtype=float).reshape(-1)


class SurrogateEnsemble(RegressorMixin, BaseEstimator):
    """Weighted GP + RF + ET regressor with `predict(X, return_std=True)` (skopt's estimator API).

    Example:
        >>> import numpy as np
        >>> X = np.linspace(0, 1, 8).reshape(-1, 1); y = (X[:, 0] - 0.3) ** 2
        >>> m = SurrogateEnsemble(seed=0).fit(X, y)
        >>> mean, std = m.predict(X[:2], return_std=True)
        >>> mean.shape, round(sum(m.weights_.values()), 6)
        ((2,), 1.0)
    """

    def __init__(self, members: tuple[str, ...] = MEMBERS, seed: int = 0, temperature: float = 0.5,
                 min_std: float = 0.01) -> None:
        self.members = members
        self.seed = seed
        self.temperature = temperature
        self.min_std = min_std

    def fit(self, X: Any, y: Any) -> SurrogateEnsemble:
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        self.y_mean_ = float(y.mean()) if len(y) else 0.0
        yc = y - self.y_mean_
        self.models_ = {}
        with warnings.catch_warnings():
            # Few points: GP hyper-parameters hit their bounds and forests leave some points in-bag.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)
            for name in self.members:
                self.models_[name] = _member(name, self.seed).fit(X, yc)
        self.weights_ = self._weights(X, yc)
        return self

    def _weights(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        equal = {name: 1.0 / len(self.members) for name in self.members}
        if len(y) < 4:
            return equal
        held = {name: _held_out(model, X, y) for name, model in self.models_.items()}
        known = np.all([np.isfinite(h) for h in held.values()], axis=0)
        if known.sum() < 3:
            return equal
        rmse = {name: float(np.sqrt(np.mean((h[known] - y[known]) ** 2))) for name, h in held.items()}
        best = min(rmse.values())
        scale = max(self.temperature * (best + 1e-3), 1e-6)
        scores = {name: float(np.exp(-(r - best) / scale)) for name, r in rmse.items()}
        total = sum(scores.values())
        return {name: s / total for name, s in scores.items()}

    def predict(self, X: Any, return_std: bool = False) -> Any:
        X = np.asarray(X, dtype=float)
        means, stds, weights = [], [], []
        for name, model in self.models_.items():
            m, s = _predict_member(model, X)
            means.append(m)
            stds.append(s)
            weights.append(self.weights_[name])
        w = np.asarray(weights)[:, None]
        M, S = np.stack(means), np.stack(stds)
        mean = (w * M).sum(axis=0)
        var = (w * (S**2 + (M - mean) ** 2)).sum(axis=0)
        mean = mean + self.y_mean_
        return (mean, np.maximum(np.sqrt(var), self.min_std)) if return_std else mean
