"""How one Lightning trial runs and is timed: the trial tier of a config, re-running the user's
script (its command and environment), the probe that times optimizer steps inside a trial, and the
progress lines the user sees."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from autoscout_plugin.profiling import TrialOutcome, write_result
from autoscout_plugin.space import Config

from ._torch import peak_memory_mb, synchronize

TRIAL_ENV = "AUTOSCOUT_TRIAL"
"""Set in a subprocess trial: JSON `{"config": ..., "global_batch": N, "warmup": N, "measure": N}`."""
APPLY_ENV = "AUTOSCOUT_APPLY"
"""Set in a relaunched main run: JSON `{"config": ..., "global_batch": N}`."""

LAUNCH_KNOBS = ("strategy", "num_processes", "ddp_bucket_cap_mb")
_DIST_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
             "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def trial_tier(config: Config, current: Config) -> str:
    """`subprocess`, `copy` or `inplace`: the cheapest way to run `config` from the running `current`
    (a knob absent from `config` keeps its current value)."""
    if any(config[k] != current.get(k) for k in LAUNCH_KNOBS if k in config and k in current):
        return "subprocess"
    if config.get("compile", "off") != "off" or config.get("activation_checkpointing", False):
        return "copy"
    return "inplace"


# ---------------------------------------------------------------- where the knobs live


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def child_env(config: Config, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV and k not in (TRIAL_ENV, APPLY_ENV)}
    strategy = config.get("strategy", "single")
    env["PL_TRAINER_STRATEGY"] = "auto" if strategy == "single" else strategy
    env["PL_TRAINER_DEVICES"] = str(config.get("num_processes", 1))
    env["MASTER_PORT"] = str(_free_port())
    env.update(extra)
    if TRIAL_ENV in extra:  # a trial leaves nothing behind: no logger directories, checkpoints or bars
        env.update({"PL_TRAINER_LOGGER": "False", "PL_TRAINER_ENABLE_CHECKPOINTING": "False",
                    "PL_TRAINER_ENABLE_PROGRESS_BAR": "False", "PL_TRAINER_ENABLE_MODEL_SUMMARY": "False"})
    return env


# ---------------------------------------------------------------- timing probe


class Probe(Callback):
    """Times optimizer steps `warmup` .. `warmup + measure`; a non-finite loss ends the trial as `nan`.
    On a GPU the clock is read after the device has finished the step's queued work, and the peak
    memory is the device's (`peak_memory_mb`).

    With a `floor` (samples/s), a trial that is clearly losing is cut short: after its first timed step
    when its speed so far is under the floor, or during warm-up (unless `compiling`) when one step runs
    at under a third of it. It is recorded with the speed it showed, marked `cut_short`."""

    def __init__(self, warmup: int, measure: int, on_done: Any = None, floor: float | None = None,
                 compiling: bool = False) -> None:
        self.warmup, self.measure, self.on_done = warmup, measure, on_done
        self.floor, self.compiling = floor, compiling
        self.samples = 0
        self.start: tuple[float, int] | None = None
        self.outcome: TrialOutcome | None = None
        self._last_step = 0
        self._last: tuple[float, int] | None = None

    @staticmethod
    def _batch_size(batch: Any) -> int:
        if isinstance(batch, torch.Tensor):
            return int(batch.shape[0]) if batch.dim() else 1
        if isinstance(batch, dict):
            batch = list(batch.values())
        if isinstance(batch, (list, tuple)):
            for item in batch:
                size = Probe._batch_size(item)
                if size:
                    return size
        return 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.outcome is not None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self._finish(trainer, TrialOutcome(status="nan", error=f"non-finite loss at step {trainer.global_step}"))
            return
        self.samples += self._batch_size(batch)
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        synchronize(pl_module.device)
        now = time.perf_counter()
        last, self._last = self._last, (now, self.samples)
        if step <= self.warmup and self.floor and not self.compiling and last is not None:
            rate = (self.samples - last[1]) / max(now - last[0], 1e-9) * trainer.world_size
            if rate < self.floor / 3:
                self._finish(trainer, TrialOutcome(value=rate, peak_mem_mb=peak_memory_mb(pl_module.device),
                                                   metrics={"cut_short": 1.0}))
                return
        if step == self.warmup:
            self.start = (now, self.samples)
        elif self.start is not None:
            seconds = now - self.start[0]
            value = (self.samples - self.start[1]) / seconds * trainer.world_size
            done = step >= self.warmup + self.measure
            if done or (self.floor and value < self.floor):
                metrics = {"step_s": seconds / (step - self.warmup)} | ({} if done else {"cut_short": 1.0})
                self._finish(trainer, TrialOutcome(value=value, peak_mem_mb=peak_memory_mb(pl_module.device),
                                                   metrics=metrics))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        synchronize(pl_module.device)
        self._last = (time.perf_counter(), 0)
        if self.warmup == 0:
            self.start = self._last

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.outcome is None:
            self._finish(trainer, TrialOutcome(
                status="error", error=f"training ended after {trainer.global_step} optimizer steps, before the"
                                      f" {self.warmup + self.measure} a trial needs"))

    def _finish(self, trainer: Trainer, outcome: TrialOutcome) -> None:
        self.outcome = outcome.checked()
        trainer.should_stop = True
        if self.on_done is not None:
            self.on_done(trainer, self.outcome)


def report_and_exit(trainer: Trainer, outcome: TrialOutcome) -> None:
    """In a subprocess trial: rank 0 writes the result, then every rank leaves at once."""
    if trainer.is_global_zero:
        write_result(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
