"""A trial as a self-contained job: what an executor sends to a node, and how the node runs it.

A `TrialJob` is plain data (a command line, the environment it adds, a time limit, the resources the
config needs), so that any engine can carry it: a thread here, a Ray Tune trial on another node, a
Slurm job through submitit. `run_trial_job` runs it on the node it landed on, under the trial
supervisor (`profiling.run_subprocess_trial`), and reports where it ran.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..profiling import RESULT_ENV, TrialOutcome, free_port, run_subprocess_trial

PORT = "{autoscout_port}"
"""In a job's command or environment, replaced by a port that is free on the node that runs it (a rendezvous port
chosen on the tuner's machine may be taken on another)."""

DRIVER_ONLY_ENV = ("AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED", RESULT_ENV, "LOCAL_RANK", "RANK", "WORLD_SIZE",
                   "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")
"""Variables of the tuner's own process that never reach a job: the child protocol's, and those of the
tuner's own process group when it runs under DDP (each job sets its own, in `TrialJob.env`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialJob:
    """One trial to run on some node.

    Example:
        >>> job = TrialJob(command=("python", "-c", "pass"), env={"A": "1"}, timeout_s=30, cpus=2)
        >>> TrialJob.from_json(job.to_json()) == job
        True
    """

    command: tuple[str, ...]
    """The trial's command line; `PORT` in it becomes a free port of the node."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to the node's own environment (`AUTOSCOUT_LAUNCH`: the config, the steps)."""
    timeout_s: float
    cpus: int = 1
    """CPU cores the trial occupies (its processes x their threads, at least 1)."""
    gpus: int = 0
    nodes: int = 1
    label: str = ""
    """A short name for logs and engine dashboards (the config)."""

    def __post_init__(self) -> None:
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError(f"a trial job needs a command line of strings, got {self.command!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"a trial job needs timeout_s > 0, got {self.timeout_s!r}")
        for name in ("cpus", "gpus", "nodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "gpus" else 1):
                raise ValueError(f"a trial job's {name} must be an integer >= {0 if name == 'gpus' else 1},"
                                 f" got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {"command": list(self.command), "env": dict(self.env), "timeout_s": self.timeout_s,
                "cpus": self.cpus, "gpus": self.gpus, "nodes": self.nodes, "label": self.label}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialJob:
        return cls(command=tuple(data["command"]), env=dict(data.get("env") or {}), timeout_s=float(data["timeout_s"]),
                   cpus=int(data.get("cpus", 1)), gpus=int(data.get("gpus", 0)), nodes=int(data.get("nodes", 1)),
                   label=str(data.get("label", "")))


def run_trial_job(job: TrialJob | Mapping[str, Any], where: str | None = None) -> TrialOutcome:
    """Run `job` here, on the node it landed on: its outcome, with `where` (default: this host's name).

    Never raises for a failing trial (it is the outcome); only a malformed job raises."""
    if not isinstance(job, TrialJob):
        job = TrialJob.from_json(job)
    port = str(free_port())
    command = [a.replace(PORT, port) for a in job.command]
    env = {k: v for k, v in os.environ.items() if k not in DRIVER_ONLY_ENV}
    env.update({k: v.replace(PORT, port) for k, v in job.env.items()})
    outcome = run_subprocess_trial(command, timeout_s=job.timeout_s, env=env)
    outcome.where = where or socket.gethostname()
    return outcome


__all__ = ["PORT", "TrialJob", "run_trial_job"]
