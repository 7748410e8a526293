"""Lightning: `AutoScoutCallback` tunes the system configuration in `setup` and applies the winner
before the main fit, in the same command.

    trainer = Trainer(max_steps=2000, callbacks=[AutoScoutCallback(max_trials=8)])
    trainer.fit(model, datamodule)

How a trial runs depends on what it changes (`trial_tier`):
- `inplace`: threads, micro-batch size (gradient accumulation keeps the global batch), dataloader
  workers, autocast precision. A short Trainer runs the user's own module in this process; every
  tensor, attribute and RNG is put back afterwards.
- `copy`: `compile` and activation checkpointing rewrite the module, so the short Trainer runs a deep
  copy of it in this process.
- `subprocess`: strategy, process count and DDP arguments are fixed when the Trainer is built, so the
  user's script is re-run as a trial (the child protocol of `autoscout_plugin.loop`, mode `trial`) with
  `PL_TRAINER_STRATEGY` / `PL_TRAINER_DEVICES` defaults; the callback inside the child times the steps,
  writes the result and exits.

Under `strategy="ddp"` with several processes, on one node or several (`Trainer(num_nodes=2, ...)` under
torchrun), the trials run in lockstep instead (`_lockstep`): rank 0 searches, every rank runs each trial
in this process (a short DDP `Trainer` over the job's own process group, so the DDP arguments are tuned
in place too), the ranks end each trial at the same step, a trial that raises on one rank fails on all,
and a node that dies stops the others with an error naming it. The strategy and process count stay as
launched.

What the user passed to `Trainer(...)` stays pinned: a strategy other than the single-device default,
more than one device, a precision other than `32-true`. A winner that needs another strategy or
process count re-runs the script with it (mode `apply`), unless `relaunch=False`, in which case
the report recommends the `Trainer(...)` arguments and the main fit runs with the best config that
applies in place.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from autoscout_plugin.batch import BatchSplit
from autoscout_plugin.loop import launch_spec, spec_timing
from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.parallel import PORT, TrialJob
from autoscout_plugin.profiling import TrialOutcome, report_and_exit, run_subprocess_trial, write_result
from autoscout_plugin.profiling.deadline import wall_clock_limit
from autoscout_plugin.report.result import TuneResult, format_config
from autoscout_plugin.space import Config
from autoscout_plugin.space.catalogue import DDP_KWARGS
from autoscout_plugin.tuning import RunDescription, TrialFn, TrialRequest, Tuning

from . import _compat
from ._lightning_trial import LightningProbe, child_env, script_command, trial_tier
from ._lockstep import Lockstep, Topology, check_options, launch_hint
from ._torch import (
    compile_children,
    enable_activation_checkpointing,
    machine,
    no_trace,
    release_memory,
    reset_peak_memory,
    sequence_length,
    supports_checkpointing,
    workload_from_module,
)

KNOBS = ("strategy", "num_processes", "precision", "activation_checkpointing", "compile", "micro_batch_size",
         "num_threads", "num_workers", *DDP_KWARGS)
"""What the callback can apply, in catalogue names: what `include=None` tunes."""
_SAFE_PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
_NO_KEPT_PROGRESS = ("Lightning resumes a fit stopped mid-epoch at the epoch's first batch unless the dataloader is"
                     " resumable, so kept steps would train their samples twice; keep_progress is built for the"
                     " Hugging Face Trainer")
"""Why the callback does not count trial steps as training (`AutoScoutOptions.keep_progress`)."""


def _attr_holder(pl_module: LightningModule, datamodule: Any, name: str) -> Any:
    """The object whose attribute `name` the dataloaders read (module, its hparams, or datamodule)."""
    for holder in (pl_module, datamodule):
        if holder is None:
            continue
        if name in getattr(holder, "__dict__", {}) or isinstance(getattr(type(holder), name, None), property):
            return holder
        hparams = getattr(holder, "hparams", None)
        if hparams is not None and name in hparams:
            return hparams
    return None


def _get_attr(holder: Any, name: str) -> Any:
    return holder[name] if isinstance(holder, dict) else getattr(holder, name)


def _set_attr(holder: Any, name: str, value: Any) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)


def _strategy_name(strategy: Any) -> str:
    """The catalogue name of a Lightning strategy; its class name when the catalogue has none."""
    names = {"DDPStrategy": "ddp", "FSDPStrategy": "fsdp", "ModelParallelStrategy": "fsdp",
             "DeepSpeedStrategy": "deepspeed", "SingleDeviceStrategy": "single"}
    for cls in type(strategy).__mro__:
        if cls.__name__ in names:
            return names[cls.__name__]
    return type(strategy).__name__


def _precision_plugin(precision: str) -> Precision:
    if precision in ("32-true", "32"):
        return Precision()
    return MixedPrecision(precision=precision, device="cpu" if not torch.cuda.is_available() else "cuda")


# ---------------------------------------------------------------- the description of the run
@dataclass
class _Run:
    """What the callback knows of the run: the user's config, where the module's batch size and worker
    count live (`holders`: knob -> (object, attribute)), what is pinned or unavailable and why."""

    current: Config
    holders: dict[str, tuple[Any, str]] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    accum: int = 1
    world: int = 1
    topology: Topology = field(default_factory=Topology)
    lockstep: bool = False
    """Trials run on every rank in this process (DDP with several processes), not as re-runs of the script."""

    def split(self, global_batch: int | None = None, config: Config | None = None) -> BatchSplit | None:
        """The batch split of the user's run (`global_batch` None), or of `config` keeping `global_batch`;
        None without a `batch_size` attribute to change."""
        if "micro_batch_size" not in self.holders:
            return None
        micro = int(self.current["micro_batch_size"])
        if global_batch is None:
            return BatchSplit(micro * self.accum * self.world, micro, self.accum, self.world)
        config = config or {}
        return BatchSplit.of(global_batch, micro_batch=int(config.get("micro_batch_size", micro)),
                             processes=int(config.get("num_processes", self.world)))


@dataclass
class _Decision:
    config: Config | None
    """What to apply in this process (None: keep the user's settings)."""
    relaunch: Config | None = None
    """A winner that needs a re-run with another strategy or process count."""
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Rank 0 failed to decide (raised on every rank)."""


class AutoScoutCallback(Callback):
    """Tune the system configuration before the main fit, then apply the winner.

    Args:
        options: an `AutoScoutOptions`; or give its fields as keyword arguments
            (`AutoScoutCallback(max_trials=8, report="autoscout")`).

    Example:
        >>> AutoScoutCallback(max_trials=0)
        Traceback (most recent call last):
        ...
        ValueError: max_trials must be >= 1 (an integer), got 0: give a positive number of trials or None for no limit
    """

    def __init__(self, options: AutoScoutOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise ValueError("give either an AutoScoutOptions or keyword options, not both")
        self.options = options if options is not None else AutoScoutOptions(**kwargs)
        self.result: TuneResult | None = None
        self.report: dict[str, Any] = {}
        self._handled = False
        self._tuning: Tuning | None = None
        """This process's tuning flow, once it decided: the main fit's time is its realised net gain."""
        self._fit_started: float | None = None

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self._handled:
            return
        self._handled = True
        run = self._run(trainer, pl_module)
        spec = launch_spec()
        if spec is not None:  # a child of a tuning run: a trial, or the main fit with the winner
            config = spec["config"]
            split = run.split(spec["global_batch"], config) if spec["global_batch"] else None
            if spec["mode"] == "trial":
                self._trial_mode(trainer, pl_module, run, config, split, spec)
                return
            self._apply(trainer, pl_module, run, config, split)
            self.report = {"applied": config, "relaunched": True}
            if trainer.is_global_zero:
                print(f"AutoScout: relaunched with the tuned config: {format_config(config)}", file=sys.stderr)
            return
        # Every rank checks the options and builds the space: a bad option fails on all ranks at once.
        check_options(self.options, run.topology)
        tuning = Tuning(self.options, self._describe(trainer, pl_module, run), decides=trainer.is_global_zero)
        decision = None

        def trial(request: TrialRequest) -> TrialOutcome:
            return self._trial(trainer, pl_module, run, request)

        if trainer.world_size == 1:
            decision = self._decide(trainer, pl_module, run, tuning, trial)
        elif run.lockstep:  # rank 0 searches, every rank runs each trial
            with Lockstep[_Decision](run.topology, trial) as lockstep:
                decision = lockstep.run(lambda each_rank: self._decide(trainer, pl_module, run, tuning, each_rank))
        else:  # rank 0 searches with re-runs of the script
            if trainer.is_global_zero:
                try:
                    decision = self._decide(trainer, pl_module, run, tuning, trial)
                except Exception as exc:  # noqa: BLE001 - every rank must hear of it, or the others hang
                    decision = _Decision(config=None, error=f"{type(exc).__name__}: {exc}")
            decision = trainer.strategy.broadcast(decision, src=0)
        assert decision is not None
        if decision.error:
            raise RuntimeError(f"AutoScout failed on rank 0: {decision.error}")
        self.report = decision.report
        if trainer.is_global_zero and self.result is not None and not self.result.net.get("skipped"):
            self._tuning = tuning
        split = run.split()
        if decision.relaunch is not None:
            self._relaunch(decision.relaunch, split.global_batch if split else None)
        if decision.config is not None:
            self._apply(trainer, pl_module, run, decision.config,
                        split.for_config(decision.config) if split else None)
            self._log(trainer, decision.config)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._tuning is not None:
            self._fit_started = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._tuning is not None and self._fit_started is not None:
            self._tuning.finish(time.perf_counter() - self._fit_started, int(trainer.global_step))  # into the report
            self._tuning = self._fit_started = None

    # ------------------------------------------------------------ describing the run
    @staticmethod
    def _run(trainer: Trainer, pl_module: LightningModule) -> _Run:
        world = trainer.world_size
        single = isinstance(trainer.strategy, SingleDeviceStrategy) and world == 1
        topology = Topology(world=world, rank=trainer.global_rank, nodes=trainer.num_nodes,
                            node_rank=trainer.node_rank, per_node=trainer.num_devices)
        if topology.multi_node and not isinstance(trainer.strategy, DDPStrategy):
            raise ValueError(f"AutoScout tunes a Lightning job on several nodes under strategy='ddp' only; this one"
                             f" runs {type(trainer.strategy).__name__} on {topology}: use Trainer(strategy='ddp'),"
                             " or remove the AutoScoutCallback")
        run = _Run(current={"strategy": "single" if single else _strategy_name(trainer.strategy),
                            "num_processes": topology.per_node if topology.multi_node else world,
                            "precision": str(trainer.precision), "compile": "off",
                            "activation_checkpointing": False, "num_threads": torch.get_num_threads()},
                   accum=int(trainer.accumulate_grad_batches), world=world, topology=topology,
                   lockstep=world > 1 and isinstance(trainer.strategy, DDPStrategy))
        if topology.multi_node:
            run.current["num_nodes"] = topology.nodes
        for knob, attr in (("micro_batch_size", "batch_size"), ("num_workers", "num_workers")):
            holder = _attr_holder(pl_module, trainer.datamodule, attr)
            if holder is not None:
                run.holders[knob] = (holder, attr)
                run.current[knob] = _get_attr(holder, attr)
            else:
                run.unavailable[knob] = (f"neither the LightningModule nor the datamodule has a `{attr}` attribute"
                                         " (or hparam) that its dataloader reads (add one)")
        process_knobs = ("strategy", "num_processes")
        if topology.multi_node:
            why = (f"the launch: {topology} (Trainer(strategy={run.current['strategy']!r}, num_nodes="
                   f"{topology.nodes}, devices={topology.per_node}))")
            run.pinned.update({"strategy": why, "num_processes": why})
        elif not single:
            why = f"Trainer(strategy={run.current['strategy']!r}, devices=...)"
            run.pinned.update({"strategy": why, "num_processes": why})
        elif script_command() is None:
            run.pinned.update(dict.fromkeys(process_knobs, "no script to re-run (notebook, interactive or pytest)"))
        if "micro_batch_size" not in run.holders and "strategy" not in run.pinned:
            run.pinned.update(dict.fromkeys(process_knobs, "no `batch_size` attribute to keep the global batch when"
                                                           " the process count changes"))
        if run.current["precision"] not in ("32-true", "32"):
            run.pinned["precision"] = f"Trainer(precision={run.current['precision']!r})"
        if not supports_checkpointing(pl_module):
            run.pinned["activation_checkpointing"] = "the module has no repeated blocks to checkpoint"
        return run

    def _describe(self, trainer: Trainer, pl_module: LightningModule, run: _Run) -> RunDescription:
        split = run.split()
        global_batch = split.global_batch if split else run.accum * run.world
        if global_batch < 1:
            raise ValueError(f"batch_size={run.current.get('micro_batch_size')!r} gives a global batch of"
                             f" {global_batch}; it must be >= 1")
        sample = self._sample_batch(trainer, pl_module)
        workload = workload_from_module(pl_module, global_batch=global_batch,
                                        seq_len=sequence_length(sample) if sample is not None else None,
                                        example=sample)
        # On several nodes the process knobs stay out of the space: `num_processes` is per node there, and
        # threads share one node's cores among that node's processes.
        fixed = {k: run.current[k] for k in run.pinned if k in run.current
                 and not (run.topology.multi_node and k in ("strategy", "num_processes"))}
        if "micro_batch_size" in run.holders:
            # In the space even when not tuned: its global-batch constraint keeps the training math
            # when the process count changes.
            fixed["micro_batch_size"] = run.current["micro_batch_size"]
        steps = _planned_steps(trainer, pl_module, run)
        return RunDescription(current=run.current, knobs=KNOBS, hardware=machine(trainer.strategy.root_device),
                              workload=workload, pinned=run.pinned, unavailable=run.unavailable, fixed=fixed,
                              split=split, strategies=("single", "ddp"), planned_steps=steps,
                              subject="this script", main_run="the main fit",
                              runs_jobs=script_command() is not None and not run.topology.multi_node,
                              progress_unavailable=_NO_KEPT_PROGRESS)

    # ------------------------------------------------------------ deciding (rank 0)
    def _decide(self, trainer: Trainer, pl_module: LightningModule, run: _Run, tuning: Tuning,
                trial: TrialFn) -> _Decision:
        gpu = trainer.strategy.root_device.type == "cuda"
        result = self.result = tuning.run(trial, isolate=no_trace,  # RNG and threads, whatever a trial does
                                          job=lambda request: self._job(run, request, gpu=gpu))
        config, relaunch = result.best_config, None
        notes: dict[str, Any] = {}
        if run.topology.multi_node:
            notes["recommended_launch"] = launch_hint(run.topology)
        if config is not None and trial_tier(config, run.current) == "subprocess":
            if self.options.relaunch and script_command() is not None:
                relaunch, notes["relaunched"] = config, True
            else:
                notes["recommended"], notes["recommended_args"] = config, _trainer_args(config)
                in_place = [t for t in result.trials if t.ok and trial_tier(t.config, run.current) != "subprocess"]
                config = max(in_place, key=lambda t: t.value or 0.0).config if in_place else None
        return _Decision(config=config, relaunch=relaunch, report=tuning.conclude(result, applied=config, **notes))

    def _sample_batch(self, trainer: Trainer, pl_module: LightningModule) -> Any:
        try:
            source = trainer.datamodule if trainer.datamodule is not None else pl_module
            loader = source.train_dataloader()
            with no_trace():
                return next(iter(loader))
        except Exception:  # noqa: BLE001 - a sample only sharpens the cost model
            return None

    # ------------------------------------------------------------ trials
    def _trial(self, trainer: Trainer, pl_module: LightningModule, run: _Run, request: TrialRequest) -> TrialOutcome:
        if run.lockstep:  # every rank runs it in this process; the DDP arguments apply to the trial's wrapper
            tier = "copy" if request.compiling or request.config.get("activation_checkpointing") else "inplace"
        else:  # under another multi-process strategy every trial is a multi-process run of the script
            tier = "subprocess" if run.world > 1 else trial_tier(request.config, run.current)
        if tier == "subprocess":
            command = script_command()
            if command is None:
                return TrialOutcome(status="invalid", cost_s=0.0, error="no script to re-run for this trial")
            env = child_env({**run.current, **request.config}, request.spec())
            outcome = run_subprocess_trial(command, timeout_s=request.timeout_s, env=env)
        else:
            outcome = self._in_process(trainer, pl_module, run, request, copy_module=tier == "copy")
        outcome.metrics = {**outcome.metrics, "tier": {"inplace": 0, "copy": 1, "subprocess": 2}[tier]}
        return outcome

    @staticmethod
    def _job(run: _Run, request: TrialRequest, *, gpu: bool) -> TrialJob | TrialOutcome:
        """A trial as a job for parallel trials (`AutoScoutOptions(parallel=K)`): a re-run of the script in
        trial mode, as the subprocess tier runs it, on whichever process or node the executor picks."""
        command = script_command()
        if command is None:
            return TrialOutcome(status="invalid", cost_s=0.0, error="no script to re-run for this trial")
        config = {**run.current, **request.config}
        env = child_env(config, request.spec())
        added = {k: v for k, v in env.items() if os.environ.get(k) != v}
        added["MASTER_PORT"] = PORT  # free on the node that runs it
        processes = int(config.get("num_processes", 1))
        return TrialJob(command=tuple(command), env=added, timeout_s=request.timeout_s,
                        cpus=max(1, processes * int(config.get("num_threads", 1))),
                        gpus=processes if gpu else 0,
                        label=format_config(request.config))

    def _in_process(self, trainer: Trainer, pl_module: LightningModule, run: _Run, request: TrialRequest, *,
                    copy_module: bool) -> TrialOutcome:
        started = time.perf_counter()
        config, datamodule = request.config, trainer.datamodule
        keep = [pl_module] + ([datamodule] if datamodule is not None else [])
        quiet = logging.getLogger("lightning.pytorch")
        level = quiet.level
        loader = _compat.given_train_loader(trainer)
        # The trial runs on the device the user's run uses (a GPU index stays the same GPU).
        device = trainer.strategy.root_device
        accelerator = "cpu" if isinstance(trainer.accelerator, CPUAccelerator) else (
            device.type if device.type in ("cuda", "mps") else "auto")
        devices: Any = [device.index] if device.type == "cuda" and device.index is not None else 1
        release_memory(device)  # what an earlier (failed) trial left cached would count in this one's peak
        reset_peak_memory(device)
        trial = module = dm = None
        # Exceptions propagate: the tuner records them as the trial's failure (oom, timeout, error).
        with no_trace(*keep), tempfile.TemporaryDirectory(prefix="autoscout-") as tmp, \
                wall_clock_limit(request.timeout_s, "the trial"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.WARNING)
            try:
                module = copy.deepcopy(pl_module) if copy_module else pl_module
                dm = _copy_datamodule(datamodule) if copy_module else datamodule
                _set_loop_knobs(module, dm, run, config)
                _set_module_knobs(module, config)
                probe = LightningProbe(request.warmup, request.measure, **request.timing())
                spread: dict[str, Any] = {"devices": devices}
                if run.lockstep:
                    spread = _lockstep_strategy(trainer, config)
                trial = Trainer(accelerator=accelerator, **spread,
                                precision=config.get("precision", run.current["precision"]),
                                max_steps=request.steps, max_epochs=-1,
                                accumulate_grad_batches=request.split.grad_accum if request.split else run.accum,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                                callbacks=[probe], default_root_dir=tmp)
                if run.lockstep:
                    _compat.without_launcher(trial.strategy)  # the processes run already
                if dm is not None:
                    trial.fit(module, datamodule=dm)
                else:
                    trial.fit(module, train_dataloaders=loader)
            finally:
                quiet.setLevel(level)
                trial = module = dm = None  # the trial's optimizer state and graphs go before the next trial
                if run.lockstep:
                    gc.collect()  # the trial's DDP reducer, whose hooks sit on the user's parameters
                release_memory(device)
            outcome = probe.outcome or TrialOutcome(status="error", error="the trial ran no steps")
        outcome.cost_s = time.perf_counter() - started
        return outcome

    # ------------------------------------------------------------ applying
    @staticmethod
    def _apply(trainer: Trainer, pl_module: LightningModule, run: _Run, config: Config,
               split: BatchSplit | None) -> None:
        _set_loop_knobs(pl_module, trainer.datamodule, run, config)
        if split is not None:
            trainer.accumulate_grad_batches = split.grad_accum
        precision = config.get("precision")
        if precision is not None and precision != str(trainer.precision):
            if precision not in _SAFE_PRECISIONS:
                raise ValueError(f"AutoScout cannot apply precision={precision!r} in place")
            trainer.strategy.precision_plugin = _precision_plugin(precision)
        if isinstance(trainer.strategy, DDPStrategy):
            kwargs = _compat.ddp_kwargs(trainer.strategy)
            kwargs.update({arg: config[knob] for knob, arg in DDP_KWARGS.items() if knob in config})
        _set_module_knobs(pl_module, config)

    def _log(self, trainer: Trainer, config: Config) -> None:
        params = {f"autoscout/{k}": v for k, v in config.items()}
        params["autoscout/accumulate_grad_batches"] = trainer.accumulate_grad_batches
        if self.result is not None and self.result.speedup is not None:
            params["autoscout/speedup"] = round(self.result.speedup, 4)
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    def _relaunch(self, config: Config, global_batch: int | None) -> None:
        """Run the script again with `config` (the main fit happens there), then leave with its exit code."""
        command = script_command()
        assert command is not None
        spec = {"mode": "apply", "config": config, "warmup": 0, "measure": 0, "cut_off": None,
                "global_batch": global_batch}
        print(f"AutoScout: re-running {' '.join(command)} with {format_config(config)}", file=sys.stderr)
        code = subprocess.call(command, env=child_env(config, spec))
        raise SystemExit(code)

    # ------------------------------------------------------------ inside a subprocess trial
    def _trial_mode(self, trainer: Trainer, pl_module: LightningModule, run: _Run, config: Config,
                    split: BatchSplit | None, spec: dict[str, Any]) -> None:
        try:
            self._apply(trainer, pl_module, run, config, split)
        except Exception as exc:  # noqa: BLE001 - reported as the trial's failure
            if trainer.is_global_zero:
                write_result(TrialOutcome(status="error", error=f"could not apply {config}: {exc}"[:300]))
            os._exit(1)
        # Nothing of the trial may persist: no logs, no checkpoints.
        trainer.loggers = []
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, Checkpoint)]
        timing = spec_timing(spec)
        trainer.fit_loop.epoch_loop.max_steps = int(spec["warmup"]) + timing.pop("most")
        trainer.fit_loop.max_epochs = -1
        trainer.limit_val_batches = 0
        trainer.num_sanity_val_steps = 0
        trainer.callbacks.append(LightningProbe(
            int(spec["warmup"]), int(spec["measure"]), compiling=config.get("compile", "off") != "off",
            on_done=lambda t, outcome: report_and_exit(outcome, rank_zero=t.is_global_zero), **timing))


def _planned_steps(trainer: Trainer, pl_module: LightningModule, run: _Run) -> int | None:
    """Optimizer steps of the main fit: `max_steps`, else `max_epochs` x the batches of one epoch (its
    dataloader's length, this process's share, `limit_train_batches` applied) over the accumulation; None
    when neither bounds the fit or the loader has no length. (`trainer.estimated_stepping_batches` would set
    up the fit's dataloader now, with the user's batch size, before the winner's is applied.)"""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    epochs = trainer.max_epochs
    if not epochs or epochs < 0:
        return None
    try:
        source = trainer.datamodule if trainer.datamodule is not None else pl_module
        batches = -(-len(source.train_dataloader()) // max(run.world, 1))  # a DistributedSampler's share
    except Exception:  # noqa: BLE001 - no length (a stream) or no loader to ask: unknown
        return None
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    per_epoch = -(-batches // max(run.accum, 1))
    return int(epochs * per_epoch) or None


def _lockstep_strategy(trainer: Trainer, config: Config) -> dict[str, Any]:
    """The `Trainer(...)` arguments of a trial that every rank runs in lockstep: DDP over the job's own
    process group (already there: the launcher is dropped and nothing is initialised again), on the user's
    nodes and devices, with the user's DDP arguments and the config's."""
    user = trainer.strategy
    assert isinstance(user, DDPStrategy)
    kwargs = {**_compat.ddp_kwargs(user), **{arg: config[knob] for knob, arg in DDP_KWARGS.items() if knob in config}}
    strategy = DDPStrategy(cluster_environment=copy.copy(user.cluster_environment),
                           process_group_backend=user.process_group_backend, **kwargs)
    devices: Any = trainer.num_devices if user.root_device.type == "cpu" else trainer.device_ids
    return {"strategy": strategy, "num_nodes": trainer.num_nodes, "devices": devices}


def _set_loop_knobs(pl_module: LightningModule, datamodule: Any, run: _Run, config: Config) -> None:
    """Threads, workers and micro-batch size (the accumulation is the batch split's)."""
    if "num_threads" in config:
        torch.set_num_threads(int(config["num_threads"]))
    for knob, (holder, attr) in run.holders.items():
        if knob in config:
            _set_attr(_attr_holder(pl_module, datamodule, attr) or holder, attr, config[knob])


def _set_module_knobs(pl_module: LightningModule, config: Config) -> None:
    if config.get("activation_checkpointing"):
        enable_activation_checkpointing(pl_module)
    if config.get("compile", "off") != "off":
        compile_children(pl_module, str(config["compile"]))


def _trainer_args(config: Config) -> str:
    """The `Trainer(...)` arguments that run `config`'s strategy, process count and precision."""
    strategy = config.get("strategy", "single")
    args = [f'strategy="{"auto" if strategy == "single" else strategy}"', f"devices={config.get('num_processes', 1)}"]
    if "precision" in config:
        args.append(f'precision="{config["precision"]}"')
    return f"Trainer({', '.join(args)})"


def _copy_datamodule(datamodule: Any) -> Any:
    """A deep copy of a datamodule without copying the Trainer it points to."""
    if datamodule is None:
        return None
    trainer = getattr(datamodule, "trainer", None)
    datamodule.trainer = None
    try:
        return copy.deepcopy(datamodule)
    finally:
        datamodule.trainer = trainer


__all__ = ["KNOBS", "AutoScoutCallback", "AutoScoutOptions", "trial_tier"]
