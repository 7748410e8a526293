"""The tuning loop: ask -> profile -> tell, under a budget, with early stopping, a final paired
confirmation of the best few against the user's config, and a trial store for resume, zero-trial
reuse and warm starts (winners, and settings that failed as unsupported)."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from . import validate
from .costmodel import CostModel, Efficiency, Hardware, Workload
from .failures import Exclusion, exclusions_from
from .lookahead import LookAhead
from .profiling import ProfileFn, TrialOutcome, classify_exception, describe_exception
from .redact import redact
from .report.result import PairedComparison, TuneResult
from .search import SearchExhausted, SearchStrategy, make_strategy, strategy_names
from .space import Config, Space, SpaceError
from .store import Claim, InMemoryStore, StoreError, TrialStore, fingerprint, open_store
from .store.lease import Heartbeat, process_exists
from .trial import STATUSES, Fidelity, Trial

if TYPE_CHECKING:
    from .parallel import Executor, TrialJob


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneOptions(validate.KeywordOptions):
    """How much to spend and how to search. Validated on construction.

    Example:
        >>> TuneOptions(max_trials=0)
        Traceback (most recent call last):
        ...
        ValueError: max_trials must be >= 1 (an integer), got 0: give a positive number of trials or None for no limit
    """

    EXAMPLE: ClassVar[str] = "max_trials=12"

    max_trials: int | None = 12
    """Profiling runs at F2, the baseline included; None for no limit (another budget must be set)."""
    max_seconds: float | None = None
    """Profiling seconds (sum of trial costs); no trial starts once this is spent."""
    max_fraction: float | None = None
    """Tuning may take at most this fraction of `planned_run_s`."""
    planned_run_s: float | None = None
    """Expected duration of the main run, for `max_fraction`."""
    planned_samples: float | None = None
    """Samples the main run will process: with `max_fraction` and no `planned_run_s`, the planned run's
    duration is taken from the best speed measured so far (the baseline first)."""
    planned_steps: int | None = None
    """Optimizer steps of the main run, where its samples are not known: the samples of one step are then
    measured on the user's config (its speed x its seconds per step), for the net-gain rule."""
    patience: int | None = 6
    """Stop after this many F2 trials without an improvement of at least `min_improvement`;
    None never stops early."""
    min_improvement: float = 0.02
    confirm_top: int = 2
    """Re-measure this many of the best configs at F3 before choosing (0 disables), each paired with the
    user's config (`baseline`) in the same window."""
    confirm_rounds: int = 2
    """Rounds of the paired confirmation: the baseline and the contenders run interleaved, in reversed
    order every other round (A B C, C B A, ...), so a load burst or a drift cannot favour either side;
    the decision is on the per-round ratios to the baseline."""
    search: str = "autoscout"
    seed: int = 0
    store: str | None = None
    """The trial history: an SQLite file path, or a `postgresql://` URL shared by many workers and machines;
    None keeps it in memory."""
    worker: str | None = None
    """This worker's name in a shared study (default `host:pid`)."""
    lease_s: float = 30.0
    """A config this worker runs is held for it (`TrialStore.claim`) while its heartbeats come, every
    `lease_s / 3`; `lease_s` after the last one, another worker may run it (once)."""
    reuse: bool = True
    """Return a stored winner for the same workload, machine and space with zero trials."""
    warm_start: bool = True
    """Try the winners of similar past studies first."""
    memory_limit_mb: float | None = None
    net_gain: bool = False
    """Stop when the next trial is not expected to win back its cost in the main run (`netgain`), and skip a
    confirmation that would cost more than its win saves; needs `planned_samples` or `planned_run_s`."""

    def __post_init__(self) -> None:
        validate.integer("max_trials", self.max_trials, low=1, optional=True, requirement=">= 1 (an integer)",
                         hint="give a positive number of trials or None for no limit")
        validate.integer("patience", self.patience, low=1, optional=True, requirement=">= 1 (an integer)",
                         hint="give a positive number of trials without improvement or None to never stop early")
        validate.positive_number("max_seconds", self.max_seconds, unit="seconds", optional=True,
                                 hint="a profiling budget in seconds, or None")
        validate.fraction("max_fraction", self.max_fraction, optional=True,
                          hint="the share of the planned main run tuning may take, e.g. 0.05 (or None)")
        validate.positive_number("planned_run_s", self.planned_run_s, unit="seconds", optional=True,
                                 hint="how long the main run is expected to take, or None")
        validate.positive_number("planned_samples", self.planned_samples, optional=True,
                                 hint="samples the main run will process, or None")
        validate.integer("planned_steps", self.planned_steps, low=1, optional=True,
                         hint="optimizer steps of the main run, or None")
        if self.max_fraction is not None and self.planned_run_s is None and self.planned_samples is None \
                and self.planned_steps is None:
            raise ValueError(f"max_fraction={self.max_fraction!r} needs planned_run_s (how long the main run"
                             " is expected to take, in seconds), planned_samples or planned_steps")
        if self.max_trials is None and self.max_seconds is None and self.max_fraction is None:
            raise ValueError("no budget: max_trials, max_seconds and max_fraction are all None;"
                             " set at least one")
        validate.integer("confirm_top", self.confirm_top, low=0, requirement="an integer >= 0",
                         hint="0 disables confirmation")
        validate.integer("confirm_rounds", self.confirm_rounds, low=1, requirement="an integer >= 1",
                         hint="use confirm_top=0 to skip the confirmation")
        validate.finite_number("min_improvement", self.min_improvement, low=0, requirement="a number >= 0",
                               hint="the relative gain that counts as an improvement, e.g. 0.02")
        validate.seed("seed", self.seed)
        names = strategy_names()
        if not isinstance(self.search, str) or self.search not in names:
            raise ValueError(f"unknown search strategy {self.search!r}; choose from {names}")
        validate.store("store", self.store, optional=True, file=True, hint="an SQLite file, a postgresql:// URL,"
                       " or None to keep the history in memory")
        validate.non_empty_str("worker", self.worker, optional=True, hint="a name for this worker, or None")
        validate.positive_number("lease_s", self.lease_s, unit="seconds", high=86_400,
                                 hint="how long a silent worker keeps its config, e.g. 30")
        validate.boolean("reuse", self.reuse)
        validate.boolean("warm_start", self.warm_start)
        validate.boolean("net_gain", self.net_gain)
        validate.positive_number("memory_limit_mb", self.memory_limit_mb, unit="MB", optional=True,
                                 hint="a memory cap in megabytes, or None")

    def seconds_budget(self, samples_per_s: float | None = None, samples: float | None = None) -> float:
        """Profiling seconds allowed; `samples_per_s` (the best speed so far) sizes a run given in samples
        (`planned_samples`, else `samples`: the tuner's measure of a run given in steps)."""
        limits = [self.max_seconds or math.inf]
        planned = self.planned_run_s
        samples = self.planned_samples or samples
        if planned is None and samples and samples_per_s:
            planned = samples / samples_per_s
        if self.max_fraction is not None and planned is not None:
            limits.append(self.max_fraction * planned)
        return min(limits)


TrialCallback = Callable[[Trial, "Tuner"], None]
JobFn = Callable[[Config, Fidelity], "TrialJob | TrialOutcome"]


MAX_HELD_IN_A_ROW = 50
"""A worker whose search proposes this many configs in a row that other workers run now stops exploring."""

SAME_MODEL_SIMILARITY = 0.9
"""A past study this alike (`store.fingerprint.similarity`: same family and architecture, sizes within a
few percent) is the same model: its `unsupported` settings are excluded here too."""


@dataclass
class Tuner:
    """Runs a study: the caller supplies the space and a profiler that measures one config.

    Example:
        >>> from autoscout_plugin.space import Int, Space
        >>> from autoscout_plugin.profiling import TrialOutcome
        >>> space = Space([Int(name="num_threads", choices=(1, 2, 4))])
        >>> tuner = Tuner(space, lambda c, f: TrialOutcome(value=10.0 * c["num_threads"], cost_s=1.0),
        ...               TuneOptions(max_trials=3, confirm_top=0))
        >>> tuner.run().best_config
        {'num_threads': 4}
    """

    space: Space
    profile: ProfileFn
    options: TuneOptions = field(default_factory=TuneOptions)
    workload: Workload | None = None
    hardware: Hardware | None = None
    baseline: Config | None = None
    """The user's own config: measured first, the reference for the speed-up."""
    on_trial: TrialCallback | None = None
    store: TrialStore | None = None
    efficiency: Efficiency | None = None
    """The cost model's machine factors when measured (`costmodel.efficiency_from_speeds`); else priors."""
    executor: Executor | None = None
    """Runs the search's trials several at once on an engine (`autoscout_plugin.parallel`); None: one at a
    time, in this process, with `profile`. The confirmation (F3) always runs here, with `profile`."""
    jobs: JobFn | None = None
    """With an executor: a config's trial as a job for another process or node (`TrialJob`), or its
    outcome when it needs no run (a batch split that does not divide)."""
    kept_steps: Callable[[Config], int] | None = None
    """The least steps a trial of a config adds to the main run's progress (`TrialRequest.keep`: 0 where it is
    rolled back); None: no trial counts as training."""

    def __post_init__(self) -> None:
        if self.executor is not None and self.jobs is None:
            raise ValueError("an executor runs trials as jobs: give Tuner(jobs=...) too (a config -> TrialJob)")
        self.space.check_satisfiable()
        if self.baseline is not None:
            self.baseline = self.space.canonical(self.baseline)
            problems = self.space.violations(self.baseline)
            if problems:
                raise SpaceError(f"the baseline config {self.baseline} breaks a constraint: {problems[0]}")
        self.trials: list[Trial] = []
        """The study's trials: earlier ones (a resumed study), this run's, and those other workers add while
        it runs (a shared store). The budget is the study's: every worker counts them all."""
        self.worker = self.options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self.net: dict[str, Any] = {}
        """What the net-gain rule saw (`TuneOptions.net_gain`): the main run's samples, the last look-ahead,
        a confirmation it skipped."""
        self.kept = 0
        """Optimizer steps this run's kept trials trained (`TrialOutcome.metrics["kept_steps"]`): the main run
        has that many fewer to run."""
        self.look = LookAhead(self)
        """The net-gain rule (`lookahead.LookAhead`)."""
        self._last_number = -1
        self._first_number = -1
        """Trials numbered above this belong to this tuning run (all of them, unless it re-tunes a solved study)."""
        self.search: SearchStrategy = self._make_search()
        self._owns_store = self.store is None
        if self.store is None:
            self.store = open_store(self.options.store) if self.options.store else InMemoryStore()
        workload = self.workload.to_json() if self.workload else {}
        hardware = self.hardware.to_json() if self.hardware else {}
        self.fingerprint = fingerprint(workload, hardware, self.space.to_json())
        self.study_id = self.store.open_study(self.fingerprint, workload=workload, hardware=hardware,
                                              space=self.space.to_json())

    def _make_search(self) -> SearchStrategy:
        options: dict[str, Any] = {}
        if self.options.search == "autoscout":
            if self.workload is not None and self.hardware is not None:
                options["cost_model"] = CostModel(self.workload, self.hardware, self.efficiency)
            options["memory_limit_mb"] = self.options.memory_limit_mb
        return make_strategy(self.options.search, self.space, seed=self.options.seed, **options)

    # ------------------------------------------------------------------ run
    def run(self) -> TuneResult:
        start = time.perf_counter()
        try:
            reused = self._reuse()
            if reused is not None:
                return reused
            assert self.store is not None
            # A study with a winner is finished: resuming it would only replay it. With reuse off the
            # caller asked for a new tuning run (appended to the same study); without a winner the
            # study was interrupted and continues where it stopped.
            if self.options.reuse or self.store.winner(self.fingerprint) is None:
                self._resume()
            else:  # a new tuning run appended to the study: its earlier trials are not this run's
                self._first_number = self._last_number = max((t.number or 0 for t in self.store.trials(self.study_id)),
                                                             default=-1)
            reason = self._explore()
            self._confirm()
            result = self._result(reason)
            if result.best_config is not None and result.best_value is not None:
                assert self.store is not None
                self.store.set_winner(self.study_id, result.best_config, result.best_value)
            result.wall_s = time.perf_counter() - start
            return result
        finally:
            if self._owns_store and self.store is not None:
                self.store.close()

    def _reuse(self) -> TuneResult | None:
        assert self.store is not None
        if not self.options.reuse:
            return None
        stored = self.store.winner(self.fingerprint)
        if stored is None:
            return None
        config, value = stored
        try:
            config = self.space.canonical(config)
        except SpaceError:
            return None
        return TuneResult(best_config=config, best_value=value, reused=True, fingerprint=self.fingerprint,
                          stop_reason="reused the stored winner", derived=self.space.derived(config))

    def _resume(self) -> None:
        """Tell the search every trial this study already ran (an interrupted run continues)."""
        self._take_in(-1, mine=set())

    def _sync(self) -> None:
        """Tell the search what other workers measured in this study since the last look (a shared store)."""
        self._take_in(self._last_number, mine={t.number for t in self.trials})

    def _take_in(self, after: int, mine: set[int | None]) -> None:
        """The study's trials numbered above `after`, but `mine`, join `self.trials`; F2 ones are told."""
        assert self.store is not None
        for trial in self.store.trials(self.study_id, after=after):
            self._last_number = max(self._last_number, trial.number or 0)
            if trial.number in mine:
                continue
            try:
                trial.config = self.space.canonical(trial.config)
            except SpaceError:
                continue
            self.trials.append(trial)
            if trial.fidelity != Fidelity.F3:
                self._tell(trial)

    def _tell(self, trial: Trial) -> None:
        # A transient failure (a port in use) says nothing about the config: its retry is what counts.
        if trial.failure != "transient" and not self.search.told(trial.config):
            self.search.tell(trial)

    def _warm_configs(self) -> list[Config]:
        """Winners of similar past studies, to try first; settings that failed as `unsupported` in a
        past study of the same model on this machine are handed to the search as exclusions."""
        assert self.store is not None
        if not self.options.warm_start or self.workload is None or self.hardware is None:
            return []
        out = []
        similar = self.store.similar(self.workload.to_json(), self.hardware.to_json(), exclude=self.study_id)
        choices = self.space.choices
        # This study's own earlier runs first (a re-tune with reuse=False is not resumed), then alike ones.
        sources = [(self.study_id, 1.0)] + list(similar)
        inherited: list[Exclusion] = []
        for study_id, score in sources:
            trials = self.store.trials(study_id)
            if score >= SAME_MODEL_SIMILARITY:
                known = {(ex.knob, ex.when) for ex in inherited}
                where = "an earlier run of this study" if study_id == self.study_id else f"{study_id} on this machine"
                inherited += [Exclusion(ex.knob, ex.values, f"{where}, {ex.reason}", ex.when)
                              for ex in exclusions_from(trials, choices) if (ex.knob, ex.when) not in known]
            if study_id == self.study_id:
                continue
            ok = [t for t in trials if t.ok]
            if not ok:
                continue
            best = max(ok, key=lambda t: t.value or 0.0)
            try:
                config = self.space.canonical(best.config)
            except SpaceError:
                continue
            if self.space.is_feasible(config) and config not in out:
                out.append(config)
        if inherited:
            self.search.exclude(inherited)
        return [c for c in out if not any(ex.matches(c) for ex in self.search.exclusions)]

    def _spent_s(self) -> float:
        return sum(t.cost_s for t in self.trials)

    def _f2_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.fidelity == Fidelity.F2]

    def _explore(self) -> str:
        queue: list[Config] = []
        if self.baseline is not None:
            queue.append(self.baseline)
        queue += self._warm_configs()
        if self.executor is not None:  # several trials at once, on an engine
            from .parallel.driver import TrialDriver

            assert self.jobs is not None
            return self.executor.drive(TrialDriver(self, self.jobs, queue, slots=self.executor.slots))
        best, since_best = self._best_value(), 0
        while True:
            self._sync()
            if self.options.max_trials is not None and len(self._f2_trials()) >= self.options.max_trials:
                return f"trial budget of {self.options.max_trials} reached"
            budget_s = self.options.seconds_budget(self._best_value(), self.look.main_samples(remaining=False))
            if self._spent_s() >= budget_s:
                return f"time budget of {budget_s:.0f} s reached"
            if self.options.patience is not None and since_best >= self.options.patience:
                return f"no improvement in {self.options.patience} trials"
            if self.kept and self.look.main_samples() == 0.0:
                return f"the trials trained every step of the main run ({self.kept} kept)"
            picked = self._next(queue)
            if isinstance(picked, str):
                return picked
            config, claim = picked
            estimate = self.look.next_trial(config)
            if estimate is not None and not estimate.worth:
                if claim is not None:
                    self.store.release(claim)
                instead = self._claim_instead(config)
                if instead is None:
                    return f"the next trial would not pay for itself ({estimate.describe()})"
                config, claim = instead
            trial = self._measure(config, Fidelity.F2, claim=claim)
            budget_left = self.options.max_trials is None or len(self._f2_trials()) < self.options.max_trials
            if trial.failure == "transient" and budget_left:  # a port in use, a rendezvous timeout: once more
                assert self.store is not None
                again = self.store.claim(self.study_id, config, worker=self.worker, lease_s=self.options.lease_s)
                trial = self._measure(config, Fidelity.F2, retry=True, claim=again)
            self._tell(trial)
            threshold = None if best is None else best * (1 + self.options.min_improvement)
            if trial.ok and trial.value is not None and (threshold is None or trial.value > threshold):
                best, since_best = trial.value, 0
            elif best is not None:
                since_best += 1

    def _next(self, queue: list[Config], pending: list[Config] | None = None) -> tuple[Config, Claim | None] | str:
        """The next config to measure and this worker's claim on it, or why there is none (a shared store).

        A config another worker left (no heartbeat for its lease, or its process on this machine is gone)
        comes first. Configs other workers run now are held back from the search. When the rest of the
        budget is held by other workers, this one waits (at most `lease_s`) for one of them to go stale, so
        that a dead worker's config is still run. `pending`: the configs this worker runs now (parallel
        trials): the search's proposal is conditioned on them (`SearchStrategy.ask_batch`)."""
        assert self.store is not None
        self._look_around()
        reclaimed = self._reclaimed()
        if reclaimed is not None:
            return reclaimed
        for _ in range(MAX_HELD_IN_A_ROW):
            config = None
            while queue and config is None:
                candidate = queue.pop(0)
                config = None if self.search.seen(candidate) else candidate
            if config is None:
                try:
                    config = self.search.ask_batch(1, pending=pending)[0] if pending else self.search.ask()
                except SearchExhausted as exc:
                    return f"search exhausted: {exc}"
            claim = self.store.claim(self.study_id, config, worker=self.worker, lease_s=self.options.lease_s,
                                     limit=self.options.max_trials, after=self._first_number)
            if claim is not None:
                # A config another worker finished since the last look is claimable (a done config may be
                # measured again): look once more, and leave it when its result is in.
                self._sync()
                if not self.search.told(config):
                    return config, claim
                self.store.release(claim)
                continue
            self.search.hold(config)
            if self._budget_held_by_others():
                return self._wait_for_stale() or f"trial budget of {self.options.max_trials} used by this and" \
                                                  " other workers"
        return f"the next {MAX_HELD_IN_A_ROW} configs the search proposed were running on other workers"

    def _look_around(self) -> None:
        """Hold back from the search what other workers run now; claims of processes of this machine that no
        longer exist (a killed earlier run) are made stale at once, so they are offered now, not after
        their lease."""
        assert self.store is not None
        host = socket.gethostname()
        for claim in self.store.running(self.study_id):
            if claim.worker == self.worker:
                continue
            name, _, pid = claim.worker.rpartition(":")
            if name == host and pid.isdigit() and not process_exists(int(pid)):
                self.store.expire(claim)
            else:
                self.search.hold(claim.config)

    def _reclaimed(self) -> tuple[Config, Claim] | None:
        """A config another worker left (no heartbeat for its lease), now claimed by this one."""
        assert self.store is not None
        stale = self.store.reclaim_stale(self.study_id, worker=self.worker, lease_s=self.options.lease_s)
        if stale is None:
            return None
        try:
            return self.space.canonical(stale.config), stale
        except SpaceError:  # not of this space (the study's fingerprint includes it: a damaged record)
            self.store.release(stale)
            return None

    def _others_running(self) -> int:
        assert self.store is not None
        return sum(1 for c in self.store.running(self.study_id, include_stale=True) if c.worker != self.worker)

    def _budget_held_by_others(self) -> bool:
        """Whether the trial budget is used up by the study's trials and the ones other workers run now."""
        if self.options.max_trials is None:
            return False
        self._sync()
        return len(self._f2_trials()) + self._others_running() >= self.options.max_trials

    def _wait_for_stale(self) -> tuple[Config, Claim] | None:
        """Wait, at most `lease_s`, while other workers run the last trials of the budget: a config whose
        worker died is taken over (and returned); None once they are done or the wait is over."""
        assert self.options.max_trials is not None
        deadline = time.monotonic() + self.options.lease_s
        while time.monotonic() < deadline:
            reclaimed = self._reclaimed()
            if reclaimed is not None:
                return reclaimed
            self._sync()
            if len(self._f2_trials()) >= self.options.max_trials or self._others_running() == 0:
                return None
            time.sleep(min(1.0, self.options.lease_s / 6))
        return None

    # ------------------------------------------------------------ net gain
    def _baseline_trials(self) -> list[Trial]:
        """The user's config's successful F2 trials; the first successful trial when it has none."""
        ok = [t for t in self._f2_trials() if t.ok and t.value]
        return [t for t in ok if t.config == self.baseline] or ok[:1]

    def _baseline_speed(self) -> float | None:
        values = [t.value or 0.0 for t in self._baseline_trials()]
        return sum(values) / len(values) if values else None

    def _claim_instead(self, proposed: Config) -> tuple[Config, Claim] | None:
        """The config worth its trial in place of `proposed` (`LookAhead.worth_instead`) and this worker's claim
        on it; None when none is worth it or another worker holds it."""
        instead = self.look.worth_instead(proposed)
        if instead is None:
            return None
        config, estimate = instead
        assert self.store is not None
        claim = self.store.claim(self.study_id, config, worker=self.worker, lease_s=self.options.lease_s,
                                 limit=self.options.max_trials, after=self._first_number)
        if claim is None:
            return None
        self.net.update(instead={"config": config, "of": proposed, "estimate": estimate.describe()},
                        last_look=estimate.describe())
        return config, claim

    def _best_value(self) -> float | None:
        ok = [t.value for t in self._f2_trials() if t.ok and t.value is not None]
        return max(ok) if ok else None

    def _measure(self, config: Config, fidelity: Fidelity, *, retry: bool = False,
                 claim: Claim | None = None) -> Trial:
        assert self.store is not None
        try:
            with Heartbeat(self.store, claim):
                trial = self._profile(config, fidelity, retry=retry)
            self.store.add_trial(self.study_id, trial, claim=claim)
        except BaseException:
            if claim is not None:  # stopped mid-trial: the config is free for another worker at once
                try:
                    self.store.release(claim)
                except StoreError:
                    pass  # its lease runs out instead
            raise
        self.trials.append(trial)
        self.kept += int(trial.metrics.get("kept_steps") or 0)
        if self.on_trial is not None:
            self.on_trial(trial, self)
        return trial

    def _profile(self, config: Config, fidelity: Fidelity, *, retry: bool) -> Trial:
        predicted = self.search.predict(config)
        started = time.perf_counter()
        try:
            outcome = self.profile(dict(config), fidelity)
            if not isinstance(outcome, TrialOutcome):
                raise TypeError(f"the profiler returned {type(outcome).__name__}, expected a TrialOutcome")
            outcome = outcome.checked()
            if outcome.status not in STATUSES:  # classified here: the message would read as a NaN
                outcome = TrialOutcome(status="error", cost_s=outcome.cost_s,
                                       error=f"the profiler reported an unknown status {outcome.status!r}")
            trial = self._trial(config, outcome, fidelity, predicted, started)
        except Exception as exc:  # noqa: BLE001 - any failure of a trial is recorded, never raised
            outcome = TrialOutcome(status=classify_exception(exc), error=describe_exception(exc))
            trial = self._trial(config, outcome, fidelity, predicted, started)
        if retry and trial.failure == "transient":
            trial.failure = "crash"  # twice in a row is no longer chance
            trial.error = f"transient failure repeated on retry: {trial.error or ''}"[:300]
        return trial

    @staticmethod
    def _trial(config: Config, outcome: TrialOutcome, fidelity: Fidelity, predicted: float | None,
               started: float) -> Trial:
        cost = outcome.cost_s
        if not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            cost = time.perf_counter() - started  # a missing or bogus cost would break the time budget
        return Trial(config=config, status=outcome.status,
                     value=outcome.value if outcome.status == "ok" else None, cost_s=float(cost),
                     fidelity=fidelity, predicted=predicted, peak_mem_mb=outcome.peak_mem_mb,
                     error=redact(outcome.error), metrics=dict(outcome.metrics),
                     failure=outcome.failure if outcome.status != "ok" else None, where=outcome.where)

    def _contenders(self) -> list[Config]:
        """The best `confirm_top` distinct configs measured at F2, best first (within 10% of the best: a
        config clearly behind needs no confirmation)."""
        ranked: list[Trial] = []
        for t in sorted((t for t in self._f2_trials() if t.ok), key=lambda t: -(t.value or 0.0)):
            if all(t.config != r.config for r in ranked):
                ranked.append(t)
        top = ranked[: self.options.confirm_top]
        return [t.config for t in top if (t.value or 0.0) >= 0.9 * (top[0].value or 0.0)]

    def _reference(self, contenders: list[Config]) -> Config | None:
        """What the contenders are paired with: the user's config when it ran, else the best contender."""
        if any(t.ok and t.config == self.baseline for t in self._f2_trials()):
            return self.baseline
        return contenders[0] if contenders else None

    def _confirm(self) -> None:
        """F3, paired: the reference (the user's config) and the contenders run interleaved, `confirm_rounds`
        times, in reversed order every other round (A B C, C B A: a linear drift cancels), so every
        contender is compared with the reference measured in the same window. F3 trials already in the
        store (a resumed study) count towards their round."""
        if self.options.confirm_top == 0:
            return
        contenders = self._contenders()
        reference = self._reference(contenders)
        challengers = [c for c in contenders if c != reference]
        if reference is None or not challengers:
            return  # nothing measured better than the reference: there is no claim to confirm
        if not self.look.confirmation_worth(reference, challengers):
            return
        order = [reference] + challengers
        for round_ in range(self.options.confirm_rounds):
            for config in order if round_ % 2 == 0 else order[::-1]:
                done = sum(1 for t in self.trials if t.fidelity == Fidelity.F3 and t.config == config)
                if done <= round_:
                    self._measure(config, Fidelity.F3)

    def _paired(self, reference: Config | None) -> list[PairedComparison]:
        """Each confirmed config's per-round ratios to the reference measured in the same round."""
        if reference is None:
            return []
        f3: dict[str, list[Trial]] = {}
        for t in self.trials:
            if t.fidelity == Fidelity.F3:
                f3.setdefault(json.dumps(t.config, sort_keys=True), []).append(t)
        ref_runs = f3.get(json.dumps(reference, sort_keys=True), [])
        out = []
        for runs in f3.values():
            config = runs[0].config
            if config == reference:
                continue
            ratios = [a.value / b.value for a, b in zip(runs, ref_runs) if a.ok and b.ok and a.value and b.value]
            failed = any(not t.ok for t in runs)
            out.append(PairedComparison(config=config, reference=reference, ratios=ratios, failed=failed))
        return out

    def _scores(self) -> dict[str, tuple[Config, list[float]]]:
        """Each config's measured values at the fidelity it is judged on: its F3 values once confirmed,
        else its F2 values. A config that failed its confirmation has no score: it must not be applied."""
        f2: dict[str, tuple[Config, list[float]]] = {}
        f3: dict[str, tuple[Config, list[float]]] = {}
        failed_f3: set[str] = set()
        for t in self.trials:
            key = json.dumps(t.config, sort_keys=True)
            if t.fidelity == Fidelity.F3 and not t.ok:
                failed_f3.add(key)
            elif t.ok and t.value is not None:
                (f3 if t.fidelity == Fidelity.F3 else f2).setdefault(key, (t.config, []))[1].append(t.value)
        return {**{k: v for k, v in f2.items() if k not in failed_f3},
                **{k: v for k, v in f3.items() if k not in failed_f3}}

    def _result(self, reason: str) -> TuneResult:
        scores = self._scores()
        mean = {key: sum(values) / len(values) for key, (_, values) in scores.items()}
        reference = self._reference(self._contenders()) if self.options.confirm_top else None
        paired = [p for p in self._paired(reference) if not p.failed and p.ratios]
        best_key: str | None
        if paired:
            # The paired ratios decide: the best contender wins if it beat the reference in the same
            # windows (geometric mean of the round ratios above 1), else the reference stays.
            best = max(paired, key=lambda p: p.ratio)
            best_key = json.dumps(best.config if best.ratio > 1.0 else reference, sort_keys=True)
        else:
            confirmed = {json.dumps(t.config, sort_keys=True) for t in self.trials
                         if t.fidelity == Fidelity.F3 and t.ok}
            # F3 exists to overrule noisy F2 numbers: the winner comes from the confirmed configs if any.
            pool = [k for k in mean if k in confirmed] or list(mean)
            best_key = max(pool, key=lambda k: mean[k]) if pool else None
        skipped = self.net.get("unconfirmed")
        if skipped and not paired and self.baseline is not None:
            kept = json.dumps(skipped["config"] if skipped["applied"] else self.baseline, sort_keys=True)
            best_key = kept if kept in scores else best_key
        best_config = scores[best_key][0] if best_key in scores else None
        if best_config is None:
            best_key = None
        baseline_value = None
        if self.baseline is not None:
            baseline_value = mean.get(json.dumps(self.baseline, sort_keys=True))
        versus_baseline = [p for p in paired if p.reference == self.baseline]
        net = {**self.net, "samples": self.look.main_samples()} if self.options.net_gain else {}
        if self.kept:
            net.update(kept_steps=self.kept, step_samples=self.look.step_samples())
        return TuneResult(
            best_config=best_config,
            best_value=mean[best_key] if best_key else None,
            baseline_config=self.baseline, baseline_value=baseline_value, trials=list(self.trials),
            importances=self.search.importances(), tuning_s=self._spent_s(), stop_reason=reason,
            fingerprint=self.fingerprint, derived=self.space.derived(best_config) if best_config else {},
            paired=versus_baseline, exclusions=[ex.to_json() for ex in self.search.exclusions],
            net=net,
        )
