"""Trial steps that count as training (`keep_progress`) under a real Hugging Face Trainer: the kept trials and
the main run together train what a run without tuning trains (the same samples in the same order, the same
weights up to floating-point summation order); a trial that changes the math or fails keeps nothing; runs
that cannot keep progress refuse the option before any trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from autoscout_plugin.integrations import transformers as hf
from autoscout_plugin.integrations.transformers import KeptProgress, run_trial, tune_trainer
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from autoscout_plugin.batch import BatchSplit
from autoscout_plugin.costmodel import Hardware
from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuning import RunDescription, TrialRequest, Tuning

pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py

SAMPLES, BATCH, STEPS = 64, 8, 40  # 8 steps an epoch: the job runs 5 epochs, each in its own order


class Numbered(torch.utils.data.Dataset):
    """Samples that carry their index, so the order a run trains them in can be read back."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(SAMPLES, 16, generator=gen)
        self.y = torch.randn(SAMPLES, 1, generator=gen)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "labels": self.y[i], "idx": torch.tensor(i)}


class Regressor(nn.Module):
    """No dropout, no batch norm: its training math is the samples' alone."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.extend(int(i) for i in idx)
        return {"loss": nn.functional.mse_loss(self.net(x), labels)}


def trainer(tmp_path: Path, name: str, **args: Any) -> Trainer:
    torch.manual_seed(0)
    arguments = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=BATCH, max_steps=STEPS,
                                  learning_rate=1e-2, report_to="none", save_strategy="no", logging_strategy="no",
                                  disable_tqdm=True, use_cpu=True, **args)
    return Trainer(model=Regressor(), args=arguments, train_dataset=Numbered())


def reference(tmp_path: Path) -> tuple[list[int], dict[str, torch.Tensor]]:
    """The samples, in order, and the weights of the same job without tuning."""
    plain = trainer(tmp_path, "plain")
    plain.train()
    return plain.model.seen, {k: v.clone() for k, v in plain.model.state_dict().items()}


def request(config: dict[str, Any], keep: bool) -> TrialRequest:
    split = BatchSplit.of(BATCH, micro_batch=int(config.get("micro_batch_size", BATCH)))
    return TrialRequest(config=config, fidelity=Fidelity.F2, warmup=1, measure=2, cut_off=None, timeout_s=600.0,
                        split=split, keep=keep)


def assert_same_training(run: Trainer, kept: int, ref: tuple[list[int], dict[str, torch.Tensor]]) -> None:
    seen, weights = ref
    assert run.state.global_step == STEPS
    assert run.model.seen == seen[kept * BATCH:]  # the main run goes on where the kept trials stopped
    for name, value in run.model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the adapter's chain of kept trials
def test_kept_trials_and_the_main_run_train_what_a_plain_run_trains(tmp_path: Path) -> None:
    ref = reference(tmp_path)
    user = trainer(tmp_path, "tuned")
    start = {k: v.clone() for k, v in user.model.state_dict().items()}
    progress = KeptProgress()
    steps = []
    # the user's config; a micro-batch split with accumulation; bf16 (rolled back); fewer threads
    for config, keep in (({}, True), ({"micro_batch_size": 4}, True), ({"precision": "bf16-mixed"}, False),
                         ({"num_threads": 1, "micro_batch_size": 2}, True)):
        outcome = run_trial(user, request(config, keep), progress)
        assert outcome.status == "ok", outcome.error
        steps.append(outcome.metrics.get("kept_steps", 0))
    assert steps == [3, 3, 0, 3]
    assert hf_logging.is_progress_bar_enabled()  # quiet while a kept trial saved, the user's setting again after
    assert progress.step == 9 and sorted(os.listdir(progress.dir)) == ["checkpoint-9"]
    for name, value in user.model.state_dict().items():  # trials leave the user's model alone until it trains
        assert torch.equal(value, start[name])
    hf._resume_after(user, progress)
    user.train()
    assert_same_training(user, 9, ref)
    assert not os.path.exists(progress.dir)  # the checkpoint went once the main run resumed from it
    assert "train" not in user.__dict__  # the trainer's own method again


def test_a_kept_trial_that_fails_keeps_nothing(tmp_path: Path) -> None:
    user = trainer(tmp_path, "failing")
    progress = KeptProgress()
    assert run_trial(user, request({}, True), progress).metrics["kept_steps"] == 3
    calls = {"n": 0}

    def broken(module: nn.Module, args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a fault in the second step")

    handle = user.model.register_forward_pre_hook(broken)  # the trial's deep copy carries the hook
    with pytest.raises(RuntimeError, match="second step"):
        run_trial(user, request({"micro_batch_size": 4}, True), progress)
    handle.remove()
    assert progress.step == 3 and os.listdir(progress.dir) == ["checkpoint-3"]
    assert run_trial(user, request({}, True), progress).metrics["kept_steps"] == 3
    assert progress.step == 6
    progress.remove()


def test_a_kept_trial_whose_setting_did_not_apply_still_reports_what_it_trained(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    user = trainer(tmp_path, "silent")
    progress = KeptProgress()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the thread count silently stays as it was
    outcome = run_trial(user, request({"num_threads": 1 if torch.get_num_threads() > 1 else 2}, True), progress)
    assert outcome.status == "error" and "setting not in effect" in (outcome.error or "")
    assert outcome.metrics["kept_steps"] == 3 and progress.step == 3  # the steps trained: the main run goes on after
    progress.remove()


# ---------------------------------------------------------------- end to end, through tune_trainer
def test_tune_trainer_with_keep_progress_trains_the_same_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = reference(tmp_path)
    user = trainer(tmp_path, "e2e")
    result = tune_trainer(user, keep_progress=True, include=["micro_batch_size", "num_threads"], max_trials=4,
                          warmup_steps=1, measure_steps=2, measure_precision=None, cut_below=None, progress=False,
                          patience=None, net_gain=False, store=str(tmp_path / "s.sqlite"))
    kept = result.net["kept_steps"]
    ok = [t for t in result.trials if t.ok]
    assert len(ok) >= 4 and kept == 3 * len(ok)  # every trial here keeps the math, the confirmation's too
    assert [t.metrics["kept_steps"] for t in ok] == [3] * len(ok)
    user.train()
    assert_same_training(user, kept, ref)


def test_the_estimate_and_the_realised_net_count_the_kept_steps(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    user = trainer(tmp_path, "net")
    result = tune_trainer(user, keep_progress=True, include=["micro_batch_size", "num_threads"], max_trials=2,
                          warmup_steps=1, measure_steps=2, measure_precision=None, progress=False,
                          store=str(tmp_path / "s.sqlite"))
    kept = result.net["kept_steps"]
    assert kept >= 3 and result.net["samples"] == (STEPS - kept) * BATCH  # what the main run has left
    user.train()
    err = capsys.readouterr().err
    assert f"{kept} of its steps trained by the trials" in err
    assert f"({STEPS - kept} steps after {kept} steps trained by the trials)" in err


def test_a_trial_that_changes_the_math_is_not_kept(tmp_path: Path) -> None:
    user = trainer(tmp_path, "math")
    tuning = Tuning(AutoScoutOptions(keep_progress=True, progress=False), hf.describe(user))
    assert tuning.keeps(tuning.baseline)
    assert not tuning.keeps({**tuning.baseline, "precision": "bf16-mixed"})
    assert tuning.request({**tuning.baseline, "micro_batch_size": 4}, Fidelity.F2).keep
    user.model.net.append(nn.BatchNorm1d(1))  # now a micro-batch split changes the statistics
    tuning = Tuning(AutoScoutOptions(keep_progress=True, progress=False), hf.describe(user))
    assert not tuning.keeps({**tuning.baseline, "micro_batch_size": 4})
    assert tuning.keeps({**tuning.baseline, "num_threads": 1})


# ---------------------------------------------------------------- refused where it cannot work
def test_keep_progress_is_refused_where_a_run_cannot_keep_steps(tmp_path: Path) -> None:
    run = RunDescription(current={"num_threads": 2}, knobs=("num_threads",), hardware=Hardware(kind="cpu", cores=2))
    with pytest.raises(ValueError, match=r"keep_progress=True: this run cannot count trial steps as training"
                                         r" \(its trials are always rolled back\); set keep_progress=False"):
        Tuning(AutoScoutOptions(keep_progress=True), run)
    skipping = trainer(tmp_path, "skip", ignore_data_skip=True)
    with pytest.raises(ValueError, match="ignore_data_skip=True"):
        tune_trainer(skipping, keep_progress=True)
    with pytest.raises(ValueError, match="keep_progress must be True or False, got 'yes'"):
        AutoScoutOptions(keep_progress="yes")


def test_the_lightning_callback_refuses_keep_progress_before_any_trial(tmp_path: Path) -> None:
    from autoscout_plugin.integrations.lightning import AutoScoutCallback
    from lightning.pytorch import Trainer as LightningTrainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    callback = AutoScoutCallback(keep_progress=True, progress=False, store=str(tmp_path / "s.sqlite"))
    fit = LightningTrainer(max_steps=50, callbacks=[callback], logger=False, enable_checkpointing=False,
                           enable_progress_bar=False, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="keep_progress=True: this script cannot count trial steps as training"
                                         r" \(Lightning resumes a fit stopped mid-epoch"):
        fit.fit(BoringModel())
    assert callback.result is None
