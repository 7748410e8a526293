"""Torch-level pieces every integration shares: applying module knobs (compile, activation
checkpointing), describing a module and the machine for the cost model, snapshotting RNG and module
state, a wall-clock guard for in-process trials, and the device-aware clock and memory readings a
trial reports (CUDA work is asynchronous: a trial's clock is read after the device has finished)."""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from autoscout_plugin.costmodel import Hardware, Layer, Workload, detect_cpu
from autoscout_plugin.costmodel.presets import workload_from_hf_config
from autoscout_plugin.loop import peak_rss_mb

from ._compat import TorchDispatchMode


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


def batch_dependent(module: nn.Module) -> bool:
    """Whether the module's math depends on the micro-batch itself: batch normalisation (its statistics are
    the micro-batch's, so splitting a batch changes them)."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d,
             nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)
    return any(isinstance(m, norms) for m in module.modules())


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
def find_hf_config(module: nn.Module) -> Any:
    """The Hugging Face `PretrainedConfig` of a model or of a submodule, if any."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type"):
            return config
    return None


def workload_from_module(module: nn.Module, *, global_batch: int, seq_len: int | None = None,
                         task: str = "train", example: Any = None) -> Workload:
    """Describe `module` for the cost model: a transformer from its Hugging Face config when it has
    one; else its convolution and linear layer shapes, seen in one forward pass on `example` (a batch
    the module accepts), when given; else its parameter count only (the cost model then falls back to
    generic facts). A module with recurrent layers (`nn.RNNBase`) is family `recurrent`, one that calls
    operators outside PyTorch's own (a custom scan or attention kernel) family `custom`: the cost model
    does not describe those (`CostModel.describes_workload`) and says so."""
    n_params = sum(p.numel() for p in module.parameters())
    config = find_hf_config(module)
    if config is not None:
        try:
            described = workload_from_hf_config(config, seq_len=seq_len, global_batch=global_batch)
        except ValueError:
            described = None
        if described is not None and described.n_head and described.vocab:
            decoder = bool(getattr(config, "is_decoder", False)) or any(
                name.endswith("lm_head") for name, _ in module.named_modules())
            return replace(described, task=task, arch="decoder" if decoder else "encoder", n_params=n_params)
    layers, namespaces = _probe_forward(module, example) if example is not None else ((), set())
    recurrent = any(isinstance(m, nn.RNNBase) for m in module.modules())
    if recurrent or namespaces - PYTORCH_OP_NAMESPACES:
        family = "recurrent" if recurrent else "custom"
    elif layers:
        family = "cnn" if any(layer.type == "conv2d" for layer in layers) else "mlp"
    else:
        family = "unknown"
    return Workload(task=task, family=family, global_batch=global_batch, n_params=n_params, seq_len=seq_len,
                    layers=layers)


PYTORCH_OP_NAMESPACES = frozenset({"aten", "prim", "prims", "_c10d_functional", "c10d", "profiler", "quantized"})
"""Operator namespaces of PyTorch itself; an operator from any other is a custom kernel."""


class _OpNamespaces(TorchDispatchMode):
    """Records the namespace of every operator a forward pass dispatches (`aten`, or a custom library's)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen.add(str(getattr(func, "namespace", "aten")))
        return func(*args, **(kwargs or {}))


def layers_from_module(module: nn.Module, example: Any) -> tuple[Layer, ...]:
    """The `Conv2d` and `Linear` layers `module` runs on `example`, with their output shapes per sample,
    from forward hooks during one pass in eval mode under `torch.no_grad`; the module's state, modes
    and the RNGs are left as they were. Empty when the module does not accept `example` as input."""
    return _probe_forward(module, example)[0]


def _probe_forward(module: nn.Module, example: Any) -> tuple[tuple[Layer, ...], set[str]]:
    """`layers_from_module`, and the namespaces of the operators the same pass dispatched."""
    found: list[Layer] = []
    namespaces = _OpNamespaces()

    def hook(mod: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        batch = output.shape[0]
        if isinstance(mod, nn.Conv2d) and output.dim() == 4:
            kh, kw = mod.kernel_size
            found.append(Layer(type="conv2d", in_features=mod.in_channels // mod.groups,
                               out_features=mod.out_channels, kernel=max(round((kh * kw) ** 0.5), 1),
                               out_hw=(int(output.shape[2]), int(output.shape[3]))))
        elif isinstance(mod, nn.Linear):
            rows = output.numel() // max(batch * mod.out_features, 1)  # positions per sample (sequences)
            found.append(Layer(type="linear", in_features=mod.in_features, out_features=mod.out_features,
                               out_hw=(max(rows, 1), 1)))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    modes = {m: m.training for m in module.modules()}
    try:
        with no_trace(), torch.no_grad():  # eval mode and no_grad: weights and buffers stay put
            module.eval()
            for candidate in _inputs_of(example):
                found.clear()
                namespaces.seen.clear()
                try:
                    with namespaces:
                        module(candidate)
                except Exception:  # noqa: BLE001 - not an input this module takes; try the next reading
                    continue
                break
            else:
                found.clear()
                namespaces.seen.clear()
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.train(training)
    return tuple(found), set(namespaces.seen)


def _inputs_of(batch: Any) -> list[Any]:
    """Readings of a batch as a model input: the batch, its first item (`(x, y)`), its `input_ids`/`x`."""
    candidates = [batch]
    if isinstance(batch, (list, tuple)) and batch:
        candidates.append(batch[0])
    if isinstance(batch, dict):
        candidates += [batch[k] for k in ("input_ids", "x", "inputs", "pixel_values") if k in batch]
    return candidates


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
    attributes of the module and its submodules, the RNGs, torch's thread count and the environment
    variables (an Accelerator sets some)."""
    saved_rng, saved_threads, saved_env = rng_state(), torch.get_num_threads(), dict(os.environ)
    saved = [(obj, _snapshot(obj)) for obj in objects]
    try:
        yield
    finally:
        for obj, state in saved:
            _restore(obj, state)
        restore_rng_state(saved_rng)
        torch.set_num_threads(saved_threads)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)


# ---------------------------------------------------------------- trial guards
def current_rss_mb() -> float:
    """Resident memory of this process now (Linux `/proc/self/statm`), else the peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


# ---------------------------------------------------------------- the device a run uses
def as_device(device: Any) -> torch.device:
    """A `torch.device` from a device, a string such as `"cuda:1"`, or a module (its first parameter's)."""
    if isinstance(device, nn.Module):
        param = next(device.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device if device is not None else "cpu")


def machine(device: Any = None) -> Hardware:
    """The machine a run on `device` uses: its CUDA GPUs (count, memory per device, name, bf16) when the
    run is on CUDA, else this CPU (`detect_cpu`). `cores` is the host's either way.

    Example:
        >>> machine("cpu").kind
        'cpu'
    """
    cpu = detect_cpu()
    dev = as_device(device)
    if dev.type != "cuda":
        return cpu
    props = torch.cuda.get_device_properties(dev.index or 0)
    return Hardware(kind="gpu", gpus=torch.cuda.device_count(), cores=cpu.cores, bf16=torch.cuda.is_bf16_supported(),
                    mem_gb=round(props.total_memory / 1e9, 1), name=props.name)


def synchronize(device: Any) -> None:
    """Wait for the work queued on `device` (CUDA); nothing on a CPU."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak_memory(device: Any) -> None:
    """Start a fresh peak for `peak_memory_mb` on a CUDA device (a CPU's peak RSS cannot be reset)."""
    dev = as_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_mb(device: Any) -> float:
    """The peak memory a trial reports, in the cost model's unit: the CUDA caching allocator's peak
    reserved memory on `device` since `reset_peak_memory` (what decides an out-of-memory error), or this
    process's peak RSS on a CPU."""
    dev = as_device(device)
    if dev.type == "cuda":
        return torch.cuda.max_memory_reserved(dev) / 1e6
    return peak_rss_mb()


def release_memory(device: Any) -> None:
    """On a GPU, after a trial (above all a failed one): drop what it left and hand the cached CUDA
    blocks back, so the next trial's peak and the main run start from the same free memory. Nothing on
    a CPU: freed tensors go back at once, and a peak RSS cannot be reset anyway."""
    if as_device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def distributed_world() -> int:
    """The default process group's size; 1 when this process runs alone."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_max(value: int, device: Any) -> int:
    """The largest of every rank's `value`, over the default process group (on `device`, which NCCL
    needs to be the rank's GPU)."""
    flag = torch.tensor([value], dtype=torch.int64, device=as_device(device))
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())
