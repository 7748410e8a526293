"""The Hugging Face trial's probe: it times the measured optimizer steps, ends a losing or non-finite
trial early, gathers the evidence of each knob in effect, and keeps the ranks of a distributed trial
in step (they end a trial together, and a failure on one rank fails it on all)."""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import TrainerCallback

from autoscout_plugin.profiling import StepProbe, TrialOutcome

from . import _torch


class OtherRankFailed(RuntimeError):
    """Raised on a rank whose trial ran fine when another rank's trial raised (the whole trial fails)."""


_FAILED = 3  # a verdict above `HFProbe._agree`'s: a rank's trial raised


class HFProbe(TrainerCallback):
    """Feeds the core `StepProbe` (timing, cut-off) one call per optimizer step, ends the trial when its
    loss is not finite, and gathers evidence of the knobs in effect. On a GPU the clock is read once
    `device` has finished the step's queued work.

    Launched distributed, a trial that raises on one rank only must not leave the others waiting in a
    collective it never joins. The ranks meet after every forward (`checkpoint`) and after every
    optimizer step (`_agree`), both one all-reduce of a verdict; a rank whose trial raises joins the
    next such meeting with `_FAILED` (`announce`), and the others then raise `OtherRankFailed`. That
    holds for a failure in the forward, the optimizer step or a backward without gradient sync; a
    failure inside the backward that all-reduces gradients leaves the others in that all-reduce."""

    def __init__(self, warmup: int, measure: int, global_batch: int, cut_off: float | None, compiling: bool,
                 device: Any = "cpu") -> None:
        self.warmup, self.measure, self.global_batch, self.device = warmup, measure, global_batch, device
        self.core = StepProbe(warmup, measure, cut_off=cut_off, compiling=compiling, world=_torch.distributed_world(),
                              memory=lambda: _torch.peak_memory_mb(device))
        self.evidence: dict[str, Any] = {"rows": 0, "autocast": set(), "compiling": False, "threads": set()}
        self.nan = False
        self.phase = "setup"
        """Where the trial is: `setup` (until the model is wrapped), `forward`, `backward` (without
        gradient sync) or `backward-sync`, `step`. A failure in `setup` or `backward-sync` cannot be
        announced: the others are then in a broadcast or an all-reduce of their own."""
        self.announced = False

    @property
    def outcome(self) -> TrialOutcome | None:
        return self.core.outcome

    def on_train_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kw: Any) -> None:
        if train_dataloader is not None:
            self.evidence["num_workers"] = train_dataloader.num_workers
            self.evidence["pin_memory"] = bool(train_dataloader.pin_memory)
        _torch.synchronize(self.device)
        self.core.begin(time.perf_counter())
        self.phase = "forward"

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.phase = "step"

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.outcome is not None:
            return
        _torch.synchronize(self.device)
        now = time.perf_counter()
        # This rank's verdict (an outcome ends the trial); launched distributed, the ranks agree on one.
        outcome = self.core.nan(f"at step {state.global_step}") if self.nan else \
            self.core.step(self.global_batch / self.core.world, now)
        if self.core.world > 1:
            outcome = self._agree(outcome, state.global_step, now)
        if outcome is not None:
            control.should_training_stop = True

    def _agree(self, mine: TrialOutcome | None, step: int, now: float) -> TrialOutcome | None:
        """Launched distributed, every rank stops at the same step, or the one that goes on waits in
        a gradient all-reduce that no other rank joins. Each rank's clock and loss are its own, so the
        verdicts are reduced: the trial ends when any rank ends it, as `nan` when any rank saw one."""
        code = 0 if mine is None else (2 if mine.status == "nan" else 1)
        agreed = self._meet(code)
        if agreed == code:
            return mine
        if agreed == 2:
            return self.core.finish(TrialOutcome(status="nan", error=f"non-finite loss on another rank at step {step}"))
        timed = self.core.timed(now)  # another rank's clock ended it
        timed.metrics["cut_short"] = 1.0
        return self.core.finish(timed)

    def _meet(self, code: int) -> int:
        """One all-reduce (MAX) of this rank's verdict; raises `OtherRankFailed` when a rank failed."""
        agreed = _torch.all_reduce_max(code, self.device)
        if agreed >= _FAILED:
            self.announced = True
            raise OtherRankFailed(f"the trial failed on another rank (this rank: {self.phase}, step "
                                  f"{self.core.steps + 1})")
        return agreed

    def checkpoint(self, sync_backward: bool) -> None:
        """After a forward, launched distributed: the ranks learn whether any forward raised before any
        of them enters the backward's gradient all-reduce."""
        if _torch.distributed_world() > 1:
            self._meet(0)
        self.phase = "backward-sync" if sync_backward else "backward"

    def announce(self) -> None:
        """This rank's trial raised: join the others' next meeting with `_FAILED`, once, if it can be
        matched (see the class docstring). Once the ranks agreed on the outcome there is no meeting left."""
        if self.announced or self.outcome is not None or self.phase in ("setup", "backward-sync"):
            return
        if _torch.distributed_world() > 1:
            self.announced = True
            _torch.all_reduce_max(_FAILED, self.device)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.outcome is None:
            self.core.finish(TrialOutcome(status="error", error=f"training ended after {state.global_step} optimizer"
                                          f" steps, before the {self.warmup + self.measure} a trial needs"))

    # evidence, gathered inside the model's forward (autocast is entered by accelerate around it)
    def inner_hook(self, module: Any, args: Any, kwargs: Any) -> None:
        kind = torch.device(self.device).type  # the run's device: autocast is entered for it
        self.evidence["autocast"].add(str(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind)
                                      else "off")
        if torch.compiler.is_compiling():
            self.evidence["compiling"] = True
        self.evidence["threads"].add(torch.get_num_threads())

    def loss_seen(self, loss: Any, inputs: Any) -> None:
        rows = _rows(inputs)
        self.evidence["rows"] = max(self.evidence["rows"], rows)
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self.nan = True


def _rows(inputs: Any) -> int:
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    for item in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        if isinstance(item, torch.Tensor) and item.dim():
            return int(item.shape[0])
    return 0
