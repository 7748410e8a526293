"""One tuning flow for every integration (framework-free): options -> plan checks -> space -> store,
progress and tuner -> confirmation -> decision and report, with the one cut-short policy.

An adapter (Lightning, Hugging Face, the launcher) only *describes* the run (`RunDescription`: the
user's config, the knobs it can apply, what is pinned and why, the batch split, the workload and the
machine), *runs one trial* when asked (`TrialRequest` -> `TrialOutcome`) and *applies* the decision.

    tuning = Tuning(options, description)          # every bad option raises here, before any trial
    result = tuning.run(run_one_trial)             # the search, on rank 0
    tuning.conclude(result, applied=result.best_config)   # summary, warning, report files
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from . import netgain
from .batch import BatchSplit, BatchSplitError
from .costmodel import Hardware, Workload, measured_efficiency
from .options import AutoScoutOptions
from .outputs import prepare_outputs
from .parallel import TrialJob, make_executor
from .profiling import TrialOutcome, most_timed_steps
from .progress import keeps_math
from .report.html import write_report
from .report.progress import Progress
from .report.result import TuneResult, format_config
from .report.verdict import STORE_FAILED_PREFIX as STORE_FAILED
from .report.verdict import make_verdict
from .space import Config, Space, SpaceError
from .space.builder import build_space
from .store import StoreError
from .trial import Fidelity, Trial
from .tuner import Tuner

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")
"""The strategies the catalogue names (a framework's other strategies stay outside the space)."""


@dataclass(frozen=True, kw_only=True)
class RunDescription:
    """What an adapter tells the tuning flow about the run it is part of."""

    current: Config
    """The user's own config: every knob the adapter knows the value of."""
    knobs: tuple[str, ...]
    """The knobs this adapter can apply, in catalogue names: what `include=None` tunes."""
    hardware: Hardware
    workload: Workload | None = None
    pinned: Mapping[str, str] = field(default_factory=dict)
    """Knob -> what pins it (the user set it: `Trainer(precision='bf16-mixed')`)."""
    unavailable: Mapping[str, str] = field(default_factory=dict)
    """Knob -> why it cannot be tuned in this run (no GPU, no repeated blocks, ...)."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Knobs held at one value inside the space, so its constraints and the cost model see them."""
    split: BatchSplit | None = None
    """How the user's global batch is split; None when the run has no micro-batch to change."""
    strategies: tuple[str, ...] = ("single",)
    """Strategies the adapter can run when `strategy` is tuned."""
    planned_steps: int | None = None
    """Optimizer steps of the main run (for `max_fraction`); None when unknown."""
    subject: str = "this run"
    """What a stored winner belongs to, in messages: `this script`, `this model`, `this command`."""
    main_run: str = "the main run"
    """What runs with the decision, in messages: `the main fit`, `training`, `the real run`."""
    ignored: Mapping[str, str] = field(default_factory=dict)
    """Names the run declared that are not tuned -> why (shown in the summary)."""
    runs_jobs: bool = False
    """The adapter can run a trial as a job in another process or on another node (`Tuning.run(job=...)`),
    so `parallel` and `executor` apply."""
    progress_unavailable: str | None = "its trials are always rolled back"
    """Why this run cannot count trial steps as training (`AutoScoutOptions.keep_progress`); None where the
    adapter carries a kept trial's steps into the next trial and the main run (`TrialRequest.keep`)."""
    batch_dependent: bool = False
    """The model's math depends on the micro-batch (batch normalisation): a micro-batch change is not neutral."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRequest:
    """One trial, as an adapter runs it: `config` for `warmup` optimizer steps and then at least `measure`
    timed ones (with a `precision`, up to `max_measure`, until its speed is known well enough against
    `best`, the best speed so far: `StepProbe`), cut short under `cut_off` samples/s, stopped after
    `timeout_s`, with the batch split that keeps the global batch."""

    config: Config
    fidelity: Fidelity
    warmup: int
    measure: int
    cut_off: float | None
    timeout_s: float
    split: BatchSplit | None
    max_measure: int | None = None
    precision: float | None = None
    best: float | None = None
    keep: bool = False
    """The trial's steps are training steps of the main run (`autoscout_plugin.progress`): the adapter
    continues from where the last kept trial stopped, keeps what this one trains, and reports the steps in
    `TrialOutcome.metrics["kept_steps"]`; a kept trial that raises keeps nothing."""

    @property
    def steps(self) -> int:
        """The most optimizer steps the trial may run (an adapter's `max_steps`)."""
        return self.warmup + most_timed_steps(self.measure, self.max_measure, self.precision)

    def timing(self) -> dict[str, Any]:
        """The keywords of `StepProbe` for this trial (after `warmup` and `measure`)."""
        return {"max_measure": self.max_measure, "precision": self.precision, "best": self.best,
                "cut_off": self.cut_off, "compiling": self.compiling}

    @property
    def compiling(self) -> bool:
        return self.config.get("compile", "off") != "off"

    def spec(self, mode: str = "trial") -> dict[str, Any]:
        """The child protocol's JSON (`loop.LAUNCH_ENV`) for this request."""
        config = dict(self.config)
        if self.split is not None and "micro_batch_size" in config:
            config["grad_accum"] = self.split.grad_accum
        return {"mode": mode, "config": config, "warmup": self.warmup, "measure": self.measure,
                "max_measure": self.max_measure, "precision": self.precision, "best": self.best,
                "cut_off": self.cut_off, "global_batch": self.split.global_batch if self.split else None}


TrialFn = Callable[[TrialRequest], TrialOutcome]
JobFn = Callable[[TrialRequest], "TrialJob | TrialOutcome"]


class Tuning:
    """The tuning flow of one run. Construction checks the options against the description and builds
    the space (a `ValueError` names what is wrong before anything is profiled).

    Example:
        >>> from autoscout_plugin.costmodel import Hardware
        >>> run = RunDescription(current={"num_threads": 2}, knobs=("num_threads",),
        ...                      hardware=Hardware(kind="cpu", cores=2), pinned={"num_threads": "OMP=2"})
        >>> Tuning(AutoScoutOptions(), run)
        Traceback (most recent call last):
        ...
        ValueError: nothing to tune: every knob is pinned (num_threads by OMP=2); unpin a knob or run without AutoScout
    """

    def __init__(self, options: AutoScoutOptions, run: RunDescription, *, decides: bool = True) -> None:
        """`decides` is False on a rank that follows rank 0's search in a distributed run: the options are
        checked and the space built as on rank 0 (a bad option fails on every rank at once), but the store
        and report paths are rank 0's alone, left untouched here (another node may not even see them)."""
        self.options, self.run_description = options, run
        if (options.parallel > 1 or options.executor is not None) and not run.runs_jobs:
            raise ValueError(f"parallel={options.parallel}, executor={options.executor!r}: {run.subject} runs its"
                             " trials in this process, one at a time; parallel trials re-run a script as jobs: run"
                             " a Lightning script as `python train.py` (not from a notebook or pytest), or launch"
                             " a custom loop with `autoscout launch --autoscout --autoscout-parallel K`; or leave"
                             " parallel=1 and executor=None")
        if options.keep_progress and run.progress_unavailable:
            raise ValueError(f"keep_progress=True: {run.subject} cannot count trial steps as training"
                             f" ({run.progress_unavailable}); set keep_progress=False")
        self.tunable = self._tunable()
        self.space = self._space()
        self.baseline = self._baseline()
        if decides:
            outputs = prepare_outputs(options.store, options.report)  # before any trial: warns, falls back
            self.options = replace(options, store=outputs.store, report=outputs.report)
        self._best: float | None = None
        self._concluded: tuple[TuneResult, dict[str, Any], Any] | None = None

    # ------------------------------------------------------------ plan checks
    def _tunable(self) -> list[str]:
        opts, run = self.options, self.run_description
        for knob in opts.include or ():
            if knob in run.unavailable:
                raise ValueError(f"cannot tune {knob!r}: {run.unavailable[knob]}; drop it from include")
            if knob not in run.knobs:
                raise ValueError(f"knob {knob!r} cannot be tuned in {run.subject}: it can tune {list(run.knobs)}")
            if knob in run.pinned:
                raise ValueError(f"knob {knob!r} is listed in include but pinned by {run.pinned[knob]}; remove it"
                                 " from one of them")
        wanted = list(opts.include) if opts.include is not None else list(run.knobs)
        tunable = [k for k in wanted if k not in run.pinned and k not in run.unavailable and k not in opts.pin]
        if "strategy" in tunable and len(run.strategies) < 2:
            tunable.remove("strategy")
        if "num_processes" in tunable and "strategy" not in tunable and self._strategy() == "single":
            tunable.remove("num_processes")
        if not tunable:
            why = {**run.pinned, **run.unavailable, **{k: "AutoScoutOptions.pin" for k in opts.pin}}
            raise ValueError("nothing to tune: every knob is pinned (" + ", ".join(
                f"{k} by {v}" for k, v in why.items()) + "); unpin a knob or run without AutoScout")
        return tunable

    def _strategy(self) -> str:
        run = self.run_description
        return str({**run.current, **run.fixed, **self.options.pin}.get("strategy", "single"))

    def _pins(self) -> dict[str, Any]:
        """Knobs held at one value in the space: the adapter's fixed ones and the user's `pin`."""
        pin = {k: v for k, v in {**self.run_description.fixed, **self.options.pin}.items() if k not in self.tunable}
        if pin.get("strategy", "single") not in STRATEGIES:  # fixed by the framework, outside the space
            pin.pop("strategy", None)
            pin.pop("num_processes", None)
        return pin

    def _space(self) -> Space:
        run, include, pin = self.run_description, self.tunable, self._pins()
        current = {k: v for k, v in run.current.items() if k in include or k in pin}
        strategies = list(run.strategies) if "strategy" in include else [pin.get("strategy", "single")]
        hardware = run.hardware.to_json()
        processes = int(run.current.get("num_processes", 1))
        if run.hardware.kind == "cpu" and not self._processes_in_space() and processes > 1:
            hardware["cores"] = max(hardware["cores"] // processes, 1)  # threads x fixed processes <= cores
        workload = self._workload()
        try:
            return build_space(workload.to_json() if workload else {}, hardware, include=include, pin=pin,
                               strategies=strategies, current=current)
        except SpaceError as exc:
            raise ValueError(f"AutoScout cannot build the knob space for {run.subject}: {exc}") from exc

    def _processes_in_space(self) -> bool:
        return "num_processes" in self.tunable or "num_processes" in self._pins()

    def _workload(self) -> Workload | None:
        """The run's workload with the global batch the space keeps: per process when the process
        count is fixed outside the space."""
        run = self.run_description
        if run.split is None:
            return run.workload
        # Processes fixed outside the space: the batch of the processes on one machine, times the machines
        # (`num_nodes`, pinned in the space of a multi-node launch).
        nodes = int(self._pins().get("num_nodes", 1))
        batch = run.split.global_batch if self._processes_in_space() else run.split.per_process * nodes
        return replace(run.workload or Workload(), global_batch=batch)

    def _baseline(self) -> Config | None:
        """The user's own config (with the pins they asked for) in the space; None, with a note, where it
        breaks the space's constraints (more threads than cores): the search then runs without it."""
        own = {**self.run_description.current, **self.options.pin}
        try:
            config = self.space.canonical({k: v for k, v in own.items() if k in self.space})
            problems = self.space.violations(config)
        except SpaceError as exc:
            problems = [str(exc)]
        if not problems:
            return config
        print(f"AutoScout: your own settings are outside the space ({problems[0]}); the search runs without"
              " them as its baseline", file=sys.stderr)
        return None

    @property
    def planned_steps(self) -> int | None:
        """Optimizer steps of the main run: the user's `planned_steps`, else what the adapter read."""
        steps = self.options.planned_steps or self.run_description.planned_steps
        return steps if steps and steps > 0 else None

    def _global_batch(self) -> int | None:
        """Samples of one optimizer step of the main run, where the adapter knows them."""
        run = self.run_description
        return run.split.global_batch if run.split else None

    # ------------------------------------------------------------ trials
    def keeps(self, config: Config) -> bool:
        """Whether a trial of `config` counts as training (`keep_progress`, and `config` keeps the math of the
        user's own config)."""
        return self.options.keep_progress and keeps_math(config, self.baseline,
                                                         batch_dependent=self.run_description.batch_dependent)

    def _kept_steps(self, config: Config) -> int:
        """The least steps a trial of `config` adds to the main run's progress (0 where it is rolled back)."""
        return self.options.warmup_steps + self.options.measure_steps if self.keeps(config) else 0

    def request(self, config: Config, fidelity: Fidelity) -> TrialRequest:
        """The trial of `config`: a confirmation (F3) repeats trials instead of lengthening them, and only
        a search trial (F2) is cut short, under `cut_below` x the best F2 speed so far, or timed on past
        `measure_steps` until its speed is known within `measure_precision` (or clearly beside the best).

        Raises:
            BatchSplitError: the config's micro-batch and processes do not divide the global batch.
        """
        opts, split = self.options, self.run_description.split
        cut_off = None
        search = fidelity == Fidelity.F2
        if search and opts.cut_below and self._best:
            cut_off = opts.cut_below * self._best
        precision = opts.measure_precision if search else None
        return TrialRequest(config=dict(config), fidelity=fidelity, warmup=opts.warmup_steps,
                            measure=opts.measure_steps, cut_off=cut_off, timeout_s=opts.trial_timeout_s,
                            split=split.for_config(config) if split is not None else None,
                            max_measure=opts.most_measure_steps if precision else None, precision=precision,
                            best=self._best if precision else None, keep=self.keeps(config))

    def _profile(self, trial: TrialFn) -> Callable[[Config, Fidelity], TrialOutcome]:
        def profile(config: Config, fidelity: Fidelity) -> TrialOutcome:
            try:
                request = self.request(config, fidelity)
            except BatchSplitError as exc:  # never run: the training math would change
                return TrialOutcome(status="invalid", cost_s=0.0, error=str(exc))
            return trial(request)  # the best speed so far is noted as each trial is recorded (`_note_best`)

        return profile

    # ------------------------------------------------------------ the search
    def _jobs(self, job: JobFn) -> Callable[[Config, Fidelity], TrialJob | TrialOutcome]:
        def jobs(config: Config, fidelity: Fidelity) -> TrialJob | TrialOutcome:
            try:
                request = self.request(config, fidelity)
            except BatchSplitError as exc:
                return TrialOutcome(status="invalid", cost_s=0.0, error=str(exc))
            return job(request)

        return jobs

    def _note_best(self, trial: Trial, tuner: Tuner) -> None:
        """The best F2 speed so far, for the cut-off of the next trials (serial and parallel trials alike)."""
        if trial.ok and trial.value and trial.fidelity == Fidelity.F2:
            self._best = max(self._best or 0.0, trial.value)

    def run(self, trial: TrialFn, *, isolate: Callable[[], AbstractContextManager[Any]] | None = None,
            job: JobFn | None = None) -> TuneResult:
        """Search with `trial` running each config (inside `isolate()`, which puts back what trials may
        change in this process: RNG states, threads); the result, with the pinned knobs' values. With
        `options.parallel` > 1 or an `executor`, the search's trials are `job(request)`s run by the executor
        (`autoscout_plugin.parallel`), up to `parallel` at once; the confirmation still runs with `trial`."""
        opts, run = self.options, self.run_description
        steps = self.planned_steps
        batch = self._global_batch()  # unknown (None): the samples of a step are measured on the user's config
        planned = float(steps * batch) if steps and batch else None
        short = opts.too_short(steps)
        if short is not None:
            result = TuneResult(best_config=None, stop_reason=short, net={"steps": steps, "skipped": True})
            result.pinned = self._pinned_values()
            return result
        progress = Progress(opts.trial_budget(bool(steps)), enabled=opts.progress)
        tuner: Tuner | None = None
        try:
            tune_options = opts.tune_options(planned_samples=planned, planned_steps=steps, store=opts.store)
            executor = None
            if job is not None and (opts.parallel > 1 or opts.executor is not None):
                executor = make_executor(opts.executor or "local", opts.parallel)
                print(f"AutoScout: up to {opts.parallel} trials at once on {executor.describe()}", file=sys.stderr)

            def on_trial(trial: Trial, tuner: Tuner) -> None:
                self._note_best(trial, tuner)
                progress.trial(trial, tuner)

            tuner = Tuner(self.space, self._profile(trial), tune_options,
                          workload=self._workload(), hardware=run.hardware, baseline=self.baseline,
                          on_trial=on_trial, efficiency=measured_efficiency(run.hardware),
                          executor=executor, jobs=self._jobs(job) if job is not None and executor else None,
                          kept_steps=self._kept_steps if opts.keep_progress else None)
            with (isolate or contextlib.nullcontext)():
                result = tuner.run()
        except StoreError as exc:  # the store broke mid-run (a full disk, a damaged page): stop, never fail
            warnings.warn(f"AutoScout: {STORE_FAILED} during tuning ({exc}); tuning stopped and {run.main_run}"
                          " uses your own settings", RuntimeWarning, stacklevel=2)
            result = TuneResult(best_config=None, trials=list(tuner.trials) if tuner else [],
                                stop_reason=f"{STORE_FAILED}: {exc}")
        finally:
            progress.close()
        result.pinned = self._pinned_values()
        return result

    def _pinned_values(self) -> dict[str, Any]:
        """The values of the knobs the run or the user pinned."""
        run, opts = self.run_description, self.options
        own = {**run.current, **opts.pin}
        return {k: own.get(k) for k in [*run.pinned, *opts.pin]}

    def conclude(self, result: TuneResult, *, applied: Config | None, **notes: Any) -> dict[str, Any]:
        """Tell the user: a warning when every trial failed, the summary on stderr, the report files.
        Returns the notes (also the report's): pinned and why, tuned, applied, and `notes` given."""
        run, opts = self.run_description, self.options
        why = {**run.pinned, **dict.fromkeys(opts.pin, "AutoScoutOptions.pin")}
        report: dict[str, Any] = {
            "pinned": {k: why.get(k, "") for k in result.pinned},
            "tuned": list(self.tunable), "reused": result.reused, "trials": result.n_trials,
            "tuning_s": round(result.tuning_s, 2), "speedup": result.speedup, "applied": applied,
            "global_batch": run.split.global_batch if run.split else None, **notes}
        if run.ignored:
            report["ignored"] = dict(run.ignored)
        if result.best_config is None and not result.stop_reason.startswith(STORE_FAILED) \
                and not result.net.get("skipped"):
            warnings.warn(f"AutoScout: every trial failed; {run.main_run} uses your own settings. See the"
                          " report (or each trial's line above) for its error.", RuntimeWarning, stacklevel=3)
        if result.reused:
            print(f"AutoScout: reused the stored winner for {run.subject} and machine (0 trials).", file=sys.stderr)
        lines = ["AutoScout", result.table()]
        if report["pinned"]:
            lines.append("pinned: " + ", ".join(f"{k} ({v})" for k, v in report["pinned"].items()))
        lines.append("tuned: " + ", ".join(self.tunable))
        if run.ignored:
            lines.append("not tuned: " + ", ".join(f"{k} ({v})" for k, v in run.ignored.items()))
        if report.get("recommended"):
            lines.append(f"recommended (relaunch is off): {report.get('recommended_args', '')}"
                         f" with {format_config(report['recommended'])}")
        if report.get("recommended_launch"):
            lines.append(f"the launch fixes the process count; to tune it too, run on each node (its own"
                         f" --machine_rank): {report['recommended_launch']}")
        lines.append("applied: " + (format_config(applied) if applied else "nothing (your own settings)")
                     + (" (relaunching the script)" if report.get("relaunched") else ""))
        verdict = make_verdict(result, report)
        report["verdict"] = verdict.to_json()
        lines.append(f"AutoScout verdict: {verdict.sentence}")
        net = self._estimate(result, applied)
        if net:
            report["net"] = net
            lines.append(f"AutoScout: {net['sentence']}")
        if result.net.get("skipped"):  # a job too short to tune: one line, nothing else
            lines = [f"AutoScout: {result.stop_reason}; {run.main_run} uses your settings untouched."]
        print("\n".join(lines), file=sys.stderr, flush=True)
        self._concluded = (result, report, verdict)
        self._write(result, report, verdict)
        return report

    def _write(self, result: TuneResult, report: dict[str, Any], verdict: Any) -> None:
        opts, run = self.options, self.run_description
        if not opts.report:
            return
        try:
            json_path, html_path = write_report(result, opts.report, notes=report, verdict=verdict)
        except OSError as exc:  # checked before the trials; a disk may still fill up since
            warnings.warn(f"AutoScout: could not write the report at {opts.report}: {exc}; {run.main_run}"
                          " goes on", RuntimeWarning, stacklevel=3)
        else:
            if "report_files" not in report and not result.net.get("skipped"):  # a skip says one line
                print(f"AutoScout: report in {json_path} and {html_path}", file=sys.stderr)
            report["report_files"] = [str(json_path), str(html_path)]

    def _applied_speed(self, result: TuneResult, applied: Config | None) -> float | None:
        """The measured speed of what the main run uses: the user's config, or the applied winner's."""
        base = result.baseline_value
        if not applied or not base:
            return base
        tuned = {k: v for k, v in applied.items() if k not in result.derived}
        if tuned == result.best_config and result.speedup:
            return base * result.speedup
        return result.mean_value(tuned)

    def _estimate(self, result: TuneResult, applied: Config | None) -> dict[str, Any]:
        """The job's estimated end time against the user's settings alone, where the main run's length is
        known (or assumed) and the user's config was measured; {} otherwise."""
        samples, base = result.net.get("samples"), result.baseline_value
        kept = int(result.net.get("kept_steps") or 0)
        speed = self._applied_speed(result, applied)
        if samples is None or not base or not speed:
            return {}
        kept_samples = kept * float(result.net.get("step_samples") or 0.0)
        default_s, tuned_s = (samples + kept_samples) / base, samples / speed
        if not default_s:
            return {}
        estimate = netgain.job_net(default_s, result.wall_s, tuned_s)
        assumed = "" if self.planned_steps else \
            f" (its length is unknown: assumed {netgain.ASSUMED_RUN_S / 60:.0f} minutes at your settings' speed)"
        main = self.run_description.main_run
        trained = f", {kept} of its steps trained by the trials" if kept else ""
        sentence = (f"estimated job time: {result.wall_s:.0f} s of tuning + {tuned_s:.0f} s of {main}{assumed}"
                    f"{trained}, against {default_s:.0f} s with your settings alone: {estimate:.2f}x")
        return {"samples": samples, "assumed": not self.planned_steps, "default_run_s": default_s,
                "tuned_run_s": tuned_s, "tuning_s": result.wall_s, "estimated": estimate, "kept_steps": kept,
                "sentence": sentence}

    def finish(self, main_run_s: float, steps: int | None = None) -> dict[str, Any] | None:
        """After the main run (rank 0): the job's realised net speed-up, tuning included, against the user's
        settings alone at their measured speed, for the `steps` the main run ran (and those the kept trials
        trained before it). Printed, added to the report's `net` and its files rewritten; None before
        `conclude` or without a measured baseline."""
        if self._concluded is None:
            return None
        result, report, verdict = self._concluded
        base = result.baseline_value
        if not base or not steps or main_run_s <= 0:
            return None
        samples, planned = result.net.get("samples"), self.planned_steps
        if samples is None or not planned:  # the length was unknown (assumed): no samples of a step to count
            return None
        kept = int(result.net.get("kept_steps") or 0)
        per_step = float(result.net.get("step_samples") or samples / planned)
        default_s = (steps + kept) * per_step / base
        net = netgain.job_net(default_s, result.wall_s, main_run_s)
        realised = {"steps": steps, "main_run_s": main_run_s, "tuning_s": result.wall_s, "default_run_s": default_s,
                    "net": net, "main_speedup": steps * per_step / base / main_run_s, "kept_steps": kept}
        report.setdefault("net", {})["realised"] = realised
        main = self.run_description.main_run
        trained = f" after {kept} steps trained by the trials" if kept else ""
        print(f"AutoScout: job done: {result.wall_s:.0f} s of tuning + {main_run_s:.0f} s of {main}"
              f" ({steps} steps{trained}), against about {default_s:.0f} s with your settings alone (their measured"
              f" speed): {net:.2f}x, tuning included", file=sys.stderr, flush=True)
        self._write(result, report, verdict)
        return realised


__all__ = ["RunDescription", "TrialFn", "TrialRequest", "Tuning"]
