"""Hugging Face Trainer: `tune_trainer(trainer)` tunes the system configuration of an existing
`transformers.Trainer` and applies the winner to it, so the `trainer.train()` that follows runs with it.

    trainer = Trainer(model=model, args=TrainingArguments(...), train_dataset=data)
    tune_trainer(trainer, max_trials=8)     # the one added line
    trainer.train()

Knobs, each mapped onto `TrainingArguments`: `micro_batch_size` (`per_device_train_batch_size`, with
`gradient_accumulation_steps` keeping the global batch), `precision` (`bf16`/`fp16`), `compile`
(`torch_compile`), `activation_checkpointing`, `num_workers` (`dataloader_num_workers`), `pin_memory`
(on a GPU), `num_threads` (`torch.set_num_threads`), and when launched distributed every DDP knob of the
catalogue (`ddp_bucket_cap_mb`, `ddp_static_graph`, `ddp_bucket_view`: the Accelerator's DDP arguments).
What the user set away from the `TrainingArguments` default stays pinned:
`bf16=True`, `torch_compile=True`, `activation_checkpointing=True`, `dataloader_num_workers=4`, a DDP
bucket size. The batch size is always tunable because the global batch, not the split, is the math.

A trial follows `Trainer.hyperparameter_search`: the arguments are re-applied (`dataclasses.replace`,
so `__post_init__` derives the mixed precision and compile backend) and the Accelerator rebuilt.
It runs on a shallow copy of the trainer with a deep copy of the model: the user's model, optimizer,
scheduler, callbacks and state are never touched; reporting callbacks (loggers, savers) do not fire;
RNG states, threads and environment variables are put back. The accelerate-prepared flag is cleared
so a bf16 or compile trial really runs bf16 or compiled, and every trial checks the evidence of each
knob it set (autocast dtype inside the forward, the compiled wrapper, rows per micro-batch, dataloader
workers, threads) before its speed counts.

With `keep_progress=True` (one process), a trial that keeps the training math (the user's config, threads,
workers, a micro-batch split of the same global batch) is real training instead: it resumes from the last
kept trial's checkpoint under the user's own schedule and saves one where it stops (`KeptProgress`), and the
`trainer.train()` that follows resumes from the last of them (`autoscout_plugin.progress`).

Launched distributed (`accelerate launch`, `torchrun`, on one node or several), rank 0 runs the search and
every rank runs each trial in lockstep (`_lockstep`: the ranks end a trial at the same step, a trial that
raises on one rank fails on all, and a node that dies stops the others with an error naming it); the
winner reaches all ranks. On several nodes the strategy and process count are the launch's (pinned).
Under `autoscout launch --autoscout` the launcher owns the search: `tune_trainer` then applies the
launcher's config and times the steps for it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, TrainerControl, TrainerState
from transformers.utils import logging as hf_logging

from autoscout_plugin import loop
from autoscout_plugin.batch import BatchSplit
from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.profiling.deadline import wall_clock_limit
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.space import Config
from autoscout_plugin.space.catalogue import CATALOGUE, DDP_KWARGS
from autoscout_plugin.tuning import RunDescription, TrialRequest, Tuning

from . import _compat, _torch
from ._hf_probe import HFProbe
from ._lockstep import Lockstep, Topology, check_options, launch_hint
from ._torch import no_trace, sequence_length, workload_from_module

ARG_OF = {"micro_batch_size": "per_device_train_batch_size", "compile": "torch_compile",
          "activation_checkpointing": "activation_checkpointing", "num_workers": "dataloader_num_workers",
          "pin_memory": "dataloader_pin_memory"}
"""Catalogue knob -> the `TrainingArguments` field it sets (`precision` sets `bf16`/`fp16`; the DDP knobs
set the Accelerator's `DistributedDataParallel` arguments)."""
KNOBS = ("precision", "compile", "activation_checkpointing", "micro_batch_size", "num_threads", "num_workers",
         "pin_memory", *DDP_KWARGS)
"""What `tune_trainer` can apply, in catalogue names: what `include=None` tunes."""
_QUIET = {"report_to": "none", "save_strategy": "no", "eval_strategy": "no", "logging_strategy": "no",
          "push_to_hub": False, "load_best_model_at_end": False, "disable_tqdm": True}
"""A trial writes nothing: no logger, no checkpoint, no evaluation, no progress bar, no upload."""


# ---------------------------------------------------------------- arguments <-> configs
def config_of(args: TrainingArguments) -> Config:
    """The catalogue config a `TrainingArguments` runs (`num_threads` is the process's)."""
    precision = "bf16-mixed" if args.bf16 else "16-mixed" if args.fp16 else "32-true"
    world = int(args.world_size)
    config: Config = {"strategy": "ddp" if world > 1 else "single", "num_processes": world,
                      "precision": precision, "compile": "default" if args.torch_compile else "off",
                      "activation_checkpointing": bool(args.activation_checkpointing),
                      "micro_batch_size": int(args.per_device_train_batch_size),
                      "num_threads": torch.get_num_threads(), "num_workers": int(args.dataloader_num_workers),
                      "pin_memory": bool(args.dataloader_pin_memory)}
    if world > 1:  # the DDP arguments: the user's where `TrainingArguments` has the field, else DDP's default
        config.update({k: getattr(args, k, None) if getattr(args, k, None) is not None else CATALOGUE[k].default
                       for k in DDP_KWARGS})
    return config


def arguments_for(args: TrainingArguments, config: Config, split: BatchSplit | None, **extra: Any) -> TrainingArguments:
    """`args` with `config` applied and the accumulation of `split`, re-validated by
    `TrainingArguments.__post_init__` (a new object; `args` is not changed)."""
    changes: dict[str, Any] = dict(extra)
    for knob, value in config.items():
        if knob == "precision":
            changes["bf16"], changes["fp16"] = value.startswith("bf16"), value.startswith("16")
        elif knob == "compile":
            changes["torch_compile"] = value != "off"
            if value not in ("off", "default"):
                changes["torch_compile_mode"] = value
        elif knob in ARG_OF and getattr(args, ARG_OF[knob]) != value:
            changes[ARG_OF[knob]] = value
        elif knob in DDP_KWARGS and hasattr(args, knob):  # the fields it has; the Accelerator gets every one
            changes[knob] = value
    if split is not None:
        changes["per_device_train_batch_size"] = split.micro_batch
        changes["gradient_accumulation_steps"] = split.grad_accum
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataclasses.replace(args, **changes)


def _rebuild_accelerator(trainer: Trainer, config: Config | None = None) -> None:
    """Re-create the trainer's Accelerator from its arguments, as `hyperparameter_search` does, with the
    DDP arguments of `config`; the prepared flag is cleared so the next `prepare` really applies
    precision and compile."""
    _compat.clear_prepared(trainer.model, getattr(trainer, "model_wrapped", None))
    _compat.sync_train_batch_size(trainer)
    trainer.create_accelerator_and_postprocess()
    handler = trainer.accelerator.ddp_handler
    for knob, arg in DDP_KWARGS.items():
        if config and knob in config and handler is not None:
            setattr(handler, arg, config[knob])


# ---------------------------------------------------------------- one trial
def _inner_module(model: torch.nn.Module) -> torch.nn.Module:
    """The first child that holds parameters: it runs inside the autocast region accelerate opens."""
    for child in model.children():
        if any(True for _ in child.parameters()):
            return child
    return model


def check_evidence(config: Config, probe: HFProbe, trainer: Trainer, world: int) -> str | None:
    """Why the trial did not run what `config` asks for, or None when every knob was in effect."""
    ev = probe.evidence
    problems = []
    precision = config.get("precision")
    want = {"32-true": "off", "bf16-mixed": str(torch.bfloat16), "16-mixed": str(torch.float16)}.get(precision or "")
    if want is not None and ev["autocast"] != {want}:
        problems.append(f"precision={precision} but the forward ran with autocast {sorted(ev['autocast'])}")
    wrapped = getattr(trainer, "model_wrapped", None)
    compiled = ev["compiling"] or _compat.is_compiled_module(wrapped)
    if "compile" in config and compiled != (config["compile"] != "off"):
        problems.append(f"compile={config['compile']} but the model {'was' if compiled else 'was not'} compiled")
    if "activation_checkpointing" in config:
        on = bool(getattr(trainer.model, "is_gradient_checkpointing", False))
        if on != bool(config["activation_checkpointing"]):
            problems.append(f"activation_checkpointing={config['activation_checkpointing']} but the model has it"
                            f" {'on' if on else 'off'}")
    if "micro_batch_size" in config and ev["rows"] != int(config["micro_batch_size"]):
        problems.append(f"micro_batch_size={config['micro_batch_size']} but batches had {ev['rows']} rows")
    for knob in ("num_workers", "pin_memory"):
        if knob in config and knob in ev and ev[knob] != config[knob]:
            problems.append(f"{knob}={config[knob]} but the dataloader had {ev[knob]}")
    if "num_threads" in config and ev["threads"] and ev["threads"] != {int(config["num_threads"])}:
        problems.append(f"num_threads={config['num_threads']} but the forward ran with {sorted(ev['threads'])}")
    for knob, arg in DDP_KWARGS.items() if world > 1 else ():
        expected: Any = config.get(knob)
        have = getattr(wrapped, "bucket_bytes_cap" if arg == "bucket_cap_mb" else arg, None)
        if arg == "bucket_cap_mb" and expected is not None:
            expected = float(expected) * 1024 * 1024  # DDP keeps it in bytes
        if expected is None or have is None:
            continue
        if abs(have - expected) > 1 if arg == "bucket_cap_mb" else have != expected:
            problems.append(f"{knob}={config[knob]} but DDP has {arg}={have}")
    return "; ".join(problems) or None


class KeptProgress:
    """The steps that kept trials trained (`AutoScoutOptions.keep_progress`): the last kept trial's checkpoint
    (model, optimizer, scheduler, RNG and trainer state, written by the Trainer itself), in a folder of its
    own that is removed once the main run has resumed from it, or when the process ends."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="autoscout-progress-")
        self.last: str | None = None
        """The checkpoint the next kept trial and the main run resume from; None before any kept trial."""
        self.step = 0
        """Its optimizer step: the steps trained so far."""
        self._remove = weakref.finalize(self, shutil.rmtree, self.dir, ignore_errors=True)

    def adopt(self, step: int) -> int:
        """Take the checkpoint a kept trial saved at optimizer `step`; the steps it added (0 without one)."""
        path = os.path.join(self.dir, f"checkpoint-{step}")
        if step <= self.step or not os.path.isfile(os.path.join(path, "trainer_state.json")):
            self.drop_strays()
            return 0
        added, previous = step - self.step, self.last
        self.last, self.step = path, step
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        return added

    def drop_strays(self) -> None:
        """Remove what a kept trial that failed may have saved: only the last adopted checkpoint stays."""
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if path != self.last:
                shutil.rmtree(path, ignore_errors=True)

    def remove(self) -> None:
        self._remove()


@contextlib.contextmanager
def _quiet_saves(quiet: bool) -> Iterator[None]:
    """No "Writing model shards" bar from a kept trial's checkpoint in the user's terminal (`quiet`)."""
    shown = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def run_trial(trainer: Trainer, request: TrialRequest, progress: KeptProgress | None = None) -> TrialOutcome:
    """Train a copy of `trainer`'s model for the request's optimizer steps under its config and batch split,
    and time them. The user's trainer, model, RNG, threads and environment are left exactly as they were.
    A trial whose steps count as training (`request.keep`, with a `progress`) resumes from the last kept
    checkpoint under the user's own schedule (`max_steps`, epochs) and saves one where it stops; its steps
    are reported in `metrics["kept_steps"]`. Exceptions propagate (the tuner records them as the trial's
    failure: oom, timeout, error)."""
    started = time.perf_counter()
    device, config = trainer.args.device, request.config
    split = request.split or _split(trainer.args)
    keep = progress is not None and request.keep
    probe = HFProbe(request.warmup, request.measure, split.global_batch, device=device, keep=keep,
                    **request.timing())
    _torch.release_memory(device)  # what an earlier (failed) trial left cached would count in this one's peak
    _torch.reset_peak_memory(device)
    with no_trace(), tempfile.TemporaryDirectory(prefix="autoscout-") as tmp, \
            wall_clock_limit(request.timeout_s, "the trial"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "num_threads" in config:
            torch.set_num_threads(int(config["num_threads"]))
        trial = copy.copy(trainer)
        # A kept trial runs the main run's own schedule (its `max_steps` or epochs) and stops where the probe does.
        length = {} if keep else {"max_steps": request.steps}
        trial.args = arguments_for(trainer.args, config, split, output_dir=progress.dir if keep else tmp,
                                   **length, **_QUIET)
        trial.model = copy.deepcopy(trainer.model)
        trial.model_wrapped = trial.model
        trial.optimizer, trial.lr_scheduler = None, None
        trial.state, trial.control = TrainerState(), TrainerControl()
        trial.callback_handler = CallbackHandler([DefaultFlowCallback, probe], trial.model, trainer.processing_class,
                                                 None, None)
        compute_loss = trial.compute_loss

        def checked_loss(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            probe.phase = "forward"
            try:
                result = compute_loss(model, inputs, *args, **kwargs)
            except Exception:
                probe.announce()
                raise
            probe.loss_seen(result[0] if isinstance(result, tuple) else result, inputs)
            probe.checkpoint(sync_backward=getattr(model, "require_backward_grad_sync", True))
            return result

        trial.compute_loss = checked_loss  # type: ignore[method-assign]
        handle = _inner_module(trial.model).register_forward_pre_hook(probe.inner_hook, with_kwargs=True)
        try:
            _rebuild_accelerator(trial, config)
            with _quiet_saves(keep):
                trial.train(resume_from_checkpoint=progress.last if keep else None)
        except Exception:
            probe.announce()  # a failure after the forward: the others meet at the step's end
            if keep:
                progress.drop_strays()
            raise
        finally:
            handle.remove()
        outcome = probe.outcome or TrialOutcome(status="error", error="the trial ran no steps")
        kept = 0
        if keep:  # the steps of a trial that ran (fast, slow or cut short) are training; a NaN's are not
            if outcome.status == "ok":
                kept = progress.adopt(trial.state.global_step)
            else:
                progress.drop_strays()
            outcome.metrics["kept_steps"] = kept
        if outcome.status == "ok" and not outcome.metrics.get("cut_short"):
            problem = check_evidence(config, probe, trial, trainer.args.world_size)
            if problem:
                outcome = TrialOutcome(status="error", error=f"setting not in effect: {problem}",
                                       metrics={"kept_steps": kept} if keep else {})  # trained all the same
        trial.model = trial.model_wrapped = trial.optimizer = trial.lr_scheduler = None
    _torch.release_memory(device)  # the trial's copy of the model and its optimizer state
    outcome.cost_s = time.perf_counter() - started
    return outcome


# ---------------------------------------------------------------- the description and the search
def _split(args: TrainingArguments) -> BatchSplit:
    """The user's batch split: per-device batch x accumulation x processes."""
    micro, accum = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    world = int(args.world_size)
    return BatchSplit(micro * accum * world, micro, accum, world)


def describe(trainer: Trainer, topology: Topology | None = None) -> RunDescription:
    """What `trainer` runs and what of it AutoScout may change: the user's arguments away from their
    defaults are pinned; a knob that cannot act here (pinned memory without a GPU) is unavailable. On
    several nodes (`topology`), `num_processes` is per node, as in the catalogue, and the process knobs
    stay out of the space (threads then share one node's cores among that node's processes)."""
    args = trainer.args
    world = int(args.world_size)
    topology = topology or Topology(world=world, per_node=world)
    current = config_of(args)
    pinned: dict[str, str] = {}
    unavailable: dict[str, str] = dict.fromkeys(("strategy", "num_processes"), (
        "a Hugging Face Trainer's strategy and process count are chosen at launch: use `autoscout launch --autoscout`"))
    if topology.multi_node:  # as the Lightning callback reports it: the launch pins them
        current.update(num_processes=topology.per_node, num_nodes=topology.nodes)
        for knob in ("strategy", "num_processes"):
            del unavailable[knob]
            pinned[knob] = f"the launch: {topology}"
    if args.bf16 or args.fp16:
        pinned["precision"] = f"TrainingArguments({'bf16' if args.bf16 else 'fp16'}=True)"
    if args.torch_compile:
        pinned["compile"] = "TrainingArguments(torch_compile=True)"
    if args.activation_checkpointing:
        pinned["activation_checkpointing"] = "TrainingArguments(activation_checkpointing=True)"
    elif not getattr(trainer.model, "supports_gradient_checkpointing", False):
        unavailable["activation_checkpointing"] = f"{type(trainer.model).__name__} does not support gradient" \
                                                  " checkpointing"
    if args.dataloader_num_workers:
        pinned["num_workers"] = f"TrainingArguments(dataloader_num_workers={args.dataloader_num_workers})"
    if args.auto_find_batch_size:
        pinned["micro_batch_size"] = "TrainingArguments(auto_find_batch_size=True)"
    if not torch.cuda.is_available():
        unavailable["pin_memory"] = "pinned memory only speeds up copies to a GPU, and there is none"
    for knob in DDP_KWARGS:
        if world == 1:
            unavailable[knob] = "the run is not distributed"
        elif getattr(args, knob, None) is not None:
            pinned[knob] = f"TrainingArguments({knob}={getattr(args, knob)!r})"
    split = _split(args)
    sample = _sample_batch(trainer)
    workload = workload_from_module(trainer.model, global_batch=split.global_batch,
                                    seq_len=sequence_length(sample) if sample is not None else None, example=sample)
    process_knobs = ("strategy", "num_processes")
    fixed = {"micro_batch_size": current["micro_batch_size"],
             **{k: current[k] for k in pinned if k in current and k not in process_knobs}}
    if not topology.multi_node:  # on several nodes they stay out of the space (see above)
        fixed.update(strategy=current["strategy"], num_processes=world)
    return RunDescription(current=current, knobs=KNOBS, hardware=_torch.machine(args.device), workload=workload,
                          pinned=pinned, unavailable=unavailable, fixed=fixed, split=split,
                          planned_steps=planned_steps(trainer, split.global_batch),
                          subject="this model", main_run="training",
                          progress_unavailable=_progress_unavailable(trainer, world),
                          batch_dependent=_torch.batch_dependent(trainer.model))


def _progress_unavailable(trainer: Trainer, world: int) -> str | None:
    """Why this trainer cannot count trial steps as training (`keep_progress`), or None."""
    if world > 1:
        return f"it runs on {world} processes; kept trials are built for one"
    if trainer.args.ignore_data_skip:
        return "TrainingArguments(ignore_data_skip=True) would train the kept trials' samples again"
    return None


def planned_steps(trainer: Trainer, global_batch: int) -> int | None:
    """Optimizer steps of `trainer.train()`: `max_steps`, else epochs x the steps of one pass over the
    dataset at the global batch; None for a dataset without a length (a stream)."""
    args = trainer.args
    if args.max_steps > 0:
        return int(args.max_steps)
    try:
        samples = len(trainer.train_dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
    per_epoch = -(-samples // global_batch) if not args.dataloader_drop_last else samples // global_batch
    return max(1, math.ceil(args.num_train_epochs * per_epoch)) if per_epoch else None


class _JobClock(TrainerCallback):
    """Times the `trainer.train()` after tuning: the job's realised net speed-up (`Tuning.finish`), once."""

    def __init__(self, tuning: Tuning) -> None:
        self.tuning, self.started, self.first_step = tuning, None, 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.started = time.perf_counter()
        self.first_step = state.global_step  # past the kept trials' steps when it resumed from them

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.started is not None and state.is_world_process_zero:
            self.tuning.finish(time.perf_counter() - self.started, state.global_step - self.first_step)
            self.started, self.tuning = None, None  # type: ignore[assignment]


def _resume_after(trainer: Trainer, progress: KeptProgress) -> None:
    """Make the next `trainer.train()` resume from the kept trials' checkpoint (unless it is given one), once;
    the checkpoint's folder goes when it returns or raises."""
    train = trainer.train

    def resumed(resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        trainer.__dict__.pop("train", None)  # the class's own method again
        assert progress.last is not None
        state = os.path.join(progress.last, "trainer_state.json")  # the last kept trial's batch, not the run's:
        saved = json.loads(Path(state).read_text())                # the resume would warn of the difference
        Path(state).write_text(json.dumps({**saved, "train_batch_size": trainer.args.train_batch_size}))
        try:
            return train(resume_from_checkpoint if resume_from_checkpoint is not None else progress.last,
                         *args, **kwargs)
        finally:
            progress.remove()

    trainer.train = resumed  # type: ignore[method-assign]


def _sample_batch(trainer: Trainer) -> Any:
    """Two examples through the trainer's own collator, for the cost model (None when that fails)."""
    try:
        loader = torch.utils.data.DataLoader(trainer.train_dataset, batch_size=2, collate_fn=trainer.data_collator)
        with no_trace():
            return next(iter(loader))
    except Exception:  # noqa: BLE001 - a sample only sharpens the cost model
        return None


class _Session:
    """One `tune_trainer` call: describes, searches (rank 0), runs trials on every rank, applies the winner."""

    def __init__(self, trainer: Trainer, options: AutoScoutOptions) -> None:
        self.trainer, self.options = trainer, options
        self.dist = trainer.args.world_size > 1 and torch.distributed.is_available() \
            and torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if self.dist else 1
        self.topology = Topology.from_env(world, torch.distributed.get_rank()) if self.dist else Topology()
        check_options(options, self.topology)
        # Every rank checks the options and builds the space (a bad option fails on all at once); the store
        # and the report are rank 0's.
        self.tuning = Tuning(options, describe(trainer, self.topology), decides=self.topology.rank == 0)
        self.progress = KeptProgress() if options.keep_progress else None

    def run(self) -> TuneResult:
        if not self.dist:
            result = self._decide(self._trial)
        else:  # rank 0 searches; every rank runs each trial (`_lockstep`)
            with Lockstep[TuneResult](self.topology, self._trial) as lockstep:
                result = lockstep.run(self._decide)
        self._apply(result.best_config)
        if self.progress is not None:
            if self.progress.last:
                _resume_after(self.trainer, self.progress)
            else:
                self.progress.remove()
        if self.topology.rank == 0 and not result.net.get("skipped"):
            self.trainer.add_callback(_JobClock(self.tuning))
        return result

    def _decide(self, trial: Any) -> TuneResult:
        result = self.tuning.run(trial)
        notes = {"recommended_launch": launch_hint(self.topology)} if self.topology.multi_node else {}
        self.tuning.conclude(result, applied=result.best_config, **notes)
        return result

    def _trial(self, request: TrialRequest) -> TrialOutcome:
        return run_trial(self.trainer, request, self.progress)

    # ---------------------------------------------------------- applying
    def _apply(self, config: Config | None) -> None:
        """The winner into `trainer.args` and a rebuilt Accelerator. Rebuilt even when nothing changes: the
        trials' Accelerators shared accelerate's global state, which must be the user's again."""
        trainer = self.trainer
        if config is not None:
            if "num_threads" in config:
                torch.set_num_threads(int(config["num_threads"]))
            split = self.tuning.run_description.split
            trainer.args = arguments_for(trainer.args, {k: v for k, v in config.items() if k != "num_threads"},
                                         split.for_config(config) if split else None)
        _rebuild_accelerator(trainer, config)


def tune_trainer(trainer: Trainer, options: AutoScoutOptions | None = None, **kwargs: Any) -> TuneResult:
    """Tune `trainer`'s system configuration, then apply the winner to it: the `trainer.train()` that
    follows runs with it.

    Args:
        trainer: a `transformers.Trainer` (or subclass) with a model and a training dataset.
        options: an `AutoScoutOptions`; or give its fields as keyword arguments
            (`tune_trainer(trainer, max_trials=8, report="autoscout")`).

    Returns the `TuneResult`: every trial, the chosen config (`best_config`, None when every trial
    failed and the trainer keeps the user's settings), and the speed-up over the user's own settings.

    Example:
        >>> tune_trainer(None, max_trials=0)
        Traceback (most recent call last):
        ...
        ValueError: max_trials must be >= 1 (an integer), got 0: give a positive number of trials or None for no limit
    """
    if options is not None and kwargs:
        raise ValueError("give either an AutoScoutOptions or keyword options, not both")
    options = options if options is not None else AutoScoutOptions(**kwargs)
    if not isinstance(trainer, Trainer):
        raise TypeError(f"tune_trainer needs a transformers.Trainer, got {type(trainer).__name__}")
    if trainer.train_dataset is None:
        raise ValueError("the trainer has no train_dataset: AutoScout times training steps; pass"
                         " Trainer(train_dataset=...)")
    if trainer.model is None:
        raise ValueError("the trainer has no model (model_init is not supported yet): pass Trainer(model=...)")
    spec = loop.launch_spec()
    if spec is not None:
        return _launched(trainer, spec)
    return _Session(trainer, options).run()


# ---------------------------------------------------------------- under `autoscout launch --autoscout`
class _StepMarker(TrainerCallback):
    """Marks each optimizer step for the launcher's trial (`autoscout_plugin.step`)."""

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        loop.step(samples=self.samples)


def _launched(trainer: Trainer, spec: dict[str, Any]) -> TuneResult:
    """The launcher owns the search: take its config (declaring the script-level knobs this Trainer
    reads, with the user's values as defaults) and, in a trial, mark the steps it times. Launcher-level
    knobs (process count, mixed precision, dynamo backend, threads) arrive as accelerate settings."""
    args = trainer.args
    micro = loop.knob("micro_batch_size", int(args.per_device_train_batch_size))
    accum = loop.knob("grad_accum", int(args.gradient_accumulation_steps))
    config: Config = {"num_workers": loop.knob("num_workers", int(args.dataloader_num_workers))}
    if getattr(trainer.model, "supports_gradient_checkpointing", False):
        config["activation_checkpointing"] = loop.knob("activation_checkpointing", bool(args.activation_checkpointing))
    if args.world_size > 1:
        config.update({k: loop.knob(k, v) for k, v in config_of(args).items() if k in DDP_KWARGS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.args = dataclasses.replace(arguments_for(args, config, None), per_device_train_batch_size=int(micro),
                                           gradient_accumulation_steps=int(accum))
    _rebuild_accelerator(trainer, config)
    if spec["mode"] == "trial":
        sample = _sample_batch(trainer)
        loop.describe(workload_from_module(trainer.model, global_batch=int(micro) * int(accum) * args.world_size,
                                           seq_len=sequence_length(sample) if sample is not None else None,
                                           example=sample).to_json())
        trainer.add_callback(_StepMarker(int(micro) * int(accum)))
    applied = {**config, "micro_batch_size": micro, "grad_accum": accum}
    return TuneResult(best_config=applied, stop_reason=f"set by autoscout launch ({spec['mode']})")


__all__ = ["ARG_OF", "KNOBS", "arguments_for", "check_evidence", "config_of", "describe", "run_trial",
           "tune_trainer"]
