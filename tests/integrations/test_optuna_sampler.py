"""`AutoScoutSampler`: AutoScout's search driving real Optuna studies (no mocks), in memory, with threads and
with an SQLite storage shared by two processes; and once through Ray Tune's `OptunaSearch`."""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from autoscout_plugin.integrations.optuna import (
    PROPOSAL_ATTR,
    AutoScoutSampler,
    record_failure,
    space_distributions,
    suggest_config,
)
from threadpoolctl import threadpool_limits

from autoscout_plugin.space import Bool, Categorical, Condition, Config, Int, Space

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _space() -> Space:
    """96 configs: a conditional knob (`cpu_offload` under fsdp), choices and a plain integer range."""
    return Space([
        Categorical(name="strategy", choices=("single", "fsdp"), structural=True),
        Bool("cpu_offload", structural=True, when=(Condition("strategy", ("fsdp",)),)),
        Categorical(name="compile", choices=("off", "default"), structural=True),
        Int(name="micro_batch_size", choices=(1, 2, 4, 8)),
        Int(name="num_threads", low=1, high=4),
    ])


def _throughput(config: Config) -> float:
    """A synthetic samples/s with one best config: fsdp without offload, compiled, micro-batch 8, 4 threads."""
    value = 100.0 * config["micro_batch_size"] ** 0.5 * (1 + 0.2 * config.get("num_threads", 1))
    if config["strategy"] == "fsdp":
        value *= 0.7 if config["cpu_offload"] else 1.3
    return value * (1.2 if config["compile"] == "default" else 1.0)


def _key(config: Config) -> str:
    return json.dumps(config, sort_keys=True)


def _configs(study: Any, space: Space) -> list[Config]:
    return [space.canonical({k: v for k, v in t.params.items() if k in space}) for t in study.trials if t.params]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(1):  # the surrogates' BLAS on a shared machine
        yield


def test_study_finds_the_best_config_and_never_repeats_one() -> None:
    space = _space()
    best = max(_throughput(c) for c in space.enumerate())

    def objective(trial: Any) -> float:
        return _throughput(suggest_config(trial, space))

    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space, seed=0))
    study.optimize(objective, n_trials=20)  # of 96 configs; found in 14 (seed 0)
    configs = _configs(study, space)
    assert len(configs) == 20 and len({_key(c) for c in configs}) == 20
    assert study.best_value == pytest.approx(best)
    assert configs[0] == space.default()  # the hybrid starts from the defaults
    # A config holds only its active knobs: `cpu_offload` exactly under fsdp.
    assert all(("cpu_offload" in c) == (c["strategy"] == "fsdp") for c in configs)


def test_running_trials_are_pending() -> None:
    space = _space()
    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space, seed=0))
    first, second = study.ask(), study.ask()
    a, b = suggest_config(first, space), suggest_config(second, space)
    assert a != b  # without pending, both would be the defaults
    assert study.trials[0].system_attrs[PROPOSAL_ATTR] == a
    for trial, config in ((first, a), (second, b)):
        study.tell(trial, _throughput(config))
    # With measurements, running configs are told a fantasy value: three asked at once are three configs.
    running = [study.ask() for _ in range(3)]
    configs = [suggest_config(t, space) for t in running]
    assert len({_key(c) for c in configs + [a, b]}) == 5


def _fails_when_compiled(space: Space, mark: bool):
    def objective(trial: Any) -> float:
        config = suggest_config(trial, space)
        if config["compile"] != "off":
            exc = NotImplementedError("torch._dynamo.exc.Unsupported: generator functions are not supported")
            if mark:
                record_failure(trial, exc)  # diagnosed: `unsupported`, blaming `compile`
            raise exc
        return _throughput(config)
    return objective


@pytest.mark.parametrize("mark", [True, False], ids=["unsupported", "crash"])
def test_failed_trials_are_learned(mark: bool) -> None:
    space = Space([
        Categorical(name="strategy", choices=("single", "fsdp"), structural=True),
        Bool("cpu_offload", structural=True, when=(Condition("strategy", ("fsdp",)),)),
        Categorical(name="compile", choices=("off", "default", "max-autotune"), structural=True),
        Int(name="micro_batch_size", choices=(1, 2, 4, 8)),
    ])  # 36 configs, 12 of them uncompiled; compiling would be 1.2x faster if it ran
    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space, seed=0))
    study.enqueue_trial({"strategy": "single", "compile": "default", "micro_batch_size": 4})
    study.optimize(_fails_when_compiled(space, mark), n_trials=13, catch=(NotImplementedError,))
    configs = _configs(study, space)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert len({_key(c) for c in configs}) == len(configs)  # the failed config is told too: never re-run
    compiled_later = [c for c in configs[1:] if c["compile"] != "off"]
    if mark:  # `unsupported` excludes every compile mode after one failure: the 12 uncompiled configs follow
        assert compiled_later == []
        assert study.best_value == pytest.approx(max(_throughput(c) for c in configs if c["compile"] == "off"))
    else:  # a crash only makes the failing values unlikely: another compile mode is still tried
        assert compiled_later


def test_threads_share_the_study() -> None:
    space = _space()
    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space, seed=1))
    study.optimize(lambda t: _throughput(suggest_config(t, space)), n_trials=8, n_jobs=2)
    configs = _configs(study, space)
    assert len(configs) == 8 and len({_key(c) for c in configs}) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _worker(storage_url: str, n_trials: int, start: Any) -> None:
    """One process of a shared study (spawned: module-level)."""
    import time

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = _space()

    def objective(trial: Any) -> float:
        config = suggest_config(trial, space)
        time.sleep(0.1)  # the other process proposes while this trial runs
        return _throughput(config)

    with threadpool_limits(1):
        study = optuna.load_study(study_name="shared", storage=storage_url,
                                  sampler=AutoScoutSampler(space, seed=0))
        start.wait(timeout=60)  # both ask at once: the same seed and data would give the same config
        study.optimize(objective, n_trials=n_trials)


@pytest.mark.timeout(120)
def test_sqlite_storage_shared_by_two_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=url, direction="maximize")
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_worker, args=(url, 5, start)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=90)
    alive = [w for w in workers if w.is_alive()]
    for w in alive:
        w.kill()
    assert not alive and all(w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
    study = optuna.load_study(study_name="shared", storage=url)
    space = _space()
    configs = _configs(study, space)
    assert len(study.trials) == 10 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Each process sees the other's running configs (and re-asks when both took the same one at once).
    assert len({_key(c) for c in configs}) == 10


@pytest.mark.parametrize("kwargs, match", [
    ({"space": {"compile": ["off"]}}, "must be an autoscout_plugin.space.Space"),
    ({"search": "bayes"}, "unknown search 'bayes'.*autoscout"),
    ({"seed": "1"}, "seed must be an integer, got '1'"),
    ({"seed": 1.0}, "seed must be an integer"),
    ({"seed": True}, "seed must be an integer"),
    ({"search": "random", "cost_model": object()}, "does not take the options \\['cost_model'\\]"),
    ({"memory_limit": 10}, "does not take the options \\['memory_limit'\\]"),
])
def test_bad_constructor_input_raises(kwargs: dict[str, Any], match: str) -> None:
    space = kwargs.pop("space", _space())
    with pytest.raises(ValueError, match=match):
        AutoScoutSampler(space, **kwargs)


def test_options_reach_the_strategy_and_the_sampler_pickles() -> None:
    space = _space()
    sampler = pickle.loads(pickle.dumps(AutoScoutSampler(space, search="random", seed=3)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: _throughput(suggest_config(t, space)), n_trials=4)
    configs = _configs(study, space)
    assert configs[0] != space.default()  # random, not the hybrid (which starts at the defaults)
    assert len({_key(c) for c in configs}) == 4


def test_minimize_is_refused_at_the_first_trial() -> None:
    space = _space()
    study = optuna.create_study(direction="minimize", sampler=AutoScoutSampler(space))
    with pytest.raises(ValueError, match='maximises one objective.*direction="maximize"'):
        study.optimize(lambda t: _throughput(suggest_config(t, space)), n_trials=3)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # not left running
    two = optuna.create_study(directions=["maximize", "maximize"], sampler=AutoScoutSampler(space))
    with pytest.raises(ValueError, match="maximises one objective"):
        two.ask()


def test_unknown_parameter_warns_once_and_is_sampled_at_random() -> None:
    space = _space()

    def objective(trial: Any) -> float:
        config = suggest_config(trial, space)
        trial.suggest_int("warmup_steps", 1, 3)
        return _throughput(config)

    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space, seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=3)
    named = [w for w in caught if "'warmup_steps' is not a knob" in str(w.message)]
    assert len(named) == 1
    assert all(1 <= t.params["warmup_steps"] <= 3 for t in study.trials)
    assert len({_key(c) for c in _configs(study, space)}) == 3  # the extra parameter does not disturb the search


def test_distributions_match_what_suggest_config_suggests() -> None:
    space = _space()
    study = optuna.create_study(direction="maximize", sampler=AutoScoutSampler(space))
    trial = study.ask()
    suggest_config(trial, space)
    dists = space_distributions(space)
    assert all(trial.distributions[name] == dists[name] for name in trial.params)
    assert isinstance(dists["num_threads"], optuna.distributions.IntDistribution)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.filterwarnings("ignore:Define-by-run function:UserWarning")  # the search runs in it (see docs)
def test_ray_tune_optuna_search_drives_the_sampler(tmp_path: Path) -> None:
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    space = _space()

    def trainable(config: dict[str, Any]) -> None:
        tune.report({"samples_per_s": _throughput(space.canonical(config))})

    # A partial, not a lambda: Ray pickles the searcher (and its define-by-run space) at checkpoints.
    search = OptunaSearch(space=functools.partial(suggest_config, space=space), metric="samples_per_s",
                          mode="max", sampler=AutoScoutSampler(space, seed=0))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=search, num_samples=4,
                                                                  max_concurrent_trials=2),
                           run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert not results.errors
    configs = [space.canonical(r.config) for r in results]
    assert len(configs) == 4 and len({_key(c) for c in configs}) == 4
    assert space.default() in configs  # the hybrid's first proposal
    assert max(r.metrics["samples_per_s"] for r in results) == max(_throughput(c) for c in configs)
