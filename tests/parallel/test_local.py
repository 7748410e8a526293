"""Parallel trials on this machine (`local` executor): K at once, never more, conditioned proposals, and
failures, a killed worker and an interrupted tuning survived. Real processes; no engine needed."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.parallel import TrialJob, make_executor, parse_executor
from autoscout_plugin.parallel.local import LocalExecutor
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.space import Int, Space
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.store.lease import process_exists
from autoscout_plugin.tuner import TuneOptions, Tuner

from .jobs import intervals, job, most_at_once

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SPACE = Space([Int(name="num_threads", choices=(1, 2, 3, 4)), Int(name="micro_batch_size", choices=(1, 2, 4))])


def value(config: dict) -> float:
    return 10.0 * config["num_threads"] + config["micro_batch_size"]


def never(config: dict, fidelity: object) -> TrialOutcome:
    raise AssertionError("search trials run as jobs, not in this process")


def tuner(tmp_path: Path, jobs, *, slots: int = 2, trials: int = 6, **options) -> Tuner:
    return Tuner(SPACE, never, TuneOptions(max_trials=trials, confirm_top=0, patience=None,
                                           store=str(tmp_path / "store.sqlite"), **options),
                 executor=LocalExecutor(slots), jobs=jobs)


def test_k_trials_run_at_once_and_never_more(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    t = tuner(tmp_path, lambda c, f: job(log, value(c), seconds=1.0), slots=2, trials=6)
    result = t.run()
    assert len(result.trials) == 6 and all(tr.ok for tr in result.trials)
    configs = [json.dumps(tr.config, sort_keys=True) for tr in result.trials]
    assert len(set(configs)) == 6  # a running config is never proposed again
    spans = intervals(log)
    assert len(spans) == 6 and most_at_once(spans) == 2
    assert t.executor is not None and t.executor.peak_running == 2
    assert all(tr.where for tr in result.trials)


def test_a_trial_that_crashes_hangs_or_clashes_on_a_port_is_recorded_and_the_tuning_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    modes = {1: "crash", 2: "hang", 3: "transient"}

    def jobs(config: dict, fidelity: object) -> TrialJob:
        mode = modes.get(config["num_threads"], "ok") if config["micro_batch_size"] == 1 else "ok"
        return job(log, value(config), mode=mode, timeout_s=3 if mode == "hang" else 60)

    t = tuner(tmp_path, jobs, slots=2, trials=13)  # the 12 configs and the port clash's retry
    result = t.run()
    by_threads = {}
    for tr in result.trials:
        if tr.config["micro_batch_size"] == 1:
            by_threads.setdefault(tr.config["num_threads"], []).append(tr)
    assert by_threads[1][0].failure == "crash" and by_threads[2][0].status == "timeout"
    # a port clash is retried once; twice in a row is no longer chance
    assert [tr.failure for tr in by_threads[3]] == ["transient", "crash"]
    assert result.best_config == {"micro_batch_size": 4, "num_threads": 4}
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        assert len(store.trials(t.study_id)) == 13 and store.running(t.study_id) == []


def test_a_worker_killed_mid_trial_is_a_crash_and_the_tuning_finishes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    killer = ("import os, signal, psutil; worker = psutil.Process().parent().parent();"
              " os.kill(worker.pid, signal.SIGKILL); import time; time.sleep(30)")

    def jobs(config: dict, fidelity: object) -> TrialJob:
        if config == {"micro_batch_size": 2, "num_threads": 2}:
            return TrialJob(command=(sys.executable, "-c", killer), timeout_s=60)
        return job(log, value(config), seconds=0.2)

    result = tuner(tmp_path, jobs, slots=2, trials=12).run()
    killed = [tr for tr in result.trials if tr.config == {"micro_batch_size": 2, "num_threads": 2}]
    assert len(killed) == 1 and killed[0].failure == "crash" and "no outcome" in (killed[0].error or "")
    assert len(result.trials) == 12 and result.best_config == {"micro_batch_size": 4, "num_threads": 4}


def test_an_interrupted_tuning_stops_its_running_trials_and_frees_their_configs(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()

    def stop(trial, tuner) -> None:
        raise KeyboardInterrupt

    t = tuner(tmp_path, lambda c, f: job(log, value(c), seconds=0.3 if c["num_threads"] == 1 else 30), slots=2,
              trials=6)
    t.on_trial = stop
    with pytest.raises(KeyboardInterrupt):
        t.run()
    pids = [json.loads(p.read_text())["pid"] for p in log.glob("start-*")]
    assert len(pids) >= 2
    deadline = time.monotonic() + 20
    while any(process_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(process_exists(pid) for pid in pids)  # the long trial was stopped, not left behind
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        assert store.running(t.study_id) == []  # released at once for the next run or another worker


def test_parallel_results_resume_like_serial_ones(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    first = tuner(tmp_path, lambda c, f: job(log, value(c), seconds=0.1), slots=2, trials=4).run()
    again = tuner(tmp_path, lambda c, f: job(log, value(c), seconds=0.1), slots=2, trials=8, reuse=False).run()
    assert len(first.trials) == 4 and len(again.trials) >= 8 - 4
    assert len({json.dumps(t.config, sort_keys=True) for t in again.trials}) == len(again.trials)


# ------------------------------------------------------------------ bad input, before anything runs


def test_bad_parallel_options_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="parallel must be an integer from 1 to 1024, got 0"):
        AutoScoutOptions(parallel=0)
    with pytest.raises(ValueError, match="unknown executor 'kubernetes'"):
        AutoScoutOptions(parallel=2, executor="kubernetes")
    with pytest.raises(ValueError, match=r"unknown slurm option 'partiton' \(did you mean partition\?\)"):
        AutoScoutOptions(executor="slurm:partiton=gpu")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_executor("slurm:partition")
    with pytest.raises(ValueError, match="the local executor takes no options"):
        parse_executor("local:4")
    with pytest.raises(ValueError, match="slots >= 1"):
        make_executor("local", 0)
    with pytest.raises(ValueError, match="give Tuner\\(jobs=...\\) too"):
        Tuner(SPACE, never, TuneOptions(max_trials=2), executor=LocalExecutor(2))
    with pytest.raises(ValueError, match="timeout_s > 0"):
        TrialJob(command=("python",), timeout_s=0)
    with pytest.raises(ValueError, match="cpus must be an integer >= 1"):
        TrialJob(command=("python",), timeout_s=1, cpus=0)


def test_a_run_whose_trials_run_in_process_refuses_parallel_trials() -> None:
    from autoscout_plugin.costmodel import Hardware
    from autoscout_plugin.tuning import RunDescription, Tuning

    run = RunDescription(current={"num_threads": 1}, knobs=("num_threads",), hardware=Hardware(kind="cpu", cores=2),
                         subject="this Trainer")
    with pytest.raises(ValueError, match="this Trainer runs its trials in this process.*autoscout launch"):
        Tuning(AutoScoutOptions(parallel=2), run)
    Tuning(AutoScoutOptions(parallel=2), RunDescription(current={"num_threads": 1}, knobs=("num_threads",),
                                                        hardware=Hardware(kind="cpu", cores=2), runs_jobs=True))


def test_a_job_gets_its_own_port_and_no_driver_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscout_plugin.parallel import PORT, run_trial_job

    monkeypatch.setenv("AUTOSCOUT_LAUNCH", '{"mode": "apply"}')
    code = ("import json, os, sys; json.dump({'status': 'ok', 'value': float(sys.argv[1]), 'metrics':"
            " {'launch': float('AUTOSCOUT_LAUNCH' in os.environ)}}, open(os.environ['AUTOSCOUT_RESULT'], 'w'))")
    outcome = run_trial_job(TrialJob(command=(sys.executable, "-c", code, PORT), timeout_s=30))
    assert outcome.status == "ok" and 1024 <= outcome.value <= 65535 and outcome.metrics["launch"] == 0.0
    assert outcome.where == os.uname().nodename
