"""The integrations on a real CUDA GPU: skipped where there is none (CI, this project's CPU machines);
`benchmarks/device_h200.sh` runs them on a lent GPU. What a CPU cannot show: the machine described is
the GPU, a trial's clock and memory are the device's, a real CUDA out-of-memory error is recorded and
survived (its memory handed back for the next trial), and bf16/fp16 autocast is in effect on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from autoscout_plugin import AutoScoutCallback, tune_trainer
from examples.hf_gpt2 import make_trainer
from examples.lightning_gpt2 import GPT2Module

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.gpu,
    pytest.mark.usefixtures("isolated_run"),  # tests/integrations/conftest.py
]

MODEL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab": 50257, "seq_len": 256}
QUICK = {"warmup_steps": 2, "measure_steps": 4, "progress": False, "patience": None, "net_gain": False}


def lightning_trainer(callback: AutoScoutCallback, steps: int, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(accelerator="cuda", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], **kwargs)


@pytest.fixture
def memory_cap() -> Any:
    """Cap this process's share of the GPU (a real allocator limit, not a mock); lifted afterwards."""
    def cap(gb: float) -> None:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(gb * 1e9 / total, 1.0))

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def test_lightning_tunes_on_the_gpu_and_applies_the_winner(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    model = GPT2Module(**MODEL, batch_size=16, samples=1024)
    callback = AutoScoutCallback(max_trials=6, include=("precision", "micro_batch_size"),
                                 report=str(tmp_path / "report"), **QUICK)
    trainer = lightning_trainer(callback, steps=12)
    trainer.fit(model)
    result = callback.result
    assert result is not None and result.best_config is not None
    ok = [t for t in result.trials if t.ok]
    assert ok, [(t.config, t.status, t.error) for t in result.trials]
    total_mb = torch.cuda.get_device_properties(0).total_memory / 1e6
    for trial in ok:  # the device's memory, not the host's RSS
        assert trial.peak_mem_mb is not None and 0 < trial.peak_mem_mb < total_mb
    precisions = {t.config.get("precision") for t in result.trials}
    assert precisions <= {"32-true", "bf16-mixed", "16-mixed"}
    assert str(trainer.precision) == result.best_config.get("precision", "32-true")
    assert trainer.global_step == 12
    assert next(model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.html").exists()


def test_a_real_cuda_out_of_memory_trial_is_recorded_and_survived(memory_cap: Any) -> None:
    pl.seed_everything(0, verbose=False)
    # Global batch 32 as 4 x 8 accumulated. The fp32 logits of 4 rows of 512 tokens are 0.4 GB (about
    # 2.5 GB at the peak with their copies and gradients): 4 rows fit under the cap, 16 or 32 cannot.
    model = GPT2Module(**(MODEL | {"seq_len": 512}), batch_size=4, samples=1024)
    memory_cap(4.0)
    callback = AutoScoutCallback(max_trials=8, include=("micro_batch_size",), **QUICK)
    trainer = lightning_trainer(callback, steps=6, accumulate_grad_batches=8)
    trainer.fit(model)
    result = callback.result
    assert result is not None
    statuses = {t.config["micro_batch_size"]: t.status for t in result.trials}
    assert "oom" in statuses.values(), statuses
    assert any(s == "ok" for s in statuses.values()), statuses
    assert result.best_config is not None and statuses[result.best_config["micro_batch_size"]] == "ok"
    assert trainer.global_step == 6  # the main fit ran with a config that fits


def test_hf_trainer_tunes_precision_on_the_gpu(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path / "out"), steps=12, batch_size=16, samples=1024, model=MODEL)
    assert trainer.args.device.type == "cuda"
    result = tune_trainer(trainer, max_trials=4, include=("precision",), **QUICK)
    by_precision = {t.config["precision"]: t for t in result.trials}
    assert by_precision.get("bf16-mixed") is not None and by_precision["bf16-mixed"].ok, \
        [(t.config, t.status, t.error) for t in result.trials]  # the evidence check saw bf16 autocast on CUDA
    assert result.best_config is not None
    chosen = result.best_config["precision"]
    assert (trainer.args.bf16, trainer.args.fp16) == (chosen == "bf16-mixed", chosen == "16-mixed")
    trainer.train()
    assert trainer.state.global_step == 12
