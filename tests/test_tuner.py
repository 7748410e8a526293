"""The tuning loop end to end: budgets, stopping, confirmation, faults, options, reporting (the store:
`test_tuner_store.py`).

A profiler is any callable `(config, fidelity) -> TrialOutcome`; here it is a synthetic objective (a
formula or the cost model's estimate) wrapped in `Recorder`, which counts every call. Stores are real
SQLite files in `tmp_path`. Most tests use the cheap `grid`/`random` strategies: the loop is under
test, not the optimizer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.space import SpaceError
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Fidelity, Trial
from autoscout_plugin.tuner import TuneOptions, Tuner

from .tuner_helpers import (
    HARDWARE,
    Recorder,
    by_threads,
    cost_model_objective,
    f2,
    f3,
    options,
    threads_space,
    training_space,
    workload,
)


# ----------------------------------------------------------------------------------------- budgets
def close_race(config: dict[str, Any], fidelity: Fidelity) -> float:
    """Every config within 10% of the best: all of the top ones are worth confirming."""
    return 100.0 + config["num_threads"]


@pytest.mark.parametrize("search", ["grid", "random"])
@pytest.mark.parametrize("confirm_top", [0, 2])
def test_max_trials_stops_at_exactly_that_many_f2_trials(search: str, confirm_top: int) -> None:
    profile = Recorder(close_race)
    opts = options(max_trials=5, search=search, confirm_top=confirm_top)
    result = Tuner(threads_space(), profile, opts).run()
    assert len(f2(result)) == 5
    # the best is the reference, the next best its challenger: both in each of the 2 rounds
    assert len(f3(result)) == 2 * confirm_top
    assert len(profile.calls) == 5 + 2 * confirm_top
    assert "trial budget of 5" in result.stop_reason
    assert [t.number for t in result.trials] == list(range(5 + 2 * confirm_top))


def test_max_seconds_stops_once_spent() -> None:
    profile = Recorder(by_threads, cost_s=2.0)
    opts = options(max_trials=None, max_seconds=7.0, search="random")
    result = Tuner(threads_space(20), profile, opts).run()
    # 2 + 2 + 2 = 6 s < 7 s: a fourth trial starts; after it 8 s >= 7 s: none more
    assert len(profile.calls) == 4
    assert result.tuning_s == pytest.approx(8.0)
    assert "time budget" in result.stop_reason


def test_max_seconds_reached_exactly_stops() -> None:
    profile = Recorder(by_threads, cost_s=2.0)
    Tuner(threads_space(20), profile, options(max_trials=None, max_seconds=6.0)).run()
    assert len(profile.calls) == 3


def test_max_fraction_of_the_planned_run() -> None:
    opts = options(max_trials=None, max_fraction=0.05, planned_run_s=100.0)
    assert opts.seconds_budget() == pytest.approx(5.0)
    profile = Recorder(by_threads, cost_s=1.0)
    result = Tuner(threads_space(20), profile, opts).run()
    assert len(profile.calls) == 5
    assert result.tuning_s == pytest.approx(5.0)
    assert "time budget of 5 s" in result.stop_reason


def test_max_fraction_of_a_run_given_in_samples() -> None:
    # 1000 samples at the best speed so far: grid order gives 10, 20, 30 samples/s, so the planned run
    # shrinks from 100 s to 33 s as faster configs are found, and the 10% budget with it.
    opts = options(max_trials=None, max_fraction=0.1, planned_samples=1000.0)
    assert opts.seconds_budget() == math.inf
    assert opts.seconds_budget(10.0) == pytest.approx(10.0)
    profile = Recorder(by_threads, cost_s=1.0)
    result = Tuner(threads_space(20), profile, opts).run()
    assert len(profile.calls) == 4  # after trial 4 (40 samples/s) the budget is 2.5 s, already spent
    assert "time budget" in result.stop_reason


def test_the_tightest_budget_wins() -> None:
    opts = options(max_trials=10, max_seconds=3.0, max_fraction=0.5, planned_run_s=100.0)
    assert opts.seconds_budget() == pytest.approx(3.0)
    profile = Recorder(by_threads, cost_s=1.0)
    Tuner(threads_space(20), profile, opts).run()
    assert len(profile.calls) == 3


def test_trials_without_cost_are_charged_their_wall_time() -> None:
    profile = Recorder(lambda c, f: TrialOutcome(value=1.0 + c["num_threads"]))  # no cost_s
    result = Tuner(threads_space(), profile, options(max_trials=3)).run()
    assert all(0.0 <= t.cost_s < 1.0 for t in result.trials)


@pytest.mark.parametrize("bad_cost", [math.nan, -5.0, math.inf])
def test_a_bogus_cost_does_not_poison_the_time_budget(bad_cost: float) -> None:
    profile = Recorder(lambda c, f: TrialOutcome(value=float(c["num_threads"]), cost_s=bad_cost))
    result = Tuner(threads_space(20), profile, options(max_trials=4, max_seconds=100.0)).run()
    assert len(profile.calls) == 4
    assert all(math.isfinite(t.cost_s) and t.cost_s >= 0 for t in result.trials)
    assert math.isfinite(result.tuning_s)


def test_patience_stops_a_flat_objective() -> None:
    profile = Recorder(lambda c, f: 10.0)
    result = Tuner(threads_space(20), profile, options(max_trials=50, patience=3, search="random")).run()
    # the first trial sets the best; three more without improvement end the search
    assert len(profile.calls) == 4
    assert "no improvement in 3 trials" in result.stop_reason


def test_improvements_below_min_improvement_do_not_reset_patience() -> None:
    # +0.5% per step in grid order: three steps together stay below 2% of the best
    profile = Recorder(lambda c, f: 100.0 * 1.005 ** c["num_threads"])
    result = Tuner(threads_space(20), profile, options(max_trials=50, patience=3, min_improvement=0.02)).run()
    assert len(profile.calls) == 4
    assert "no improvement" in result.stop_reason


def test_small_improvements_that_add_up_reset_patience() -> None:
    # +1% per step: every second step is 2.01% above the last recorded best
    profile = Recorder(lambda c, f: 100.0 * 1.01 ** c["num_threads"])
    result = Tuner(threads_space(20), profile, options(max_trials=12, patience=2, min_improvement=0.02)).run()
    assert len(profile.calls) == 12
    assert "trial budget" in result.stop_reason


def test_patience_none_never_stops_early() -> None:
    profile = Recorder(lambda c, f: 10.0)
    result = Tuner(threads_space(20), profile, options(max_trials=9, patience=None)).run()
    assert len(profile.calls) == 9
    assert "trial budget" in result.stop_reason


def test_steady_improvement_runs_until_the_budget() -> None:
    profile = Recorder(lambda c, f: 100.0 * 1.5 ** c["num_threads"])
    result = Tuner(threads_space(20), profile, options(max_trials=9, patience=2)).run()
    assert len(profile.calls) == 9
    assert "trial budget" in result.stop_reason


def test_search_exhausted_ends_the_run() -> None:
    profile = Recorder(by_threads)
    result = Tuner(threads_space(4), profile, options(max_trials=50, search="random")).run()
    assert sorted(c["num_threads"] for c in profile.configs()) == [1, 2, 3, 4]
    assert "exhausted" in result.stop_reason


def test_confirmation_interleaves_the_baseline_and_the_contenders_in_counterbalanced_rounds() -> None:
    f2_values = {2: 20.0, 7: 150.0, 8: 160.0}
    profile = Recorder(lambda c, f: f2_values.get(c["num_threads"], 1.0))
    result = Tuner(threads_space(8), profile, options(max_trials=8, confirm_top=2),
                   baseline={"num_threads": 2}).run()
    order = [c["num_threads"] for c in profile.configs(Fidelity.F3)]
    assert order == [2, 8, 7, 7, 8, 2]  # A B C, C B A: a linear drift hits both sides alike
    assert result.trials[-6:] == f3(result) == result.confirmed()  # confirmation comes after exploration
    assert [p.config["num_threads"] for p in result.paired] == [8, 7]
    assert all(p.reference == {"num_threads": 2} for p in result.paired)


def test_the_paired_ratio_decides_and_is_reported() -> None:
    # The machine slows down by half in the second round: unpaired means would compare a quiet
    # measurement with a loaded one; the paired ratios compare like with like.
    f2_values = {2: 20.0, 7: 150.0, 8: 160.0}
    rounds: dict[int, int] = {}

    def loaded(config: dict[str, Any], fidelity: Fidelity) -> float:
        n = config["num_threads"]
        if fidelity == Fidelity.F2:
            return f2_values.get(n, 1.0)
        rounds[n] = rounds.get(n, 0) + 1
        load = 1.0 if rounds[n] == 1 else 0.5
        return {2: 100.0, 7: 130.0, 8: 120.0}[n] * load * (1.02 if rounds[n] == 2 and n == 7 else 1.0)

    result = Tuner(threads_space(8), Recorder(loaded), options(max_trials=8, confirm_top=2),
                   baseline={"num_threads": 2}).run()
    pair = {p.config["num_threads"]: p for p in result.paired}
    assert pair[7].ratios == pytest.approx([1.3, 1.3 * 1.02])
    assert pair[8].ratios == pytest.approx([1.2, 1.2])
    assert result.best_config == {"num_threads": 7}
    assert result.speedup == pytest.approx(math.sqrt(1.3 * 1.3 * 1.02))
    assert result.chosen_pair is pair[7] and pair[7].spread == pytest.approx((1.3, 1.326))
    table = result.table()
    assert "paired with your settings over 2 rounds: 1.313x (rounds 1.300-1.326x), applied" in table
    saved = {p["config"]["num_threads"]: p for p in json.loads(json.dumps(result.to_json()))["paired"]}
    assert saved[7]["ratios"] == pytest.approx([1.3, 1.326]) and saved[7]["spread"] == pytest.approx([1.3, 1.326])


def test_confirmation_takes_distinct_configs_and_skips_failures() -> None:
    def objective(config: dict[str, Any], fidelity: Fidelity) -> Any:
        n = config["num_threads"]
        if n == 8:
            return TrialOutcome(status="oom", error="too big")
        return 100.0 + n

    profile = Recorder(objective)
    result = Tuner(threads_space(8), profile, options(max_trials=8, confirm_top=3),
                   baseline={"num_threads": 1}).run()
    assert [t.config["num_threads"] for t in f3(result)] == [1, 7, 6, 5, 5, 6, 7, 1]
    assert result.best_config == {"num_threads": 7}


def test_a_config_that_fails_its_confirmation_is_not_chosen() -> None:
    def objective(config: dict[str, Any], fidelity: Fidelity) -> Any:
        n = config["num_threads"]
        if n == 8 and fidelity == Fidelity.F3:
            raise MemoryError("the long run needs more memory")
        return 100.0 + n

    result = Tuner(threads_space(8), Recorder(objective), options(max_trials=8, confirm_top=2),
                   baseline={"num_threads": 1}).run()
    assert [(t.config["num_threads"], t.status) for t in f3(result)] == [
        (1, "ok"), (8, "oom"), (7, "ok"), (7, "ok"), (8, "oom"), (1, "ok")]
    assert result.best_config == {"num_threads": 7}


def test_the_baseline_wins_when_the_best_was_luck() -> None:
    # F2 says 4 threads beat the user's 2; the paired F3 runs say otherwise: keep the user's config.
    def lucky(config: dict[str, Any], fidelity: Fidelity) -> float:
        n = config["num_threads"]
        if fidelity == Fidelity.F3:
            return {2: 20.0, 4: 18.0}[n]
        return {2: 20.0, 4: 25.0}.get(n, 5.0)

    profile = Recorder(lucky)
    result = Tuner(threads_space(4), profile, options(max_trials=4, confirm_top=1),
                   baseline={"num_threads": 2}).run()
    assert profile.configs(Fidelity.F3) == [{"num_threads": 2}, {"num_threads": 4}] * 1 + [
        {"num_threads": 4}, {"num_threads": 2}]
    assert result.best_config == {"num_threads": 2}
    assert result.speedup == pytest.approx(1.0)
    assert result.paired[0].ratio == pytest.approx(0.9)
    assert "0.900x (rounds 0.900-0.900x), not applied" in result.table()


def test_nothing_is_confirmed_when_the_users_config_measured_best() -> None:
    profile = Recorder(lambda c, f: 50.0 if c["num_threads"] == 3 else 10.0)
    result = Tuner(threads_space(4), profile, options(max_trials=4, confirm_top=1),
                   baseline={"num_threads": 3}).run()
    assert f3(result) == [] and result.paired == []
    assert result.best_config == {"num_threads": 3} and result.speedup == pytest.approx(1.0)


def test_confirm_rounds_sets_the_number_of_paired_rounds() -> None:
    profile = Recorder(close_race)
    result = Tuner(threads_space(4), profile, options(max_trials=4, confirm_top=1, confirm_rounds=3),
                   baseline={"num_threads": 1}).run()
    assert [c["num_threads"] for c in profile.configs(Fidelity.F3)] == [1, 4, 4, 1, 1, 4]
    assert len(result.paired[0].ratios) == 3


def test_baseline_is_measured_first_and_speedup_is_best_over_baseline() -> None:
    profile = Recorder(by_threads)
    baseline = {"num_threads": 2}
    result = Tuner(threads_space(8), profile, options(max_trials=8, search="random", confirm_top=2),
                   baseline=baseline).run()
    assert profile.calls[0] == (baseline, Fidelity.F2)
    assert result.trials[0].config == baseline and result.trials[0].number == 0
    assert [c["num_threads"] for c in profile.configs()].count(2) == 1  # not asked again by the search
    assert result.baseline_config == baseline
    assert result.baseline_value == pytest.approx(20.0)
    assert result.best_config == {"num_threads": 8}
    assert result.speedup == pytest.approx(result.best_value / 20.0)
    assert result.speedup == pytest.approx(4.0)
    assert [c["num_threads"] for c in profile.configs(Fidelity.F3)] == [2, 8, 8, 2]
    table = result.table()
    assert "default: 20.00 samples/s" in table and "speed-up 4.00x" in table


def test_baseline_is_canonicalised() -> None:
    profile = Recorder(by_threads)
    tuner = Tuner(threads_space(4), profile, options(max_trials=2), baseline={"num_threads": 3.0})
    assert tuner.baseline == {"num_threads": 3} and isinstance(tuner.baseline["num_threads"], int)
    tuner.run()
    assert profile.calls[0][0] == {"num_threads": 3}


# ------------------------------------------------------------------------------------------ faults
class _Unstable(Exception):
    pass


def faulty(config: dict[str, Any], fidelity: Fidelity) -> Any:
    n = config["num_threads"]
    if n == 1:
        raise MemoryError("cannot allocate 8 GiB")
    if n == 2:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if n == 3:
        raise TimeoutError("the all-reduce did not finish")
    if n == 4:
        raise _Unstable("gloo collective mismatch")
    if n == 5:
        return TrialOutcome(value=math.nan, cost_s=1.0)
    if n == 6:
        return {"samples_per_s": 60.0}  # not a TrialOutcome
    if n == 7:
        return TrialOutcome(status="exploded", value=1.0)  # not a status
    return {8: 80.0, 9: 95.0, 10: 60.0}[n]


EXPECTED_FAULTS = {
    1: ("oom", "MemoryError: cannot allocate 8 GiB"),
    2: ("oom", "CUDA out of memory"),
    3: ("timeout", "TimeoutError: the all-reduce did not finish"),
    4: ("error", "_Unstable: gloo collective mismatch"),
    5: ("nan", "nan"),
    6: ("error", "dict"),
    7: ("error", "exploded"),
}


@pytest.mark.parametrize("search", ["grid", "random"])
def test_faults_are_recorded_and_the_run_goes_on(tmp_path: Path, search: str) -> None:
    store_path = tmp_path / "trials.sqlite"
    profile = Recorder(faulty)
    result = Tuner(threads_space(10), profile,
                   options(max_trials=10, search=search, confirm_top=2, store=str(store_path))).run()
    by_n = {t.config["num_threads"]: t for t in f2(result)}
    assert sorted(by_n) == list(range(1, 11))
    for n, (status, text) in EXPECTED_FAULTS.items():
        trial = by_n[n]
        assert trial.status == status, (n, trial)
        assert trial.value is None
        assert trial.error is not None and text in trial.error, (n, trial.error)
    assert all(by_n[n].ok for n in (8, 9, 10))
    assert result.best_config == {"num_threads": 9}
    assert result.best_value == pytest.approx(95.0)
    # failed configs are neither asked again nor confirmed
    f2_counts = [c["num_threads"] for c in profile.configs()]
    assert sorted(f2_counts) == list(range(1, 11))
    assert profile.configs(Fidelity.F3) == []  # no baseline, and 8 is more than 10% behind 9
    # and the store holds the failures with their errors
    with SQLiteStore(store_path) as store:
        stored = store.trials(store.open_study(result.fingerprint or "", workload={}, hardware={}, space={}))
    assert [(t.status, t.error) for t in stored] == [(t.status, t.error) for t in result.trials]


PORT_CLASH = ("torch.distributed.DistNetworkError: The server socket has failed to listen on any local network"
              " address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use")


def test_a_transient_failure_is_retried_once_and_never_told_to_the_search() -> None:
    clashes = {3: 1, 5: 2}  # 3 threads clashes once, 5 threads twice in a row

    def flaky(config: dict[str, Any], fidelity: Fidelity) -> Any:
        n = config["num_threads"]
        if clashes.get(n, 0) > 0:
            clashes[n] -= 1
            return TrialOutcome(status="error", error=PORT_CLASH, cost_s=0.5)
        return 10.0 * n

    tuner = Tuner(threads_space(6), Recorder(flaky), options(max_trials=9))
    result = tuner.run()
    runs = [(t.config["num_threads"], t.failure) for t in f2(result)]
    assert runs == [(1, None), (2, None), (3, "transient"), (3, None), (4, None), (5, "transient"),
                    (5, "crash"), (6, None)]
    assert "transient failure repeated on retry" in (result.trials[6].error or "")
    assert [t.failure for t in tuner.search.trials].count("transient") == 0  # only the retries were told
    assert result.best_config == {"num_threads": 6}


def test_every_trial_failing_leaves_no_winner(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")

    def broken(config: dict[str, Any], fidelity: Fidelity) -> Any:
        raise RuntimeError("segfault in the data loader")

    profile = Recorder(broken)
    result = Tuner(threads_space(), profile, options(max_trials=4, confirm_top=2, store=store_path),
                   baseline={"num_threads": 1}).run()
    assert [t.status for t in result.trials] == ["error"] * 4
    assert all("segfault in the data loader" in (t.error or "") for t in result.trials)
    assert result.best_config is None and result.best_value is None
    assert result.baseline_value is None and result.speedup is None
    assert f3(result) == []
    assert "no trial succeeded" in result.table()
    # nothing was stored as a winner: the next run tunes instead of "reusing" nothing
    again = Recorder(by_threads)
    second = Tuner(threads_space(), again, options(max_trials=6, store=store_path)).run()
    assert not second.reused
    assert len(again.calls) == 2
    assert second.best_config is not None


def test_failed_configs_are_not_asked_again() -> None:
    profile = Recorder(lambda c, f: 10.0 * c["num_threads"] if c["num_threads"] > 5 else math.nan)
    result = Tuner(threads_space(8), profile, options(max_trials=50, search="random")).run()
    asked = [c["num_threads"] for c in profile.configs()]
    assert sorted(asked) == list(range(1, 9))  # each config once, the five failures included
    assert "exhausted" in result.stop_reason
    assert result.best_config == {"num_threads": 8}


def test_keyboard_interrupt_is_not_swallowed() -> None:
    def interrupted(config: dict[str, Any], fidelity: Fidelity) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tuner(threads_space(), interrupted, options(max_trials=3)).run()


# ----------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"max_trials": 0}, ["max_trials", "0"]),
        ({"max_trials": -3}, ["max_trials", "-3"]),
        ({"max_trials": 2.5}, ["max_trials", "2.5"]),
        ({"max_seconds": -5.0}, ["max_seconds", "-5.0"]),
        ({"max_seconds": math.nan}, ["max_seconds", "nan"]),
        ({"max_fraction": 0.1}, ["max_fraction", "0.1", "planned_run_s"]),
        ({"max_fraction": -0.1, "planned_run_s": 100.0}, ["max_fraction", "-0.1"]),
        ({"max_fraction": 0.1, "planned_run_s": 0}, ["planned_run_s", "0"]),
        ({"max_trials": None}, ["max_trials", "max_seconds", "max_fraction", "None"]),
        ({"confirm_top": -1}, ["confirm_top", "-1"]),
        ({"confirm_top": 1.5}, ["confirm_top", "1.5"]),
        ({"patience": 0}, ["patience", "0"]),
        ({"min_improvement": -0.5}, ["min_improvement", "-0.5"]),
    ],
)
def test_invalid_options_name_the_option_and_the_value(kwargs: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        TuneOptions(**kwargs)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)


def test_valid_budgets_are_accepted() -> None:
    assert TuneOptions(max_trials=None, max_seconds=30).seconds_budget() == 30
    assert TuneOptions(max_trials=1).seconds_budget() == math.inf
    assert TuneOptions(confirm_top=0).confirm_top == 0


def test_unknown_search_fails_when_the_tuner_is_built() -> None:
    profile = Recorder(by_threads)
    with pytest.raises(ValueError, match="'simulated_annealing'") as info:
        Tuner(threads_space(), profile, TuneOptions(search="simulated_annealing"))
    assert "random" in str(info.value) and "autoscout" in str(info.value)  # says what to use instead
    assert profile.calls == []


@pytest.mark.parametrize(
    ("baseline", "needle"),
    [
        ({"num_threads": 2, "num_thraeds": 2}, "num_thraeds"),
        ({"num_threads": 99}, "99"),
        ({}, "num_threads"),
    ],
)
def test_bad_baseline_raises_before_any_trial(tmp_path: Path, baseline: dict[str, Any], needle: str) -> None:
    profile = Recorder(by_threads)
    with pytest.raises(SpaceError, match=needle):
        Tuner(threads_space(), profile, options(max_trials=3, store=str(tmp_path / "t.sqlite")),
              baseline=baseline).run()
    assert profile.calls == []


def test_baseline_breaking_a_constraint_raises_before_any_trial() -> None:
    profile = Recorder(by_threads)
    baseline = {"strategy": "single", "num_processes": 2, "precision": "32-true",
                "activation_checkpointing": False, "micro_batch_size": 4, "num_threads": 1}
    with pytest.raises(SpaceError, match="num_processes"):
        Tuner(training_space(), profile, options(max_trials=3), baseline=baseline).run()
    assert profile.calls == []


# -------------------------------------------------------------------------------- callback, report
def test_on_trial_sees_every_trial_in_order() -> None:
    seen: list[tuple[int, Fidelity, dict[str, Any], str]] = []
    tuners: list[Tuner] = []

    def on_trial(trial: Trial, tuner: Tuner) -> None:
        seen.append((trial.number, trial.fidelity, dict(trial.config), trial.status))
        tuners.append(tuner)
        assert tuner.trials[-1] is trial  # already recorded when the callback runs

    tuner = Tuner(threads_space(10), Recorder(faulty), options(max_trials=10, search="random", confirm_top=2),
                  on_trial=on_trial, baseline={"num_threads": 8})
    result = tuner.run()
    assert seen == [(t.number, t.fidelity, t.config, t.status) for t in result.trials]
    assert [n for n, *_ in seen] == list(range(14))
    assert [f for _, f, *_ in seen] == [Fidelity.F2] * 10 + [Fidelity.F3] * 4
    assert all(t is tuner for t in tuners)


def test_save_writes_json_that_round_trips(tmp_path: Path) -> None:
    result = Tuner(threads_space(10), Recorder(faulty), options(max_trials=10, confirm_top=2),
                   baseline={"num_threads": 8}).run()
    path = result.save(tmp_path / "reports" / "result.json")
    assert path == tmp_path / "reports" / "result.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["best_config"] == result.best_config == {"num_threads": 9}
    assert data["best_value"] == pytest.approx(95.0)
    assert data["baseline_config"] == {"num_threads": 8}
    assert data["speedup"] == pytest.approx(95.0 / 80.0)
    assert data["stop_reason"] == result.stop_reason
    assert len(data["trials"]) == result.n_trials == 14
    assert data["verdict"]["decision"] == "applied" and data["verdict"]["sentence"].startswith(
        "Applied: num_threads 8 → 9, ")  # the engine's JSON carries the verdict the reports show
    assert [Trial.from_json(t) for t in data["trials"]] == result.trials
    assert {t["status"] for t in data["trials"]} == {"ok", "oom", "timeout", "error", "nan"}
    assert {t["failure"] for t in data["trials"]} == {None, "oom", "timeout", "crash", "nan"}
    assert [t["fidelity"] for t in data["trials"]][-4:] == ["F3"] * 4
    assert data["paired"][0]["ratios"] == pytest.approx([95.0 / 80.0] * 2)


def test_table_lists_every_trial_and_the_choice() -> None:
    result = Tuner(threads_space(10), Recorder(faulty), options(max_trials=10, confirm_top=1),
                   baseline={"num_threads": 8}).run()
    table = result.table()
    lines = table.splitlines()
    assert len([line for line in lines if line.strip().split(" ")[0].isdigit()]) == 14
    assert "chosen:  95.00 samples/s  num_threads=9" in table
    assert "oom" in table and "timeout" in table and "crash" in table
    assert f"stopped: {result.stop_reason}" in table


def test_default_search_runs_the_loop() -> None:
    """The default `autoscout` strategy behind the same loop (a tiny budget: it is the slow one)."""
    w = workload()
    profile = Recorder(cost_model_objective(w))
    baseline = {"strategy": "single", "num_processes": 1, "precision": "32-true",
                "activation_checkpointing": True, "micro_batch_size": 4, "num_threads": 1}
    result = Tuner(training_space(), profile, TuneOptions(max_trials=2, confirm_top=1),
                   workload=w, hardware=HARDWARE, baseline=baseline).run()
    assert len(f2(result)) == 2 and len(f3(result)) == 4
    assert result.best_config is not None
    assert training_space().canonical(result.best_config) == result.best_config

