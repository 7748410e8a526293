"""The one module that touches scikit-optimize.

skopt has no conditional spaces and hands back numpy scalars; this adapter maps a flat list of
our knobs to skopt dimensions and back to plain Python configs, so no skopt type leaks out.
Ordered discrete knobs (`Int`/`Float` with `choices`) become an integer index, keeping their order.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from ..space.knobs import Categorical, Float, Int, Knob

#: Maps a batch of configs to prior means of what is minimised.
PriorFn = Callable[[list[dict[str, Any]]], np.ndarray]


class _WithPrior(RegressorMixin, BaseEstimator):
    """Fits `estimator` to `y - prior(x)` and adds the prior back: the surrogate learns residuals.

    `prior` is typically a bound method of the search that owns this estimator: `copy.deepcopy` of the
    search rebinds it to the copy (a closure would keep reading the original, so a batch's copy of the
    search would refine with the original's model), and a clone (skopt clones before every fit) shares
    it rather than deep-copying its owner.
    """

    def __init__(self, estimator: Any = None, prior: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.estimator = estimator
        self.prior = prior

    def __sklearn_clone__(self) -> _WithPrior:
        return _WithPrior(clone(self.estimator), self.prior)

    def _prior(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X)) if self.prior is None else np.asarray(self.prior(X), dtype=float)

    def fit(self, X: Any, y: Any) -> _WithPrior:
        X = np.asarray(X, dtype=float)
        self.estimator.fit(X, np.asarray(y, dtype=float) - self._prior(X))
        return self

    def predict(self, X: Any, return_std: bool = False) -> Any:
        X = np.asarray(X, dtype=float)
        out = self.estimator.predict(X, return_std=return_std)
        if return_std:
            return out[0] + self._prior(X), out[1]
        return out + self._prior(X)


class SkoptAdapter:
    """skopt's `Optimizer` over a flat list of knobs; minimises what it is told.

    Knobs with a single value are held constant and not shown to skopt.

    Example:
        >>> from autoscout_plugin.space import Int
        >>> a = SkoptAdapter([Int(name="micro_batch_size", choices=(4, 8, 16))], seed=0, n_initial_points=2)
        >>> c = a.ask(); a.tell([c], [1.0]); sorted(a.ask())
        ['micro_batch_size']
    """

    def __init__(self, knobs: Sequence[Knob], *, seed: int = 0, base_estimator: Any = "GP",
                 n_initial_points: int = 5, acq_func: str = "EI", acq_optimizer: str = "auto",
                 prior: PriorFn | None = None, n_points: int = 1000) -> None:
        from skopt import Optimizer  # lazy: skopt imports sklearn and scipy

        self.constant = {k.name: k.grid()[0] for k in knobs if len(k.grid()) == 1}
        self.knobs = [k for k in knobs if k.name not in self.constant]
        if not self.knobs:
            self.optimizer = None
            return
        self._prior_fn = prior
        estimator = base_estimator
        if prior is not None:
            estimator = _WithPrior(base_estimator, self._transformed_prior)
        opts = {"n_points": n_points} if acq_optimizer == "sampling" else {}
        self.optimizer = Optimizer([self._dimension(k) for k in self.knobs], base_estimator=estimator,
                                   n_initial_points=n_initial_points, acq_func=acq_func,
                                   acq_optimizer=acq_optimizer, random_state=seed, acq_optimizer_kwargs=opts)

    def _transformed_prior(self, X: np.ndarray) -> np.ndarray:
        """The prior on skopt's transformed points (a method, not a closure: see `_WithPrior`)."""
        assert self.optimizer is not None and self._prior_fn is not None
        points = self.optimizer.space.inverse_transform(np.asarray(X))
        return np.asarray(self._prior_fn([self.to_config(p) for p in points]), dtype=float)

    @staticmethod
    def _ordinal(knob: Knob) -> tuple[Any, ...] | None:
        """The ordered values of a discrete numeric knob shown to skopt as an index, else None."""
        if isinstance(knob, Categorical):
            return None
        if knob.choices is not None:
            return tuple(knob.choices)
        if isinstance(knob, Int) and knob.step > 1:
            assert knob.low is not None and knob.high is not None
            return tuple(range(knob.low, knob.high + 1, knob.step))
        return None

    @classmethod
    def _dimension(cls, knob: Knob) -> Any:
        from skopt.space import Categorical as SkCategorical
        from skopt.space import Integer, Real

        if isinstance(knob, Categorical):
            return SkCategorical(list(knob.choices), name=knob.name)
        ordinal = cls._ordinal(knob)
        if ordinal is not None:
            return Integer(0, len(ordinal) - 1, name=knob.name)
        if isinstance(knob, Int):
            assert knob.low is not None and knob.high is not None
            return Integer(knob.low, knob.high, prior="log-uniform" if knob.log else "uniform", name=knob.name)
        assert isinstance(knob, Float) and knob.low is not None and knob.high is not None
        return Real(knob.low, knob.high, prior="log-uniform" if knob.log else "uniform", name=knob.name)

    def to_config(self, point: Sequence[Any]) -> dict[str, Any]:
        """An skopt point as a plain config (numpy scalars converted, indices mapped to values)."""
        out = dict(self.constant)
        for knob, raw in zip(self.knobs, point):
            value = raw.item() if isinstance(raw, np.generic) else raw
            ordinal = self._ordinal(knob)
            if ordinal is not None:
                value = ordinal[int(value)]
            elif isinstance(knob, Int):
                value = int(value)
            elif isinstance(knob, Float):
                value = float(value)
            out[knob.name] = value
        return out

    def to_point(self, config: dict[str, Any]) -> list[Any]:
        point: list[Any] = []
        for knob in self.knobs:
            value = config[knob.name]
            ordinal = self._ordinal(knob)
            if ordinal is not None:
                value = min(range(len(ordinal)), key=lambda i: abs(ordinal[i] - value))
            point.append(value)
        return point

    def ask(self) -> dict[str, Any]:
        if self.optimizer is None:
            return dict(self.constant)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skopt warns on duplicate points; the caller de-duplicates
            return self.to_config(self.optimizer.ask())

    @contextlib.contextmanager
    def forked_rng(self) -> Iterator[None]:
        """As skopt's `Optimizer.ask(n_points=...)`: one draw of the optimizer's random state seeds the
        state that copies made inside the block start from; the optimizer keeps its own, one draw on."""
        if self.optimizer is None:
            yield
            return
        own = self.optimizer.rng
        self.optimizer.rng = np.random.RandomState(own.randint(0, np.iinfo(np.int32).max))
        try:
            yield
        finally:
            self.optimizer.rng = own

    def tell(self, configs: Sequence[dict[str, Any]], ys: Sequence[float]) -> None:
        if self.optimizer is None or not configs:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optimizer.tell([self.to_point(c) for c in configs], [float(y) for y in ys])
