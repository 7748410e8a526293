"""Torch-level pieces every integration shares: applying module knobs (compile, activation
checkpointing), describing a module for the cost model, snapshotting RNG and module state, and a
wall-clock guard for in-process trials."""

from __future__ import annotations

import contextlib
import copy
import random
import resource
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from autoscout_plugin.costmodel import Workload


# ---------------------------------------------------------------- module knobs
def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """The transformer/residual blocks of a model: the longest `ModuleList` whose children share one
    class (GPT-2's `h`, BERT's `layer`). Empty when the model has none."""
    best: list[nn.Module] = []
    for sub in module.modules():
        if isinstance(sub, nn.ModuleList) and len(sub) >= 2:
            children = list(sub)
            if len({type(c) for c in children}) == 1 and len(children) > len(best):
                best = children
    return best


def supports_checkpointing(module: nn.Module) -> bool:
    return bool(repeated_blocks(module))


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Recompute each repeated block's activations in the backward pass (non-reentrant
    `torch.utils.checkpoint`, which keeps RNG state so dropout is unchanged). Returns the number of
    blocks wrapped; raises when the model has no repeated blocks."""
    blocks = repeated_blocks(module)
    if not blocks:
        raise ValueError(f"{type(module).__name__} has no repeated blocks (a ModuleList of one block class)"
                         " to checkpoint; pin activation_checkpointing=False")
    for block in blocks:
        if getattr(block, "_autoscout_checkpointed", False):
            continue
        forward = block.forward

        def checkpointed(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed  # type: ignore[method-assign]
        block._autoscout_checkpointed = True  # type: ignore[attr-defined]
    return len(blocks)


def is_checkpointed(module: nn.Module) -> bool:
    return any(getattr(b, "_autoscout_checkpointed", False) for b in repeated_blocks(module))


def compile_children(module: nn.Module, mode: str) -> int:
    """`torch.compile` the module's direct children in place (`nn.Module.compile`), so a
    LightningModule or a Trainer keeps its own object while its layers run compiled. Returns the
    number of children compiled."""
    if mode == "off":
        return 0
    options = {} if mode == "default" else {"mode": mode}
    count = 0
    for child in module.children():
        if isinstance(child, nn.Module) and any(True for _ in child.parameters()):
            child.compile(**options)
            count += 1
    if count == 0:
        module.compile(**options)
        count = 1
    return count


# ---------------------------------------------------------------- workload description
def _config_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def find_hf_config(module: nn.Module) -> Any:
    """The Hugging Face `PretrainedConfig` of a model or of a submodule, if any."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type"):
            return config
    return None


def workload_from_module(module: nn.Module, *, global_batch: int, seq_len: int | None = None,
                         task: str = "train") -> Workload:
    """Describe `module` for the cost model: a transformer from its Hugging Face config when it has
    one, else its parameter count only (the cost model then falls back to generic facts)."""
    n_params = sum(p.numel() for p in module.parameters())
    config = find_hf_config(module)
    if config is not None:
        n_layer = _config_value(config, "n_layer", "num_hidden_layers")
        d_model = _config_value(config, "n_embd", "hidden_size", "d_model")
        n_head = _config_value(config, "n_head", "num_attention_heads")
        vocab = _config_value(config, "vocab_size")
        if None not in (n_layer, d_model, n_head, vocab):
            d_ff = _config_value(config, "n_inner", "intermediate_size", "ffn_dim")
            decoder = bool(getattr(config, "is_decoder", False)) or "lm_head" in dict(module.named_modules()) or any(
                name.endswith("lm_head") for name, _ in module.named_modules())
            return Workload(task=task, family="transformer", arch="decoder" if decoder else "encoder",
                            n_layer=n_layer, d_model=d_model, n_head=n_head, d_ff=d_ff, vocab=vocab,
                            seq_len=seq_len or _config_value(config, "n_positions", "max_position_embeddings"),
                            global_batch=global_batch, n_params=n_params)
    return Workload(task=task, family="unknown", global_batch=global_batch, n_params=n_params, seq_len=seq_len)


def sequence_length(batch: Any) -> int | None:
    """The sequence length of a token batch (a `[B, S]` integer tensor, or a dict/tuple holding one)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[1]) if batch.dim() == 2 and not batch.is_floating_point() else None
    if isinstance(batch, dict):
        items = [batch.get("input_ids")] + list(batch.values())
    elif isinstance(batch, (list, tuple)):
        items = list(batch)
    else:
        return None
    for item in items:
        if isinstance(item, torch.Tensor):
            found = sequence_length(item)
            if found:
                return found
    return None


# ---------------------------------------------------------------- state snapshots
def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: Python, NumPy (if loaded), torch CPU (and CUDA)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np = __import__("sys").modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        __import__("numpy").random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


_MODULE_SLOTS = ("_modules", "_parameters", "_buffers")


_BY_REFERENCE = ("trainer", "_trainer", "_fabric")


def _deep_or_same(value: Any) -> Any:
    """A deep copy of plain state; frameworks objects (a Trainer, a module) stay references."""
    if isinstance(value, nn.Module) or type(value).__module__.split(".")[0] in ("lightning", "pytorch_lightning"):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a lock, a file, a generator: keep the object itself
        return value


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, nn.Module):
        tensors = {name: t.detach().clone() for name, t in obj.state_dict(keep_vars=True).items()}
        grads = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in obj.named_parameters()}
        attrs = {m: copy.copy(sub.__dict__) for m, sub in obj.named_modules()}
        plain = {k: _deep_or_same(v) for k, v in obj.__dict__.items()
                 if k not in _MODULE_SLOTS and k not in _BY_REFERENCE}
        return tensors, grads, attrs, plain
    return {k: (v if k in _BY_REFERENCE else _deep_or_same(v)) for k, v in obj.__dict__.items()}


def _restore(obj: Any, saved: Any) -> None:
    if not isinstance(obj, nn.Module):
        obj.__dict__.clear()
        obj.__dict__.update(saved)
        return
    tensors, grads, attrs, plain = saved
    modules = dict(obj.named_modules())
    for name, state in attrs.items():  # hooks, flags and wrappers a trial put on any submodule
        if name in modules:
            modules[name].__dict__.clear()
            modules[name].__dict__.update(state)
    obj.__dict__.update(plain)  # deep copies: undo in-place changes to lists, dicts, counters
    with torch.no_grad():
        current = obj.state_dict(keep_vars=True)
        for name, value in tensors.items():
            current[name].data = value  # same Parameter objects, the old values
    for name, param in obj.named_parameters():
        param.grad = grads.get(name)


@contextlib.contextmanager
def no_trace(*objects: Any) -> Iterator[None]:
    """Run a block that may train `objects` (modules, datamodules) in place and put everything back
    after: parameter and buffer values (in the same tensor objects, so references stay valid), gradients,
    attributes of the module and its submodules, the RNGs and torch's thread count."""
    saved_rng = rng_state()
    saved_threads = torch.get_num_threads()
    saved = [(obj, _snapshot(obj)) for obj in objects]
    try:
        yield
    finally:
        for obj, state in saved:
            _restore(obj, state)
        restore_rng_state(saved_rng)
        torch.set_num_threads(saved_threads)


# ---------------------------------------------------------------- trial guards
@contextlib.contextmanager
def wall_clock_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise `TimeoutError` in the main thread once `seconds` have passed (SIGALRM), so a trial that
    hangs in Python code (a stuck loop, a sleep, a wait) is stopped. Elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} ran past its {seconds:g} s limit")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
