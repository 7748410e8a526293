"""The baselines of the replay benchmark (docs/design.md), each behind the `SearchStrategy` contract.

- `RandomSearch` (`random`): uniform over the feasible candidates, without replacement.
- `GridSearch` (`grid`): the feasible grid in `Space.enumerate()` order.
- `SkoptGP` (`skopt_gp`): scikit-optimize's GP with EI over the *flattened* space (every knob a
  dimension, conditional ones included); inactive knobs are dropped from its proposals.
- `OptunaTPE` (`optuna_tpe`): Optuna's TPE, define-by-run, so the condition tree is native.
- `DSModelBased` (`ds_model_based`): DeepSpeed's autotuner `ModelBasedTuner`: a boosted-tree model
  over config features picks the best predicted untried config, explores at random with probability
  0.2 and stops after 5 trials without improvement.

Candidates come from `space.candidates(random.Random(seed))`: the whole feasible grid when it is
small, a feasible random sample otherwise. Proposals of the model-based optimizers that are
infeasible, invalid or already taken are fed back to the optimizer as failures and never returned;
when all of the `max_proposals` proposals of one `ask` are rejected, a random untried candidate is
returned instead.

Batches (`ask_batch(k, pending)`, several trials at once) get the parallelism each library offers:
`random`, `grid` and `ds_model_based` use the base greedy batch (a chosen or running config is only
held); `skopt_gp` lies as skopt's `Optimizer.ask(n_points=k, strategy="cl_min")` does (a constant liar
at the minimum told objective); `optuna_tpe` asks its study `k` times with `TPESampler(constant_liar=True)`,
the running configs being `RUNNING` trials of the study.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..space import Categorical, Config, Float, Int, Knob, Space, SpaceError
from ..space.space import CANDIDATES_ENUMERATE_UP_TO
from ..trial import Trial
from .base import SearchExhausted, SearchStrategy

if TYPE_CHECKING:
    import optuna

__all__ = ["DSModelBased", "GridSearch", "OptunaTPE", "RandomSearch", "SkoptGP"]

def _grid_is_whole_range(knob: Knob) -> bool:
    """True when `knob.grid()` lists every value the knob can take."""
    if isinstance(knob, Categorical) or knob.choices is not None:
        return True
    assert knob.low is not None and knob.high is not None
    if isinstance(knob, Int):
        return len(knob.grid()) == (knob.high - knob.low) // knob.step + 1
    return knob.low == knob.high


def _log_value(trial: Trial) -> float | None:
    """`log(value)` of an ok trial (throughputs span orders of magnitude); None for a failure."""
    if not trial.ok or trial.value is None:
        return None
    return math.log(max(trial.value, 1e-300))


class _PoolStrategy(SearchStrategy):
    """Shared bookkeeping: the candidate pool, what was handed out, random untried picks."""

    def __init__(self, space: Space, *, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self._rng = random.Random(seed)
        self._candidates: list[Config] = self._make_pool()
        self._candidate_keys = [self._key(c) for c in self._candidates]
        self._asked: set[str] = set()
        # When the pool is the whole space, an exhausted pool means an exhausted space.
        self._pool_is_space = (all(_grid_is_whole_range(k) for k in space.knobs)
                               and space.grid_size() <= CANDIDATES_ENUMERATE_UP_TO)

    def _make_pool(self) -> list[Config]:
        return self.space.candidates(random.Random(self.seed))

    @property
    def rng(self) -> random.Random:
        """The strategy's random stream (`ask_batch` carries the draws of a batch's copy over to it, so
        the next batch does not replay them)."""
        return self._rng

    def _taken(self, config: Config) -> bool:
        """Told already, handed out by `ask` and not told yet, or held (running on another worker)."""
        key = self._key(config)
        return key in self._seen or key in self._asked or key in self._held

    def _untried_indices(self) -> list[int]:
        taken = self._seen | self._asked | self._held
        return [i for i, key in enumerate(self._candidate_keys) if key not in taken]

    def _exhausted(self) -> SearchExhausted:
        return SearchExhausted(f"{self.name}: all {len(self._candidates)} candidate configs have been tried")

    def _random_untried(self) -> Config:
        untried = self._untried_indices()
        if not untried:
            raise self._exhausted()
        return self._candidates[self._rng.choice(untried)]

    def _raise_if_space_exhausted(self) -> None:
        if self._pool_is_space and not self._untried_indices():
            raise self._exhausted()

    def _hand_out(self, config: Config) -> Config:
        self._asked.add(self._key(config))
        return dict(config)

    def _valid_config(self, proposal: dict[str, Any]) -> Config | None:
        """An optimizer proposal as a canonical config, or None if it is invalid or infeasible."""
        try:
            config = self.space.canonical(proposal, allow_inactive=True)
        except SpaceError:
            return None
        return config if self.space.is_feasible(config) else None

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"candidates": len(self._candidates)}


class RandomSearch(_PoolStrategy):
    """Uniform random search over the feasible candidates, without replacement.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> s = RandomSearch(Space([Int(name="num_threads", choices=(1, 2))]), seed=0)
        >>> sorted([s.ask()["num_threads"], s.ask()["num_threads"]])
        [1, 2]
    """

    name = "random"

    def __init__(self, space: Space, *, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self._order = list(self._candidates)
        self._rng.shuffle(self._order)
        self._next = 0

    def ask(self) -> Config:
        while self._next < len(self._order):
            config = self._order[self._next]
            self._next += 1
            if not self._taken(config):
                return self._hand_out(config)
        raise self._exhausted()


class GridSearch(_PoolStrategy):
    """The feasible grid in `Space.enumerate()` order; the seed is ignored.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> GridSearch(Space([Int(name="num_threads", choices=(1, 2))])).ask()
        {'num_threads': 1}
    """

    name = "grid"

    def __init__(self, space: Space, *, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self._next = 0

    def _make_pool(self) -> list[Config]:
        return self.space.enumerate()

    def ask(self) -> Config:
        while self._next < len(self._candidates):
            config = self._candidates[self._next]
            self._next += 1
            if not self._taken(config):
                return self._hand_out(config)
        raise self._exhausted()


class SkoptGP(_PoolStrategy):
    """Plain scikit-optimize: a GP with expected improvement over the flattened space.

    skopt minimises `-log(value)`. Rejected proposals (invalid, infeasible or taken) and failed
    trials are told as a penalty: the worst `-log(value)` seen so far, or 0 before any success.
    Every tell refits the GP, so an `ask` tries few proposals (`max_proposals`, default 3).
    The acquisition is maximised over `n_points` random points (skopt's `sampling`): the spaces
    are discrete, where L-BFGS on skopt's relaxed one-hot space finds nothing better and costs
    twice as much.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> s = SkoptGP(Space([Int(name="num_threads", choices=(1, 2))]), seed=0)
        >>> c = s.ask(); s.tell(Trial(config=c, value=1.0)); s.ask() != c
        True
    """

    name = "skopt_gp"

    def __init__(self, space: Space, *, seed: int = 0, n_initial_points: int = 5, max_proposals: int = 3,
                 n_points: int = 1000) -> None:
        from .skopt_adapter import SkoptAdapter

        super().__init__(space, seed=seed)
        self.max_proposals = max_proposals
        self._adapter = SkoptAdapter(space.knobs, seed=seed, base_estimator="GP",
                                     n_initial_points=n_initial_points, acq_func="EI",
                                     acq_optimizer="sampling", n_points=n_points)
        self._proposals: dict[str, dict[str, Any]] = {}
        self._worst_y: float | None = None

    def _penalty(self) -> float:
        return 0.0 if self._worst_y is None else self._worst_y

    def _cl_min(self) -> float:
        """skopt's `cl_min` lie: the minimum objective told so far (penalties and earlier lies included,
        as skopt's `np.min(opt.yi)`), 0.0 before anything was told."""
        optimizer = self._adapter.optimizer
        return float(np.min(optimizer.yi)) if optimizer is not None and optimizer.yi else 0.0

    def _lie(self, config: Config) -> float | None:
        """A running config's value while it runs: skopt's `cl_min` (the minimum of the told `-log(value)`:
        the best measured value, or 1.0 before any), told to the GP as that minimum exactly (`_observe`)."""
        if self._adapter.optimizer is None:  # every knob is constant: nothing to condition
            return None
        return math.exp(-self._cl_min())

    def ask_batch(self, k: int, pending: Sequence[Config] = ()) -> list[Config]:
        """The base greedy batch with skopt's `cl_min` lies (`_lie`); as in skopt's
        `Optimizer.ask(n_points=k)`, the batch's copy of the optimizer is seeded by one draw of the
        optimizer's random state, so the copy's draws (the acquisition's random candidate points) are
        not the ones the optimizer itself makes next."""
        if not (isinstance(k, int) and not isinstance(k, bool) and k == 1 and not pending):
            with self._adapter.forked_rng():
                return super().ask_batch(k, pending)
        return super().ask_batch(k, pending)

    def ask(self) -> Config:
        self._raise_if_space_exhausted()
        for _ in range(self.max_proposals):
            proposal = self._adapter.ask()
            config = self._valid_config(proposal)
            if config is not None and not self._taken(config):
                self._proposals[self._key(config)] = proposal
                return self._hand_out(config)
            self._adapter.tell([proposal], [self._penalty()])
        return self._hand_out(self._random_untried())

    def _observe(self, trial: Trial) -> None:
        point = self._proposals.pop(self._key(trial.config), None)
        if point is None:  # a random fallback, or a config told without being asked (warm start)
            point = self._flattened(trial.config)
        value = _log_value(trial)
        if trial.metrics.get("fantasy"):  # a running config's lie: skopt's cl_min, not a measurement
            y = self._cl_min()
        elif value is not None:
            y = -value
            self._worst_y = y if self._worst_y is None else max(self._worst_y, y)
        else:
            y = self._penalty()
        self._adapter.tell([point], [y])

    def _flattened(self, config: Config) -> dict[str, Any]:
        """A config with its inactive knobs filled in (default or first value), as skopt needs."""
        return {k.name: config.get(k.name, k.default if k.default is not None else k.grid()[0])
                for k in self.space.knobs}


class OptunaTPE(_PoolStrategy):
    """Optuna's TPE sampler, define-by-run: inactive knobs are never suggested.

    Rejected proposals (invalid, infeasible or taken) and failed trials are told as `FAIL`; TPE
    learns nothing from those, so an `ask` tries more proposals (`max_proposals`, default 10): they
    cost milliseconds.

    The sampler is `TPESampler(constant_liar=True)` (Optuna's default since 4.x, explicit here): a
    config asked and not told yet stays a `RUNNING` trial, which TPE counts among the worst, so
    `ask_batch` is `k` asks of the same study; a sequential `ask` sees no other running trial and is
    unaffected.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> s = OptunaTPE(Space([Int(name="num_threads", choices=(1, 2))]), seed=0)
        >>> c = s.ask(); s.tell(Trial(config=c, value=1.0)); s.ask() != c
        True
    """

    name = "optuna_tpe"

    def __init__(self, space: Space, *, seed: int = 0, max_proposals: int = 10) -> None:
        import optuna  # lazy: `import autoscout_plugin.search` must stay light

        super().__init__(space, seed=seed)
        self.max_proposals = max_proposals
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._study = optuna.create_study(direction="maximize",
                                          sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
        self._pending: dict[str, optuna.trial.Trial | int] = {}  # running: a study trial, or its number

    def ask_batch(self, k: int, pending: Sequence[Config] = ()) -> list[Config]:
        """`k` asks of the study, none told in between: each stays a `RUNNING` trial, so the constant liar
        steers the next one away from it. A `pending` config (running on another worker) without a trial
        of this study is added as a `RUNNING` trial (its outcome, told later, completes it) and is never
        returned; a random fallback is added as one too."""
        if self._single(k, pending):
            return [self.ask()]
        return self._greedy(k, pending)

    def _fantasize(self, config: Config) -> None:
        self._running(config)

    def _running(self, config: Config) -> None:
        """Make `config` a `RUNNING` trial of the study (unless it is one, or was told), and never ask it."""
        key = self._key(config)
        if key in self._seen or key in self._pending:
            return
        state = self._optuna.trial.TrialState
        distributions = {name: self._distribution(self.space[name]) for name in config}
        self._study.add_trial(self._optuna.trial.create_trial(
            params=dict(config), distributions=distributions, state=state.RUNNING))
        self._pending[key] = self._study.get_trials(deepcopy=False)[-1].number
        self._asked.add(key)

    def ask(self) -> Config:
        self._raise_if_space_exhausted()
        fail = self._optuna.trial.TrialState.FAIL
        for _ in range(self.max_proposals):
            otrial = self._study.ask()
            config = self._valid_config(self._suggest(otrial))
            if config is not None and not self._taken(config):
                self._pending[self._key(config)] = otrial
                return self._hand_out(config)
            self._study.tell(otrial, state=fail)
        return self._hand_out(self._random_untried())

    def _suggest(self, otrial: optuna.trial.Trial) -> dict[str, Any]:
        proposal: dict[str, Any] = {}
        for knob in self.space.knobs:
            if knob.is_active(proposal):
                proposal[knob.name] = self._suggest_knob(otrial, knob)
        return proposal

    @staticmethod
    def _suggest_knob(otrial: optuna.trial.Trial, knob: Knob) -> Any:
        if isinstance(knob, Categorical) or knob.choices is not None:
            return otrial.suggest_categorical(knob.name, list(knob.choices or ()))
        assert knob.low is not None and knob.high is not None
        if isinstance(knob, Int):
            if knob.log and knob.step > 1:  # Optuna refuses step with log: snap onto the step grid
                raw = otrial.suggest_int(knob.name, knob.low, knob.high, log=True)
                return min(knob.low + round((raw - knob.low) / knob.step) * knob.step, knob.high)
            return otrial.suggest_int(knob.name, knob.low, knob.high, step=knob.step, log=knob.log)
        return otrial.suggest_float(knob.name, knob.low, knob.high, log=knob.log)

    def _distribution(self, knob: Knob) -> Any:
        """The Optuna distribution `_suggest_knob` samples from (for configs Optuna did not propose)."""
        dists = self._optuna.distributions
        if isinstance(knob, Categorical) or knob.choices is not None:
            return dists.CategoricalDistribution(list(knob.choices or ()))
        assert knob.low is not None and knob.high is not None
        if isinstance(knob, Int):
            step = 1 if knob.log else knob.step
            return dists.IntDistribution(knob.low, knob.high, log=knob.log, step=step)
        assert isinstance(knob, Float)
        return dists.FloatDistribution(knob.low, knob.high, log=knob.log)

    def _observe(self, trial: Trial) -> None:
        state = self._optuna.trial.TrialState
        otrial = self._pending.pop(self._key(trial.config), None)
        if otrial is None:  # a random fallback, or a config told without being asked (warm start)
            distributions = {name: self._distribution(self.space[name]) for name in trial.config}
            self._study.add_trial(self._optuna.trial.create_trial(
                params=dict(trial.config), distributions=distributions,
                value=trial.value if trial.ok else None, state=state.COMPLETE if trial.ok else state.FAIL))
        elif trial.ok:
            self._study.tell(otrial, trial.value)
        else:
            self._study.tell(otrial, state=state.FAIL)


class DSModelBased(_PoolStrategy):
    """DeepSpeed's autotuner `ModelBasedTuner`, rebuilt on scikit-learn.

    As in DeepSpeed: the first `n_initial` trials are random; then a boosted-tree model (DeepSpeed:
    XGBoost, 10 rounds, depth 3, eta 0.3; here `GradientBoostingRegressor` with the same settings)
    is fitted on the features of every evaluated config, and the untried candidate with the best
    prediction is chosen, except with probability `exploration` (DeepSpeed's
    `random_exploration_ratio = 0.2`) when a random untried one is. Tuning stops after `patience`
    consecutive trials without improvement (DeepSpeed's `tuner_early_stopping = 5`).

    Differences: the model regresses `log(value)` on `space.encode(config)`; failed trials get the
    worst `log(value)` seen (DeepSpeed: 0); equal predictions (tree models tie often) are broken at
    random rather than by candidate order.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> s = DSModelBased(Space([Int(name="num_threads", choices=(1, 2))]), seed=0)
        >>> c = s.ask(); s.tell(Trial(config=c, value=1.0)); s.ask() != c
        True
    """

    name = "ds_model_based"

    def __init__(self, space: Space, *, seed: int = 0, n_initial: int = 3, exploration: float = 0.2,
                 patience: int = 5) -> None:
        super().__init__(space, seed=seed)
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be a probability in [0, 1], got {exploration}")
        if n_initial < 1 or patience < 1:
            raise ValueError(f"n_initial and patience must be >= 1, got {n_initial} and {patience}")
        self.n_initial = n_initial
        self.exploration = exploration
        self.patience = patience
        self._features = np.stack([space.encode(c) for c in self._candidates]) if self._candidates else None
        self._xs: list[np.ndarray] = []
        self._log_values: list[float | None] = []  # None for a failed trial
        self._model: Any = None
        self._best_value: float | None = None
        self._since_best = 0

    @property
    def stopped(self) -> bool:
        """True once `patience` trials in a row have not improved on the best."""
        return self._since_best >= self.patience

    def ask(self) -> Config:
        if self.stopped:
            raise SearchExhausted(f"{self.name}: stopped early, {self._since_best} trials without"
                                  f" improvement on the best value {self._best_value}")
        untried = self._untried_indices()
        if not untried:
            raise self._exhausted()
        if self._model is None or self._rng.random() < self.exploration:
            return self._hand_out(self._candidates[self._rng.choice(untried)])
        self._rng.shuffle(untried)  # random tie-break among equal predictions
        assert self._features is not None
        predicted = self._model.predict(self._features[untried])
        return self._hand_out(self._candidates[untried[int(np.argmax(predicted))]])

    def _observe(self, trial: Trial) -> None:
        self._xs.append(self.space.encode(trial.config))
        self._log_values.append(_log_value(trial))
        self._update_early_stop(trial)
        if len(self._xs) >= self.n_initial:
            self._fit()

    def _update_early_stop(self, trial: Trial) -> None:
        # As DeepSpeed's `BaseTuner.tune`: failures before the first success do not count.
        if trial.ok and (self._best_value is None or (trial.value or 0.0) > self._best_value):
            self._best_value = trial.value
            self._since_best = 0
        elif self._best_value is not None:
            self._since_best += 1

    def _fit(self) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        ok = [v for v in self._log_values if v is not None]
        if not ok:
            return
        worst = min(ok)
        y = np.array([worst if v is None else v for v in self._log_values])
        self._model = GradientBoostingRegressor(n_estimators=10, learning_rate=0.3, max_depth=3,
                                                random_state=self.seed).fit(np.stack(self._xs), y)

    def predict(self, config: Config) -> float | None:
        if self._model is None:
            return None
        return float(math.exp(self._model.predict(self.space.encode(config)[None, :])[0]))

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"n_initial": self.n_initial, "exploration": self.exploration,
                                     "patience": self.patience, "stopped": self.stopped}
