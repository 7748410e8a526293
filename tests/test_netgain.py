"""Tuning that pays for itself (`autoscout_plugin.netgain` and the net-gain rule of the tuner and the flow):
the expected saving against a sampled one, a job too short to tune left untouched, a search that stops when
its next trial is not worth it, a confirmation skipped when it costs more than its win saves, and the
job's estimated and realised net speed-up in the report."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin import AutoScoutOptions, netgain
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.report.verdict import make_verdict
from autoscout_plugin.search.baselines import GridSearch
from autoscout_plugin.space import Int, Space
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuner import TuneOptions, Tuner
from autoscout_plugin.tuning import TrialRequest, Tuning
from tests.test_tuning import describe
from tests.tuner_helpers import Recorder


# ---------------------------------------------------------------- the estimate
@pytest.mark.parametrize(("best", "mean", "std"), [(10.0, math.log(10.0), 0.3), (10.0, math.log(12.0), 0.05),
                                                   (10.0, math.log(6.0), 0.5), (3.0, math.log(3.3), 1.0)])
def test_the_expected_saving_matches_sampling(best: float, mean: float, std: float) -> None:
    rng = random.Random(0)
    samples = 5000.0
    draws = [math.exp(rng.gauss(mean, std)) for _ in range(200_000)]
    sampled = sum(max(0.0, samples / best - samples / v) for v in draws) / len(draws)
    assert netgain.expected_saving_s(samples, best, mean, std) == pytest.approx(sampled, rel=0.03, abs=1e-3)


def test_the_saving_grows_with_the_run_the_prediction_and_its_uncertainty() -> None:
    base = netgain.expected_saving_s(1000.0, 10.0, math.log(10.0), 0.1)
    assert netgain.expected_saving_s(2000.0, 10.0, math.log(10.0), 0.1) == pytest.approx(2 * base)
    assert netgain.expected_saving_s(1000.0, 10.0, math.log(11.0), 0.1) > base
    assert netgain.expected_saving_s(1000.0, 10.0, math.log(10.0), 0.3) > base
    assert netgain.expected_saving_s(1000.0, 10.0, math.log(5.0), 0.0) == 0.0


def test_a_win_adds_its_confirmation_to_the_cost() -> None:
    sure = netgain.next_trial(1000.0, 10.0, math.log(20.0), 0.0, cost_s=5.0, confirm_s=20.0)
    assert (sure.saving_s, sure.cost_s, sure.worth) == (pytest.approx(50.0), 25.0, True)
    hopeless = netgain.next_trial(1000.0, 10.0, math.log(5.0), 0.0, cost_s=5.0, confirm_s=20.0)
    assert (hopeless.cost_s, hopeless.worth) == (5.0, False)


def test_a_job_is_too_short_by_its_steps_alone() -> None:
    # 6 trials (yours, a candidate, 2 paired rounds of both) of 6 steps; at 2x at most half the run is saved
    assert netgain.too_short(72, 6, 2) is not None
    assert netgain.too_short(73, 6, 2) is None
    assert netgain.too_short(24, 6, 0) is not None and netgain.too_short(25, 6, 0) is None


# ---------------------------------------------------------------- the tuner's rule
def _space() -> Space:
    return Space([Int(name="num_threads", choices=(1, 2, 3, 4, 5, 6, 7, 8))])


def _flat(config: dict[str, Any], fidelity: Fidelity) -> float:
    return 10.0 + 0.01 * config["num_threads"]  # nothing to gain


def _tuner(profile: Any, kept_steps: Any = None, **options: Any) -> Tuner:
    base = {"max_trials": 8, "patience": None, "confirm_top": 0, "net_gain": True}
    return Tuner(_space(), profile, TuneOptions(**(base | options)), baseline={"num_threads": 1},
                 kept_steps=kept_steps)


def test_a_short_run_stops_the_search_where_the_next_trial_cannot_pay() -> None:
    short = Recorder(_flat, cost_s=5.0)
    result = _tuner(short, planned_samples=100.0).run()  # 10 s of main run against 5 s trials
    assert len(short.calls) < 8
    assert "would not pay for itself" in result.stop_reason and "expected to save" in result.stop_reason
    assert result.net["samples"] == 100.0 and result.net["looks"] >= 1
    long = Recorder(_flat, cost_s=5.0)  # the same search on a long run: every trial of the budget is worth it
    result = _tuner(long, planned_samples=1e9).run()
    assert len(long.calls) == 8 and result.stop_reason.startswith("trial budget")


def test_without_the_rule_or_without_a_length_the_budget_is_spent() -> None:
    off = Recorder(_flat, cost_s=5.0)
    _tuner(off, planned_samples=100.0, net_gain=False).run()
    assert len(off.calls) == 8
    unknown = Recorder(_flat, cost_s=5.0)
    assert _tuner(unknown).run().net == {"samples": None}
    assert len(unknown.calls) == 8


def test_planned_steps_take_the_samples_of_a_step_from_the_users_config() -> None:
    def timed(config: dict[str, Any], fidelity: Fidelity) -> TrialOutcome:
        return TrialOutcome(value=_flat(config, fidelity), cost_s=5.0, metrics={"step_s": 3.2})

    result = _tuner(Recorder(timed), planned_steps=50).run()
    assert result.net["samples"] == pytest.approx(50 * 10.01 * 3.2)
    with pytest.raises(ValueError, match="planned_steps must be an integer >= 1"):
        TuneOptions(planned_steps=0)


def _pair(ratio: float) -> Any:
    def objective(config: dict[str, Any], fidelity: Fidelity) -> float:
        return 10.0 * (ratio if config["num_threads"] == 2 else 1.0)

    return objective


@pytest.mark.parametrize(("ratio", "samples", "confirmed", "applied"), [
    (1.05, 1000.0, False, 1),    # saves 4.8 s, confirming costs 4 trials of 5 s: kept yours
    (1.30, 100.0, False, 2),     # saves 2.3 s: not confirmed, but 1.3x in its profile is beyond noise
    (1.05, 1e6, True, 2),        # a long run: confirmed, paired, applied
])
def test_a_confirmation_that_cannot_pay_is_skipped(ratio: float, samples: float, confirmed: bool,
                                                   applied: int) -> None:
    space = Space([Int(name="num_threads", choices=(1, 2))])
    recorder = Recorder(_pair(ratio), cost_s=5.0)
    options = TuneOptions(max_trials=2, patience=None, confirm_top=1, confirm_rounds=2, search="grid",
                          net_gain=True, planned_samples=samples)
    result = Tuner(space, recorder, options, baseline={"num_threads": 1}).run()
    assert bool(recorder.configs(Fidelity.F3)) is confirmed
    assert result.best_config == {"num_threads": applied}
    if not confirmed:
        skipped = result.net["unconfirmed"]
        assert skipped["cost_s"] == pytest.approx(20.0) and "confirming it would cost 20.0 s" in skipped["reason"]
        verdict = make_verdict(result)
        if applied == 1:  # kept: the verdict says why, not "nothing measured faster"
            assert verdict.decision == "kept" and "ran 1.05x in short profiles" in verdict.sentence
            assert "confirming it would cost 20.0 s" in verdict.sentence
        else:
            assert verdict.decision == "applied" and "short profiles, not confirmed" in verdict.sentence


# ---------------------------------------------------------------- the flow: a tiny job, the estimate, the realised net
def _trial(calls: list[TrialRequest]) -> Any:
    def trial(request: TrialRequest) -> TrialOutcome:
        calls.append(request)
        speed = 100.0 if request.config.get("num_threads") == 2 else 90.0
        return TrialOutcome(value=speed, cost_s=0.5, metrics={"step_s": 16 / speed})

    return trial


def test_a_job_too_short_runs_no_trial_and_says_so_in_one_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[TrialRequest] = []
    tuning = Tuning(AutoScoutOptions(store=str(tmp_path / "s.sqlite"), progress=False),
                    describe(planned_steps=20))
    result = tuning.run(_trial(calls))
    report = tuning.conclude(result, applied=None)
    assert calls == [] and result.n_trials == 0 and result.net["skipped"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["AutoScout: the main run (20 steps) is too short for tuning to pay for itself: the smallest"
                     " study runs 36 steps of trials and could save at most 10 steps; the main run uses your"
                     " settings untouched."]
    assert report["verdict"]["decision"] == "kept" and "too short" in report["verdict"]["sentence"]
    # the same job with the rule off is tuned
    Tuning(AutoScoutOptions(store=str(tmp_path / "t.sqlite"), progress=False, net_gain=False, max_trials=2,
                            confirm_top=0), describe(planned_steps=20)).run(_trial(calls))
    assert len(calls) == 2


def test_the_report_carries_the_estimate_and_after_the_main_run_the_realised_net(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = AutoScoutOptions(store=str(tmp_path / "s.sqlite"), report=str(tmp_path / "report"), progress=False,
                               max_trials=3, confirm_top=0, patience=None, include=("num_threads",))
    tuning = Tuning(options, describe(planned_steps=100_000))
    result = tuning.run(_trial([]))
    report = tuning.conclude(result, applied=result.best_config)
    net = report["net"]
    assert net["samples"] == 100_000 * 16 and not net["assumed"]
    assert net["default_run_s"] == pytest.approx(100_000 * 16 / result.baseline_value)
    assert net["estimated"] == pytest.approx(net["default_run_s"] / (result.wall_s + net["tuned_run_s"]))
    assert "estimated job time" in capsys.readouterr().err
    realised = tuning.finish(main_run_s=50.0, steps=400)
    assert realised is not None and realised["default_run_s"] == pytest.approx(400 * 16 / result.baseline_value)
    assert realised["net"] == pytest.approx(realised["default_run_s"] / (result.wall_s + 50.0))
    assert "tuning included" in capsys.readouterr().err
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["notes"]["net"]["realised"]["steps"] == 400
    page = (tmp_path / "report.html").read_text()
    assert "Job time, tuning included" in page and f"{realised['net']:.2f}x" in page


def test_an_unknown_length_assumes_half_an_hour_and_caps_the_tuning() -> None:
    tune = AutoScoutOptions(progress=False).tune_options()
    assert tune.planned_run_s == netgain.ASSUMED_RUN_S and tune.max_seconds == 90.0 and tune.net_gain
    assert AutoScoutOptions(progress=False, max_seconds=30).tune_options().max_seconds == 30.0
    assert AutoScoutOptions(progress=False, net_gain=False).tune_options().max_seconds is None
    known = AutoScoutOptions(progress=False).tune_options(planned_samples=1000.0)
    assert known.planned_run_s is None and known.max_seconds is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"planned_steps": 0}, "planned_steps must be an integer >= 1, got 0"),
    ({"planned_steps": 2.5}, "planned_steps must be an integer"),
    ({"net_gain": "yes"}, "net_gain must be True or False"),
])
def test_bad_net_gain_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoScoutOptions(**kwargs)


def test_the_auto_trial_budget_lets_the_rule_bound_a_job_of_known_length() -> None:
    # The default budget: 8 trials where nothing else stops the search, up to 24 where the look-ahead does
    # (each further trial must still pay for itself); a number the user gives is kept as it is.
    auto = AutoScoutOptions(progress=False)
    assert auto.max_trials == "auto"
    assert auto.tune_options(planned_steps=10_000).max_trials == netgain.LONG_JOB_TRIALS == 24
    assert auto.tune_options(planned_samples=80_000.0).max_trials == 24
    assert auto.tune_options().max_trials == netgain.DEFAULT_TRIALS == 8  # unknown length: 90 s and 8 trials
    assert AutoScoutOptions(net_gain=False).tune_options(planned_steps=10_000).max_trials == 8
    assert AutoScoutOptions(max_trials=5).tune_options(planned_steps=10_000).max_trials == 5
    assert AutoScoutOptions(max_trials=None, max_seconds=60.0).tune_options(planned_steps=10).max_trials is None
    with pytest.raises(ValueError, match=r"max_trials must be >= 1 \(an integer\), got 'all'"):
        AutoScoutOptions(max_trials="all")


class _CostlyFirst(GridSearch):
    """A search whose model ranks a costly candidate (8 threads: 200 s a trial, say a compile) first, and
    knows a cheap one (2 threads: 5 s) that is slower but still a large win."""

    PREDICTED = {8: (20.0, 200.0), 2: (15.0, 5.0)}

    def ask(self) -> dict[str, Any]:
        for threads in (8, *range(1, 9)):
            config = {"num_threads": threads}
            if not self._taken(config):
                return self._hand_out(config)
        raise self._exhausted()

    def outlook(self, config: dict[str, Any]) -> tuple[float, float]:
        return math.log(self.PREDICTED.get(config["num_threads"], (10.5, 5.0))[0]), 0.05

    def expected_cost_s(self, config: dict[str, Any]) -> float:
        return self.PREDICTED.get(config["num_threads"], (10.5, 5.0))[1]

    def open_outlooks(self) -> list[tuple[dict[str, Any], float, float, float]]:
        open_ = [c for c in self.space.enumerate() if not self._taken(c)]
        return [(c, *self.outlook(c), self.expected_cost_s(c)) for c in open_]


def test_a_cheap_candidate_worth_its_cost_runs_when_the_proposed_one_costs_more_than_it_saves() -> None:
    # A 300 s main run at the user's 10 samples/s: the costly candidate would save 150 s for 200, the cheap
    # one 100 s for 5. It runs in its place; after it, nothing left is worth a trial.
    speeds = {1: 10.0, 2: 15.0, 8: 20.0}
    recorder = Recorder(lambda config, fidelity: speeds.get(config["num_threads"], 10.5), cost_s=5.0)
    tuner = _tuner(recorder, planned_samples=3000.0)
    tuner.search = _CostlyFirst(_space())
    result = tuner.run()
    assert [c["num_threads"] for c in recorder.configs()] == [1, 2]
    assert "would not pay for itself" in result.stop_reason
    assert result.net["instead"]["config"] == {"num_threads": 2} and result.net["instead"]["of"] == {"num_threads": 8}
    assert result.best_config == {"num_threads": 2}
    # A main run long enough for the costly one: it runs as proposed, no alternative is looked for.
    long = Recorder(lambda config, fidelity: speeds.get(config["num_threads"], 10.5), cost_s=5.0)
    tuner = _tuner(long, planned_samples=3e6, max_trials=2)
    tuner.search = _CostlyFirst(_space())
    assert tuner.run().net.get("instead") is None and [c["num_threads"] for c in long.configs()] == [1, 8]


def test_the_hybrid_search_offers_every_open_config_with_its_outlook_and_cost() -> None:
    recorder = Recorder(_flat, cost_s=5.0)
    tuner = _tuner(recorder, planned_samples=1e9, max_trials=3)
    tuner.run()
    outlooks = tuner.search.open_outlooks()
    measured = [c["num_threads"] for c in recorder.configs()]
    assert len(measured) == 3 and sorted(c["num_threads"] for c, *_ in outlooks) == \
        sorted(set(range(1, 9)) - set(measured))
    assert all(math.isfinite(mean) and std >= 0 and cost > 0 for _, mean, std, cost in outlooks)


# ---------------------------------------------------------------- trials that count as training
def _kept(config: dict[str, Any], fidelity: Fidelity) -> TrialOutcome:
    return TrialOutcome(value=_flat(config, fidelity), cost_s=5.0, metrics={"kept_steps": 5})


def test_kept_steps_shorten_the_main_run_and_cost_the_job_only_what_they_do_not_train() -> None:
    # 200 steps of 10 samples at about 10 samples/s: each kept step is a second of the main run saved
    tuner = _tuner(Recorder(_kept), planned_samples=2000.0, planned_steps=200, max_trials=2,
                   kept_steps=lambda config: 5 if config["num_threads"] <= 2 else 0)
    result = tuner.run()
    assert tuner.kept == 10 and result.net["kept_steps"] == 10 and result.net["step_samples"] == 10.0
    assert result.net["samples"] == pytest.approx(2000.0 - 10 * 10.0)
    assert tuner.look.main_samples(remaining=False) == 2000.0
    best = tuner._best_value()
    assert tuner.look.trial_cost_s({"num_threads": 1}) == pytest.approx(5.0 - 5 * 10.0 / best)  # kept: steps count
    assert tuner.look.net_cost_s({"num_threads": 8}, 5.0) == 5.0  # rolled back: the whole trial is overhead
    assert tuner.look.net_cost_s({"num_threads": 1}, 1.0) == 0.0  # never below nothing


def test_the_search_stops_once_the_trials_trained_the_whole_main_run() -> None:
    recorder = Recorder(_kept)
    result = _tuner(recorder, planned_samples=120.0, planned_steps=12, net_gain=False,
                    kept_steps=lambda config: 5).run()
    assert len(recorder.calls) == 3 and result.stop_reason == "the trials trained every step of the main run (15 kept)"
    assert result.net["kept_steps"] == 15
