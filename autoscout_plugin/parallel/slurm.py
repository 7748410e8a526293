"""`slurm[:OPTIONS]`: each trial a Slurm job through submitit (a job array for the trials started
together, capped at the executor's slots); `cluster=local` runs the same jobs with submitit's local
executor (no Slurm needed: tests, a workstation).

OPTIONS are `key=value` pairs, comma-separated: `folder=PATH` (submitit's job folder: logs, pickled jobs
and results; on a filesystem every node sees), `cluster=slurm|local`, and any `sbatch` option submitit
knows, by its Python name (`partition`, `account`, `qos`, `constraint`, `time` in minutes, `mem`,
`gpus_per_node`, `cpus_per_task`, `exclude`, ...). Each trial asks for the resources its config needs:
`cpus_per_task` = its processes x threads, `gpus_per_node` = its GPUs, `nodes`, and a `time` of its
timeout plus a minute, unless the options fix them.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..profiling import TrialOutcome
from .base import PoolExecutor
from .jobs import TrialJob, run_trial_job

OWN_KEYS = ("folder", "cluster")
CLUSTERS = ("slurm", "local")


def sbatch_options() -> set[str]:
    """The `sbatch` options submitit's Slurm executor takes (without its `slurm_` prefix)."""
    from submitit.slurm.slurm import SlurmExecutor

    return set(SlurmExecutor._valid_parameters())


def parse_options(text: str) -> dict[str, str]:
    """`partition=gpu,time=30` -> {"partition": "gpu", "time": "30"}; a malformed pair raises ValueError."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise ValueError(f"slurm option {part!r} is not key=value; write e.g. slurm:partition=gpu,time=30")
        if key in out:
            raise ValueError(f"slurm option {key!r} is given twice; give it once")
        out[key] = value.strip()
    return out


def check_options(options: Mapping[str, str]) -> None:
    """Refuse an option submitit does not know, before any job is submitted."""
    cluster = options.get("cluster", "slurm")
    if cluster not in CLUSTERS:
        raise ValueError(f"slurm option cluster={cluster!r}: choose one of {', '.join(CLUSTERS)}")
    known = sbatch_options()
    for key in options:
        if key not in OWN_KEYS and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise ValueError(f"unknown slurm option {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                             + "; use submitit's names of sbatch options, such as partition, time, gpus_per_node")


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _run(job: dict[str, Any]) -> TrialOutcome:
    """The job's function on its node: the trial, named by its Slurm job (or the local job's host)."""
    where = os.environ.get("SLURM_JOB_ID")
    outcome = run_trial_job(job)
    if where:
        outcome.where = f"{outcome.where} (slurm job {where})"
    return outcome


class SlurmExecutor(PoolExecutor):
    """Trials as Slurm jobs (submitit), at most `slots` at once."""

    name = "slurm"
    poll_s = 1.0

    def __init__(self, slots: int, options: Mapping[str, str] | None = None) -> None:
        super().__init__(slots)
        import submitit

        self.options = dict(options or {})
        check_options(self.options)
        self.cluster = self.options.get("cluster", "slurm")
        self.folder = Path(self.options.get("folder", "autoscout-slurm")) / "%j"
        self.name = "slurm" if self.cluster == "slurm" else "slurm (submitit local)"
        self._executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        self._fixed = {k: _value(v) for k, v in self.options.items() if k not in OWN_KEYS}

    def _parameters(self, jobs: Sequence[TrialJob]) -> dict[str, Any]:
        cpus = max(j.cpus for j in jobs)
        gpus = max(j.gpus for j in jobs)
        nodes = max(j.nodes for j in jobs)
        minutes = math.ceil(max(j.timeout_s for j in jobs) / 60) + 1
        params: dict[str, Any] = {"timeout_min": minutes, "cpus_per_task": cpus, "nodes": nodes, "tasks_per_node": 1,
                                  "name": "autoscout-trial", "slurm_array_parallelism": self.slots}
        if gpus:
            params["gpus_per_node"] = gpus
        for key, value in self._fixed.items():  # the user's options win
            params[f"slurm_{key}"] = value
            params.pop({"time": "timeout_min", "cpus_per_task": "cpus_per_task", "nodes": "nodes",
                        "gpus_per_node": "gpus_per_node"}.get(key, ""), None)
        return params

    def submit(self, job: TrialJob) -> Any:
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Sequence[TrialJob]) -> list[Any]:
        self._executor.update_parameters(**self._parameters(jobs))
        if len(jobs) == 1:
            return [self._executor.submit(_run, jobs[0].to_json())]
        with self._executor.batch():  # one job array
            handles = [self._executor.submit(_run, job.to_json()) for job in jobs]
        return handles

    def finished(self, handle: Any) -> TrialOutcome | None:
        if not handle.done():
            return None
        try:
            outcome = handle.result()
        except Exception as exc:  # noqa: BLE001 - the job died (node failure, preemption, scancel)
            text = str(exc).strip().splitlines()
            why = text[-1] if text else type(exc).__name__
            return TrialOutcome(status="error", failure="crash", where=f"slurm job {handle.job_id}",
                                error=f"the Slurm job {handle.job_id} failed: {why}"[:300])
        if not isinstance(outcome, TrialOutcome):
            what = type(outcome).__name__
            return TrialOutcome(status="error", error=f"the Slurm job {handle.job_id} returned {what}")
        return outcome

    def cancel(self, handle: Any) -> None:
        handle.cancel(check=False)


__all__ = ["SlurmExecutor", "check_options", "parse_options"]
