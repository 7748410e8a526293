"""The tuner and its SQLite store: resuming a killed run, zero-trial reuse, and warm starts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.costmodel import Workload
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Trial
from autoscout_plugin.tuner import Tuner

from .tuner_helpers import (
    HARDWARE,
    Recorder,
    by_threads,
    cost_model_objective,
    f2,
    options,
    resume_objective,
    resume_tuner,
    threads_space,
    training_space,
    workload,
)

TESTS_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------- store
_KILLED_CHILD = """
import os, signal, sys
sys.path.insert(0, {tests_dir!r})
import tuner_helpers as t

calls = 0
def profile(config, fidelity):
    global calls
    calls += 1
    if calls == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return t.Recorder(t.resume_objective)(config, fidelity)

t.resume_tuner(sys.argv[1], profile).run()
"""


def test_resume_after_a_killed_process(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_CHILD.format(tests_dir=str(TESTS_DIR))), store_path],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with SQLiteStore(store_path) as store:
        fp = resume_tuner(store_path, Recorder(resume_objective)).fingerprint
        done = store.trials(store.open_study(fp, workload={}, hardware={}, space={}))
    assert [(t.number, t.config["num_threads"], t.status) for t in done] == [
        (0, 1, "ok"), (1, 2, "oom"), (2, 3, "ok")]

    seen: list[Trial] = []
    profile = Recorder(resume_objective)
    result = resume_tuner(store_path, profile, on_trial=lambda trial, tuner: seen.append(trial)).run()
    assert [c["num_threads"] for c in profile.configs()] == [4, 5, 6]  # nothing re-profiled, the oom included
    assert [t.number for t in seen] == [3, 4, 5]  # numbering continues
    assert [t.number for t in result.trials] == list(range(6))
    assert [t.config["num_threads"] for t in result.trials[:3]] == [1, 2, 3]
    assert len(f2(result)) == 6  # the budget counts the trials of the killed run
    assert result.best_config == {"num_threads": 3}  # found by the killed run


def test_zero_trial_reuse_of_a_solved_study(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    w = workload()

    def tuner(profile: Recorder, **kwargs: Any) -> Tuner:
        opts = options(max_trials=6, search="random", confirm_top=1, store=store_path, **kwargs)
        return Tuner(training_space(), profile, opts, workload=w, hardware=HARDWARE)

    first = tuner(Recorder(cost_model_objective(w))).run()
    assert not first.reused and first.best_config is not None

    profile = Recorder(cost_model_objective(w))
    second = tuner(profile, reuse=True).run()
    assert second.reused
    assert profile.calls == []
    assert second.trials == []
    assert second.best_config == first.best_config
    assert second.best_value == pytest.approx(first.best_value)
    assert second.fingerprint == first.fingerprint
    assert "reused the stored winner" in second.table()

    profile = Recorder(cost_model_objective(w))
    third = tuner(profile, reuse=False).run()
    assert not third.reused
    assert len(profile.configs()) >= 1
    assert third.trials and third.trials[0].number == first.n_trials  # appended to the same study


def test_reuse_needs_the_same_space(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    Tuner(threads_space(4), Recorder(by_threads), options(max_trials=4, store=store_path)).run()
    profile = Recorder(by_threads)
    result = Tuner(threads_space(6), profile, options(max_trials=2, store=store_path)).run()
    assert not result.reused
    assert len(profile.calls) == 2


def _past_study(store_path: str, w: Workload, seed: int = 3) -> TuneResult:
    opts = options(max_trials=6, search="random", seed=seed, confirm_top=1, store=store_path)
    return Tuner(training_space(w.global_batch or 32), Recorder(cost_model_objective(w)), opts,
                 workload=w, hardware=HARDWARE).run()


def _first_configs(store_path: str, w: Workload, n_trials: int = 2, baseline: dict[str, Any] | None = None,
                   **kwargs: Any) -> list[dict[str, Any]]:
    profile = Recorder(cost_model_objective(w))
    opts = options(max_trials=n_trials, search="random", seed=3, store=store_path, **kwargs)
    Tuner(training_space(w.global_batch or 32), profile, opts, workload=w, hardware=HARDWARE,
          baseline=baseline).run()
    return profile.configs()


def test_warm_start_tries_the_winner_of_a_similar_study_first(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    small, large = workload(global_batch=32), workload(global_batch=64)
    past = _past_study(store_path, small)
    winner = past.best_config
    assert winner is not None
    cold = _first_configs(str(tmp_path / "cold.sqlite"), large)  # the same study without a past
    assert cold[0] != winner, "pick another seed: the cold start already begins with the winner"

    profile = Recorder(cost_model_objective(large))
    opts = options(max_trials=4, search="random", seed=3, store=store_path)
    result = Tuner(training_space(64), profile, opts, workload=large, hardware=HARDWARE).run()
    assert not result.reused  # another global batch is another problem ...
    assert result.fingerprint != past.fingerprint
    assert profile.configs()[0] == winner  # ... but a similar one
    assert result.trials[0].config == winner
    assert winner in profile.configs()[:1] and profile.configs().count(winner) == 1


def test_warm_start_comes_after_the_baseline(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    past = _past_study(store_path, workload(global_batch=32))
    baseline = {"strategy": "single", "num_processes": 1, "precision": "32-true",
                "activation_checkpointing": True, "micro_batch_size": 4, "num_threads": 1}
    assert past.best_config != baseline
    first = _first_configs(store_path, workload(global_batch=64), n_trials=3, baseline=baseline)
    assert first[:2] == [baseline, past.best_config]


def test_warm_start_can_be_turned_off(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    past = _past_study(store_path, workload(global_batch=32))
    large = workload(global_batch=64)
    cold = _first_configs(str(tmp_path / "cold.sqlite"), large)
    assert past.best_config != cold[0]
    assert _first_configs(store_path, large, warm_start=False) == cold


def test_no_warm_start_from_a_different_family(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    past = _past_study(store_path, workload(family="cnn"))
    large = workload(global_batch=64)
    cold = _first_configs(str(tmp_path / "cold.sqlite"), large)
    assert past.best_config != cold[0]
    assert _first_configs(store_path, large) == cold


# --------------------------------------------------------------------------- exclusions in the store
DYNAMO = "torch._dynamo.exc.TorchRuntimeError: RuntimeError when making fake tensor call"


def _compile_fails(config: dict[str, Any], fidelity: Any) -> Any:
    if config.get("compile", "off") != "off":
        raise RuntimeError("wrapped") from _DynamoError("no fake impl registered for <CustomOpDef(x::scan)>")
    return 10.0 * config["num_threads"]


class _DynamoError(Exception):
    """Stands in for `torch._dynamo.exc.TorchRuntimeError` (its module is what the class names)."""


_DynamoError.__module__ = "torch._dynamo.exc"


def _compile_space(threads: int) -> Any:
    from autoscout_plugin.space import Categorical, Int, Space

    return Space([Categorical(name="compile", choices=("off", "default", "max-autotune"), structural=True),
                  Int(name="num_threads", choices=tuple(range(1, threads + 1)))])


def test_an_unsupported_setting_is_excluded_in_a_later_study_of_the_same_model(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    w = workload()
    first = Tuner(_compile_space(2), Recorder(_compile_fails), options(max_trials=6, search="autoscout",
                                                                       store=store_path),
                  workload=w, hardware=HARDWARE, baseline={"compile": "off", "num_threads": 1}).run()
    compiled = [t for t in first.trials if t.config["compile"] != "off"]
    assert len(compiled) == 1 and compiled[0].failure == "unsupported" and compiled[0].blame == ["compile"]
    assert "[from torch._dynamo.exc._DynamoError: no fake impl" in (compiled[0].error or "")
    (exclusion,) = first.exclusions
    assert exclusion["knob"] == "compile" and exclusion["values"] == ["default", "max-autotune"]
    assert exclusion["reason"].startswith(f"trial {compiled[0].number}: RuntimeError: wrapped [from torch._dynamo")
    # The same model, another space (more threads): a new study that starts with the exclusion.
    profile = Recorder(_compile_fails)
    second = Tuner(_compile_space(4), profile, options(max_trials=6, search="autoscout", store=store_path),
                   workload=w, hardware=HARDWARE, baseline={"compile": "off", "num_threads": 1}).run()
    assert second.fingerprint != first.fingerprint and not second.reused
    assert all(c["compile"] == "off" for c in profile.configs())
    (exclusion,) = second.exclusions
    assert exclusion["reason"].startswith("study-1 on this machine, trial ")
    # a study of another model does not inherit it
    other = Recorder(_compile_fails)
    Tuner(_compile_space(3), other, options(max_trials=6, search="autoscout", store=store_path),
          workload=workload(family="cnn"), hardware=HARDWARE).run()
    assert any(c["compile"] != "off" for c in other.configs())


def _compile_fails_without_checkpointing(config: dict[str, Any], fidelity: Any) -> Any:
    if config["compile"] != "off" and not config["activation_checkpointing"]:
        raise _DynamoError("no fake impl registered for <CustomOpDef(x::scan)>")
    return 10.0 * config["num_threads"] + (5.0 if config["compile"] != "off" else 0.0)


def test_a_scoped_exclusion_is_stored_and_inherited_with_its_scope(tmp_path: Path) -> None:
    """As on benchmarks/tables/recurrent_lm: compile fails without checkpointing and runs with it."""
    from autoscout_plugin.space import Bool, Categorical, Int, Space

    def space(threads: int) -> Space:
        return Space([Categorical(name="compile", choices=("off", "default", "max-autotune"), structural=True),
                      Bool("activation_checkpointing", structural=True),
                      Int(name="num_threads", choices=tuple(range(1, threads + 1)))])

    store_path, w = str(tmp_path / "trials.sqlite"), workload()
    first = Tuner(space(1), Recorder(_compile_fails_without_checkpointing),
                  options(max_trials=6, search="autoscout", store=store_path), workload=w, hardware=HARDWARE).run()
    failed = [t for t in first.trials if not t.ok]
    assert len(failed) == 1 and failed[0].failure == "unsupported"
    assert any(t.ok and t.config["compile"] != "off" for t in first.trials)  # compile with checkpointing ran
    (exclusion,) = first.exclusions
    assert exclusion["when"] == {"activation_checkpointing": False}
    assert "where activation_checkpointing=False" in first.table()
    profile = Recorder(_compile_fails_without_checkpointing)
    second = Tuner(space(2), profile, options(max_trials=8, search="autoscout", store=store_path),
                   workload=w, hardware=HARDWARE).run()
    assert not any(c["compile"] != "off" and not c["activation_checkpointing"] for c in profile.configs())
    assert any(c["compile"] != "off" for c in profile.configs())
    (exclusion,) = second.exclusions
    assert exclusion["when"] == {"activation_checkpointing": False}
    assert exclusion["reason"].startswith("study-1 on this machine, trial ")


def test_a_study_tuned_again_keeps_its_exclusion_without_paying_again(tmp_path: Path) -> None:
    store_path = str(tmp_path / "trials.sqlite")
    space, w = _compile_space(3), workload()
    Tuner(space, Recorder(_compile_fails), options(max_trials=3, search="autoscout", store=store_path,
                                                   reuse=False), workload=w, hardware=HARDWARE).run()
    with SQLiteStore(store_path) as store:
        before = store.trials("study-1")
    assert sum(t.failure == "unsupported" for t in before) == 1
    profile = Recorder(_compile_fails)
    Tuner(space, profile, options(max_trials=6, search="autoscout", store=store_path, reuse=False),
          workload=w, hardware=HARDWARE).run()
    assert all(c["compile"] == "off" for c in profile.configs())


# ------------------------------------------------------------------------------------------- shared studies
def test_a_config_another_worker_is_running_is_left_to_it(tmp_path: Path) -> None:
    """Another worker (another machine) holds the user's config: this worker measures others, and what the
    other worker adds to the study meanwhile is told to this one's search and counted in the budget."""
    store_path = tmp_path / "trials.sqlite"
    space = threads_space(6)
    with SQLiteStore(store_path) as store:
        peek = Tuner(space, Recorder(by_threads), options(max_trials=4), store=store)
        elsewhere = store.claim(peek.study_id, {"num_threads": 1}, worker="gpu-node-7:4242")
        assert elsewhere is not None
        calls: list[int] = []

        def profile(config: dict[str, Any], fidelity: Any) -> Any:
            calls.append(config["num_threads"])
            if len(calls) == 1:  # meanwhile the other worker finishes its trial
                store.add_trial(peek.study_id, Trial(config={"num_threads": 1}, value=10.0), claim=elsewhere)
            return Recorder(by_threads)(config, fidelity)

        result = Tuner(space, profile, options(max_trials=4, confirm_top=0), store=store,
                       baseline={"num_threads": 1}).run()
        trials = store.trials(peek.study_id)
        assert store.running(peek.study_id) == []  # every claim ended with its trial
    assert 1 not in calls and len(calls) == 3  # the other worker's trial took one of the study's 4
    assert sorted(t.config["num_threads"] for t in result.trials) == sorted([1, *calls])
    assert [t.number for t in trials] == [0, 1, 2, 3]


def test_the_budget_is_the_studys_when_other_workers_hold_the_rest(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "trials.sqlite") as store:
        peek = Tuner(threads_space(6), Recorder(by_threads), options(max_trials=3), store=store)
        for n in (5, 6):  # two trials running elsewhere, heartbeating (their lease does not run out here)
            assert store.claim(peek.study_id, {"num_threads": n}, worker=f"other:{n}", lease_s=60) is not None
        profile = Recorder(by_threads)
        result = Tuner(threads_space(6), profile, options(max_trials=3, lease_s=0.5), store=store).run()
    assert len(profile.configs()) == 1  # then it waited half a second (its lease) for them, and left
    assert "used by this and other workers" in result.stop_reason


def test_a_dead_remote_workers_config_is_run_before_the_budget_ends(tmp_path: Path) -> None:
    """The last trial of the budget is held by a worker on another machine that died: its claim goes stale
    after its lease, and a live worker runs the config rather than leaving the study one trial short."""
    with SQLiteStore(tmp_path / "trials.sqlite") as store:
        peek = Tuner(threads_space(6), Recorder(by_threads), options(max_trials=3), store=store)
        assert store.claim(peek.study_id, {"num_threads": 6}, worker="gpu-node-3:77", lease_s=1.0) is not None
        profile = Recorder(by_threads)
        Tuner(threads_space(6), profile, options(max_trials=3, lease_s=3.0), store=store).run()
        trials = store.trials(peek.study_id)
    assert sorted(c["num_threads"] for c in profile.configs()) == [1, 2, 6]
    assert [t.number for t in trials] == [0, 1, 2]


class _RacingStore(SQLiteStore):
    """Another worker finishes config {num_threads: 2} just before this worker claims it: after this
    worker's look at the study, before its claim (a finished config may be claimed again)."""

    def claim(self, study_id: str, config: dict[str, Any], **kwargs: Any) -> Any:
        if config == {"num_threads": 2} and not any(t.config == config for t in self.trials(study_id)):
            elsewhere = super().claim(study_id, config, worker="other:1")
            self.add_trial(study_id, Trial(config=config, value=20.0), claim=elsewhere)
        return super().claim(study_id, config, **kwargs)


def test_a_config_another_worker_finished_just_before_the_claim_is_not_measured_again(tmp_path: Path) -> None:
    with _RacingStore(tmp_path / "trials.sqlite") as store:
        profile = Recorder(by_threads)
        result = Tuner(threads_space(4), profile, options(max_trials=4), store=store).run()
    assert [c["num_threads"] for c in profile.configs()] == [1, 3, 4]
    assert sorted(t.config["num_threads"] for t in result.trials) == [1, 2, 3, 4]
