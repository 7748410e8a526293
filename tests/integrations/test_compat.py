"""Every private framework attribute AutoScout reaches (`integrations/_compat.py`), checked on the installed
releases with real objects: a release that moves one fails here, by name, instead of in a user's run."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from autoscout_plugin.integrations import _compat
from lightning.pytorch.strategies import DDPStrategy
from packaging.version import Version
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from examples.hf_gpt2 import make_trainer

SMALL = {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab": 64, "seq_len": 8}


@pytest.mark.parametrize("package", sorted(_compat.CHECKED))
def test_the_installed_release_is_not_older_than_the_oldest_checked(package: str) -> None:
    installed = Version(__import__(package).__version__.split("+")[0])
    oldest, newest = (Version(v) for v in _compat.CHECKED[package])
    assert installed >= oldest, f"{package} {installed} is older than {oldest}, the oldest _compat was checked on"
    assert oldest <= newest


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen: dict[str, Any] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Look(pl.Callback):
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.seen["loader"] = _compat.given_train_loader(trainer)


def _fit(**fit: Any) -> _Tiny:
    module = _Tiny()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[_Look()])
    trainer.fit(module, **fit)
    return module


def test_lightning_keeps_the_given_train_loader_in_the_fit_loop() -> None:
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    assert _fit(train_dataloaders=loader).seen["loader"] is loader

    class WithLoader(_Tiny):
        def train_dataloader(self) -> DataLoader:
            return loader

    module = WithLoader()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[_Look()])
    trainer.fit(module)
    assert module.seen["loader"] is None  # the module provides it: nothing to pass on


def test_lightning_ddp_strategy_keeps_the_ddp_arguments() -> None:
    strategy = DDPStrategy(bucket_cap_mb=5, gradient_as_bucket_view=True)
    kwargs = _compat.ddp_kwargs(strategy)
    assert kwargs["bucket_cap_mb"] == 5 and kwargs["gradient_as_bucket_view"] is True
    kwargs["static_graph"] = True
    assert strategy._ddp_kwargs["static_graph"] is True  # the same dict: writing it sets the argument


def test_accelerate_marks_a_prepared_model_and_the_flag_can_be_cleared(tmp_path: Any) -> None:
    trainer = make_trainer(str(tmp_path / "out"), samples=8, model=SMALL, batch_size=4)
    model = trainer.accelerator.prepare_model(trainer.model)
    assert getattr(model, "_is_accelerate_prepared", False) is True
    _compat.clear_prepared(model, None)
    assert model._is_accelerate_prepared is False


def test_the_hf_trainer_caches_its_train_batch_size(tmp_path: Any) -> None:
    trainer = make_trainer(str(tmp_path / "out"), samples=8, model=SMALL, batch_size=4)
    assert trainer._train_batch_size == 4
    trainer.args.per_device_train_batch_size = 2
    _compat.sync_train_batch_size(trainer)
    assert trainer._train_batch_size == trainer.args.train_batch_size == 2


def test_hf_config_names_its_attention_implementation(tmp_path: Any) -> None:
    trainer = make_trainer(str(tmp_path / "out"), samples=8, model=SMALL, batch_size=4)
    assert _compat.attn_implementation(trainer.model) in ("eager", "sdpa", "flash_attention_2")
    assert _compat.attn_implementation(nn.Linear(2, 2)) is None


def test_torch_compile_marks_what_it_returns() -> None:
    layer = nn.Linear(2, 2)
    assert not _compat.is_compiled_module(layer)
    assert _compat.is_compiled_module(torch.compile(layer))  # wrapping compiles nothing yet
    assert _compat.is_compiled_module(nn.Sequential()) is False

    def forward(x: torch.Tensor) -> torch.Tensor:
        return x

    assert not _compat.is_compiled_function(forward)
    assert _compat.is_compiled_function(torch.compile(forward))


def test_torch_dispatch_mode_sees_the_operators_a_pass_dispatches() -> None:
    class Seen(_compat.TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops.append(str(func.namespace))
            return func(*args, **(kwargs or {}))

    with Seen() as seen:
        torch.ones(2) + 1
    assert "aten" in seen.ops


def test_a_lightning_strategy_runs_without_its_launcher_once_it_is_dropped() -> None:
    trainer = pl.Trainer(strategy="ddp", devices=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    assert trainer.strategy.launcher is not None
    _compat.without_launcher(trainer.strategy)
    assert trainer.strategy.launcher is None  # `Trainer.fit` then calls its function at once


def test_the_default_process_group_has_a_store_every_rank_reaches() -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        store = _compat.default_store()
        store.set("autoscout-compat", "1")
        assert store.get("autoscout-compat") == b"1" and store.add("autoscout-beat", 1) == 1
    finally:
        dist.destroy_process_group()
