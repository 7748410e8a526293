"""`ray[:ADDRESS]`: AutoScout's search as a Ray Tune `Searcher`; each trial a Ray Tune trial that asks for
the resources its config needs and runs the job on the node Ray places it on.

The concurrency cap is always set (`TuneConfig(max_concurrent_trials=K)`: without it Ray Tune asks a
searcher for as many trials as the cluster fits, which turns any model-based search into a random one). A
trial whose node dies is restarted once by Ray (`FailureConfig(max_failures=1)`); if that fails too, it is
recorded as a `crash`, and its claim in the store lets a restarted tuner know it was never measured.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from ray.tune.search import Searcher

from ..profiling import TrialOutcome
from .base import Driver, Executor, Proposal
from .jobs import run_trial_job
from .worker import outcome_from_json

_DRIVERS: dict[int, Driver] = {}
"""Searcher -> the tuner's driver, outside the searcher so that Ray can pickle it."""

MAX_FAILURES = 1
"""Ray restarts a trial whose worker or node died this many times before it counts as failed."""


def _trainable(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Tune trial: the job, on the node Ray placed it on."""
    import dataclasses

    import ray

    node = ray.get_runtime_context().get_node_id()
    outcome = run_trial_job(config["job"], where=f"ray node {node[:12]}")
    return {"samples_per_s": outcome.value or 0.0, "autoscout": json.dumps(dataclasses.asdict(outcome)),
            "node_id": node}


def _resources(config: dict[str, Any]) -> dict[str, float]:
    job = config["job"]
    return {"cpu": float(job.get("cpus", 1)), "gpu": float(job.get("gpus", 0))}


class AutoScoutSearcher(Searcher):
    """Ray Tune asks it for each trial; it asks the AutoScout tuner (`TrialDriver`). Defined at module level
    and holding no reference to the tuner (`_DRIVERS` does), so that Ray pickles it by reference."""

    def __init__(self, driver: Driver, max_cpus: float | None = None, max_gpus: float | None = None) -> None:
        super().__init__(metric="samples_per_s", mode="max")
        self.max_cpus, self.max_gpus = max_cpus, max_gpus
        """The largest node's resources: a trial never asks for more (Ray would keep it pending forever)."""
        self.proposals: dict[str, Proposal] = {}
        self.stop: str | None = None
        _DRIVERS[id(self)] = driver

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its search algorithm with the experiment's state; the tuner (its store, its
        # locks) stays in this process: a restarted tuner resumes from the store, not from Ray's state.
        return {k: v for k, v in self.__dict__.items() if k != "proposals"}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        driver = _DRIVERS[id(self)]
        while self.stop is None:
            proposal = driver.propose()
            if isinstance(proposal, str):
                self.stop = proposal
                break
            if proposal.outcome is not None:  # settled without running
                driver.complete(proposal, proposal.outcome)
                continue
            assert proposal.job is not None
            self.proposals[trial_id] = proposal
            job = proposal.job.to_json()
            if self.max_cpus:
                job["cpus"] = max(1, min(job["cpus"], int(self.max_cpus)))
            if self.max_gpus is not None:
                job["gpus"] = min(job["gpus"], int(self.max_gpus))
            return {"job": job, "config": proposal.config}
        return Searcher.FINISHED  # type: ignore[return-value]  # Ray's documented end marker

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        proposal = self.proposals.pop(trial_id, None)
        if proposal is None:
            return
        try:
            data = json.loads((result or {}).get("autoscout") or "null")
        except ValueError:
            data = None
        if error or not isinstance(data, dict):
            outcome = TrialOutcome(status="error", failure="crash", error=(
                f"the Ray trial failed {MAX_FAILURES + 1} times (a worker or node died, or the trial raised);"
                " see Ray's trial error file"))
        else:
            outcome = outcome_from_json(data)
        _DRIVERS[id(self)].complete(proposal, outcome)


class RayExecutor(Executor):
    """Runs the trials on a Ray cluster (`address`: `auto`, `HOST:PORT`, `ray://...`; None starts or joins
    the local one) through Ray Tune, at most `slots` at once."""

    name = "ray"

    def __init__(self, slots: int, address: str | None = None) -> None:
        super().__init__(slots)
        self.address = address

    def drive(self, driver: Driver) -> str:
        import ray
        from ray import tune

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        searcher = AutoScoutSearcher(driver, max_cpus=max((r.get("CPU", 0) for r in alive), default=None),
                                     max_gpus=max((r.get("GPU", 0) for r in alive), default=None))
        try:
            with tempfile.TemporaryDirectory(prefix="autoscout-ray-") as storage:
                tuner = tune.Tuner(
                    tune.with_resources(_trainable, _resources),  # type: ignore[arg-type]
                    tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
                                                max_concurrent_trials=self.slots),
                    run_config=tune.RunConfig(storage_path=storage, name="autoscout", verbose=0,
                                              failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))
                tuner.fit()
        except BaseException:
            driver.abandon(list(searcher.proposals.values()))
            raise
        finally:
            _DRIVERS.pop(id(searcher), None)
            if started:
                ray.shutdown()
        return searcher.stop or "nothing left to run"


__all__ = ["RayExecutor"]
