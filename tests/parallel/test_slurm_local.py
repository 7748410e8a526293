"""Parallel trials as Slurm jobs through submitit, run here by submitit's local executor (`slurm:cluster=local`):
the same tuning with K = 2, a failing job recorded, and the options that become `sbatch` flags."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from autoscout_plugin.integrations.accelerate import main

from autoscout_plugin.parallel import TrialJob, make_executor
from autoscout_plugin.parallel.slurm import SlurmExecutor
from autoscout_plugin.tuner import TuneOptions, Tuner

from .jobs import intervals, job, most_at_once
from .test_local import SPACE, never, value

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(300)
def test_the_launcher_tunes_with_two_submitit_jobs_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCOUT_STORE", str(tmp_path / "store.sqlite"))
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys, time
        import autoscout_plugin as autoscout
        batch, accum = autoscout.knob("micro_batch_size", 8), autoscout.knob("grad_accum", 1)
        spec = autoscout.launch_spec() or {}
        log = os.path.join(sys.argv[1], f"{spec.get('mode')}-{os.getpid()}")
        open(log + ".start", "w").write(json.dumps({"t": time.time()}))
        for _ in range(4):
            time.sleep(1.0 / int(os.environ.get("OMP_NUM_THREADS", "1")))
            open(log + ".end", "w").write(json.dumps({"t": time.time()}))
            autoscout.step()
    """))
    log = tmp_path / "log"
    log.mkdir()
    report = tmp_path / "report"
    folder = tmp_path / "jobs"
    assert main(["--autoscout", "--autoscout-trials", "5", "--autoscout-parallel", "2", "--autoscout-executor",
                 f"slurm:cluster=local,folder={folder},partition=debug", "--autoscout-confirm", "0",
                 "--autoscout-warmup", "1", "--autoscout-measure", "2", "--autoscout-include",
                 "num_threads,micro_batch_size", "--autoscout-report", str(report), "--num_machines", "1",
                 "--num_processes", "1", str(script), str(log)]) == 0
    trials = [t for t in json.loads(report.with_suffix(".json").read_text())["trials"] if t["fidelity"] == "F2"]
    assert len(trials) == 5 and all(t["status"] == "ok" for t in trials)
    assert len({json.dumps(t["config"], sort_keys=True) for t in trials}) == 5
    spans = []
    for start in log.glob("trial-*.start"):
        end = start.with_suffix(".end")
        spans.append((json.loads(start.read_text())["t"], json.loads(end.read_text())["t"]))
    spans = sorted(spans)[1:]  # the first is trial 0, here: it learns which knobs the script reads
    assert len(spans) == 5 and most_at_once(spans) == 2  # two jobs at once, never more
    assert any(folder.iterdir())  # submitit's job folder: logs and results of each job
    assert len(list(log.glob("apply-*.start"))) == 1  # the real run, here, with the winner


KILL_THE_JOB = ("import os, signal, psutil; job = psutil.Process().parent().parent();"
                " os.kill(job.pid, signal.SIGKILL); import time; time.sleep(30)")


@pytest.mark.timeout(300)
def test_a_failed_trial_or_a_job_killed_by_the_cluster_is_a_crash_and_the_tuning_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()

    def jobs(config: dict, fidelity: object) -> TrialJob:
        if config == {"micro_batch_size": 2, "num_threads": 2}:  # its job dies (a preempted or lost node)
            return TrialJob(command=(sys.executable, "-c", KILL_THE_JOB), timeout_s=60)
        return job(log, value(config), seconds=0.2, mode="crash" if config["num_threads"] == 3 else "ok")

    executor = make_executor(f"slurm:cluster=local,folder={tmp_path / 'jobs'}", 2)
    assert isinstance(executor, SlurmExecutor)
    result = Tuner(SPACE, never, TuneOptions(max_trials=12, confirm_top=0, patience=None), executor=executor,
                   jobs=jobs).run()
    crashed = [t for t in result.trials if t.config["num_threads"] == 3]
    assert crashed and all(t.failure == "crash" for t in crashed)
    lost = [t for t in result.trials if t.config == {"micro_batch_size": 2, "num_threads": 2}]
    assert len(lost) == 1 and lost[0].failure == "crash" and "the Slurm job" in (lost[0].error or "")
    assert result.best_config == {"micro_batch_size": 4, "num_threads": 4}
    assert most_at_once(intervals(log)) <= 2


def test_each_trial_asks_slurm_for_what_its_config_needs_and_the_users_options_win(tmp_path: Path) -> None:
    executor = SlurmExecutor(3, {"cluster": "local", "folder": str(tmp_path), "partition": "gpu", "time": "30"})
    small = TrialJob(command=("true",), timeout_s=600, cpus=2)
    big = TrialJob(command=("true",), timeout_s=60, cpus=8, gpus=4, nodes=2)
    params = executor._parameters([small, big])
    assert params["cpus_per_task"] == 8 and params["gpus_per_node"] == 4 and params["nodes"] == 2
    assert params["slurm_array_parallelism"] == 3  # a job array never runs more than the slots
    assert params["slurm_partition"] == "gpu" and params["slurm_time"] == 30 and "timeout_min" not in params
    assert SlurmExecutor(1, {"cluster": "local", "folder": str(tmp_path)})._parameters([small])["timeout_min"] == 11


def test_unknown_sbatch_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown slurm option 'gpus'"):
        make_executor("slurm:gpus=4", 2)
    with pytest.raises(ValueError, match="cluster='yarn'"):
        make_executor("slurm:cluster=yarn", 2)


def test_the_readme_recipe_becomes_these_sbatch_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--autoscout-executor slurm:partition=gpu,time=30,account=ml` on a cluster: the sbatch file submitit writes
    for two trials started together (submitit needs `srun` on PATH to believe it is on a Slurm cluster)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    executor = make_executor(f"slurm:partition=gpu,time=30,account=ml,folder={tmp_path / 'jobs'}", 2)
    jobs = [TrialJob(command=("true",), timeout_s=600, cpus=4, gpus=1), TrialJob(command=("true",), timeout_s=60)]
    executor._executor.update_parameters(**executor._parameters(jobs))  # as submit_many does
    slurm = executor._executor._executor  # submitit's own SlurmExecutor
    slurm.parameters["map_count"] = len(jobs)  # what submitit sets for a job array
    text = slurm._make_submission_file_text("python -m submitit.core._submit", "uid")
    flags = {line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH")}
    assert {"--partition=gpu", "--time=30", "--account=ml", "--array=0-1%2", "--cpus-per-task=4",
            "--gpus-per-node=1", "--nodes=1", "--job-name=autoscout-trial"} <= flags
