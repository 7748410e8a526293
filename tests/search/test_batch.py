"""Batch proposals (`SearchStrategy.ask_batch`), checked for every registered strategy, and the lies
that condition a batch: AutoScout's Kriging believer, skopt's `cl_min`, Optuna's running trials."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from autoscout_plugin.search import SearchStrategy, make_strategy, strategy_names
from autoscout_plugin.space import Categorical, Condition, Config, Int, Space
from autoscout_plugin.trial import Trial

#: A conditional knob and no constraint: 54 configs, and every flattened point skopt proposes is one of
#: them (rejected proposals refit skopt's GP: on a constrained space the GP strategy is slow to test).
SPACE = Space([
    Categorical(name="strategy", choices=("single", "ddp"), structural=True),
    Int(name="ddp_bucket_cap_mb", choices=(25, 100), when=(Condition("strategy", ("ddp",)),)),
    Categorical(name="precision", choices=("32-true", "bf16-mixed", "16-mixed"), structural=True),
    Int(name="micro_batch_size", choices=(4, 8, 16)),
    Int(name="num_threads", choices=(1, 2)),
])


def throughput(config: Config) -> float:
    value = 100.0 * {"single": 0.6, "ddp": 1.0}[config["strategy"]]
    value *= {"32-true": 0.7, "bf16-mixed": 1.0, "16-mixed": 0.95}[config["precision"]]
    value *= {4: 0.8, 8: 1.0, 16: 0.9}[config["micro_batch_size"]] * (0.8 if config["num_threads"] == 1 else 1.0)
    return value * (1.0 if config.get("ddp_bucket_cap_mb", 25) == 25 else 0.97)


#: Told before a batch: enough for the model-based strategies to have left their random start
#: (skopt's 5 initial points, AutoScout's constant liar below 3 measurements).
HISTORY = 6
K = 3


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _key(config: Config) -> str:
    return SearchStrategy._key(config)


def _with_history(name: str, n: int = HISTORY, seed: int = 3) -> SearchStrategy:
    """A strategy that asked and was told `n` trials (one failure among them): a copy of one built once
    (Optuna's study cannot be deep-copied: rebuilt, it is fast)."""
    if name == "optuna_tpe":
        return _build(name, n, seed)
    return copy.deepcopy(_built(name, n, seed))


@functools.cache
def _built(name: str, n: int, seed: int) -> SearchStrategy:
    return _build(name, n, seed)


def _build(name: str, n: int, seed: int) -> SearchStrategy:
    strategy = make_strategy(name, SPACE, seed=seed)
    for number in range(n):
        config = strategy.ask()
        ok = number != 2
        strategy.tell(Trial(config=dict(config), status="ok" if ok else "error",
                            value=throughput(config) if ok else None, number=number))
    return strategy


@pytest.mark.parametrize("name", strategy_names())
class TestAskBatch:
    def test_k_distinct_canonical_feasible_configs_never_told_nor_pending(self, name: str) -> None:
        plain = _with_history(name).ask_batch(K)
        strategy = _with_history(name)
        # Running elsewhere: the config this strategy would have proposed first, and one it never saw.
        told = {_key(t.config) for t in strategy.trials}
        other = next(c for c in SPACE.enumerate() if _key(c) not in told and _key(c) not in map(_key, plain))
        pending = [plain[0], other]
        batch = strategy.ask_batch(K, pending=pending)
        keys = [_key(c) for c in batch]
        assert len(batch) == K and len(set(keys)) == K
        for config in batch:
            assert SPACE.canonical(config) == config
            assert SPACE.is_feasible(config), SPACE.violations(config)
        assert not set(keys) & told
        assert not set(keys) & {_key(c) for c in pending}

    def test_same_seed_same_batches(self, name: str) -> None:
        def rounds() -> list[list[Config]]:
            strategy, out = _build(name, 2, seed=5), []
            for _ in range(2):
                batch = strategy.ask_batch(2)
                out.append(batch)
                for config in batch:
                    strategy.tell(Trial(config=dict(config), value=throughput(config)))
            return out

        first, second = rounds(), rounds()
        assert first == second
        keys = [_key(c) for batch in first for c in batch]
        assert len(set(keys)) == len(keys)  # the second round repeats nothing of the first

    @pytest.mark.parametrize("k", [0, -1, "2", 2.0, True])
    def test_bad_k_is_refused(self, name: str, k: Any) -> None:
        strategy = make_strategy(name, SPACE, seed=0)
        with pytest.raises(ValueError, match="k >= 1"):
            strategy.ask_batch(k)

    @pytest.mark.parametrize("history", [2, HISTORY])  # skopt: its random start, then its GP
    def test_a_batch_of_one_without_pending_is_ask(self, name: str, history: int) -> None:
        assert _with_history(name, history).ask_batch(1) == [_with_history(name, history).ask()]

    def test_a_batch_leaves_the_real_search_untouched(self, name: str) -> None:
        strategy = _with_history(name)
        trials = list(strategy.trials)
        snapshot = [(t.config, t.value, t.status, dict(t.metrics)) for t in trials]
        best = strategy.best
        strategy.ask_batch(K)
        assert strategy.trials == trials  # the same Trial objects, none added (no fantasy told for real)
        assert [(t.config, t.value, t.status, dict(t.metrics)) for t in strategy.trials] == snapshot
        assert strategy.best is best


# ------------------------------------------------------------------------------------------- lies
def test_autoscout_lie_is_none_before_any_measurement_then_the_worst_then_capped_at_the_best() -> None:
    strategy: Any = make_strategy("autoscout", SPACE, seed=0)
    configs = SPACE.enumerate()
    assert strategy._lie(configs[0]) is None
    strategy.tell(Trial(config=configs[0], status="error"))
    assert strategy._lie(configs[1]) is None  # a failure is no measurement
    strategy.tell(Trial(config=configs[1], value=4.0))
    strategy.tell(Trial(config=configs[2], value=9.0))
    assert strategy._lie(configs[5]) == 4.0  # fewer than 3 measurements: the worst (constant liar)
    strategy.tell(Trial(config=configs[3], value=1e6, metrics={"fantasy": True}))  # a lie is no measurement
    assert strategy._lie(configs[5]) == 4.0
    strategy.tell(Trial(config=configs[4], value=6.0))
    assert strategy._lie(configs[5]) == pytest.approx(min(math.exp(float(strategy._predict([configs[5]])[0][0])), 9.0))
    strategy._predict = lambda cs: (np.full(len(cs), math.log(1e9)), np.full(len(cs), 0.1))
    assert strategy._lie(configs[5]) == 9.0  # above the best measured value: capped (the fantasy's 1e6 ignored)
    strategy._predict = lambda cs: (np.full(len(cs), math.log(5.0)), np.full(len(cs), 0.1))
    assert strategy._lie(configs[5]) == pytest.approx(5.0)  # Kriging believer: the surrogate's mean


def test_skopt_lie_is_cl_min_the_best_measured_value() -> None:
    strategy: Any = make_strategy("skopt_gp", SPACE, seed=0)
    configs = SPACE.enumerate()
    assert strategy._lie(configs[0]) == 1.0  # skopt lies 0.0 before any point: -log(1.0)
    for config, value in zip(configs, (2.0, 5.0, 3.0)):
        strategy.tell(Trial(config=config, value=value))
    strategy.tell(Trial(config=configs[3], status="error"))  # a penalty: the worst -log(value)
    assert strategy._lie(configs[9]) == pytest.approx(5.0)
    optimizer = strategy._adapter.optimizer
    told = len(optimizer.yi)
    strategy.tell(Trial(config=configs[9], value=strategy._lie(configs[9]), metrics={"fantasy": True}))
    assert optimizer.yi[told] == min(optimizer.yi[:told])  # told as skopt's cl_min exactly
    assert strategy._worst_y == -math.log(2.0)  # a lie is not a measurement: the penalty is unchanged


def test_optuna_batch_and_pending_configs_are_running_trials_of_the_study() -> None:
    import optuna

    strategy: Any = _with_history("optuna_tpe")
    told = {_key(t.config) for t in strategy.trials}
    elsewhere = next(c for c in SPACE.enumerate() if _key(c) not in told)
    batch = strategy.ask_batch(2, pending=[elsewhere])
    study = strategy._study
    running = [t.params for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    assert sorted(map(_key, running)) == sorted(map(_key, [elsewhere, *batch]))
    assert study.sampler._constant_liar
    for config in [elsewhere, *batch]:
        strategy.tell(Trial(config=dict(config), value=throughput(config)))
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    complete = {_key(t.params): t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert complete[_key(elsewhere)] == throughput(elsewhere)


def test_a_batch_draws_are_carried_over_not_replayed_by_the_next_batch() -> None:
    # ds_model_based explores at random: the batch's copy drew from the strategy's stream.
    strategy: Any = _with_history("ds_model_based")
    before = strategy.rng.getstate()
    strategy.ask_batch(K)
    assert strategy.rng.getstate() != before
    # As skopt's own `ask(n_points)`: one draw of the optimizer's random state seeds the batch's copy.
    skopt: Any = _with_history("skopt_gp", 2)
    before = skopt._adapter.optimizer.rng.randint(0, 2**31, size=8).tolist()
    skopt = _with_history("skopt_gp", 2)
    skopt.ask_batch(K)
    assert skopt._adapter.optimizer.rng.randint(0, 2**31, size=8).tolist() != before


def test_autoscout_spreads_a_batch_over_arms_and_lies_with_the_cost_model_before_any_measurement() -> None:
    from benchmarks.replay import load_table

    table = load_table("benchmarks/tables/bert_encoder.csv")
    strategy: Any = make_strategy("autoscout", table.space, seed=0, cost_model=table.cost_model())
    first = strategy.candidates[0]
    assert strategy._lie(first) == pytest.approx(strategy.predict(first))  # F0 is all there is before a trial
    batch = strategy.ask_batch(4)
    arms = {_key(table.space.arm_of(c)) for c in batch}
    assert len(arms) >= 3, batch  # not four dense variants of one arm
    assert strategy.trials == [] and not strategy._batch_arms  # the real search is untouched
    held_only: Any = make_strategy("autoscout", table.space, seed=0, cost_model=table.cost_model())
    held_only._lie = lambda config: None  # no fantasy at all: the arm penalty alone spreads the batch
    assert len({_key(table.space.arm_of(c)) for c in held_only.ask_batch(4)}) >= 3
    ghost = copy.deepcopy(strategy)
    ghost._fantasize(batch[0])
    same = [c for c in strategy.candidates if table.space.arm_of(c) == table.space.arm_of(batch[0])]
    other = [c for c in strategy.candidates if table.space.arm_of(c) != table.space.arm_of(batch[0])]
    assert ghost._batch_penalty([same[0], other[0]]).tolist() == [0.5, 1.0]
    assert ghost.best is None  # a fantasy is no measurement: no incumbent, no trust region around it
