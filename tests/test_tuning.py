"""The one tuning flow (`autoscout_plugin.tuning`) and the batch split it hands every adapter, with a
plain-Python trial function: plan checks before any trial, the split of each request, the one cut-short
policy, a split that does not divide never run, the baseline, the decision's report."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin import AutoScoutOptions
from autoscout_plugin.batch import BatchSplit, BatchSplitError
from autoscout_plugin.costmodel import Hardware, Workload
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuning import RunDescription, TrialRequest, Tuning

CPU2 = Hardware(kind="cpu", cores=2, bf16=False)
QUICK = {"progress": False, "patience": None, "confirm_top": 0}


def describe(**overrides: Any) -> RunDescription:
    """A one-process run: micro-batch 8 of a global batch of 16 (accumulation 2), 2 threads."""
    base: dict[str, Any] = {
        "current": {"strategy": "single", "num_processes": 1, "micro_batch_size": 8, "num_threads": 2},
        "knobs": ("micro_batch_size", "num_threads"), "hardware": CPU2,
        "workload": Workload(family="mlp", global_batch=16), "split": BatchSplit(16, 8, 2, 1),
        "fixed": {"strategy": "single", "num_processes": 1}}
    return RunDescription(**(base | overrides))


def options(tmp_path: Path, **kwargs: Any) -> AutoScoutOptions:
    return AutoScoutOptions(store=str(tmp_path / "store.sqlite"), **(QUICK | kwargs))


# ---------------------------------------------------------------- the batch split
def test_a_split_is_checked_once_and_names_every_factor() -> None:
    assert BatchSplit.of(64, micro_batch=8, processes=2) == BatchSplit(64, 8, 4, 2)
    assert BatchSplit(64, 8, 4, 2).per_process == 32
    with pytest.raises(BatchSplitError, match="micro_batch 8 x grad_accum 2 x processes 2 = 32, not the global batch"):
        BatchSplit(64, 8, 2, 2)
    with pytest.raises(BatchSplitError, match="micro_batch 6 x processes 2 = 12 does not divide the global batch 64"):
        BatchSplit.of(64, micro_batch=6, processes=2)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(BatchSplitError, match="must be a positive integer"):
            BatchSplit.of(64, micro_batch=bad)  # type: ignore[arg-type]


def test_a_config_keeps_the_global_batch_and_round_trips() -> None:
    split = BatchSplit(16, 8, 2, 1)
    assert split.for_config({"micro_batch_size": 2}) == BatchSplit(16, 2, 8, 1)
    assert split.for_config({"micro_batch_size": 4, "num_processes": 2}) == BatchSplit(16, 4, 2, 2)
    assert split.for_config({}) == split
    assert BatchSplit.from_json(json.loads(json.dumps(split.to_json()))) == split


# ---------------------------------------------------------------- plan checks, before any trial
@pytest.mark.parametrize(("run", "opts", "message"), [
    ({"pinned": {"num_threads": "OMP_NUM_THREADS=2"}}, {"include": ("num_threads",)},
     "knob 'num_threads' is listed in include but pinned by OMP_NUM_THREADS=2"),
    ({"unavailable": {"num_threads": "the run is in a sandbox"}}, {"include": ("num_threads",)},
     "cannot tune 'num_threads': the run is in a sandbox; drop it from include"),
    ({}, {"include": ("precision",)}, "knob 'precision' cannot be tuned in this run: it can tune"),
    ({"pinned": {"micro_batch_size": "the user", "num_threads": "the user"}}, {},
     r"nothing to tune: every knob is pinned \(micro_batch_size by the user, num_threads by the user\)"),
    ({}, {"pin": {"micro_batch_size": 8, "num_threads": 2}}, "nothing to tune"),
    ({"current": {"strategy": "single", "num_processes": 1, "micro_batch_size": 8, "num_threads": 4}},
     {"pin": {"num_threads": 4}}, "cannot build the knob space for this run"),
])
def test_bad_input_fails_before_any_trial(tmp_path: Path, run: dict[str, Any], opts: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tuning(options(tmp_path, **opts), describe(**run))


def test_own_settings_outside_the_space_are_no_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = {"strategy": "single", "num_processes": 1, "micro_batch_size": 8, "num_threads": 4}  # 4 > 2 cores
    tuning = Tuning(options(tmp_path), describe(current=current))
    assert tuning.baseline is None and "your own settings are outside the space" in capsys.readouterr().err
    assert Tuning(options(tmp_path), describe()).baseline == {"micro_batch_size": 8, "num_processes": 1,
                                                              "num_threads": 2, "strategy": "single"}


def test_with_fixed_processes_the_space_keeps_the_per_process_batch(tmp_path: Path) -> None:
    run = describe(current={"micro_batch_size": 8, "num_threads": 1, "num_processes": 2}, fixed={},
                   split=BatchSplit(32, 8, 2, 2))
    tuning = Tuning(options(tmp_path), run)
    assert "num_processes" not in tuning.space and tuning._workload().global_batch == 16
    assert tuning.space["num_threads"].choices == (1,)  # threads x 2 fixed processes <= 2 cores
    assert tuning.request({"micro_batch_size": 4, "num_threads": 1}, Fidelity.F2).split == BatchSplit(32, 4, 4, 2)



def test_a_rank_that_follows_checks_the_options_but_leaves_the_store_and_report_alone(tmp_path: Path) -> None:
    damaged = tmp_path / "store.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)  # rank 0 would move it aside
    follower = Tuning(options(tmp_path, report=str(tmp_path / "out" / "report")), describe(), decides=False)
    assert follower.options.store == str(damaged) and follower.space["num_threads"].choices == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]  # nothing moved, no report folder
    with pytest.raises(ValueError, match="nothing to tune"):  # a bad option fails on every rank
        Tuning(options(tmp_path, pin={"micro_batch_size": 8, "num_threads": 2}), describe(), decides=False)


def test_on_several_nodes_threads_share_one_nodes_cores_among_its_own_processes(tmp_path: Path) -> None:
    """`num_processes` is per node (the catalogue's), the process knobs out of the space: 1 process per node
    on 2-core nodes may run 2 threads, and each request keeps the global batch over every node's process."""
    run = describe(current={"micro_batch_size": 8, "num_threads": 1, "num_processes": 1, "num_nodes": 2},
                   fixed={}, split=BatchSplit(32, 8, 2, 2))
    tuning = Tuning(options(tmp_path), run)
    assert tuning.space["num_threads"].choices == (1, 2) and tuning._workload().global_batch == 16
    assert tuning.request({"micro_batch_size": 4, "num_threads": 2}, Fidelity.F2).split == BatchSplit(32, 4, 4, 2)

# ---------------------------------------------------------------- requests and the cut-short policy
def test_requests_carry_the_split_and_only_search_trials_are_cut_short(tmp_path: Path) -> None:
    seen: list[TrialRequest] = []
    speed = {16: 9.0, 8: 10.0, 4: 20.0, 2: 4.0, 1: 3.0}

    def trial(request: TrialRequest) -> TrialOutcome:
        seen.append(request)
        return TrialOutcome(value=speed[request.config["micro_batch_size"]] * request.config["num_threads"],
                            cost_s=1.0)

    tuning = Tuning(options(tmp_path, max_trials=6, warmup_steps=1, measure_steps=3, cut_below=0.5,
                            confirm_top=2, confirm_rounds=1, trial_timeout_s=30.0), describe())
    result = tuning.run(trial)
    first = seen[0]
    assert first.config == tuning.baseline and first.cut_off is None  # nothing measured yet: nothing to cut under
    assert (first.warmup, first.measure, first.timeout_s) == (1, 3, 30.0)
    for request in seen:
        assert request.split == BatchSplit.of(16, micro_batch=request.config["micro_batch_size"])
    f2 = [r for r in seen if r.fidelity == Fidelity.F2]
    best = 0.0
    for request in f2:
        assert request.cut_off == (0.5 * best if best else None)
        best = max(best, speed[request.config["micro_batch_size"]] * request.config["num_threads"])
    assert all(r.cut_off is None for r in seen if r.fidelity == Fidelity.F3)
    assert result.best_config is not None and result.best_config["micro_batch_size"] == 4


def test_a_config_whose_split_does_not_divide_is_recorded_invalid_and_never_run(tmp_path: Path) -> None:
    tuning = Tuning(options(tmp_path), describe())
    ran: list[dict[str, Any]] = []
    profile = tuning._profile(lambda request: ran.append(request.config) or TrialOutcome(value=1.0))
    outcome = profile({"micro_batch_size": 3, "num_threads": 2}, Fidelity.F2)
    assert outcome.status == "invalid" and "does not divide the global batch 16" in (outcome.error or "")
    assert ran == []


def test_the_child_protocol_spec_of_a_request(tmp_path: Path) -> None:
    tuning = Tuning(options(tmp_path), describe())
    spec = tuning.request({"micro_batch_size": 4, "num_threads": 1}, Fidelity.F3).spec()
    assert spec == {"mode": "trial", "config": {"micro_batch_size": 4, "num_threads": 1, "grad_accum": 4},
                    "warmup": 2, "measure": 4, "max_measure": None, "precision": None, "best": None,
                    "cut_off": None, "global_batch": 16}  # a confirmation is timed exactly: rounds, not length
    tuning._best = 50.0
    search = tuning.request({"micro_batch_size": 4, "num_threads": 1}, Fidelity.F2)
    assert (search.measure, search.max_measure, search.precision, search.best) == (4, 12, 0.05, 50.0)
    assert search.steps == 2 + 12 and search.spec()["best"] == 50.0
    exact = Tuning(options(tmp_path, measure_precision=None), describe()).request({"num_threads": 1}, Fidelity.F2)
    assert (exact.max_measure, exact.precision, exact.steps) == (None, None, 2 + 4)


# ---------------------------------------------------------------- the decision and its report
def test_conclude_writes_the_report_with_pins_and_what_was_applied(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = describe(pinned={"precision": "Trainer(precision='bf16-mixed')"}, ignored={"lr": "not a knob"})
    tuning = Tuning(options(tmp_path, max_trials=2, report=str(tmp_path / "r"), pin={"num_threads": 2}), run)
    result = tuning.run(lambda request: TrialOutcome(value=float(request.config["micro_batch_size"]), cost_s=0.1))
    notes = tuning.conclude(result, applied=result.best_config, declared={"lr": 0.1})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["notes"]["pinned"] == {"precision": "Trainer(precision='bf16-mixed')",
                                       "num_threads": "AutoScoutOptions.pin"}
    assert data["pinned"] == {"precision": None, "num_threads": 2}
    assert data["notes"]["tuned"] == ["micro_batch_size"] and data["notes"]["global_batch"] == 16
    assert data["notes"]["declared"] == {"lr": 0.1} and data["notes"]["ignored"] == {"lr": "not a knob"}
    assert notes["applied"] == result.best_config and (tmp_path / "r.html").exists()
    err = capsys.readouterr().err
    assert "not tuned: lr (not a knob)" in err and "applied: " in err


def test_when_every_trial_fails_the_user_is_warned(tmp_path: Path) -> None:
    tuning = Tuning(options(tmp_path, max_trials=2), describe(main_run="the main fit"))
    result = tuning.run(lambda request: TrialOutcome(status="error", error="boom"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = tuning.conclude(result, applied=None)
    assert result.best_config is None and notes["applied"] is None
    assert any("every trial failed; the main fit uses your own settings" in str(w.message) for w in caught)


def test_isolate_wraps_the_whole_search(tmp_path: Path) -> None:
    events: list[str] = []

    class Guard:
        def __enter__(self) -> None:
            events.append("enter")

        def __exit__(self, *exc: Any) -> None:
            events.append("exit")

    Tuning(options(tmp_path, max_trials=2), describe()).run(
        lambda request: events.append("trial") or TrialOutcome(value=1.0), isolate=Guard)
    assert events[0] == "enter" and events[-1] == "exit" and events.count("trial") == 2


# ---------------------------------------------------------------- AutoScout's own output never ends the run
def test_a_store_that_breaks_mid_run_stops_tuning_with_a_warning_not_an_exception(tmp_path: Path) -> None:
    calls: list[TrialRequest] = []

    def trial(request: TrialRequest) -> TrialOutcome:
        calls.append(request)
        if len(calls) == 2:  # the disk under the store goes bad while a trial runs
            for path in tmp_path.glob("store.sqlite*"):
                path.write_bytes(b"\xa5" * path.stat().st_size)
        return TrialOutcome(value=10.0 + len(calls), cost_s=0.1)

    tuning = Tuning(options(tmp_path, max_trials=5), describe())
    with pytest.warns(RuntimeWarning, match="the trial store failed during tuning .* uses your own settings"):
        result = tuning.run(trial)
    assert len(calls) == 2 and result.best_config is None and result.stop_reason.startswith("the trial store failed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "every trial failed" on top: they did not
        notes = tuning.conclude(result, applied=None)
    assert notes["applied"] is None
