"""`python -m benchmarks.replay --parallel K`: synchronous rounds of `ask_batch(K)`, rounds to 95%."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.search import SearchExhausted, make_strategy
from benchmarks import replay

TABLE = Path(__file__).parents[2] / "benchmarks" / "tables" / "gpt2_50k.csv"
#: The replay loop is what these tests check: optimizers that ask in milliseconds (`autoscout` once).
CHEAP = "random,grid,optuna_tpe,ds_model_based"


def _main(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    assert replay.main(["--table", str(TABLE), "--seeds", "2", "--budget", "8", "--json", str(out), *args]) == 0
    data = json.loads(out.read_text())
    for result in data.values():
        result.pop("wall_s")
    return data


def test_parallel_2_reports_rounds_to_95_at_most_the_trials(tmp_path, capsys):
    data = _main(tmp_path, "p2", "--parallel", "2", "--optimizers", "autoscout,random,optuna_tpe,skopt_gp")
    assert set(data) == {"autoscout", "random", "optuna_tpe", "skopt_gp"}
    for name, result in data.items():
        assert result["parallel"] == 2
        assert 1 <= result["median_rounds_to_95"] <= result["median_trials_to_95"] <= 8, name
        assert result["median_rounds_to_95"] >= result["median_trials_to_95"] / 2, name  # 2 trials a round at most
    assert "| rounds to 95% |" in capsys.readouterr().out


def test_parallel_1_is_the_default_and_rounds_are_trials(tmp_path):
    default = _main(tmp_path, "default", "--optimizers", CHEAP)
    one = _main(tmp_path, "one", "--optimizers", CHEAP, "--parallel", "1")
    assert one == default
    for result in one.values():
        assert result["median_rounds_to_95"] == result["median_trials_to_95"]


def _sequential(table: replay.Table, optimizer: str, seed: int, budget: int) -> replay.Run:
    """The replay loop before `--parallel` (one `ask` a trial), kept here as the reference."""
    strategy = make_strategy(optimizer, table.space, seed=seed)
    faults = random.Random(f"{table.name}/{optimizer}/{seed}")
    run = replay.Run([], [])
    while len(run.values) < budget:
        try:
            config = strategy.ask()
        except SearchExhausted:
            break
        trial = table.answer(config, faults)
        if trial.failure == "transient" and len(run.values) + 1 < budget:
            run.add(trial)
            trial = table.answer(config, faults)
            if trial.failure == "transient":
                trial.failure = "crash"
        run.add(trial)
        if trial.failure != "transient":
            strategy.tell(trial)
    return run


@pytest.mark.parametrize("optimizer", ["random", "optuna_tpe", "ds_model_based"])
def test_one_trial_a_round_is_the_sequential_loop_transient_retries_included(optimizer):
    table = replay.load_table(TABLE, "transient")
    retried = 0
    for seed in range(4):
        expected, got = _sequential(table, optimizer, seed, 20), replay.replay_one(table, optimizer, seed, 20, 1)
        assert (got.configs, got.values, got.failures) == (expected.configs, expected.values, expected.failures)
        assert got.rounds == list(range(1, len(got.values) + 1))
        retried += sum(f == "transient" for f in got.failures)
    assert retried  # the retry path ran


@pytest.mark.parametrize("parallel", [2, 3])
def test_rounds_hold_at_most_k_trials_and_a_transient_failure_is_the_next_round_first(parallel):
    table = replay.load_table(TABLE, "transient")
    retried = 0
    for seed in range(6):
        run = replay.replay_one(table, "random", seed, 17, parallel)
        assert len(run.values) == 17  # never more trials than the budget; the last round is short
        assert sorted(run.rounds) == run.rounds and set(run.rounds) == set(range(1, run.rounds[-1] + 1))
        by_round: dict[int, list[int]] = {}
        for i, r in enumerate(run.rounds):
            by_round.setdefault(r, []).append(i)
        assert all(len(trials) <= parallel for trials in by_round.values())
        assert all(len(by_round[r]) == parallel for r in list(by_round)[:-1])
        keys = [table.space.key(c) for c in run.configs]
        pairs = 0
        for r, trials in by_round.items():
            failed = [keys[i] for i in trials if run.failures[i] == "transient"]
            following = by_round.get(r + 1, [])
            n = min(len(failed), len(following))  # the budget may leave no room for a retry
            # Retried first thing in the next round, and not a second time (a crash if it fails again).
            assert [keys[i] for i in following[:n]] == failed[:n]
            assert all(run.failures[i] != "transient" for i in following[:n])
            pairs += n
        assert len(keys) - len(set(keys)) == pairs  # apart from its retry, no config runs twice
        retried += pairs
    assert retried


def test_rounds_to_95_and_the_never_reached_convention():
    hit = replay.Run([5.0, 1.0, 9.6, 2.0], [1.0] * 4, rounds=[1, 1, 2, 2], parallel=2)
    m = replay._metrics(hit, oracle=10.0, budget=8)
    assert (m["trials"], m["rounds"]) == (3, 2)
    never = replay.Run([1.0, 2.0, 3.0], [1.0] * 3, rounds=[1, 1, 1], parallel=4)
    m = replay._metrics(never, oracle=10.0, budget=10)
    assert (m["trials"], m["rounds"]) == (10, 3)  # the whole budget: 10 trials, ceil(10 / 4) rounds


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_parallel_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        replay.main(["--table", str(TABLE), "--parallel", value])
    assert "--parallel: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="parallel"):
        replay.replay_one(replay.load_table(TABLE), "random", 0, 4, 0)
