"""The tuner's side of parallel trials: what to run next, and what a finished trial means.

An executor asks `propose()` whenever a slot is free and hands back each outcome to `complete()`. The
search's proposal is conditioned on the trials still running (`SearchStrategy.ask_batch`: fantasy values
for them); every running config is claimed in the store (a lease kept by a heartbeat) so that other
workers and a restarted tuner leave it alone; the budgets count the running trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..profiling import TrialOutcome
from ..store import StoreError
from ..store.lease import Heartbeat
from ..trial import Fidelity
from .base import Proposal
from .jobs import TrialJob

if TYPE_CHECKING:
    from ..space import Config
    from ..tuner import JobFn, Tuner


class TrialDriver:
    """Proposes F2 trials for `tuner` while an executor runs up to `slots` of them at once."""

    def __init__(self, tuner: Tuner, jobs: JobFn, queue: list[Config], *, slots: int) -> None:
        self.tuner, self.jobs, self.queue, self.slots = tuner, jobs, queue, slots
        self.running: list[Proposal] = []
        self.retries: list[Config] = []
        """Configs whose trial failed as `transient` (a port in use): offered once more."""
        self.best = tuner._best_value()
        self.since_best = 0

    # ------------------------------------------------------------ proposing
    def stop_reason(self) -> str | None:
        tuner, opts = self.tuner, self.tuner.options
        tuner._sync()
        if opts.max_trials is not None and len(tuner._f2_trials()) + len(self.running) >= opts.max_trials:
            return f"trial budget of {opts.max_trials} reached"
        budget_s = opts.seconds_budget(tuner._best_value(), tuner.look.main_samples(remaining=False))
        if tuner._spent_s() >= budget_s:
            return f"time budget of {budget_s:.0f} s reached"
        if opts.patience is not None and self.since_best >= opts.patience:
            return f"no improvement in {opts.patience} trials"
        return None

    def propose(self) -> Proposal | str:
        reason = self.stop_reason()
        if reason is not None:
            return reason
        tuner = self.tuner
        assert tuner.store is not None
        if self.retries:
            config = self.retries.pop(0)
            claim = tuner.store.claim(tuner.study_id, config, worker=tuner.worker, lease_s=tuner.options.lease_s)
            retry = True
        else:
            picked = tuner._next(self.queue, pending=[p.config for p in self.running])
            if isinstance(picked, str):
                return picked
            (config, claim), retry = picked, False
        proposal = Proposal(config=config, claim=claim, retry=retry, predicted=tuner.search.predict(config))
        made = self.jobs(dict(config), Fidelity.F2)
        if isinstance(made, TrialJob):
            proposal.job = made
        elif isinstance(made, TrialOutcome):
            proposal.outcome = made
        else:
            proposal.outcome = TrialOutcome(status="error", error=f"the job builder returned {type(made).__name__},"
                                            " expected a TrialJob or a TrialOutcome")
        proposal.heartbeat = Heartbeat(tuner.store, claim).__enter__()
        self.running.append(proposal)
        return proposal

    # ------------------------------------------------------------ completing
    def complete(self, proposal: Proposal, outcome: TrialOutcome) -> None:
        tuner = self.tuner
        assert tuner.store is not None
        self._stop_beating(proposal)
        outcome = outcome.checked()
        trial = tuner._trial(proposal.config, outcome, Fidelity.F2, proposal.predicted, proposal.started)
        if proposal.retry and trial.failure == "transient":
            trial.failure = "crash"
            trial.error = f"transient failure repeated on retry: {trial.error or ''}"[:300]
        tuner.store.add_trial(tuner.study_id, trial, claim=proposal.claim)
        tuner.trials.append(trial)
        if tuner.on_trial is not None:
            tuner.on_trial(trial, tuner)
        opts = tuner.options
        budget_left = opts.max_trials is None or len(tuner._f2_trials()) + len(self.running) < opts.max_trials
        if trial.failure == "transient" and not proposal.retry and budget_left:
            self.retries.append(proposal.config)
            return
        tuner._tell(trial)
        threshold = None if self.best is None else self.best * (1 + opts.min_improvement)
        if trial.ok and trial.value is not None and (threshold is None or trial.value > threshold):
            self.best, self.since_best = trial.value, 0
        elif self.best is not None:
            self.since_best += 1

    def abandon(self, proposals: Sequence[Proposal]) -> None:
        """Stopped unfinished: free their configs at once for other workers."""
        assert self.tuner.store is not None
        for proposal in proposals:
            self._stop_beating(proposal)
            if proposal.claim is not None:
                try:
                    self.tuner.store.release(proposal.claim)
                except StoreError:
                    pass  # its lease runs out instead

    def _stop_beating(self, proposal: Proposal) -> None:
        if proposal in self.running:
            self.running.remove(proposal)
        if proposal.heartbeat is not None:
            proposal.heartbeat.__exit__(None, None, None)
            proposal.heartbeat = None


__all__ = ["TrialDriver"]
