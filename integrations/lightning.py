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
- `subprocess`: strategy and process count are fixed when the Trainer is built, so the user's script
  is re-run in trial mode (`AUTOSCOUT_TRIAL`) with `PL_TRAINER_STRATEGY` / `PL_TRAINER_DEVICES`
  defaults; the callback inside the child times the steps, writes the result and exits.

What the user passed to `Trainer(...)` stays pinned: a strategy other than the single-device default,
more than one device, a precision other than `32-true`. A winner that needs another strategy or
process count re-runs the script with it (`AUTOSCOUT_APPLY`), unless `relaunch=False`, in which case
the report recommends the `Trainer(...)` arguments and the main fit runs with the best config that
applies in place.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from autoscout_plugin.costmodel import Hardware, Workload, measured_efficiency
from autoscout_plugin.options import AutoScoutOptions, default_store
from autoscout_plugin.profiling import TrialOutcome, run_subprocess_trial, write_result
from autoscout_plugin.report.html import write_report
from autoscout_plugin.report.result import TuneResult, format_config
from autoscout_plugin.space import Config, Space, SpaceError
from autoscout_plugin.space.builder import build_space
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuner import Tuner

from ._lightning_trial import (
    APPLY_ENV,
    TRIAL_ENV,
    Probe,
    child_env,
    report_and_exit,
    script_command,
    trial_tier,
)
from ._shared import Plan, Progress
from ._torch import (
    compile_children,
    enable_activation_checkpointing,
    machine,
    no_trace,
    release_memory,
    reset_peak_memory,
    sequence_length,
    supports_checkpointing,
    wall_clock_limit,
    workload_from_module,
)

_SAFE_PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")


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


# ---------------------------------------------------------------- the plan
@dataclass
class _Plan(Plan):
    """The shared plan, plus where the module's batch size and worker count live."""

    holders: dict[str, Any] = field(default_factory=dict)


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
        ValueError: max_trials must be >= 1 (got 0); give a positive number of trials or None for no limit
    """

    def __init__(self, options: AutoScoutOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise ValueError("give either an AutoScoutOptions or keyword options, not both")
        self.options = options if options is not None else AutoScoutOptions(**kwargs)
        self.result: TuneResult | None = None
        self.report: dict[str, Any] = {}
        self._handled = False
        self._best_so_far: float | None = None

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self._handled:
            return
        self._handled = True
        if os.environ.get(TRIAL_ENV):
            self._trial_mode(trainer, pl_module, json.loads(os.environ[TRIAL_ENV]))
            return
        if os.environ.get(APPLY_ENV):
            spec = json.loads(os.environ[APPLY_ENV])
            plan = self._plan(trainer, pl_module, check=False, global_batch=spec["global_batch"])
            self._apply(trainer, pl_module, plan, spec["config"])
            self.report = {"applied": spec["config"], "relaunched": True}
            if trainer.is_global_zero:
                print(f"AutoScout: relaunched with the tuned config: {format_config(spec['config'])}",
                      file=sys.stderr)
            return
        # Every rank checks the options and builds the space: a bad option fails on all ranks at once.
        plan = self._plan(trainer, pl_module)
        sample = self._sample_batch(trainer, pl_module)
        workload = workload_from_module(pl_module, global_batch=plan.global_batch,
                                        seq_len=sequence_length(sample) if sample is not None else None,
                                        example=sample)
        hardware = machine(trainer.strategy.root_device)
        space = self._space(plan, workload.to_json(), hardware.to_json())
        decision = None
        if trainer.world_size == 1:
            decision = self._decide(trainer, pl_module, plan, space, workload, hardware)
        else:
            if trainer.is_global_zero:
                try:
                    decision = self._decide(trainer, pl_module, plan, space, workload, hardware)
                except Exception as exc:  # noqa: BLE001 - every rank must hear of it, or the others hang
                    decision = _Decision(config=None, error=f"{type(exc).__name__}: {exc}")
            decision = trainer.strategy.broadcast(decision, src=0)
        assert decision is not None
        if decision.error:
            raise RuntimeError(f"AutoScout failed on rank 0: {decision.error}")
        self.report = decision.report
        if decision.relaunch is not None:
            self._relaunch(decision.relaunch, plan.global_batch)
        if decision.config is not None:
            self._apply(trainer, pl_module, plan, decision.config)
            self._log(trainer, decision.config)

    # ------------------------------------------------------------ describing the run
    def _plan(self, trainer: Trainer, pl_module: LightningModule, *, check: bool = True,
              global_batch: int | None = None) -> _Plan:
        opts = self.options
        datamodule = trainer.datamodule
        world = trainer.world_size
        single = isinstance(trainer.strategy, SingleDeviceStrategy) and world == 1
        current: Config = {
            "strategy": "single" if single else _strategy_name(trainer.strategy),
            "num_processes": world,
            "precision": str(trainer.precision),
            "compile": "off",
            "activation_checkpointing": False,
            "num_threads": torch.get_num_threads(),
        }
        pinned: dict[str, str] = {}
        holders: dict[str, Any] = {}
        for knob, attr in (("micro_batch_size", "batch_size"), ("num_workers", "num_workers")):
            holder = _attr_holder(pl_module, datamodule, attr)
            if holder is not None:
                holders[knob] = (holder, attr)
                current[knob] = _get_attr(holder, attr)
            elif check and opts.include and knob in opts.include:
                raise ValueError(f"cannot tune {knob}: neither the LightningModule nor the datamodule has a"
                                 f" `{attr}` attribute (or hparam) that its dataloader reads; add one or drop"
                                 f" {knob!r} from include")
        no_script = script_command() is None
        if not single:
            pinned["strategy"] = pinned["num_processes"] = f"Trainer(strategy={current['strategy']!r}, devices=...)"
        elif no_script:
            pinned["strategy"] = pinned["num_processes"] = "no script to re-run (notebook, interactive or pytest)"
        if "micro_batch_size" not in holders and "strategy" not in pinned:
            pinned["strategy"] = pinned["num_processes"] = (
                "no `batch_size` attribute to keep the global batch when the process count changes")
        if current["precision"] not in ("32-true", "32"):
            pinned["precision"] = f"Trainer(precision={current['precision']!r})"
        if not supports_checkpointing(pl_module):
            pinned["activation_checkpointing"] = "the module has no repeated blocks to checkpoint"
        for knob in (opts.include or ()) if check else ():
            if knob in pinned:
                raise ValueError(f"knob {knob!r} is listed in include but pinned by {pinned[knob]}; remove it"
                                 f" from include or from the Trainer arguments")
        accum = int(trainer.accumulate_grad_batches)
        batch = current.get("micro_batch_size")
        if global_batch is None:
            global_batch = int(batch) * accum * world if isinstance(batch, int) else accum * world
        if global_batch < 1:
            raise ValueError(f"batch_size={batch!r} gives a global batch of {global_batch}; it must be >= 1")
        tunable = list(opts.include) if opts.include is not None else [
            "strategy", "num_processes", "precision", "activation_checkpointing", "compile", "micro_batch_size",
            "num_threads", "num_workers", "ddp_bucket_cap_mb"]
        tunable = [k for k in tunable if k not in pinned and k not in opts.pin
                   and (k not in ("micro_batch_size", "num_workers") or k in holders)]
        if check and not tunable:
            raise ValueError("nothing to tune: every knob is pinned (" + ", ".join(
                f"{k} by {v}" for k, v in pinned.items()) + "); unpin a knob or remove the callback")
        return _Plan(current=current, pinned=pinned, tunable=tunable, global_batch=global_batch, world=world,
                     holders=holders)

    def _space(self, plan: _Plan, workload: dict[str, Any], hardware: dict[str, Any]) -> Space:
        pin = {k: plan.current[k] for k in plan.pinned if k in plan.current}
        if plan.current["strategy"] not in ("single", "ddp", "fsdp", "deepspeed"):
            # A strategy the catalogue does not name: fixed by the Trainer, outside the space.
            pin.pop("strategy", None)
            pin.pop("num_processes", None)
        pin.update(self.options.pin)
        include = list(plan.tunable)
        if "micro_batch_size" in plan.holders and "micro_batch_size" not in include:
            # In the space even when not tuned: its global-batch constraint keeps the training math
            # when the process count changes.
            pin.setdefault("micro_batch_size", plan.current["micro_batch_size"])
        current = {k: v for k, v in plan.current.items() if k in include or k in pin}
        strategies = ["single", "ddp"] if "strategy" in include else [pin.get("strategy", "single")]
        if strategies == ["single"] and "num_processes" in include:
            include.remove("num_processes")
        try:
            return build_space(workload, hardware, include=include, pin=pin, strategies=strategies,
                               current=current)
        except SpaceError as exc:
            raise ValueError(f"AutoScout cannot build the knob space for this run: {exc}") from exc

    # ------------------------------------------------------------ deciding (rank 0)
    def _decide(self, trainer: Trainer, pl_module: LightningModule, plan: _Plan, space: Space,
                workload: Workload, hardware: Hardware) -> _Decision:
        opts = self.options
        own = {**plan.current, **opts.pin}  # the user's config, with the pins they asked for
        baseline = space.canonical({k: v for k, v in own.items() if k in space})
        planned = None
        if opts.max_fraction is not None and trainer.max_steps and trainer.max_steps > 0:
            planned = float(trainer.max_steps * plan.global_batch)
        store_path = opts.store or default_store()
        Path(store_path).parent.mkdir(parents=True, exist_ok=True)
        tune_options = opts.tune_options(planned_samples=planned, store=store_path)
        progress = Progress(opts.max_trials, enabled=opts.progress)
        store = SQLiteStore(store_path)
        try:
            tuner = Tuner(space, lambda config, fidelity: self._profile(trainer, pl_module, plan, config, fidelity),
                          tune_options, workload=workload, hardware=hardware, baseline=baseline,
                          on_trial=progress.trial, store=store, efficiency=measured_efficiency(hardware))
            with no_trace():  # RNG and threads, whatever a trial does
                result = tuner.run()
        finally:
            store.close()
            progress.close()
        result.pinned = {k: plan.current.get(k, opts.pin.get(k)) for k in list(plan.pinned) + list(opts.pin)}
        self.result = result
        return self._conclude(plan, result)

    def _conclude(self, plan: _Plan, result: TuneResult) -> _Decision:
        opts = self.options
        relaunch = None
        config = result.best_config
        report: dict[str, Any] = {
            "pinned": {k: plan.pinned.get(k, "AutoScoutOptions.pin") for k in result.pinned},
            "tuned": plan.tunable, "reused": result.reused, "trials": result.n_trials,
            "tuning_s": round(result.tuning_s, 2), "speedup": result.speedup,
        }
        if config is None:
            warnings.warn("AutoScout: every trial failed; the main fit runs with your own settings. See the"
                          " report for each trial's error.", RuntimeWarning, stacklevel=2)
            report["applied"] = None
        elif trial_tier(config, plan.current) == "subprocess":
            if opts.relaunch and script_command() is not None:
                relaunch = config
                report["applied"] = config
                report["relaunched"] = True
            else:
                report["recommended"] = config
                report["recommended_trainer_args"] = self._trainer_args(config)
                in_place = self._best_in_place(plan, result)
                report["applied"] = in_place
                config = in_place
        else:
            report["applied"] = config
        if result.reused:
            print("AutoScout: reused the stored winner for this script and machine (0 trials).", file=sys.stderr)
        print(self._summary(result, report), file=sys.stderr)
        if opts.report:
            json_path, html_path = write_report(result, opts.report, notes=report)
            report["report_files"] = [str(json_path), str(html_path)]
        return _Decision(config=config, relaunch=relaunch, report=report)

    @staticmethod
    def _best_in_place(plan: _Plan, result: TuneResult) -> Config | None:
        ok = [t for t in result.trials
              if t.ok and t.value is not None and trial_tier(t.config, plan.current) != "subprocess"]
        return max(ok, key=lambda t: t.value or 0.0).config if ok else None

    @staticmethod
    def _trainer_args(config: Config) -> str:
        strategy = config.get("strategy", "single")
        args = [f'strategy="{"auto" if strategy == "single" else strategy}"',
                f"devices={config.get('num_processes', 1)}"]
        if "precision" in config:
            args.append(f'precision="{config["precision"]}"')
        return f"Trainer({', '.join(args)})"

    @staticmethod
    def _summary(result: TuneResult, report: dict[str, Any]) -> str:
        lines = ["AutoScout", result.table()]
        if report.get("pinned"):
            lines.append("pinned: " + ", ".join(f"{k} ({v})" for k, v in report["pinned"].items()))
        lines.append("tuned: " + ", ".join(report.get("tuned", [])))
        if report.get("recommended"):
            lines.append(f"recommended (relaunch is off): {report['recommended_trainer_args']}"
                         f" with {format_config(report['recommended'])}")
        applied = report.get("applied")
        lines.append("applied: " + (format_config(applied) if applied else "nothing (your own settings)")
                     + (" (relaunching the script)" if report.get("relaunched") else ""))
        return "\n".join(lines)

    def _sample_batch(self, trainer: Trainer, pl_module: LightningModule) -> Any:
        try:
            source = trainer.datamodule if trainer.datamodule is not None else pl_module
            loader = source.train_dataloader()
            with no_trace():
                return next(iter(loader))
        except Exception:  # noqa: BLE001 - a sample only sharpens the cost model
            return None

    # ------------------------------------------------------------ trials
    def _profile(self, trainer: Trainer, pl_module: LightningModule, plan: _Plan, config: Config,
                 fidelity: Fidelity) -> TrialOutcome:
        # A confirmation (F3) repeats trials, paired with the user's config, instead of lengthening them.
        warmup, measure = self.options.warmup_steps, self.options.measure_steps
        floor = None
        if fidelity == Fidelity.F2 and self.options.cut_below and self._best_so_far:
            floor = self.options.cut_below * self._best_so_far
        # Under a multi-process strategy every trial is a multi-process run of the script.
        tier = "subprocess" if plan.world > 1 else trial_tier(config, plan.current)
        if tier == "subprocess":
            command = script_command()
            if command is None:
                return TrialOutcome(status="invalid", cost_s=0.0, error="no script to re-run for this trial")
            spec = {"config": config, "global_batch": plan.global_batch, "warmup": warmup, "measure": measure,
                    "floor": floor}
            env = child_env({**plan.current, **config}, {TRIAL_ENV: json.dumps(spec)})
            outcome = run_subprocess_trial(command, timeout_s=self.options.trial_timeout_s, env=env)
        else:
            outcome = self._in_process(trainer, pl_module, plan, config, warmup, measure, copy_module=tier == "copy",
                                       floor=floor)
        if outcome.status == "ok" and outcome.value and fidelity == Fidelity.F2:
            self._best_so_far = max(self._best_so_far or 0.0, outcome.value)
        outcome.metrics = {**outcome.metrics, "tier": {"inplace": 0, "copy": 1, "subprocess": 2}[tier]}
        return outcome

    def _in_process(self, trainer: Trainer, pl_module: LightningModule, plan: _Plan, config: Config,
                    warmup: int, measure: int, *, copy_module: bool, floor: float | None = None) -> TrialOutcome:
        started = time.perf_counter()
        datamodule = trainer.datamodule
        keep = [pl_module] + ([datamodule] if datamodule is not None else [])
        quiet = logging.getLogger("lightning.pytorch")
        level = quiet.level
        loader = self._given_loader(trainer)
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
                wall_clock_limit(self.options.trial_timeout_s, "the trial"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.WARNING)
            try:
                module = copy.deepcopy(pl_module) if copy_module else pl_module
                dm = _copy_datamodule(datamodule) if copy_module else datamodule
                accum = self._set_loop_knobs(module, dm, plan, config)
                self._set_module_knobs(module, config)
                probe = Probe(warmup, measure, floor=floor, compiling=config.get("compile", "off") != "off")
                trial = Trainer(accelerator=accelerator, devices=devices,
                                precision=config.get("precision", plan.current["precision"]),
                                max_steps=warmup + measure, max_epochs=-1, accumulate_grad_batches=accum,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                                callbacks=[probe], default_root_dir=tmp)
                if dm is not None:
                    trial.fit(module, datamodule=dm)
                else:
                    trial.fit(module, train_dataloaders=loader)
            finally:
                quiet.setLevel(level)
                trial = module = dm = None  # the trial's optimizer state and graphs go before the next trial
                release_memory(device)
            outcome = probe.outcome or TrialOutcome(status="error", error="the trial ran no steps")
        outcome.cost_s = time.perf_counter() - started
        return outcome

    @staticmethod
    def _given_loader(trainer: Trainer) -> Any:
        source = getattr(trainer.fit_loop, "_data_source", None)
        instance = getattr(source, "instance", None)
        return None if isinstance(instance, (LightningModule, type(None))) or hasattr(instance, "train_dataloader") \
            else instance

    def _set_loop_knobs(self, pl_module: LightningModule, datamodule: Any, plan: _Plan, config: Config) -> int:
        """Threads, workers and micro-batch size; returns the gradient accumulation that keeps the
        global batch."""
        if "num_threads" in config:
            torch.set_num_threads(int(config["num_threads"]))
        accum = plan.global_batch // (int(plan.current.get("micro_batch_size", 1)) * plan.world) \
            if "micro_batch_size" in plan.current else 1
        for knob, (holder, attr) in plan.holders.items():
            holder = _attr_holder(pl_module, datamodule, attr) or holder
            if knob in config:
                _set_attr(holder, attr, config[knob])
        if "micro_batch_size" in config:
            world = int(config.get("num_processes", plan.world))
            accum = plan.global_batch // (int(config["micro_batch_size"]) * world)
        return max(accum, 1)

    @staticmethod
    def _set_module_knobs(pl_module: LightningModule, config: Config) -> None:
        if config.get("activation_checkpointing"):
            enable_activation_checkpointing(pl_module)
        if config.get("compile", "off") != "off":
            compile_children(pl_module, str(config["compile"]))

    # ------------------------------------------------------------ applying
    def _apply(self, trainer: Trainer, pl_module: LightningModule, plan: _Plan, config: Config) -> None:
        trainer.accumulate_grad_batches = self._set_loop_knobs(pl_module, trainer.datamodule, plan, config)
        precision = config.get("precision")
        if precision is not None and precision != str(trainer.precision):
            if precision not in _SAFE_PRECISIONS:
                raise ValueError(f"AutoScout cannot apply precision={precision!r} in place")
            trainer.strategy.precision_plugin = _precision_plugin(precision)
        if "ddp_bucket_cap_mb" in config and isinstance(trainer.strategy, DDPStrategy):
            trainer.strategy._ddp_kwargs["bucket_cap_mb"] = float(config["ddp_bucket_cap_mb"])
        self._set_module_knobs(pl_module, config)

    def _log(self, trainer: Trainer, config: Config) -> None:
        params = {f"autoscout/{k}": v for k, v in config.items()}
        params["autoscout/accumulate_grad_batches"] = trainer.accumulate_grad_batches
        if self.result is not None and self.result.speedup is not None:
            params["autoscout/speedup"] = round(self.result.speedup, 4)
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    def _relaunch(self, config: Config, global_batch: int) -> None:
        """Run the script again with `config` (the main fit happens there), then leave with its exit code."""
        command = script_command()
        assert command is not None
        env = child_env(config, {APPLY_ENV: json.dumps({"config": config, "global_batch": global_batch})})
        print(f"AutoScout: re-running {' '.join(command)} with {format_config(config)}", file=sys.stderr)
        code = subprocess.call(command, env=env)
        raise SystemExit(code)

    # ------------------------------------------------------------ inside a subprocess trial
    def _trial_mode(self, trainer: Trainer, pl_module: LightningModule, spec: dict[str, Any]) -> None:
        config = spec["config"]
        plan = self._plan(trainer, pl_module, check=False, global_batch=int(spec["global_batch"]))
        try:
            self._apply(trainer, pl_module, plan, config)
        except Exception as exc:  # noqa: BLE001 - reported as the trial's failure
            if trainer.is_global_zero:
                write_result(TrialOutcome(status="error", error=f"could not apply {config}: {exc}"[:300]))
            os._exit(1)
        # Nothing of the trial may persist: no logs, no checkpoints.
        trainer.loggers = []
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, Checkpoint)]
        trainer.fit_loop.epoch_loop.max_steps = int(spec["warmup"]) + int(spec["measure"])
        trainer.fit_loop.max_epochs = -1
        trainer.limit_val_batches = 0
        trainer.num_sanity_val_steps = 0
        trainer.callbacks.append(Probe(int(spec["warmup"]), int(spec["measure"]), on_done=report_and_exit,
                                        floor=spec.get("floor"), compiling=config.get("compile", "off") != "off"))


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


__all__ = ["APPLY_ENV", "TRIAL_ENV", "AutoScoutCallback", "AutoScoutOptions", "trial_tier"]
