"""Every private attribute of a framework AutoScout reaches, in one place, each with the versions it
was checked on. `tests/integrations/test_compat.py` fails loudly when a release moves one: then fix
the accessor here, and nowhere else.

| accessor | private name | checked on |
|---|---|---|
| `given_train_loader` | Lightning `trainer.fit_loop._data_source` | lightning 2.4 - 2.6.6 |
| `ddp_kwargs` | Lightning `DDPStrategy._ddp_kwargs` | lightning 2.4 - 2.6.6 |
| `clear_prepared` | accelerate `model._is_accelerate_prepared` | accelerate 1.0 - 1.16.0 |
| `sync_train_batch_size` | transformers `Trainer._train_batch_size` | transformers 4.45 - 5.25.0 |
| `is_compiled_module` | torch `OptimizedModule._orig_mod` | torch 2.4 - 2.13 |
| `is_compiled_function` | torch `_torchdynamo_orig_callable` on what `torch.compile(fn)` returns | torch 2.4 - 2.13 |
| `attn_implementation` | transformers `PretrainedConfig._attn_implementation` | transformers 4.45 - 5.25.0 |
| `TorchDispatchMode` | torch `torch.utils._python_dispatch` (a public class in a private module) | torch 2.0 - 2.13 |
| `default_store` | torch `distributed_c10d._get_default_store()` | torch 2.4 - 2.13 |
| `without_launcher` | Lightning `Strategy._launcher` | lightning 2.4 - 2.6.6 |
"""

from __future__ import annotations

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

CHECKED = {"lightning": ("2.4", "2.6.6"), "accelerate": ("1.0", "1.16.0"), "transformers": ("4.45", "5.25.0"),
           "torch": ("2.4", "2.13.0")}
"""Framework -> the oldest and newest release the accessors below were checked on."""


def given_train_loader(trainer: Any) -> Any:
    """The train dataloader passed to `Trainer.fit(model, train_dataloaders=...)`, or None when the module
    or a datamodule provides it (Lightning keeps it in `fit_loop._data_source.instance`)."""
    source = getattr(trainer.fit_loop, "_data_source", None)
    instance = getattr(source, "instance", None)
    if instance is None or hasattr(instance, "train_dataloader") or hasattr(instance, "training_step"):
        return None
    return instance


def ddp_kwargs(strategy: Any) -> dict[str, Any]:
    """The keyword arguments Lightning's `DDPStrategy` passes to `DistributedDataParallel` (a dict it keeps
    as `_ddp_kwargs`; writing it before the model is wrapped sets them)."""
    return strategy._ddp_kwargs


def without_launcher(strategy: Any) -> None:
    """Drop the launcher of a strategy that runs inside processes already launched (an in-process trial of
    a distributed fit): `Trainer.fit` then runs at once, never starting processes or resetting threads."""
    strategy._launcher = None


def default_store() -> Any:
    """The store of the default process group (torch keeps it as `_get_default_store()`): the key-value
    store every rank of the job reaches, whatever started it (torchrun's agent store, `env://`, `tcp://`)."""
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def clear_prepared(*models: Any) -> None:
    """Clear accelerate's prepared flag, so the next `Accelerator.prepare` really applies mixed precision
    and compile to a model an earlier Accelerator prepared."""
    for model in models:
        if model is not None and getattr(model, "_is_accelerate_prepared", False):
            model._is_accelerate_prepared = False


def sync_train_batch_size(trainer: Any) -> None:
    """Make the Trainer's cached batch size (`_train_batch_size`, read by its dataloader) the arguments'."""
    trainer._train_batch_size = trainer.args.train_batch_size


def is_compiled_module(model: Any) -> bool:
    """Whether `model`, or the module a DDP wrapper holds, is `torch.compile`'s `OptimizedModule`."""
    return hasattr(model, "_orig_mod") or hasattr(getattr(model, "module", None), "_orig_mod")


def is_compiled_function(fn: Any) -> bool:
    """Whether `fn` is what `torch.compile(fn)` returns."""
    return hasattr(fn, "_torchdynamo_orig_callable")


def attn_implementation(model: Any) -> str | None:
    """The attention implementation a Hugging Face model runs (`config._attn_implementation`)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


__all__ = ["CHECKED", "TorchDispatchMode", "attn_implementation", "clear_prepared", "ddp_kwargs", "default_store",
           "given_train_loader", "is_compiled_function", "is_compiled_module", "sync_train_batch_size",
           "without_launcher"]
