"""The ask/tell contract, checked for every registered search strategy (ours and the baselines).

One suite, every implementation passes it (as Optuna's `pytest_samplers.py` does for samplers).
The objective is synthetic: a deterministic function of the config, so runs are fast and seeded.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from threadpoolctl import threadpool_limits

from autoscout_plugin.search import SearchExhausted, SearchStrategy, make_strategy, strategy_names
from autoscout_plugin.space import (
    Bool,
    Categorical,
    Condition,
    Config,
    GlobalBatch,
    Implies,
    Int,
    MaxProduct,
    Space,
)
from autoscout_plugin.trial import Trial


def _hybrid_importable() -> bool:
    try:
        importlib.import_module("autoscout_plugin.search.hybrid")
    except Exception:
        return False
    return True


def _strategy_params() -> list[Any]:
    # The hybrid search is written alongside these tests: expected to fail only while it cannot be imported.
    missing = pytest.mark.xfail(reason="autoscout_plugin.search.hybrid cannot be imported yet", strict=False)
    return [pytest.param(name, marks=missing) if name == "autoscout" and not _hybrid_importable() else name
            for name in strategy_names()]


#: Strategies allowed to raise `SearchExhausted` before every feasible config has been tried.
STOPS_EARLY = {"ds_model_based"}

SEED = 7


# ------------------------------------------------------------------------------------------ spaces
def _conditional_knobs(precisions: tuple[str, ...] = ()) -> list[Any]:
    precision = [Categorical(name="precision", choices=precisions, structural=True)] if precisions else []
    return [
        Categorical(name="strategy", choices=("single", "ddp", "fsdp"), structural=True),
        Int(name="num_processes", choices=(1, 2), structural=True),
        Bool("fsdp_reshard_after_forward", when=(Condition("strategy", ("fsdp",)),)),
        *precision,
        Int(name="micro_batch_size", choices=(4, 8, 16, 32), log=True),
        Int(name="num_threads", choices=(1, 2)),
    ]


_CONSTRAINTS = (
    Implies("strategy", ("single",), "num_processes", (1,)),
    Implies("strategy", ("ddp", "fsdp"), "num_processes", (2,)),
    GlobalBatch(32),
    MaxProduct(("num_threads", "num_processes"), 2, "cores"),
)

#: A conditional knob, implications, a global batch and a cores cap: 17 feasible configs of 96 flattened
#: points (small, so that a run until exhaustion stays fast for the GP baseline).
CONDITIONAL = Space(_conditional_knobs(), _CONSTRAINTS)

#: Three configs.
TINY = Space([Categorical(name="precision", choices=("32-true", "bf16-mixed", "16-mixed"))])

#: The conditional space with compile and pin_memory: 204 feasible configs, 16 of them within 5% of the best.
OPTIMISE = Space(_conditional_knobs(("32-true", "bf16-mixed", "16-mixed")) + [
    Categorical(name="compile", choices=("off", "default"), structural=True),
    Bool("pin_memory"),
], _CONSTRAINTS)

# ---------------------------------------------------------------------------------------- objective
_FACTORS: dict[str, dict[Any, float]] = {
    "precision": {"32-true": 0.75, "bf16-mixed": 1.0, "16-mixed": 0.985},
    "micro_batch_size": {4: 0.85, 8: 0.99, 16: 1.0, 32: 0.92},
    "pin_memory": {False: 0.995, True: 1.0},
}


def throughput(config: Config) -> float:
    """Synthetic samples/s (at most 100): per-knob factors, parallelism, a compile x precision interaction.

    The best configs (within 5%) are exactly: strategy ddp or fsdp without resharding, a mixed precision,
    compile on, micro batch 8 or 16 (pin_memory free). Everything else is at least 10% worse.
    """
    value = 100.0
    for knob, factors in _FACTORS.items():
        value *= factors.get(config.get(knob), 1.0)
    cores_used = config["num_threads"] * config["num_processes"]
    value *= {"single": 0.65, "ddp": 0.985, "fsdp": 1.0}[config["strategy"]] * (cores_used / 2) ** 0.8
    if config.get("fsdp_reshard_after_forward"):
        value *= 0.9
    if "compile" in config:  # compile pays off with mixed precision only (docs/design.md measurements)
        mixed = config["precision"] != "32-true"
        value *= (1.0 if mixed else 0.97) if config["compile"] == "default" else (0.87 if mixed else 1.0)
    return value


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    """The GP's small matrices gain nothing from threads; on shared cores they only slow it down."""
    with threadpool_limits(limits=1):
        yield


# -------------------------------------------------------------------------------------------- runs
def _drive(strategy: SearchStrategy, objective: Any, n_trials: int, fail: Any = None,
           until: Any = None) -> tuple[list[Config], bool]:
    """Ask/tell up to `n_trials` times (or `until(config)` holds); returns the configs asked and whether
    SearchExhausted ended the run."""
    asked: list[Config] = []
    for number in range(n_trials):
        try:
            config = strategy.ask()
        except SearchExhausted:
            return asked, True
        asked.append(config)
        status = fail(number) if fail is not None else "ok"
        value = objective(config) if status == "ok" else None
        strategy.tell(Trial(config=dict(config), status=status, value=value, number=number))
        if until is not None and until(config):
            break
    return asked, False


@functools.cache
def _whole_run(name: str) -> tuple[tuple[Config, ...], bool]:
    """Every strategy over CONDITIONAL until SearchExhausted (shared by several tests)."""
    asked, exhausted = _drive(make_strategy(name, CONDITIONAL, seed=SEED), throughput,
                              len(CONDITIONAL.enumerate()) + 5)
    return tuple(asked), exhausted


def _key(config: Config) -> str:
    return SearchStrategy._key(config)


@pytest.mark.parametrize("name", _strategy_params())
class TestSearchStrategyContract:
    def test_registered_class_has_its_name(self, name: str) -> None:
        strategy = make_strategy(name, TINY, seed=0)
        assert isinstance(strategy, SearchStrategy)
        assert strategy.name == name

    def test_asks_canonical_feasible_configs(self, name: str) -> None:
        asked, _ = _whole_run(name)
        assert asked
        for config in asked:
            assert CONDITIONAL.canonical(config) == config
            assert CONDITIONAL.is_feasible(config), CONDITIONAL.violations(config)

    def test_never_asks_a_config_twice_until_exhausted(self, name: str) -> None:
        asked, exhausted = _whole_run(name)
        keys = [_key(c) for c in asked]
        assert len(set(keys)) == len(keys)
        assert exhausted, "the run should end with SearchExhausted once every feasible config was tried"
        if name not in STOPS_EARLY:
            assert sorted(keys) == sorted(_key(c) for c in CONDITIONAL.enumerate())

    def test_exhausting_a_tiny_space_raises(self, name: str) -> None:
        strategy = make_strategy(name, TINY, seed=SEED)
        asked, exhausted = _drive(strategy, lambda c: {"32-true": 1.0, "bf16-mixed": 2.0, "16-mixed": 1.5}[
            c["precision"]], 10)
        assert exhausted
        assert len({_key(c) for c in asked}) == len(asked)
        if name not in STOPS_EARLY:
            assert len(asked) == 3
        with pytest.raises(SearchExhausted):
            strategy.ask()

    def test_failed_trials_are_accepted_and_not_asked_again(self, name: str) -> None:
        strategy = make_strategy(name, CONDITIONAL, seed=SEED)
        statuses = ("ok", "error", "oom")
        asked, _ = _drive(strategy, throughput, 9, fail=lambda n: statuses[n % 3])
        assert len(asked) >= 6
        keys = [_key(c) for c in asked]
        assert len(set(keys)) == len(keys)
        assert [t.status for t in strategy.trials] == [statuses[n % 3] for n in range(len(asked))]
        assert strategy.best is not None and strategy.best.ok
        assert strategy.best.value == max(throughput(c) for c in asked[::3])

    def test_configs_told_without_asking_are_not_asked(self, name: str) -> None:
        strategy = make_strategy(name, CONDITIONAL, seed=SEED)
        warm = CONDITIONAL.enumerate()[::7]
        for config in warm:
            strategy.tell(Trial(config=dict(config), value=throughput(config)))
        asked, _ = _drive(strategy, throughput, 6)
        assert asked
        assert not {_key(c) for c in asked} & {_key(c) for c in warm}

    def test_same_seed_same_sequence(self, name: str) -> None:
        whole, _ = _whole_run(name)
        again, _ = _drive(make_strategy(name, CONDITIONAL, seed=SEED), throughput, 8)
        assert again == list(whole[:len(again)])
        assert len(again) >= min(6, len(whole))

    def test_finds_a_config_within_5_percent_of_the_optimum_in_40_trials(self, name: str) -> None:
        optimum = max(throughput(c) for c in OPTIMISE.enumerate())
        asked, _ = _drive(make_strategy(name, OPTIMISE, seed=0), throughput, 40,
                          until=lambda c: throughput(c) >= 0.95 * optimum)  # stop early: the GP is slow
        ratio = max(throughput(c) for c in asked) / optimum
        if name == "grid":  # grid order is no optimizer, and the check below is not passed by just any order
            assert ratio < 0.95
            assert asked == OPTIMISE.enumerate()[:40]
        else:
            assert ratio >= 0.95, f"{name}: best after {len(asked)} trials is {ratio:.3f} of the optimum"


# ------------------------------------------------------------------------------ DeepSpeed early stop
def test_ds_model_based_stops_after_5_trials_without_improvement() -> None:
    strategy = make_strategy("ds_model_based", OPTIMISE, seed=0)
    asked, exhausted = _drive(strategy, lambda c: 10.0, 50)
    assert exhausted
    assert len(asked) == 1 + 5  # the first trial sets the best; five more without improvement stop it


def test_ds_model_based_keeps_going_while_it_improves() -> None:
    strategy = make_strategy("ds_model_based", OPTIMISE, seed=0)
    counter = iter(range(1, 1000))
    asked, exhausted = _drive(strategy, lambda c: float(next(counter)), 30)
    assert not exhausted and len(asked) == 30


def test_ds_model_based_failures_count_as_no_improvement() -> None:
    strategy = make_strategy("ds_model_based", OPTIMISE, seed=0)
    asked, exhausted = _drive(strategy, lambda c: 5.0, 50, fail=lambda n: "ok" if n in (2, 4) else "error")
    assert exhausted
    # As DeepSpeed: failures before the first success do not count; trial 2 sets the best, trial 4 ties
    # it (no improvement), and trials 3 and 5-7 fail: five trials without improvement after trial 2.
    assert len(asked) == 2 + 1 + 5
