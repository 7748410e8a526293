"""The options every integration takes (Lightning callback, Hugging Face, launcher): one frozen,
validated object, so a bad option fails before anything is profiled.

Every field is checked with `autoscout_plugin.validate` (types, ranges, finite numbers, empty strings,
unknown knobs and unknown option names): a bad value is a `ValueError` saying which option, the value,
and what to give instead, never a `TypeError` or an `AttributeError` from deep inside a run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from . import netgain, validate
from .space.catalogue import CATALOGUE
from .tuner import TuneOptions

OBJECTIVES = ("samples_per_s", "tokens_per_s")
STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")
_COUNTS_FROM_ZERO = ("num_workers", "zero_stage")
"""Integer knobs that may be 0: a data-loader worker count, a ZeRO stage (0 .. 3)."""


def check_pin(name: str, value: Any) -> Any:
    """A pinned value of the catalogue knob `name` of the knob's kind: an int (>= 1; >= 0 for num_workers,
    0 .. 3 for zero_stage), a positive finite float, True/False, or a non-empty string (strategy: one of
    single, ddp, fsdp, deepspeed).

    Example:
        >>> check_pin("num_threads", "two")
        Traceback (most recent call last):
        ...
        ValueError: pin['num_threads'] must be an integer >= 1, got 'two': num_threads is an integer knob
    """
    spec = CATALOGUE[name]
    label = f"pin[{name!r}]"
    hint = f"{name} is {'an integer' if spec.kind == 'int' else 'a ' + spec.kind} knob"
    if spec.kind == "int":
        high = 3 if name == "zero_stage" else None
        return validate.integer(label, value, low=0 if name in _COUNTS_FROM_ZERO else 1, high=high, hint=hint)
    if spec.kind == "float":
        return validate.positive_number(label, value, hint=hint)
    if spec.kind == "bool":
        return validate.boolean(label, value, hint=hint)
    if name == "strategy":
        return validate.choice(label, value, STRATEGIES, hint="the strategies AutoScout runs")
    return validate.non_empty_str(label, value, hint=hint)


def default_store() -> str:
    """`$AUTOSCOUT_STORE` (a path or a `postgresql://` URL), else `$XDG_CACHE_HOME/autoscout/trials.sqlite`
    (`~/.cache/...`)."""
    if os.environ.get("AUTOSCOUT_STORE"):
        return os.environ["AUTOSCOUT_STORE"]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "autoscout" / "trials.sqlite")


@dataclass(frozen=True, kw_only=True)
class AutoScoutOptions(validate.KeywordOptions):
    """What to tune and how much to spend. Keyword options only; each is checked on construction.

    Example:
        >>> AutoScoutOptions(include=("micro_batch_size", "num_threads"), pin={"num_threads": 2})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: knob 'num_threads' is pinned to 2 and also listed in include; a pinned knob is not tuned...
    """

    max_trials: int | Literal["auto"] | None = "auto"
    """Profiling runs, the user's own config included; None for no trial limit. `"auto"`: 8, and up to
    `netgain.LONG_JOB_TRIALS` when the net-gain rule bounds the search (`net_gain` on and the main run's
    length known: the search then stops when the next trial would not pay for itself)."""
    max_seconds: float | None = None
    """Profiling seconds."""
    max_fraction: float | None = None
    """At most this fraction of the planned main run (estimated from the measured speed)."""
    objective: str = "samples_per_s"
    """`samples_per_s` or `tokens_per_s` (the same ranking for a fixed sequence length)."""
    include: tuple[str, ...] | None = None
    """Knobs to tune (catalogue names); None tunes every knob that applies."""
    pin: Mapping[str, Any] = field(default_factory=dict)
    """Knob -> value held fixed."""
    store: str | None = None
    """Where trials and winners are kept: an SQLite file, or a `postgresql://user@host:port/db` URL shared by
    every machine and teammate; None uses `default_store()`."""
    relaunch: bool = True
    """May re-run the script with a winner that needs another strategy or process count."""
    report: str | None = None
    """Write `REPORT.json` and `REPORT.html` here."""
    warmup_steps: int = 2
    """Optimizer steps run before timing (compilation happens here)."""
    measure_steps: int = 4
    """Optimizer steps timed per trial, at least (confirmation runs exactly these: they are repeated, not
    lengthened)."""
    measure_precision: float | None = 0.05
    """A search trial goes on timing after `measure_steps` until its speed is known to +-this fraction (the
    95% confidence interval over its steps), or is clearly faster or slower than the best so far, up to
    `max_measure_steps`: noisy or close trials get more steps, clear ones no more. None times exactly
    `measure_steps`."""
    max_measure_steps: int | None = None
    """The most steps a search trial times under `measure_precision`; None: 3 x `measure_steps`."""
    trial_timeout_s: float = 600.0
    """A trial still running after this is stopped and recorded as a timeout."""
    cut_below: float | None = 0.5
    """A trial running slower than this fraction of the best speed so far is cut short (recorded with
    the speed it showed) instead of finishing its steps; None runs every trial to the end."""
    confirm_top: int = 1
    """Best configs re-measured against your own config before choosing (0 skips the confirmation)."""
    confirm_rounds: int = 2
    """Rounds of that confirmation: your config and each contender run interleaved (A B, B A, ...) and the
    decision is on the per-round speed ratios, so a load burst cannot favour either side."""
    patience: int | None = 4
    """Stop after this many trials without an improvement; None never stops early."""
    seed: int = 0
    """Seed of the search (0 .. 2**32 - 1)."""
    search: str = "autoscout"
    """The search strategy: autoscout, random, grid, skopt_gp, optuna_tpe or ds_model_based."""
    progress: bool = True
    """Show a progress bar and one line per trial."""
    parallel: int = 1
    """Search trials run at once, by `executor` (the confirmation runs here, one at a time)."""
    net_gain: bool = True
    """Tune only while it pays: when the main run's length is known (`max_steps`, epochs x batches,
    `planned_steps`), stop once the next trial is not expected to win back its cost in the main run, skip a
    confirmation that costs more than its win saves, and leave a job too short to win anything back
    untouched; when the length is unknown, spend at most 90 s (5% of an assumed 30-minute run). False spends
    the trial budget whatever the run's length."""
    planned_steps: int | None = None
    """Optimizer steps of the main run, where the integration cannot read them (a custom loop, a stream);
    None: read from the run (`Trainer(max_steps=...)`, epochs x batches)."""
    keep_progress: bool = False
    """Count the steps of trials that keep the training math (your own config, other threads, dataloader
    workers or micro-batch splits of the same global batch, DDP bucket arguments) as the main run's first
    steps instead of rolling them back (`autoscout_plugin.progress`): the main run resumes after them, on the
    same samples in the same order. Off by default because the main run then starts at a later step, which
    your loggers and callbacks see; the Hugging Face Trainer on one process supports it, other runs refuse it
    with the reason."""
    executor: str | None = None
    """Where the search's trials run: `local` (processes of this machine), `ray[:ADDRESS]` (a Ray cluster,
    through Ray Tune) or `slurm[:OPTIONS]` (Slurm jobs, through submitit); None: one by one in this process,
    or `local` when `parallel` > 1. Needs an integration whose trials are jobs (`autoscout launch`)."""


    def __post_init__(self) -> None:
        if self.include is not None:
            object.__setattr__(self, "include", validate.knob_names(
                "include", self.include, known=[*CATALOGUE, "grad_accum"],
                unknown_message=lambda name: f"unknown knob {name!r}; known knobs: {sorted(CATALOGUE)}"))
        validate.mapping("pin", self.pin, hint="e.g. pin={'num_threads': 4}")
        object.__setattr__(self, "pin", MappingProxyType(dict(self.pin)))
        for name in self.pin:
            if name not in CATALOGUE and name != "grad_accum":
                raise ValueError(f"unknown knob {name!r} in pin; known knobs: {sorted(CATALOGUE)}")
        if "grad_accum" in (self.include or ()) or "grad_accum" in self.pin:
            raise ValueError("grad_accum is derived from the global batch: not a knob to include or pin; pin"
                             " micro_batch_size instead")
        for name, value in self.pin.items():
            check_pin(name, value)
        for name in self.include or ():
            if name in self.pin:
                raise ValueError(f"knob {name!r} is pinned to {self.pin[name]!r} and also listed in include;"
                                 " a pinned knob is not tuned: remove it from one of them")
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; use one of {list(OBJECTIVES)}")
        validate.integer("warmup_steps", self.warmup_steps, low=0, hint="optimizer steps run before timing")
        validate.integer("measure_steps", self.measure_steps, low=1, hint="optimizer steps timed per trial")
        validate.fraction("measure_precision", self.measure_precision, include_high=False, optional=True,
                          requirement="a fraction between 0 and 1 (exclusive), or None",
                          hint="e.g. 0.05 times a trial until its speed is known to +-5%; None times exactly"
                               " measure_steps")
        validate.integer("max_measure_steps", self.max_measure_steps, low=self.measure_steps, optional=True,
                         requirement=f"an integer >= measure_steps ({self.measure_steps})",
                         hint="the most steps a trial times while its speed is not yet known to measure_precision, or"
                              " None for 3 x measure_steps")
        validate.positive_number("trial_timeout_s", self.trial_timeout_s, unit="seconds",
                                 high=validate.MAX_TIMEOUT_S, hint="seconds before a trial is stopped")
        validate.fraction("cut_below", self.cut_below, include_high=False, optional=True,
                          requirement="a fraction between 0 and 1 (exclusive), or None",
                          hint="e.g. 0.5 cuts a trial slower than half the best speed; None runs every trial out")
        validate.fraction("max_fraction", self.max_fraction, optional=True,
                          hint="the share of the planned main run tuning may take, e.g. 0.05 (or None)")
        # A path that exists but cannot hold a store (a folder, a damaged file) is not refused here: the
        # run goes on with a fresh store and a warning (`outputs.prepare_outputs`, before the first trial).
        validate.store("store", self.store, optional=True,
                       hint="an SQLite file, a postgresql:// URL, or None for the default")
        validate.path("report", self.report, optional=True,
                      hint="REPORT.json and REPORT.html are written there, or None for no report")
        validate.boolean("relaunch", self.relaunch)
        validate.boolean("progress", self.progress)
        validate.integer("parallel", self.parallel, low=1, high=1024, requirement="an integer from 1 to 1024",
                         hint="the number of trials to run at once, e.g. 4")
        validate.executor("executor", self.executor, optional=True)
        validate.boolean("net_gain", self.net_gain)
        validate.boolean("keep_progress", self.keep_progress)
        validate.integer("planned_steps", self.planned_steps, low=1, optional=True,
                         hint="the optimizer steps of the main run, or None to read them from the run")
        self.tune_options(planned_samples=1.0)  # the budget's own checks (zero trials, no budget, seed, search)

    def too_short(self, planned_steps: int | None) -> str | None:
        """Why a main run of `planned_steps` is too short to tune (`netgain.too_short` with this run's trial
        steps and confirmation), or None: the rule is off, the length unknown, or the run long enough."""
        if not self.net_gain or not planned_steps:
            return None
        return netgain.too_short(planned_steps, self.warmup_steps + self.measure_steps,
                                 self.confirm_rounds if self.confirm_top else 0)

    @property
    def most_measure_steps(self) -> int:
        """The most steps a search trial times (`max_measure_steps`, else 3 x `measure_steps`)."""
        return self.max_measure_steps or 3 * self.measure_steps

    def trial_budget(self, length_known: bool) -> int | None:
        """`max_trials`, with `"auto"` resolved: `netgain.LONG_JOB_TRIALS` where the net-gain rule bounds
        the search (on, with the main run's length known), else `netgain.DEFAULT_TRIALS`."""
        if self.max_trials != "auto":
            return self.max_trials
        return netgain.LONG_JOB_TRIALS if self.net_gain and length_known else netgain.DEFAULT_TRIALS

    def tune_options(self, *, planned_samples: float | None = None, planned_steps: int | None = None,
                     store: str | None = None) -> TuneOptions:
        """The core tuner's options for this run; `planned_samples` sizes the main run (for `max_fraction`
        and the net-gain rule). With `net_gain` and the length unknown, the run is assumed to last
        `netgain.ASSUMED_RUN_S` and tuning takes at most `UNKNOWN_LENGTH_FRACTION` of that."""
        if self.max_fraction is not None and not planned_samples and not planned_steps:
            raise ValueError(f"max_fraction={self.max_fraction!r} needs the length of the main run, which is"
                             " unknown here: set the number of steps (e.g. Trainer(max_steps=...)) or use"
                             " max_seconds")
        max_seconds, planned_run_s = self.max_seconds, None
        if self.net_gain and not planned_samples and not planned_steps:
            planned_run_s = netgain.ASSUMED_RUN_S
            cap = netgain.UNKNOWN_LENGTH_FRACTION * netgain.ASSUMED_RUN_S
            max_seconds = min(max_seconds, cap) if max_seconds is not None else cap
        trials = self.trial_budget(bool(planned_samples or planned_steps))
        return TuneOptions(max_trials=trials, max_seconds=max_seconds,
                           max_fraction=self.max_fraction, planned_samples=planned_samples or None,
                           planned_run_s=planned_run_s, planned_steps=planned_steps, net_gain=self.net_gain,
                           patience=self.patience, confirm_top=self.confirm_top,
                           confirm_rounds=self.confirm_rounds, search=self.search,
                           seed=self.seed, store=store)
