"""The one small interface every executor keeps, and the loop the pool-like ones share."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..profiling import TrialOutcome
from ..space import Config
from .jobs import TrialJob

if TYPE_CHECKING:
    from ..store import Claim
    from ..store.lease import Heartbeat


@dataclass(eq=False)
class Proposal:
    """A config the tuner wants measured: run `job` somewhere, or take `outcome` as is (settled without
    running: a batch split that does not divide, trial 0's measurement reused)."""

    config: Config
    job: TrialJob | None = None
    outcome: TrialOutcome | None = None
    claim: Claim | None = None
    retry: bool = False
    predicted: float | None = None
    started: float = field(default_factory=time.perf_counter)
    heartbeat: Heartbeat | None = None


class Driver(Protocol):
    """What an executor asks of the tuner (`autoscout_plugin.parallel.driver.TrialDriver`)."""

    slots: int

    def propose(self) -> Proposal | str:
        """The next trial to run, or why there is none (the search stops: finish what runs)."""

    def complete(self, proposal: Proposal, outcome: TrialOutcome) -> None:
        """Record a trial's outcome (the search is told; a transient failure is offered once more)."""

    def abandon(self, proposals: Sequence[Proposal]) -> None:
        """Trials stopped unfinished (the tuner was interrupted): their claims are released."""


class Executor(ABC):
    """Runs a tuner's trials, at most `slots` at once, on an engine (`local`, `ray`, `slurm`).

    `drive(driver)` runs until the driver has nothing more to propose and every started trial is
    complete; it returns the driver's reason for stopping."""

    name: str = "executor"

    def __init__(self, slots: int) -> None:
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"an executor needs slots >= 1 (trials at once, an integer), got {slots!r}")
        self.slots = slots
        self.peak_running = 0
        """The most trials that ran at once (for tests and the report)."""

    @abstractmethod
    def drive(self, driver: Driver) -> str: ...

    def describe(self) -> str:
        return f"{self.name} x{self.slots}"


Handle = Any


class PoolExecutor(Executor):
    """An executor that starts jobs and waits for any to finish (`local`, `slurm`); the refill is
    asynchronous: each freed slot gets one new proposal, conditioned on the trials still running."""

    poll_s: float = 0.2

    @abstractmethod
    def submit(self, job: TrialJob) -> Handle: ...

    @abstractmethod
    def finished(self, handle: Handle) -> TrialOutcome | None:
        """The job's outcome once it ended (a failed job is a `crash` outcome), else None."""

    @abstractmethod
    def cancel(self, handle: Handle) -> None: ...

    def submit_many(self, jobs: Sequence[TrialJob]) -> list[Handle]:
        """Start several jobs at once (Slurm: one job array)."""
        return [self.submit(job) for job in jobs]

    def drive(self, driver: Driver) -> str:
        running: dict[int, tuple[Handle, Proposal]] = {}
        stop: str | None = None
        try:
            while True:
                fresh: list[Proposal] = []
                while stop is None and len(running) + len(fresh) < self.slots:
                    proposal = driver.propose()
                    if isinstance(proposal, str):
                        stop = proposal
                    elif proposal.outcome is not None:
                        driver.complete(proposal, proposal.outcome)
                    else:
                        assert proposal.job is not None
                        fresh.append(proposal)
                if fresh:
                    for handle, proposal in zip(self.submit_many([p.job for p in fresh if p.job]), fresh):
                        running[id(proposal)] = (handle, proposal)
                    self.peak_running = max(self.peak_running, len(running))
                if not running:
                    return stop or "nothing left to run"
                done = self._wait(running)
                for key, outcome in done:
                    _, proposal = running.pop(key)
                    driver.complete(proposal, outcome)
        except BaseException:
            for handle, _ in running.values():
                try:
                    self.cancel(handle)
                except Exception:  # noqa: BLE001 - stopping: the rest are still cancelled
                    pass
            driver.abandon([p for _, p in running.values()])
            raise

    def _wait(self, running: dict[int, tuple[Handle, Proposal]]) -> list[tuple[int, TrialOutcome]]:
        while True:
            done = []
            for key, (handle, _) in running.items():
                outcome = self.finished(handle)
                if outcome is not None:
                    done.append((key, outcome))
            if done:
                return done
            time.sleep(self.poll_s)


__all__ = ["Driver", "Executor", "PoolExecutor", "Proposal"]
