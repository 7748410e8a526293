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
from ._lockstep import OtherRankFailed, RankMeetings


class HFProbe(TrainerCallback):
    """Feeds the core `StepProbe` (timing, cut-off) one call per optimizer step, ends the trial when its
    loss is not finite, and gathers evidence of the knobs in effect. On a GPU the clock is read once
    `device` has finished the step's queued work.

    Launched distributed, a trial that raises on one rank only must not leave the others waiting in a
    collective it never joins: the ranks meet after every forward (`checkpoint`) and after every optimizer
    step (`on_step_end`), as `_lockstep.RankMeetings` describes; a rank whose trial raises joins the next
    meeting (`announce`), and the others then raise `OtherRankFailed`."""

    def __init__(self, warmup: int, measure: int, global_batch: int, *, device: Any = "cpu", keep: bool = False,
                 **timing: Any) -> None:
        """`timing`: `StepProbe`'s keywords (`TrialRequest.timing()`: cut-off, precision, compiling). `keep`:
        the trial's steps count as training (`TrialRequest.keep`): the Trainer saves a checkpoint at the step
        where the probe stops it."""
        self.warmup, self.measure, self.global_batch, self.device = warmup, measure, global_batch, device
        self.keep = keep
        self.core = StepProbe(warmup, measure, world=_torch.distributed_world(),
                              memory=lambda: _torch.peak_memory_mb(device), **timing)
        self.evidence: dict[str, Any] = {"rows": 0, "autocast": set(), "compiling": False, "threads": set()}
        self.nan = False
        self.meetings = RankMeetings(device, self.core.world)

    @property
    def phase(self) -> str:
        """Where the trial is (`RankMeetings.phase`)."""
        return self.meetings.phase

    @phase.setter
    def phase(self, value: str) -> None:
        self.meetings.phase = value

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
        outcome = self.meetings.agree(self.core, outcome, state.global_step, now)
        if outcome is not None:
            control.should_training_stop = True
            control.should_save = self.keep

    def checkpoint(self, sync_backward: bool) -> None:
        """After a forward, launched distributed: the ranks learn whether any forward raised before any
        of them enters the backward's gradient all-reduce."""
        self.meetings.after_forward(self.core.steps + 1, sync_backward=sync_backward)

    def announce(self) -> None:
        """This rank's trial raised: join the others' next meeting with the failure, once, if it can be
        matched (`RankMeetings.announce`)."""
        self.meetings.announce(finished=self.outcome is not None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.outcome is None and self.core.ended() is None:
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


__all__ = ["HFProbe", "OtherRankFailed"]
