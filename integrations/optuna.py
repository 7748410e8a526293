"""AutoScout's search as an Optuna sampler: Optuna users, and Ray Tune's `OptunaSearch`, drive it with their
own study and storage.

`AutoScoutSampler(space)` is an `optuna.samplers.BaseSampler`. For each new trial it tells an AutoScout
search strategy (`autoscout_plugin.search.make_strategy`; `"autoscout"`, the hybrid search, by default) the
study's finished trials it has not seen yet, then asks it for one config conditioned on the trials still
running (`SearchStrategy.ask_batch(1, pending=...)`), and hands that config to Optuna as the trial's
relative parameters. The objective reads the config with `suggest_config(trial, space)`.

- **Objective.** Maximised, and positive: samples/s (or any throughput). A study created with
  `direction="minimize"` (or several objectives) is refused with a `ValueError` at its first trial: the
  search models the log of the value, so a negated value cannot be told. Turn a time into a rate
  (`1 / step_s`) instead. A finished value that is not positive is told as a failed trial.
- **Finished trials.** `COMPLETE` is told with its value; `FAIL` and `PRUNED` as failed trials. A failure's
  class (`autoscout_plugin.failures`) comes from the trial's user attribute `autoscout_failure`, else is
  diagnosed from `autoscout_error` (the error text), else is `crash`; `autoscout_blame` names the knobs the
  failure rules out. `record_failure(trial, exc)` sets them: an `unsupported` failure that names a knob
  (`compile` after a dynamo error) takes that value out of the search.
- **Running trials.** Each proposal is stored in its trial's system attributes (`autoscout:proposal`), so a
  study shared by threads (`n_jobs`), by processes or by machines (an RDB storage) sees every running
  config, and the search conditions its next proposal on them instead of repeating them. Between
  processes, a proposal that another worker has just taken is dropped and asked again (after a short random
  back-off). A trial left `RUNNING` by a dead worker stays pending: enable Optuna's heartbeat
  (`RDBStorage(heartbeat_interval=...)`) so such trials are failed.
- **Your own suggestions.** An objective that suggests a knob itself must use its distribution from
  `space_distributions(space)`: Optuna raises when a proposed parameter is suggested with another kind of
  distribution, or a categorical with other choices.
- **Other parameters.** A parameter that is not a knob of the space, a knob inactive under the proposal,
  and a suggestion whose distribution does not contain the proposed value are sampled by
  `optuna.samplers.RandomSampler(seed)`, with a warning (once each). Once the search has no untried config
  left, the trial is sampled at random too and `study.optimize` stops after it (as `GridSampler` does).

Usage (Optuna)::

    import optuna
    from autoscout_plugin.integrations.optuna import AutoScoutSampler, suggest_config

    def objective(trial):
        config = suggest_config(trial, space)   # {"micro_batch_size": 16, "precision": "bf16-mixed", ...}
        return run_and_measure(config)          # samples/s, higher is better

    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space),
                                storage="sqlite:///tune.db", study_name="tune", load_if_exists=True)
    study.optimize(objective, n_trials=20)

Ray Tune (`ray.tune.search.optuna.OptunaSearch` takes any `BaseSampler` as `sampler=`; leave its `seed`
unset): give the space define-by-run, as a picklable function (Ray pickles the searcher at checkpoints, so
not a lambda); the trainable gets the config as its `config`::

    search = OptunaSearch(space=functools.partial(suggest_config, space=space), metric="samples_per_s",
                          mode="max", sampler=AutoScoutSampler(space))
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=search, num_samples=20)).fit()

The proposal is computed at the first `suggest_*` call, inside the define-by-run function, so Ray may warn
that the function took over a second; that is the search, not the trainable's work.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autoscout_plugin.failures import FAILURE_CLASSES, describe_exception
from autoscout_plugin.redact import redact
from autoscout_plugin.search import SearchExhausted, SearchStrategy, strategy_class, strategy_names
from autoscout_plugin.space import Categorical, Config, Float, Int, Knob, Space
from autoscout_plugin.trial import Trial

__all__ = ["AutoScoutSampler", "knob_distribution", "record_failure", "space_distributions", "suggest_config"]

PROPOSAL_ATTR = "autoscout:proposal"
"""The trial system attribute that holds the config the sampler proposed for it."""
FAILURE_ATTR, ERROR_ATTR, BLAME_ATTR = "autoscout_failure", "autoscout_error", "autoscout_blame"
"""User attributes of a failed trial: its failure class, its error text, the knobs it blames."""

_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
_CLASH_RETRIES = 5
_STATUS_OF = {"oom": "oom", "timeout": "timeout", "nan": "nan"}


# ------------------------------------------------------------------------------ the space in Optuna's terms
def knob_distribution(knob: Knob) -> BaseDistribution:
    """The Optuna distribution of one knob: a `CategoricalDistribution` of its choices (categorical knobs,
    and numeric knobs given as `choices`), else an `IntDistribution`/`FloatDistribution` over its range."""
    if isinstance(knob, Categorical) or knob.choices is not None:
        return CategoricalDistribution(tuple(knob.grid()))
    assert knob.low is not None and knob.high is not None
    if isinstance(knob, Int):
        return IntDistribution(knob.low, knob._top, log=knob.log, step=knob.step)
    assert isinstance(knob, Float)
    return FloatDistribution(knob.low, knob.high, log=knob.log)


def space_distributions(space: Space) -> dict[str, BaseDistribution]:
    """Every knob's distribution (`knob_distribution`), by name, in catalogue order."""
    _check_space(space)
    return {knob.name: knob_distribution(knob) for knob in space.knobs}


def suggest_config(trial: Any, space: Space) -> Config:
    """Suggest each knob active so far (catalogue order: a conditional knob only when its condition holds
    given the values before it) on an Optuna trial, and return the canonical config.

    Categorical knobs and numeric knobs with `choices` go through `trial.suggest_categorical`, numeric
    ranges through `suggest_int`/`suggest_float`, with the distributions `AutoScoutSampler` proposes in.
    """
    _check_space(space)
    config: Config = {}
    for knob in space.knobs:
        if not knob.is_active(config):
            continue
        dist = knob_distribution(knob)
        if isinstance(dist, CategoricalDistribution):
            config[knob.name] = trial.suggest_categorical(knob.name, dist.choices)
        elif isinstance(dist, IntDistribution):
            config[knob.name] = trial.suggest_int(knob.name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            assert isinstance(dist, FloatDistribution)
            config[knob.name] = trial.suggest_float(knob.name, dist.low, dist.high, log=dist.log)
    return space.canonical(config)


def record_failure(trial: Any, error: BaseException | str | None = None, *, failure: str | None = None,
                   blame: str | Sequence[str] = ()) -> None:
    """Describe a failing trial for the sampler, before the objective re-raises (or returns None).

    `error` (an exception or its text, secrets redacted) is diagnosed into a failure class when `failure`
    is not given (`autoscout_plugin.failures.diagnose`: a dynamo error in a compiled config is
    `unsupported`, blaming `compile`); `failure` is one of `FAILURE_CLASSES`; `blame` names the knobs an
    `unsupported` failure rules out (their values in this trial are not tried again).
    """
    if failure is not None and failure not in FAILURE_CLASSES:
        raise ValueError(f"record_failure: failure={failure!r} is not a failure class; use one of"
                         f" {FAILURE_CLASSES}")
    names = [blame] if isinstance(blame, str) else list(blame)
    if any(not isinstance(n, str) for n in names):
        raise ValueError(f"record_failure: blame={blame!r} must be a knob name or a list of knob names")
    if error is not None:
        text = describe_exception(error) if isinstance(error, BaseException) else str(error)
        trial.set_user_attr(ERROR_ATTR, redact(text))
    if failure is not None:
        trial.set_user_attr(FAILURE_ATTR, failure)
    if names:
        trial.set_user_attr(BLAME_ATTR, names)


def _check_space(space: Any) -> None:
    if not isinstance(space, Space):
        raise ValueError(f"space must be an autoscout_plugin.space.Space, got {type(space).__name__} {space!r:.80};"
                         " build one with Space([...knobs]) or autoscout_plugin.space.builder.build_space")


# ------------------------------------------------------------------------------------------------ sampler
@dataclass
class _StudyState:
    """The cached search of one study: rebuilt when a trial it was told is gone, else told only new ones."""

    storage: Any
    strategy: SearchStrategy
    told: set[int] = field(default_factory=set)


class AutoScoutSampler(BaseSampler):
    """AutoScout's search (or another registered strategy) as an Optuna sampler.

    Args:
        space: the `Space` to search; the objective reads its config with `suggest_config(trial, space)`.
        search: a strategy name from `autoscout_plugin.search.strategy_names()` (`"autoscout"`: the hybrid).
        seed: the strategy's seed and the fallback `RandomSampler`'s.
        cost_model: the analytical model (F0) for the `"autoscout"` search; None runs it on measurements.
        **strategy_options: passed to the strategy (`HybridSearch(memory_limit_mb=..., ...)`).

    Raises:
        ValueError: a `space` that is not a `Space`, an unknown `search`, a `seed` that is not an integer, or
            options the strategy does not take; at the first trial, a study that does not maximise one
            objective.

    The objective must be maximised and positive (samples/s); see the module docstring for how finished,
    failed and running trials are read, and the thread and process safety.
    """

    def __init__(self, space: Space, *, search: str = "autoscout", seed: int = 0, cost_model: Any = None,
                 **strategy_options: Any) -> None:
        _check_space(space)
        if not isinstance(search, str) or search not in strategy_names():
            raise ValueError(f"unknown search {search!r}; choose one of {strategy_names()}"
                             " (\"autoscout\" is AutoScout's own)")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r} ({type(seed).__name__}); pass e.g. seed=0")
        options = dict(strategy_options)
        if cost_model is not None:
            options["cost_model"] = cost_model
        cls = strategy_class(search)
        try:
            inspect.signature(cls.__init__).bind(None, space, seed=seed, **options)
        except TypeError as exc:
            raise ValueError(f"search {search!r} ({cls.__name__}) does not take the options {sorted(options)}:"
                             f" {exc}; see {cls.__name__}'s arguments") from None
        self.space = space
        self.search = search
        self.seed = seed
        self._options = options
        self._random = RandomSampler(seed=seed)
        self._distributions = space_distributions(space)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.RLock()
        self._states: dict[tuple[int, int], _StudyState] = {}
        self._warned: set[str] = set()
        self._backoff = random.Random()  # desynchronises workers that proposed the same config at once

    def __getstate__(self) -> dict[str, Any]:  # picklable (Ray checkpoints its searcher): no lock, no cache
        state = dict(self.__dict__)
        for name in ("_lock", "_states", "_warned", "_backoff"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __str__(self) -> str:
        return f"AutoScoutSampler(search={self.search!r}, seed={self.seed})"

    def reseed_rng(self) -> None:
        with self._lock:
            self._random.reseed_rng()

    # ------------------------------------------------------------------------------------ Optuna's hooks
    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        directions = study.directions
        if len(directions) != 1 or directions[0] != StudyDirection.MAXIMIZE:
            # Not left RUNNING: it would be a phantom pending config for every later proposal.
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            got = [d.name.lower() for d in directions]
            raise ValueError(
                f"AutoScoutSampler maximises one objective (samples/s), but study {study.study_name!r} has"
                f" direction(s) {got}; create it with direction=\"maximize\" and return a rate"
                " (samples/s, or 1 / seconds per step)")

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            proposal = self._propose(study, trial)
        if proposal is None:
            return {}
        return {k: v for k, v in proposal.items() if k in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        with self._lock:
            if param_name not in self.space:
                self._warn(f"unknown:{param_name}",
                           f"parameter {param_name!r} is not a knob of the AutoScout space (knobs: {self.space.names});"
                           " it is sampled at random and the search does not learn from it: add it to the Space,"
                           " or suggest the config with suggest_config(trial, space)")
            else:
                proposal = trial.system_attrs.get(PROPOSAL_ATTR)
                if isinstance(proposal, dict) and param_name in proposal:
                    self._warn(f"distribution:{param_name}",
                               f"the objective suggests knob {param_name!r} with {param_distribution}, which does"
                               f" not hold the proposed value {proposal[param_name]!r} (the space's distribution is"
                               f" {self._distributions[param_name]}); it is sampled at random: suggest it with"
                               " suggest_config(trial, space)")
                elif isinstance(proposal, dict):
                    self._warn("inactive", f"knob {param_name!r} is inactive in the proposed config (its"
                               " conditions do not hold); it is sampled at random and left out of the config the"
                               " search is told: suggest_config(trial, space) suggests only the active knobs")
            return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ------------------------------------------------------------------------------------------ the search
    def _propose(self, study: Study, trial: FrozenTrial) -> Config | None:
        given = self._config_of(trial, allow_partial=True) or {}  # enqueued values win over the proposal
        taken: dict[str, Config] = {}
        for attempt in range(_CLASH_RETRIES):
            trials = study.get_trials(deepcopy=False)
            state = self._update(study, trials)
            pending = self._pending(trials, trial) | taken
            try:
                proposal = state.strategy.ask_batch(1, pending=list(pending.values()))[0]
            except SearchExhausted as exc:
                self._warn("exhausted", f"the search has no config left to propose ({exc}); this trial is"
                           " sampled at random and study.optimize stops after it (as GridSampler does)")
                if getattr(study._thread_local, "in_optimize_loop", False):
                    study.stop()
                return None
            record = self._merge(proposal, given)
            study._storage.set_trial_system_attr(trial._trial_id, PROPOSAL_ATTR, record)
            # Written, then read: of two workers (processes) that chose the same config at once, the later
            # writer always sees the earlier one and asks again (the earlier may too: the random back-off
            # breaks the tie). Finished trials count: one may have run and finished meanwhile.
            key = self._key(record)
            if attempt == _CLASH_RETRIES - 1 or key not in self._taken(study.get_trials(deepcopy=False), trial):
                return proposal
            taken[key] = record
            time.sleep(self._backoff.uniform(0.0, 0.05 * (attempt + 1)))
        return None  # pragma: no cover - the loop returns on its last attempt

    def _update(self, study: Study, trials: Sequence[FrozenTrial]) -> _StudyState:
        """The study's cached strategy, told the finished trials it has not seen (rebuilt if one is gone)."""
        key = (id(study._storage), study._study_id)
        finished = [t for t in trials if t.state in _FINISHED]
        ids = {t._trial_id for t in finished}
        state = self._states.get(key)
        if state is None or state.storage is not study._storage or not state.told <= ids:
            strategy = strategy_class(self.search)(self.space, seed=self.seed, **self._options)
            state = self._states[key] = _StudyState(study._storage, strategy)
        for t in sorted(finished, key=lambda t: t.number):
            if t._trial_id in state.told:
                continue
            state.told.add(t._trial_id)
            told = self._to_trial(t)
            if told is not None:
                state.strategy.tell(told)
        return state

    def _to_trial(self, t: FrozenTrial) -> Trial | None:
        config = self._config_of(t)
        if config is None:
            if t.params or t.system_attrs.get(PROPOSAL_ATTR):
                self._warn(f"config:{t.number}", f"trial {t.number}'s parameters {t.params} are not a config of the"
                           " space (a knob missing or out of range); the search is not told it")
            return None
        cost = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
            else 0.0
        value = t.value if t.state == TrialState.COMPLETE else None
        if value is not None and math.isfinite(value) and value > 0:
            return Trial(config=config, value=float(value), cost_s=max(cost, 0.0), number=t.number)
        failure = t.user_attrs.get(FAILURE_ATTR)
        if failure is not None and failure not in FAILURE_CLASSES:
            self._warn(f"failure:{failure}", f"trial {t.number}: user attribute {FAILURE_ATTR}={failure!r} is not"
                       f" one of {FAILURE_CLASSES}; it is read as 'crash'")
            failure = "crash"
        text = t.user_attrs.get(ERROR_ATTR)
        if failure is None and not text:
            failure = "crash"  # no class and no error text to diagnose one from
        if not text:
            text = {TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
                t.state, f"objective value {value!r} is not a positive rate")
        trial = Trial(config=config, status=_STATUS_OF.get(failure or "", "error"), error=str(text),
                      failure=failure, cost_s=max(cost, 0.0), number=t.number)
        blame = t.user_attrs.get(BLAME_ATTR) or []
        blame = [blame] if isinstance(blame, str) else [b for b in blame if isinstance(b, str)]
        if blame:  # the user's word over the diagnosis
            trial.blame = [b for b in blame if b in config]
        return trial

    def _config_of(self, t: FrozenTrial, *, allow_partial: bool = False) -> Config | None:
        """A trial's config: its proposal, overridden by its fixed (enqueued) and suggested parameters."""
        proposal = t.system_attrs.get(PROPOSAL_ATTR)
        proposal = proposal if isinstance(proposal, dict) else {}
        fixed = t.system_attrs.get("fixed_params") or {}
        merged = {k: v for k, v in {**proposal, **fixed, **t.params}.items() if k in self.space}
        if allow_partial:
            return merged
        try:
            return self.space.canonical(merged, allow_inactive=True)
        except ValueError:
            return None

    def _merge(self, proposal: Config, given: Config) -> Config:
        if not given:
            return proposal
        try:
            return self.space.canonical({**proposal, **given}, allow_inactive=True)
        except ValueError:
            return proposal

    def _pending(self, trials: Iterable[FrozenTrial], current: FrozenTrial) -> dict[str, Config]:
        """The configs of the other trials still running or waiting (enqueued), by key."""
        return self._taken(trials, current, (TrialState.RUNNING, TrialState.WAITING))

    def _taken(self, trials: Iterable[FrozenTrial], current: FrozenTrial,
               states: Sequence[TrialState] | None = None) -> dict[str, Config]:
        """The configs of the study's other trials (in `states`, or any), by key."""
        out: dict[str, Config] = {}
        for t in trials:
            if t._trial_id == current._trial_id or (states is not None and t.state not in states):
                continue
            config = self._config_of(t)
            if config is not None:
                out.setdefault(self._key(config), config)
        return out

    @staticmethod
    def _key(config: Config) -> str:
        return json.dumps(config, sort_keys=True, default=str)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"AutoScoutSampler: {message}", UserWarning, stacklevel=3)

