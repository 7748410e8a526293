"""A model that torch.compile cannot trace, under a real Lightning Trainer with AutoScoutCallback: the
compile trial fails with a real dynamo error, is classified `unsupported`, compile is excluded after
that one failure, the main fit runs, and a later study of the same model on this machine never pays
for it again (the exclusion comes from the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations._torch import workload_from_module
from torch.utils.data import DataLoader

from autoscout_plugin import AutoScoutCallback
from benchmarks.workloads import RecurrentLM
from examples.lightning_gpt2 import SyntheticTokens

pytestmark = pytest.mark.usefixtures("isolated_run")  # tests/integrations/conftest.py

VOCAB, SEQ = 128, 16


class RecurrentModule(pl.LightningModule):
    """A minGRU language model whose scan is a custom operator without a fake kernel."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.model = RecurrentLM(VOCAB, 32, 2)
        self.batch_size = batch_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        logits = self(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)

    def train_dataloader(self) -> Any:
        return DataLoader(SyntheticTokens(64, SEQ + 1, VOCAB), batch_size=self.batch_size)


def fit(include: tuple[str, ...], report: Path) -> AutoScoutCallback:
    pl.seed_everything(0, verbose=False)
    callback = AutoScoutCallback(include=include, max_trials=4, patience=None, warmup_steps=1, measure_steps=2,
                                 progress=False, report=str(report), net_gain=False)  # a 3-step fit, tuned anyway
    trainer = pl.Trainer(max_steps=3, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(RecurrentModule())
    assert trainer.global_step == 3  # the main fit ran to its end
    return callback


def test_the_cost_model_says_it_does_not_describe_a_model_with_custom_operators() -> None:
    module = RecurrentModule()
    workload = workload_from_module(module, global_batch=8, example=torch.randint(0, VOCAB, (2, SEQ)))
    assert workload.family == "custom" and workload.layers  # its Linear layers are still read
    lstm = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.LSTM(8, 8, batch_first=True))
    assert workload_from_module(lstm, global_batch=8, example=torch.randint(0, VOCAB, (2, SEQ))).family == "recurrent"


@pytest.mark.slow
def test_compile_is_excluded_after_one_real_dynamo_failure_and_not_paid_for_again(tmp_path: Path) -> None:
    first = fit(("compile", "num_threads"), tmp_path / "first")
    result = first.result
    assert result is not None
    compiled = [t for t in result.trials if t.config.get("compile", "off") != "off"]
    assert len(compiled) == 1, [(t.config, t.status) for t in result.trials]
    assert compiled[0].failure == "unsupported" and compiled[0].blame == ["compile"]
    assert "torch._dynamo.exc" in (compiled[0].error or "")
    assert [ex["knob"] for ex in result.exclusions] == ["compile"]
    assert result.best_config is not None and result.best_config.get("compile", "off") == "off"
    page = (tmp_path / "first.html").read_text(encoding="utf-8")
    assert "<h2>Excluded after an unsupported failure</h2><ul><li><b>compile in" in page

    # Another study (another space: the micro-batch is tuned too) of the same model on this machine:
    # the store's unsupported failure is an exclusion from the start.
    second = fit(("compile", "num_threads", "micro_batch_size"), tmp_path / "second")
    assert second.result is not None and not second.result.reused
    assert all(t.config.get("compile", "off") == "off" for t in second.result.trials)
    (exclusion,) = second.result.exclusions
    assert exclusion["knob"] == "compile" and exclusion["reason"].startswith("study-1 on this machine, trial ")
