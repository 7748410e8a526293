"""How one Lightning trial runs and is timed: the trial tier of a config, re-running the user's
script (its command and environment, the child protocol of `autoscout_plugin.loop`), and the callback
that feeds the core step probe inside a trial."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from autoscout_plugin.loop import LAUNCH_ENV
from autoscout_plugin.profiling import StepProbe, TrialOutcome, free_port
from autoscout_plugin.space import Config
from autoscout_plugin.space.catalogue import DDP_KWARGS

from ._lockstep import RankMeetings
from ._torch import peak_memory_mb, synchronize

RELAUNCH_KNOBS = ("strategy", "num_processes", *DDP_KWARGS)
"""Knobs fixed when the Trainer is built: a trial that changes one re-runs the script."""
_DIST_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
             "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def trial_tier(config: Config, current: Config) -> str:
    """`subprocess`, `copy` or `inplace`: the cheapest way to run `config` from the running `current`
    (a knob absent from `config` keeps its current value)."""
    if any(config[k] != current.get(k) for k in RELAUNCH_KNOBS if k in config and k in current):
        return "subprocess"
    if config.get("compile", "off") != "off" or config.get("activation_checkpointing", False):
        return "copy"
    return "inplace"


def script_command() -> list[str] | None:
    """The command that re-runs this script, or None where there is no script to re-run (a
    notebook, an interactive session, pytest)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None
    spec = getattr(main, "__spec__", None)
    where = f"{path} {getattr(spec, 'name', '')}"
    if any(tool in where for tool in ("pytest", "ipykernel", "pydevd", "_jb_", "<stdin>")):
        return None
    argv = list(getattr(sys, "orig_argv", []))[1:] or list(sys.argv)
    return [sys.executable, *argv]


def child_env(config: Config, spec: dict[str, Any]) -> dict[str, str]:
    """The environment of a re-run of the script with `config` (the child protocol's `spec`)."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV and k != LAUNCH_ENV}
    strategy = config.get("strategy", "single")
    env["PL_TRAINER_STRATEGY"] = "auto" if strategy == "single" else strategy
    env["PL_TRAINER_DEVICES"] = str(config.get("num_processes", 1))
    env["MASTER_PORT"] = str(free_port())
    env[LAUNCH_ENV] = json.dumps(spec)
    if spec["mode"] == "trial":  # a trial leaves nothing behind: no logger directories, checkpoints or bars
        env.update({"PL_TRAINER_LOGGER": "False", "PL_TRAINER_ENABLE_CHECKPOINTING": "False",
                    "PL_TRAINER_ENABLE_PROGRESS_BAR": "False", "PL_TRAINER_ENABLE_MODEL_SUMMARY": "False"})
    return env


# ---------------------------------------------------------------- timing probe


class LightningProbe(Callback):
    """Feeds the core `StepProbe` one call per optimizer step (the samples of the step's batches, the
    clock read after the device finished); a non-finite loss ends the trial as `nan`. A trial that
    ends before its steps are done is an error.

    With several processes the ranks meet after every forward (`on_before_backward`) and every optimizer
    step (`_lockstep.RankMeetings`): they end the trial at the same step, on the verdict of any rank (its
    clock, its loss), and a rank whose trial raises joins the next meeting from `on_exception`, so the
    others raise `OtherRankFailed` there instead of waiting in a gradient all-reduce it never joins."""

    def __init__(self, warmup: int, measure: int, on_done: Any = None, **timing: Any) -> None:
        """`timing`: `StepProbe`'s keywords (`TrialRequest.timing()`: cut-off, precision, compiling)."""
        self.warmup, self.measure, self.on_done = warmup, measure, on_done
        self.timing = timing
        self.core: StepProbe | None = None
        self.meetings: RankMeetings | None = None
        self._samples = 0
        self._last_step = 0
        self._nan = False

    @property
    def outcome(self) -> TrialOutcome | None:
        return self.core.outcome if self.core is not None else None

    @staticmethod
    def _batch_size(batch: Any) -> int:
        if isinstance(batch, torch.Tensor):
            return int(batch.shape[0]) if batch.dim() else 1
        if isinstance(batch, dict):
            batch = list(batch.values())
        if isinstance(batch, (list, tuple)):
            for item in batch:
                size = LightningProbe._batch_size(item)
                if size:
                    return size
        return 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.core = StepProbe(self.warmup, self.measure, world=trainer.world_size,
                              memory=lambda: peak_memory_mb(pl_module.device), **self.timing)
        self.meetings = RankMeetings(pl_module.device, trainer.world_size)
        synchronize(pl_module.device)
        self.core.begin(time.perf_counter())
        self.meetings.phase = "forward"

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if self.meetings is not None and self.outcome is None:
            sync = getattr(trainer.strategy.model, "require_backward_grad_sync", True)  # False under DDP's no_sync
            self.meetings.after_forward(self.core.steps + 1 if self.core else 1, sync_backward=bool(sync))

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.meetings is not None:
            self.meetings.phase = "step"

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self.meetings is None:
            return
        try:
            self.meetings.announce(finished=self.outcome is not None)
        except Exception:  # noqa: BLE001 - a peer gone for good: the trial's own error goes on, and is judged
            pass

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.core is None or self.core.outcome is not None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self._nan = True
            if trainer.world_size == 1:  # alone, at once; with others, at the step's meeting
                self._finish(trainer, self.core.nan(f"at step {trainer.global_step}"))
                return
        self._samples += self._batch_size(batch)
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        synchronize(pl_module.device)
        samples, self._samples = self._samples, 0
        now = time.perf_counter()
        outcome = self.core.nan(f"at step {trainer.global_step}") if self._nan else self.core.step(samples, now)
        if self.meetings is not None:
            outcome = self.meetings.agree(self.core, outcome, trainer.global_step, now)
        if outcome is not None:
            self._finish(trainer, outcome)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.core is not None and self.core.outcome is None:
            ended = self.core.ended()  # the fit stopped between the least and the most steps of its timing
            if ended is not None:
                self._finish(trainer, ended)
                return
            self._finish(trainer, self.core.finish(TrialOutcome(
                status="error", error=f"training ended after {trainer.global_step} optimizer steps, before the"
                                      f" {self.warmup + self.measure} a trial needs")))

    def _finish(self, trainer: Trainer, outcome: TrialOutcome) -> None:
        trainer.should_stop = True
        if self.on_done is not None:
            self.on_done(trainer, outcome)
